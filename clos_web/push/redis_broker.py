"""``RedisBroker``: one channel namespace over many processes and machines, through Redis.

::

    registry = Channels(broker=RedisBroker("redis://127.0.0.1:6379/0"))
    # or: CLOS_WEB_REDIS=redis://... (python -m clos_web --redis URL), and Channels() as ever

What Redis holds, per channel ``NAME`` (its keys share the hash tag ``{#NAME}``, never empty,
so they live on one Redis Cluster node, and no script touches two channels' keys; presence
has two more, ``:p`` and ``:z``):

- ``clos_web:{#NAME}:m``, a hash: ``e`` the channel's *epoch* (random, made by the first
  publish) and ``o`` its last *offset* (1, 2, 3, ...). It expires ``meta_ttl`` seconds after the
  last publish.
- ``clos_web:{#NAME}:s``, a stream capped at ``history`` entries whose ids are the offsets
  (``17-0``); it expires ``max_age`` seconds after the last publish.

One Lua script per publish (:data:`PUBLISH`, as Centrifugo's ``broker_history_add_stream``)
assigns the offset, appends to the stream and publishes ``EPOCH\\nOFFSET\\nTYPE\\nDATA`` on the
Redis channel ``clos_web:NAME``, atomically: every process subscribed there sees each channel's
events in offset order. An event's SSE id is ``EPOCH-OFFSET``. The epoch tells "history
expired" (same epoch, offset older than what the stream keeps) from "storage lost" (Redis
restarted empty: a new epoch): either way the client is sent ``reset``, never a silent gap.

In each process the broker runs inside one server's selector loop (the first that uses it, or
:meth:`RedisBroker.attach`): one pipelined command connection and one pub/sub connection
(:mod:`clos_web.redis`), never blocking the loop. Per channel the process keeps the offset it
has delivered to its subscribers; a message after a gap (a reconnect, a message in flight while
it subscribed) is preceded by the missing events read from the stream, and after the pub/sub
connection comes back every channel is checked against the stream, so nothing is missed and
nothing is delivered twice.

A client resuming with ``Last-Event-ID`` on *any* process: the process subscribes first (and
buffers what arrives), then reads the stream after that offset (:data:`READ`), sends the missed
events, then the buffered ones past what history held, then live ones: no gap and no duplicate
at the seam.

Positions are per channel, so a stream of several channels is sent, as each event's id, its
position in every one of them (:func:`~clos_web.push.broker.vector_id`:
``TAG:EPOCH-OFFSET,...``, ``TAG`` a short hash of the channel's name): one ``Last-Event-ID``
resumes every channel of the stream exactly.
A single id ``EPOCH-OFFSET`` resumes the channel whose epoch it names and resets the others.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import deque
from typing import Any

import attrs

from . import sse
from .broker import (
    BrokerUnavailable, Publication, _announce, broker_add, broker_join, broker_leave,
    broker_presence, broker_present, broker_publish, channel_tag,
)
from .channels import Event, _event_size
from ..loop.server import current_loop
from ..redis.cluster import make_client, make_pubsub

log = logging.getLogger("clos_web.push.redis")

PUBLISH = """
local now = redis.call('TIME')
if tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) > tonumber(ARGV[8]) then
  return false
end
local epoch = redis.call('HGET', KEYS[2], 'e')
if not epoch then
  epoch = ARGV[7]
  redis.call('HSET', KEYS[2], 'e', epoch)
end
local offset = redis.call('HINCRBY', KEYS[2], 'o', 1)
if tonumber(ARGV[3]) > 0 then
  redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[3], offset .. '-0', 't', ARGV[1], 'd', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('PUBLISH', ARGV[6], epoch .. '\\n' .. offset .. '\\n' .. ARGV[1] .. '\\n' .. ARGV[2])
return {epoch, offset}
"""
"""KEYS: stream, meta. ARGV: type, data, history length, stream TTL (ms), meta TTL (ms),
pub/sub channel, an epoch for a channel that has none, a deadline (Unix ms). Returns ``{epoch,
offset}``, or nil past the deadline: a publish that Redis runs late (it was stalled, the
caller got a 503) is not stored then, so a 503 always means "not stored"."""

READ = """
local epoch = redis.call('HGET', KEYS[2], 'e')
local top = tonumber(redis.call('HGET', KEYS[2], 'o') or '0')
local entries = {}
if epoch and top > tonumber(ARGV[1]) and tonumber(ARGV[2]) > 0 then
  entries = redis.call('XRANGE', KEYS[1], (tonumber(ARGV[1]) + 1) .. '-0', '+',
                       'COUNT', ARGV[2])
end
return {epoch, top, entries}
"""
"""KEYS: stream, meta. ARGV: the offset to read after, how many at most. Returns ``{epoch or
nil, last offset, [[id, [field, value, ...]], ...]}``, read at one instant."""


PRESENCE_SET = """
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
"""
"""KEYS: presence hash, expiry zset. ARGV: client, info JSON ('' removes it), TTL (ms), the
keys' TTL (ms). Expiry times are Redis' own clock (no skew between machines)."""

PRESENCE_REFRESH = """
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
for i = 3, #ARGV do
  redis.call('ZADD', KEYS[2], 'XX', now + tonumber(ARGV[1]), ARGV[i])
end
local gone = {}
for _, client in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1000)) do
  local info = redis.call('HGET', KEYS[1], client)
  redis.call('HDEL', KEYS[1], client)
  redis.call('ZREM', KEYS[2], client)
  table.insert(gone, client)
  table.insert(gone, info or 'null')
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return gone
"""
"""KEYS: presence hash, expiry zset. ARGV: TTL (ms), keys' TTL (ms), this process's clients
on the channel. Refreshes them; removes the expired (clients of a process that died) and
returns them, ``[client, info, ...]``: the caller announces their ``leave``, once."""

PRESENCE_READ = """
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local out = {}
for _, client in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], now, '+inf', 'LIMIT', 0,
                                   tonumber(ARGV[1]))) do
  local info = redis.call('HGET', KEYS[1], client)
  if info then
    table.insert(out, client)
    table.insert(out, info)
  end
end
return out
"""
"""KEYS: presence hash, expiry zset. ARGV: at most how many. ``[client, info, ...]`` of the
entries not expired."""


# At most this many pub/sub messages wait behind a gap or a synchronisation, and this many
# live events wait in one subscriber's catch-up (past it the subscriber is sent reset).
_MAX_WAITING = 10_000
# A subscriber's catch-up read is tried this many times over twice the broker's timeout.
_READ_TRIES = 8


def _presence_keys(name: str) -> list:
    return [f"clos_web:{{#{name}}}:p", f"clos_web:{{#{name}}}:z"]


def _pairs(reply) -> dict:
    return {reply[i].decode(): json.loads(reply[i + 1]) for i in range(0, len(reply) - 1, 2)}


def _stored_id(reply) -> str:
    """The event id from the :data:`PUBLISH` script's reply; :class:`BrokerUnavailable` when
    the event was not stored (Redis unreachable, too slow, or it ran the script too late)."""
    if isinstance(reply, BaseException):
        raise BrokerUnavailable(f"the event was not stored: {reply}")
    if reply is None:
        raise BrokerUnavailable("the event was not stored: Redis ran it too late")
    return f"{reply[0].decode()}-{reply[1]}"


def _new_epoch(_bits=random.getrandbits) -> str:
    # 48 random bits: what tells a channel's storage lost from its history expired is that
    # the new epoch differs from the old one (Mersenne Twister suffices, nothing is secret;
    # random reseeds itself in a forked worker)
    return "%012x" % _bits(48)


def _keys(name: str) -> list:
    # the hash tag is "#NAME" up to a "}" in it: never empty, so a channel's keys always
    # share a Redis Cluster slot (an empty tag, as "{}" or a name starting with "}", would
    # hash each whole key on its own); the mapping from name to key stays one-to-one
    return [f"clos_web:{{#{name}}}:s", f"clos_web:{{#{name}}}:m"]


def _parse_id(text: str | None):
    """``(epoch, offset)`` of an id ``EPOCH-OFFSET``; ``None`` for none; ``("", -1)`` for
    garbage. The epoch ``*`` is "the channel had none yet": everything from offset 1."""
    if not text:
        return None
    epoch, sep, num = text.strip().rpartition("-")
    if sep and epoch and num.isascii() and num.isdigit() and len(num) < 19:
        return epoch, int(num)
    return "", -1


def _positions(text: str | None, names) -> dict:
    """Each channel's ``(epoch, offset)`` (or ``None``) from a client's last id: a vector id
    names each channel by its tag; a single id is tried on every channel (its epoch tells)."""
    if not text or ":" not in text:
        position = _parse_id(text)
        return {name: position for name in names}
    tagged = {}
    for part in text.split(",")[:1024]:
        tag, _, pos = part.strip().partition(":")
        tagged[tag] = _parse_id(pos) or ("", -1)
    return {name: tagged.get(channel_tag(name), ("", -1)) for name in names}


@attrs.define(slots=True, eq=False, repr=False)
class _Remote:
    """What the process knows of one channel it reads: the epoch and offset it has delivered
    to its subscribers (``None`` until synchronised), messages waiting behind a gap or a
    synchronisation, and subscribers waiting for their catch-up."""

    name: str
    epoch: str | None = None
    offset: int | None = None
    subscribed: bool = False
    syncing: bool = False      # a READ for this channel's own state is on its way
    waiting: deque = attrs.field(factory=deque)  # (epoch, offset, etype, data) not in order yet
    joins: list = attrs.field(factory=list)    # _Join waiting for subscription or catch-up


@attrs.define(slots=True, eq=False, repr=False)
class _Join:
    """One subscriber's catch-up on one channel: live events that reach the process meanwhile
    are kept in ``buffer``; once the process has delivered up to ``top`` (what the history read
    saw), history then the buffer past ``top`` are sent and the subscriber goes live."""

    sub: Any
    name: str
    position: tuple | None    # (epoch, offset) the client is at, or None
    budget: int | None
    buffer: list = attrs.field(factory=list)
    history: list | None = None
    top: int | None = None
    reset: bool = False
    reading: bool = False
    fresh: bool = False       # the channel had no epoch when the client came: all of the next
    overflow: bool = False    # more live events came meanwhile than the buffer keeps
    attempts: int = 0         # reads that failed (Redis away): retried a while, then reset


@attrs.define(slots=True, eq=False, repr=False)
class RedisBroker:
    """The Redis broker (see the module docstring). ``url``: ``redis://[:password@]host:port/db``,
    or ``redis+cluster://[:password@]host:port[,host:port...]`` for a Redis Cluster (seed nodes).

    A broker serves one registry: give each :class:`~clos_web.push.channels.Channels` its
    own. ``timeout`` bounds each Redis call (a publish not stored within it is a 503);
    ``meta_ttl`` is how long (seconds) a channel's epoch and offset outlive its last publish.
    History length and age are the registry's ``history`` and ``max_age``.

    >>> RedisBroker("redis://127.0.0.1:6379/0")
    <RedisBroker redis://127.0.0.1:6379/0 detached>
    """

    url: str
    timeout: float = 2.0
    meta_ttl: float = 86400.0
    server: Any = None
    client: Any = None
    pubsub: Any = None
    _registry: Any = None
    _remotes: dict = attrs.field(factory=dict)
    max_presence: int = 10_000
    _present: dict = attrs.field(factory=dict)  # name -> {client: info} of this process
    _early: list = attrs.field(factory=list)    # scripts waiting for the first connection
    _refreshed: float = 0.0
    _up: bool = False                           # connected once
    _lock: threading.Lock = attrs.field(factory=threading.Lock)

    def __repr__(self) -> str:
        state = "detached" if self.server is None else (
            "connected" if self.client is not None and self.client.connected else "connecting")
        return f"<RedisBroker {self.url} {state}>"

    # -- set-up ------------------------------------------------------------------------------

    def attach(self, server) -> "RedisBroker":
        """Run in ``server``'s loop (its connections and callbacks live there); the first
        server to use the broker is attached by itself. Any thread."""
        with self._lock:
            if self.server is not None:
                return self
            self.server = server
            self.client = make_client(server, self.url, on_connect=self._connected)
            self.pubsub = make_pubsub(server, self.url, on_message=self._message,
                                      on_subscribed=self._subscribed,
                                      on_connect=self._resubscribed)
        self.client.start()
        self.pubsub.start()
        server.call_soon_threadsafe(server.add_sweeper, self._sweep)
        return self

    def _attached(self) -> None:
        """Attach to the loop running on this thread if the broker has none yet."""
        if self.server is None:
            server = current_loop()
            if server is None:
                raise RuntimeError("this RedisBroker runs in no server's loop yet: call "
                                   "broker.attach(server) first")
            self.attach(server)

    def close(self) -> None:
        """Close both connections (any thread)."""
        if self.client is not None:
            self.client.close()
            self.pubsub.close()

    def _bind(self, registry) -> None:
        """A broker serves one registry (its subscribers are the registry's)."""
        if self._registry is None:
            self._registry = registry
        elif self._registry is not registry:
            raise ValueError("this RedisBroker serves another registry: give each Channels "
                             "its own broker")

    def _on_loop(self) -> bool:
        return self.server is not None and threading.get_ident() == self.server._ident

    def _run(self, fn, *args) -> None:
        """``fn(*args)`` on the broker's loop: now if this is it, else soon."""
        if self._on_loop():
            fn(*args)
        else:
            self.server.call_soon_threadsafe(fn, *args)

    def _remote(self, name: str) -> _Remote:
        rc = self._remotes.get(name)
        if rc is None:
            rc = self._remotes[name] = _Remote(name)
        return rc

    # -- publishing --------------------------------------------------------------------------

    def publish(self, registry, name: str, etype: str | None, data: str):
        self._bind(registry)
        args = [etype or "", data, max(registry.history, 0), int(registry.max_age * 1000),
                int(max(self.meta_ttl, registry.max_age) * 1000), f"clos_web:{name}",
                _new_epoch(), int((time.time() + 0.75 * self.timeout) * 1000)]
        self._attached()
        if not self._on_loop():
            # another thread: wait here for Redis (never on the loop thread)
            try:
                reply = self.client.submit_eval(PUBLISH, _keys(name), args,
                                                timeout=self.timeout).result(self.timeout + 1)
            except Exception as exc:
                reply = exc
            return _stored_id(reply)
        if self._up and not self.client.connected:
            raise BrokerUnavailable(f"redis at {self.url} is unreachable")
        pub = Publication(name)

        def stored(reply):
            try:
                pub.settle(_stored_id(reply), None)
            except BrokerUnavailable as exc:
                pub.settle(None, exc)

        self._eval(stored, PUBLISH, _keys(name), args)
        return pub

    def _eval(self, callback, script: str, keys, args) -> None:
        """Run ``script`` (loop thread); before the first connection it waits for it (up to
        ``timeout``), so a process's first requests are not refused while it connects."""
        if self._up or self.client.connected:
            self.client.eval(callback, script, keys, args, timeout=self.timeout)
            return
        waiting = [callback, script, keys, args]
        self._early.append(waiting)

        def give_up():
            if waiting in self._early:
                self._early.remove(waiting)
                callback(BrokerUnavailable(f"redis at {self.url} is unreachable"))

        self.server.call_later(self.timeout, give_up)

    def _connected(self) -> None:
        self._up = True
        early, self._early = self._early, []
        for callback, script, keys, args in early:
            self.client.eval(callback, script, keys, args, timeout=self.timeout)

    # -- presence ----------------------------------------------------------------------------

    def present(self, registry, name: str, client: str, info, joined: bool) -> None:
        """Loop thread: record (or drop) ``client`` on ``name`` in Redis; announce it."""
        self._bind(registry)
        mine = self._present.setdefault(name, {})
        if joined:
            mine[client] = info
        else:
            mine.pop(client, None)
            if not mine:
                del self._present[name]
        ttl = int(registry.presence_ttl * 1000)
        args = [client, json.dumps(info) if joined else "", ttl, 2 * ttl]
        self._eval(self._presence_failed, PRESENCE_SET, _presence_keys(name), args)
        if registry.presence_events:
            _announce(registry, name, "join" if joined else "leave", client, info)

    def _presence_failed(self, reply) -> None:
        if isinstance(reply, BaseException):
            log.warning("presence not recorded: %s", reply)

    def _sweep(self, now: float) -> None:
        """Once a second: every third of the presence TTL, refresh this process's entries
        and announce the ``leave`` of entries that expired (a process that died)."""
        registry = self._registry
        if registry is None or not self._present or not self.client.connected:
            return
        if now - self._refreshed < registry.presence_ttl / 3:
            return
        self._refreshed = now
        ttl = int(registry.presence_ttl * 1000)
        for name, mine in self._present.items():
            def done(reply, name=name):
                if isinstance(reply, BaseException):
                    log.warning("presence of %r not refreshed: %s", name, reply)
                elif reply and registry.presence_events:
                    for client, info in _pairs(reply).items():
                        _announce(registry, name, "leave", client, info)

            self._eval(done, PRESENCE_REFRESH, _presence_keys(name),
                             [ttl, 2 * ttl, *mine])

    def presence(self, name: str) -> dict:
        self._attached()
        if self._on_loop():
            raise RuntimeError("presence() waits for Redis: call it from another thread (a "
                               "blocking=True handler), or follow the channel's presence "
                               "events on a stream")
        try:
            reply = self.client.submit_eval(PRESENCE_READ, _presence_keys(name),
                                            [self.max_presence], timeout=self.timeout
                                            ).result(self.timeout + 1)
        except Exception as exc:
            raise BrokerUnavailable(f"presence of {name!r} unknown: {exc}") from None
        return _pairs(reply)

    def _snapshot(self, registry, sub, name: str) -> None:
        """Send stream ``sub`` the ``presence`` of ``name`` (once it is live there)."""
        def done(reply):
            if isinstance(reply, BaseException):
                log.warning("presence of %r not sent: %s", name, reply)
                return
            if not sub.conn.closed and name in sub.names:
                event = registry._presence_event("presence", name, None, _pairs(reply))
                registry._live(sub, name, [event])

        self._eval(done, PRESENCE_READ, _presence_keys(name), [self.max_presence])

    # -- joining -----------------------------------------------------------------------------

    def join(self, registry, sub, last_id: str | None, budget: int | None,
             names=None) -> None:
        """Loop thread of the broker. Subscribe the process to each channel (if new), then
        catch ``sub`` up on each (see _Join)."""
        self._bind(registry)
        positions = _positions(last_id, sub.names if names is None else names)
        for name, position in positions.items():
            rc = self._remote(name)
            join = _Join(sub, name, position, budget)
            if position is not None and position[0] == "*":
                join.position, join.fresh = ("", position[1]), True
            held = getattr(sub, "positions", None)
            if held is not None and position is not None and position[1] >= 0:
                held[name] = f"{position[0]}-{position[1]}"  # until its catch-up is done
            rc.joins.append(join)
            if position is None and rc.offset is None:
                self._mark_start(rc, join)
            if not rc.subscribed:
                self.pubsub.subscribe(f"clos_web:{name}")
            elif rc.offset is not None:
                self._read_for(rc, join)

    def leave(self, name: str) -> None:
        rc = self._remotes.get(name)
        if rc is None or rc.joins:
            return
        registry = self._registry
        if registry is not None and name in registry:
            return  # the channel came back meanwhile
        del self._remotes[name]
        self.pubsub.unsubscribe(f"clos_web:{name}")

    def _subscribed(self, channel: bytes) -> None:
        name = channel.decode()[len("clos_web:"):]
        rc = self._remotes.get(name)
        if rc is None:
            return
        rc.subscribed = True
        self._sync(rc)

    def _resubscribed(self) -> None:
        # the pub/sub connection came back: what was published meanwhile is in the streams
        for rc in list(self._remotes.values()):
            if rc.offset is not None:
                self._sync(rc)

    def _sync(self, rc: _Remote) -> None:
        """Read the channel's state and, past the offset delivered here, its missed events;
        deliver them in order, then what waits behind them."""
        if rc.syncing:
            return
        rc.syncing = True
        after = rc.offset if rc.offset is not None else None
        registry = self._registry
        count = max(registry.history, 0) if after is not None else 0

        def done(reply):
            rc.syncing = False
            if isinstance(reply, BaseException):
                log.warning("reading channel %r failed: %s", rc.name, reply)
                if self.pubsub.connected:
                    self.server.call_later(0.5, self._sync, rc)
                return
            epoch, top, entries = reply
            epoch = epoch.decode() if epoch is not None else None
            if after is None:  # first synchronisation: live from here
                rc.epoch, rc.offset = epoch, top
            elif rc.epoch is None and after == 0:  # the channel's first events
                rc.epoch = epoch
                self._apply_entries(rc, self._entries(entries), True)
            elif epoch != rc.epoch:  # storage lost (or expired): a new epoch, or none yet
                self._reset_local(rc, epoch, 0)
                self._apply_entries(rc, self._entries(entries), True)
            else:
                self._apply_entries(rc, self._entries(entries), top > rc.offset)
            self._drain_waiting(rc)
            for join in list(rc.joins):
                if join.top is None and not join.reading:
                    self._read_for(rc, join)
            self._settle_joins(rc)

        self._eval(done, READ, _keys(rc.name), [after or 0, count])

    def _entries(self, entries) -> list:
        out = []
        for eid, fields in entries:
            f = dict(zip(fields[::2], fields[1::2]))
            out.append((int(eid.split(b"-")[0]), f.get(b"t", b"").decode() or None,
                        f.get(b"d", b"").decode()))
        return out

    def _apply_entries(self, rc: _Remote, entries: list, expected: bool) -> None:
        """Deliver stream entries past ``rc.offset`` in order; a hole before them (history
        no longer holds what the process missed) resets its subscribers first."""
        for offset, etype, data in entries:
            if offset <= rc.offset:
                continue
            if offset != rc.offset + 1:
                self._reset_local(rc, rc.epoch, offset - 1)
            self._deliver(rc, offset, etype, data)

    def _reset_local(self, rc: _Remote, epoch: str | None, offset: int) -> None:
        """The process lost track of channel ``rc`` (history gone, or a new epoch): its
        subscribers are sent ``reset`` and go on from ``EPOCH-OFFSET``."""
        rc.epoch, rc.offset = epoch, offset
        # (no epoch: Redis has none for the channel until its next publish; the client keeps
        # its old id, which a reconnect resets again)
        position = f"{epoch}-{offset}" if epoch is not None else ""
        ev = self._event(rc.name, position, "reset", position, epoch is not None)
        self._buffer(rc, ev)
        self._registry._deliver(ev)

    def _buffer(self, rc: _Remote, ev) -> None:
        """Keep ``ev`` for the subscribers still catching up on ``rc`` (bounded: one that
        falls too far behind will be sent ``reset`` instead)."""
        for join in rc.joins:
            if len(join.buffer) < _MAX_WAITING:
                join.buffer.append(ev)
            else:
                join.overflow = True

    def _event(self, name: str, eid: str, etype: str | None, data: str, with_id: bool = True):
        raw = sse.encode(data, etype, eid if with_id else None)
        chunk = sse.chunk(raw)
        return Event(eid, 0, name, etype, data, time.monotonic(), raw, chunk,
                     _event_size(raw, chunk, data))

    def _deliver(self, rc: _Remote, offset: int, etype: str | None, data: str) -> None:
        rc.offset = offset
        ev = self._event(rc.name, f"{rc.epoch}-{offset}", etype, data)
        self._buffer(rc, ev)
        self._registry._deliver(ev)

    def _message(self, channel: bytes, payload: bytes) -> None:
        name = channel.decode()[len("clos_web:"):]
        rc = self._remotes.get(name)
        if rc is None:
            return
        epoch, offset, etype, data = payload.decode().split("\n", 3)
        if len(rc.waiting) >= _MAX_WAITING:
            # bounded: what is dropped here is in the stream, and the gap after it reads it
            rc.waiting.clear()
        rc.waiting.append((epoch, int(offset), etype or None, data))
        if rc.offset is not None and not rc.syncing:
            self._drain_waiting(rc)
            self._settle_joins(rc)

    def _drain_waiting(self, rc: _Remote) -> None:
        """Deliver the messages that wait, in order; a gap (or a new epoch) reads the stream
        first."""
        waiting = rc.waiting
        while waiting:
            epoch, offset, etype, data = waiting[0]
            if epoch != rc.epoch or offset > rc.offset + 1:
                self._sync(rc)  # what is missing comes from the stream, then the rest
                return
            waiting.popleft()
            if offset == rc.offset + 1:
                self._deliver(rc, offset, etype, data)

    def _mark_start(self, rc: _Remote, join: _Join) -> None:
        """A client with no id on a channel this process does not follow yet: its place is
        the channel's last offset now (read before its answer's head is sent), so it gets
        every event stored after it came, however long the subscription takes."""
        join.reading = True

        def done(reply):
            join.reading = False
            if isinstance(reply, BaseException):
                if self._retry(rc, join, self._mark_start):
                    return
                join.reset = True  # its place is unknown: live from now, after a reset
            else:
                epoch, top, _ = reply
                join.position = (epoch.decode() if epoch is not None else "", top)
                join.fresh = epoch is None
            if rc.offset is not None:
                self._read_for(rc, join)
                self._settle_joins(rc)

        self._eval(done, READ, _keys(rc.name), [0, 0])

    def _read_for(self, rc: _Remote, join: _Join) -> None:
        """The history ``join`` needs: after its offset, when its id names this channel."""
        position = join.position
        if position is None or (rc.epoch is not None and position[0] != rc.epoch
                                and not join.fresh):
            # no id (live from here), or one of another channel or epoch
            join.reset = join.reset or position is not None
            join.top = rc.offset
            join.history = []
            return
        join.reading = True
        registry = self._registry

        def done(reply):
            join.reading = False
            if isinstance(reply, BaseException):
                if self._retry(rc, join, self._read_for):
                    return
                join.reset, join.history, join.top = True, [], rc.offset
            else:
                epoch, top, entries = reply
                epoch = epoch.decode() if epoch is not None else None
                after = position[1]
                entries = self._entries(entries)
                covered = ((epoch == position[0] or join.fresh) and after <= top and
                           [e[0] for e in entries] == list(range(after + 1, top + 1)))
                size = sum(len(d) + 64 for _, _, d in entries)
                if not covered or (join.budget is not None and size > join.budget):
                    join.reset, join.history = True, []
                else:
                    join.history = [self._event(rc.name, f"{epoch}-{o}", t, d)
                                    for o, t, d in entries]
                join.top = top
            self._settle_joins(rc)

        self._eval(done, READ, _keys(rc.name),
                         [position[1], max(registry.history, 0)])

    def _retry(self, rc: _Remote, join: _Join, step) -> bool:
        """A read for ``join`` failed (Redis away, or this process's client still
        reconnecting): try ``step`` again soon, for up to about ``2 * timeout`` seconds,
        before the subscriber is given ``reset``. False when it is time to give up."""
        if join.attempts >= _READ_TRIES or join.sub.conn.closed:
            return False
        join.attempts += 1
        join.reading = True  # (no other read starts meanwhile)

        def again():
            join.reading = False
            if join in rc.joins:
                step(rc, join)

        self.server.call_later(2 * self.timeout / _READ_TRIES, again)
        return True

    def _settle_joins(self, rc: _Remote) -> None:
        """Joins whose history is read and whose seam the process has reached go live."""
        if rc.offset is None:
            return
        for join in list(rc.joins):
            if join.top is None or join.reading or rc.offset < join.top:
                continue
            rc.joins.remove(join)
            self._go_live(rc, join)

    def _go_live(self, rc: _Remote, join: _Join) -> None:
        sub = join.sub
        conn = sub.conn
        if conn.closed or rc.name not in sub.names or getattr(sub, "done", False):
            return  # gone, or a long-poll answered meanwhile
        if getattr(sub, "last_id", None) == "" and rc.epoch is not None:
            sub.last_id = f"{rc.epoch}-{join.top}"  # a poll with no id waits from here
        first = []
        seam = join.top
        if join.overflow:  # too far behind: reload, from where the process is now
            seam, join.reset, join.history, join.buffer = rc.offset, True, [], []
        if join.reset:
            eid = f"{rc.epoch}-{seam}"
            first.append(self._event(rc.name, eid, "reset", eid))
        positions = getattr(sub, "positions", None)
        if positions is not None:  # a stream of several channels: where it is in this one
            positions[rc.name] = f"{rc.epoch if rc.epoch is not None else '*'}-{seam}"
        first += join.history
        first += [e for e in join.buffer
                  if e.event == "reset" or int(e.id.rpartition("-")[2]) > seam]
        registry = self._registry
        registry._live(sub, rc.name, first)
        if registry.presence_events and getattr(sub, "client", None) is not None:
            self._snapshot(registry, sub, rc.name)


@broker_publish.dispatch
def broker_publish_redis(broker: RedisBroker, registry: object, name, etype, data):
    return broker.publish(registry, name, etype, data)


@broker_join.dispatch
def broker_join_redis(broker: RedisBroker, registry: object, sub, last_id, budget):
    broker.attach(sub.conn.server)
    broker._run(broker.join, registry, sub, last_id, budget)
    return None


@broker_add.dispatch
def broker_add_redis(broker: RedisBroker, registry: object, sub, name):
    if name in sub.names:
        return
    sub.names.append(name)
    broker.attach(sub.conn.server)
    broker._run(broker.join, registry, sub, None, None, [name])


@broker_present.dispatch
def broker_present_redis(broker: RedisBroker, registry: object, sub, name, joined):
    broker.attach(sub.conn.server)
    broker._run(broker.present, registry, name, sub.client, sub.presence, joined)


@broker_presence.dispatch
def broker_presence_redis(broker: RedisBroker, registry: object, name):
    return broker.presence(name)


@broker_leave.dispatch
def broker_leave_redis(broker: RedisBroker, registry: object, name):
    if broker.server is not None:
        broker.server.call_soon_threadsafe(broker.leave, name)


__all__ = ["RedisBroker", "PUBLISH", "READ"]
