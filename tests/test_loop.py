"""The event loop over real sockets: deadlines, many connections, the connection cap,
descriptor exhaustion, threads handing work to the loop, stopping, a real client (curl)."""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

import clos_web
from clos_web import App, Limits, Response

from conftest import ROOT, Reader, connect, load_example, request, wait_for

GET_PLAIN = b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n"


def test_slowloris_gets_408_and_is_closed_while_others_are_served(serve):
    server = serve(load_example("hello").app, header_timeout=1.0)
    slow = connect(server)
    slow.sendall(b"GET /plaintext HTTP/1.1\r\nHost: t\r\n")  # never finishes its head
    started = time.monotonic()
    # meanwhile another client is served at once, many times over
    with connect(server) as fast:
        reader = Reader(fast)
        for _ in range(20):
            t = time.monotonic()
            fast.sendall(GET_PLAIN)
            assert reader.read_response()[0] == 200
            assert time.monotonic() - t < 0.5
    slow_reader = Reader(slow)
    status, headers, _ = slow_reader.read_response()
    elapsed = time.monotonic() - started
    assert status == 408 and headers["connection"] == "close"
    assert 0.9 <= elapsed < 3.5
    assert slow_reader.closed()
    slow.close()


def test_slow_body_gets_408(serve):
    app = App()
    app.post("/up")(lambda: "ok")
    server = serve(app, body_timeout=1.0)
    with connect(server) as sock:
        sock.sendall(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        assert Reader(sock).read_response()[0] == 408


def test_a_silent_connection_is_closed_after_the_header_deadline(serve):
    server = serve(App(), header_timeout=1.0)
    with connect(server) as sock:
        assert Reader(sock).closed(timeout=4)


def test_idle_keep_alive_connections_are_closed_after_the_idle_timeout(serve):
    server = serve(load_example("hello").app, keepalive_timeout=1.0)
    with connect(server) as sock:
        sock.sendall(GET_PLAIN)
        reader = Reader(sock)
        assert reader.read_response()[0] == 200
        started = time.monotonic()
        assert reader.closed(timeout=4)
        assert 0.9 <= time.monotonic() - started < 3.5
    wait_for(lambda: not server.conns)


def test_a_kept_alive_connection_that_is_used_is_not_closed(serve):
    server = serve(load_example("hello").app, keepalive_timeout=1.0)
    with connect(server) as sock:
        reader = Reader(sock)
        for _ in range(6):
            sock.sendall(GET_PLAIN)
            assert reader.read_response()[0] == 200
            time.sleep(0.4)


def _open_many(port: int, n: int, hosts=("127.0.0.1",)):
    socks = []
    for i in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex((hosts[i % len(hosts)], port))
        socks.append(s)
    return socks


def test_5000_concurrent_connections_are_all_served(hello):
    n = 5000
    sel = selectors.DefaultSelector()
    socks = _open_many(hello.port, n)
    for s in socks:
        sel.register(s, selectors.EVENT_WRITE)
    pending_send = set(socks)
    got = {s: b"" for s in socks}
    done = 0
    deadline = time.monotonic() + 60
    peak = 0
    while done < n and time.monotonic() < deadline:
        for key, mask in sel.select(1):
            s = key.fileobj
            if mask & selectors.EVENT_WRITE and s in pending_send:
                s.send(GET_PLAIN)
                pending_send.discard(s)
                sel.modify(s, selectors.EVENT_READ)
            elif mask & selectors.EVENT_READ:
                got[s] += s.recv(4096)
                if got[s].endswith(b"Hello, World!"):
                    done += 1
                    sel.unregister(s)
        peak = max(peak, len(hello.conns))
    assert done == n
    assert all(v.startswith(b"HTTP/1.1 200 OK") for v in got.values())
    assert len(hello.conns) == n  # all still open (keep-alive): 5,000 held at once
    for s in socks:
        s.close()
    wait_for(lambda: not hello.conns, timeout=10)


def test_at_the_connection_cap_the_server_stops_accepting_then_recovers(serve):
    server = serve(load_example("hello").app, max_connections=20)
    held = [connect(server) for _ in range(20)]
    for s in held:
        s.sendall(GET_PLAIN)
        assert Reader(s).read_response()[0] == 200
    wait_for(lambda: len(server.conns) == 20)
    extra = connect(server)  # sits in the backlog
    extra.sendall(GET_PLAIN)
    extra.settimeout(0.5)
    with pytest.raises(socket.timeout):
        extra.recv(100)
    cpu = time.process_time()
    time.sleep(1.0)
    assert time.process_time() - cpu < 0.5  # not spinning while at the cap
    held.pop().close()
    extra.settimeout(5)
    assert Reader(extra).read_response()[0] == 200
    for s in held + [extra]:
        s.close()


def _proc_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


SERVER_WITH_FEW_FDS = """
import resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (40, 40))
sys.path.insert(0, {root!r})
import clos_web
from clos_web import App, Limits, Response
app = App()
app.get("/plaintext")(lambda: Response(b"Hello, World!", content_type="text/plain"))
server = clos_web.Server(app, port=0, limits=Limits(max_connections=10_000)).bind()
print(server.port, flush=True)
server.serve_forever()
"""


def test_descriptor_exhaustion_pauses_accepting_without_spinning_and_recovers():
    proc = subprocess.Popen([sys.executable, "-c", SERVER_WITH_FEW_FDS.format(root=str(ROOT))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        held = []
        for _ in range(60):  # more than the 40 descriptors the server may hold
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            held.append(s)
        time.sleep(0.5)
        cpu = _proc_cpu_seconds(proc.pid)
        time.sleep(1.5)
        assert _proc_cpu_seconds(proc.pid) - cpu < 0.5  # EMFILE: paused, not spinning
        for s in held:
            s.close()
        # descriptors free up: the server recovers by itself
        deadline = time.monotonic() + 10
        while True:
            try:
                status = request(port, GET_PLAIN, timeout=2)[0]
                break
            except (OSError, EOFError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert status == 200
        assert proc.poll() is None
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=5)
    assert "EMFILE" in err or "Too many open files" in err


def test_call_soon_threadsafe_runs_on_the_loop_thread(hello):
    seen = []
    done = threading.Event()

    def job(x):
        seen.append((x, threading.current_thread() is hello.thread))
        done.set()

    threading.Thread(target=hello.call_soon_threadsafe, args=(job, 42)).start()
    assert done.wait(5)
    assert seen == [(42, True)]


def test_several_servers_run_in_one_process_and_stop_independently(serve):
    a = App()
    a.get("/")(lambda: "a")
    b = App()
    b.get("/")(lambda: "b")
    sa, sb = serve(a), serve(b)
    assert request(sa, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")[2] == b"a"
    assert request(sb, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")[2] == b"b"
    sa.stop(2)
    assert sa.stopped.is_set()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", sa.port), timeout=1)
    assert request(sb, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")[2] == b"b"


def test_stop_closes_idle_connections_and_returns(serve):
    server = serve(load_example("hello").app)
    socks = [connect(server) for _ in range(5)]
    for s in socks:
        s.sendall(GET_PLAIN)
        assert Reader(s).read_response()[0] == 200
    t = time.monotonic()
    server.stop(2)
    assert time.monotonic() - t < 2
    for s in socks:
        assert Reader(s).closed(2)
        s.close()
    assert not server.thread.is_alive()


def test_handlers_redefined_at_the_repl_take_effect_at_once(serve):
    app = App()
    app.get("/v")(lambda: "one")
    server = serve(app)
    with connect(server) as sock:
        reader = Reader(sock)
        sock.sendall(b"GET /v HTTP/1.1\r\nHost: t\r\n\r\n")
        assert reader.read_response()[2] == b"one"
        app.get("/v")(lambda: "two")
        sock.sendall(b"GET /v HTTP/1.1\r\nHost: t\r\n\r\n")
        assert reader.read_response()[2] == b"two"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_as_a_real_client(hello):
    url = hello.url
    out = subprocess.run(["curl", "-sS", "--max-time", "10", f"{url}/plaintext", f"{url}/json"],
                         capture_output=True, check=True)
    assert out.stdout == b'Hello, World!{"message":"Hello, World!"}'
    head = subprocess.run(["curl", "-sS", "-I", "--max-time", "10", f"{url}/plaintext"],
                          capture_output=True, check=True).stdout
    assert b"HTTP/1.1 200 OK" in head and b"Content-Length: 13" in head
    payload = os.urandom(200_000)
    for extra in ([], ["-H", "Transfer-Encoding: chunked"], ["-H", "Expect: 100-continue"]):
        posted = subprocess.run(
            ["curl", "-sS", "--max-time", "10", "-H", "Content-Type: application/x-bin",
             *extra, "--data-binary", "@-", f"{url}/echo"],
            input=payload, capture_output=True, check=True)
        assert posted.stdout == payload
    http10 = subprocess.run(["curl", "-sS", "--http1.0", "--max-time", "10", f"{url}/plaintext"],
                            capture_output=True, check=True)
    assert http10.stdout == b"Hello, World!"


def test_examples_hello_runs_as_a_script_and_stops_on_ctrl_c():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, str(ROOT / "examples" / "hello.py"), "--port",
                             str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                status, _, body = request(port, GET_PLAIN, timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert (status, body) == (200, b"Hello, World!")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        proc.communicate()


class _ThreadedApp:
    """An app whose handler runs on a thread and answers through ``server.complete``."""

    def __init__(self):
        self.server = None

    def handle(self, request, conn):
        if request.path == "/fast":
            return "fast"

        def work():
            time.sleep(0.3)
            self.server.call_soon_threadsafe(self.server.complete, conn, request,
                                             f"slow {request.query}")

        threading.Thread(target=work).start()
        return clos_web.DEFERRED


def test_deferred_answers_keep_pipelined_order_and_do_not_block_others(serve):
    app = _ThreadedApp()
    server = app.server = serve(app)
    with connect(server) as sock, connect(server) as other:
        sock.sendall(b"GET /slow?1 HTTP/1.1\r\nHost: t\r\n\r\n"
                     b"GET /fast HTTP/1.1\r\nHost: t\r\n\r\n"
                     b"GET /slow?2 HTTP/1.1\r\nHost: t\r\n\r\n")
        t = time.monotonic()
        other.sendall(b"GET /fast HTTP/1.1\r\nHost: t\r\n\r\n")
        assert Reader(other).read_response()[2] == b"fast"
        assert time.monotonic() - t < 0.25
        reader = Reader(sock)
        assert [reader.read_response()[2] for _ in range(3)] == [b"slow 1", b"fast", b"slow 2"]


def test_stop_lets_an_in_flight_request_finish(serve):
    app = _ThreadedApp()
    server = app.server = serve(app)
    with connect(server) as sock:
        sock.sendall(b"GET /slow?x HTTP/1.1\r\nHost: t\r\n\r\n")
        time.sleep(0.05)
        threading.Thread(target=server.stop, args=(5,)).start()
        reader = Reader(sock)
        status, headers, body = reader.read_response()
        assert (status, body) == (200, b"slow x") and headers["connection"] == "close"
        assert reader.closed()


def test_deadlines_for_100_000_connections_cost_one_bucket_append_each():
    """Timers are coarse buckets: setting a deadline is O(1), a sweep touches only due ones."""
    from clos_web.loop.server import Connection

    server = clos_web.Server(App())
    server._swept = 1000
    conns = []
    for i in range(100_000):
        conn = Connection(None, server)
        server.set_deadline(conn, 1000.5 + (i % 60))  # spread over 60 s
        conns.append(conn)
    assert sum(len(b) for b in server._buckets.values()) == 100_000
    # a later deadline (the usual case: a request finished) adds nothing
    for conn in conns[:1000]:
        server.set_deadline(conn, 2000.0)
    assert sum(len(b) for b in server._buckets.values()) == 100_000
    expired = []
    server._expire = expired.append
    server._sweep(1001.6)  # one second later: only bucket 1001 is due
    assert len(expired) == 100_000 // 60 + 1 - 17  # the 17 of them moved to 2000 are skipped
    assert len(server._buckets) == 59 + 1


def test_the_gc_policy_freezes_survivors_and_still_collects_cycles():
    """Young collections plus gc.freeze each second; a full collection every gc_full_every s:
    reference cycles that became garbage after being frozen are collected then."""
    import gc
    import weakref

    server = clos_web.Server(App(), gc_full_every=2.0).start()
    try:
        class Node:
            pass

        a, b = Node(), Node()
        a.other, b.other = b, a  # a reference cycle
        probe = weakref.ref(a)
        wait_for(lambda: gc.get_freeze_count() > 0, timeout=3)
        time.sleep(1.2)  # a sweep has frozen the cycle
        del a, b
        assert probe() is not None  # frozen: not collected by young collections
        wait_for(lambda: probe() is None, timeout=6)  # the periodic full collection got it
    finally:
        server.stop(2)
