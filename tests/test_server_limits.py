"""Server-wide defences: a per-client connection cap, and a graceful stop on SIGINT/SIGTERM
that ends streams cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from clos_web import App

from conftest import ROOT, Reader, connect, wait_for


def _connect_from(server, source: str) -> socket.socket:
    sock = socket.socket()
    sock.settimeout(3)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", server.port))
    return sock


def test_one_address_cannot_hold_more_than_its_share_of_connections(serve):
    app = App()
    app.get("/")(lambda: "hi")
    server = serve(app, max_connections_per_client=3)
    held = [_connect_from(server, "127.0.0.1") for _ in range(3)]
    for sock in held:  # each is a working connection
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert Reader(sock).read_response()[0] == 200
    with _connect_from(server, "127.0.0.1") as extra:
        status, headers, body = Reader(extra).read_response()
        assert status == 503 and headers["retry-after"] == "1"
        assert b"too many connections" in body
    with _connect_from(server, "127.0.0.2") as other:  # another client is not affected
        other.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert Reader(other).read_response()[0] == 200
    held.pop().close()
    wait_for(lambda: server._clients.get("127.0.0.1", 0) == 2, timeout=3)
    with _connect_from(server, "127.0.0.1") as again:
        again.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert Reader(again).read_response()[0] == 200
    for sock in held:
        sock.close()
    wait_for(lambda: not server._clients, timeout=3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_hello():
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "hello.py"), "--port", str(port)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)})

    def up():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    wait_for(up, timeout=10, interval=0.05)
    return proc, port


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_sse_streams_cleanly_and_exits_0(signum):
    proc, port = _start_hello()
    try:
        curl = subprocess.Popen(["curl", "-sN", "--max-time", "20",
                                 f"http://127.0.0.1:{port}/sub/news"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            raw.sendall(b"GET /sub/news HTTP/1.1\r\nHost: x\r\n\r\n")
            reader = Reader(raw)
            status, headers = reader.read_head()
            assert status == 200 and headers["transfer-encoding"] == "chunked"
            time.sleep(0.3)  # curl's stream is open too
            proc.send_signal(signum)
            raw.settimeout(5)
            while not reader.data.endswith(b"0\r\n\r\n"):
                assert reader._fill(), f"closed mid-stream: {reader.data[-40:]!r}"
            assert reader.closed()
        assert curl.wait(10) == 0  # not curl: (18) transfer closed with outstanding data
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_stream_with_no_events_ends_cleanly_at_its_idle_deadline(serve):
    from conftest import load_example

    hello = load_example("hello")
    server = serve(hello.app, stream_idle_timeout=1.0)
    with connect(server, timeout=6) as quiet, connect(server, timeout=6) as busy:
        quiet.sendall(b"GET /sub/quiet HTTP/1.1\r\nHost: x\r\n\r\n")
        busy.sendall(b"GET /sub/busy HTTP/1.1\r\nHost: x\r\n\r\n")
        rq, rb = Reader(quiet), Reader(busy)
        assert rq.read_head()[0] == 200 and rb.read_head()[0] == 200
        started = time.monotonic()
        time.sleep(0.5)
        quiet.settimeout(0.1)
        with pytest.raises(socket.timeout):  # not ended before its deadline
            while True:
                assert quiet.recv(4096) != b"", "ended too early"
        quiet.settimeout(6)
        while time.monotonic() - started < 3.5:  # events keep /sub/busy alive
            hello.channels.publish("busy", "tick")
            time.sleep(0.25)
        while not rq.data.endswith(b"0\r\n\r\n"):  # the quiet one ended with its last chunk
            assert rq._fill(), rq.data[-60:]
        assert rq.closed()
        assert time.monotonic() - started < 5
        busy.settimeout(0.5)
        rb._fill()
        assert b"tick" in rb.data and not rb.data.endswith(b"0\r\n\r\n")
