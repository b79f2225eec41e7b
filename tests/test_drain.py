"""Graceful drain: SIGTERM (or ``server.stop(timeout)``) stops accepting at once, lets answers
in flight finish, ends every SSE stream with its last chunk (the client resumes elsewhere with
``Last-Event-ID``), closes every WebSocket with 1001 and every idle keep-alive connection, and
exits 0; a second SIGTERM closes what is left at once.

The signal cases run a real process (``python -m clos_web drainapp:app``: examples/hello.py
plus a blocking ``/slow`` handler); the resume case runs two servers in this process over one
in-memory registry. Every process started here is killed at teardown; every wait is bounded.
"""

from __future__ import annotations

import signal
import socket
import threading
import time

import pytest

from conftest import Reader, connect, load_example, wait_for
from test_cli import PY, free_port, serving, spawn  # noqa: F401  (spawn: the fixture)
from ws_raw import WSClient

DRAIN_APP = '''
import pathlib
import time

from examples.hello import app, channels

@app.get("/slow", blocking=True)
def slow(seconds: float = 1.0):
    """Sleeps ``seconds`` on a worker thread (the file ``started`` says it began)."""
    pathlib.Path("started").touch()
    time.sleep(seconds)
    return "done"
'''

GET_PLAIN = b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n"


def start_app(spawn, tmp_path):  # noqa: F811
    (tmp_path / "drainapp.py").write_text(DRAIN_APP)
    port = free_port()
    proc = spawn([PY, "-m", "clos_web", "drainapp:app", "--port", str(port)], cwd=tmp_path)
    wait_for(serving(port), timeout=15, interval=0.05)
    return proc, port


def slow_request(port: int, seconds: float, started) -> tuple[socket.socket, Reader]:
    """A ``GET /slow`` whose handler is running (sleeping) on the server when this returns."""
    sock = connect(port, timeout=10)
    sock.sendall(f"GET /slow?seconds={seconds} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    wait_for(started.exists, timeout=10)
    return sock, Reader(sock)


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return False


def read_to_last_chunk(reader: Reader, timeout: float = 5.0) -> bytes:
    reader.sock.settimeout(timeout)
    while not reader.data.endswith(b"0\r\n\r\n"):
        assert reader._fill(), f"closed mid-stream: {reader.data[-60:]!r}"
    return reader.data


def test_sigterm_finishes_the_answer_in_flight_ends_streams_and_sockets_and_exits_0(
        spawn, tmp_path):  # noqa: F811
    proc, port = start_app(spawn, tmp_path)
    slow, slow_reader = slow_request(port, 1.5, tmp_path / "started")
    with connect(port) as idle, connect(port) as stream, \
            WSClient.connect("127.0.0.1", port, "/ws-echo") as ws:
        idle.sendall(GET_PLAIN)                       # a keep-alive connection, now idle
        idle_reader = Reader(idle)
        assert idle_reader.read_response()[0] == 200
        stream.sendall(b"GET /sub/news HTTP/1.1\r\nHost: x\r\n\r\n")
        stream_reader = Reader(stream)
        assert stream_reader.read_head()[0] == 200
        ws.send_frame(0x1, b"hi")
        assert ws.read_message().payload == b"hi"

        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        assert idle_reader.closed(timeout=1.0)        # idle keep-alive: closed at once
        wait_for(lambda: refused(port), timeout=1.0)  # no more accepts
        read_to_last_chunk(stream_reader)             # the stream's last chunk, then EOF
        assert stream_reader.closed(timeout=1.0)
        assert ws.expect_close(1001, timeout=2.0).code == 1001
        assert time.monotonic() - sent < 1.4, "streams and sockets waited for the slow one"
        status, headers, body = slow_reader.read_response()   # the answer in flight finishes
        assert (status, body) == (200, b"done")
        assert headers.get("connection") == "close"
        assert slow_reader.closed(timeout=2.0)
    slow.close()
    assert proc.wait(10) == 0


def test_a_second_sigterm_closes_what_is_left_at_once(spawn, tmp_path):  # noqa: F811
    proc, port = start_app(spawn, tmp_path)
    slow, slow_reader = slow_request(port, 60, tmp_path / "started")
    with slow:
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: refused(port), timeout=2.0)  # the first one was taken in
        assert proc.poll() is None                    # still waiting for /slow
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        assert slow_reader.closed(timeout=3.0)        # closed without an answer
        assert slow_reader.data == b""
        assert proc.wait(5) == 0
        assert time.monotonic() - sent < 3.0


def test_the_stop_timeout_closes_what_is_left_and_the_process_exits(tmp_path):
    """``server.stop(timeout)`` from another thread, with a handler that outlives it: stop
    returns about ``timeout`` later and the handler's connection is closed."""
    import clos_web
    from clos_web import App

    app = App()
    release = threading.Event()
    started = threading.Event()

    @app.get("/stuck", blocking=True)
    def stuck():
        started.set()
        release.wait(30)
        return "late"

    server = clos_web.start(app, 0)
    try:
        with connect(server, timeout=10) as sock:
            sock.sendall(b"GET /stuck HTTP/1.1\r\nHost: x\r\n\r\n")
            assert started.wait(5)
            began = time.monotonic()
            server.stop(0.5)
            assert 0.4 < time.monotonic() - began < 3.0
            assert server.stopped.is_set()
            assert Reader(sock).closed(timeout=2.0)
    finally:
        release.set()
        server.stop(1)


# --------------------------------------------------------------------------------------------
# An SSE client resumes on a new server with nothing lost


def dechunk(data: bytes) -> bytes:
    out = bytearray()
    while True:
        end = data.find(b"\r\n")
        if end < 0:
            return bytes(out)
        size = int(data[:end].split(b";")[0], 16)
        if size == 0 or len(data) < end + 2 + size + 2:
            return bytes(out)
        out += data[end + 2:end + 2 + size]
        data = data[end + 2 + size + 2:]


def sse_events(data: bytes) -> list[tuple[str, str]]:
    """``(id, data)`` of every complete event in a chunked SSE body."""
    events = []
    for block in dechunk(data).decode().split("\n\n")[:-1]:
        fields = dict(line.split(": ", 1) for line in block.split("\n")
                      if line and not line.startswith(":"))
        if "data" in fields:
            events.append((fields.get("id"), fields["data"]))
    return events


def read_events(reader: Reader, n: int, timeout: float = 5.0) -> list[tuple[str, str]]:
    reader.sock.settimeout(timeout)
    while len(sse_events(reader.data)) < n:
        assert reader._fill(), f"ended before {n} events: {reader.data[-80:]!r}"
    return sse_events(reader.data)


def test_a_stream_ends_cleanly_on_stop_and_resumes_on_a_new_server_with_nothing_lost(serve):
    hello = load_example("hello")
    first = serve(hello.app)
    with connect(first) as sock:
        sock.sendall(b"GET /sub/room HTTP/1.1\r\nHost: x\r\n\r\n")
        reader = Reader(sock)
        assert reader.read_head()[0] == 200
        ids = [hello.channels.publish("room", f"e{n}") for n in (1, 2)]
        assert read_events(reader, 2) == [(ids[0], "e1"), (ids[1], "e2")]
        stopper = threading.Thread(target=first.stop, args=(5,))
        stopper.start()
        read_to_last_chunk(reader)
        assert reader.closed(timeout=2.0)
        stopper.join(10)
        assert not stopper.is_alive()
    ids += [hello.channels.publish("room", f"e{n}") for n in (3, 4)]  # while nobody listens
    second = serve(hello.app)
    with connect(second) as sock:
        sock.sendall(f"GET /sub/room HTTP/1.1\r\nHost: x\r\nLast-Event-ID: {ids[1]}\r\n"
                     "\r\n".encode())
        reader = Reader(sock)
        assert reader.read_head()[0] == 200
        assert read_events(reader, 2) == [(ids[2], "e3"), (ids[3], "e4")]
        ids.append(hello.channels.publish("room", "e5"))
        assert read_events(reader, 3) == [(ids[2], "e3"), (ids[3], "e4"), (ids[4], "e5")]


def test_connections_waiting_in_the_accept_queue_at_stop_are_answered_not_reset(serve):
    """Closing a listening socket resets the connections still in its queue (with
    SO_REUSEPORT no other worker sees them): stop takes them in and answers what they sent."""
    from clos_web import App

    app = App()
    app.get("/")(lambda: "hi")
    server = serve(app)
    release = threading.Event()
    blocked = threading.Event()

    def block():  # hold the loop so that new connections wait in the kernel's queue
        blocked.set()
        release.wait(10)

    server.call_soon_threadsafe(block)
    assert blocked.wait(5)
    waiting = [connect(server, timeout=5) for _ in range(5)]
    for sock in waiting:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    stopper = threading.Thread(target=server.stop, args=(5,))
    stopper.start()
    wait_for(lambda: server._callbacks, timeout=5)  # the stop is queued behind block()
    release.set()
    for sock in waiting:
        with sock:
            reader = Reader(sock)
            status, headers, body = reader.read_response()
            assert (status, body) == (200, b"hi")
            assert reader.closed(timeout=2.0)
    stopper.join(10)
    assert not stopper.is_alive()
