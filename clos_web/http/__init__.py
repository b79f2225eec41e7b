"""The ``http`` layer, sans-I/O: bytes in, requests out; responses in, bytes out.

- :mod:`~clos_web.http.errors`: ``HTTPError`` and a subclass per status bad input implies.
- :mod:`~clos_web.http.grammar`: RFC 9110/9112 as named regex pieces.
- :mod:`~clos_web.http.parser`: ``Limits``, ``Request``, ``Buffer`` and ``parse`` (incremental).
- :mod:`~clos_web.http.head`: ``Response`` and the one head writer (``response_head``).
- :mod:`~clos_web.http.connection`: ``HTTPConnection``, the sans-I/O server connection
  (states, keep-alive, pipelining, 100-continue, deadlines as data).
- :mod:`~clos_web.http.server`: ``Server`` (HTTP over the loop's transport) and the generic
  functions that answer: ``handle_request``, ``write``, ``error_response``, ``close_stream``,
  ``shutdown_stream``, ``stream_idle``.
"""

from .errors import (
    STATUS_PHRASES, BadRequest, HTTPError, HeaderFieldsTooLarge, MethodNotAllowed, NotFound,
    NotImplementedCoding, PayloadTooLarge, RequestTimeout, URITooLong, VersionNotSupported,
)
from .head import (
    Response, date_line, encode_response, head_end, header_block, json_bytes, response_head,
    status_line,
)
from .parser import Buffer, Limits, Request, parse, parse_params
from .connection import HTTPConnection, State, StreamingError
from .server import (
    DEFERRED, Server, answer, close_stream, error_response, handle_request, send_response,
    shutdown_stream, stream_idle, write,
)

__all__ = [
    "HTTPError", "BadRequest", "NotFound", "MethodNotAllowed", "RequestTimeout",
    "PayloadTooLarge", "URITooLong", "HeaderFieldsTooLarge", "NotImplementedCoding",
    "VersionNotSupported", "STATUS_PHRASES", "Limits", "Request", "Buffer", "parse",
    "parse_params", "Response", "header_block", "response_head", "encode_response",
    "status_line", "date_line", "head_end", "json_bytes", "HTTPConnection", "State",
    "StreamingError", "Server", "handle_request", "write", "error_response", "close_stream",
    "shutdown_stream", "stream_idle", "send_response", "answer", "DEFERRED",
]
