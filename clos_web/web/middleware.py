"""Middleware: ordered functions around the handler.

A middleware is ``mw(request, call_next) -> result``: it may look at the request, answer itself,
or call ``call_next(request)`` and change what the handler returned (``with_headers``). Exceptions
(``HTTPError`` for 404/405/400...) pass through it. ``app.use(a); app.use(b)`` runs ``a`` outside
``b``. It also wraps 404, 405 and the automatic OPTIONS answer, so CORS can answer a preflight.
For a blocking route the whole chain runs on the worker thread.

>>> from clos_web import App
>>> app = App()
>>> app.use(cors(origins=["https://example.com"]))
>>> app.use(csrf_guard())
"""

from __future__ import annotations

import logging
import re
import time
from typing import Callable, Iterable

import attrs

from ..http import HTTPError, Request, Response
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


# --------------------------------------------------------------------------------------------
# Origins: ``scheme://host[:port]`` as browsers serialise them (RFC 6454), lower case

_ORIGIN = re.compile(
    r"(?P<scheme>https?)://"
    r"(?P<host>\[[0-9a-f:.]+\]|[a-z0-9.-]+)"       # an IPv6 literal, or a name or IPv4 address
    r"(?::(?P<port>[0-9]{1,5}))?")                  # a port, only when not the default


def _origin_host(origin: str) -> str | None:
    """``host[:port]`` of ``origin`` (lower case) when it is an http(s) origin, else None."""
    origin = origin.lower()
    if _ORIGIN.fullmatch(origin) is None:
        return None
    return origin.partition("://")[2]


def _check_origin(origin: str, what: str) -> str:
    """``origin`` in lower case, or ``ValueError`` saying why it can never match a browser's
    ``Origin`` header (a path, a trailing slash, no scheme) or must not be trusted (``null``)."""
    if origin.strip().lower() == "null":
        raise ValueError(f"{what}: 'null' is not an origin you can trust: every sandboxed "
                         f"frame and file: page of any site sends it")
    if _origin_host(origin) is None:
        raise ValueError(f"{what}: {origin!r} is not an origin: write scheme://host[:port], "
                         f"as browsers send it (http or https, no path, no trailing slash)")
    return origin.lower()


def cors(origins: Iterable[str] = ("*",), methods: Iterable[str] = ("GET", "HEAD", "POST",
         "PUT", "PATCH", "DELETE"), headers: Iterable[str] = ("Content-Type",),
         credentials: bool = False, max_age: int = 600) -> Callable:
    """A CORS middleware: answers preflight ``OPTIONS`` itself (204) and adds
    ``Access-Control-Allow-Origin`` (and ``Vary: Origin``) to answers for allowed origins.

    ``origins`` lists ``scheme://host[:port]`` origins, or is ``["*"]`` for any. With
    ``credentials=True`` (cookies: the answers are the logged-in user's data) the origins must be
    listed: ``"*"`` with credentials would let any site read them, so it is refused with a
    ``ValueError``, as is an entry that can never match (``"https://a.example/"``) or must not
    be trusted (``"null"``).

    >>> mw = cors(origins=["https://a.example"], credentials=True)
    >>> callable(mw)
    True
    """
    origins = list(origins)
    any_origin = "*" in origins
    if any_origin and credentials:
        raise ValueError("cors(credentials=True) with origins '*' would let every site read "
                         "your users' data: list the origins that may, e.g. "
                         "cors(origins=['https://app.example'], credentials=True)")
    allowed = frozenset(_check_origin(o, "cors") for o in origins if o != "*")
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
        if origin is None or not (any_origin or origin.lower() in allowed):
            return call_next(request)
        if request.method == "OPTIONS" and "access-control-request-method" in request.headers:
            return Response(b"", status=204, headers=origin_headers(origin) + [
                ("Access-Control-Allow-Methods", allow_methods),
                ("Access-Control-Allow-Headers", allow_headers),
                ("Access-Control-Max-Age", str(max_age))])
        return with_headers(call_next(request), origin_headers(origin))

    return cors_middleware


_SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS"))


def csrf_guard(trusted_origins: Iterable[str] = (), *, allow_same_site: bool = False,
               exempt: Iterable[str] = ()) -> "CsrfGuard":
    """A middleware refusing cross-site requests that could change state (CSRF), with a 403.

    Safe methods (GET, HEAD, OPTIONS) always pass: they must not change anything. Any other
    request is refused when the browser marks it as coming from another site:

    - ``Sec-Fetch-Site`` is ``cross-site`` (or ``same-site``, a sibling subdomain, unless
      ``allow_same_site=True``); ``same-origin`` and ``none`` (typed in the address bar) pass.
      Every current browser sends it, and a page cannot forge it;
    - without ``Sec-Fetch-Site`` (older browsers), ``Origin`` is neither the request's own
      (``http://`` or ``https://`` plus its ``Host``: behind a TLS proxy the server cannot know
      which scheme the browser used) nor one of ``trusted_origins``. ``Origin: null`` (a
      sandboxed frame, a ``file:`` page) is refused.

    A request with neither header passes: it does not come from a browser (curl, another
    server), and a browser always sends one of them on a cross-site POST, PUT, PATCH or DELETE;
    such a client carries no victim's cookies. This is what Go 1.25's
    ``http.CrossOriginProtection`` does, as do the origin checks of Rails and Django.

    ``trusted_origins`` (``scheme://host[:port]``) may post from other sites, e.g. a front end
    served from another origin; ``exempt`` lists paths that skip the check (a webhook
    receiver authenticated otherwise): ``"/hook"`` exactly, or with a trailing slash
    ``"/hooks/"`` the paths under it (compared as received, still percent-encoded).

    >>> from clos_web import App
    >>> app = App()
    >>> app.use(csrf_guard(trusted_origins=["https://admin.example"], exempt=["/webhooks/"]))
    """
    trusted = frozenset(_check_origin(o, "csrf_guard trusted_origins") for o in trusted_origins)
    exact, prefixes = set(), []
    for path in exempt:
        if not path.startswith("/"):
            raise ValueError(f"csrf_guard exempt: {path!r} is not a path (start it with '/')")
        (prefixes.append if path.endswith("/") else exact.add)(path)
    passing_sites = frozenset(("same-origin", "none", "same-site") if allow_same_site
                              else ("same-origin", "none"))
    return CsrfGuard(trusted, frozenset(exact), tuple(prefixes), passing_sites)


@attrs.define(slots=True, frozen=True)
class CsrfGuard:
    """What :func:`csrf_guard` returns: a middleware (``app.use(guard)``), whose check alone
    is ``guard.check(request)`` (raises the 403), for a ``before`` method on ``respond``::

        @respond.before
        def shop_refuses_cross_site(app: Shop, request: Request, conn):
            guard.check(request)
    """

    trusted: frozenset
    exact: frozenset
    prefixes: tuple
    passing_sites: frozenset

    def check(self, request: Request) -> None:
        """Raise a 403 if ``request`` is a cross-site request that could change state."""
        if request.method in _SAFE_METHODS:
            return
        path = request.path
        if path in self.exact or (self.prefixes and path.startswith(self.prefixes)):
            return
        headers = request.headers
        origin = headers.get("origin")
        site = headers.get("sec-fetch-site")
        if site is not None:
            if site.strip().lower() in self.passing_sites or (
                    origin is not None and origin.lower() in self.trusted):
                return
            raise HTTPError(403, "cross-site request refused: this site does not accept it "
                                 "from another site (Sec-Fetch-Site)")
        if origin is None:
            return
        host = headers.get("host")
        if (host is not None and host.lower() == _origin_host(origin)) or (
                origin.lower() in self.trusted):
            return
        raise HTTPError(403, "cross-origin request refused: its Origin is neither this site "
                             "nor trusted")

    def __call__(self, request: Request, call_next: Callable):
        self.check(request)
        return call_next(request)


__all__ = ["logging_middleware", "cors", "csrf_guard", "CsrfGuard"]
