"""HTTP errors: an exception class per status that bad input or a handler may imply.

Raise :class:`HTTPError` (or a subclass) from a handler to answer with that status; the parser
raises the subclasses for bad input, each carrying the status it implies.
"""

from __future__ import annotations

# --------------------------------------------------------------------------------------------
# Errors


class HTTPError(Exception):
    """An HTTP error: a status code and a short reason phrase sent to the client.

    Raise it from a handler to answer with that status (``raise HTTPError(403, "not your
    card")``); the parser raises its subclasses for bad input.
    """

    status = 500
    reason = "Internal Server Error"

    def __init__(self, status: int | None = None, reason: str | None = None, headers=()):
        if status is not None:
            self.status = status
        self.reason = reason if reason is not None else STATUS_PHRASES.get(self.status, "Error")
        self.headers = list(headers)
        super().__init__(self.status, self.reason)

    def __str__(self):
        return f"{self.status} {self.reason}"


class BadRequest(HTTPError):
    """400: the request is malformed (bad framing, bad syntax, bad parameter)."""

    status = 400


class NotFound(HTTPError):
    """404: no route for this path."""

    status = 404


class MethodNotAllowed(HTTPError):
    """405: the path exists for other methods (``headers`` carries ``Allow``)."""

    status = 405


class RequestTimeout(HTTPError):
    """408: the request did not arrive within its deadline."""

    status = 408


class PayloadTooLarge(HTTPError):
    """413: the body is over the limit (decided from Content-Length before reading it)."""

    status = 413


class URITooLong(HTTPError):
    """414: the request line is over the limit."""

    status = 414


class HeaderFieldsTooLarge(HTTPError):
    """431: the header fields are over the limit."""

    status = 431


class NotImplementedCoding(HTTPError):
    """501: a transfer coding we do not implement."""

    status = 501


class VersionNotSupported(HTTPError):
    """505: an HTTP version other than 1.0 or 1.1."""

    status = 505


STATUS_PHRASES = {
    100: "Continue", 101: "Switching Protocols",
    200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 206: "Partial Content",
    301: "Moved Permanently", 302: "Found", 303: "See Other", 304: "Not Modified",
    307: "Temporary Redirect", 308: "Permanent Redirect",
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 406: "Not Acceptable", 408: "Request Timeout", 409: "Conflict",
    410: "Gone", 411: "Length Required", 412: "Precondition Failed", 413: "Content Too Large",
    414: "URI Too Long", 415: "Unsupported Media Type", 416: "Range Not Satisfiable",
    417: "Expectation Failed", 418: "I'm a teapot", 421: "Misdirected Request",
    422: "Unprocessable Content", 429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout", 505: "HTTP Version Not Supported",
}


__all__ = [
    "HTTPError", "BadRequest", "NotFound", "MethodNotAllowed", "RequestTimeout",
    "PayloadTooLarge", "URITooLong", "HeaderFieldsTooLarge", "NotImplementedCoding",
    "VersionNotSupported", "STATUS_PHRASES",
]
