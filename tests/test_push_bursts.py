"""Bursts: the events published in one loop turn go to each subscriber in one ``send``.

Consecutive events of one channel share their batches, the transport's ``write`` method
queues each event's bytes and the fan-out sends the joined bytes once per subscriber, built
once. Order, ids, the per-event generic and unsubscribing between two events stay exact.
"""

from __future__ import annotations

import re
import threading

from clos_web import Accepted, App, Channels, channel, unsubscribe
from clos_web.http.server import write
from clos_web.push.channels import Event, SSEBatch

from conftest import Reader, connect, load_example, stalled_stream, wait_for
from ws_raw import WSClient

def sse(server, path: str, last_id: str | None = None) -> Reader:
    sock = connect(server)
    extra = f"Last-Event-ID: {last_id}\r\n" if last_id else ""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode())
    reader = Reader(sock)
    status, _ = reader.read_head()
    assert status == 200
    return reader


def events(reader: Reader, n: int) -> list:
    """The first ``n`` events' ``(id, data)`` on an SSE stream (chunked framing skipped)."""
    while len(re.findall(rb"\ndata: ", reader.data)) < n:
        assert reader._fill(), "stream ended"
    found = re.findall(rb"id: ([^\n]+)\ndata: ([^\n]*)\n", reader.data)
    return [(i.decode(), d.decode()) for i, d in found[:n]]


def pipelined_publishes(server, bodies, channel_of=lambda i: "room"):
    """POST /pub/... for each body, all in ONE send (the server reads them in one turn)."""
    data = b"".join(
        f"POST /pub/{channel_of(i)} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(b)}\r\n\r\n"
        .encode() + b for i, b in enumerate(bodies))
    sock = connect(server)
    sock.sendall(data)
    reader = Reader(sock)
    ids = [reader.read_response()[0] for _ in bodies]
    assert ids == [202] * len(bodies)
    sock.close()


def counting_push_each(server) -> list:
    """Record what ``server.push_each`` is asked to send (the fan-out's sends)."""
    calls = []
    real = server.push_each

    def push_each(conns, data, **kw):
        calls.append((len(conns), bytes(data)))
        return real(conns, data, **kw)

    server.push_each = push_each
    return calls


def test_a_burst_of_one_channel_is_one_send_per_subscriber_in_order(serve):
    hello = load_example("hello")
    server = serve(hello.app)
    readers = [sse(server, "/sub/room") for _ in range(3)]
    wait_for(lambda: hello.channels.subscriber_count("room") == 3)
    calls = counting_push_each(server)
    bodies = [f"move-{i}".encode() for i in range(8)]
    pipelined_publishes(server, bodies)
    for reader in readers:
        got = events(reader, 8)
        assert [d for _, d in got] == [b.decode() for b in bodies]
        seqs = [int(i.rsplit("-", 1)[1]) for i, _ in got]
        assert seqs == sorted(seqs) and len(set(seqs)) == 8
    # the 8 events went out together: one push_each to the 3 subscribers, all 8 in it
    sends = [c for c in calls if c[0] == 3]
    assert len(sends) < 8
    assert sum(c[1].count(b"\ndata: move-") for c in sends) == 8


def test_interleaved_channels_keep_each_streams_order_and_resume_exactly(serve):
    """A stream of two channels gets A1 B1 A2 B2 ... in publish order, so its last id is
    always the newest it saw: resuming from any id it got replays nothing twice."""
    registry = Channels()
    two = App()

    @two.get("/both")
    @channel(registry)
    def both_channels():
        return ["a", "b"]

    @two.post("/pub/{name}")
    def pub(request, name: str):
        return Accepted(registry.publish(name, request.body.decode()))

    server = serve(two)
    reader = sse(server, "/both")
    second = sse(server, "/both")
    wait_for(lambda: registry.subscriber_count("a") == 2)
    bodies = [f"{'ab'[i % 2]}{i}".encode() for i in range(10)]
    pipelined_publishes(server, bodies, channel_of=lambda i: "ab"[i % 2])
    for r in (reader, second):
        got = events(r, 10)
        assert [d for _, d in got] == [b.decode() for b in bodies]
        seqs = [int(i.rsplit("-", 1)[1]) for i, _ in got]
        assert seqs == sorted(seqs)
    # resume from the 5th id: exactly the last five, once each
    fifth = events(reader, 10)[4][0]
    again = sse(server, "/both", last_id=fifth)
    assert [d for _, d in events(again, 5)] == [b.decode() for b in bodies[5:]]


def test_a_stream_unsubscribed_between_two_events_of_a_burst_gets_only_the_first(serve):
    registry = Channels()
    app = App()
    leaving = []

    @app.get("/sub")
    @channel(registry)
    def sub():
        return ["room", "other"]

    @app.post("/burst")
    def burst(request):
        # one handler, one turn: publish, unsubscribe one stream from "room", publish again
        registry.publish("room", "first")
        unsubscribe(registry.channel("room"), leaving[0])
        registry.publish("room", "second")
        registry.publish("other", "third")
        return "ok"

    server = serve(app)
    leaver = sse(server, "/sub")
    wait_for(lambda: registry.subscriber_count("room") == 1)
    leaving.extend(c for c in list(server.conns)
                   if getattr(c.protocol, "stream", None) is not None)
    stayer = sse(server, "/sub")
    wait_for(lambda: registry.subscriber_count("room") == 2)
    sock = connect(server)
    sock.sendall(b"POST /burst HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
    assert Reader(sock).read_response()[0] == 200
    assert [d for _, d in events(stayer, 3)] == ["first", "second", "third"]
    assert [d for _, d in events(leaver, 2)] == ["first", "third"]


def test_a_method_on_write_sees_every_event_of_a_burst(serve):
    """The burst is an optimisation inside the transport's method: ``write(event, batch)`` is
    still called once per event, so a user's after method sees each one."""
    hello = load_example("hello")
    server = serve(hello.app)
    reader = sse(server, "/sub/room")
    wait_for(lambda: hello.channels.subscriber_count("room") == 1)
    seen = []
    lock = threading.Lock()

    @write.after
    def audit_burst(event: Event, batch: SSEBatch):
        with lock:
            seen.append(event.data)

    try:
        pipelined_publishes(server, [b"x1", b"x2", b"x3", b"x4"])
        assert [d for _, d in events(reader, 4)] == ["x1", "x2", "x3", "x4"]
        assert seen == ["x1", "x2", "x3", "x4"]
    finally:
        write.remove_method(audit_burst)


def test_a_websocket_subscriber_gets_a_burst_as_frames_in_order(serve):
    hello = load_example("hello")
    server = serve(hello.app)
    plain = WSClient.connect("127.0.0.1", server.port, "/ws/room")
    deflated = WSClient.connect("127.0.0.1", server.port, "/ws/room",
                                extensions="permessage-deflate")
    assert deflated.deflate
    wait_for(lambda: hello.channels.subscriber_count("room") == 2)
    bodies = [(f"event {i} " + "x" * 300).encode() for i in range(8)]
    pipelined_publishes(server, bodies)
    for client in (plain, deflated):
        got = [client.read_message()[1] for _ in bodies]
        assert [g.split(b'"data":"')[1][:8] for g in got] == [b[:8] for b in bodies]
    plain.close()
    deflated.close()


def test_a_burst_obeys_the_slow_consumer_cap_as_its_events_would_one_by_one(serve):
    """A subscriber that does not read is closed once a burst's unsent rest passes the output
    cap, as the same events sent one by one would have closed it: the queue never holds a
    whole burst beyond the cap. (Events published from another thread in a row are fanned
    out in one drain: one burst.)"""
    hello = load_example("hello")
    server = serve(hello.app, output_cap=64 * 1024)
    stalled = stalled_stream(server, "/sub/room")
    wait_for(lambda: hello.channels.subscriber_count("room") == 1)
    conn = next(c for c in list(server.conns) if getattr(c.protocol, "stream", None))
    most = []
    real = server.push_each

    def push_each(conns, data, **kw):
        real(conns, data, **kw)
        most.append(conn.out_bytes if not conn.closed else 0)

    server.push_each = push_each
    for i in range(400):  # at most 6.4 MB, never read
        hello.channels.publish("room", f"{i:03d}" + "x" * 16000)
        if server.slow_consumers_closed:
            break
    # (the loop thread notes the queue after each push_each: wait for its note too)
    wait_for(lambda: server.slow_consumers_closed == 1 and most)
    assert max(most) <= 64 * 1024 + 16100  # the cap, or the rest of one event
    stalled.close()
