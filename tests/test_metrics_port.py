"""A port of its own per worker (``--metrics-port P``), and the loop's extra listeners under it.

``python -m clos_web MODULE:APP --workers N --metrics-port P``: worker k (its slot, 1..N) also
listens on ``P + k - 1``, in the same loop, serving the same app, so ``/metrics`` (and the
dashboard) there are that worker's; Prometheus scrapes every worker by its own port. One
process (no ``--workers``) listens on P as well. Underneath, ``server.listen(host, port)``
adds a listener to a running :class:`~clos_web.Server`: it serves, obeys the connection cap
with the others, takes the last connections of its queue at stop, and closes at stop.

Real processes and sockets; every process started is killed at teardown; every wait has a
bound.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from clos_web import App, Server
from conftest import Reader, connect, request, wait_for
from test_cli import (  # noqa: F401  (spawn: the fixture)
    GET_PID, PY, REDIS, alive, children, free_port, run_cli, serving, spawn, stderr_lines,
)

GET_METRICS = b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"

METRICS_APP = '''
import os
from clos_web import App

app = App()
app.mount_metrics("/metrics")
app.mount_dashboard("/_clos")

@app.get("/pid")
def pid():
    return str(os.getpid())
'''


def free_ports(n: int) -> int:
    """A port P such that P .. P+n-1 are all free now (and not the ephemeral range's first)."""
    for _ in range(200):
        base = free_port()
        if base + n > 65535:
            continue
        socks = []
        try:
            for port in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError(f"no {n} consecutive free ports")


def worker_labels(port: int) -> set:
    """The ``worker`` label values over every sample of ``GET /metrics`` on ``port``."""
    status, headers, body = request(port, GET_METRICS, timeout=5)
    assert status == 200, (status, body[:200])
    labels = set()
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            labels.add(sample.labels.get("worker"))
    return labels


def pid_and_worker(port: int) -> tuple[int, set]:
    """``GET /pid`` then ``GET /metrics`` on one keep-alive connection to ``port``."""
    with connect(port, 5) as sock:
        reader = Reader(sock)
        sock.sendall(GET_PID.replace(b"Connection: close\r\n", b""))
        status, _, body = reader.read_response()
        assert status == 200, (status, body)
        pid = int(body)
        sock.sendall(GET_METRICS)
        status, _, body = reader.read_response()
        assert status == 200, (status, body[:200])
    labels = {s.labels.get("worker") for f in text_string_to_metric_families(body.decode())
              for s in f.samples}
    return pid, labels


def refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def start_supervisor(spawn, tmp_path, port: int, metrics_port: int, *extra):  # noqa: F811
    (tmp_path / "metricsapp.py").write_text(METRICS_APP)
    proc = spawn([PY, "-m", "clos_web", "metricsapp:app", "--port", str(port), "--workers", "2",
                  "--metrics-port", str(metrics_port), *extra], cwd=tmp_path,
                 CLOS_WEB_REDIS=REDIS)
    wait_for(lambda: proc.poll() is not None or len(children(proc.pid)) == 2, timeout=15)
    assert proc.poll() is None, proc.err_path.read_text()
    for p in (port, metrics_port, metrics_port + 1):
        wait_for(serving(p, GET_PID), timeout=15, interval=0.05)
    proc.seen_children |= children(proc.pid)
    return proc


# --------------------------------------------------------------------------------------------
# The supervisor: a port per worker


def test_each_worker_has_its_own_port_and_sigterm_stops_all(spawn, tmp_path):  # noqa: F811
    port, mp = free_port(), free_ports(2)
    proc = start_supervisor(spawn, tmp_path, port, mp)
    workers = children(proc.pid)
    first = {}
    for _ in range(5):  # always the same worker: the port is that worker's alone
        for slot, p in ((1, mp), (2, mp + 1)):
            pid, labels = pid_and_worker(p)
            assert labels == {str(slot)}, (p, labels)
            assert first.setdefault(slot, pid) == pid
            assert worker_labels(p) == {str(slot)}
    assert set(first.values()) == workers                 # two ports, the two workers
    status, headers, body = request(mp + 1, b"GET /_clos/ HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200 and headers["content-type"].startswith("text/html")
    seen = {int(request(port, GET_PID)[2]) for _ in range(60)}
    assert seen and seen <= workers                        # the shared port still serves
    out = proc.out_path.read_text()
    assert f"{mp}-{mp + 1}" in out, out

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    wait_for(lambda: not any(alive(pid) for pid in workers), timeout=10)
    for p in (port, mp, mp + 1):
        assert refused(p), p


def test_a_rolling_restart_keeps_each_port_on_its_slot(spawn, tmp_path):  # noqa: F811
    """SIGHUP: the new worker of slot k binds P+k-1 beside the old one (SO_REUSEPORT), so the
    port is never refused; every scrape on it, old worker or new, is slot k's."""
    port, mp = free_port(), free_ports(2)
    proc = start_supervisor(spawn, tmp_path, port, mp)
    before = children(proc.pid)
    answers: dict[int, list] = {mp: [], mp + 1: []}
    failures: list = []
    stop = threading.Event()

    def scrape():
        while not stop.is_set():
            for p in answers:
                try:
                    answers[p].append(pid_and_worker(p))
                except ConnectionRefusedError as e:
                    failures.append(("refused", p, e))
                except (OSError, EOFError) as e:   # see below
                    failures.append(("reset", p, e))
            time.sleep(0.01)

    thread = threading.Thread(target=scrape, daemon=True)
    thread.start()
    try:
        wait_for(lambda: all(len(a) >= 3 for a in answers.values()), timeout=10)
        os.kill(proc.pid, signal.SIGHUP)
        seen = {}

        def replaced():
            now = seen["now"] = children(proc.pid)
            return len(now) == 2 and not now & before

        wait_for(replaced, timeout=60, interval=0.05)
        after = seen["now"]
        proc.seen_children |= after
        wait_for(lambda: all(a[-1][0] in after for a in answers.values()), timeout=10)
    finally:
        stop.set()
        thread.join(10)
    assert proc.poll() is None
    for slot, p in ((1, mp), (2, mp + 1)):
        pids = [pid for pid, _ in answers[p]]
        assert all(labels == {str(slot)} for _, labels in answers[p]), answers[p]
        assert pids[0] in before and pids[-1] in after, pids
    assert answers[mp][-1][0] != answers[mp + 1][-1][0]
    # never refused; a reset is possible only in the kernel's race (a connection queued on the
    # old worker's listener between its last accept and its close, as on the shared port)
    assert not [f for f in failures if f[0] == "refused"], failures
    assert len(failures) <= 3, failures
    log = proc.err_path.read_text()
    assert "rolling restart" in log and "abandoned" not in log and "killing" not in log, log
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0


def test_one_process_listens_on_the_metrics_port_too(spawn, tmp_path):  # noqa: F811
    (tmp_path / "metricsapp.py").write_text(METRICS_APP)
    port, mp = free_port(), free_port()
    proc = spawn([PY, "-m", "clos_web", "metricsapp:app", "--port", str(port),
                  "--metrics-port", str(mp)], cwd=tmp_path)
    wait_for(serving(mp, GET_PID), timeout=15, interval=0.05)
    assert int(request(mp, GET_PID)[2]) == int(request(port, GET_PID)[2]) == proc.pid
    assert worker_labels(mp) == {None}                    # no worker: no worker label
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    assert refused(port) and refused(mp)


# --------------------------------------------------------------------------------------------
# A port that cannot be had


def test_a_metrics_port_in_use_is_one_line_and_exit_1():
    with socket.socket() as holder:
        held = free_ports(2) + 1  # the port below it free too: worker 1's in the second run
        holder.bind(("127.0.0.1", held))
        holder.listen()
        one = run_cli("examples.hello:app", "--port", str(free_port()), "--metrics-port",
                      str(held))
        assert one.returncode == 1, one.stderr
        lines = stderr_lines(one)
        assert len(lines) == 1 and "Traceback" not in lines[0], lines
        assert f"127.0.0.1:{held}" in lines[0] and "in use" in lines[0]
        # two workers: the second one's port (held - 1 + 2 - 1) is the one in use
        many = run_cli("examples.hello:app", "--port", str(free_port()), "--workers", "2",
                       "--metrics-port", str(held - 1), CLOS_WEB_REDIS=REDIS)
        assert many.returncode == 1, many.stderr
        lines = [line for line in stderr_lines(many) if "in use" in line]
        assert len(lines) == 1 and f"127.0.0.1:{held}" in lines[0], many.stderr


def test_a_worker_that_cannot_bind_its_port_exits_cannot_listen(capsys):
    """The supervisor probes the ports first; a port taken between the probe and the worker's
    bind makes that worker exit EXIT_CANNOT_LISTEN (the supervisor then stops: exit 1), having
    closed the shared port it did bind."""
    from clos_web import cli

    shared = free_port()
    alive_r, alive_w = os.pipe()
    ready_r, ready_w = os.pipe()
    try:
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            held = holder.getsockname()[1]
            code = cli._serve_worker(App(), "127.0.0.1", shared, alive_r, 1.0, ready_w,
                                     own_port=held)
        assert code == cli.EXIT_CANNOT_LISTEN
        assert f"cannot listen on 127.0.0.1:{held}: address in use" in capsys.readouterr().err
        with socket.socket() as again:    # the shared port was closed, not leaked
            again.bind(("127.0.0.1", shared))
    finally:
        for fd in (alive_r, alive_w, ready_r, ready_w):
            try:
                os.close(fd)
            except OSError:
                pass


@pytest.mark.parametrize("args, words", [
    (["--port", "9000", "--metrics-port", "9000"], ["--metrics-port", "9000"]),
    (["--port", "9001", "--workers", "2", "--metrics-port", "9000"], ["9000-9001", "9001"]),
    (["--port", "9000", "--metrics-port", "65535", "--workers", "2"], ["65535"]),
    (["--port", "9000", "--metrics-port", "0"], ["--metrics-port"]),
])
def test_a_metrics_port_range_that_cannot_work_is_refused(args, words):
    result = run_cli("examples.hello:app", *args, CLOS_WEB_REDIS=REDIS)
    assert result.returncode == 2, result.stderr
    lines = stderr_lines(result)
    assert "Traceback" not in result.stderr.decode()
    for word in words:
        assert word in lines[-1], lines


# --------------------------------------------------------------------------------------------
# The loop: server.listen


def hi_app() -> App:
    app = App()
    app.get("/")(lambda: "hi")
    return app


GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def test_a_second_listener_serves_and_is_closed_at_stop(serve):
    server = serve(hi_app())
    listener = server.listen("127.0.0.1", 0)               # from this thread, loop running
    extra = listener.address[1]
    assert extra != server.port and server.listener.address[1] == server.port
    wait_for(lambda: len(server.listeners) == 2)          # it joins on the loop's next turn
    assert f"127.0.0.1:{extra}" in repr(server) and f"127.0.0.1:{extra}" in repr(listener)
    for p in (server.port, extra, extra, server.port):
        status, _, body = request(p, GET)
        assert (status, body) == (200, b"hi")
    held = connect(extra)                                 # keep-alive, across the listeners
    held.sendall(GET)
    assert Reader(held).read_response()[2] == b"hi"
    server.stop(2)
    assert held.recv(10) == b""                           # closed by the stop
    held.close()
    assert listener.sock.fileno() == -1 and server.listener.sock.fileno() == -1
    assert refused(server.port) and refused(extra)


def test_listen_before_serving_and_teardown_of_a_server_never_run():
    server = Server(hi_app(), port=0)
    server.listen("127.0.0.1", 0)
    assert len(server.listeners) == 2 and server.selector is not None   # listen bound it
    extra = server.listeners[1].address[1]
    server.start()
    try:
        assert request(extra, GET)[2] == b"hi"
    finally:
        server.stop(2)
    assert refused(extra)
    unrun = Server(hi_app(), port=0)
    unrun.listen("127.0.0.1", 0)
    socks = [lst.sock for lst in unrun.listeners]
    unrun.stop()                                          # bound, never run: torn down
    assert all(s.fileno() == -1 for s in socks)


def test_the_connection_cap_pauses_and_resumes_both_listeners(serve):
    server = serve(hi_app(), max_connections=4)
    extra = server.listen("127.0.0.1", 0).address[1]
    held = [connect(p) for p in (server.port, server.port, extra, extra)]
    for s in held:
        s.sendall(GET)
        assert Reader(s).read_response()[2] == b"hi"
    wait_for(lambda: len(server.conns) == 4)
    waiting = {}
    for p in (server.port, extra):                        # each sits in its listener's backlog
        s = waiting[p] = connect(p)
        s.sendall(GET)
        s.settimeout(0.5)
        with pytest.raises(socket.timeout):
            s.recv(100)
    assert not server.accepting
    cpu = time.process_time()
    time.sleep(0.5)
    assert time.process_time() - cpu < 0.4                # not spinning while at the cap
    held.pop().close()                                    # one slot: one of them gets in
    held.pop().close()                                    # another: the other one too
    for s in waiting.values():
        s.settimeout(5)
        assert Reader(s).read_response()[2] == b"hi"
    for s in held + list(waiting.values()):
        s.close()
    wait_for(lambda: not server.conns and server.accepting)
    assert request(extra, GET)[2] == b"hi" and request(server.port, GET)[2] == b"hi"


def test_stop_takes_in_what_waits_in_every_listeners_queue(serve):
    """Closing a listening socket resets the connections still in its queue: the stop's last
    accept goes over every listener."""
    server = serve(hi_app())
    extra = server.listen("127.0.0.1", 0).address[1]
    blocked, release = threading.Event(), threading.Event()

    def block_then_stop():  # hold the loop while connections queue up, then stop at once
        blocked.set()
        release.wait(10)
        server._begin_stop(5.0)

    server.call_soon_threadsafe(block_then_stop)
    assert blocked.wait(5)
    waiting = [connect(p) for p in (server.port, extra, extra, server.port)]
    for s in waiting:
        s.sendall(GET)
    release.set()
    for s in waiting:
        with s:
            reader = Reader(s)
            assert reader.read_response()[:3:2] == (200, b"hi")
    assert server.stopped.wait(10)
    assert refused(extra)


def test_listen_on_a_port_in_use_raises_and_the_server_goes_on(serve):
    server = serve(hi_app())
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        with pytest.raises(OSError):
            server.listen("127.0.0.1", holder.getsockname()[1])
    assert len(server.listeners) == 1
    assert request(server, GET)[2] == b"hi"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
