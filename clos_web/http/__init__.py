"""The ``http`` layer, sans-I/O: bytes in, requests out; responses in, bytes out.

- :mod:`~clos_web.http.errors`: ``HTTPError`` and a subclass per status bad input implies.
- :mod:`~clos_web.http.grammar`: RFC 9110/9112 as named regex pieces.
- :mod:`~clos_web.http.parser`: ``Limits``, ``Request``, ``Buffer`` and ``parse`` (incremental).
- :mod:`~clos_web.http.head`: ``Response`` and the one head writer (``response_head``).
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

__all__ = [
    "HTTPError", "BadRequest", "NotFound", "MethodNotAllowed", "RequestTimeout",
    "PayloadTooLarge", "URITooLong", "HeaderFieldsTooLarge", "NotImplementedCoding",
    "VersionNotSupported", "STATUS_PHRASES", "Limits", "Request", "Buffer", "parse",
    "parse_params", "Response", "header_block", "response_head", "encode_response",
    "status_line", "date_line", "head_end", "json_bytes",
]
