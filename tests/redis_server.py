"""Real ``redis-server`` processes for tests: one server, or a small local Redis Cluster.

    from redis_server import RedisServer, cluster

    with RedisServer() as redis:               # a fresh, empty server on a free port
        redis.url                              # 'redis://127.0.0.1:PORT/0'
        redis.command("SET", "k", "v")         # a blocking raw client, for checking
        redis.pause(2)                         # SIGSTOP now, SIGCONT in 2 s (resume() sooner)
        redis.kill(); redis.restart()          # SIGKILL; start again on the same port, empty

    with cluster(3) as nodes:                  # 3 masters, slots spread, 'cluster_state:ok'
        nodes[0].command("CLUSTER", "INFO")

    from redis_server import redis_server      # or the fixture: a fresh server per test
    def test_something(redis_server): ...

Nothing is saved (``--save '' --appendonly no``), each server works in its own temporary
directory, and every process started here is stopped when its ``with`` ends, by ``stop()``,
and at exit whatever happens. Without ``redis-server`` on the PATH, starting one calls
``pytest.skip``. Every wait here is bounded.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse

import pytest

_LIVE: set = set()  # the servers whose processes are running (stopped at exit)


def _stop_all() -> None:
    for server in list(_LIVE):
        server.kill()
        if server.dir is not None:
            shutil.rmtree(server.dir, ignore_errors=True)


atexit.register(_stop_all)


def _free_port(bus: bool = False) -> int:
    """A port free now on 127.0.0.1 (with ``bus``: port + 10000 too, for cluster nodes)."""
    for _ in range(200):
        if bus:
            port = random.randint(20000, 30000)
        else:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        ports = (port, port + 10000) if bus else (port,)
        try:
            for p in ports:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port found")


def _encode(*args) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        data = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Replies:
    """A tiny blocking RESP2 reader over a socket (independent of the code under test)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.data = b""

    def _line(self) -> bytes:
        while b"\r\n" not in self.data:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.data += chunk
        line, _, self.data = self.data.partition(b"\r\n")
        return line

    def read(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            return RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.data) < n + 2:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("redis closed the connection")
                self.data += chunk
            value, self.data = self.data[:n], self.data[n + 2:]
            return value
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise ValueError(f"not RESP: {line!r}")


class RedisServer:
    """One ``redis-server`` on 127.0.0.1, on a free port (or ``port``), started by
    ``start()`` or ``with``. ``args`` are more server options (``["--requirepass", "pw"]``);
    ``password`` is then given for ``url`` and :meth:`command`."""

    def __init__(self, *args: str, port: int | None = None, password: str | None = None,
                 db: int = 0, start_timeout: float = 10.0):
        self.args = list(args)
        if password is not None and "--requirepass" not in self.args:
            self.args += ["--requirepass", password]
        self.password = password
        self.db = db
        self.port = port
        self.start_timeout = start_timeout
        self.dir = None
        self.proc = None
        self._paused = None

    def __repr__(self) -> str:
        state = "running" if self.proc is not None else "stopped"
        return f"<RedisServer 127.0.0.1:{self.port} {state}>"

    @property
    def url(self) -> str:
        auth = f":{urllib.parse.quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/{self.db}"

    # -- processes -----------------------------------------------------------------------------

    def start(self) -> "RedisServer":
        """Start the server (``pytest.skip`` without redis-server) and wait until it answers
        PING."""
        if self.proc is not None:
            return self
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip("redis-server is not installed")
        if self.dir is None:
            self.dir = tempfile.mkdtemp(prefix="clos_web-redis-")
        fixed = self.port is not None
        for attempt in range(5):
            if not fixed:
                self.port = _free_port("--cluster-enabled" in self.args)
            self._spawn(exe)
            try:
                self._wait_ready()
                return self
            except _PortTaken:
                if fixed and attempt < 4:
                    time.sleep(0.2)  # the old process' socket may linger a moment
                    continue
                if fixed:
                    raise
        raise RuntimeError(f"could not start redis-server: {self._log()}")

    def _spawn(self, exe: str) -> None:
        log = open(os.path.join(self.dir, "redis.log"), "wb")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--daemonize", "no", *self.args],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        _LIVE.add(self)

    def _log(self) -> str:
        try:
            with open(os.path.join(self.dir, "redis.log"), "rb") as f:
                return f.read()[-2000:].decode("utf-8", "replace")
        except OSError:
            return ""

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = self._log()
                self.proc = None
                _LIVE.discard(self)
                if "Address already in use" in log:
                    raise _PortTaken(log)
                raise RuntimeError(f"redis-server exited: {log}")
            try:
                if self.command("PING", timeout=1.0) == b"PONG":
                    return
            except (OSError, ConnectionError):
                pass
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"redis-server did not answer PING within {self.start_timeout} s")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``); nothing is saved."""
        if self.proc is None:
            return
        self.resume()
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)
        self.proc = None
        _LIVE.discard(self)

    def kill(self) -> None:
        """SIGKILL the server and reap it: connections break at once, nothing is saved."""
        if self.proc is None:
            return
        try:
            self.proc.kill()
            self.proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self._cancel_resume()
        self.proc = None
        _LIVE.discard(self)

    def restart(self) -> "RedisServer":
        """Start again on the same port (empty, as nothing was saved); kill it first if it
        runs."""
        self.kill()
        return self.start()

    def pause(self, seconds: float) -> None:
        """Freeze the server now (SIGSTOP) for ``seconds`` (then SIGCONT; :meth:`resume`
        sooner). Returns at once. Its socket still accepts connections (the kernel does) but
        nothing is answered: a slow Redis."""
        self._cancel_resume()
        os.kill(self.proc.pid, signal.SIGSTOP)
        self._paused = threading.Timer(seconds, self.resume)
        self._paused.daemon = True
        self._paused.start()

    def _cancel_resume(self) -> None:
        if self._paused is not None:
            self._paused.cancel()
            self._paused = None

    def resume(self) -> None:
        """End a :meth:`pause` now."""
        self._cancel_resume()
        if self.proc is not None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    # -- a raw client, for checking ---------------------------------------------------------

    def command(self, *args, timeout: float = 5.0, db: int | None = None):
        """Send one command on a new blocking connection (AUTH and SELECT first as needed);
        return its reply (an error reply as a ``RuntimeError`` instance)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            replies = _Replies(sock)
            prelude = []
            if self.password:
                prelude.append(("AUTH", self.password))
            if db:
                prelude.append(("SELECT", db))
            sock.sendall(b"".join(_encode(*c) for c in prelude) + _encode(*args))
            for _ in prelude:
                reply = replies.read()
                if isinstance(reply, Exception):
                    raise reply
            return replies.read()


class _PortTaken(RuntimeError):
    pass


@contextlib.contextmanager
def cluster(n: int = 3, timeout: float = 30.0):
    """``n`` cluster-enabled servers joined by ``redis-cli --cluster create`` (no replicas):
    yields the list of :class:`RedisServer` once every node reports ``cluster_state:ok``.
    All are stopped when the ``with`` ends."""
    cli = shutil.which("redis-cli")
    if cli is None or shutil.which("redis-server") is None:
        pytest.skip("redis-server / redis-cli are not installed")
    nodes = []
    try:
        for _ in range(n):
            node = RedisServer("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                               "--cluster-node-timeout", "2000")
            nodes.append(node)
            node.start()
        addrs = [f"127.0.0.1:{node.port}" for node in nodes]
        subprocess.run([cli, "--cluster", "create", *addrs, "--cluster-replicas", "0",
                        "--cluster-yes"], check=True, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
        deadline = time.monotonic() + timeout
        while True:
            infos = [node.command("CLUSTER", "INFO") for node in nodes]
            if all(isinstance(i, bytes) and b"cluster_state:ok" in i for i in infos):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster did not come up within {timeout} s: {infos}")
            time.sleep(0.05)
        yield nodes
    finally:
        for node in nodes:
            node.__exit__(None, None, None)


@pytest.fixture
def redis_server():
    """A fresh :class:`RedisServer` for one test (import this name into a test module)."""
    with RedisServer() as server:
        yield server
