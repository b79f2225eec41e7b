"""The live dashboard over real sockets: its token, its page and files, its SSE stream of
snapshots, and that nothing is computed or published while nobody watches.

``clos_web.ops.metrics`` is replaced by a stand-in (``fake_metrics``) that counts its calls;
one test runs against the real module when it is there."""

from __future__ import annotations

import json
import re
import sys
import threading
import types

import httpx
import pytest
from httpx_sse import connect_sse
from hypothesis import given, settings, strategies as st

from clos_web import App, HTTPError, Request
from clos_web.ops.dashboard import COOKIE, METRICS_MODULE, Dashboard

from conftest import request, wait_for

SHAPE = {
    "time", "pid", "worker", "connections", "requests_total", "events_published_total",
    "events_delivered_total", "bytes_sent_total", "slow_consumers_closed_total",
    "latency_seconds", "loop_lag_seconds", "subscribers", "channels", "top_channels",
    "rss_bytes", "gc_pauses_total",
}


def stand_in_snapshot(server, n: int) -> dict:
    return {
        "time": 1_700_000_000.0 + n, "pid": 1, "worker": None,
        "connections": {"open": len(server.conns), "streams": 1, "websocket": 0},
        "requests_total": 10 * n, "events_published_total": 3 * n,
        "events_delivered_total": 3 * n, "bytes_sent_total": 100 * n,
        "slow_consumers_closed_total": 0,
        "latency_seconds": {"p50": 0.001, "p99": 0.004},
        "loop_lag_seconds": {"p50": 0.0001, "p99": 0.0005, "max": 0.002},
        "subscribers": {"sse": 1, "poll": 0, "websocket": 0}, "channels": 1,
        "top_channels": [{"name": "news", "subscribers": 1, "events_total": n}],
        "rss_bytes": 50 << 20, "gc_pauses_total": 0,
    }


@pytest.fixture
def fake_metrics(monkeypatch):
    """A stand-in ``clos_web.ops.metrics`` whose ``snapshot`` counts its calls."""
    module = types.ModuleType(METRICS_MODULE)
    module.calls = 0

    def snapshot(server):
        module.calls += 1
        return stand_in_snapshot(server, module.calls)

    module.snapshot = snapshot
    monkeypatch.setitem(sys.modules, METRICS_MODULE, module)
    return module


def get(server, target: str, headers: str = ""):
    return request(server, f"GET {target} HTTP/1.1\r\nHost: x\r\n{headers}"
                           "Connection: close\r\n\r\n".encode())


def sweeps(server, n: int = 2, timeout: float = 5.0) -> None:
    """Wait until the server's loop has run its sweepers ``n`` more times."""
    done = threading.Event()
    count = [0]

    def sweeper(now):
        count[0] += 1
        if count[0] == n:
            done.set()

    server.call_soon_threadsafe(server.add_sweeper, sweeper)
    assert done.wait(timeout), "the loop did not sweep"


def read_snapshots(url: str, n: int, timeout: float = 8.0, **kw) -> list:
    out = []
    with httpx.Client(timeout=timeout) as client:
        with connect_sse(client, "GET", url, **kw) as source:
            assert source.response.status_code == 200
            assert source.response.headers["content-type"].startswith("text/event-stream")
            assert source.response.headers.get_list("cache-control") == ["no-cache"]
            for sse in source.iter_sse():
                if sse.event == "message":
                    out.append(json.loads(sse.data))
                    if len(out) == n:
                        break
    return out


# -- off unless mounted; the token ----------------------------------------------------------


def test_the_dashboard_is_off_unless_mounted(serve, fake_metrics):
    app = App()
    server = serve(app)
    for path in ("/_clos/", "/_clos/stream", "/_clos/dashboard.js"):
        assert get(server, path)[0] == 404


def test_without_its_token_every_path_is_403(serve, fake_metrics):
    app = App()
    app.mount_dashboard("/_clos", token="s3cret-token")
    server = serve(app)
    for path in ("/_clos/", "/_clos/dashboard.js", "/_clos/dashboard.css", "/_clos/stream"):
        status, _, body = get(server, path)
        assert status == 403, path
        assert b"token" in body
        assert get(server, path + "?token=s3cret-tokeN")[0] == 403
        assert get(server, path, f"Cookie: {COOKIE}=wrong\r\n")[0] == 403
        assert get(server, path + "?token=")[0] == 403
    assert fake_metrics.calls == 0


def test_the_token_opens_it_by_query_then_by_the_cookie_the_page_sets(serve, fake_metrics):
    app = App()
    app.mount_dashboard("/_clos", token="s3cret-token")
    server = serve(app)
    status, headers, body = get(server, "/_clos/?token=s3cret-token")
    assert status == 200
    cookie = headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=s3cret-token;")
    for attribute in ("Path=/_clos/", "HttpOnly", "SameSite=Strict"):
        assert attribute in cookie
    for path in ("/_clos/", "/_clos/dashboard.js", "/_clos/dashboard.css"):
        status, headers, _ = get(server, path, f"Cookie: {COOKIE}=s3cret-token\r\n")
        assert status == 200, path
        assert "set-cookie" not in headers
    events = read_snapshots(server.url + "/_clos/stream", 1,
                            headers={"Cookie": f"{COOKIE}=s3cret-token"})
    assert set(events[0]) == SHAPE
    assert read_snapshots(server.url + "/_clos/stream?token=s3cret-token", 1)


def test_the_page_redirects_to_its_slash_form_keeping_the_token(serve, fake_metrics):
    app = App()
    app.mount_dashboard("/_clos", token="abc")
    server = serve(app)
    status, headers, _ = get(server, "/_clos?token=abc")
    assert status == 308
    assert headers["location"] == "/_clos/?token=abc"


def test_a_bad_token_is_refused_at_mount():
    for bad in ("", "has space", "semi;colon", "x" * 257, "é", 123):
        with pytest.raises(ValueError):
            App().mount_dashboard("/_clos", token=bad)


@settings(max_examples=300, deadline=None)
@given(query=st.text(max_size=60), cookie=st.text(max_size=60))
def test_the_guard_only_ever_allows_or_answers_403(query, cookie):
    dash = Dashboard("/_clos", token="abc")
    req = Request("GET", "/_clos/", query=query, headers={"cookie": cookie})
    try:
        dash.guard(req)
    except HTTPError as err:
        assert err.status == 403
    else:
        assert "abc" in query or "abc" in cookie


def test_the_token_is_compared_in_constant_time(monkeypatch):
    import hmac

    seen = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: seen.append((a, b)) or real(a, b))
    dash = Dashboard("/_clos", token="abc")
    assert not dash.allowed(Request("GET", "/_clos/?token=abd", query="token=abd"))
    assert seen == [(b"abd", b"abc")]


# -- the page and its files -----------------------------------------------------------------

EXTERNAL = re.compile(  # a URL with a host (absolute or scheme-relative), or a CSS import
    rb"""(?:https?:|wss?:|ftp:)?//[a-z0-9.-]+\.[a-z]{2,}|@import|url\(\s*['"]?(?:https?:)?//""",
    re.I)


def test_the_page_and_its_files_are_served_with_their_types_and_nothing_external(
        serve, fake_metrics):
    app = App()
    app.mount_dashboard("/_clos")
    server = serve(app)
    types_ = {"/_clos/": "text/html", "/_clos/dashboard.js": "text/javascript",
              "/_clos/dashboard.css": "text/css"}
    bodies = {}
    for path, ctype in types_.items():
        status, headers, body = get(server, path)
        assert status == 200, path
        assert headers["content-type"].split(";")[0] == ctype
        assert headers["x-content-type-options"] == "nosniff"
        assert body
        assert not EXTERNAL.search(body), (path, EXTERNAL.search(body))
        bodies[path] = body
    page = bodies["/_clos/"]
    assert b'src="dashboard.js"' in page and b'href="dashboard.css"' in page
    assert b"<canvas" in page
    _, headers, _ = get(server, "/_clos/")
    csp = headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert b'EventSource("stream"' in bodies["/_clos/dashboard.js"]
    assert get(server, "/_clos/nope.js")[0] == 404


def test_the_external_url_check_can_fail():
    for body in (b'<script src="https://cdn.example.com/x.js">', b"@import 'a.css';",
                 b"fetch('//evil.example.org/')"):
        assert EXTERNAL.search(body)


def test_the_page_is_served_under_a_mounted_app(serve, fake_metrics):
    root, ops = App(), App()
    ops.mount_dashboard("/dash", token="t0k")
    root.mount("/ops", ops)
    server = serve(root)
    status, headers, _ = get(server, "/ops/dash/?token=t0k")
    assert status == 200
    assert "Path=/ops/dash/" in headers["set-cookie"]
    assert read_snapshots(server.url + "/ops/dash/stream?token=t0k", 1)


# -- the stream -----------------------------------------------------------------------------


def test_the_stream_pushes_a_snapshot_a_second(serve, fake_metrics):
    app = App()
    dash = app.mount_dashboard("/_clos")
    server = serve(app)
    events = read_snapshots(server.url + "/_clos/stream", 3)
    assert [set(e) for e in events] == [SHAPE] * 3
    times = [e["time"] for e in events]
    assert times == sorted(times) and len(set(times)) == 3
    assert events[-1]["requests_total"] > events[0]["requests_total"]
    wait_for(lambda: dash.registry.subscriber_count() == 0)


def test_nothing_is_taken_or_published_while_nobody_watches(serve, fake_metrics):
    app = App()
    dash = app.mount_dashboard("/_clos")
    server = serve(app)
    sweeps(server, 2)
    assert fake_metrics.calls == 0
    assert dash.registry.last_id.endswith("-0")
    read_snapshots(server.url + "/_clos/stream", 2)
    wait_for(lambda: dash.registry.subscriber_count() == 0)
    calls, last = fake_metrics.calls, dash.registry.last_id
    assert calls >= 2
    sweeps(server, 3)
    assert fake_metrics.calls == calls
    assert dash.registry.last_id == last


def test_two_watchers_share_one_snapshot_a_second(serve, fake_metrics):
    app = App()
    dash = app.mount_dashboard("/_clos")
    server = serve(app)
    got = {}

    def watch(i):
        got[i] = read_snapshots(server.url + "/_clos/stream", 3)

    threads = [threading.Thread(target=watch, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert len(got) == 2
    # one snapshot per second serves every watcher: each event seen by both is the same one
    assert {e["time"] for e in got[0]} & {e["time"] for e in got[1]}
    wait_for(lambda: dash.registry.subscriber_count() == 0)


def test_each_server_streams_its_own_snapshot(serve, fake_metrics):
    app = App()
    app.mount_dashboard("/_clos")
    one, two = serve(app), serve(app)
    ports = {}

    def snapshot(server):
        return {**stand_in_snapshot(server, 1), "pid": server.port}

    fake_metrics.snapshot = snapshot
    for server in (one, two):
        ports[server.port] = read_snapshots(server.url + "/_clos/stream", 2)
    for port, events in ports.items():
        assert {e["pid"] for e in events} == {port}


def test_without_the_metrics_module_the_stream_is_a_clear_503(serve, monkeypatch):
    monkeypatch.setitem(sys.modules, METRICS_MODULE, None)  # import raises ImportError
    app = App()
    app.mount_dashboard("/_clos")
    server = serve(app)
    status, _, body = get(server, "/_clos/stream")
    assert status == 503
    assert METRICS_MODULE.encode() in body
    assert get(server, "/_clos/")[0] == 200


def test_a_failing_snapshot_is_logged_once_and_the_stream_stays(serve, fake_metrics, caplog):
    app = App()
    dash = app.mount_dashboard("/_clos")
    server = serve(app)
    calls = []

    def broken(server):
        calls.append(1)
        if len(calls) <= 3:
            raise RuntimeError("boom")
        return stand_in_snapshot(server, len(calls))

    fake_metrics.snapshot = broken
    events = read_snapshots(server.url + "/_clos/stream", 1)
    assert len(calls) >= 4 and set(events[0]) == SHAPE
    assert sum("snapshot failed" in r.getMessage() for r in caplog.records) == 1
    wait_for(lambda: dash.registry.subscriber_count() == 0)


def test_the_real_metrics_snapshot_has_the_shape_the_page_reads(serve):
    pytest.importorskip(METRICS_MODULE)
    app = App()

    @app.get("/plaintext")
    def plaintext():
        return "hi"

    app.mount_dashboard("/_clos")
    server = serve(app)
    assert get(server, "/plaintext")[0] == 200
    event = read_snapshots(server.url + "/_clos/stream", 1)[0]
    assert SHAPE <= set(event)
    assert set(event["connections"]) >= {"open", "streams", "websocket"}
    assert set(event["latency_seconds"]) >= {"p50", "p99"}
    assert set(event["loop_lag_seconds"]) >= {"p50", "p99", "max"}
