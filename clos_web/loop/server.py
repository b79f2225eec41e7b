"""The ``loop`` layer: one event loop, transport only.

:class:`Loop` waits on its poller (:class:`EpollPoller` on Linux: epoll and one dict entry per
socket; :class:`SelectorsPoller`, the ``selectors`` module, elsewhere) and hands each ready
object to the generic function ``process_ready(ready, server, events)``, which specialises on
what is ready: the
:class:`Listener` (accept), a :class:`Connection` (read, or write what is queued), the
:class:`Waker` (run callables handed over by other threads), or any object of yours registered
with ``server.register(sock, obj, events)``. The loop knows nothing of HTTP: a connection's bytes
go to its *protocol* object (``conn.protocol``; HTTP's is
:class:`~clos_web.http.connection.HTTPConnection`) through the generic functions below, and the
protocol answers through the transport's API (``send``, ``push``, ``close_when_sent``,
``set_deadline``, ``pause_reading``...).

What the loop owns: the poller; its listening sockets (the first from ``bind()``, more with
``listen()``: one per port, all serving the same protocol); accepting (in batches until the
kernel has no more); each connection's output queue, flushed with
``send``/``sendmsg``/``os.sendfile``, with write interest while output waits and the
slow-consumer policy for streams; the cap on connections (and per client address); deadlines
in coarse one-second buckets (10^5 connections cost a few attribute writes, not 10^5 timers);
``call_later`` and ``call_soon_threadsafe``; sweepers run once a second; the GC policy;
stopping gracefully.
"""

from __future__ import annotations

import enum
import errno
import gc
import heapq
import logging
import os
import resource
import select
import selectors
import signal
import socket
import sys
import threading
import time
from collections import deque
from typing import Any, Callable

import attrs

from ..clos import generic

log = logging.getLogger("clos_web")

EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE
INFINITY = float("inf")

_SCRATCH_SIZE = 64 * 1024


class Link(enum.Enum):
    """The transport state of a :class:`Connection`."""

    OPEN = "open"
    LINGER = "linger"  # everything is sent and our side is shut: draining input before close
    CLOSED = "closed"


# The members as module names: in Python 3.11 ``EnumType`` has a ``__getattr__``, so
# ``Link.OPEN`` costs ~950 instructions (a global: ~30).
OPEN, LINGER, CLOSED = Link


class Reading(enum.Enum):
    """What a protocol wants read from its connection (``conn.reading``)."""

    NORMAL = "normal"    # read, unless the output queue is over the cap (backpressure)
    ALWAYS = "always"    # read whatever the output (a stream: to notice the client leaving)
    PAUSED = "paused"    # read nothing for now


NORMAL, ALWAYS, PAUSED = Reading


@attrs.define(slots=True, eq=False, repr=False)
class Listener:
    """A listening socket of a server (``server.listeners``: the first from ``bind()``, more
    from :meth:`Loop.listen`); ``address`` is ``(host, port)`` as bound.

    >>> Listener(None, None, ("127.0.0.1", 8001))
    <Listener 127.0.0.1:8001>
    """

    sock: socket.socket
    server: Any
    address: tuple = ()
    # (family, type, proto) as ints, for the sockets accepted on it (read once: the Python
    # socket's properties build enums)
    accepts: tuple = attrs.field(init=False, default=attrs.Factory(
        lambda self: None if self.sock is None else
        (int(self.sock.family), int(self.sock.type), self.sock.proto), takes_self=True))

    def __repr__(self) -> str:
        if not self.address:
            return "<Listener>"
        return f"<Listener {self.address[0]}:{self.address[1]}>"


_Socket = socket.SocketType  # (the C type under socket.socket)

# Linux gives an accepted socket the listening socket's TCP_NODELAY: set once there, not with
# a system call per connection (elsewhere, per connection)
_NODELAY_INHERITED = sys.platform.startswith("linux")


def _listening_socket(host: str, port: int, reuse_port: bool, backlog: int) -> socket.socket:
    """A non-blocking TCP socket listening on ``host:port`` (``SO_REUSEADDR``; ``SO_REUSEPORT``
    when asked; ``TCP_NODELAY``, which Linux passes on to what it accepts). Raises ``OSError``
    when the port cannot be had (the socket is closed)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class Input:
    """The bare input buffer of a connection whose protocol parses nothing more (a stream,
    a WebSocket once its own parser has the bytes): only the ``data`` the loop appends to.

    >>> Input(bytearray(b"x")).data
    bytearray(b'x')
    """

    __slots__ = ("data",)

    def __init__(self, data: bytearray | None = None):
        self.data = bytearray() if data is None else data


class _Dropped(bytearray):
    """A bytearray that keeps nothing added to it."""

    __slots__ = ()

    def __iadd__(self, other):
        return self

    def extend(self, other) -> None:
        pass

    def append(self, item) -> None:
        pass


#: The input of connections whose bytes nobody reads any more (a stream: its input only
#: tells that the client left): one for all of them, it keeps nothing appended to it, so an
#: idle stream holds no buffer of its own.
#:
#: >>> DISCARD.data += b"ignored"; DISCARD.data
#: bytearray(b'')
DISCARD = Input(_Dropped())


# --------------------------------------------------------------------------------------------
# Readiness: which watched sockets can be read or written now


_GONE = object()


class EpollPoller:
    """The loop's poller on Linux: ``select.epoll`` and one dict, ``{fd: object}``.

    The same calls as a ``selectors`` selector (``register(fileobj, events, data)``,
    ``modify``, ``unregister``, ``close``), but ``select(timeout)`` returns ``(data, mask)``
    pairs, and a watched socket costs one dict entry (a selector keeps a ``SelectorKey``
    tuple per socket as well: about 100 bytes of each idle connection). The mask is
    ``EVENT_READ``/``EVENT_WRITE``; an error or hang-up makes a socket ready for what it is
    watched for, so its next read or write tells what happened. Unregister a socket before
    closing it. At most ``maxevents`` are returned per call (the rest are still ready at the
    next).

    >>> import socket
    >>> poller, (a, b) = EpollPoller(), socket.socketpair()
    >>> poller.register(a, EVENT_READ, "a's object"); b.send(b"x")
    1
    >>> poller.select(0), len(poller)
    ([("a's object", 1)], 1)
    >>> poller.unregister(a); poller.close(); a.close(); b.close()
    """

    __slots__ = ("_epoll", "_objs", "_interest", "maxevents")

    def __init__(self, maxevents: int = 1024):
        self._epoll = select.epoll()
        self._objs: dict = {}        # fd -> the object process_ready is called with
        self._interest: dict = {}    # fd -> events, only where not EVENT_READ alone
        self.maxevents = maxevents

    def __len__(self) -> int:
        return len(self._objs)

    def register(self, fileobj, events: int, data=None) -> None:
        fd = fileobj if fileobj.__class__ is int else fileobj.fileno()
        self._epoll.register(fd, _TO_EPOLL[events])  # (FileExistsError if it is watched)
        self._objs[fd] = data
        if events != EVENT_READ:
            self._interest[fd] = events

    def modify(self, fileobj, events: int, data=None) -> None:
        fd = fileobj if fileobj.__class__ is int else fileobj.fileno()
        if fd not in self._objs:
            raise KeyError(f"{fileobj!r} is not registered")
        self._epoll.modify(fd, _TO_EPOLL[events])
        self._objs[fd] = data
        if events == EVENT_READ:
            self._interest.pop(fd, None)
        else:
            self._interest[fd] = events

    def unregister(self, fileobj) -> None:
        fd = fileobj if fileobj.__class__ is int else fileobj.fileno()
        del self._objs[fd]  # (KeyError if it is not watched)
        self._interest.pop(fd, None)
        try:
            self._epoll.unregister(fd)
        except OSError:  # (closed already: the kernel forgot it)
            pass

    def select(self, timeout: float | None = None, maxevents: int | None = None) -> list:
        """``(data, mask)`` for every watched socket ready now, waiting up to ``timeout``
        seconds (``None``: until one is). The objects are looked up before any is handled,
        as a selector does: a descriptor closed and reused meanwhile still reaches the object
        it was ready for."""
        objs = self._objs
        ready = []
        for fd, ev in self._epoll.poll(-1 if timeout is None else timeout,
                                       maxevents or self.maxevents):
            data = objs.get(fd, _GONE)
            if data is _GONE:
                continue
            if ev < 8:  # EPOLLIN 1, EPOLLOUT 4: only what was asked for
                ready.append((data, _FROM_EPOLL[ev]))
            else:       # an error or hang-up: ready for whatever the socket is watched for
                mask = ((EVENT_WRITE if ev & ~select.EPOLLIN else 0)
                        | (EVENT_READ if ev & ~select.EPOLLOUT else 0))
                mask &= self._interest.get(fd, EVENT_READ)
                if mask:
                    ready.append((data, mask))
        return ready

    def close(self) -> None:
        self._epoll.close()
        self._objs.clear()
        self._interest.clear()


class SelectorsPoller:
    """The loop's poller where there is no epoll: the ``selectors`` module's best selector,
    with :class:`EpollPoller`'s ``select`` (``(data, mask)`` pairs).

    >>> import socket
    >>> poller, (a, b) = SelectorsPoller(), socket.socketpair()
    >>> poller.register(a, EVENT_READ, "a's object"); b.send(b"x")
    1
    >>> poller.select(0), len(poller)
    ([("a's object", 1)], 1)
    >>> poller.unregister(a); poller.close(); a.close(); b.close()
    """

    __slots__ = ("_selector",)

    def __init__(self):
        self._selector = selectors.DefaultSelector()

    def __len__(self) -> int:
        return len(self._selector.get_map())

    def register(self, fileobj, events: int, data=None) -> None:
        self._selector.register(fileobj, events, data)

    def modify(self, fileobj, events: int, data=None) -> None:
        self._selector.modify(fileobj, events, data)

    def unregister(self, fileobj) -> None:
        self._selector.unregister(fileobj)

    def select(self, timeout: float | None = None, maxevents: int | None = None) -> list:
        return [(key.data, mask) for key, mask in self._selector.select(timeout)]

    def close(self) -> None:
        self._selector.close()


if hasattr(select, "epoll"):
    _TO_EPOLL = (0, select.EPOLLIN, select.EPOLLOUT, select.EPOLLIN | select.EPOLLOUT)
    _FROM_EPOLL = (0, EVENT_READ, 0, 0, EVENT_WRITE, EVENT_READ | EVENT_WRITE, 0, 0)
    DefaultPoller = EpollPoller
else:
    DefaultPoller = SelectorsPoller


@attrs.define(slots=True, eq=False, repr=False)
class Waker:
    """A socketpair: other threads write a byte to ``wsock`` to wake the loop, which waits on
    ``rsock``."""

    rsock: socket.socket
    wsock: socket.socket
    server: Any

    def __repr__(self) -> str:
        return "<Waker>"


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


@attrs.define(slots=True, eq=False, repr=False)
class Connection:
    """A client connection, as the transport sees it: its socket, its protocol and that
    protocol's input buffer (an object with a ``data`` bytearray), the output queue, the link
    state, what to read and the deadline.

    >>> Connection(None, None)
    <Connection OPEN protocol=None out=0>
    """

    sock: socket.socket
    server: Any
    addr: Any = None
    protocol: Any = None
    buf: Any = None
    # bytes, memoryviews and FileSegments, in order: a list while anything is queued, the
    # shared empty tuple when nothing is (an idle connection keeps no list of its own)
    out: Any = ()
    out_bytes: int = 0
    events: int = EVENT_READ
    state: Link = OPEN
    reading: Reading = Reading.NORMAL
    close_after: bool = False  # close once the output is sent
    deadline: float = INFINITY
    bucket: int | None = None

    @property
    def closed(self) -> bool:
        return self.state is CLOSED

    def __repr__(self) -> str:
        protocol = None if self.protocol is None else type(self.protocol).__name__
        return f"<Connection {self.state.name} protocol={protocol} out={self.out_bytes}>"


def drop_sent(out: list, sent: int) -> bool:
    """Take the ``sent`` bytes a send took off the front of the output queue ``out`` (bytes
    or memoryviews; a partly sent one is cut). True when whole items went; False when the
    first was only cut (the socket is full). One deletion per send: a long queue costs O(n),
    not O(n^2).

    >>> out = [b"ab", b"cd"]; drop_sent(out, 3), out[0].tobytes()
    (True, b'd')
    """
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
        del out[:done]
        return True
    return False


_current = threading.local()
_intern = sys.intern


def current_loop():
    """The :class:`Loop` running on this thread (``None`` on any other thread): for code that
    must know whether it runs on a loop, and which.

    >>> current_loop() is None
    True
    """
    return getattr(_current, "loop", None)


# --------------------------------------------------------------------------------------------
# Generic functions of the loop protocol


@generic
def process_ready(ready, server, events):
    """Handle one ready object from the selector; ``events`` is the readiness mask
    (``EVENT_READ`` and/or ``EVENT_WRITE``).

    Specialised on the listening socket (:class:`Listener`: accept until EAGAIN), a client
    :class:`Connection` (write what is queued when writable; read and hand the bytes to its
    protocol when readable) and the :class:`Waker` (run callables handed over with
    ``call_soon_threadsafe``). Register an object of your own with
    ``server.register(sock, obj, events)`` and add a method for its class.
    """


@generic
def buffer_input(conn):
    """Read what is ready on ``conn`` into its buffer (``conn.buf.data``); return the byte
    count: 0 at EOF (or a reset), -1 when nothing was ready after all."""


@generic
def connection_made(server, conn):
    """A connection was accepted: give it its protocol (``conn.protocol``) and input buffer
    (``conn.buf``). The HTTP server's method makes an
    :class:`~clos_web.http.connection.HTTPConnection`."""


@generic
def data_received(protocol, conn):
    """Bytes arrived in ``conn.buf`` for ``protocol``: act on them (HTTP parses requests and
    answers them)."""


@generic
def output_drained(protocol, conn):
    """``conn``'s output queue went back under the cap (or emptied) after the protocol was
    waiting for it: go on (HTTP parses the requests it held back)."""


@generic
def deadline_passed(protocol, conn):
    """``conn.deadline`` passed while the connection is open: the protocol decides (HTTP: 408
    for a late request, close an idle keep-alive connection, a stream's idle deadline...)."""


@generic
def connection_lost(protocol, conn):
    """``conn`` closed, whatever the reason (the client left, a slow consumer, the server
    stopping): release what the protocol holds."""


@generic
def shutdown(protocol, conn):
    """The server is stopping: wind ``conn`` down gracefully (finish the answer in flight,
    end a stream cleanly) or close it."""


@generic
def serving(server):
    """``server``'s loop is about to run, on its own thread (``current_loop()`` is it): a
    method may start what watches it (:mod:`clos_web.ops.metrics` starts its probes here)."""


@serving.dispatch
def serving_nothing(server: object):
    return None


@generic
def refuse_connection(server, sock):
    """A connection over its client's cap (``Limits.max_connections_per_client``): say so
    (HTTP answers a short 503), then it is closed."""


@refuse_connection.dispatch
def refuse_connection_quietly(server: object, sock: object):
    return None


# --------------------------------------------------------------------------------------------
# The loop


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


@attrs.define(slots=False, eq=False, repr=False, kw_only=True)
class Loop:
    """One event loop: a poller (``selector``; ``poller`` is its class, :data:`DefaultPoller`
    unless given), its listening sockets, its connections, timers.

    ``limits`` is any object with ``output_cap``, ``max_connections``,
    ``max_connections_per_client`` and ``linger_timeout`` (the HTTP server passes its
    :class:`~clos_web.http.parser.Limits`). ``start()`` runs the loop on a thread and returns
    at once (REPL, tests); ``serve_forever()`` runs it on the calling thread; ``stop(timeout)``
    stops accepting, lets the protocols wind down and closes everything. ``listen(host, port)``
    adds a listening socket: its connections are served as the first one's.
    """

    host: str = "127.0.0.1"
    port: int = 0
    limits: Any = None
    backlog: int = 4096
    reuse_port: bool = False
    freeze_gc: bool = True
    gc_full_every: float = 300.0

    poller: Any = None  # the poller's class (DefaultPoller: EpollPoller on Linux)
    selector: Any = None  # the poller itself, made by bind()
    listeners: list = attrs.field(factory=list)  # the first is bind()'s (self.listener)
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
    # counted as they happen, read by clos_web.ops.metrics: an integer add each
    bytes_sent: int = 0              # every byte the kernel took from the output queues
    slow_consumers_closed: int = 0   # streams closed by the slow-consumer policy

    def __repr__(self) -> str:
        more = "".join(f", {h}:{p}" for h, p, *_ in (lst.address for lst in self.listeners[1:]))
        return (f"<{type(self).__name__} {self.host}:{self.port}{more} conns={len(self.conns)}"
                f"{' stopping' if self.stopping else ''}>")

    @property
    def listener(self) -> Listener | None:
        """The first listening socket (``bind()``'s), ``None`` before ``bind()``."""
        return self.listeners[0] if self.listeners else None

    # -- set-up ------------------------------------------------------------------------------

    def bind(self) -> "Loop":
        """Create the selector, the listening socket and the waker (done by start/serve)."""
        if self.selector is not None:
            return self
        sock = _listening_socket(self.host, self.port, self.reuse_port, self.backlog)
        self.selector = (self.poller or DefaultPoller)()
        listener = Listener(sock, self, sock.getsockname())
        self.port = listener.address[1]
        self.listeners.append(listener)
        self.selector.register(sock, EVENT_READ, listener)
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

    def listen(self, host: str | None = None, port: int = 0,
               reuse_port: bool = False) -> Listener:
        """Listen on ``host:port`` as well (``host``: the server's by default; port 0 picks a
        free one, see the result's ``address``); ``SO_REUSEPORT`` when ``reuse_port``. Its
        connections are served as the first listener's: the same protocol, loop, limits and
        connection cap (at the cap every listener pauses); it is closed at stop. Binds the
        server first if need be. Call it before serving or on the loop thread; from another
        thread the socket is bound there (an ``OSError`` when the port cannot be had raises
        there) and joins the loop on its next turn. Returns the :class:`Listener`.

        >>> from types import SimpleNamespace
        >>> server = Loop(limits=SimpleNamespace(max_connections=8))
        >>> extra = server.listen("127.0.0.1", 0)
        >>> server.listeners == [server.listener, extra], extra.address[1] != server.port
        (True, True)
        >>> server.stop()  # bound, never run: every socket closed
        """
        if self.stopped.is_set() or self.stopping:
            raise RuntimeError(f"{self!r} is stopped")
        self.bind()
        sock = _listening_socket(self.host if host is None else host, port, reuse_port,
                                 self.backlog)
        listener = Listener(sock, self, sock.getsockname())
        if self._ident is None or threading.get_ident() == self._ident:
            self._add_listener(listener)
        else:
            self.call_soon_threadsafe(self._add_listener, listener)
        return listener

    def _add_listener(self, listener: Listener) -> None:
        if self.stopping:  # (handed over from another thread as the server stopped)
            listener.sock.close()
            return
        self.listeners.append(listener)
        if self.accepting:
            self.selector.register(listener.sock, EVENT_READ, listener)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "Loop":
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
        accepts, answers in flight finish (up to ``stop_timeout`` seconds), every stream ends
        cleanly (its last chunk, so a client sees a complete response and reconnects); a
        second signal closes what is left at once.
        """
        self.bind()
        self._ident = threading.get_ident()
        _current.loop = self
        if self.freeze_gc:
            _freeze_gc()
            self.add_sweeper(_GcSweeper(self.gc_full_every))
        restore = self._catch_signals(stop_timeout) if stop_on_signals else {}
        try:
            serving(self)
        except Exception:
            log.exception("serving failed")
        try:
            self._run()
        finally:
            for signum, handler in restore.items():
                signal.signal(signum, handler)
            self._teardown()
            self.stopped.set()

    def _catch_signals(self, timeout: float) -> dict:
        """Install SIGINT/SIGTERM handlers that stop gracefully; return the old handlers."""

        asked = []

        def on_signal(signum, frame):
            if asked:  # the second signal: close what is left now
                self._callbacks.append((self._begin_stop, (0.0,)))
            else:
                log.info("%s: stopping (again to close at once)", signal.Signals(signum).name)
                self._callbacks.append((self._begin_stop, (timeout,)))
            asked.append(signum)
            try:
                self.waker.wsock.send(b"\0")
            except OSError:
                pass

        old = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            old[signum] = signal.signal(signum, on_signal)
        return old

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, let answers in flight finish (up to ``timeout`` s), end streams
        cleanly, close everything."""
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
        heapq.heappush(self._later, (self.now + delay, self._later_seq, fn, args))

    def add_sweeper(self, fn: Callable[[float], None]) -> None:
        """Call ``fn(now)`` about once a second on the loop (heartbeats and the like)."""
        self._sweepers.append(fn)

    def set_deadline(self, conn: Connection, when: float) -> None:
        """Give ``conn`` a deadline (``inf`` for none); when it passes, the loop calls
        ``deadline_passed(conn.protocol, conn)``. Cheap: the connection changes bucket (one
        per second, a dict: out of one and into another in O(1)) only when it is due earlier;
        a later deadline is seen when its bucket comes (the sweep moves it on). A deadline
        already past fires at the next sweep."""
        conn.deadline = when
        if when == INFINITY:
            return
        b = int(when) + 1
        old = conn.bucket
        if old is None or b < old:
            if b <= self._swept:  # past: its own bucket has been swept
                b = self._swept + 1
                if b == old:
                    return
            if old is not None:
                self._leave_bucket(conn)
            buckets = self._buckets
            bucket = buckets.get(b)
            if bucket is None:
                buckets[b] = {conn: None}
            else:
                bucket[conn] = None
            conn.bucket = b

    def _leave_bucket(self, conn: Connection) -> None:
        """Take ``conn`` out of its deadline's bucket (moving earlier, or closed)."""
        waiting = self._buckets.get(conn.bucket)
        if waiting is not None:  # (None: the sweep has taken the bucket already)
            waiting.pop(conn, None)
        conn.bucket = None

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
                conn.bucket = None
                if conn.state is CLOSED:
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
        if conn.state is LINGER:
            self.close(conn)
            return
        conn.deadline = INFINITY
        try:
            deadline_passed(conn.protocol, conn)
        except Exception:
            log.exception("deadline_passed failed")
            self.close(conn)

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
            for ready, mask in events:
                try:
                    process_ready(ready, self, mask)
                except Exception:
                    # a bug or a surprise on one connection never takes the loop down
                    log.exception("process_ready failed")
                    if ready.__class__ is Connection:
                        self.close(ready)
            events = ready = None  # (not held while select waits: a closed one goes now)
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
        deadline = self.now + timeout  # (the loop's time this turn: 0 s stops this turn)
        if self.stopping:  # asked again (a second signal, another stop): sooner, never later
            self._stop_deadline = min(self._stop_deadline, deadline)
            return
        self.stopping = True
        self._stop_deadline = deadline
        # One last turn over what is ready now: connections the kernel completed wait in the
        # listening socket's queue, and closing it would reset them (with SO_REUSEPORT no
        # other process sees them); requests may sit unread on idle connections, and closing
        # those would reset them too. Take them in and read: what arrived is answered. The
        # same for every listener.
        for listener in self.listeners:
            if self.accepting:  # (not at the connection cap)
                self.accept(listener)
        for ready, mask in self.selector.select(0, len(self.conns) + 16):
            if not isinstance(ready, Listener):
                try:
                    process_ready(ready, self, mask)
                except Exception:
                    log.exception("process_ready failed")
                    if ready.__class__ is Connection:
                        self.close(ready)
        self._pause_accepting()
        for listener in self.listeners:
            listener.sock.close()
        for conn in list(self.conns):
            try:
                shutdown(conn.protocol, conn)
            except Exception:
                log.exception("shutdown failed")
                self.close(conn)

    def _teardown(self) -> None:
        if self.freeze_gc:
            gc.unfreeze()  # frozen objects go back to the collector's sight
        for conn in list(self.conns):
            self.close(conn)
        try:
            self.selector.close()
        except Exception:
            pass
        for listener in self.listeners:
            listener.sock.close()
        self.waker.rsock.close()
        self.waker.wsock.close()

    # -- objects of your own in the selector -------------------------------------------------

    def register(self, sock, ready, events: int = EVENT_READ) -> None:
        """Watch ``sock`` (non-blocking, yours to close) for ``events``: when it is ready the
        loop calls ``process_ready(ready, server, mask)``. Loop thread only (from another
        thread: ``call_soon_threadsafe(server.register, ...)``)."""
        self.selector.register(sock, events, ready)

    def modify(self, sock, ready, events: int) -> None:
        """Change what ``sock`` is watched for (``EVENT_READ``, ``EVENT_WRITE`` or both)."""
        self.selector.modify(sock, events, ready)

    def unregister(self, sock) -> None:
        """Stop watching ``sock``."""
        self.selector.unregister(sock)

    # -- accepting ---------------------------------------------------------------------------

    def _pause_accepting(self) -> None:
        """Stop watching every listener (at the connection cap, out of descriptors, stopping):
        new connections wait in the kernel's queues."""
        if self.accepting:
            self.accepting = False
            for listener in self.listeners:
                try:
                    self.selector.unregister(listener.sock)
                except (KeyError, ValueError):
                    pass

    def _resume_accepting(self) -> None:
        self._accept_retry = False
        if not self.accepting and not self.stopping and len(self.conns) < self.max_connections:
            self.accepting = True
            for listener in self.listeners:
                self.selector.register(listener.sock, EVENT_READ, listener)

    def accept(self, listener: Listener) -> None:
        """Accept connections on ``listener`` until EAGAIN, the connection cap, or descriptor
        exhaustion."""
        sock = listener.sock
        conns = self.conns
        per_client = self.limits.max_connections_per_client
        # socket.accept() is _accept() and a Python-level socket around the descriptor, which
        # reads the family and type back as enums: two enum constructions and three Python
        # frames per connection. The accepted socket is the base type (socket.SocketType, what
        # socket.socket derives from, with every method a connection uses).
        accept_fd = sock._accept
        family, kind, proto = listener.accepts
        for _ in range(256):
            if len(conns) >= self.max_connections:
                self._pause_accepting()  # resumed when a connection closes
                return
            try:
                fd, addr = accept_fd()
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
            csock = _Socket(family, kind, proto, fd)
            csock.setblocking(False)
            if addr.__class__ is tuple and len(addr) == 2:
                # (the host's text shared by its connections, not a copy each: 58 bytes)
                addr = (_intern(addr[0]), addr[1])
            if per_client is not None and not self._count_client(addr, per_client):
                try:
                    refuse_connection(self, csock)
                except Exception:
                    log.exception("refuse_connection failed")
                csock.close()
                continue
            if not _NODELAY_INHERITED:
                try:
                    csock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                except OSError:
                    pass
            conn = Connection(csock, self, addr)
            connection_made(self, conn)
            conns.add(conn)
            self.selector.register(csock, EVENT_READ, conn)

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

    # -- reading -------------------------------------------------------------------------------

    def pause_reading(self, conn: Connection) -> None:
        """Read nothing more from ``conn`` until :meth:`resume_reading`."""
        conn.reading = PAUSED
        self._update_interest(conn)

    def resume_reading(self, conn: Connection, always: bool = False) -> None:
        """Read from ``conn`` again: while its output queue is under the cap (backpressure),
        or ``always`` (a stream, whose input only tells that the client left)."""
        conn.reading = ALWAYS if always else NORMAL
        if not conn.events & EVENT_READ:
            self._update_interest(conn)
        # (already reading: nothing to change now. What is queued is sent by the flush that
        # follows, which sets the write interest only if the socket does not take it all: a
        # new stream's head costs no epoll_ctl round trip before its send)

    # -- writing -----------------------------------------------------------------------------

    def enqueue(self, conn: Connection, data) -> None:
        """Append ``data`` (bytes, or a :class:`FileSegment`) to ``conn``'s output queue;
        :meth:`flush` sends it."""
        if conn.state is not OPEN or conn.close_after:
            return
        if conn.out:
            conn.out.append(data)
        else:
            conn.out = [data]
        conn.out_bytes += len(data)

    def push(self, conn: Connection, data: bytes, burst: bool = False) -> bool:
        """Send ``data`` on a long-lived stream under the slow-consumer policy: a connection
        whose queue would pass ``limits.output_cap`` is closed (its client reconnects and
        resumes from history), so the queue holds at most the cap (or what is left of one
        larger message). ``burst``: ``data`` is several messages joined, so what the socket
        does not take must fit the cap as they would have one by one. The common case,
        nothing queued, is one ``send``. Returns False when the connection is (now) closed."""
        if conn.out or conn.state is not OPEN or conn.close_after:
            return self._push_queued(conn, data)
        try:
            sent = conn.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.close(conn)
            return False
        self.bytes_sent += sent
        if sent != len(data):
            rest = memoryview(data)[sent:]
            if burst and len(rest) > self.limits.output_cap:
                self._close_slow(conn)
                return False
            conn.out = [rest]
            conn.out_bytes += len(rest)
            self._update_interest(conn)
        return True

    def push_each(self, conns, data: bytes, burst: bool = False) -> None:
        """:meth:`push` the same ``data`` to every connection of ``conns``, in one loop: the
        fan-out of one message, or of a burst of them joined (``burst``), one ``send`` per
        idle connection."""
        size = len(data)
        total = 0
        cap = self.limits.output_cap
        for conn in conns:
            if conn.out or conn.state is not OPEN or conn.close_after:
                self._push_queued(conn, data)
                continue
            try:
                sent = conn.sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self.close(conn)
                continue
            total += sent
            if sent != size:
                rest = memoryview(data)[sent:]
                if burst and size - sent > cap:
                    self._close_slow(conn)
                    continue
                conn.out = [rest]
                conn.out_bytes += len(rest)
                self._update_interest(conn)
        self.bytes_sent += total

    def _push_queued(self, conn: Connection, data) -> bool:
        if conn.state is not OPEN or conn.close_after:
            return False
        if conn.out_bytes + len(data) > self.limits.output_cap:
            self._close_slow(conn)
            return False
        self.enqueue(conn, data)
        return True

    def _close_slow(self, conn: Connection) -> None:
        """The slow-consumer policy's end: close ``conn``, count it."""
        log.info("closing slow consumer %s (%d bytes queued)", conn.addr, conn.out_bytes)
        self.slow_consumers_closed += 1
        self.close(conn)

    def close_when_sent(self, conn: Connection) -> None:
        """Close ``conn`` once its output is sent (our side is shut first, and the input
        drained briefly, so the client reads everything before the close)."""
        conn.close_after = True
        self.flush(conn)

    def flush(self, conn: Connection) -> None:
        """Send as much of the output queue as the socket takes; wait for write-readiness."""
        out = conn.out
        sock = conn.sock
        was_over = conn.out_bytes > self.limits.output_cap
        while out:
            first = out[0]
            try:
                if first.__class__ is FileSegment:
                    sent = first.send(sock)
                    self.bytes_sent += sent
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
            self.bytes_sent += sent
            if sent == conn.out_bytes:  # the whole queue went (the common case)
                conn.out_bytes = 0
                conn.out = out = ()
                break
            conn.out_bytes -= sent
            if not drop_sent(out, sent):
                break  # a partial send: the socket is full
        if conn.close_after and not out:
            self._linger(conn)
            return
        if out or conn.events != EVENT_READ or conn.reading is not NORMAL:
            self._update_interest(conn)  # (all sent and reading as usual: nothing to change)
        if was_over and conn.out_bytes <= self.limits.output_cap and conn.state is OPEN:
            # the protocol held input back while the client did not read: go on
            self.call_soon_threadsafe(_drained, conn)

    def _update_interest(self, conn: Connection) -> None:
        """Register for what ``conn`` needs: write while output waits; read as it wants."""
        if conn.state is CLOSED:
            return
        events = EVENT_WRITE if conn.out else 0
        reading = conn.reading
        if conn.state is LINGER or reading is ALWAYS or (
                reading is NORMAL and conn.out_bytes <= self.limits.output_cap):
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
        if conn.state is not OPEN:
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
        """Close ``conn`` at once and forget it (idempotent); its protocol hears of it
        (``connection_lost``)."""
        if conn.state is CLOSED:
            return
        conn.state = CLOSED
        try:
            connection_lost(conn.protocol, conn)
        except Exception:
            log.exception("connection_lost failed")
        if conn.bucket is not None:  # out of its deadline's bucket now, not when that comes
            self._leave_bucket(conn)
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
        conn.out = ()
        conn.out_bytes = 0
        if conn.buf is not None and conn.buf is not DISCARD:
            conn.buf.data = bytearray()
        if conn in self.conns:
            self.conns.discard(conn)
            if self.limits.max_connections_per_client is not None:
                self._uncount_client(conn.addr)
        if not self.accepting and not self._accept_retry and not self.stopping:
            self._resume_accepting()


def _drained(conn: Connection) -> None:
    if conn.state is OPEN:
        output_drained(conn.protocol, conn)


def _freeze_gc() -> None:
    """Collect once, then freeze what exists (modules, classes, the app): see _GcSweeper."""
    gc.collect()
    gc.freeze()


class _GcSweeper:
    """The loop's garbage-collection policy (``Loop.freeze_gc``, on by default).

    Python's full collections walk every tracked object; with 10,000 subscribers each one
    paused the loop for 30-70 ms, every few seconds under load: that was the whole p99 of
    push delivery (27 ms; 0.5 ms with this policy, measured by bench/push_bench.py). So once a
    second the young generations are collected and the survivors frozen (``gc.freeze``: out of
    the collector's sight, still freed by reference counting), and every ``every`` seconds
    (``Loop.gc_full_every``, 300 by default) everything is unfrozen and collected once.
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


# --------------------------------------------------------------------------------------------
# process_ready methods


@process_ready.dispatch
def process_ready_listener(ready: Listener, server: Loop, events):
    server.accept(ready)


@process_ready.dispatch
def process_ready_connection(ready: Connection, server: Loop, events):
    if events & EVENT_WRITE:
        server.flush(ready)
        if not events & EVENT_READ or ready.state is CLOSED:
            return
    n = buffer_input(ready)
    if n == 0:
        server.close(ready)  # EOF or reset: nothing more can come in, nothing to answer
    elif n > 0:
        if ready.state is LINGER:
            ready.buf.data.clear()
        else:
            data_received(ready.protocol, ready)


@process_ready.dispatch
def process_ready_waker(ready: Waker, server: Loop, events):
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


# The fallbacks: a connection without a protocol of its own reads and drops its input.

@data_received.dispatch
def data_received_drop(protocol: object, conn: object):
    conn.buf.data.clear()


@connection_lost.dispatch
def connection_lost_nothing(protocol: object, conn: Connection):
    return None


@deadline_passed.dispatch
def deadline_passed_close(protocol: object, conn: Connection):
    conn.server.close(conn)


@shutdown.dispatch
def shutdown_close(protocol: object, conn: Connection):
    conn.server.close(conn)


@output_drained.dispatch
def output_drained_nothing(protocol: object, conn: Connection):
    return None


__all__ = [
    "Loop", "Listener", "Connection", "Input", "DISCARD", "EpollPoller", "SelectorsPoller",
    "DefaultPoller", "Waker", "FileSegment", "Link", "Reading",
    "process_ready", "buffer_input", "connection_made", "data_received", "output_drained",
    "deadline_passed", "connection_lost", "shutdown", "refuse_connection", "serving",
    "raise_fd_limit",
    "EVENT_READ", "EVENT_WRITE",
]
