"""Test an app in-process: no sockets, no threads, the same code path as a server.

:class:`TestClient` sends each request through what a running :class:`~clos_web.Server` uses:
a :class:`~clos_web.loop.Connection` whose protocol is an
:class:`~clos_web.http.HTTPConnection`, the generic functions ``parse``, ``handle_request``,
``write`` and ``error_response``, the transport's output queue. Only the socket is a stand-in
that keeps what is sent, and the clock is the client's own (:meth:`TestClient.advance` moves it
and runs what falls due: deadlines, ``call_later`` timers, the once-a-second sweeps that send
heartbeats). Streams are read event by event:

>>> from clos_web import App, Channels, channel
>>> app, news = App(), Channels()
>>> @app.get("/hello")
... def hello(name: str = "world"):
...     return {"hello": name}
>>> @app.get("/news")
... @channel(news)
... def feed():
...     return "news"
>>> client = TestClient(app)
>>> client.get("/hello?name=ada").json()
{'hello': 'ada'}
>>> stream = client.stream("/news")
>>> event_id = news.publish("news", "it works")
>>> [(e.id == event_id, e.data) for e in stream.events()]
[(True, 'it works')]

With pytest, the fixture ``clos_web_client`` (this module is a pytest plugin once clos_web is
installed) makes clients that are closed after the test:
``def test_hello(clos_web_client): client = clos_web_client(app)``.
"""

from __future__ import annotations

import heapq
import json as _json
import threading
import time
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import urlencode

import attrs

from .http.parser import Limits
from .http.server import Server, write
from .loop.server import CLOSED, OPEN, Connection, FileSegment, connection_made, data_received

__all__ = ["TestClient", "TestResponse", "TestStream", "SSEEvent", "render"]


class _Socket:
    """The stand-in socket: keeps what the server sends; takes everything at once."""

    def __init__(self):
        self.sent = bytearray()
        self.shut = False
        self.closed = False

    def send(self, data) -> int:
        if self.closed:
            raise BrokenPipeError("closed")
        self.sent += data
        return len(data)

    def sendmsg(self, buffers) -> int:
        return sum(self.send(b) for b in buffers)

    def shutdown(self, how) -> None:
        self.shut = True

    def close(self) -> None:
        self.closed = True

    def fileno(self) -> int:
        return -1

    def setsockopt(self, *args) -> None:
        pass


class _Selector:
    """The stand-in selector: the client decides when things happen."""

    def register(self, *args):
        pass

    modify = unregister = register

    def close(self):
        pass


class _Waker:
    """The stand-in waker: a handed-over callable runs at the client's next step."""

    class wsock:  # noqa: N801 - stands in for a socket attribute
        @staticmethod
        def send(data):
            return len(data)

    rsock = wsock


@attrs.define(slots=True, eq=False)
class TestResponse:
    """A response: ``status``, ``reason``, ``headers`` (lower-case names; repeated fields
    joined with ``", "``), ``raw_headers`` (every field line) and ``body`` bytes."""

    __test__ = False  # not a pytest test class

    __test__ = False  # not a pytest test class

    status: int
    reason: str
    headers: dict
    raw_headers: list
    body: bytes

    @property
    def text(self) -> str:
        """The body decoded as UTF-8."""
        return self.body.decode("utf-8")

    def json(self):
        """The body parsed as JSON."""
        return _json.loads(self.body)

    def header(self, name: str, default=None):
        return self.headers.get(name.lower(), default)


@attrs.define(slots=True, frozen=True)
class SSEEvent:
    """One Server-Sent Event as a browser dispatches it: ``id`` (the last id seen),
    ``event`` (``"message"`` by default), ``data``; ``retry`` when the stream set one."""

    id: str
    event: str
    data: str
    retry: int | None = None


@attrs.define(slots=True, eq=False)
class TestStream:
    """An open streamed answer (SSE). ``events()`` returns the events that arrived since the
    last call, parsed by the WHATWG rules; ``closed`` says whether the server ended it."""

    __test__ = False

    __test__ = False  # not a pytest test class

    client: Any
    conn: Connection
    response: TestResponse
    _pending: bytearray = attrs.field(factory=bytearray)
    _chunked: bool = False
    _last_id: str = ""
    _event: str = ""
    _data: list = attrs.field(factory=list)
    _retry: int | None = None
    _lines: bytearray = attrs.field(factory=bytearray)
    ended: bool = False

    @property
    def closed(self) -> bool:
        self.client.run_pending()
        return self.conn.state is not OPEN

    def events(self) -> list:
        """The events that arrived since the last call (running what the loop would run)."""
        self.client.run_pending()
        sock = self.conn.sock
        self._pending += sock.sent
        sock.sent.clear()
        text = self._dechunk() if self._chunked else self._take_all()
        self._lines += text
        out = []
        while True:
            end = _line_end(self._lines)
            if end is None:
                break
            line, skip = end
            raw = bytes(self._lines[:line])
            del self._lines[:line + skip]
            event = self._field(raw.decode("utf-8", "replace"))
            if event is not None:
                out.append(event)
        return out

    def close(self) -> None:
        """The client leaves (the server's ``close_stream`` runs)."""
        self.conn.server.close(self.conn)

    def _take_all(self) -> bytes:
        data = bytes(self._pending)
        self._pending.clear()
        return data

    def _dechunk(self) -> bytes:
        out = bytearray()
        buf = self._pending
        while True:
            eol = buf.find(b"\r\n")
            if eol < 0:
                break
            size = int(buf[:eol].split(b";")[0], 16)
            if size == 0:
                self.ended = True
                del buf[:eol + 4]
                break
            if len(buf) < eol + 2 + size + 2:
                break
            out += buf[eol + 2:eol + 2 + size]
            del buf[:eol + 2 + size + 2]
        return bytes(out)

    def _field(self, line: str):
        if line == "":
            if not self._data:
                self._event = ""
                return None
            event = SSEEvent(self._last_id, self._event or "message", "\n".join(self._data),
                             self._retry)
            self._data = []
            self._event = ""
            return event
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._last_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)
        return None


def _line_end(buf: bytearray):
    """``(index, length of the line ending)`` of the first complete line, or None."""
    for i, byte in enumerate(buf):
        if byte == 0x0A:
            return i, 1
        if byte == 0x0D:
            if i + 1 < len(buf):
                return (i, 2) if buf[i + 1] == 0x0A else (i, 1)
            return None
    return None


class TestClient:
    """Requests to ``app`` through the same connection objects and generic functions as a
    server, in-process: no sockets, no threads. Cookies set by responses are kept and sent.

    ``limits`` are the server's :class:`~clos_web.http.parser.Limits`; ``debug`` puts
    tracebacks in 500 pages. ``timeout`` bounds the wait for an answer that comes later
    (a blocking handler on the worker pool).
    """

    __test__ = False  # not a pytest test class

    def __init__(self, app, limits: Limits | None = None, *, debug: bool = True,
                 timeout: float = 5.0):
        self.server = Server(app, "testclient", 0, limits or Limits(), debug)
        server = self.server
        server.selector = _Selector()
        server.waker = _Waker()
        server.max_connections = 1 << 30
        server.accepting = True  # (nothing to accept: connections are made by the client)
        server.now = time.monotonic()
        server._swept = int(server.now)
        server._ident = threading.get_ident()
        server.flush = _files_as_bytes(server.flush)
        self.timeout = timeout
        self.cookies: dict = {}
        self._streams: list = []

    # -- the clock and what falls due --------------------------------------------------------

    def run_pending(self) -> None:
        """Run what the loop would run now: callables handed over from other threads, due
        timers."""
        server = self.server
        callbacks = server._callbacks
        while callbacks:
            fn, args = callbacks.popleft()
            fn(*args)
        later = server._later
        while later and later[0][0] <= server.now:
            _, _, fn, args = heapq.heappop(later)
            fn(*args)
            while callbacks:
                fn, args = callbacks.popleft()
                fn(*args)

    def advance(self, seconds: float) -> None:
        """Move the client's clock on by ``seconds``, one second at a time: deadlines pass,
        timers run, the once-a-second sweeps run (heartbeats, history expiry)."""
        server = self.server
        end = server.now + seconds
        while server.now < end:
            server.now = min(end, server.now + 1.0)
            self.run_pending()
            if server.now >= server._swept + 1:
                server._sweep(server.now)

    # -- requests ----------------------------------------------------------------------------

    def request(self, method: str, target: str, *, headers=None, body: bytes | str = b"",
                json=None, data: dict | None = None, http10: bool = False) -> TestResponse:
        """Send one request and return the response. ``json`` sends a JSON body, ``data`` a
        form; ``headers`` is a dict or a list of pairs."""
        conn = self._connect(self._wire(method, target, headers, body, json, data, http10))
        response = self._read_response(conn, method == "HEAD")
        if conn.state is not CLOSED:
            self.server.close(conn)
        return response

    def get(self, target: str, **kw) -> TestResponse:
        return self.request("GET", target, **kw)

    def head(self, target: str, **kw) -> TestResponse:
        return self.request("HEAD", target, **kw)

    def post(self, target: str, **kw) -> TestResponse:
        return self.request("POST", target, **kw)

    def put(self, target: str, **kw) -> TestResponse:
        return self.request("PUT", target, **kw)

    def patch(self, target: str, **kw) -> TestResponse:
        return self.request("PATCH", target, **kw)

    def delete(self, target: str, **kw) -> TestResponse:
        return self.request("DELETE", target, **kw)

    def options(self, target: str, **kw) -> TestResponse:
        return self.request("OPTIONS", target, **kw)

    def stream(self, target: str, *, headers=None, last_event_id: str | None = None):
        """Open a streamed answer (SSE) and return a :class:`TestStream` once its head is
        in; a refusal (no stream) returns the :class:`TestResponse` instead."""
        headers = dict(headers or {})
        headers.setdefault("Accept", "text/event-stream")
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        conn = self._connect(self._wire("GET", target, headers, b"", None, None, False))
        sent = conn.sock.sent
        end = sent.find(b"\r\n\r\n")
        if end < 0:
            raise AssertionError(f"no response head: {bytes(sent)!r}")
        status, reason, fields, raw = _parse_head(bytes(sent[:end]))
        if status != 200 or "text/event-stream" not in fields.get("content-type", ""):
            response = self._read_response(conn, False)
            self.server.close(conn)
            return response
        self._keep_cookies(raw)
        del sent[:end + 4]
        stream = TestStream(self, conn, TestResponse(status, reason, fields, raw, b""))
        stream._chunked = fields.get("transfer-encoding") == "chunked"
        self._streams.append(stream)
        return stream

    def close(self) -> None:
        """Close the streams still open (their ``close_stream`` methods run)."""
        for stream in self._streams:
            if stream.conn.state is not CLOSED:
                self.server.close(stream.conn)
        self._streams.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- internals ---------------------------------------------------------------------------

    def _wire(self, method, target, headers, body, json, data, http10) -> bytes:
        given = list(headers.items() if isinstance(headers, dict) else (headers or ()))
        names = {name.lower() for name, _ in given}
        fields = [] if "host" in names else [("host", "testclient")]
        if json is not None:
            body = _json.dumps(json).encode()
            ctype = "application/json"
        elif data is not None:
            body = urlencode(data, doseq=True).encode()
            ctype = "application/x-www-form-urlencoded"
        else:
            ctype = None
        if ctype is not None and "content-type" not in names:
            fields.append(("content-type", ctype))
        if isinstance(body, str):
            body = body.encode("utf-8")
        if self.cookies and "cookie" not in names:
            fields.append(("cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items())))
        fields += given  # every field given, repeated names included, in order
        if (body or method in ("POST", "PUT", "PATCH")) and not (
                names & {"content-length", "transfer-encoding"}):
            fields.append(("content-length", str(len(body))))
        head = f"{method} {target} HTTP/1.{0 if http10 else 1}\r\n" + "".join(
            f"{name}: {value}\r\n" for name, value in fields) + "\r\n"
        return head.encode("latin-1") + body

    def _connect(self, request: bytes) -> Connection:
        server = self.server
        conn = Connection(_Socket(), server, ("testclient", 0))
        connection_made(server, conn)
        server.conns.add(conn)
        conn.buf.data += request
        data_received(conn.protocol, conn)
        self._wait(conn)
        return conn

    def _wait(self, conn: Connection) -> None:
        """Until the answer is written. One that comes later comes from another thread (a
        handler on the worker pool: waited for, up to ``timeout`` seconds) or from a timer (a
        long-poll's: the client's clock jumps to it when nothing else is happening)."""
        deadline = time.monotonic() + self.timeout
        quiet_since = time.monotonic()
        http = conn.protocol
        server = self.server
        while True:
            if server._callbacks or _working(server.app):
                quiet_since = time.monotonic()
            self.run_pending()
            if conn.sock.sent or conn.state is CLOSED or not (
                    http.state is http.state.BUSY and not http.response_started):
                return
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError("no answer within the client's timeout")
            if server._later and now - quiet_since > 0.05:
                self.advance(max(0.0, server._later[0][0] - server.now))
                continue
            time.sleep(0.001)

    def _read_response(self, conn: Connection, head_only: bool) -> TestResponse:
        self._wait(conn)
        data = bytes(conn.sock.sent)
        while data.startswith(b"HTTP/1.1 1"):  # interim responses
            data = data[data.index(b"\r\n\r\n") + 4:]
        end = data.find(b"\r\n\r\n")
        if end < 0:
            raise AssertionError(f"no complete response head: {data!r}")
        status, reason, fields, raw = _parse_head(data[:end])
        rest = data[end + 4:]
        if head_only or status in (204, 304):
            body = b""
        elif "content-length" in fields:
            body = rest[:int(fields["content-length"])]
        elif fields.get("transfer-encoding") == "chunked":
            body = _dechunk_all(rest)
        else:
            body = rest
        self._keep_cookies(raw)
        return TestResponse(status, reason, fields, raw, body)

    def _keep_cookies(self, raw: list) -> None:
        for name, value in raw:
            if name.lower() == "set-cookie":
                jar = SimpleCookie()
                jar.load(value)
                for key, morsel in jar.items():
                    if morsel["max-age"] == "0" or morsel.value == "":
                        self.cookies.pop(key, None)
                    else:
                        self.cookies[key] = morsel.value


def render(value, request: bytes = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", app=None) -> bytes:
    r"""The bytes ``write(value, conn)`` queues as the answer to ``request`` (raw bytes), on
    a connection that is never sent on: for testing a ``write`` method alone.

    >>> render({"a": 1}).endswith(b'Content-Length: 7\r\n\r\n{"a":1}')
    True
    >>> render("hi", b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n").endswith(b"\r\n\r\n")
    True
    """
    server = Server(app)
    conn = Connection(None, server)
    connection_made(server, conn)
    http = conn.protocol
    http.receive_data(request)
    if http.next_request(server.now) is None:
        raise ValueError(f"not a complete request: {request!r}")
    write(value, conn)
    return b"".join(bytes(item) for item in conn.out)


def _files_as_bytes(flush):
    """``server.flush`` reading queued file segments into bytes first: the stand-in socket has
    no file descriptor for ``os.sendfile``."""

    def flush_files_as_bytes(conn):
        out = conn.out
        for i, item in enumerate(out):
            if item.__class__ is FileSegment:
                item.file.seek(item.offset)
                out[i] = item.file.read(item.count)
                item.close()
        flush(conn)

    return flush_files_as_bytes


def _working(app) -> bool:
    """Whether a job of ``app``'s worker pool is running (its answer comes from that thread,
    not from a timer: the clock must not jump meanwhile)."""
    return bool(getattr(getattr(app, "workers", None), "_pending", 0))


def _parse_head(head: bytes):
    lines = head.decode("latin-1").split("\r\n")
    _, status, *reason = lines[0].split(" ", 2)
    fields, raw = {}, []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip(), value.strip()
        raw.append((name, value))
        key = name.lower()
        fields[key] = f"{fields[key]}, {value}" if key in fields else value
    return int(status), reason[0] if reason else "", fields, raw


def _dechunk_all(data: bytes) -> bytes:
    out = bytearray()
    while data:
        eol = data.find(b"\r\n")
        size = int(data[:eol].split(b";")[0], 16)
        if size == 0:
            break
        out += data[eol + 2:eol + 2 + size]
        data = data[eol + 2 + size + 2:]
    return bytes(out)


try:  # the pytest plugin (registered in pyproject's entry points)
    import pytest

    @pytest.fixture
    def clos_web_client():
        """``clos_web_client(app, **options) -> TestClient``; every client is closed after
        the test."""
        clients = []

        def make(app, *args, **kw):
            client = TestClient(app, *args, **kw)
            clients.append(client)
            return client

        yield make
        for client in clients:
            client.close()
except ImportError:  # pragma: no cover - pytest is a test tool, not a dependency
    pass
