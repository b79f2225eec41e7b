"""Applications: a table of routes and the handlers behind them.

An :class:`App` owns its routes. ``@app.route("GET", "/plaintext")`` (or ``@app.get(...)``)
registers a handler; the handler is looked up when each request arrives, so redefining it at the
REPL changes a running server at once. A handler takes no parameter, or one: the
:class:`~clos_web.http.Request`.
"""

from __future__ import annotations

import inspect
from typing import Callable

import attrs

from .http import MethodNotAllowed, NotFound, Request

_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


@attrs.define(slots=True)
class Route:
    """One route: method, path and handler (and how many arguments the handler takes)."""

    method: str
    path: str
    handler: Callable
    wants_request: bool = False
    max_body: int | None = None


@attrs.define(slots=True, eq=False)
class App:
    """A set of routes. ``handle(request, conn)`` answers one request.

    >>> app = App()
    >>> @app.get("/hello")
    ... def hello():
    ...     return "hi"
    """

    routes: dict = attrs.field(factory=dict)  # path -> {method: Route}

    def route(self, method: str, path: str, *, max_body: int | None = None):
        """Decorator registering ``fn`` for ``method`` and exact ``path``."""
        method = method.upper()

        def register(fn: Callable) -> Callable:
            params = list(inspect.signature(fn).parameters)
            self.routes.setdefault(path, {})[method] = Route(
                method, path, fn, wants_request=bool(params), max_body=max_body)
            return fn

        return register

    def get(self, path: str, **kw):
        """``route("GET", path)``; HEAD is served by the GET handler without a body."""
        return self.route("GET", path, **kw)

    def post(self, path: str, **kw):
        """``route("POST", path)``."""
        return self.route("POST", path, **kw)

    def put(self, path: str, **kw):
        return self.route("PUT", path, **kw)

    def delete(self, path: str, **kw):
        return self.route("DELETE", path, **kw)

    def find(self, request: Request) -> Route:
        """The route for ``request``; raises 404, or 405 with ``Allow``."""
        methods = self.routes.get(request.path)
        if methods is None:
            raise NotFound(reason=f"no route for {request.path}")
        route = methods.get(request.method)
        if route is None and request.method == "HEAD":
            route = methods.get("GET")
        if route is None:
            allow = sorted(set(methods) | ({"HEAD"} if "GET" in methods else set()))
            raise MethodNotAllowed(headers=[("Allow", ", ".join(allow))])
        return route

    def body_limit(self, request: Request, default: int) -> int:
        """The body limit for ``request``: its route's ``max_body`` or the server's default."""
        methods = self.routes.get(request.path)
        route = methods and methods.get(request.method)
        return route.max_body if route is not None and route.max_body is not None else default

    def handle(self, request: Request, conn=None):
        """Find the route and call the handler; return what it returned."""
        route = self.find(request)
        return route.handler(request) if route.wants_request else route.handler()
