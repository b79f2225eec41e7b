"""Middleware: ordered functions around the handler.

A middleware is ``mw(request, call_next) -> result``: it may look at the request, answer itself,
or call ``call_next(request)`` and change what the handler returned (``with_headers``). Exceptions
(``HTTPError`` for 404/405/400...) pass through it. ``app.use(a); app.use(b)`` runs ``a`` outside
``b``. It also wraps 404, 405 and the automatic OPTIONS answer, so CORS can answer a preflight.
For a blocking route the whole chain runs on the worker thread.

>>> from clos_web import App
>>> app = App()
>>> app.use(cors(origins=["https://example.com"]))
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterable

from .http import HTTPError, Request, Response
from .responses import with_headers

access_log = logging.getLogger("clos_web.access")


def logging_middleware(request: Request, call_next: Callable):
    """Log one line per request to ``clos_web.access``: method, target, status, milliseconds.

    >>> from clos_web import App
    >>> App().use(logging_middleware)
    """
    started = time.perf_counter()
    status = 200
    try:
        result = call_next(request)
        status = getattr(result, "status", 200)
        return result
    except HTTPError as err:
        status = err.status
        raise
    except Exception:
        status = 500
        raise
    finally:
        access_log.info("%s %s %s %.1fms", request.method, request.target[:200], status,
                        (time.perf_counter() - started) * 1000)


def cors(origins: Iterable[str] = ("*",), methods: Iterable[str] = ("GET", "HEAD", "POST",
         "PUT", "PATCH", "DELETE"), headers: Iterable[str] = ("Content-Type",),
         credentials: bool = False, max_age: int = 600) -> Callable:
    """A CORS middleware: answers preflight ``OPTIONS`` itself (204) and adds
    ``Access-Control-Allow-Origin`` (and ``Vary: Origin``) to answers for allowed origins.

    >>> mw = cors(origins=["https://a.example"])
    >>> callable(mw)
    True
    """
    origins = frozenset(origins)
    any_origin = "*" in origins and not credentials
    allow_methods = ", ".join(methods)
    allow_headers = ", ".join(headers)

    def origin_headers(origin: str) -> list:
        if any_origin:
            out = [("Access-Control-Allow-Origin", "*")]
        else:
            out = [("Access-Control-Allow-Origin", origin), ("Vary", "Origin")]
        if credentials:
            out.append(("Access-Control-Allow-Credentials", "true"))
        return out

    def cors_middleware(request: Request, call_next: Callable):
        origin = request.headers.get("origin")
        if origin is None or not (any_origin or origin in origins or "*" in origins):
            return call_next(request)
        if request.method == "OPTIONS" and "access-control-request-method" in request.headers:
            return Response(b"", status=204, headers=origin_headers(origin) + [
                ("Access-Control-Allow-Methods", allow_methods),
                ("Access-Control-Allow-Headers", allow_headers),
                ("Access-Control-Max-Age", str(max_age))])
        return with_headers(call_next(request), origin_headers(origin))

    return cors_middleware


__all__ = ["logging_middleware", "cors"]
