"""The ``loop`` layer: one ``selectors`` loop serving many connections, in the chapter's shape.

``Server.run`` waits on the selector and hands each ready object to the generic function
``process_ready``, which specialises on what is ready: the :class:`Listener` (accept), a
:class:`Connection` (read, parse, dispatch), or the :class:`Waker` (run callables handed over by
other threads). Output goes through each connection's queue; deadlines live in coarse one-second
buckets swept once a second, so 10^5 connections cost a few attribute writes, not 10^5 timers.
"""

from __future__ import annotations

import errno
import gc
import heapq
import logging
import os
import resource
import selectors
import signal
import socket
import threading
import time
import traceback
from collections import deque
from typing import Any, Callable

import attrs

from ..clos import generic
from ..http import (
    Buffer, HTTPError, Limits, Request, RequestTimeout, Response, encode_response, header_block,
    json_bytes, response_head,
)
from ..http.parser import _parse_buffer

log = logging.getLogger("clos_web")

EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE

# Connection states (a connection is in exactly one).
IDLE = "idle"        # between requests (keep-alive), nothing buffered
HEAD = "head"        # a request's head is arriving
BODY = "body"        # head parsed, body arriving
BUSY = "busy"        # a handler is running on the loop now
WAIT = "wait"        # the answer comes later (worker pool, long-poll): reading paused
STREAM = "stream"    # the response is a long-lived stream (SSE); no request deadline
LINGER = "linger"    # response sent, write side shut, draining input before close
CLOSED = "closed"

_SCRATCH_SIZE = 64 * 1024


@attrs.define(slots=True, eq=False)
class Listener:
    """The listening socket of a server."""

    sock: socket.socket
    server: Any


@attrs.define(slots=True, eq=False)
class Waker:
    """A socketpair: other threads write a byte to ``wsock`` to wake the loop, which waits on
    ``rsock``."""

    rsock: socket.socket
    wsock: socket.socket
    server: Any


@attrs.define(slots=True, eq=False)
class FileSegment:
    """Part of a file queued for output, sent with ``os.sendfile`` (no copy, never blocking).

    The segment owns ``file`` and closes it when sent or when the connection closes.
    """

    file: Any
    offset: int
    count: int

    def __len__(self) -> int:
        return self.count

    def send(self, sock: socket.socket) -> int:
        """Send what the socket takes now; raises ``BlockingIOError`` when it takes nothing."""
        sent = os.sendfile(sock.fileno(), self.file.fileno(), self.offset, min(self.count,
                                                                             1 << 20))
        if sent == 0:  # the file is shorter than promised: stop rather than loop
            raise OSError("file shrank while being sent")
        self.offset += sent
        self.count -= sent
        return sent

    def close(self) -> None:
        try:
            self.file.close()
        except OSError:
            pass


@attrs.define(slots=True, eq=False)
class Connection:
    """A client connection: its socket, unparsed input, output queue, state and deadline."""

    sock: socket.socket
    server: Any
    addr: Any = None
    buf: Buffer = attrs.field(factory=Buffer)
    out: list = attrs.field(factory=list)  # bytes, memoryviews and FileSegments, in order
    out_bytes: int = 0
    events: int = EVENT_READ
    state: str = HEAD
    request: Request | None = None
    keep_alive: bool = True
    close_after: bool = False
    deadline: float = 0.0
    bucket: int | None = None
    stream: Any = None  # set by the push layer for a long-lived stream
    fd: int = -1

    @property
    def closed(self) -> bool:
        return self.state == CLOSED


# --------------------------------------------------------------------------------------------
# Generic functions of the loop protocol


@generic
def process_ready(ready, server):
    """Handle one ready object from the selector.

    Specialised on the listening socket (:class:`Listener`: accept until EAGAIN), a client
    :class:`Connection` (read what is ready, parse, handle complete requests) and the
    :class:`Waker` (run callables handed over with ``call_soon_threadsafe``).
    """


@generic
def buffer_input(conn):
    """Read what is ready on ``conn`` into its buffer; return the byte count: 0 at EOF (or a
    reset), -1 when nothing was ready after all."""


@generic
def handle_request(conn, request):
    """Answer one complete ``request`` on ``conn`` (route it, call the handler, ``write``)."""


@generic
def write(obj, conn):
    """Serialise ``obj`` (a Response, str, bytes, JSON-able value, SSE event...) onto ``conn``.

    Add a method to teach clos_web a new kind of response.
    """


@generic
def error_response(error, conn):
    """Answer ``conn`` with an error: ``error`` is an :class:`HTTPError` or a status ``int``."""


# --------------------------------------------------------------------------------------------
# The server


def _fd_soft_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft


def raise_fd_limit() -> int:
    """Raise this process's soft descriptor limit to the hard one; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


@attrs.define(slots=False, eq=False)
class Server:
    """One event loop: a selector, a listening socket, its connections, timers and an app.

    ``Server(app, port=0).start()`` runs the loop on a thread and returns at once (REPL, tests);
    ``serve_forever()`` runs it on the calling thread. ``stop(timeout)`` stops accepting,
    lets in-flight requests finish and closes everything.
    """

    app: Any
    host: str = "127.0.0.1"
    port: int = 0
    limits: Limits = attrs.field(factory=Limits)
    debug: bool = False
    backlog: int = 4096
    reuse_port: bool = False
    freeze_gc: bool = True
    gc_full_every: float = 300.0

    selector: selectors.BaseSelector | None = None
    listener: Listener | None = None
    waker: Waker | None = None
    conns: set = attrs.field(factory=set)
    now: float = 0.0
    thread: threading.Thread | None = None
    stopping: bool = False
    stopped: threading.Event = attrs.field(factory=threading.Event)
    accepting: bool = False
    max_connections: int = 0
    scratch: bytearray = attrs.field(factory=lambda: bytearray(_SCRATCH_SIZE))
    _callbacks: deque = attrs.field(factory=deque)
    _wake_pending: bool = False
    _later: list = attrs.field(factory=list)
    _later_seq: int = 0
    _buckets: dict = attrs.field(factory=dict)
    _swept: int = 0
    _stop_deadline: float | None = None
    _sweepers: list = attrs.field(factory=list)
    _accept_retry: bool = False
    _ident: int | None = None
    _clients: dict = attrs.field(factory=dict)  # host -> open connections (per-client cap)

    # -- set-up ------------------------------------------------------------------------------

    def bind(self) -> "Server":
        """Create the selector, the listening socket and the waker (done by start/serve)."""
        if self.selector is not None:
            return self
        self.selector = selectors.DefaultSelector()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((self.host, self.port))
        sock.listen(self.backlog)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self.listener = Listener(sock, self)
        self.selector.register(sock, EVENT_READ, self.listener)
        self.accepting = True
        r, w = socket.socketpair()
        r.setblocking(False)
        w.setblocking(False)
        self.waker = Waker(r, w, self)
        self.selector.register(r, EVENT_READ, self.waker)
        soft = _fd_soft_limit()
        cap = self.limits.max_connections
        self.max_connections = cap if cap is not None else max(16, soft - 64)
        self.now = time.monotonic()
        self._swept = int(self.now)
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "Server":
        """Run the loop on a daemon thread; return at once."""
        self.bind()
        self.thread = threading.Thread(target=self.serve_forever, name=f"clos_web:{self.port}",
                                       daemon=True)
        self.thread.start()
        return self

    def serve_forever(self, stop_on_signals: bool = False, stop_timeout: float = 5.0) -> None:
        """Run the loop on this thread until :meth:`stop`.

        With ``stop_on_signals`` (the main thread only; :func:`~clos_web.serve` sets it),
        SIGINT (Ctrl-C) and SIGTERM stop the server gracefully, as :meth:`stop` does: no more
        accepts, requests in flight finish (up to ``stop_timeout`` seconds), every stream ends
        cleanly (its last chunk, so a client sees a complete response and reconnects); a
        second signal closes what is left at once.
        """
        self.bind()
        self._ident = threading.get_ident()
        if self.freeze_gc:
            _freeze_gc()
            self.add_sweeper(_GcSweeper(self.gc_full_every))
        restore = self._catch_signals(stop_timeout) if stop_on_signals else {}
        try:
            self._run()
        finally:
            for signum, handler in restore.items():
                signal.signal(signum, handler)
            self._teardown()
            self.stopped.set()

    def _catch_signals(self, timeout: float) -> dict:
        """Install SIGINT/SIGTERM handlers that stop gracefully; return the old handlers."""

        def on_signal(signum, frame):
            if self.stopping:
                self._stop_deadline = 0.0  # the second signal: close what is left now
            else:
                log.info("%s: stopping (again to close at once)", signal.Signals(signum).name)
                self._callbacks.append((self._begin_stop, (timeout,)))
            try:
                self.waker.wsock.send(b"\0")
            except OSError:
                pass

        old = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            old[signum] = signal.signal(signum, on_signal)
        return old

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, finish in-flight requests (up to ``timeout`` s), close everything."""
        if self.selector is None or self.stopped.is_set():
            return
        if self._ident is None:  # bound but never run
            self._teardown()
            self.stopped.set()
            return
        self.call_soon_threadsafe(self._begin_stop, timeout)
        if threading.get_ident() != self._ident:
            self.stopped.wait(timeout + 5)
            if self.thread is not None:
                self.thread.join(timeout + 5)

    # -- thread hand-over and timers ---------------------------------------------------------

    def call_soon_threadsafe(self, fn: Callable, *args) -> None:
        """Run ``fn(*args)`` on the loop thread soon. Safe from any thread."""
        self._callbacks.append((fn, args))
        if threading.get_ident() != self._ident and not self._wake_pending:
            self._wake_pending = True
            try:
                self.waker.wsock.send(b"\0")
            except (BlockingIOError, OSError):
                pass

    def call_later(self, delay: float, fn: Callable, *args) -> None:
        """Run ``fn(*args)`` on the loop after ``delay`` seconds (loop thread only)."""
        self._later_seq += 1
        heapq.heappush(self._later, (time.monotonic() + delay, self._later_seq, fn, args))

    def add_sweeper(self, fn: Callable[[float], None]) -> None:
        """Call ``fn(now)`` about once a second on the loop (heartbeats and the like)."""
        self._sweepers.append(fn)

    def set_deadline(self, conn: Connection, when: float) -> None:
        """Give ``conn`` a deadline (``inf`` for none). Cheap: a bucket append only when earlier."""
        conn.deadline = when
        if when == float("inf"):
            return
        b = int(when) + 1
        if conn.bucket is None or b < conn.bucket:
            bucket = self._buckets.get(b)
            if bucket is None:
                self._buckets[b] = [conn]
            else:
                bucket.append(conn)
            conn.bucket = b

    def _sweep(self, now: float) -> None:
        upto = int(now)
        buckets = self._buckets
        if upto - self._swept > 3600:
            keys = sorted(k for k in buckets if k <= upto)
        else:
            keys = range(self._swept + 1, upto + 1)
        self._swept = upto
        for b in keys:
            for conn in buckets.pop(b, ()):
                if conn.bucket != b:
                    continue
                conn.bucket = None
                if conn.state == CLOSED:
                    continue
                if conn.deadline <= now:
                    self._expire(conn)
                else:
                    self.set_deadline(conn, conn.deadline)
        for fn in self._sweepers:
            try:
                fn(now)
            except Exception:
                log.exception("sweeper failed")

    def _expire(self, conn: Connection) -> None:
        state = conn.state
        if state == HEAD and not conn.buf.data:
            self.close(conn)  # connected and said nothing: just close
        elif state == HEAD or state == BODY:
            conn.keep_alive = False
            conn.request = None
            error_response(RequestTimeout(reason="request not received in time"), conn)
            conn.close_after = True
            conn.state = LINGER
            self.flush(conn)
        elif state == IDLE or state == LINGER:
            self.close(conn)
        elif state == STREAM and conn.stream is not None:
            stream_idle(conn.stream, conn)

    # -- the loop ----------------------------------------------------------------------------

    def _run(self) -> None:
        select = self.selector.select
        callbacks = self._callbacks
        later = self._later
        while True:
            if callbacks:
                timeout = 0
            else:
                now = time.monotonic()
                timeout = self._swept + 1 - now
                if later:
                    timeout = min(timeout, later[0][0] - now)
                timeout = max(0.0, min(timeout, 1.0))
            events = select(timeout)
            self.now = now = time.monotonic()
            for key, mask in events:
                ready = key.data
                try:
                    if mask & EVENT_WRITE:  # only connections ever wait to write
                        self.flush(ready)
                        if not mask & EVENT_READ:
                            continue
                    process_ready(ready, self)
                except Exception:
                    # a bug or a surprise on one connection never takes the loop down
                    log.exception("process_ready failed")
                    if ready.__class__ is Connection:
                        self.close(ready)
            for _ in range(len(callbacks)):  # those queued now; later ones wait a turn
                fn, args = callbacks.popleft()
                try:
                    fn(*args)
                except Exception:
                    log.exception("callback failed")
            while later and later[0][0] <= now:
                _, _, fn, args = heapq.heappop(later)
                try:
                    fn(*args)
                except Exception:
                    log.exception("timer failed")
            if now >= self._swept + 1:
                self._sweep(now)
            if self.stopping:
                if not self.conns or (self._stop_deadline is not None
                                      and now >= self._stop_deadline):
                    return

    def _begin_stop(self, timeout: float) -> None:
        self.stopping = True
        self._stop_deadline = time.monotonic() + timeout
        self._pause_accepting()
        if self.listener is not None:
            self.listener.sock.close()
        for conn in list(self.conns):
            conn.keep_alive = False
            if conn.state in (IDLE, LINGER) or (conn.state == HEAD and not conn.buf.data):
                self.close(conn)
            elif conn.state == STREAM:
                shutdown_stream(conn.stream, conn)

    def _teardown(self) -> None:
        if self.freeze_gc:
            gc.unfreeze()  # frozen objects go back to the collector's sight
        for conn in list(self.conns):
            self.close(conn)
        try:
            self.selector.close()
        except Exception:
            pass
        if self.listener is not None:
            self.listener.sock.close()
        self.waker.rsock.close()
        self.waker.wsock.close()

    # -- accepting ---------------------------------------------------------------------------

    def _pause_accepting(self) -> None:
        if self.accepting:
            self.accepting = False
            try:
                self.selector.unregister(self.listener.sock)
            except (KeyError, ValueError):
                pass

    def _resume_accepting(self) -> None:
        self._accept_retry = False
        if not self.accepting and not self.stopping and len(self.conns) < self.max_connections:
            self.accepting = True
            self.selector.register(self.listener.sock, EVENT_READ, self.listener)

    def accept(self) -> None:
        """Accept connections until EAGAIN, the connection cap, or descriptor exhaustion."""
        sock = self.listener.sock
        conns = self.conns
        limits = self.limits
        per_client = limits.max_connections_per_client
        for _ in range(256):
            if len(conns) >= self.max_connections:
                self._pause_accepting()  # resumed when a connection closes
                return
            try:
                csock, addr = sock.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("accept: %s; pausing accepts for 0.5 s", exc.strerror)
                    self._pause_accepting()
                    if not self._accept_retry:
                        self._accept_retry = True
                        self.call_later(0.5, self._resume_accepting)
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                    continue
                raise
            if per_client is not None and not self._count_client(addr, per_client):
                _refuse(csock)
                continue
            csock.setblocking(False)
            try:
                csock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            conn = Connection(csock, self, addr, Buffer(limits=limits))
            conn.fd = csock.fileno()
            conn.buf.body_limit = self._body_limit
            conns.add(conn)
            self.selector.register(csock, EVENT_READ, conn)
            self.set_deadline(conn, self.now + limits.header_timeout)

    def _count_client(self, addr, cap: int) -> bool:
        """Count a new connection from ``addr``'s host; False (not counted) at the cap."""
        host = addr[0] if isinstance(addr, tuple) else addr
        n = self._clients.get(host, 0)
        if n >= cap:
            return False
        self._clients[host] = n + 1
        return True

    def _uncount_client(self, addr) -> None:
        host = addr[0] if isinstance(addr, tuple) else addr
        n = self._clients.get(host, 0) - 1
        if n > 0:
            self._clients[host] = n
        else:
            self._clients.pop(host, None)

    def _body_limit(self, request: Request) -> int:
        fn = getattr(self.app, "body_limit", None)
        return fn(request, self.limits.max_body) if fn is not None else self.limits.max_body

    # -- reading and dispatching -------------------------------------------------------------

    def on_readable(self, conn: Connection) -> None:
        """Read from ``conn``, then parse and handle every complete request (in order)."""
        state = conn.state
        n = buffer_input(conn)
        if n == 0:
            self.close(conn)  # EOF or reset: nothing more can come in, nothing to answer
            return
        if n < 0:
            return
        if state == LINGER:
            conn.buf.data.clear()
            return
        if state == STREAM:
            conn.buf.data.clear()  # a stream's client has nothing more to say; ignore it
            return
        if state is BUSY or state is WAIT:
            self._update_interest(conn)  # stop reading if too much is parked
            return
        self.process_input(conn)

    def process_input(self, conn: Connection) -> None:
        """Parse and handle buffered requests until one is incomplete or the conn is busy."""
        buf = conn.buf
        limits = self.limits
        while True:
            state = conn.state
            if state is IDLE:
                if not buf.data:
                    break
            elif state is not HEAD and state is not BODY:
                break
            try:
                request = _parse_buffer(buf)
            except HTTPError as err:
                conn.keep_alive = False
                # a request refused from its head (its body unread) is answered as itself
                conn.request = getattr(err, "request", None)
                error_response(err, conn)
                conn.request = None
                conn.close_after = True  # after a framing error the stream cannot be trusted
                conn.state = LINGER
                self.set_deadline(conn, self.now + limits.keepalive_timeout)
                break
            if request is None:
                if state is IDLE:
                    # the first bytes of a request: its head must complete in time
                    conn.state = state = HEAD
                    self.set_deadline(conn, self.now + limits.header_timeout)
                if state is HEAD and buf.pending is not None:
                    conn.state = BODY
                    self.set_deadline(conn, self.now + limits.body_timeout)
                if buf.continue_needed:
                    buf.continue_needed = False
                    self.enqueue(conn, response_head(100))
                break
            conn.request = request
            conn.keep_alive = request.keep_alive and not self.stopping
            conn.state = BUSY
            handle_request(conn, request)
            if conn.state is BUSY and conn.request is request:
                # the handler answered synchronously
                self.request_done(conn)
            if conn.out_bytes > limits.output_cap:
                break  # backpressure: resume parsing when the client has read
        self.flush(conn)

    def request_done(self, conn: Connection) -> None:
        """The response to the current request is queued: go on to the next, or close."""
        conn.request = None
        if conn.state == CLOSED:
            return
        if not conn.keep_alive:
            conn.close_after = True
            conn.state = LINGER  # _linger() shortens the deadline once the output is sent
            self.set_deadline(conn, self.now + self.limits.keepalive_timeout)
            return
        conn.state = IDLE
        self.set_deadline(conn, self.now + self.limits.keepalive_timeout)

    def park(self, conn: Connection) -> None:
        """The current request will be answered later by :meth:`complete` (no deadline)."""
        conn.state = WAIT
        conn.deadline = float("inf")

    def complete(self, conn: Connection, request: Request, result) -> None:
        """Answer a request whose handler ran elsewhere (a worker thread); loop thread only.

        ``result`` is what the handler returned, or the exception it raised. A connection that
        closed meanwhile is left alone.
        """
        if conn.state is not WAIT or conn.request is not request:
            return
        conn.state = BUSY
        answer(conn, request, result)
        if conn.state is BUSY and conn.request is request:
            self.resume(conn)

    def resume(self, conn: Connection) -> None:
        """Finish a request answered later (blocking handler): flush and parse what waits."""
        if conn.state == CLOSED:
            return
        self.request_done(conn)
        self.flush(conn)
        if conn.state == IDLE and conn.buf.data and conn.out_bytes <= self.limits.output_cap:
            self.process_input(conn)

    # -- writing -----------------------------------------------------------------------------

    def enqueue(self, conn: Connection, data: bytes) -> None:
        """Append ``data`` to ``conn``'s output queue (flushed by :meth:`flush`)."""
        if conn.state == CLOSED or conn.close_after and conn.state != LINGER:
            return
        conn.out.append(data)
        conn.out_bytes += len(data)

    def send(self, conn: Connection, data: bytes) -> bool:
        """Queue ``data`` and try to send at once. False if the connection is gone."""
        if conn.state == CLOSED:
            return False
        conn.out.append(data)
        conn.out_bytes += len(data)
        self.flush(conn)
        return conn.state != CLOSED

    def flush(self, conn: Connection) -> None:
        """Send as much of the output queue as the socket takes; wait for write-readiness."""
        out = conn.out
        sock = conn.sock
        while out:
            first = out[0]
            try:
                if first.__class__ is FileSegment:
                    sent = first.send(sock)
                    conn.out_bytes -= sent
                    if first.count == 0:
                        first.close()
                        del out[0]
                    continue
                if len(out) == 1:
                    sent = sock.send(first)
                else:
                    batch = []
                    for item in out:
                        if item.__class__ is FileSegment or len(batch) == 512:
                            break
                        batch.append(item)
                    sent = sock.sendmsg(batch)
            except BlockingIOError:
                break
            except (ConnectionError, OSError):
                self.close(conn)
                return
            conn.out_bytes -= sent
            done = 0
            while sent:
                n = len(out[done])
                if sent >= n:
                    sent -= n
                    done += 1
                else:
                    out[done] = memoryview(out[done])[sent:]
                    sent = 0
            if done:
                del out[:done]  # one deletion per send: a long queue costs O(n), not O(n^2)
            else:
                break  # a partial send: the socket is full
        if conn.close_after and not out:
            self._linger(conn)
            return
        self._update_interest(conn)
        if not out and conn.state == IDLE and conn.buf.data:
            # input parked by backpressure: parse it now that the client has read
            self.call_soon_threadsafe(self.process_input, conn)

    def _update_interest(self, conn: Connection) -> None:
        """Register for what ``conn`` needs: write when output waits; read unless parked."""
        state = conn.state
        if state == CLOSED:
            return
        events = EVENT_WRITE if conn.out else 0
        if state is BUSY or state is WAIT:
            limits = self.limits
            if len(conn.buf.data) <= limits.max_request_line + limits.max_header_bytes:
                events |= EVENT_READ
        elif conn.out_bytes <= self.limits.output_cap or state == STREAM or state == LINGER:
            events |= EVENT_READ
        if conn.events != events:
            if events == 0:
                self.selector.unregister(conn.sock)
            elif conn.events == 0:
                self.selector.register(conn.sock, events, conn)
            else:
                self.selector.modify(conn.sock, events, conn)
            conn.events = events

    def _linger(self, conn: Connection) -> None:
        """All sent and the connection must close: shut our side, drain theirs briefly."""
        if conn.state == CLOSED:
            return
        conn.close_after = False
        conn.state = LINGER
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close(conn)
            return
        self._update_interest(conn)
        self.set_deadline(conn, self.now + self.limits.linger_timeout)

    def close(self, conn: Connection) -> None:
        """Close ``conn`` at once and forget it (idempotent)."""
        if conn.state == CLOSED:
            return
        conn.state = CLOSED
        stream = conn.stream
        if stream is not None:
            conn.stream = None
            try:
                close_stream(stream, conn)
            except Exception:
                log.exception("close_stream failed")
        if conn.events:
            try:
                self.selector.unregister(conn.sock)
            except (KeyError, ValueError, OSError):
                pass
            conn.events = 0
        conn.sock.close()
        for item in conn.out:
            if item.__class__ is FileSegment:
                item.close()
        conn.out.clear()
        conn.out_bytes = 0
        conn.buf.data = bytearray()
        if conn in self.conns:
            self.conns.discard(conn)
            if self.limits.max_connections_per_client is not None:
                self._uncount_client(conn.addr)
        if not self.accepting and not self._accept_retry and not self.stopping:
            self._resume_accepting()

    def begin_stream(self, conn: Connection, stream, head: bytes) -> None:
        """Turn ``conn`` into a long-lived stream (SSE): queue ``head``, drop its deadline.

        From now on the connection reads nothing more from the client (a stream's client has
        nothing to say; what it sends is discarded), ``close_stream(stream, conn)`` is called
        when it closes, and ``server.push(conn, data)`` sends to it.
        """
        conn.state = STREAM
        conn.stream = stream
        conn.request = None
        idle = self.limits.stream_idle_timeout
        if idle is None:
            conn.deadline = float("inf")
        else:
            self.set_deadline(conn, self.now + idle)  # then stream_idle(stream, conn)
        self.enqueue(conn, head)
        self.flush(conn)

    def push(self, conn: Connection, data: bytes) -> bool:
        """Send ``data`` on a stream; apply the slow-consumer policy past the output cap.

        Returns False when the connection is (now) closed. The policy is the default one:
        a consumer whose queue would pass ``limits.output_cap`` is closed (it reconnects and
        resumes from channel history); the queue never grows past the cap.
        """
        if conn.state is CLOSED:
            return False
        if conn.out_bytes + len(data) > self.limits.output_cap:
            log.info("closing slow consumer %s (%d bytes queued)", conn.addr, conn.out_bytes)
            self.close(conn)
            return False
        conn.out.append(data)
        conn.out_bytes += len(data)
        if len(conn.out) == 1:
            self.flush(conn)
        return conn.state is not CLOSED

    def finish_stream(self, conn: Connection) -> None:
        """End a long-lived stream: flush what is queued, then close."""
        conn.keep_alive = False
        conn.close_after = True
        self.flush(conn)


def _refuse(sock: socket.socket) -> None:
    """Answer a connection over its client's cap with a short 503 and close it (never blocks:
    the answer fits in a new socket's buffer, or is dropped)."""
    try:
        sock.setblocking(False)
        sock.send(response_head(503, _TOO_MANY_FIELDS, length=len(_TOO_MANY_BODY),
                                keep_alive=False) + _TOO_MANY_BODY)
    except OSError:
        pass
    sock.close()


_TOO_MANY_BODY = b"503 too many connections from your address\n"
_TOO_MANY_FIELDS = header_block([("Content-Type", "text/plain; charset=utf-8"),
                                 ("Retry-After", "1")])


def _freeze_gc() -> None:
    """Collect once, then freeze what exists (modules, classes, the app): see _GcSweeper."""
    gc.collect()
    gc.freeze()


class _GcSweeper:
    """The loop's garbage-collection policy (``Server.freeze_gc``, on by default).

    Python's full collections walk every tracked object; with 10,000 subscribers each one
    paused the loop for 30-70 ms, every few seconds under load: that was the whole p99 of
    push delivery (27 ms; 0.5 ms with this policy, measured by bench/push_bench.py). So once a
    second the young generations are collected and the survivors frozen (``gc.freeze``: out of
    the collector's sight, still freed by reference counting), and every ``every`` seconds
    (``Server.gc_full_every``, 300 by default) everything is unfrozen and collected once.
    The cost: a reference cycle that becomes garbage after it was frozen waits for that full
    collection.
    """

    def __init__(self, every: float):
        self.every = every
        self.last_full = time.monotonic()

    def __call__(self, now: float) -> None:
        if now - self.last_full >= self.every:
            self.last_full = now
            gc.unfreeze()
            gc.collect()
        else:
            gc.collect(1)
        gc.freeze()


@generic
def close_stream(stream, conn):
    """Called when a connection with a ``conn.stream`` closes, whatever the reason: release
    what the stream holds (the push layer unsubscribes it from every channel)."""


@close_stream.dispatch
def close_stream_object(stream: object, conn: Connection):
    return None


@generic
def stream_idle(stream, conn):
    """Called when a stream's idle deadline passes (``Limits.stream_idle_timeout``): end it,
    or give it a new deadline with ``conn.server.set_deadline`` if it was not idle after all.
    By default the stream ends cleanly (``shutdown_stream``): a client that still wants it
    reconnects, so a stream nobody publishes to does not hold its slot for ever."""


@stream_idle.dispatch
def stream_idle_object(stream: object, conn: Connection):
    shutdown_stream(stream, conn)


@generic
def shutdown_stream(stream, conn):
    """End a stream gracefully when its server stops (a protocol may send a last frame)."""


@shutdown_stream.dispatch
def shutdown_stream_object(stream: object, conn: Connection):
    conn.server.finish_stream(conn)


# --------------------------------------------------------------------------------------------
# process_ready methods


@process_ready.dispatch
def process_ready_listener(ready: Listener, server: Server):
    server.accept()


@process_ready.dispatch
def process_ready_connection(ready: Connection, server: Server):
    server.on_readable(ready)


@process_ready.dispatch
def process_ready_waker(ready: Waker, server: Server):
    try:
        while ready.rsock.recv(4096):
            pass
    except (BlockingIOError, InterruptedError):
        pass
    server._wake_pending = False


@buffer_input.dispatch
def buffer_input_connection(conn: Connection):
    scratch = conn.server.scratch
    try:
        n = conn.sock.recv_into(scratch)
    except (BlockingIOError, InterruptedError):
        return -1
    except (ConnectionError, OSError):
        return 0
    if n:
        conn.buf.data += memoryview(scratch)[:n]
    return n


# --------------------------------------------------------------------------------------------
# Requests, writes and errors


@handle_request.dispatch
def handle_request_connection(conn: Connection, request: Request):
    server = conn.server
    try:
        result = server.app.handle(request, conn)
    except Exception as exc:
        answer(conn, request, exc)
        return
    if result is _DEFERRED:  # the handler answers later through server.complete
        conn.server.park(conn)
    else:
        answer(conn, request, result)


def answer(conn: Connection, request: Request, result) -> None:
    """Write ``result`` (a handler's return value, or the exception it raised) as the response
    to ``request`` on ``conn``: ``write`` for values, ``error_response`` for exceptions (an
    exception instance is answered as if raised, so a worker thread can hand one back).

    A ``write`` or ``error_response`` method that fails (a header refused by the head writer,
    a bug) leaves nothing half-written: what it queued is taken back and a plain 500 goes out.
    """
    mark, queued = len(conn.out), conn.out_bytes
    try:
        try:
            if isinstance(result, BaseException):
                raise result
            write(result, conn)
        except HTTPError as err:
            _take_back(conn, mark, queued)
            error_response(err, conn)
    except Exception as exc:
        log.error("handler failed for %s %s\n%s", request.method, request.target,
                  "".join(traceback.format_exception(exc)))
        _take_back(conn, mark, queued)
        try:
            error_response(_internal_error(exc, conn.server.debug), conn)
        except Exception:
            log.exception("error_response failed")
            _take_back(conn, mark, queued)
            conn.keep_alive = False
            conn.server.enqueue(conn, response_head(500, length=0, keep_alive=False))


def _take_back(conn: Connection, mark: int, queued: int) -> None:
    """Drop what was queued on ``conn`` after ``mark`` items (a response that failed midway)."""
    out = conn.out
    if len(out) > mark and conn.out_bytes >= queued:
        for item in out[mark:]:
            if item.__class__ is FileSegment:
                item.close()
        del out[mark:]
        conn.out_bytes = queued


class _Deferred:
    """Returned by an app's ``handle`` when the response will be written later."""

    def __repr__(self):
        return "DEFERRED"


_DEFERRED = _Deferred()
DEFERRED = _DEFERRED


def _internal_error(exc: BaseException, debug: bool) -> HTTPError:
    err = HTTPError(500, "Internal Server Error")
    if debug:
        err.debug_text = "".join(traceback.format_exception(exc))
    return err


def send_response(response: Response, conn: Connection) -> None:
    """Encode ``response`` for the current request of ``conn`` and queue it."""
    request = conn.request
    if request is None:
        head_only, http10 = False, False
    else:
        head_only = request.method == "HEAD"
        http10 = request.version == "HTTP/1.0"
    conn.server.enqueue(conn, encode_response(response, head_only, conn.keep_alive, http10))


@write.dispatch
def write_response(obj: Response, conn: Connection):
    send_response(obj, conn)


@write.dispatch
def write_str(obj: str, conn: Connection):
    send_response(Response(obj, content_type="text/html"), conn)


@write.dispatch
def write_bytes(obj: bytes, conn: Connection):
    send_response(Response(obj, content_type="application/octet-stream"), conn)


@write.dispatch
def write_dict_list(obj: dict | list, conn: Connection):
    send_response(Response(json_bytes(obj), content_type="application/json"), conn)


@write.dispatch
def write_none(obj: None, conn: Connection):
    send_response(Response(b"", status=204), conn)


@error_response.dispatch
def error_response_int(error: int, conn: Connection):
    error_response(HTTPError(error), conn)


@error_response.dispatch
def error_response_http_error(error: HTTPError, conn: Connection):
    text = f"{error.status} {error.reason}\n"
    debug_text = getattr(error, "debug_text", None)
    if debug_text:
        text += "\n" + debug_text
    if error.status >= 400 and conn.request is None:
        conn.keep_alive = False  # a framing error: the stream cannot be trusted any more
    response = Response(text, status=error.status, content_type="text/plain",
                        headers=error.headers)
    send_response(response, conn)


__all__ = [
    "Server", "Listener", "Connection", "Waker", "process_ready", "buffer_input",
    "handle_request", "write", "error_response", "close_stream", "shutdown_stream", "stream_idle",
    "send_response", "answer",
    "FileSegment",
    "raise_fd_limit", "DEFERRED",
]
