"""The dashboard in headless Chromium while load runs: the numbers move (requests/s > 0), the
events/s chart has points, and the token's cookie keeps the page open without ``?token=``.

It reads the real ``clos_web.ops.metrics`` when that module is there, else a stand-in that
counts this app's requests (a middleware) and publishes. A screenshot is saved to
``artifacts/operations-dashboard.png`` (git-ignored); with ``CLOS_WEB_DOCS_SCREENSHOT=1`` also
to ``docs/operations-dashboard.png``, the picture in docs/operations.md."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil
import socket
import sys
import threading
import time
import types

import pytest

from clos_web import App, Channels, channel
from clos_web.ops.dashboard import METRICS_MODULE

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason=f"{CHROMIUM} is absent (Debian package chromium)"),
]


def _real_metrics() -> bool:
    try:
        return importlib.util.find_spec(METRICS_MODULE) is not None
    except ModuleNotFoundError:
        return False


def stand_in(app: App, registry: Channels):
    """A ``clos_web.ops.metrics`` stand-in that reflects this app's load."""
    counts = {"requests": 0}
    started = time.time()

    def count(request, call_next):
        counts["requests"] += 1
        return call_next(request)

    app.use(count)

    def snapshot(server):
        published = int(registry.last_id.rpartition("-")[2])
        subscribers = registry.subscriber_count()
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        lag = 0.0002 + 0.0001 * ((time.time() - started) % 3)
        return {
            "time": time.time(), "pid": os.getpid(), "worker": None,
            "connections": {"open": len(server.conns), "streams": subscribers, "websocket": 0},
            "requests_total": counts["requests"], "events_published_total": published,
            "events_delivered_total": published * max(subscribers, 1),
            "bytes_sent_total": 200 * counts["requests"], "slow_consumers_closed_total": 0,
            "latency_seconds": {"p50": 0.0004, "p99": 0.0021},
            "loop_lag_seconds": {"p50": lag / 2, "p99": lag, "max": lag * 3},
            "subscribers": {"sse": subscribers, "poll": 0, "websocket": 0},
            "channels": len(registry),
            "top_channels": [{"name": n, "subscribers": registry.subscriber_count(n),
                              "events_total": published} for n in registry.names()][:10],
            "rss_bytes": rss, "gc_pauses_total": 0,
        }

    module = types.ModuleType(METRICS_MODULE)
    module.snapshot = snapshot
    return module


def load(server, stop: threading.Event, registry: Channels) -> None:
    """Keep-alive GETs of /plaintext and a publish every 20 ms until ``stop``."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    req = b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n"
    n = 0
    try:
        while not stop.is_set():
            sock.sendall(req)
            got = b""
            while not got.endswith(b"hi"):
                chunk = sock.recv(4096)
                if not chunk:
                    return
                got += chunk
            n += 1
            if n % 10 == 0:
                registry.publish("news", {"n": n})
                registry.publish("scores", {"n": n}) if n % 30 == 0 else None
                stop.wait(0.02)
    finally:
        sock.close()


def test_the_dashboard_moves_in_a_browser_while_load_runs(serve, monkeypatch):
    sync_api = pytest.importorskip("playwright.sync_api")
    app = App()
    registry = Channels()

    @app.get("/plaintext")
    def plaintext():
        return "hi"

    @app.get("/sub/{name}")
    @channel(registry)
    def sub(name: str):
        return name

    if not _real_metrics():
        monkeypatch.setitem(sys.modules, METRICS_MODULE, stand_in(app, registry))
    app.mount_dashboard("/_clos", token="browser-token")
    server = serve(app)
    stop = threading.Event()
    loader = threading.Thread(target=load, args=(server, stop, registry), daemon=True)
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.set_default_timeout(15_000)
            listener = context.new_page()  # a subscriber, so events are delivered too
            listener.goto(server.url + "/_clos/dashboard.css?token=browser-token")
            listener.evaluate("new EventSource('/sub/news'); new EventSource('/sub/scores')")
            loader.start()
            page.goto(server.url + "/_clos/?token=browser-token")
            page.wait_for_selector("#status.on")
            page.wait_for_function(
                "() => closDashboard.points.filter(p => p.rps > 0).length >= 3")
            page.wait_for_function(
                "() => Number(document.querySelector('#chart-eps').dataset.points) >= 3"
                " && closDashboard.points.some(p => p.pub > 0)")
            rps = page.text_content("#rps")
            assert rps not in ("–", "0.0") and float(rps.split()[0]) > 0
            assert int(page.text_content("#connections")) >= 1
            assert page.text_content("#top-subscribers").strip()
            page.wait_for_function(
                "() => document.querySelector('#top-events').textContent.includes('news')")
            docs = os.environ.get("CLOS_WEB_DOCS_SCREENSHOT") == "1"
            if docs:  # a picture worth showing: half a minute of load
                page.wait_for_function("() => closDashboard.points.length >= 30",
                                       timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "operations-dashboard.png"))
            if docs:
                shutil.copy(ARTIFACTS / "operations-dashboard.png",
                            ROOT / "docs" / "operations-dashboard.png")

            # the cookie set by ?token= keeps the page open without it; another context
            # (no cookie) is refused
            again = context.new_page()
            again.goto(server.url + "/_clos/")
            again.wait_for_selector("#status.on")
            stranger = browser.new_context().new_page()
            answer = stranger.goto(server.url + "/_clos/")
            assert answer.status == 403
        finally:
            stop.set()
            browser.close()
    loader.join(5)
