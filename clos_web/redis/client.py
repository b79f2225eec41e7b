"""Non-blocking Redis clients whose sockets live in a clos_web server's own selector loop.

The loop never waits for Redis: the connection is made with ``connect_ex`` and completed on
write-readiness, commands go through an output queue flushed when the socket takes them, and
replies are parsed incrementally (:mod:`clos_web.redis.resp`) as bytes arrive. Every callback
runs on the loop thread.

:class:`RedisClient` is one pipelined command connection: many commands are sent before their
replies come back, and replies are matched to callbacks in order::

    client = RedisClient(server, "redis://:secret@127.0.0.1:6379/2",
                         on_connect=lambda: print("up"), on_disconnect=print)
    client.start()                                   # from any thread; returns at once
    # on the loop thread (a handler, a callback, a timer):
    client.call(print, "INCR", "hits")               # later: print(1)
    client.eval(print, "return redis.call('GET', KEYS[1])", ["hits"], [])
    # from any other thread (a worker, the REPL, a test):
    client.submit("GET", "hits").result(timeout=1)   # b'1'
    client.submit_eval("return 1").result(timeout=1) # 1

A callback gets the reply (``bytes``, ``int``, ``None``, a ``list``) or an exception instance:
:class:`~clos_web.redis.resp.ReplyError` (Redis said no), :class:`RedisUnavailable` (not
connected, the connection broke before the reply, or the backlog is full) or
:class:`RedisTimeout` (no reply within the call's ``timeout``: the connection is then reset, so
a stalled Redis fails its callers within their deadlines instead of queueing more behind it).
While disconnected a call fails at once; the client reconnects by itself with exponential
backoff and jitter (``backoff=(first, most)`` seconds) until :meth:`~RedisClient.close`, sends
AUTH and SELECT from the URL and a PING, and then calls ``on_connect()``. Memory is bounded:
``max_pending`` replies awaited, ``output_cap`` bytes queued (past them a call fails at once,
"backlog full"), ``max_reply`` bytes for one reply (a bigger one resets the connection).

:class:`RedisPubSub` is one subscriber connection: ``subscribe``/``unsubscribe`` channels,
``on_message(channel, data)`` for each message. After a reconnect it subscribes again to every
channel it had, waits for Redis to confirm, then calls ``on_connect()``: from then on nothing
published is missed, so that is the moment to look up what was published while it was away.

The clients' work on the loop goes through the generic functions :func:`redis_ready`,
:func:`redis_reply` and :func:`redis_lost` (one method per client class), with the loop's
``process_ready`` method for :class:`RedisConnection`.

Why not redis-py: its asyncio client needs an asyncio event loop (clos_web has its own
selectors loop) and its synchronous client blocks the calling thread on every reply, which
on the loop thread would stall every HTTP connection behind one slow Redis.
"""

from __future__ import annotations

import concurrent.futures
import enum
import errno
import hashlib
import heapq
import logging
import os
import random
import socket
import threading
import urllib.parse
from collections import deque
from typing import Any, Callable

import attrs

from ..clos import generic
from ..loop.server import EVENT_READ, EVENT_WRITE, drop_sent, process_ready
from .resp import (
    DEFAULT_MAX_REPLY, NOT_READY, ProtocolError, RedisError, Reader, ReplyError, encode_command,
)

__all__ = [
    "RedisClient", "RedisPubSub", "RedisConnection", "RedisAddress", "RedisUnavailable",
    "RedisTimeout", "parse_url", "redis_ready", "redis_reply", "redis_lost",
]

log = logging.getLogger("clos_web.redis")

INFINITY = float("inf")
_CONNECTING = (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN, errno.EALREADY)


class RedisUnavailable(RedisError):
    """Redis cannot answer this call: not connected (``"redis at HOST:PORT is unreachable:
    ..."``), the connection broke before the reply, the client is closed, or its backlog is
    full."""


class RedisTimeout(RedisUnavailable):
    """No reply within the call's ``timeout``; the connection was reset."""


# --------------------------------------------------------------------------------------------
# Where Redis is


@attrs.frozen
class RedisAddress:
    """What a ``redis://`` URL says.

    >>> parse_url("redis://:s%40cret@10.0.0.5:6380/2")
    RedisAddress(host='10.0.0.5', port=6380, db=2, username=None, password='s@cret')
    """

    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = None

    @property
    def hostport(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_url(url: str) -> RedisAddress:
    """Parse ``redis://[[username]:password@]host[:port][/db]`` (defaults 127.0.0.1, 6379, 0).

    >>> parse_url("redis://localhost")
    RedisAddress(host='localhost', port=6379, db=0, username=None, password=None)
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "redis":
        raise ValueError(f"a Redis URL starts with redis://, not {url!r}")
    try:
        port = parts.port or 6379
    except ValueError:
        raise ValueError(f"bad port in Redis URL {url!r}") from None
    path = parts.path.strip("/")
    if path and not (path.isascii() and path.isdigit()):
        raise ValueError(f"the database in a Redis URL is a number, not {path!r}")
    unquote = urllib.parse.unquote
    return RedisAddress(parts.hostname or "127.0.0.1", port, int(path or 0),
                        unquote(parts.username) if parts.username else None,
                        unquote(parts.password) if parts.password is not None else None)


# --------------------------------------------------------------------------------------------
# The connection in the selector


class Phase(enum.Enum):
    """Where a :class:`RedisConnection` is in its life."""

    CONNECTING = "connecting"  # the TCP connect is in progress
    HANDSHAKE = "handshake"    # AUTH / SELECT / PING sent, replies awaited
    READY = "ready"            # the owner's commands flow
    CLOSED = "closed"


CONNECTING, HANDSHAKE, READY, CLOSED = Phase


@attrs.define(slots=True, eq=False, repr=False)
class RedisConnection:
    """One socket to Redis, registered in the server's selector: its owner (a
    :class:`RedisClient` or :class:`RedisPubSub`), reply reader and output queue."""

    sock: socket.socket
    owner: Any
    reader: Any
    phase: Phase = CONNECTING
    out: list = attrs.field(factory=list)
    out_bytes: int = 0
    events: int = 0
    handshake: int = 0  # handshake replies still awaited
    flush_due: bool = False

    def __repr__(self) -> str:
        return f"<RedisConnection {self.phase.name} out={self.out_bytes}>"


@generic
def redis_ready(owner, conn):
    """``conn`` is connected and past its handshake (AUTH, SELECT, PING answered): the owner
    starts using it (a client calls ``on_connect``; a subscriber subscribes again)."""


@generic
def redis_reply(owner, conn, reply):
    """One reply (or pushed message) arrived on ``conn``, which is ``owner``'s."""


@generic
def redis_lost(owner, conn, exc):
    """``conn`` broke or was closed (``exc`` says why): the owner fails or forgets what
    waited on it. It reconnects afterwards unless closed."""


@process_ready.dispatch
def process_ready_redis(ready: RedisConnection, server: object, events):
    owner = ready.owner
    try:
        if ready.phase is CONNECTING:
            owner._connected(ready)
            return
        if events & EVENT_WRITE:
            owner._flush(ready)
        if events & EVENT_READ and ready.phase is not CLOSED:
            owner._read(ready)
    except Exception as exc:  # a bug here must not leave a half-used connection behind
        log.exception("%r failed", owner)
        owner._break(ready, f"internal error ({exc!r})")


def check_backoff(backoff) -> None:
    """Refuse reconnection delays that are not ``(first, most)`` with ``0 < first <= most``."""
    first, most = backoff
    if not 0 < first <= most:
        raise ValueError(f"backoff is (first, most) with 0 < first <= most, not {backoff!r}")


def close_on_loop(owner) -> None:
    """Run ``owner._close_now()`` on its loop: now when this is the loop's thread (or the loop
    never ran, or stopped), else there, waiting at most 5 s for it."""
    ident = owner._loop_ident
    if ident is None or ident == threading.get_ident() or owner.server.stopped.is_set():
        owner._close_now()
    else:
        done = threading.Event()
        owner.server.call_soon_threadsafe(owner._close_now, done)
        done.wait(5)


def _deliver(callback: Callable, value) -> None:
    try:
        callback(value)
    except Exception:
        log.exception("a Redis callback failed")


def _future_callback(future: concurrent.futures.Future) -> Callable:
    def done(reply):
        if future.done():  # cancelled by its owner
            return
        if isinstance(reply, RedisError):
            future.set_exception(reply)
        else:
            future.set_result(reply)

    return done


# --------------------------------------------------------------------------------------------
# What both clients share: connecting, the handshake, sending, reading, reconnecting


@attrs.define(slots=True, eq=False, repr=False)
class _Endpoint:
    server: Any
    url: str = "redis://127.0.0.1:6379/0"
    connect_timeout: float = attrs.field(default=2.0, kw_only=True)
    backoff: tuple = attrs.field(default=(0.05, 2.0), kw_only=True)
    on_connect: Callable | None = attrs.field(default=None, kw_only=True)
    on_disconnect: Callable | None = attrs.field(default=None, kw_only=True)
    output_cap: int = attrs.field(default=16 * 1024 * 1024, kw_only=True)
    max_reply: int = attrs.field(default=DEFAULT_MAX_REPLY, kw_only=True)
    address: RedisAddress = attrs.field(init=False)
    _conn: RedisConnection | None = attrs.field(default=None, init=False)
    _started: bool = attrs.field(default=False, init=False)
    _closed: bool = attrs.field(default=False, init=False)
    _attempt: int = attrs.field(default=0, init=False)
    _why: str = attrs.field(default="not connected yet", init=False)
    _loop_ident: int | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        self.address = parse_url(self.url)
        check_backoff(self.backoff)

    def _state(self) -> str:
        if self._closed:
            return "closed"
        conn = self._conn
        if conn is None:
            return "disconnected"
        return "connected" if self.connected else "connecting"

    @property
    def connected(self) -> bool:
        """True while the connection is up and usable (after the handshake)."""
        conn = self._conn
        return conn is not None and conn.phase is READY

    # -- life ----------------------------------------------------------------------------------

    def start(self):
        """Connect (from any thread; returns at once). The client keeps reconnecting on its
        own until :meth:`close`."""
        if not self._started and not self._closed:
            self._started = True
            self.server.call_soon_threadsafe(self._connect)
        return self

    def close(self) -> None:
        """Close the connection and stop reconnecting (idempotent, from any thread; waits at
        most 5 s for the loop to do it). Calls waiting for replies get
        :class:`RedisUnavailable`; ``on_disconnect`` is not called."""
        if self._closed:
            return
        self._closed = True
        close_on_loop(self)

    def _close_now(self, done: threading.Event | None = None) -> None:
        if self._conn is not None:
            self._break(self._conn, "the client is closed")
        if done is not None:
            done.set()

    def _unavailable(self) -> RedisUnavailable:
        if self._closed:
            return RedisUnavailable(f"redis at {self.address.hostport}: the client is closed")
        return RedisUnavailable(f"redis at {self.address.hostport} is unreachable: {self._why}")

    def _check_thread(self) -> None:
        ident = self._loop_ident
        if ident is not None and ident != threading.get_ident():
            raise RuntimeError(f"{type(self).__name__}: call this on the loop thread "
                               f"(from another thread: submit, or "
                               f"server.call_soon_threadsafe)")

    # -- connecting ----------------------------------------------------------------------------

    def _connect(self) -> None:
        self._loop_ident = threading.get_ident()
        if self._closed or self._conn is not None:
            return
        host, port = self.address.host, self.address.port
        for family in (socket.AF_INET, socket.AF_INET6):
            try:
                socket.inet_pton(family, host)
            except OSError:
                continue
            self._open(family, (host, port))
            return
        # a name: resolving it may block (DNS), so not on the loop thread
        threading.Thread(target=self._resolve, name=f"resolve {host}", daemon=True).start()

    def _resolve(self) -> None:
        try:
            result = [(family, sockaddr) for family, _, _, _, sockaddr in socket.getaddrinfo(
                self.address.host, self.address.port, type=socket.SOCK_STREAM)]
        except OSError as exc:
            result = exc
        self.server.call_soon_threadsafe(self._resolved, result)

    def _resolved(self, result) -> None:
        if self._closed or self._conn is not None:
            return
        if isinstance(result, OSError) or not result:
            self._why = f"cannot resolve {self.address.host} ({result})"
            self._reconnect_later()
        else:  # each attempt tries the next address (localhost: ::1, then 127.0.0.1)
            self._open(*result[self._attempt % len(result)])

    def _open(self, family: int, sockaddr) -> None:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        conn = RedisConnection(sock, self, Reader(self.max_reply))
        self._conn = conn
        err = sock.connect_ex(sockaddr)
        if err and err not in _CONNECTING:
            self._break(conn, os.strerror(err))
            return
        conn.events = EVENT_WRITE
        self.server.register(sock, conn, EVENT_WRITE)
        self.server.call_later(self.connect_timeout, self._connect_deadline, conn)

    def _connect_deadline(self, conn: RedisConnection) -> None:
        if conn.phase is CONNECTING or conn.phase is HANDSHAKE:
            self._break(conn, f"no answer to connecting within {self.connect_timeout} s")

    def _connected(self, conn: RedisConnection) -> None:
        err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._break(conn, os.strerror(err))
            return
        conn.phase = HANDSHAKE
        address = self.address
        commands = []
        if address.password is not None:
            commands.append(("AUTH", address.username, address.password) if address.username
                            else ("AUTH", address.password))
        if address.db:
            commands.append(("SELECT", address.db))
        commands.append(("PING",))  # connected means Redis answers, not that a kernel accepted
        conn.handshake = len(commands)
        self._send(conn, b"".join(encode_command(*c) for c in commands))
        self._flush(conn)

    def _handshake_reply(self, conn: RedisConnection, reply) -> None:
        if isinstance(reply, ReplyError):
            self._break(conn, f"the handshake failed: {reply}")
            return
        conn.handshake -= 1
        if conn.handshake == 0:
            conn.phase = READY
            self._attempt = 0
            redis_ready(self, conn)

    def _call_on_connect(self) -> None:
        if self.on_connect is not None:
            try:
                self.on_connect()
            except Exception:
                log.exception("on_connect failed")

    # -- breaking and reconnecting -------------------------------------------------------------

    def _break(self, conn: RedisConnection, reason: str, error=RedisUnavailable) -> None:
        """Close ``conn`` (idempotent) for ``reason``: the owner hears of it (with
        ``error("redis at HOST:PORT: reason")``), then it reconnects unless closed."""
        if conn.phase is CLOSED:
            return
        exc = error(f"redis at {self.address.hostport}: {reason}")
        was_ready = conn.phase is READY
        conn.phase = CLOSED
        if conn.events:
            try:
                self.server.unregister(conn.sock)
            except (KeyError, ValueError, OSError, AttributeError):
                pass  # (the server's selector may be gone: the server stopped)
            conn.events = 0
        conn.sock.close()
        conn.out.clear()
        conn.out_bytes = 0
        if conn is self._conn:
            self._conn = None
        if not self._closed:
            self._why = reason
        try:
            redis_lost(self, conn, exc)
        except Exception:
            log.exception("redis_lost failed")
        if was_ready and not self._closed and self.on_disconnect is not None:
            try:
                self.on_disconnect(exc)
            except Exception:
                log.exception("on_disconnect failed")
        if not self._closed:
            if was_ready:
                log.warning("%r: %s", self, exc)
            self._reconnect_later()

    def _reconnect_later(self) -> None:
        first, most = self.backoff
        cap = min(most, first * 2 ** min(self._attempt, 32))
        self._attempt += 1
        delay = random.uniform(max(first, cap / 2), cap)  # jitter: processes do not stampede
        self.server.call_later(delay, self._connect)

    # -- sending -------------------------------------------------------------------------------

    def _send(self, conn: RedisConnection, data: bytes) -> None:
        """Queue ``data``; the queue is flushed once per loop turn (pipelined calls made in
        one turn go out in one ``sendmsg``)."""
        conn.out.append(data)
        conn.out_bytes += len(data)
        if not conn.flush_due:
            conn.flush_due = True
            self.server.call_soon_threadsafe(self._flush, conn)

    def _flush(self, conn: RedisConnection) -> None:
        conn.flush_due = False
        if conn.phase is CLOSED or conn.phase is CONNECTING:
            return
        out = conn.out
        sock = conn.sock
        while out:
            try:
                sent = sock.send(out[0]) if len(out) == 1 else sock.sendmsg(out[:512])
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self._break(conn, f"connection lost ({exc})")
                return
            conn.out_bytes -= sent
            if not drop_sent(out, sent):
                break  # the socket is full
        events = EVENT_READ | EVENT_WRITE if out else EVENT_READ
        if conn.events != events:
            self.server.modify(conn.sock, conn, events)
            conn.events = events

    # -- reading -------------------------------------------------------------------------------

    def _read(self, conn: RedisConnection) -> None:
        scratch = self.server.scratch
        try:
            n = conn.sock.recv_into(scratch)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._break(conn, f"connection lost ({exc})")
            return
        if n == 0:
            self._break(conn, "connection closed by Redis")
            return
        reader = conn.reader
        try:
            reader.feed(scratch, 0, n)
            while conn.phase is not CLOSED:
                reply = reader.gets()
                if reply is NOT_READY:
                    break
                if conn.phase is HANDSHAKE:
                    self._handshake_reply(conn, reply)
                else:
                    redis_reply(self, conn, reply)
        except ProtocolError as exc:
            self._break(conn, f"protocol error ({exc})")


# --------------------------------------------------------------------------------------------
# The command client


@attrs.define(slots=True, eq=False, repr=False)
class RedisClient(_Endpoint):
    """One pipelined command connection to Redis in ``server``'s loop (see the module
    docstring).

    ``max_pending`` replies may be awaited and ``output_cap`` bytes queued at most (one
    command larger than that goes when the queue is empty); past either, a call fails at
    once with ``RedisUnavailable("... backlog full")``.

    >>> RedisClient(None, "redis://10.1.2.3:6380/1")
    <RedisClient 10.1.2.3:6380 disconnected, 0 pending>
    """

    max_pending: int = attrs.field(default=100_000, kw_only=True)
    _pending: deque = attrs.field(factory=deque, init=False)   # callbacks, in command order
    _sent: int = attrs.field(default=0, init=False)            # commands sent on this conn
    _done: int = attrs.field(default=0, init=False)            # replies received on it
    _deadlines: list = attrs.field(factory=list, init=False)   # heap of (when, seq, timeout)
    _timer_at: float = attrs.field(default=INFINITY, init=False)
    _late: dict = attrs.field(factory=dict, init=False)        # seq -> timeout, on a reset
    _shas: dict = attrs.field(factory=dict, init=False)        # script -> its SHA1

    def __repr__(self) -> str:
        return (f"<RedisClient {self.address.hostport} {self._state()}, "
                f"{len(self._pending)} pending>")

    @property
    def pending(self) -> int:
        """Replies awaited."""
        return len(self._pending)

    def call(self, callback: Callable, *args, timeout: float | None = 5.0) -> bool:
        """Send the command ``args`` (loop thread only); ``callback(reply)`` is called later
        on the loop thread with the reply or an exception instance (see the module
        docstring). ``timeout`` seconds (``None``: none) bound the wait for the reply.
        Returns False when the call failed at once (not connected, backlog full): the
        callback still gets the :class:`RedisUnavailable`, on the next loop turn."""
        self._check_thread()
        return self._call(callback, encode_command(*args), timeout)

    def _call(self, callback: Callable, data: bytes, timeout: float | None) -> bool:
        conn = self._conn
        if conn is None or conn.phase is not READY:
            self.server.call_soon_threadsafe(callback, self._unavailable())
            return False
        if len(self._pending) >= self.max_pending or (
                conn.out_bytes and conn.out_bytes + len(data) > self.output_cap):
            self.server.call_soon_threadsafe(callback, RedisUnavailable(
                f"redis at {self.address.hostport}: backlog full ({len(self._pending)} "
                f"replies pending, {conn.out_bytes} bytes queued)"))
            return False
        self._pending.append(callback)
        seq = self._sent
        self._sent = seq + 1
        if timeout is not None:
            when = self.server.now + timeout
            heapq.heappush(self._deadlines, (when, seq, timeout))
            if when < self._timer_at:
                self._timer_at = when
                self.server.call_later(timeout, self._check_deadlines, conn)
        self._send(conn, data)
        return True

    def submit(self, *args, timeout: float | None = 5.0) -> concurrent.futures.Future:
        """Send the command ``args`` from any thread; return a ``Future`` whose result is the
        reply (an error reply, a failure or a timeout is its exception).

        Never block on the future on the loop thread itself (in a handler or a callback): the
        reply can only arrive once the loop runs again, so that would wait for ever (until
        ``timeout``). On the loop thread use :meth:`call`.
        """
        return self._submit(encode_command(*args), timeout)

    def _submit(self, data: bytes, timeout: float | None, script: Any = None):
        future: concurrent.futures.Future = concurrent.futures.Future()
        done = _future_callback(future)
        if self._closed or self.server.stopped.is_set():
            done(self._unavailable() if self._closed else RedisUnavailable(
                f"redis at {self.address.hostport}: the server's loop is stopped"))
        elif script is None:
            self.server.call_soon_threadsafe(self._call, done, data, timeout)
        else:
            self.server.call_soon_threadsafe(self._eval, done, *script, timeout)
        return future

    # -- scripts -------------------------------------------------------------------------------

    def _sha(self, script: str | bytes) -> str:
        sha = self._shas.get(script)
        if sha is None:
            if len(self._shas) >= 1024:
                self._shas.clear()
            data = script.encode() if isinstance(script, str) else bytes(script)
            sha = self._shas[script] = hashlib.sha1(data).hexdigest()
        return sha

    def eval(self, callback: Callable, script: str | bytes, keys=(), args=(), *,
             timeout: float | None = 5.0) -> bool:
        """Run a Lua ``script`` (loop thread only): ``EVALSHA`` with its SHA1 (computed once
        and kept), and when Redis answers ``NOSCRIPT`` (restarted, or ``SCRIPT FLUSH``) the
        same call again as ``EVAL`` with the script's text, which Redis caches for the next
        EVALSHA. Safe with pipelining: each call that meets NOSCRIPT falls back on its own;
        a script never runs twice, since NOSCRIPT means it did not run. (A fallback EVAL
        runs after the commands pipelined behind its EVALSHA.)"""
        self._check_thread()
        return self._eval(callback, script, list(keys), list(args), timeout)

    def submit_eval(self, script: str | bytes, keys=(), args=(), *,
                    timeout: float | None = 5.0) -> concurrent.futures.Future:
        """:meth:`eval` from any thread, as :meth:`submit`."""
        encode_command("EVALSHA", "", len(keys), *keys, *args)  # bad types fail here, now
        return self._submit(b"", timeout, (script, list(keys), list(args)))

    def _eval(self, callback: Callable, script, keys: list, args: list,
              timeout: float | None) -> bool:
        def on_reply(reply):
            if reply.__class__ is ReplyError and reply.code == "NOSCRIPT":
                self._call(callback, encode_command("EVAL", script, len(keys), *keys, *args),
                           timeout)
            else:
                callback(reply)

        return self._call(on_reply, encode_command("EVALSHA", self._sha(script), len(keys),
                                                   *keys, *args), timeout)

    # -- deadlines -----------------------------------------------------------------------------

    def _check_deadlines(self, conn: RedisConnection) -> None:
        if conn is not self._conn:
            return
        self._timer_at = INFINITY
        heap = self._deadlines
        done = self._done
        while heap and heap[0][1] < done:
            heapq.heappop(heap)
        if not heap:
            return
        now = self.server.now
        when = heap[0][0]
        if when <= now:
            self._late = {seq: t for w, seq, t in heap if w <= now and seq >= done}
            self._break(conn, f"no answer within {heap[0][2]} s; connection reset",
                        RedisTimeout)
        else:
            self._timer_at = when
            self.server.call_later(when - now, self._check_deadlines, conn)


@redis_ready.dispatch
def redis_ready_client(owner: RedisClient, conn: RedisConnection):
    owner._call_on_connect()


@redis_reply.dispatch
def redis_reply_client(owner: RedisClient, conn: RedisConnection, reply):
    if not owner._pending:
        owner._break(conn, f"a reply to no command: {reply!r:.100}")
        return
    callback = owner._pending.popleft()
    owner._done = done = owner._done + 1
    heap = owner._deadlines
    while heap and heap[0][1] < done:
        heapq.heappop(heap)
    _deliver(callback, reply)


@redis_lost.dispatch
def redis_lost_client(owner: RedisClient, conn: RedisConnection, exc):
    pending, owner._pending = owner._pending, deque()
    late, owner._late = owner._late, {}
    seq = owner._done
    owner._sent = owner._done = 0
    owner._deadlines = []
    owner._timer_at = INFINITY
    lost = None
    for callback in pending:
        timeout = late.get(seq)
        if timeout is not None:
            error = RedisTimeout(f"redis at {owner.address.hostport} did not answer within "
                                 f"{timeout} s")
        else:
            if lost is None:
                lost = exc if not isinstance(exc, RedisTimeout) else RedisUnavailable(
                    f"redis at {owner.address.hostport}: connection reset after a timeout "
                    f"before the reply")
            error = lost
        _deliver(callback, error)
        seq += 1


# --------------------------------------------------------------------------------------------
# The subscriber


def _channel(name) -> bytes:
    if isinstance(name, str):
        return name.encode()
    if isinstance(name, (bytes, bytearray, memoryview)):
        return bytes(name)
    raise TypeError(f"a channel name is str or bytes, not {type(name).__name__}")


@attrs.define(slots=True, eq=False, repr=False)
class RedisPubSub(_Endpoint):
    """One subscriber connection to Redis in ``server``'s loop (see the module docstring).

    >>> RedisPubSub(None, "redis://127.0.0.1:6379", on_message=print)
    <RedisPubSub 127.0.0.1:6379 disconnected, 0 channels>
    """

    on_message: Callable = attrs.field(kw_only=True)
    # called with a channel (bytes) each time Redis confirms a subscription to it: from then on
    # every message published on it comes here (also after a reconnect, before on_connect)
    on_subscribed: Callable | None = attrs.field(default=None, kw_only=True)
    channels: set = attrs.field(factory=set, init=False)   # bytes: what we are subscribed to
    _awaiting: set = attrs.field(factory=set, init=False)  # resubscriptions not confirmed
    _resubscribing: bool = attrs.field(default=False, init=False)

    def __repr__(self) -> str:
        return (f"<RedisPubSub {self.address.hostport} {self._state()}, "
                f"{len(self.channels)} channels>")

    @property
    def connected(self) -> bool:
        """True while subscribed (after a reconnect: once every channel is subscribed
        again)."""
        conn = self._conn
        return conn is not None and conn.phase is READY and not self._resubscribing

    def subscribe(self, *channels) -> None:
        """Subscribe to ``channels`` (str or bytes; loop thread only). While disconnected
        they are remembered and subscribed on connect."""
        self._check_thread()
        new = [c for c in dict.fromkeys(map(_channel, channels)) if c not in self.channels]
        self.channels.update(new)
        conn = self._conn
        if new and conn is not None and conn.phase is READY:
            self._send(conn, encode_command("SUBSCRIBE", *new))

    def unsubscribe(self, *channels) -> None:
        """Unsubscribe from ``channels`` (all without arguments; loop thread only): no message
        of theirs is delivered after this, even one already on its way."""
        self._check_thread()
        names = list(map(_channel, channels)) if channels else list(self.channels)
        gone = [c for c in dict.fromkeys(names) if c in self.channels]
        self.channels.difference_update(gone)
        conn = self._conn
        if gone and conn is not None and conn.phase is READY:
            self._send(conn, encode_command("UNSUBSCRIBE", *gone))


@redis_ready.dispatch
def redis_ready_pubsub(owner: RedisPubSub, conn: RedisConnection):
    channels = list(owner.channels)
    if not channels:
        owner._call_on_connect()
        return
    owner._resubscribing = True
    owner._awaiting = set(channels)
    for i in range(0, len(channels), 1000):
        owner._send(conn, encode_command("SUBSCRIBE", *channels[i:i + 1000]))


@redis_reply.dispatch
def redis_reply_pubsub(owner: RedisPubSub, conn: RedisConnection, reply):
    if reply.__class__ is list and len(reply) == 3:
        kind, channel, data = reply
        if kind == b"message":
            if channel in owner.channels:
                try:
                    owner.on_message(channel, data)
                except Exception:
                    log.exception("on_message failed")
            return
        if kind == b"subscribe":
            if owner.on_subscribed is not None and channel in owner.channels:
                try:
                    owner.on_subscribed(channel)
                except Exception:
                    log.exception("on_subscribed failed")
            if owner._resubscribing:
                owner._awaiting.discard(channel)
                if not owner._awaiting:
                    owner._resubscribing = False
                    owner._call_on_connect()
            return
        if kind == b"unsubscribe":
            return
    log.warning("%r: unexpected reply %.200r", owner, reply)


@redis_lost.dispatch
def redis_lost_pubsub(owner: RedisPubSub, conn: RedisConnection, exc):
    owner._resubscribing = False
    owner._awaiting = set()
