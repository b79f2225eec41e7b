"""Metrics: what a server counts, ``GET /metrics`` (Prometheus text) and :func:`snapshot`.

Mount the endpoint on any app (it is off unless mounted)::

    app.mount_metrics("/metrics")

The server counts what it does whether or not metrics are mounted, each count a dict update
or an integer add on a path that runs anyway: ``answered``'s own method counts each answer by
route, method and status (``Server.answers``), the loop counts the bytes it sends and the slow
consumers it closes, the channels what they publish and deliver; connections and subscribers
are counted when asked (one walk per scrape). So mounting metrics adds nothing per request.
Importing this module (``mount_metrics`` does) adds the rest: an ``after`` method on
:func:`~clos_web.http.server.answered_later` times the answers left for later, by *route
template* (``/sub/{name}``, never the raw path), and a ``serving`` method starts, per server, a
loop-lag probe and the watchdog that reports handlers holding the loop (see
:class:`Watchdog`).

Durations use the loop's clock (``server.now``, read once per loop turn) and no clock call
per request: a request answered in the turn that read it counts as 0 s, one answered later
(a worker thread, a long-poll, a publish waiting for Redis) as the turns between.

Written by hand, not with ``prometheus_client``: the core depends on plum-dispatch and attrs
only; the text format is a page of code and the tests read it with ``prometheus_client``'s own
parser.

**Workers** (``--workers N``): each worker serves its own figures, labelled with
``worker="N"`` (its slot: the supervisor sets ``CLOS_WEB_WORKER`` in each worker). Not the
supervisor serving a sum: the workers share one port (``SO_REUSEPORT``), so a sum would put
the supervisor on the request path or need a channel from every worker to it, and a sum
drops when a worker restarts (a counter must never go down). Per-worker series stay monotonic
and ``sum by (...) (rate(...))`` aggregates them in Prometheus. A scrape through the shared
port reaches whichever worker the kernel picks; to scrape every worker, serve with
``--metrics-port P``: worker k also listens on ``P + k - 1`` (the same loop and app), so
``/metrics`` there is always worker k's, and Prometheus scrapes the N ports (see
docs/operations.md, "Metrics").

>>> text = render(None)
>>> "# TYPE clos_web_gc_pause_seconds histogram" in text
True
"""

from __future__ import annotations

import bisect
import gc
import logging
import os
import sys
import threading
import time
import traceback
from typing import Any

import attrs

from ..http.connection import STREAM, HTTPConnection
from ..http.head import Response
from ..http.server import Server, answered_later, write
from ..loop.server import Connection, serving

log = logging.getLogger("clos_web.ops")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0)
LAG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
GC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

LAG_PROBE_INTERVAL = 0.05   # seconds between loop-lag probes (a timer each)
BLOCK_THRESHOLD = 0.1       # a loop step longer than this is reported (Watchdog)
BLOCK_REPORT_EVERY = 60.0   # at most one report per route per this many seconds

_UNMATCHED = "(unmatched)"


@attrs.define(slots=True, eq=False)
class Histogram:
    """Counts of observations in fixed buckets (``v <= bound``) plus their sum. ``zeros`` of
    the first bucket's observations are known to be exactly 0 (answers written in the turn
    that read their request): quantiles that fall among them are 0, not a guess.

    >>> h = Histogram((0.1, 1.0)); h.observe(0.05); h.observe(0.5); h.observe(7.0)
    >>> h.counts, h.count
    ([1, 1, 1], 3)
    """

    bounds: tuple
    counts: list = attrs.field()
    sum: float = 0.0
    zeros: int = 0

    @counts.default
    def _zeros(self):
        return [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def add_zeros(self, n: int) -> None:
        """Count ``n`` observations known to be exactly 0."""
        self.counts[0] += n
        self.zeros += n

    @property
    def count(self) -> int:
        return sum(self.counts)

    def quantile(self, q: float) -> float:
        """An estimate of the ``q`` quantile, interpolated inside its bucket as Prometheus'
        ``histogram_quantile`` does (0.0 with no observation, or among the known zeros).

        >>> h = Histogram((1.0, 2.0)); [h.observe(x) for x in (0.5, 1.5, 1.5, 1.5)] and None
        >>> h.quantile(0.5)
        1.333...
        >>> h = Histogram((0.001, 0.01)); h.add_zeros(90)
        >>> for _ in range(10): h.observe(0.005)
        >>> h.quantile(0.5), round(h.quantile(0.99), 4)
        (0.0, 0.0091)
        """
        total = self.count
        rank = q * total
        if not total or rank <= self.zeros:
            return 0.0
        seen = self.zeros
        lower = 0.0
        for i, n in enumerate(self.counts):
            if i == 0:
                n -= self.zeros
            upper = self.bounds[i] if i < len(self.bounds) else self.bounds[-1]
            if seen + n >= rank and n:
                if i == len(self.bounds):
                    return upper
                return lower + (upper - lower) * (rank - seen) / n
            seen += n
            lower = upper
        return lower

    def max_bound(self) -> float:
        """The upper bound of the highest bucket that holds an observation (0.0 if none)."""
        for i in range(len(self.counts) - 1, -1, -1):
            if self.counts[i]:
                return self.bounds[i] if i < len(self.bounds) else float("inf")
        return 0.0


# --------------------------------------------------------------------------------------------
# What each server records


@attrs.define(slots=True, eq=False, repr=False)
class ServerMetrics:
    """One server's figures beyond the loop's own counters (``server.bytes_sent``,
    ``server.slow_consumers_closed``): requests by (method, status), durations by route
    template, the loop lag (how late its timers run) and its watchdog."""

    server: Any
    worker: int | None = None
    started: float = attrs.field(factory=time.time)
    later: dict = attrs.field(factory=dict)       # route template -> Histogram, deferred only
    lag: Histogram = attrs.field(factory=lambda: Histogram(LAG_BUCKETS))
    lag_max: float = 0.0
    watchdog: Any = None
    probing: bool = False

    def __repr__(self) -> str:
        return f"<ServerMetrics {sum(n for *_, n in self.answers())} requests>"

    def answers(self) -> list:
        """``[(route, method, status, n)]``: the server's count of answers
        (:attr:`Server.answers <clos_web.http.server.Server>`, updated by ``answered``), with
        ``route`` the route that answered or None and ``method`` a method label."""
        out = []
        for key, by_status in list(getattr(self.server, "answers", {}).items()):
            route, method = key if key.__class__ is tuple else (key, key.method)
            out.extend((route, method, status, n) for status, n in list(by_status.items()))
        return out

    @property
    def requests(self) -> dict:
        """``{(method, status): count}`` of the requests answered."""
        out: dict = {}
        for _, method, status, n in self.answers():
            out[method, status] = out.get((method, status), 0) + n
        return out

    @property
    def durations(self) -> dict:
        """``{route template: Histogram}``: an answer written in the turn that read its
        request counts 0 s (the first bucket), one answered later its measured time."""
        per_route: dict = {}
        for route, _, _, n in self.answers():
            name = _template(route)
            per_route[name] = per_route.get(name, 0) + n
        out = {}
        for name, n in per_route.items():
            h = Histogram(DURATION_BUCKETS)
            later = self.later.get(name)
            if later is not None:
                h.counts = list(later.counts)
                h.sum = later.sum
                n -= later.count
            h.add_zeros(max(n, 0))
            out[name] = h
        return out

    # -- the loop-lag probe (loop thread) ----------------------------------------------------

    def _probe(self, due: float) -> None:
        late = time.monotonic() - due
        if late < 0.0:
            late = 0.0
        self.lag.observe(late)
        if late > self.lag_max:
            self.lag_max = late
        server = self.server
        if not server.stopping:
            server.call_later(LAG_PROBE_INTERVAL, self._probe, server.now + LAG_PROBE_INTERVAL)


def _worker_slot() -> int | None:
    value = os.environ.get("CLOS_WEB_WORKER", "")
    return int(value) if value.isdigit() else None


def metrics_of(server) -> ServerMetrics:
    """``server``'s :class:`ServerMetrics`, made (and its probes started, if its loop runs) at
    the first call."""
    try:
        return server._clos_metrics
    except AttributeError:
        pass
    m = server._clos_metrics = ServerMetrics(server, worker=_worker_slot())
    if server._ident is not None and not server.stopped.is_set():
        server.call_soon_threadsafe(_start, m)
    return m


def _start(m: ServerMetrics) -> None:
    """Start ``m``'s lag probe and watchdog (loop thread, once)."""
    if m.probing:
        return
    m.probing = True
    server = m.server
    server.call_later(LAG_PROBE_INTERVAL, m._probe, server.now + LAG_PROBE_INTERVAL)
    if m.watchdog is None and server._ident is not None:
        m.watchdog = Watchdog(server)
        m.watchdog.start()


@serving.after
def serving_metrics(server: Server):
    m = metrics_of(server)
    _start(m)


@answered_later.after
def time_answered_later(conn: Connection, request: object, seconds: object):
    m = metrics_of(conn.server)
    name = _template(request.route)
    hist = m.later.get(name)
    if hist is None:
        hist = m.later[name] = Histogram(DURATION_BUCKETS)
    hist.observe(seconds)


def _template(route) -> str:
    """The template of ``route`` (the route that answered a request: the app records it as
    ``request.route``), ``(unmatched)`` for None."""
    return route.path if route is not None else _UNMATCHED


# --------------------------------------------------------------------------------------------
# Garbage-collection pauses (the whole process)

GC = Histogram(GC_BUCKETS)
_gc_started = [0.0]


def _on_gc(phase: str, info: dict) -> None:
    if phase == "start":
        _gc_started[0] = time.perf_counter()
    elif _gc_started[0]:
        GC.observe(time.perf_counter() - _gc_started[0])
        _gc_started[0] = 0.0


if _on_gc not in gc.callbacks:
    gc.callbacks.append(_on_gc)


# --------------------------------------------------------------------------------------------
# The watchdog: what holds the loop


class Watchdog(threading.Thread):
    """A thread that looks at the loop thread every ``threshold / 5`` seconds and reports a
    step of the loop (one ``process_ready``, callback or timer) that held it longer than
    ``threshold`` (``BLOCK_THRESHOLD``, 0.1 s): a warning on the ``clos_web.ops`` logger with
    the route, the duration and a short stack, taken *while* it blocks
    (``sys._current_frames()``), at most once per route per ``BLOCK_REPORT_EVERY`` seconds.

    It costs the loop nothing: the loop keeps no time per step. A step is the frame the loop's
    ``_run`` called; the watchdog holds it between looks and compares identities. The
    duration is measured to within one look (``threshold / 5``).
    """

    def __init__(self, server, threshold: float | None = None):
        super().__init__(name=f"clos_web-watchdog:{server.port}", daemon=True)
        self.server = server
        self.threshold = BLOCK_THRESHOLD if threshold is None else threshold
        self.reported: dict = {}   # route -> when last reported (bounded by the routes)
        self.reports: list = []    # the last reports, newest last (at most 20)
        self.blocked = 0           # steps seen over the threshold (reported or not)

    def run(self) -> None:
        server = self.server
        ident = server._ident
        step = None       # the loop's current step (a frame), as last seen
        since = 0.0       # when it was first seen
        sample = None     # (route, stack) taken once it passed the threshold
        while not server.stopped.wait(self.threshold / 5):
            now = time.monotonic()
            frame = sys._current_frames().get(ident)
            current = _step_frame(frame) if frame is not None else None
            if current is not step:
                if sample is not None:
                    self.blocked += 1
                    self._report(sample, now - since)
                step, since, sample = current, now, None
            elif current is not None and sample is None and now - since >= self.threshold:
                sample = (_route_in(frame, server.app), _short_stack(frame))
            del frame, current
        step = None

    def _report(self, sample, duration: float) -> None:
        route, stack = sample
        now = time.monotonic()
        last = self.reported.get(route)
        if last is not None and now - last < BLOCK_REPORT_EVERY:
            return
        if len(self.reported) > 1000:
            self.reported.clear()
        self.reported[route] = now
        self.reports.append({"route": route, "duration": duration, "stack": stack})
        del self.reports[:-20]
        log.warning("%s held the loop for %.0f ms; stack while it blocked:\n%s",
                    route, duration * 1000, stack)


def _step_frame(frame):
    """The frame the loop's ``_run`` called (this step), or None when the loop waits in
    ``select`` (or is not in ``_run``)."""
    child = None
    while frame is not None:
        code = frame.f_code
        if code.co_name == "_run" and code.co_filename.endswith(os.path.join("loop",
                                                                              "server.py")):
            if child is not None and child.f_code.co_name == "select":
                return None
            return child
        child, frame = frame, frame.f_back
    return None


def _route_in(frame, app) -> str:
    """The route whose handler is on the stack from ``frame`` (by its code object), else the
    innermost function's qualified name."""
    codes = {}
    router = getattr(app, "router", None)
    if router is not None:
        try:
            for route in router.routes():
                fn = route.handler
                while fn is not None:
                    code = getattr(fn, "__code__", None)
                    if code is not None:
                        codes[code] = f"{route.method} {route.path}"
                    fn = getattr(fn, "__wrapped__", None)
        except Exception:
            pass
    f = frame
    while f is not None:
        hit = codes.get(f.f_code)
        if hit is not None:
            return hit
        f = f.f_back
    return f"{frame.f_code.co_qualname}" if frame is not None else "?"


def _short_stack(frame, limit: int = 8) -> str:
    return "".join(traceback.format_list(traceback.extract_stack(frame, limit=limit)))


# --------------------------------------------------------------------------------------------
# The snapshot (the dashboard's) and the Prometheus page


def _connections(server) -> dict:
    from ..ws.server import WebSocket

    streams = websocket = 0
    for conn in list(server.conns):
        protocol = conn.protocol
        if protocol.__class__ is HTTPConnection:
            if protocol.state is STREAM:
                streams += 1
        elif isinstance(protocol, WebSocket):
            websocket += 1
    return {"open": len(server.conns), "streams": streams, "websocket": websocket}


def _push(server) -> dict:
    from ..push.channels import registries

    subscribers = {"sse": 0, "poll": 0, "websocket": 0}
    channels = published = delivered = 0
    top = []
    for registry in registries():
        stats = registry.server_stats(server)
        if stats is None:
            continue
        for transport, n in stats["subscribers"].items():
            subscribers[transport] = subscribers.get(transport, 0) + n
        channels += stats["channels"]
        published += stats["published"]
        delivered += stats["delivered"]
        top += stats["top"]
    top.sort(key=lambda r: -r[0])
    return {"subscribers": subscribers, "channels": channels, "published": published,
            "delivered": delivered,
            "top": [{"name": name, "subscribers": n, "events_total": events}
                    for n, name, events in top[:10]]}


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _all_durations(m: ServerMetrics) -> Histogram:
    total = Histogram(DURATION_BUCKETS)
    for h in list(m.durations.values()):
        for i, n in enumerate(h.counts):
            total.counts[i] += n
        total.sum += h.sum
        total.zeros += h.zeros
    return total


def snapshot(server) -> dict:
    """``server``'s figures now, JSON-able, for the dashboard (which computes rates from
    successive snapshots). Call it on the server's loop thread (a handler does): it walks the
    connections and the channels once.

    ``{"time", "pid", "worker", "connections": {"open", "streams", "websocket"},
    "requests_total", "events_published_total", "events_delivered_total",
    "bytes_sent_total", "slow_consumers_closed_total", "latency_seconds": {"p50", "p99"},
    "loop_lag_seconds": {"p50", "p99", "max"}, "subscribers": {"sse", "poll", "websocket"},
    "channels", "top_channels": [{"name", "subscribers", "events_total"}] (at most 10),
    "rss_bytes", "gc_pauses_total"}``

    >>> from clos_web import App, Server
    >>> snapshot(Server(App()))["requests_total"]
    0
    """
    m = metrics_of(server)
    push = _push(server)
    latency = _all_durations(m)
    return {
        "time": time.time(), "pid": os.getpid(), "worker": m.worker,
        "connections": _connections(server),
        "requests_total": sum(m.requests.values()),
        "events_published_total": push["published"],
        "events_delivered_total": push["delivered"],
        "bytes_sent_total": server.bytes_sent,
        "slow_consumers_closed_total": server.slow_consumers_closed,
        "latency_seconds": {"p50": latency.quantile(0.5), "p99": latency.quantile(0.99)},
        "loop_lag_seconds": {"p50": m.lag.quantile(0.5), "p99": m.lag.quantile(0.99),
                             "max": m.lag_max},
        "subscribers": push["subscribers"], "channels": push["channels"],
        "top_channels": push["top"],
        "rss_bytes": _rss_bytes(), "gc_pauses_total": GC.count,
    }


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _labels(pairs) -> str:
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape_label(str(v))}"' for k, v in pairs) + "}"


def _number(x) -> str:
    if isinstance(x, int):
        return str(x)
    if x == float("inf"):
        return "+Inf"
    return repr(float(x))


class _Page:
    """Lines of the text exposition format, family by family."""

    def __init__(self, base: tuple):
        self.lines = []
        self.base = base  # labels on every sample (the worker's)

    def family(self, name: str, kind: str, help: str) -> None:
        self.lines.append(f"# HELP {name} {_escape_help(help)}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value, labels=()) -> None:
        self.lines.append(f"{name}{_labels(self.base + tuple(labels))} {_number(value)}")

    def histogram(self, name: str, h: Histogram, labels=()) -> None:
        labels = tuple(labels)
        cumulative = 0
        for bound, n in zip(h.bounds, h.counts):
            cumulative += n
            self.sample(name + "_bucket", cumulative, labels + (("le", _number(float(bound))),))
        cumulative += h.counts[-1]
        self.sample(name + "_bucket", cumulative, labels + (("le", "+Inf"),))
        self.sample(name + "_sum", float(h.sum), labels)
        self.sample(name + "_count", cumulative, labels)


def render(server) -> str:
    """The Prometheus text page of ``server`` (``None``: the process-wide families only).

    Families: ``clos_web_connections{state}`` (http, stream, websocket),
    ``clos_web_requests_total{method,status}``, ``clos_web_request_duration_seconds{route}``,
    ``clos_web_subscribers{transport}``, ``clos_web_channels``,
    ``clos_web_events_published_total``, ``clos_web_events_delivered_total``,
    ``clos_web_slow_consumers_closed_total``, ``clos_web_bytes_sent_total``,
    ``clos_web_loop_lag_seconds``, ``clos_web_gc_pause_seconds``; with ``worker="N"`` on
    every sample in a worker process.
    """
    worker = _worker_slot()
    page = _Page((("worker", worker),) if worker is not None else ())
    if server is not None:
        m = metrics_of(server)
        conns = _connections(server)
        push = _push(server)
        page.family("clos_web_connections", "gauge", "Open client connections by state.")
        plain = conns["open"] - conns["streams"] - conns["websocket"]
        for state, n in (("http", plain), ("stream", conns["streams"]),
                         ("websocket", conns["websocket"])):
            page.sample("clos_web_connections", n, (("state", state),))
        page.family("clos_web_requests_total", "counter",
                    "HTTP requests answered, by method and status.")
        for (method, status), n in sorted(m.requests.items()):
            page.sample("clos_web_requests_total", n, (("method", method), ("status", status)))
        page.family("clos_web_request_duration_seconds", "histogram",
                    "Time from a request read to its answer queued, by route template "
                    "(loop-turn resolution).")
        for route, h in sorted(m.durations.items()):
            page.histogram("clos_web_request_duration_seconds", h, (("route", route),))
        page.family("clos_web_subscribers", "gauge", "Channel subscribers by transport.")
        for transport in ("sse", "poll", "websocket"):
            page.sample("clos_web_subscribers", push["subscribers"].get(transport, 0),
                        (("transport", transport),))
        page.family("clos_web_channels", "gauge",
                    "Channels in the registries this server's subscribers use.")
        page.sample("clos_web_channels", push["channels"])
        page.family("clos_web_events_published_total", "counter",
                    "Events published through those registries.")
        page.sample("clos_web_events_published_total", push["published"])
        page.family("clos_web_events_delivered_total", "counter",
                    "Events written to subscribers on this server (one per subscriber).")
        page.sample("clos_web_events_delivered_total", push["delivered"])
        page.family("clos_web_slow_consumers_closed_total", "counter",
                    "Streams closed because their client did not read (output cap).")
        page.sample("clos_web_slow_consumers_closed_total", server.slow_consumers_closed)
        page.family("clos_web_bytes_sent_total", "counter", "Bytes sent to clients.")
        page.sample("clos_web_bytes_sent_total", server.bytes_sent)
        page.family("clos_web_loop_lag_seconds", "histogram",
                    "How late the loop runs its timers.")
        page.histogram("clos_web_loop_lag_seconds", m.lag)
    page.family("clos_web_gc_pause_seconds", "histogram",
                "Garbage-collection pauses of the process.")
    page.histogram("clos_web_gc_pause_seconds", GC)
    return "\n".join(page.lines) + "\n"


@attrs.define(slots=True, frozen=True)
class MetricsPage:
    """What the ``/metrics`` handler returns: ``write`` renders the serving server's page.

    >>> MetricsPage()
    MetricsPage()
    """


@write.dispatch
def write_metrics_page(obj: MetricsPage, conn: Connection):
    body = render(conn.server).encode("utf-8")
    write(Response(body, headers=[("Content-Type", CONTENT_TYPE),
                                  ("Cache-Control", "no-cache")]), conn)


def metrics_handler():
    """``GET /metrics``: the Prometheus text page (see :func:`render`)."""
    return MetricsPage()


__all__ = ["snapshot", "render", "metrics_of", "Histogram", "ServerMetrics", "Watchdog",
           "MetricsPage", "metrics_handler", "CONTENT_TYPE", "BLOCK_THRESHOLD"]
