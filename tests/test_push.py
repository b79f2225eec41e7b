"""The push layer over real sockets: SSE streams, history and resume, reset, heartbeats, slow
consumers, thread safety, long-poll, and the examples/hello.py contract."""

from __future__ import annotations

import json
import os
import selectors
import socket
import subprocess
import sys
import threading
import time
from urllib.parse import quote, unquote

import attrs
import pytest

import clos_web
from clos_web import (
    Channels, EventStream, HTTPError, LongPoll, Message, Response, channel, end_stream, publish,
    subscribe, unsubscribe,
)

from conftest import ROOT, Reader, connect, load_example, request, wait_for
from test_sse_wire import SSEParser


class PushApp:
    """A tiny app routing by prefix (independent of the router): ``/sub/A,B`` streams channels
    A and B, ``/poll/A`` long-polls, ``/pub/A`` publishes the body, ``/deny/A`` refuses."""

    def __init__(self, registry: Channels, poll_timeout: float = 5.0):
        self.registry = registry
        self.poll_timeout = poll_timeout
        self.conns = []  # the stream connections, for tests that drive them

    def body_limit(self, request, default):
        return default

    def handle(self, request, conn):
        kind, _, rest = request.path[1:].partition("/")
        names = [unquote(n) for n in rest.split(",")]
        if kind == "sub":
            self.conns.append(conn)
            return EventStream(names, registry=self.registry)
        if kind == "poll":
            return LongPoll(names, timeout=self.poll_timeout, registry=self.registry)
        if kind == "pub":
            return Response(self.registry.publish(names[0], request.body.decode()), status=202)
        if kind == "deny":
            return denied(request)
        raise clos_web.NotFound()


registry_for_deny = Channels()


@channel(registry_for_deny)
def denied(request):
    """Authorisation decided by the handler: only a bearer of the right token joins."""
    if request.header("authorization") != "Bearer good":
        return False
    return ["secret"]


class SSEClient:
    """A raw-socket SSE client: sends the request, reads the head, de-chunks, parses events."""

    def __init__(self, server, path: str, headers=(), version: str = "HTTP/1.1",
                 rcvbuf: int | None = None, read_head: bool = True, timeout: float = 5.0):
        self.sock = socket.socket()
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", server.port))
        lines = [f"GET {path} {version}", "Host: t", *[f"{k}: {v}" for k, v in headers]]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.timeout = timeout
        self.raw = b""          # everything after the head, as received
        self.wire = b""         # the SSE bytes (de-chunked)
        self.pending = b""      # chunked framing not yet decoded
        self.eof = False
        self.last_chunk = False
        self.parser = SSEParser()
        self.status = None
        self.headers = {}
        if read_head:
            self.read_head()

    @property
    def events(self):
        return self.parser.events

    def read_head(self):
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"closed before the head: {data!r}")
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split(" ")[1])
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self.chunked = self.headers.get("transfer-encoding") == "chunked"
        self._feed(rest)
        return self.status

    def _feed(self, data: bytes) -> None:
        self.raw += data
        if not self.chunked:
            self.wire += data
            self.parser.feed(data)
            return
        buf = self.pending + data
        out = b""
        while True:
            end = buf.find(b"\r\n")
            if end < 0:
                break
            size = int(buf[:end], 16)
            if size == 0:
                self.last_chunk = True
                buf = buf[end + 2:]
                break
            if len(buf) < end + 4 + size:
                break
            assert buf[end + 2 + size:end + 4 + size] == b"\r\n"
            out += buf[end + 2:end + 2 + size]
            buf = buf[end + 4 + size:]
        self.pending = buf
        self.wire += out
        self.parser.feed(out)

    def recv_some(self, deadline: float) -> bool:
        self.sock.settimeout(max(0.001, deadline - time.monotonic()))
        try:
            data = self.sock.recv(1 << 20)
        except socket.timeout:
            return False
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self._feed(data)
        return True

    def wait(self, predicate, timeout: float | None = None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while not predicate():
            if self.eof or time.monotonic() >= deadline:
                raise AssertionError(f"condition not met; eof={self.eof}, got {self.wire[-300:]!r}")
            self.recv_some(deadline)
        return True

    def wait_events(self, n: int, timeout: float | None = None):
        self.wait(lambda: len(self.events) >= n, timeout)
        return self.events[:n]

    def wait_closed(self, timeout: float | None = None) -> bool:
        deadline = time.monotonic() + (timeout or self.timeout)
        while not self.eof and time.monotonic() < deadline:
            self.recv_some(deadline)
        return self.eof

    def close(self):
        self.sock.close()


@pytest.fixture
def push(serve):
    """``push(**registry_options) -> (server, registry, app)`` with a fresh registry."""

    def start(limits=None, poll_timeout=5.0, **options):
        registry = Channels(**options)
        app = PushApp(registry, poll_timeout)
        server = serve(app, **(limits or {}))
        return server, registry, app

    return start


def publish_on(registry, name, items):
    return [registry.publish(name, item) for item in items]


def data_of(events):
    return [e["data"] for e in events]


# --------------------------------------------------------------------------------------------
# Stream basics: headers, first comment, wire forms


def test_stream_headers_and_a_first_comment_arrive_at_once(push):
    server, registry, _ = push(retry=1.0, retry_jitter=0.0)
    client = SSEClient(server, "/sub/news")
    assert client.status == 200
    assert client.headers["content-type"] == "text/event-stream"
    assert client.headers["cache-control"] == "no-cache"
    assert client.headers["x-accel-buffering"] == "no"
    assert client.headers["transfer-encoding"] == "chunked"
    # before anything is published: the comment that flushes the headers, and retry
    client.wait(lambda: client.parser.retry is not None)
    assert client.wire.startswith(b": ok\n")
    assert client.parser.comments == [" ok"] and client.parser.retry == 1000
    assert client.events == []
    client.close()


@attrs.define
class Moved:
    card: str
    seat: int


def test_published_values_take_their_wire_form_from_encode_event(push):
    server, registry, _ = push()
    client = SSEClient(server, "/sub/room")
    wait_for(lambda: registry.subscriber_count("room") == 1)
    ids = publish_on(registry, "room", [
        "plain", {"score": [1, 2]}, Moved("QS", 3), Message("hi", "chat"),
        "one\ntwo\r\nthree\rfour", "é 日本 🂡", b"bytes are UTF-8"])
    events = client.wait_events(7)
    assert [(e["type"], e["data"], e["id"]) for e in events] == [
        ("message", "plain", ids[0]),
        ("message", '{"score":[1,2]}', ids[1]),
        ("Moved", '{"card":"QS","seat":3}', ids[2]),
        ("chat", "hi", ids[3]),
        ("message", "one\ntwo\nthree\nfour", ids[4]),
        ("message", "é 日本 🂡", ids[5]),
        ("message", "bytes are UTF-8", ids[6]),
    ]
    assert b"data: one\ndata: two\ndata: three\ndata: four\n\n" in client.wire
    # each event is exactly one chunk, the same bytes as the registry's encoded event
    for event in registry.events("room"):
        assert event.chunk in client.raw
    client.close()


def test_the_generic_publish_uses_the_default_registry_and_is_thread_safe(serve):
    app = PushApp(clos_web.channels)
    server = serve(app)
    client = SSEClient(server, "/sub/generic-default")
    wait_for(lambda: clos_web.channels.subscriber_count("generic-default") == 1)
    t = threading.Thread(target=publish, args=("generic-default", "from a thread"))
    t.start()
    t.join(5)
    assert data_of(client.wait_events(1)) == ["from a thread"]
    client.close()
    wait_for(lambda: clos_web.channels.subscriber_count("generic-default") == 0)


def test_http10_clients_get_a_close_delimited_stream(push):
    server, registry, _ = push()
    client = SSEClient(server, "/sub/old", version="HTTP/1.0")
    assert client.status == 200
    assert "transfer-encoding" not in client.headers
    assert client.headers["connection"] == "close"
    wait_for(lambda: registry.subscriber_count("old") == 1)
    ids = publish_on(registry, "old", ["a", "b\nc"])
    assert data_of(client.wait_events(2)) == ["a", "b\nc"]
    assert registry.disconnect("old") == 1
    assert client.wait_closed()
    # the raw bytes are the SSE events themselves: no chunk framing
    assert client.raw.endswith(b"id: %s\ndata: a\n\nid: %s\ndata: b\ndata: c\n\n"
                               % (ids[0].encode(), ids[1].encode()))
    client.close()


def test_a_server_side_disconnect_ends_a_chunked_stream_with_the_last_chunk(push):
    server, registry, _ = push()
    client = SSEClient(server, "/sub/x")
    wait_for(lambda: registry.subscriber_count("x") == 1)
    registry.disconnect("x")
    assert client.wait_closed()
    assert client.last_chunk
    assert registry.subscriber_count() == 0 and "x" not in registry
    client.close()


def test_stopping_the_server_closes_streams(serve):
    registry = Channels()
    server = serve(PushApp(registry))
    client = SSEClient(server, "/sub/x")
    wait_for(lambda: registry.subscriber_count("x") == 1)
    stopper = threading.Thread(target=server.stop, args=(5,))
    stopper.start()
    assert client.wait_closed()
    client.close()
    stopper.join(10)
    assert server.stopped.is_set()
    assert registry.subscriber_count() == 0


# --------------------------------------------------------------------------------------------
# The stream handler decorator: authorisation


def test_a_refusing_stream_handler_answers_403(serve):
    server = serve(PushApp(Channels()))
    status, _, body = request(server, b"GET /deny/x HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status == 403
    client = SSEClient(server, "/deny/x", headers=[("Authorization", "Bearer good")])
    assert client.status == 200
    wait_for(lambda: registry_for_deny.subscriber_count("secret") == 1)
    registry_for_deny.publish("secret", "for your eyes")
    assert data_of(client.wait_events(1)) == ["for your eyes"]
    client.close()


def test_the_decorator_keeps_the_signature_and_passes_through_explicit_answers():
    import inspect

    @channel
    def feed(request, table: int):
        if table < 0:
            raise HTTPError(403, "no such table")
        if table == 0:
            return LongPoll(["lobby"])
        return f"table-{table}"

    assert list(inspect.signature(feed).parameters) == ["request", "table"]
    assert feed(None, 3) == EventStream(["table-3"])
    assert feed(None, 0) == LongPoll(["lobby"])
    with pytest.raises(HTTPError) as err:
        feed(None, -1)
    assert err.value.status == 403
    poll = channel(poll=True, timeout=3)(lambda: ["a", "b"])
    assert poll() == LongPoll(["a", "b"], timeout=3)


# --------------------------------------------------------------------------------------------
# Fan-out


def test_200_subscribers_of_one_channel_each_get_all_events_in_order(push):
    server, registry, _ = push()
    clients = [SSEClient(server, "/sub/many", read_head=False) for _ in range(200)]
    sel = selectors.DefaultSelector()
    for c in clients:
        c.read_head()
        c.sock.setblocking(False)
        sel.register(c.sock, selectors.EVENT_READ, c)
    wait_for(lambda: registry.subscriber_count("many") == 200)
    n = 100
    publisher = threading.Thread(target=publish_on,
                                 args=(registry, "many", [f"event {i}" for i in range(n)]))
    publisher.start()
    deadline = time.monotonic() + 30
    waiting = set(clients)
    while waiting and time.monotonic() < deadline:
        for key, _ in sel.select(1):
            c = key.data
            c._feed(c.sock.recv(1 << 20))
            if len(c.events) >= n:
                waiting.discard(c)
                sel.unregister(c.sock)
    publisher.join(5)
    assert not waiting
    expected = [f"event {i}" for i in range(n)]
    ids = [e.id for e in registry.events("many")]
    for c in clients:
        assert data_of(c.events) == expected
        assert [e["id"] for e in c.events] == ids
        c.close()
    wait_for(lambda: registry.subscriber_count() == 0)


def test_publishing_from_many_threads_gives_every_subscriber_one_gapless_order(push):
    server, registry, _ = push()
    clients = [SSEClient(server, "/sub/t") for _ in range(3)]
    wait_for(lambda: registry.subscriber_count("t") == 3)
    threads = [threading.Thread(target=publish_on, args=(registry, "t", range(250)))
               for _ in range(4)]
    for t in threads:
        t.start()
    # meanwhile the loop thread publishes too
    done = threading.Event()
    server.call_soon_threadsafe(lambda: (publish_on(registry, "t", range(100)), done.set()))
    for t in threads:
        t.join(10)
    assert done.wait(5)
    for c in clients:
        events = c.wait_events(1100, timeout=20)
        seqs = [int(e["id"].rsplit("-", 1)[1]) for e in events]
        assert seqs == list(range(1, 1101))
        c.close()


def test_a_disconnected_subscriber_is_removed_from_every_channel_at_once(push):
    server, registry, _ = push()
    client = SSEClient(server, "/sub/a,b,c")
    wait_for(lambda: registry.subscriber_count() == 3)
    assert sorted(registry.names()) == ["a", "b", "c"]
    client.close()
    wait_for(lambda: registry.subscriber_count() == 0)
    assert registry.names() == []  # no subscribers and no history: nothing left


def test_subscribe_and_unsubscribe_change_a_live_stream(push):
    server, registry, app = push()
    client = SSEClient(server, "/sub/a")
    wait_for(lambda: registry.subscriber_count("a") == 1)
    conn = app.conns[0]
    done = threading.Event()
    server.call_soon_threadsafe(lambda: (subscribe("b", conn), done.set()))
    assert done.wait(5)
    registry.publish("b", "b1")
    registry.publish("a", "a1")
    assert data_of(client.wait_events(2)) == ["b1", "a1"]
    done.clear()
    server.call_soon_threadsafe(lambda: (unsubscribe("a", conn), done.set()))
    assert done.wait(5)
    registry.publish("a", "a2")
    registry.publish("b", "b2")
    assert data_of(client.wait_events(3)) == ["b1", "a1", "b2"]
    assert registry.subscriber_count("a") == 0
    client.close()


def test_1000_subscribe_disconnect_cycles_leave_no_descriptor_and_no_subscriber(push):
    server, registry, _ = push()
    registry.publish("warm", "up")  # let lazily created state exist before counting
    before = len(os.listdir("/proc/self/fd"))
    for batch in range(20):
        clients = [SSEClient(server, f"/sub/cycle,c{batch}-{i}") for i in range(50)]
        for c in clients:
            c.wait(lambda c=c: c.parser.retry is not None)
            c.close()
    wait_for(lambda: not server.conns, timeout=10)
    assert registry.subscriber_count() == 0
    assert registry.names() == ["warm"]  # the cycle channels cost nothing any more
    assert len(os.listdir("/proc/self/fd")) <= before


# --------------------------------------------------------------------------------------------
# History and resume


def test_resume_after_a_disconnect_delivers_exactly_the_missed_events(push):
    server, registry, _ = push()
    client = SSEClient(server, "/sub/r")
    wait_for(lambda: registry.subscriber_count("r") == 1)
    publish_on(registry, "r", ["1", "2", "3"])
    seen = client.wait_events(3)
    last = seen[-1]["id"]
    client.close()
    wait_for(lambda: registry.subscriber_count("r") == 0)
    publish_on(registry, "r", ["4", "5", "6"])
    again = SSEClient(server, "/sub/r", headers=[("Last-Event-ID", last)])
    assert data_of(again.wait_events(3)) == ["4", "5", "6"]
    registry.publish("r", "7")
    assert data_of(again.wait_events(4)) == ["4", "5", "6", "7"]
    again.close()
    # the same with the query parameter (an EventSource polyfill's way)
    third = SSEClient(server, f"/sub/r?lastEventId={quote(seen[1]['id'])}")
    assert data_of(third.wait_events(5)) == ["3", "4", "5", "6", "7"]
    third.close()


def test_one_last_event_id_resumes_a_stream_of_several_channels(push):
    server, registry, _ = push()
    first = registry.publish("x", "x0")
    registry.publish("y", "y1")
    registry.publish("z", "other channel")
    registry.publish("x", "x2")
    client = SSEClient(server, "/sub/x,y", headers=[("Last-Event-ID", first)])
    assert data_of(client.wait_events(2)) == ["y1", "x2"]
    client.close()


def test_replay_and_live_have_no_gap_and_no_duplicate_under_concurrent_publishing(push):
    server, registry, _ = push()
    total = 1500
    stop = threading.Event()

    def publisher():
        for i in range(total):
            registry.publish("live", str(i))
            if i % 50 == 0:
                time.sleep(0.001)
        stop.set()

    received = []
    last = registry.last_id  # the position before the first event: everything is "missed"
    t = threading.Thread(target=publisher)
    t.start()
    reconnects = 0
    while len(received) < total:
        headers = [("Last-Event-ID", last)] if last else []
        client = SSEClient(server, "/sub/live", headers=headers)
        target = min(total, len(received) + 97)  # drop the connection mid-stream, repeatedly
        try:
            client.wait(lambda: len(received) + len(client.events) >= target, timeout=10)
        finally:
            client.close()
        assert all(e["type"] == "message" for e in client.events)  # never a reset
        received += [e["data"] for e in client.events]
        last = client.events[-1]["id"] if client.events else last
        reconnects += 1
    t.join(10)
    assert received[:total] == [str(i) for i in range(total)]
    assert reconnects > 10


def test_an_unknown_id_starts_the_stream_with_reset(push):
    server, registry, _ = push()
    publish_on(registry, "u", ["a", "b"])
    current = registry.events("u")[-1].id
    for bad in ["nonsense", "zzzzz-1", current.split("-")[0] + "-999999"]:
        client = SSEClient(server, "/sub/u", headers=[("Last-Event-ID", bad)])
        event = client.wait_events(1)[0]
        assert (event["type"], event["data"]) == ("reset", current)
        assert event["id"] == registry.last_id  # the client resumes from here next time
        registry.publish("u", "live")
        second = client.wait_events(2)[1]
        assert (second["type"], second["data"]) == ("message", "live")
        current = second["id"]
        client.close()


def test_an_id_older_than_the_count_bounded_history_gets_reset(push):
    server, registry, _ = push(history=5)
    ids = publish_on(registry, "h", [str(i) for i in range(10)])
    client = SSEClient(server, "/sub/h", headers=[("Last-Event-ID", ids[2])])
    assert [(e["type"], e["data"]) for e in client.wait_events(1)] == [("reset", ids[-1])]
    client.close()
    # within history: exact replay
    client = SSEClient(server, "/sub/h", headers=[("Last-Event-ID", ids[5])])
    assert data_of(client.wait_events(4)) == ["6", "7", "8", "9"]
    client.close()


def test_an_id_older_than_the_age_bounded_history_gets_reset(push):
    server, registry, _ = push(max_age=0.3)
    ids = publish_on(registry, "old", ["a", "b"])
    time.sleep(0.4)  # let the events age out of history (time passing is the point here)
    latest = registry.publish("old", "c")
    client = SSEClient(server, "/sub/old", headers=[("Last-Event-ID", ids[0])])
    assert [(e["type"], e["data"]) for e in client.wait_events(1)] == [("reset", latest)]
    client.close()
    assert [e.data for e in registry.events("old")] == ["c"]


def test_retry_is_sent_with_jitter(push):
    server, registry, _ = push(retry=1.0, retry_jitter=2.0)
    values = []
    for _ in range(12):
        client = SSEClient(server, "/sub/j")
        client.wait(lambda: client.parser.retry is not None)
        values.append(client.parser.retry)
        client.close()
    assert all(1000 <= v <= 3000 for v in values)
    assert len(set(values)) > 3


# --------------------------------------------------------------------------------------------
# Heartbeats and slow consumers


def test_idle_streams_get_comment_heartbeats(push):
    server, registry, _ = push(heartbeat=1.0)
    client = SSEClient(server, "/sub/quiet")
    client.wait(lambda: client.parser.comments.count(" ping") >= 2, timeout=5)
    assert client.events == []
    client.close()


def test_no_blank_line_ends_a_block_without_data_at_start_or_in_heartbeats(push):
    """The preamble and heartbeats dispatch nothing (a client such as httpx-sse would report an
    empty event for each); events, ids and retry still arrive as a browser expects."""
    server, registry, _ = push(heartbeat=0.2, retry=1.0, retry_jitter=0.0)
    client = SSEClient(server, "/sub/beats")
    wait_for(lambda: registry.subscriber_count("beats") == 1)
    first = registry.publish("beats", "one")
    client.wait(lambda: client.parser.comments.count(" ping") >= 2, timeout=6)
    second = registry.publish("beats", "two")
    events = client.wait_events(2)
    assert [(e["id"], e["data"]) for e in events] == [(first, "one"), (second, "two")]
    assert client.parser.retry == 1000
    assert client.parser.ignored == 0
    assert b"\n\n" not in client.wire.replace(b"data: one\n\n", b"").replace(
        b"data: two\n\n", b"")
    client.close()


def test_hello_heartbeat_flag_sets_the_interval():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, str(ROOT / "examples" / "hello.py"), "--port",
                             str(port), "--heartbeat", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline().startswith(b"serving on")
        deadline = time.monotonic() + 10
        while True:
            try:
                client = SSEClient(type("S", (), {"port": port}), "/sub/hb")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.wait(lambda: " ping" in client.parser.comments, timeout=4)
        client.close()
    finally:
        proc.kill()
        proc.communicate()


def test_a_slow_consumer_is_closed_at_its_cap_while_a_normal_subscriber_keeps_receiving(push):
    cap = 256 * 1024
    server, registry, _ = push(limits={"output_cap": cap})
    slow = SSEClient(server, "/sub/firehose", rcvbuf=4096)  # never reads after the head
    normal = SSEClient(server, "/sub/firehose")
    wait_for(lambda: registry.subscriber_count("firehose") == 2)
    peaks = []

    def measure():
        peaks.append(max((c.out_bytes for c in server.conns), default=0))

    payload = "x" * 16_000
    n = 800  # 12.8 MB: far more than the kernel's socket buffers hold
    started = time.monotonic()
    for i in range(0, n, 8):
        # bursts of 128 KB, each read by the normal subscriber before the next (it keeps up)
        for j in range(i, i + 8):
            registry.publish("firehose", f"{j} {payload}")
        server.call_soon_threadsafe(measure)
        normal.wait_events(i + 8, timeout=10)
    events = normal.events
    assert time.monotonic() - started < 30
    assert [int(e["data"].split(" ")[0]) for e in events] == list(range(n))
    wait_for(lambda: registry.subscriber_count("firehose") == 1)  # the slow one is gone
    assert max(peaks) <= cap  # the queue never grew past the cap
    assert slow.wait_closed(5)  # closed (it would reconnect and resume from history)
    slow.close()
    normal.close()


# --------------------------------------------------------------------------------------------
# Long-poll


def poll(server, path: str, timeout: float = 5.0):
    status, headers, body = request(server, f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode(),
                                    timeout=timeout)
    return status, headers, json.loads(body)


def test_long_poll_returns_the_events_after_the_last_id_at_once(push):
    server, registry, _ = push()
    ids = publish_on(registry, "lp", ["a", "b", "c"])
    t = time.monotonic()
    status, headers, body = poll(server, f"/poll/lp?lastEventId={ids[0]}")
    assert time.monotonic() - t < 1
    assert status == 200 and headers["content-type"] == "application/json"
    assert body == {"events": [{"id": ids[1], "event": "message", "data": "b"},
                               {"id": ids[2], "event": "message", "data": "c"}],
                    "last_id": ids[2]}


def test_long_poll_waits_for_the_next_event(push):
    server, registry, _ = push()
    last = registry.publish("lp", "before")
    result = {}
    t = threading.Thread(target=lambda: result.update(
        r=poll(server, f"/poll/lp?lastEventId={last}")))
    t.start()
    wait_for(lambda: registry.subscriber_count("lp") == 1)
    assert "r" not in result
    new = registry.publish("lp", Message({"n": 1}, "tick"))
    t.join(5)
    assert result["r"][2] == {"events": [{"id": new, "event": "tick", "data": '{"n":1}'}],
                              "last_id": new}
    assert registry.subscriber_count() == 0


def test_long_poll_times_out_with_no_events(push):
    server, registry, _ = push(poll_timeout=0.5)
    last = registry.publish("lp", "x")
    t = time.monotonic()
    status, _, body = poll(server, f"/poll/lp?lastEventId={last}")
    assert 0.4 <= time.monotonic() - t < 3
    assert (status, body) == (200, {"events": [], "last_id": last})
    assert registry.subscriber_count() == 0


def test_long_poll_applies_the_reset_rule(push):
    server, registry, _ = push(history=2)
    ids = publish_on(registry, "lp", ["1", "2", "3", "4"])
    for stale in ["garbage", ids[0]]:
        _, _, body = poll(server, f"/poll/lp?lastEventId={stale}")
        assert body["events"] == [{"id": registry.last_id, "event": "reset", "data": ids[-1]}]
        assert body["last_id"] == registry.last_id


def test_a_long_poll_client_that_leaves_is_forgotten(push):
    server, registry, _ = push()
    sock = connect(server)
    sock.sendall(b"GET /poll/gone HTTP/1.1\r\nHost: t\r\n\r\n")
    wait_for(lambda: registry.subscriber_count("gone") == 1)
    sock.close()
    wait_for(lambda: registry.subscriber_count() == 0)
    assert "gone" not in registry


def test_long_poll_keeps_the_connection_alive_for_the_next_poll(push):
    server, registry, _ = push()
    with connect(server) as sock:
        reader = Reader(sock)
        last = registry.publish("k", "0")
        for i in range(1, 4):
            sock.sendall(f"GET /poll/k?lastEventId={last} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            wait_for(lambda: registry.subscriber_count("k") == 1)
            registry.publish("k", str(i))
            status, _, body = reader.read_response()
            body = json.loads(body)
            assert [e["data"] for e in body["events"]] == [str(i)]
            last = body["last_id"]


# --------------------------------------------------------------------------------------------
# The examples/hello.py contract


def test_hello_pub_sub_contract(hello):
    client = SSEClient(hello, "/sub/demo")
    assert client.status == 200 and client.headers["content-type"] == "text/event-stream"
    app = load_example  # noqa: F841 (the fixture's app is its own module instance)
    status, headers, body = request(
        hello, b"POST /pub/demo HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello\nworld")
    assert status == 202
    first_id = body.decode()
    event = client.wait_events(1)[0]
    assert (event["id"], event["data"]) == (first_id, "hello\nworld")
    client.close()
    request(hello, b"POST /pub/demo HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\r\nmissed")
    again = SSEClient(hello, "/sub/demo", headers=[("Last-Event-ID", first_id)])
    assert data_of(again.wait_events(1)) == ["missed"]
    again.close()
    _, _, polled = poll(hello, f"/poll/demo?lastEventId={first_id}")
    assert [e["data"] for e in polled["events"]] == ["missed"]
    assert request(hello, b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n")[2] == b"Hello, World!"


def test_server_stop_ends_a_chunked_stream_with_its_last_chunk(serve):
    """A stopping server finishes chunked SSE streams properly (zero-length chunk, then close)."""
    import clos_web

    registry = clos_web.Channels()
    app = clos_web.App()

    @app.get("/s")
    def s():
        return clos_web.EventStream(["x"], registry=registry)

    server = serve(app)
    with connect(server) as sock:
        sock.sendall(b"GET /s HTTP/1.1\r\nHost: t\r\n\r\n")
        reader = Reader(sock)
        status, headers = reader.read_head()
        assert status == 200 and headers["transfer-encoding"] == "chunked"
        wait_for(lambda: registry.subscriber_count("x") == 1)
        server.stop(2)
        while reader._fill():
            pass
        assert reader.data.endswith(b"0\r\n\r\n")


def test_a_stream_handler_may_create_a_session_and_set_its_cookie(serve):
    """EventStream and LongPoll carry extra headers: a new session's Set-Cookie reaches the
    client on the stream's own response."""
    import clos_web

    registry = clos_web.Channels()
    app = clos_web.App()

    @app.get("/s")
    def s(session: clos_web.Session):
        session["seen"] = True
        return clos_web.EventStream(["x"], registry=registry)

    @app.get("/p")
    def p(session: clos_web.Session):
        return clos_web.LongPoll(["x"], registry=registry, timeout=0.2)

    server = serve(app)
    with connect(server) as sock:
        sock.sendall(b"GET /s HTTP/1.1\r\nHost: t\r\n\r\n")
        status, headers = Reader(sock).read_head()
        assert status == 200 and headers["content-type"] == "text/event-stream"
        assert "set-cookie" in headers
    status, headers, body = request(server, b"GET /p HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status == 200 and "set-cookie" in headers
    assert json.loads(body)["events"] == []
