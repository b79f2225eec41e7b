"""GET /metrics: the Prometheus page read with prometheus_client's parser, checked against
traffic generated over real sockets against examples/hello.py."""

from __future__ import annotations

import json
import logging
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from clos_web.ops import metrics as ops_metrics

from conftest import Reader, connect, load_example, request, stalled_stream, wait_for
from ws_raw import WSClient

prometheus_client = pytest.importorskip("prometheus_client")


def scrape(server) -> dict:
    """``{(sample name, frozenset(labels)): value}`` from GET /metrics; checks the head."""
    status, headers, body = request(server, b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status == 200
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = {}
    for family in text_string_to_metric_families(body.decode("utf-8")):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0)


def get(server, target: str, method: str = "GET", body: bytes = b""):
    data = (f"{method} {target} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n\r\n"
            .encode() + body)
    return request(server, data)


def test_metrics_count_the_traffic_sent(serve):
    hello = load_example("hello")
    server = serve(hello.app)
    received = 0
    for _ in range(3):
        status, headers, body = get(server, "/plaintext")
        assert status == 200
    assert get(server, "/echo", "POST", b"abc")[0] == 200
    assert get(server, "/add?a=x&b=1")[0] == 400
    assert get(server, "/nowhere")[0] == 404

    # subscribers of one channel on every transport
    sse = connect(server)
    sse.sendall(b"GET /sub/room HTTP/1.1\r\nHost: t\r\n\r\n")
    sse_reader = Reader(sse)
    assert sse_reader.read_head()[0] == 200
    poll = connect(server)
    poll.sendall(b"GET /poll/room HTTP/1.1\r\nHost: t\r\n\r\n")
    ws = WSClient.connect("127.0.0.1", server.port, "/ws/room")
    wait_for(lambda: hello.channels.subscriber_count("room") == 3)

    before = scrape(server)
    assert value(before, "clos_web_subscribers", transport="sse") == 1
    assert value(before, "clos_web_subscribers", transport="poll") == 1
    assert value(before, "clos_web_subscribers", transport="websocket") == 1
    assert value(before, "clos_web_connections", state="websocket") == 1
    assert value(before, "clos_web_connections", state="stream") == 1
    assert value(before, "clos_web_channels") >= 1

    assert get(server, "/pub/room", "POST", b"hello")[0] == 202
    status, headers, body = Reader(poll).read_response()
    assert status == 200 and b"hello" in body
    assert b"hello" in ws.read_message()[1]
    while b"hello" not in sse_reader.data:  # (the socket's 5 s timeout bounds the wait)
        assert sse_reader._fill()

    after = scrape(server)
    # 3 /plaintext, the poll, the first scrape
    assert value(after, "clos_web_requests_total", method="GET", status="200") == 5
    assert value(after, "clos_web_requests_total", method="GET", status="101") == 1  # /ws
    assert value(after, "clos_web_requests_total", method="POST", status="200") == 1
    assert value(after, "clos_web_requests_total", method="POST", status="202") == 1
    assert value(after, "clos_web_requests_total", method="GET", status="400") == 1
    assert value(after, "clos_web_requests_total", method="GET", status="404") == 1
    # the histogram by route template: its count, its +Inf bucket
    name = "clos_web_request_duration_seconds"
    assert value(after, name + "_count", route="/plaintext") == 3
    assert value(after, name + "_bucket", route="/plaintext", le="+Inf") == 3
    assert value(after, name + "_count", route="/poll/{name}") == 1
    assert value(after, name + "_count", route="(unmatched)") == 1
    assert not any(dict(labels).get("route") == "/poll/room" for _, labels in after)
    assert value(after, "clos_web_events_published_total") == 1
    assert value(after, "clos_web_events_delivered_total") == 3
    assert value(after, "clos_web_subscribers", transport="poll") == 0
    assert value(after, "clos_web_subscribers", transport="websocket") == 1
    # everything the clients were sent, at least (the page itself is counted after it)
    assert value(after, "clos_web_bytes_sent_total") > value(before, "clos_web_bytes_sent_total")
    assert value(after, "clos_web_bytes_sent_total") >= server.bytes_sent - 100_000
    assert value(after, "clos_web_loop_lag_seconds_count") >= 1
    assert "clos_web_gc_pause_seconds" in {n.rsplit("_", 1)[0] for n, _ in after} or any(
        n.startswith("clos_web_gc_pause_seconds") for n, _ in after)
    for sock in (sse, poll):
        sock.close()
    ws.close()


def test_bytes_sent_counts_what_the_client_read(serve):
    server = serve(load_example("hello").app)
    start = server.bytes_sent
    total = 0
    for _ in range(5):
        with connect(server) as sock:
            sock.sendall(b"GET /plaintext HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            while chunk := sock.recv(65536):
                total += len(chunk)
    wait_for(lambda: server.bytes_sent - start == total)


def test_a_slow_consumer_closed_is_counted(serve):
    hello = load_example("hello")
    server = serve(hello.app, output_cap=64 * 1024)
    sock = stalled_stream(server, "/sub/slow")
    wait_for(lambda: hello.channels.subscriber_count("slow") == 1)
    for _ in range(200):  # never read: the queue passes the cap and the stream is closed
        hello.channels.publish("slow", "x" * 16384)
        if server.slow_consumers_closed:
            break
    wait_for(lambda: value(scrape(server), "clos_web_slow_consumers_closed_total") == 1)
    sock.close()


def test_histogram_quantiles_and_text_escaping():
    h = ops_metrics.Histogram((0.1, 1.0))
    for v in (0.05, 0.05, 0.5, 5.0):
        h.observe(v)
    assert h.count == 4 and h.quantile(0.5) == pytest.approx(0.1)
    assert ops_metrics._labels((("route", 'a"b\\c\nd'),)) == '{route="a\\"b\\\\c\\nd"}'
    families = list(text_string_to_metric_families(ops_metrics.render(None)))
    assert [f.name for f in families] == ["clos_web_gc_pause_seconds"]


def test_methods_outside_the_standard_set_are_one_label(serve):
    server = serve(load_example("hello").app)
    for method in ("FOO", "BAR", "BAZ"):
        assert get(server, "/plaintext", method)[0] in (405, 501, 400)
    samples = scrape(server)
    methods = {dict(labels).get("method") for name, labels in samples
               if name == "clos_web_requests_total"}
    assert not methods & {"FOO", "BAR", "BAZ"}


def test_snapshot_has_the_dashboard_shape(serve):
    server = serve(load_example("hello").app)
    get(server, "/plaintext")
    snap = {}
    done = __import__("threading").Event()

    def take():
        snap.update(ops_metrics.snapshot(server))
        done.set()

    server.call_soon_threadsafe(take)
    assert done.wait(5)
    assert set(snap) == {
        "time", "pid", "worker", "connections", "requests_total", "events_published_total",
        "events_delivered_total", "bytes_sent_total", "slow_consumers_closed_total",
        "latency_seconds", "loop_lag_seconds", "subscribers", "channels", "top_channels",
        "rss_bytes", "gc_pauses_total"}
    assert snap["requests_total"] >= 1
    assert set(snap["connections"]) == {"open", "streams", "websocket"}
    assert set(snap["subscribers"]) == {"sse", "poll", "websocket"}
    assert set(snap["loop_lag_seconds"]) == {"p50", "p99", "max"}
    # every answer so far was written in the turn that read it: 0 s, not a guess inside the
    # first bucket (0-1 ms)
    assert snap["latency_seconds"] == {"p50": 0.0, "p99": 0.0}
    __import__("json").dumps(snap)


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_access_log_one_json_line_per_request_off_by_default(serve):
    from clos_web.ops import accesslog

    server = serve(load_example("hello").app)
    logger = logging.getLogger("test.access")
    logger.setLevel(logging.INFO)
    handler = _Lines()
    logger.addHandler(handler)
    try:
        assert get(server, "/plaintext")[0] == 200
        assert handler.lines == []  # off by default
        accesslog.enable("json", logger)
        status, headers, body = get(server, "/add?a=1&b=2")
        assert status == 200
        assert get(server, "/nowhere")[0] == 404
        wait_for(lambda: len(handler.lines) == 2)
        first, second = (json.loads(line) for line in handler.lines)
        assert set(first) == {"time", "method", "route", "status", "bytes", "duration",
                              "client"}
        assert first["method"] == "GET" and first["route"] == "/add"
        assert first["status"] == 200 and first["client"] == "127.0.0.1"
        assert first["bytes"] > len(body) and abs(first["time"] - time.time()) < 60
        assert second["route"] == "(unmatched)" and second["status"] == 404
        accesslog.enable("text", logger)
        get(server, "/plaintext")
        wait_for(lambda: len(handler.lines) == 3)
        assert handler.lines[2].startswith("time=") and 'route="/plaintext"' in handler.lines[2]
    finally:
        accesslog.disable()
        logger.removeHandler(handler)
    get(server, "/plaintext")
    assert len(handler.lines) == 3  # disabled: nothing more


def test_the_access_log_on_and_off_leaves_the_metrics_counting(serve):
    """The access log is an after method on ``answered``; turning it on and off leaves
    ``answered``'s own counting, which the metrics read, as it was."""
    from clos_web.ops import accesslog

    server = serve(load_example("hello").app)
    accesslog.enable(fmt="text")
    accesslog.disable()
    for _ in range(3):
        assert get(server, "/plaintext")[0] == 200
    wait_for(lambda: value(scrape(server), "clos_web_requests_total", method="GET",
                           status="200") >= 3)


def test_counting_is_the_servers_own_and_mounting_adds_no_method_per_request(serve):
    """The server counts answers in ``answered``'s own method; the metrics add nothing to
    ``answered`` (no qualified method on every request), and a HEAD served by a GET route is
    counted as HEAD under that route."""
    from clos_web.http.server import answered

    hello = load_example("hello")  # mounts /metrics
    assert [m.qualifier for m in answered.methods] == ["primary"]
    server = serve(hello.app)
    head = connect(server)
    head.sendall(b"HEAD /plaintext HTTP/1.1\r\nHost: t\r\n\r\n")
    assert Reader(head).read_head()[0] == 200
    head.close()
    for _ in range(2):
        assert get(server, "/plaintext")[0] == 200
    samples = scrape(server)
    assert value(samples, "clos_web_requests_total", method="HEAD", status="200") == 1
    assert value(samples, "clos_web_request_duration_seconds_count", route="/plaintext") == 3


def test_answered_later_sees_each_deferred_answer_with_its_time(serve):
    """``answered_later`` is a generic: a method of the user's sees every answer that was
    left for later (here a blocking handler's, answered from the worker pool), with its
    time, and the metrics' histogram records it by route."""
    from clos_web import App
    from clos_web.http.server import answered_later
    from clos_web.loop.server import Connection

    app = App()
    app.mount_metrics("/metrics")

    @app.get("/slow", blocking=True)
    def slow():
        time.sleep(0.05)
        return "done"

    seen = []

    @answered_later.after
    def note_later(conn: Connection, request: object, seconds: float):
        seen.append((request.path, seconds))

    try:
        server = serve(app)
        assert get(server, "/slow")[0] == 200
        assert get(server, "/metrics")[0] == 200
        wait_for(lambda: len(seen) == 1)
        assert seen[0][0] == "/slow" and 0.04 <= seen[0][1] < 5
        samples = scrape(server)
        name = "clos_web_request_duration_seconds"
        assert value(samples, name + "_count", route="/slow") == 1
        assert value(samples, name + "_bucket", route="/slow", le="0.025") == 0
        assert value(samples, name + "_sum", route="/slow") >= 0.04
    finally:
        answered_later.remove_method(note_later)
