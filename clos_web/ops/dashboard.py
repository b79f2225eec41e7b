"""The live dashboard: one page, pushed a metrics snapshot once a second over SSE.

``app.mount_dashboard("/_clos")`` (or :func:`mount_dashboard`) serves, under the prefix:

- ``PREFIX/``: the page (``/PREFIX`` is redirected there, query kept); ``dashboard.js`` and
  ``dashboard.css`` beside it. They ship in the package (``clos_web/ops/static/``): no build
  step, no CDN; a ``Content-Security-Policy`` lets the page load nothing from elsewhere.
- ``PREFIX/stream``: an SSE stream of :func:`clos_web.ops.metrics.snapshot` (a JSON object per
  event, once a second) for the server that answers.

The dashboard is itself a clos_web push app: a :class:`~clos_web.push.Channels` registry of its
own (in-memory even when the app's channels go through Redis: each process shows itself), one
channel per server, and a sweeper on that server's loop that takes a snapshot and publishes it
only while someone watches. Nothing is installed before the first watcher, and afterwards a
second with nobody watching costs one subscriber count.

With ``token``, every path under the prefix answers 403 unless the request carries the token,
as ``?token=`` or as the cookie the page sets when it was opened with ``?token=`` (``HttpOnly``,
``SameSite=Strict``, scoped to the prefix); the comparison takes constant time.

>>> from clos_web import App
>>> app = App()
>>> dash = app.mount_dashboard("/_clos", token="s3cret")
>>> dash
<Dashboard /_clos token=yes, 0 watching>
"""

from __future__ import annotations

import hmac
import importlib
import importlib.resources
import logging
import re
import weakref
from typing import Any

import attrs

from ..http import HTTPError, Request, Response, parse_params
from ..loop.server import current_loop
from ..push.broker import LOCAL
from ..push.channels import Channels, EventStream
from ..web.cookies import cookies, set_cookie

log = logging.getLogger("clos_web.ops")

COOKIE = "clos_dashboard"
"""The name of the cookie that carries the dashboard's token."""

METRICS_MODULE = "clos_web.ops.metrics"

# A token travels in a query and a cookie: keep it to characters both carry as they are.
_TOKEN = re.compile(r"[A-Za-z0-9._~-]{1,256}")

_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

_FILES = {  # file name -> content type
    "index.html": "text/html",
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
}


def snapshot(server) -> dict:
    """``clos_web.ops.metrics.snapshot(server)``, imported when first needed; a
    ``RuntimeError`` saying so when that module is missing.

    >>> import sys
    >>> saved = sys.modules.get(METRICS_MODULE)
    >>> sys.modules[METRICS_MODULE] = None  # as if it were not installed
    >>> try:
    ...     snapshot(None)
    ... except RuntimeError as err:
    ...     print(str(err)[:58])
    ... finally:
    ...     _ = sys.modules.pop(METRICS_MODULE)
    ...     if saved is not None: sys.modules[METRICS_MODULE] = saved
    the dashboard needs clos_web.ops.metrics.snapshot(server),
    """
    try:
        metrics = importlib.import_module(METRICS_MODULE)
        take = metrics.snapshot
    except (ImportError, AttributeError) as exc:
        raise RuntimeError(f"the dashboard needs {METRICS_MODULE}.snapshot(server), "
                           f"which cannot be imported: {exc}") from None
    return take(server)


def _check_token(token):
    if token is not None and (not isinstance(token, str) or not _TOKEN.fullmatch(token)):
        raise ValueError("a dashboard token is 1 to 256 characters of A-Z a-z 0-9 . _ ~ -")
    return token


def _static(name: str) -> bytes:
    return importlib.resources.files(__package__).joinpath("static").joinpath(name).read_bytes()


@attrs.define(slots=True, eq=False, repr=False)
class Dashboard:
    """A mounted dashboard: its token, its channels and the servers it sweeps on.

    ``registry`` holds one channel per server (``metrics:PORT``) and keeps only the newest
    snapshot. ``interval`` is fixed by the loop: sweepers run once a second.
    """

    prefix: str
    token: str | None = attrs.field(default=None, converter=_check_token)
    registry: Channels = attrs.field(factory=lambda: Channels(
        history=1, max_age=5.0, heartbeat=15.0, max_channels=64, broker=LOCAL))
    _swept: Any = attrs.field(factory=weakref.WeakKeyDictionary)  # server -> channel name
    _failed: bool = False
    _pages: dict = attrs.field(factory=dict)

    def __repr__(self) -> str:
        return (f"<Dashboard {self.prefix} token={'yes' if self.token else 'no'}, "
                f"{self.registry.subscriber_count()} watching>")

    # -- the guard ---------------------------------------------------------------------------

    def allowed(self, request: Request) -> bool:
        """Whether ``request`` may see the dashboard: no token set, or it carries the token as
        ``?token=`` or in the cookie. Constant time in the token's content.

        >>> from clos_web import Request
        >>> d = Dashboard("/_clos", token="abc")
        >>> d.allowed(Request("GET", "/_clos/?token=abc", query="token=abc"))
        True
        >>> d.allowed(Request("GET", "/_clos/", headers={"cookie": "clos_dashboard=abd"}))
        False
        """
        if self.token is None:
            return True
        expected = self.token.encode("ascii")
        given = [cookies(request).get(COOKIE)]
        if request.query:
            try:
                given += parse_params(request.query).get("token", [])[:1]
            except HTTPError:
                pass
        ok = False
        for value in given:
            if value is not None:
                ok |= hmac.compare_digest(value.encode("utf-8", "replace"), expected)
        return ok

    def guard(self, request: Request) -> None:
        """The routes' guard: a 403 unless :meth:`allowed`."""
        if not self.allowed(request):
            raise HTTPError(403, "the dashboard needs its token (?token=)")

    # -- the sweeper -------------------------------------------------------------------------

    def channel_for(self, server) -> str:
        """The channel of ``server``'s snapshots; the first call (on that server's loop)
        installs the sweeper that publishes them."""
        name = self._swept.get(server)
        if name is None:
            name = self._swept[server] = f"metrics:{server.port}"
            server.add_sweeper(_Sweeper(weakref.ref(self), weakref.ref(server), name))
        return name

    def sweep(self, server, name: str) -> None:
        """Publish ``server``'s snapshot on ``name`` if anyone watches it (its loop, once a
        second)."""
        if not self.registry.subscriber_count(name):
            return
        try:
            data = snapshot(server)
        except Exception:
            if not self._failed:
                self._failed = True
                log.exception("the dashboard's snapshot failed (logged once)")
            return
        self.registry.publish(name, data)

    # -- the answers -------------------------------------------------------------------------

    def load(self) -> "Dashboard":
        """Read the page's files (once, at mount: never a file read on the loop)."""
        for name in _FILES:
            headers = [("X-Content-Type-Options", "nosniff"), ("Cache-Control", "no-cache")]
            if name == "index.html":
                headers += [("Content-Security-Policy", _CSP), ("Referrer-Policy", "no-referrer")]
            self._pages[name] = Response(_static(name), headers=headers,
                                         content_type=_FILES[name])
        return self

    def page(self, name: str, request: Request):
        """One of the page's files; the page sets the token's cookie when given ``?token=``."""
        response = self._pages[name]
        if self.token is not None and name == "index.html" and "token=" in request.query:
            return set_cookie(response, COOKIE, self.token, path=request.path,
                              samesite="Strict", httponly=True)
        return response

    def stream(self) -> EventStream:
        """The SSE stream of this server's snapshots (503 when the metrics are missing)."""
        server = current_loop()
        if server is None:
            raise HTTPError(503, "the dashboard streams from a server's loop")
        try:
            importlib.import_module(METRICS_MODULE).snapshot
        except (ImportError, AttributeError):
            raise HTTPError(503, f"the dashboard needs {METRICS_MODULE}") from None
        return EventStream([self.channel_for(server)], registry=self.registry)


@attrs.define(slots=True, eq=False)
class _Sweeper:
    """What the loop calls once a second; it holds the dashboard and server weakly."""

    dashboard: Any
    server: Any
    name: str

    def __call__(self, now: float) -> None:
        dashboard, server = self.dashboard(), self.server()
        if dashboard is not None and server is not None:
            dashboard.sweep(server, self.name)


def mount_dashboard(app, prefix: str = "/_clos", token: str | None = None) -> Dashboard:
    """Serve the live dashboard on ``app`` under ``prefix``; return the :class:`Dashboard`.

    >>> from clos_web import App
    >>> mount_dashboard(App(), "/ops", token=None)
    <Dashboard /ops token=no, 0 watching>
    """
    prefix = "/" + prefix.strip("/")
    dash = Dashboard(prefix, token).load()
    guard = dash.guard

    def dashboard_page(request: Request):
        return dash.page("index.html", request)

    def dashboard_script(request: Request):
        return dash.page("dashboard.js", request)

    def dashboard_style(request: Request):
        return dash.page("dashboard.css", request)

    def dashboard_stream():
        return dash.stream()

    app.get(prefix + "/", guard=guard)(dashboard_page)
    app.get(prefix + "/dashboard.js", guard=guard)(dashboard_script)
    app.get(prefix + "/dashboard.css", guard=guard)(dashboard_style)
    app.get(prefix + "/stream", guard=guard)(dashboard_stream)
    return dash


__all__ = ["Dashboard", "mount_dashboard", "snapshot", "COOKIE"]
