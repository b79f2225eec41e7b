"""The routing trie: method + path segments to a route, as a pure data structure.

A route path is split on ``/`` into segments. Each segment is one of

- a literal (``table``), matched exactly against the percent-decoded request segment;
- a variable (``{table_id}``), matching any one segment; its value is the decoded segment, and
  its type is the annotation of the handler parameter of the same name (``card_id: int``);
- a rest variable (``{*path}``), last only, matching one or more remaining segments, joined
  with ``/``. A rest variable never captures an encoded slash (``%2F``): such a request does not
  match it, so every ``/`` in its value is a real segment boundary.

Priority: at each segment a literal beats a variable, which beats a rest variable, which beats
an app mounted there; when a better branch has no route for the request's method the next one
is tried. If some path matches but not for this method the answer is 405 with ``Allow``; if no
path matches, 404.

Trailing slash policy: ``/a`` and ``/a/`` are different paths (the latter ends with an empty
segment). When only the other form has a route, a GET or HEAD is redirected to it with 308
(``Location`` keeps the query); other methods get 404. A redirect never leaves the origin: a
path whose first segment is empty or starts with a slash or backslash, even encoded
(``//evil.example/``, ``/\\evil``, ``/%2F%2Fevil``), gets 404 instead, since its other form,
as a ``Location``, is read by browsers (or by a proxy that decodes it) as another host. Such a
path is no link of ours, so no client is stranded; collapsing the slashes instead would send
it to a different route than the one it matched.

Work per lookup is linear in the path's length: one split, one decoding per segment, and a walk
of the trie that goes no deeper than its deepest route. The walk's first branch (literal child,
else variable child, to the end of the path) is followed first without the walk's generators:
when it ends on a route for the method, that is the walk's answer.

>>> router = Router()
>>> router.add(Route("GET", "/table/{table_id}", handler=print))
>>> match = router.lookup("GET", "/table/7")
>>> match.route.path, match.values
('/table/{table_id}', ('7',))
"""

from __future__ import annotations

import re
import reprlib
from typing import Any, Callable
from urllib.parse import unquote_to_bytes

import attrs

from ..http import BadRequest, HTTPError, MethodNotAllowed, NotFound

_SHORT = reprlib.Repr()
_SHORT.maxtuple, _SHORT.maxstring = 4, 30
_short_repr = _SHORT.repr

_VAR = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_REST = re.compile(r"\{\*([A-Za-z_][A-Za-z0-9_]*)\}")


@attrs.define(slots=True, eq=False)
class Route:
    """One route: a method, a path pattern and the handler behind it.

    ``var_names`` are the pattern's variable names in order (filled by :class:`Router`);
    ``invoke(request, conn, values)`` is the compiled call (binding parameters, then the
    handler), set by :class:`~clos_web.app.App`. ``app`` is the app owning the route.
    ``guard(request)``, if set, refuses a request from its head alone (see ``App.route``).

    >>> Route("GET", "/hello", handler=lambda: "hi").path
    '/hello'
    """

    method: str
    path: str
    handler: Callable
    max_body: int | None = None
    blocking: bool = False
    app: Any = attrs.field(default=None, repr=False)
    var_names: tuple = ()
    invoke: Callable | None = attrs.field(default=None, repr=False)
    guard: Callable | None = None


@attrs.define(slots=True, eq=False, repr=False)
class _Node:
    literals: dict = attrs.field(factory=dict)   # decoded segment -> _Node
    var: _Node | None = None
    routes: dict = attrs.field(factory=dict)     # method -> Route (path ends here)
    rest: dict = attrs.field(factory=dict)       # method -> Route (a rest variable here)
    mount: Any = None                            # an App mounted at this prefix

    def __repr__(self) -> str:
        return (f"<_Node {len(self.literals)} literals, var={self.var is not None}, "
                f"methods={sorted(self.routes)}, rest={sorted(self.rest)}, "
                f"mount={self.mount is not None}>")


@attrs.define(slots=True, eq=False)
class Match:
    """A successful lookup: the route, the variables' values in pattern order, and the chain of
    mounted apps crossed to reach it (outermost first, excluding the router's own app)."""

    route: Route = attrs.field(repr=lambda route: f"<Route {route.method} {route.path}>")
    values: tuple = attrs.field(repr=_short_repr)  # (from the client's path: clipped)
    mounts: tuple = attrs.field(default=(), repr=lambda mounts: f"<{len(mounts)} apps>")


def split_pattern(path: str) -> tuple[list, list]:
    """Split a route pattern into segment specs and variable names.

    Specs are ``("lit", text)``, ``("var", name)`` or ``("rest", name)``.

    >>> split_pattern("/t/{tid}/c/{*rest}")
    ([('lit', 't'), ('var', 'tid'), ('lit', 'c'), ('rest', 'rest')], ['tid', 'rest'])
    """
    if not path.startswith("/"):
        raise ValueError(f"a route path starts with '/': {path!r}")
    specs, names = [], []
    parts = path[1:].split("/")
    for i, part in enumerate(parts):
        m = _VAR.fullmatch(part)
        r = _REST.fullmatch(part)
        if m:
            specs.append(("var", m.group(1)))
            names.append(m.group(1))
        elif r:
            if i != len(parts) - 1:
                raise ValueError(f"a rest variable comes last: {path!r}")
            specs.append(("rest", r.group(1)))
            names.append(r.group(1))
        elif "{" in part or "}" in part:
            raise ValueError(f"bad path segment {part!r} in {path!r}")
        else:
            specs.append(("lit", part))
    if len(set(names)) != len(names):
        raise ValueError(f"repeated variable name in {path!r}")
    return specs, names


def split_path(path: str) -> list:
    """A request path (percent-encoded) as decoded segments; 400 for bad encoding.

    >>> split_path("/a%20b/c/")
    ['a b', 'c', '']
    """
    segs = path[1:].split("/") if path.startswith("/") else [path]
    if "%" in path:
        try:
            segs = [unquote_to_bytes(s).decode("utf-8") if "%" in s else s for s in segs]
        except UnicodeDecodeError:
            raise BadRequest(reason="path is not UTF-8") from None
    return segs


def _stays_here(segs: list) -> bool:
    """Whether a path of these (decoded) segments, as a ``Location``, is a path on this origin:
    its first segment is not empty (``//host`` is another host) and does not start with ``/``
    or ``\\`` (``/\\host``, ``/%2F%2Fhost``: browsers or decoding proxies read another host).
    """
    first = segs[0]
    return first != "" and first[0] not in "/\\"


def _encoded_slash(path: str) -> list:
    """Per segment: whether it held an encoded slash (only computed when '%' is present)."""
    return ["%2f" in s.lower() for s in path[1:].split("/")]


@attrs.define(slots=True, eq=False, repr=False)
class Router:
    """The trie of one app: ``add`` routes, ``mount`` apps, ``lookup`` a method and path.

    Routes without variables are also kept in a dict keyed by path, so the common case costs a
    dict lookup. The router is pure data: no sockets, testable alone.

    >>> r = Router()
    >>> r.add(Route("GET", "/a/{x}", handler=print)); r.add(Route("GET", "/a/b", handler=print))
    >>> r.lookup("GET", "/a/b").route.path
    '/a/b'
    """

    root: _Node = attrs.field(factory=_Node)
    exact: dict = attrs.field(factory=dict)  # path -> {method: Route}, literal-only routes

    def __repr__(self) -> str:
        """The number of routes, not the routes (``routes()`` lists them).

        >>> Router()
        <Router 0 routes>
        """
        n = len(self.routes())
        return f"<Router {n} route{'s' * (n != 1)}>"

    def add(self, route: Route) -> None:
        """Add (or replace: same method and pattern) a route."""
        specs, names = split_pattern(route.path)
        route.var_names = tuple(names)
        node = self.root
        for kind, text in specs:
            if kind == "lit":
                node = node.literals.setdefault(text, _Node())
            elif kind == "var":
                if node.var is None:
                    node.var = _Node()
                node = node.var
            else:
                node.rest[route.method] = route
                return
        node.routes[route.method] = route
        if not names:
            self.exact.setdefault(route.path, {})[route.method] = route

    def mount(self, prefix: str, app: Any) -> None:
        """Mount ``app`` (anything with a ``router``) under literal ``prefix`` (``/api``)."""
        specs, names = split_pattern(prefix.rstrip("/") or "/")
        if names or prefix in ("", "/"):
            raise ValueError(f"a mount prefix is literal and not '/': {prefix!r}")
        node = self.root
        for _, text in specs:
            node = node.literals.setdefault(text, _Node())
        node.mount = app

    def routes(self) -> list:
        """Every route of this router (not of mounted apps), for inspection."""
        out, stack = [], [self.root]
        while stack:
            node = stack.pop()
            out.extend(node.routes.values())
            out.extend(node.rest.values())
            stack.extend(node.literals.values())
            if node.var is not None:
                stack.append(node.var)
        return out

    def lookup(self, method: str, path: str, query: str = "") -> Match:
        """The best route for ``method`` and ``path``; raises 404, 405 (``Allow``) or 308
        (``Location``: the other trailing-slash form, with ``?query`` when there is one).

        HEAD falls back to a GET route.

        >>> r = Router(); r.add(Route("GET", "/dir/", handler=print))
        >>> try:
        ...     r.lookup("GET", "/dir", "page=2")
        ... except HTTPError as redirect:
        ...     redirect.status, redirect.headers
        (308, [('Location', '/dir/?page=2')])
        """
        methods = self.exact.get(path) if "%" not in path else None
        if methods is not None:
            route = methods.get(method)
            if route is None and method == "HEAD":
                route = methods.get("GET")
            if route is not None:
                return Match(route, ())
        segs = split_path(path)
        found = self._descend(method, segs)
        if found is not None:
            return found
        slashes = _encoded_slash(path) if "%" in path else None
        found = self._find(method, segs, slashes)
        if found is not None:
            return found
        allowed = self.allowed(segs, slashes)
        if allowed:
            raise MethodNotAllowed(headers=[("Allow", ", ".join(sorted(allowed)))])
        if method in ("GET", "HEAD"):
            other = segs[:-1] if segs[-1] == "" and len(segs) > 1 else segs + [""]
            oslashes = None if slashes is None else (
                slashes[:-1] if len(other) < len(segs) else slashes + [False])
            if _stays_here(segs) and self._find(method, other, oslashes) is not None:
                location = path[:-1] if path.endswith("/") else path + "/"
                if query:
                    location += "?" + query
                raise HTTPError(308, headers=[("Location", location)])
        raise NotFound(reason="no route for this path")

    def _descend(self, method, segs):
        """The walk's first candidate when it is the answer, found without the walk: follow
        the literal child, else the variable child, to the end of the path; a node there with
        a route for ``method`` (or GET for HEAD) is what :meth:`_find` returns, since the walk
        tries that branch first. Anything else (a dead end, no route for the method there)
        is ``None``: the full walk decides (a variable after a failed literal, a rest route,
        a mount)."""
        node = self.root
        values = None
        for seg in segs:
            child = node.literals.get(seg)
            if child is None:
                child = node.var
                if child is None:
                    return None
                if values is None:
                    values = [seg]
                else:
                    values.append(seg)
            node = child
        routes = node.routes
        route = routes.get(method)
        if route is None:
            if method != "HEAD":
                return None
            route = routes.get("GET")
            if route is None:
                return None
        return Match(route, () if values is None else tuple(values))

    def _find(self, method, segs, slashes):
        for route_map, values, mounts in self._candidates(segs, slashes):
            route = route_map.get(method)
            if route is None and method == "HEAD":
                route = route_map.get("GET")
            if route is not None:
                return Match(route, values, mounts)
        return None

    def allowed(self, segs: list, slashes=None) -> set:
        """Methods some route accepts for these path segments (HEAD where GET is)."""
        allowed = set()
        for route_map, _, _ in self._candidates(segs, slashes):
            allowed.update(route_map)
        if "GET" in allowed:
            allowed.add("HEAD")
        return allowed

    def _candidates(self, segs, slashes):
        """Yield ``(routes_by_method, values, mounts)`` for every path match, best first."""
        n = len(segs)

        def walk(node, i, values):
            if i == n:
                if node.routes:
                    yield node.routes, tuple(values), ()
                return
            seg = segs[i]
            child = node.literals.get(seg)
            if child is not None:
                yield from walk(child, i + 1, values)
            if node.var is not None:
                values.append(seg)
                yield from walk(node.var, i + 1, values)
                values.pop()
            if node.rest and (slashes is None or not any(slashes[i:])):
                yield node.rest, tuple(values) + ("/".join(segs[i:]),), ()
            if node.mount is not None:
                sub = node.mount.router
                for route_map, vals, mounts in sub._candidates(segs[i:], slashes and slashes[i:]):
                    yield route_map, vals, (node.mount,) + mounts

        yield from walk(self.root, 0, [])


__all__ = ["Route", "Router", "Match", "split_pattern", "split_path"]
