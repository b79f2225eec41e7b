"""Shared fixtures: a server on an ephemeral port, and a raw-socket HTTP client."""

from __future__ import annotations

import importlib.util
import pathlib
import socket
import time

import pytest

import clos_web
from clos_web import App, HTTPError, Limits, ParamError, Server, raise_fd_limit

ROOT = pathlib.Path(__file__).resolve().parent.parent

raise_fd_limit()


def load_example(name: str):
    """Import ``examples/<name>.py`` as a module (examples are scripts, not a package)."""
    path = ROOT / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def serve():
    """``serve(app, **limits) -> Server`` started in the background; all stopped at teardown."""
    servers = []

    def start(app, debug=False, **limits):
        server = clos_web.start(app, 0, limits=Limits(**limits), debug=debug)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(2)


@pytest.fixture
def hello(serve):
    """The contract app ``examples/hello.py`` on an ephemeral port."""
    return serve(load_example("hello").app)


def connect(server_or_port, timeout: float = 5.0) -> socket.socket:
    port = server_or_port if isinstance(server_or_port, int) else server_or_port.port
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.settimeout(timeout)
    return sock


class Reader:
    """Reads HTTP/1.1 responses off a socket, keeping leftovers between responses."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.data = b""

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        if not chunk:
            return False
        self.data += chunk
        return True

    def read_head(self):
        while b"\r\n\r\n" not in self.data:
            if not self._fill():
                raise EOFError(f"closed before a full head; got {self.data!r}")
        head, _, self.data = self.data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        version, status, *reason = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(status), headers

    def read_exact(self, n: int) -> bytes:
        while len(self.data) < n:
            if not self._fill():
                raise EOFError("closed mid-body")
        out, self.data = self.data[:n], self.data[n:]
        return out

    def read_response(self, head_only: bool = False):
        """``(status, headers, body)`` of the next response (1xx interim responses included)."""
        status, headers = self.read_head()
        if head_only or status < 200 or status in (204, 304):
            return status, headers, b""
        if "content-length" in headers:
            return status, headers, self.read_exact(int(headers["content-length"]))
        body = self.data
        while self._fill():
            pass
        body, self.data = self.data, b""
        return status, headers, body

    def closed(self, timeout: float = 5.0) -> bool:
        """True if the peer closes (EOF or reset) within ``timeout`` with nothing more sent."""
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
        if chunk:
            self.data += chunk
            return False
        return True


def request(server, data: bytes, head_only: bool = False, timeout: float = 5.0):
    """Send raw ``data`` on a new connection and read one response."""
    with connect(server, timeout) as sock:
        sock.sendall(data)
        return Reader(sock).read_response(head_only)


def stalled_stream(server, target: str, rcvbuf: int = 4096) -> socket.socket:
    """Open a stream on ``target`` (``GET``) with a small receive buffer, and never read it:
    a slow consumer."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(f"GET {target} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    return sock


def bound_outcome(invoke, request, values=()):
    """What a route's ``invoke`` (its compiled binding, or ``invoke.general``) makes of
    ``request`` with path ``values``: ``("ok", result)``, ``("param", param, why)`` or
    ``("http", status, reason)``; for tests comparing a fast plan with the general binding."""
    try:
        return ("ok", invoke(request, None, values))
    except ParamError as err:
        return ("param", err.param, err.why)
    except HTTPError as err:
        return ("http", err.status, err.reason)


def wait_for(predicate, timeout: float = 5.0, interval: float = 0.01):
    """Poll ``predicate`` until true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")
