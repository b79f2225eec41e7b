"""Applications: routes, middleware, mounted apps, sessions and a worker pool.

An :class:`App` owns a routing trie (:mod:`clos_web.routing`). ``@app.get("/add")`` registers a
handler whose parameters are bound by name and converted by their annotations
(:mod:`clos_web.params`); registering again for the same method and path replaces the route, so
redefining a handler at the REPL changes a running server at once.

- 404 when no path matches, 405 with ``Allow`` when the path exists for other methods; HEAD is
  served by the GET handler (without a body); OPTIONS is answered with ``Allow`` (204) unless a
  route handles it.
- ``app.mount("/api", other)`` serves ``other``'s routes under ``/api`` (own routes win).
- ``app.use(middleware)`` adds an around-handler function (:mod:`clos_web.middleware`).
- ``app.static("/assets", "public/")`` serves a directory (:mod:`clos_web.static`).
- ``blocking=True`` runs the handler on ``app.workers`` (:mod:`clos_web.workers`).

>>> app = App()
>>> @app.get("/add")
... def add(a: int, b: int):
...     return str(a + b)
>>> from clos_web import Request
>>> app.handle(Request("GET", "/add?a=1&b=2", path="/add", query="a=1&b=2"))
'3'
"""

from __future__ import annotations

from typing import Any, Callable

import attrs

from ..http import HTTPError, MethodNotAllowed, Request, Response
from ..clos import generic
from .params import compile_handler
from .routing import Route, Router, split_pattern
from .sessions import MemorySessions
from .workers import WorkerPool

_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


@attrs.define(slots=True, eq=False, repr=False)
class App:
    """A set of routes. ``handle(request, conn)`` answers one request.

    ``sessions`` is the session store (server-side by default; see
    :class:`~clos_web.sessions.SignedCookieSessions`), ``workers`` the pool for blocking
    handlers, ``middleware`` the ordered list of around-handler functions.

    >>> app = App()
    >>> @app.get("/hello")
    ... def hello():
    ...     return "hi"
    """

    router: Router = attrs.field(factory=Router)
    middleware: list = attrs.field(factory=list)
    sessions: Any = attrs.field(factory=MemorySessions)
    workers: WorkerPool = attrs.field(factory=WorkerPool)

    def __repr__(self) -> str:
        """Counts, not contents.

        >>> App()
        <App 0 routes, 0 middleware, MemorySessions>
        """
        n = len(self.router.routes())
        return (f"<App {n} route{'s' * (n != 1)}, {len(self.middleware)} middleware, "
                f"{type(self.sessions).__name__}>")

    # -- declaring ---------------------------------------------------------------------------

    def route(self, method: str, path: str, *, max_body: int | None = None,
              blocking: bool = False, guard: Callable | None = None):
        """Decorator registering ``fn`` for ``method`` and ``path`` (a pattern: ``{var}``,
        ``{*rest}``). ``max_body`` raises this route's body limit; ``blocking=True`` runs the
        handler on the worker pool.

        ``guard(request)`` is a check that needs only the request's head (method, path,
        headers, cookies): it raises an :class:`~clos_web.http.HTTPError` (401, 403...) to
        refuse. It runs before the handler's parameters are bound, and for a client that sends
        ``Expect: 100-continue`` before the body is even uploaded.

        >>> app = App()
        >>> @app.route("PUT", "/card/{card_id}")
        ... def move(card_id: int, x: int, y: int):
        ...     return {"card": card_id, "at": [x, y]}
        """
        method = method.upper()

        def register(fn: Callable) -> Callable:
            route = Route(method, path, fn, max_body=max_body, blocking=blocking, app=self,
                          guard=guard)
            route.var_names = tuple(split_pattern(path)[1])
            route.invoke = compile_handler(fn, route)
            self.router.add(route)
            return fn

        return register

    def get(self, path: str, **kw):
        """``route("GET", path)``; HEAD is served by the GET handler without a body."""
        return self.route("GET", path, **kw)

    def post(self, path: str, **kw):
        """``route("POST", path)``."""
        return self.route("POST", path, **kw)

    def put(self, path: str, **kw):
        """``route("PUT", path)``."""
        return self.route("PUT", path, **kw)

    def delete(self, path: str, **kw):
        """``route("DELETE", path)``."""
        return self.route("DELETE", path, **kw)

    def patch(self, path: str, **kw):
        """``route("PATCH", path)``."""
        return self.route("PATCH", path, **kw)

    def websocket(self, path: str, *, origins=None, subprotocols=None,
                  max_message: int | None = None, compression: bool | None = None,
                  ping_interval: float | None = None, guard: Callable | None = None,
                  blocking: bool = False):
        """Decorator registering a WebSocket endpoint (``GET path`` with an upgrade): the
        handler binds typed parameters like any handler and returns a
        :class:`~clos_web.ws.WebSocket` (or an instance of your subclass), or ``None``/
        ``False`` to refuse (403). What is not an RFC 6455 handshake is refused before the
        handler runs (400; 426 for another ``Sec-WebSocket-Version``), and so is an ``Origin``
        other than the server's own or one of ``origins`` (403; ``origins="*"`` allows any).
        ``subprotocols`` lists the ones the server speaks, in preference order;
        ``max_message`` (bytes, default 1 MiB), ``compression`` (permessage-deflate when the
        client offers it; default on) and ``ping_interval`` (seconds) set the socket's own.

        >>> from clos_web.ws import WebSocket
        >>> app = App()
        >>> @app.websocket("/echo", max_message=16 * 2**20)
        ... def echo():
        ...     return WebSocket()
        """
        from ..ws.server import websocket_route

        def register(fn: Callable) -> Callable:
            ws_guard, handler = websocket_route(
                fn, origins=origins, subprotocols=subprotocols, max_message=max_message,
                compression=compression, ping_interval=ping_interval)
            if guard is None:
                checks = ws_guard
            else:
                def checks(request):
                    ws_guard(request)
                    guard(request)
            self.route("GET", path, guard=checks, blocking=blocking)(handler)
            return fn

        return register

    def mount(self, prefix: str, app: "App") -> "App":
        """Serve ``app``'s routes under ``prefix``: ``root.mount("/api", api)``. Returns ``app``.
        """
        self.router.mount(prefix, app)
        return app

    def mount_metrics(self, path: str = "/metrics") -> None:
        """Serve this app's server's metrics at ``GET path``, in the Prometheus text format
        (see :mod:`clos_web.ops.metrics`); off unless mounted.

        >>> App().mount_metrics("/metrics")
        """
        from ..ops.metrics import metrics_handler

        self.get(path)(metrics_handler)

    def mount_dashboard(self, prefix: str = "/_clos", token: str | None = None):
        """Serve the live operations dashboard under ``prefix`` (off unless mounted): a page
        of connections, requests/s, events/s, latency, loop lag, top channels and memory,
        pushed once a second over SSE while someone watches. With ``token``, every path under
        the prefix answers 403 unless the request carries it (``?token=`` or the cookie the
        page sets). Returns the :class:`~clos_web.ops.dashboard.Dashboard`.

        >>> app = App()
        >>> app.mount_dashboard("/_clos", token="s3cret")
        <Dashboard /_clos token=yes, 0 watching>
        """
        from ..ops.dashboard import mount_dashboard

        return mount_dashboard(self, prefix, token)

    def use(self, middleware: Callable) -> None:
        """Add ``middleware(request, call_next)``; the first added is the outermost."""
        self.middleware.append(middleware)

    def static(self, prefix: str, directory, **options) -> None:
        """Serve the files under ``directory`` at ``prefix`` (see :class:`StaticFiles`).

        >>> App().static("/assets", ".")
        """
        from .static import StaticFiles

        files = StaticFiles(directory, **options)

        def static_file(request: Request, path: str):
            return files.respond(path, request)

        self.get(prefix.rstrip("/") + "/{*path}")(static_file)

    # -- answering ---------------------------------------------------------------------------

    def find(self, request: Request) -> Route:
        """The route for ``request``; raises 404, 405 with ``Allow``, or 308."""
        return self.router.lookup(request.method, request.path, request.query).route

    def body_limit(self, request: Request, default: int) -> int:
        """The body limit for ``request``: its route's ``max_body`` or the server's default.

        The server asks once a head announcing a body is parsed, before the body is read. A
        client that waits for ``100 Continue`` (``Expect: 100-continue``) before it uploads is
        refused here, from the head alone, when the answer cannot be a success: no route (404),
        another method (405), or the route's ``guard`` refuses (401, 403...). It then gets that
        answer instead of ``100 Continue``, and uploads nothing.
        """
        try:
            route = self.router.lookup(request.method, request.path).route
        except HTTPError:
            if request.expect_continue and request.method != "OPTIONS":
                raise
            return default
        if request.expect_continue and route.guard is not None:
            route.guard(request)
        return default if route.max_body is None else route.max_body

    def handle(self, request: Request, conn=None):
        """``respond(self, request, conn)``: find the route and call the handler (through the
        middleware and any qualified methods on ``respond``); return its result, or
        :data:`~clos_web.DEFERRED` for a blocking handler."""
        return respond(self, request, conn)

    def _handle(self, request: Request, conn):
        try:
            match = self.router.lookup(request.method, request.path, request.query)
        except MethodNotAllowed as err:
            if request.method == "OPTIONS":
                allow = dict(err.headers)["Allow"]
                answer = Response(b"", status=204, headers=[("Allow", allow + ", OPTIONS")])
                return _chain(self.middleware, lambda r: answer)(request)
            return _chain(self.middleware, _raiser(err))(request)
        except HTTPError as err:
            if request.method == "OPTIONS" and request.path == "*":
                answer = Response(b"", status=204, headers=[("Allow", ", ".join(_METHODS))])
                return _chain(self.middleware, lambda r: answer)(request)
            return _chain(self.middleware, _raiser(err))(request)
        route, values = match.route, match.values
        request.route = route
        layers = self.middleware
        for mounted in match.mounts:
            if mounted.middleware:
                layers = layers + mounted.middleware
        guard = route.guard
        if not layers and not route.blocking:  # nothing to chain: the calls themselves
            if guard is not None:
                guard(request)
            return route.invoke(request, conn, values)
        if guard is None:
            call = _chain(layers, lambda r: route.invoke(r, conn, values))
        else:
            def guarded(r):
                guard(r)
                return route.invoke(r, conn, values)

            call = _chain(layers, guarded)
        if route.blocking and conn is not None:
            return self.workers.submit(conn, request, lambda: call(request))
        return call(request)


@generic
def respond(app, request, conn):
    """Answer ``request`` for ``app``: find the route, check its guard, bind the handler's
    parameters and call it, through ``app``'s middleware; return the handler's result (or
    :data:`~clos_web.DEFERRED`). ``conn`` is the connection (None when called without one).

    This is where an application's cross-cutting behaviour goes, as qualified methods
    specialised on its own ``App`` subclass: a ``before`` method checks (authorisation, a CSRF
    guard: raise an ``HTTPError`` to refuse), an ``after`` method records, an ``around``
    method wraps (timing, a transaction) and calls ``call_next_method()``::

        class Shop(App):
            pass

        @respond.before
        def shop_refuses_cross_site(app: Shop, request: Request, conn):
            guard.check(request)
    """


@respond.dispatch
def respond_app(app: App, request: object, conn):
    if not app.middleware:
        methods = app.router.exact.get(request.path)
        if methods is not None:
            route = methods.get(request.method)
            if route is not None and not route.blocking and route.guard is None:
                request.route = route
                return route.invoke(request, conn, ())
    return app._handle(request, conn)


def _raiser(err: HTTPError) -> Callable:
    def endpoint(request):
        raise err

    return endpoint


def _chain(layers: list, endpoint: Callable) -> Callable:
    call = endpoint
    for mw in reversed(layers):
        call = _wrap(mw, call)
    return call


def _wrap(mw: Callable, call_next: Callable) -> Callable:
    return lambda request: mw(request, call_next)


default_app = App()
"""The app that module-level code may share, for convenience: ``@default_app.get("/")``."""

__all__ = ["App", "Route", "default_app", "respond"]
