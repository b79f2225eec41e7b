"""The ``push`` layer: channels, history and resume, Server-Sent Events and long-poll.

A :class:`Channels` registry maps channel names to subscribers and keeps each channel's recent
history. ``publish(channel, message)`` encodes the message once (``encode_event`` decides the
event type and data text; :mod:`clos_web.sse` the bytes), gives it a short monotonic id, keeps it
in history and enqueues the *same bytes object* on every subscriber: fan-out costs a queue append
and a ``send`` per subscriber. It is safe from any thread; the sends always happen on the loop
thread of each subscriber's server, in publish order.

A handler streams channels by returning :class:`EventStream` (SSE) or :class:`LongPoll`, usually
through the :func:`channel` decorator (House's ``define-channel``)::

    @app.get("/feed")
    @channel(registry)
    def feed(request):
        if not allowed(request):
            return False                      # 403: EventSource stops reconnecting
        return ["news", "user-42"]            # the channels this connection joins

A client reconnecting with ``Last-Event-ID`` (or ``?lastEventId=``) gets exactly the events it
missed, then live ones. When history cannot cover the gap (unknown id, or older than what is
kept), or the missed events would take more than half the connection's output cap, the stream
starts with an event of type ``reset`` whose data is the channel's last id: never a silent gap.

Everything client input can grow is bounded in bytes: history per channel (``history_bytes``)
and per registry (``max_bytes``), each catch-up by the output cap, and the number of channels
(``max_channels``; idle channels make room before a new one is refused).
"""

from __future__ import annotations

import functools
import logging
import os
import random
import secrets
import sys
import threading
import time
import weakref
from collections import OrderedDict, deque
from typing import Any

import attrs

from . import sse
from .broker import (
    LOCAL, BrokerUnavailable, Publication, broker_add, broker_join, broker_leave,
    broker_presence, broker_present, broker_publish, vector_id,
)
from ..clos import generic
from ..http import (
    HTTPError, Request, Response, header_block, json_bytes, parse_params,
)
from ..http.head import FixedHead, _headers as _check_headers
from ..http.connection import State as _HTTPState
from ..http.server import close_stream, send_response, shutdown_stream, stream_idle, write
from ..loop.server import Connection
from ..web.responses import json_text, with_headers

log = logging.getLogger("clos_web.push")

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"

# --------------------------------------------------------------------------------------------
# Events


@attrs.define(slots=True, frozen=True, eq=False, repr=False)
class Event:
    """One published event, encoded once and shared by every subscriber.

    ``raw`` is the SSE wire form (``id:``, ``event:``, ``data:`` lines); ``chunk`` is the same
    bytes framed as one HTTP/1.1 chunk. ``data`` is the text payload, ``event`` the event type
    (``None`` for the default ``message``), ``seq`` the number inside the id. ``size`` is what
    the event costs while history keeps it, in bytes: ``raw``, ``chunk``, the ``data`` string
    and a fixed overhead for the objects around them (the history bounds count it).
    """

    id: str
    seq: int
    channel: str
    event: str | None
    data: str
    time: float
    raw: bytes
    chunk: bytes
    size: int = 0

    def __repr__(self) -> str:
        data = self.data if len(self.data) <= 40 else self.data[:37] + "..."
        return f"<Event {self.id} {self.channel!r} {self.event or 'message'} {data!r}>"

    def as_dict(self) -> dict:
        """``{"id", "event", "data"}``, as long-poll answers it."""
        return {"id": self.id, "event": self.event or "message", "data": self.data}

    def json(self) -> bytes:
        """:meth:`as_dict` as compact JSON bytes (encoded per call: history keeps no copy; the
        fan-out encodes a live event once for all the polls it answers)."""
        return json_bytes(self.as_dict())


# What history pays per event beyond its raw, chunk and data bytes: the Event (slots, id string,
# float, int), the bytes headers, its place in the channel's deque and its (seq, name) record in
# the registry's order, plus one record evicted but not yet compacted (see Channels._compact).
_EVENT_OVERHEAD = 448
# What a channel costs beyond its name: the Channel, its deque, its places in the registry.
_CHANNEL_OVERHEAD = 1200


def _event_size(raw: bytes, chunk: bytes, data: str) -> int:
    return len(raw) + len(chunk) + sys.getsizeof(data) + _EVENT_OVERHEAD


def _channel_size(name: str) -> int:
    return sys.getsizeof(name) + _CHANNEL_OVERHEAD


@attrs.define(slots=True, frozen=True)
class Message:
    """A message with an explicit SSE event type: ``publish("room", Message(card, "move"))``."""

    data: Any
    event: str | None = None


@generic
def encode_event(message):
    """Decide how ``message`` goes on the wire: return ``(event_type_or_None, data_text)``.

    ``str`` is sent as is, ``bytes`` as UTF-8 text, a dict or list as JSON, a :class:`Message`
    with its event type, an attrs instance as JSON with its class name as the event type. Add a
    method to publish a new class::

        @encode_event.dispatch
        def encode_event_card(message: Card):
            return "card", f"{message.rank}{message.suit}"
    """


@encode_event.dispatch
def encode_event_str(message: str):
    return None, message


@encode_event.dispatch
def encode_event_bytes(message: bytes):
    return None, message.decode("utf-8")


@encode_event.dispatch
def encode_event_json(message: dict | list | int | float | bool):
    return None, json_text(message)


@encode_event.dispatch
def encode_event_message(message: Message):
    event, data = encode_event(message.data)
    return message.event if message.event is not None else event, data


@encode_event.dispatch
def encode_event_object(message: object):
    if attrs.has(type(message)):
        return type(message).__name__, json_text(message)  # as HTTP answers encode it
    raise TypeError(f"cannot publish a {type(message).__name__}: add an encode_event method")


# --------------------------------------------------------------------------------------------
# Channels and their registry


class Batch(list):
    """The fan-out's unit: subscribers of one transport on one loop, for one ``write`` call
    (``write(event, batch)``: the event is encoded once, and the transport's method sends the
    same bytes to each). A transport's subscription class names its batch class
    (``Subscription.batch``); a batch holds the connections (or, for long-polls, the waiters).
    ``transport`` names the transport in metrics (``sse``, ``poll``, ``websocket``).

    Bursts: consecutive events of one channel fanned out in one loop turn share one batch, and
    a transport's ``write`` method may :meth:`queue` its bytes rather than send them; the
    fan-out calls :meth:`send_queued` once the burst is written, so each subscriber gets the
    burst in one ``send`` (the joined bytes built once, shared by all). Every event still goes
    through ``write``: a method of yours on it sees each one.

    >>> b = SSEBatch([]); b.queue(b"a"); b.queue(b"b"); b.queued
    [b'a', b'b']
    """

    __slots__ = ("queued",)  # (unset until something is queued: no __init__ per batch)
    transport = "sse"

    @classmethod
    def of(cls, members: dict) -> "Batch":
        """A batch of ``members`` (``{connection: subscription}``): the connections."""
        return cls(members)

    def queue(self, data) -> None:
        """Keep ``data`` (what one event is on the wire) for :meth:`send_queued`."""
        queued = getattr(self, "queued", None)
        if queued is None:
            self.queued = [data]
        else:
            queued.append(data)

    def send_queued(self) -> None:
        """Send what was queued to every member, joined: one ``push`` per connection under
        the slow-consumer policy (``server.push_each``). A batch whose members need bytes of
        their own overrides this."""
        queued, self.queued = self.queued, None
        if not queued or not self:
            return
        if len(queued) == 1:
            self[0].server.push_each(self, queued[0])
        else:
            self[0].server.push_each(self, b"".join(queued), burst=True)


def _send_queued(batches) -> None:
    """After a burst is written: each batch sends what its ``write`` methods queued."""
    for batch in batches:
        if getattr(batch, "queued", None):
            try:
                batch.send_queued()
            except Exception:
                log.exception("sending a burst to %s failed", type(batch).__name__)


class SSEBatch(Batch):
    """Connections with an SSE stream over HTTP/1.1 (each event one chunk)."""

    __slots__ = ()


class RawSSEBatch(Batch):
    """Connections with an SSE stream over HTTP/1.0 (close-delimited, no chunks)."""

    __slots__ = ()


class VectorBatch(Batch):
    """Streams of several channels whose broker keeps positions per channel (Redis): each
    gets the event with its own id, its position in every channel it reads (the
    subscriptions themselves)."""

    __slots__ = ()

    @classmethod
    def of(cls, members: dict) -> "VectorBatch":
        return cls(members.values())


class PollBatch(Batch):
    """Long-polls waiting for their next event (the waiters themselves)."""

    __slots__ = ()
    transport = "poll"

    @classmethod
    def of(cls, members: dict) -> "PollBatch":
        return cls(members.values())


@attrs.define(slots=True, eq=False)
class _Subs:
    """One channel's subscribers on one server, by transport: ``{batch class: {connection:
    subscription}}`` (streams of each transport, waiting long-polls). A published event is
    written to each transport's batch with one ``write``."""

    batches: dict = attrs.field(factory=dict)
    last: float = 0.0                           # last time anything was sent (heartbeats)
    version: int = 0                            # changes when a subscriber comes or goes

    def __bool__(self) -> bool:
        return any(self.batches.values())

    def __len__(self) -> int:
        return sum(len(members) for members in self.batches.values())

    def add(self, sub) -> None:
        self.version += 1
        members = self.batches.get(sub.batch)
        if members is None:
            members = self.batches[sub.batch] = {}
        members[sub.conn] = sub

    def streams(self) -> list:
        """The connections with a stream (not the waiting polls)."""
        return [conn for kind, members in self.batches.items() if kind is not PollBatch
                for conn in members]


@attrs.define(slots=True, eq=False, repr=False)
class Channel:
    """A named channel: its subscribers per server and its bounded history.

    ``evicted`` is the sequence number of the newest event no longer kept: a client whose last
    id is older than that has missed events that cannot be replayed, and is sent ``reset``.
    ``bytes`` is what its history costs (the sum of the kept events' ``size``).
    """

    name: str
    registry: Any
    history: deque = attrs.field(factory=deque)
    evicted: int = 0
    last_id: str | None = None
    subs: dict = attrs.field(factory=dict)  # Server -> _Subs
    bytes: int = 0
    last_time: float = 0.0  # when the last event was published (monotonic), for idle streams
    events_total: int = 0   # events published on it (here, or carried by the broker)

    def __repr__(self) -> str:
        return (f"<Channel {self.name[:60]!r} history={len(self.history)} ({self.bytes} bytes) "
                f"last={self.last_id}>")


@attrs.define(slots=True, eq=False)
class _Local:
    """A registry's per-server state: events waiting to be fanned out on that loop, in order.
    ``tail`` is ``(subs, its version, the outbox's last entry)``: the next event of the same
    channel, with the same subscribers, shares that entry's batches (a burst)."""

    outbox: deque = attrs.field(factory=deque)
    scheduled: bool = False
    tail: tuple | None = None
    delivered: int = 0  # events written to subscribers on that server (one per subscriber)


def _epoch() -> str:
    n = secrets.randbelow(36 ** 5)
    return "".join(_ALPHABET[(n // 36 ** i) % 36] for i in range(5))


@attrs.define(slots=True, eq=False, repr=False)
class Channels:
    """A registry of channels: subscribers, bounded history, heartbeats, publishing.

    Event ids are ``EPOCH-SEQ`` (``"k3f9a-17"``): ``SEQ`` grows by one per event across the whole
    registry, so one ``Last-Event-ID`` places a client in every channel it reads; ``EPOCH`` is
    random per registry, so an id from before a restart is recognised as unknown.

    >>> registry = Channels(history=100, max_age=60.0, heartbeat=15.0)
    >>> event_id = registry.publish("news", "hello")

    ``history``/``max_age``/``history_bytes`` bound what each channel keeps for resume (count,
    seconds, bytes); ``max_bytes`` bounds the whole registry (every channel's history, and each
    channel's name and bookkeeping). Each bound evicts the oldest events first, the registry's
    across all channels, and a client whose last id is behind an evicted event gets ``reset``.
    An event's cost is its ``size``: its wire bytes (raw and chunked), its data and a fixed
    overhead, so a flood of tiny events is bounded too.

    ``heartbeat`` is the idle interval between comment heartbeats; ``retry``/``retry_jitter``
    (seconds) set the client's reconnection delay: ``retry`` plus a random part up to
    ``retry_jitter``, chosen per connection so a restart does not bring every client back in the
    same millisecond.

    ``max_channels`` bounds how many channels exist at once. At the bound, a new channel takes the
    place of the least recently used channel that has no subscriber (it holds only history,
    which is forgotten: a client resuming on it gets ``reset``). Only when every channel has a
    subscriber (a stream or a waiting poll) is a new channel refused, with a 503; a refused
    multi-channel join registers none of its channels.
    """

    history: int = 1000
    max_age: float = 300.0
    heartbeat: float = 15.0
    retry: float = 2.0
    retry_jitter: float = 2.0
    max_channels: int = 100_000
    history_bytes: int = 1 << 20
    max_bytes: int = 64 << 20
    broker: Any = None
    presence_events: bool = False
    presence_ttl: float = 30.0
    _channels: dict = attrs.field(factory=dict)
    _lock: Any = attrs.field(factory=threading.Lock)
    _seq: int = 0
    _epoch: str = attrs.field(factory=_epoch)
    _forgotten: int = 0
    _locals: Any = attrs.field(factory=weakref.WeakKeyDictionary)
    # the channels with no subscriber, least recently used first (they may be evicted)
    _idle: OrderedDict = attrs.field(factory=OrderedDict, repr=False)
    # (seq, channel name) of every kept event, oldest first, and some evicted since (_compact)
    _order: deque = attrs.field(factory=deque, repr=False)
    _kept: int = 0   # how many events the histories hold
    _bytes: int = 0  # what the histories and the channels cost (used_bytes)
    published: int = 0  # events published through this registry (metrics)

    def __attrs_post_init__(self):
        _registries.add(self)

    def __repr__(self) -> str:
        return (f"<Channels {len(self._channels)} channels, {self._bytes} bytes of history, "
                f"last {self.last_id}>")

    # -- the broker --------------------------------------------------------------------------

    def backplane(self):
        """The broker that stores and carries this registry's events: ``broker`` when given;
        else a :class:`~clos_web.push.redis_broker.RedisBroker` for the URL in the environment
        variable ``CLOS_WEB_REDIS`` (``python -m clos_web --redis URL`` sets it); else
        :data:`LOCAL`, this process's memory (the default).

        >>> Channels(broker=LOCAL).backplane()
        <LocalBroker>
        """
        broker = self.broker
        if broker is None:
            url = os.environ.get("CLOS_WEB_REDIS")
            if url:
                from .redis_broker import RedisBroker
                broker = RedisBroker(url)
            else:
                broker = LOCAL
            self.broker = broker
        return broker

    # -- ids ---------------------------------------------------------------------------------

    @property
    def last_id(self) -> str:
        """The id of the newest event published through this registry (``EPOCH-0`` if none)."""
        return f"{self._epoch}-{self._seq}"

    def _parse_id(self, text: str | None) -> int | None:
        """``None`` when no id was given; ``-1`` when unknown (other epoch, garbage, future)."""
        if text is None:
            return None
        epoch, sep, num = text.strip().partition("-")
        if (sep and epoch == self._epoch and num.isascii() and num.isdigit() and len(num) < 19
                and int(num) <= self._seq):
            return int(num)
        return -1

    # -- inspection --------------------------------------------------------------------------

    @property
    def used_bytes(self) -> int:
        """The bytes this registry accounts for: every kept event's ``size`` and each channel's
        name and bookkeeping. History is evicted to keep it within ``max_bytes``.

        >>> Channels().used_bytes
        0
        """
        return self._bytes

    def __contains__(self, name: str) -> bool:
        return name in self._channels

    def __len__(self) -> int:
        return len(self._channels)

    def names(self) -> list:
        """The names of the channels that exist now (with subscribers or history)."""
        with self._lock:
            return list(self._channels)

    def presence(self, name: str) -> dict:
        """Who reads channel ``name`` now, in every process: ``{client id: info}`` for each
        stream whose handler gave presence info (``EventStream(..., presence=info)``).

        With a Redis broker it asks Redis (entries of a process that died age out within
        ``presence_ttl`` seconds), so it waits: call it from another thread (a
        ``blocking=True`` handler, the REPL), not on the loop, where it raises; on the loop,
        streams learn presence from their ``presence`` snapshot and ``join``/``leave``
        events (``presence_events=True``).

        >>> Channels().presence("lobby")
        {}
        """
        return broker_presence(self.backplane(), self, name)

    def _presence_local(self, name: str) -> dict:
        with self._lock:
            ch = self._channels.get(name)
            if ch is None:
                return {}
            return {sub.client: sub.presence for subs in ch.subs.values()
                    for members in subs.batches.values() for sub in members.values()
                    if getattr(sub, "client", None) is not None}

    def _presence_event(self, kind: str, name: str, client: str, info) -> Event:
        """A ``join``/``leave`` (``{"client", "info"}``) or ``presence`` snapshot event
        (``{client: info}``, ``client`` ``None``) for one stream, with no id: it places no
        client anywhere in the channel."""
        data = json_text({"client": client, "info": info} if client is not None else info)
        raw = sse.encode(data, kind)
        return Event("", 0, name, kind, data, time.monotonic(), raw, sse.chunk(raw))

    def subscriber_count(self, name: str | None = None) -> int:
        """How many connections (streams and waiting polls) read ``name`` (or any channel)."""
        with self._lock:
            chans = self._channels.values() if name is None else filter(
                None, [self._channels.get(name)])
            return sum(len(s)
                       for ch in chans for s in ch.subs.values())

    def events(self, name: str, after: str | None = None) -> list:
        """The :class:`Event` objects kept for ``name``, oldest first (those after id ``after``)."""
        with self._lock:
            ch = self._channels.get(name)
            if ch is None:
                return []
            self._prune(ch, time.monotonic())
            last = self._parse_id(after)
            return [e for e in ch.history if last is None or e.seq > last]

    def channel(self, name: str) -> Channel:
        """The :class:`Channel` named ``name`` (created if needed)."""
        with self._lock:
            return self._get(name)

    # -- internals under the lock ------------------------------------------------------------

    def _get(self, name: str) -> Channel:
        ch = self._channels.get(name)
        if ch is None:
            ch = self._get_all((name,))[0]
        return ch

    def _get_all(self, names) -> list:
        """The channels named ``names``, created if needed: all of them, or none and a 503.

        A full registry makes room by evicting the least recently used channels that have no
        subscriber, never one of ``names``.
        """
        channels = self._channels
        found = [channels.get(name) for name in names]
        if None not in found:  # the common case: every channel exists
            return found
        missing = [name for name in dict.fromkeys(names) if name not in channels]
        if missing:
            excess = len(channels) + len(missing) - self.max_channels
            if excess > 0:
                victims = []
                if excess <= len(self._idle):
                    wanted = set(names)
                    for name, ch in self._idle.items():
                        if name not in wanted:
                            victims.append(ch)
                            if len(victims) == excess:
                                break
                if len(victims) < excess:
                    raise HTTPError(503, "too many channels, all with subscribers")
                for ch in victims:
                    self._drop(ch)
            for name in missing:
                channels[name] = self._idle[name] = Channel(name, self, evicted=self._forgotten)
                self._bytes += _channel_size(name)
        return [channels[name] for name in names]

    def _drop(self, ch: Channel) -> None:
        """Remove ``ch`` (registered, no subscriber) and forget its history."""
        if self.broker is not None:
            broker_leave(self.broker, self, ch.name)
        history = ch.history
        if history:
            self._forget(ch, history[-1].seq)
            self._bytes -= ch.bytes
            self._kept -= len(history)
            ch.bytes = 0
            history.clear()  # their places in _order are stale now
        del self._channels[ch.name]
        self._idle.pop(ch.name, None)
        self._bytes -= _channel_size(ch.name)

    def _keep(self, ch: Channel, event: Event) -> None:
        ch.history.append(event)
        ch.bytes += event.size
        self._bytes += event.size
        self._kept += 1
        order = self._order
        order.append((event.seq, event.channel))
        if len(order) > 2 * self._kept + 64:
            self._compact()

    def _compact(self) -> None:
        """Drop the records of evicted events from ``_order``: it holds at most about one
        evicted record per kept event, and compacting costs O(1) amortised per publish. An
        event is kept while its channel's ``evicted`` is below its ``seq``."""
        channels = self._channels
        self._order = deque(
            (seq, name) for seq, name in self._order
            if (ch := channels.get(name)) is not None and seq > ch.evicted)

    def _shed(self) -> None:
        """Evict the registry's oldest events, whatever their channel, down to ``max_bytes``;
        a channel left with no history and no subscriber goes too."""
        order, channels = self._order, self._channels
        while self._bytes > self.max_bytes and order:
            seq, name = order.popleft()
            ch = channels.get(name)
            if ch is None or not ch.history or ch.history[0].seq != seq:
                continue  # evicted already (older events of a channel come first in _order)
            self._evict(ch, ch.history.popleft())
            if not ch.history and not ch.subs:
                self._drop(ch)

    def _prune(self, ch: Channel, now: float) -> None:
        history = ch.history
        cutoff = now - self.max_age
        while history and history[0].time < cutoff:
            self._evict(ch, history.popleft())

    def _forget(self, ch: Channel, seq: int) -> None:
        ch.evicted = seq
        if seq > self._forgotten:
            self._forgotten = seq

    def _evict(self, ch: Channel, event: Event) -> None:
        """``event`` (the oldest of ``ch``) was taken off its history: account for it."""
        self._forget(ch, event.seq)
        ch.bytes -= event.size
        self._bytes -= event.size
        self._kept -= 1

    def _maybe_drop(self, ch: Channel) -> None:
        if not ch.subs and not ch.history and self._channels.get(ch.name) is ch:
            self._drop(ch)

    def _local(self, server) -> _Local:
        local = self._locals.get(server)
        if local is None:
            local = self._locals[server] = _Local()
            server.add_sweeper(functools.partial(self._sweep, server))
        return local

    def _subs(self, ch: Channel, server) -> _Subs:
        subs = ch.subs.get(server)
        if subs is None:
            self._local(server)
            if not ch.subs:
                self._idle.pop(ch.name, None)  # a channel with a subscriber is never evicted
            subs = ch.subs[server] = _Subs(last=server.now)
        return subs

    def _catch_up(self, names, last_id: str | None, now: float, budget: int | None = None):
        """What a client at ``last_id`` must get before live events: ``(resets, events)``.

        ``resets`` lists the channels whose gap history cannot cover; ``events`` are the missed
        events of the others, in id order. When their chunks come to more than ``budget`` bytes,
        every channel with missed events is reset instead (and ``events`` is empty).
        """
        last = self._parse_id(last_id)
        if last is None:
            return [], []
        resets, events, behind = [], [], []
        size, over = 0, False
        for name in names:
            ch = self._channels.get(name)
            if ch is not None:
                self._prune(ch, now)
            evicted = ch.evicted if ch is not None else self._forgotten
            if last < 0 or last < evicted:
                resets.append(name)
                continue
            if ch is None or not ch.history or ch.history[-1].seq <= last:
                continue
            behind.append(name)
            if over:
                continue
            missed = []
            for event in reversed(ch.history):
                if event.seq <= last:
                    break
                size += len(event.chunk)
                if budget is not None and size > budget:
                    over = True
                    break
                missed.append(event)
            missed.reverse()
            events.extend(missed)
        if over:
            return resets + behind, []
        if len(names) > 1 and events:
            events.sort(key=lambda e: e.seq)
        return resets, events

    def _reset_event(self, name: str, with_id: bool, at: Event | None = None) -> Event:
        """``reset`` for channel ``name``: its data is the channel's last id; its id (if
        ``with_id``) is where the client resumes: now, or just after ``at`` when given."""
        ch = self._channels.get(name)
        data = ch.last_id if ch is not None and ch.last_id is not None else self.last_id
        pos, seq = (self.last_id, self._seq) if at is None else (at.id, at.seq)
        raw = sse.encode(data, "reset", pos if with_id else None)
        return Event(pos, seq, name, "reset", data, time.monotonic(), raw, sse.chunk(raw))

    # -- publishing --------------------------------------------------------------------------

    def publish(self, name: str, message, event: str | None = None) -> str:
        """Publish ``message`` on channel ``name``; return its event id. Safe from any thread.

        ``event`` overrides the event type chosen by :func:`encode_event`. This is the generic
        function :func:`publish` on the channel, so a method added to it (an ``around`` method
        that audits, a ``before`` method that authorises) sees every publish.
        """
        if event is not None:
            message = Message(message, event)
        return publish(self.channel(name), message)

    def _publish(self, name: str, message):
        """The work of ``publish``: encode once, then the broker stores and carries it."""
        etype, data = encode_event(message)
        self.published += 1
        return broker_publish(self.backplane(), self, name, etype, data)

    def _publish_local(self, name: str, etype: str | None, data: str) -> str:
        """Publish in this process (the :data:`LOCAL` broker): an id, history, fan-out."""
        body = sse.encode_body(data, etype)
        now = time.monotonic()
        with self._lock:
            ch = self._channels.get(name)
            if ch is None:
                ch = self._get(name)  # 503 when every channel has subscribers
            seq = self._seq = self._seq + 1
            eid = f"{self._epoch}-{seq}"
            raw = b"id: " + eid.encode("ascii") + b"\n" + body
            chunk = sse.chunk(raw)
            ev = Event(eid, seq, name, etype, data, now, raw, chunk, _event_size(raw, chunk, data))
            ch.last_id = eid
            ch.last_time = now
            ch.events_total += 1
            history = ch.history
            if self.history > 0:
                self._keep(ch, ev)
                while len(history) > self.history or ch.bytes > self.history_bytes:
                    self._evict(ch, history.popleft())
                if history and history[0].time < now - self.max_age:
                    self._prune(ch, now)
                if self._bytes > self.max_bytes:
                    self._shed()
            else:
                while history:
                    self._evict(ch, history.popleft())
                self._forget(ch, seq)
            if ch.subs:
                self._fan_out(ch, ev)
            elif not history:
                self._maybe_drop(ch)
            elif name in self._idle:
                self._idle.move_to_end(name)  # the least recently used idle channel goes first
        return eid

    def _fan_out(self, ch: Channel, ev: Event) -> None:
        """Queue ``ev`` for every subscriber of ``ch`` on each server (under the lock); each
        loop fans out what is queued after the ready sockets of its turn (``_drain``, a
        callback), so the events published in one turn go out together."""
        for server, subs in ch.subs.items():
            subs.last = server.now
            local = self._locals[server]
            outbox = local.outbox
            tail = local.tail
            if (tail is not None and tail[0] is subs and tail[1] == subs.version and outbox
                    and outbox[-1] is tail[2]):
                entry = (ev, tail[2][1])  # the same subscribers: the same batches (a burst)
            else:
                entry = (ev, [kind.of(members) for kind, members in subs.batches.items()
                              if members])
            outbox.append(entry)
            local.tail = (subs, subs.version, entry)
            if not local.scheduled:
                local.scheduled = True
                server.call_soon_threadsafe(self._drain, server, local)

    def _deliver(self, ev: Event) -> None:
        """Hand ``ev``, published elsewhere and carried by the broker, to this process's
        subscribers of its channel (any thread; events of a channel in order)."""
        with self._lock:
            ch = self._channels.get(ev.channel)
            if ch is None:
                return
            ch.last_id = ev.id
            ch.last_time = ev.time
            ch.events_total += 1
            if ch.subs:
                self._fan_out(ch, ev)

    def _drain(self, server, local: _Local) -> None:
        """Fan out what waits in ``local``'s outbox (loop thread): ``write(event, batch)`` for
        every batch of subscribers, the event encoded once (its bytes are shared by all). A
        run of entries sharing their batches (a burst of one channel) is sent once written:
        one ``send`` per subscriber for the whole run."""
        lock = self._lock
        outbox = local.outbox
        while True:
            with lock:
                if not outbox:
                    local.scheduled = False
                    local.tail = None
                    return
                batch = list(outbox)
                outbox.clear()
                local.tail = None
            current = None
            for ev, batches in batch:
                if batches is not current:
                    if current is not None:
                        _send_queued(current)
                    current = batches
                for subscribers in batches:
                    local.delivered += len(subscribers) if isinstance(subscribers, list) else 1
                    try:
                        write(ev, subscribers)
                    except Exception:
                        log.exception("writing %r to %s failed", ev, type(subscribers).__name__)
            if current is not None:
                _send_queued(current)

    def _drain_now(self, server) -> None:
        """Fan out at once what waits for ``server``'s loop (loop thread): before a stream
        ends, so that it is sent what was published before."""
        local = self._locals.get(server)
        if local is not None and local.outbox:
            self._drain(server, local)

    # -- joining and leaving -----------------------------------------------------------------

    def _join(self, sub: "Subscription", last_id: str | None, budget: int | None = None):
        """Subscribe ``sub`` through the broker: see :func:`broker_join`."""
        return broker_join(self.backplane(), self, sub, last_id, budget)

    def _join_local(self, sub: "Subscription", last_id: str | None, budget: int | None = None):
        """Subscribe ``sub`` to all its channels (or none: a 503 registers nothing) and return
        what it must be sent first: the missed events, or ``reset`` events when history cannot
        cover the gap or the missed events come to more than ``budget`` bytes."""
        server = sub.conn.server
        names = sub.names
        with self._lock:
            chans = self._get_all(names)
            if last_id is None:
                first = []  # a new client: nothing missed
            else:
                resets, events = self._catch_up(names, last_id, time.monotonic(), budget)
                first = [self._reset_event(name, not events) for name in resets] + events
            for i, ch in enumerate(chans):
                self._subs(ch, server).add(sub)
                # the channel's own name: the stream keeps no copy of it (one per client,
                # made from its request) while it is subscribed
                names[i] = ch.name
        return first

    def _live(self, sub: "Subscription", name: str, first: list) -> None:
        """A broker's catch-up of ``sub`` on channel ``name`` is done: send it ``first`` (the
        missed events) and make it a live subscriber, in that order (any thread)."""
        server = sub.conn.server
        with self._lock:
            try:
                ch = self._get(name)
            except HTTPError:
                _on_loop(server, end_stream, sub.conn)
                return
            self._subs(ch, server).add(sub)
            if not first:
                return
            local = self._locals[server]
            for ev in first:
                local.outbox.append((ev, [sub]))
            if local.scheduled:
                return
            local.scheduled = True
            now = server._ident == threading.get_ident()
            if not now:
                server.call_soon_threadsafe(self._drain, server, local)
        if now:
            self._drain(server, local)

    def _add(self, sub: "Subscription", name: str) -> None:
        broker_add(self.backplane(), self, sub, name)

    def _add_local(self, sub: "Subscription", name: str) -> None:
        with self._lock:
            if name in sub.names:
                return
            ch = self._get(name)
            self._subs(ch, sub.conn.server).add(sub)
            sub.names.append(ch.name)

    def _remove(self, conn, names, server) -> None:
        """Remove ``conn`` (its stream or its waiting poll) from the subscribers of ``names``
        on ``server``."""
        with self._lock:
            for name in names:
                ch = self._channels.get(name)
                if ch is None:
                    continue
                subs = ch.subs.get(server)
                if subs is None:
                    continue
                subs.version += 1
                for members in subs.batches.values():
                    members.pop(conn, None)
                if not subs:
                    del ch.subs[server]
                    if not ch.subs and ch.history and self._channels.get(name) is ch:
                        self._idle[name] = ch  # idle now: the most recently used
                    self._maybe_drop(ch)

    # -- the sweep: heartbeats and age -------------------------------------------------------

    def _sweep(self, server, now: float) -> None:
        """Once a second on ``server``'s loop: expire old history, heartbeat idle channels."""
        beat = []
        mono = time.monotonic()  # events are timed by it (from any thread), not by a loop
        with self._lock:
            idle = now - self.heartbeat
            for ch in list(self._channels.values()):
                if ch.history and ch.history[0].time < mono - self.max_age:
                    self._prune(ch, mono)
                subs = ch.subs.get(server)
                if subs is not None and subs.last <= idle and subs:
                    subs.last = now
                    beat += [kind.of(members) for kind, members in subs.batches.items()
                             if members]
                self._maybe_drop(ch)
        for subscribers in beat:
            try:
                write(HEARTBEAT, subscribers)
            except Exception:
                log.exception("heartbeat to %s failed", type(subscribers).__name__)

    # -- metrics -----------------------------------------------------------------------------

    def server_stats(self, server, top: int = 10):
        """What this registry serves on ``server`` (for :mod:`clos_web.ops.metrics`), or
        ``None`` when nothing of it ever reached that server: ``{"subscribers": {transport:
        n}, "channels": n, "delivered": n, "published": n, "top": [(subscribers, name,
        events_total), ...]}`` (the ``top`` channels with the most subscribers there). It
        walks the channels once (O(channels)): for a scrape or a dashboard, not per request.

        >>> from clos_web import Server
        >>> Channels().server_stats(Server(None)) is None
        True
        """
        local = self._locals.get(server)
        if local is None:
            return None
        subscribers, ranked = {}, []
        with self._lock:
            for ch in self._channels.values():
                subs = ch.subs.get(server)
                if subs is None:
                    continue
                n = 0
                for kind, members in subs.batches.items():
                    if members:
                        subscribers[kind.transport] = subscribers.get(kind.transport, 0) + len(
                            members)
                        n += len(members)
                if n:
                    ranked.append((n, ch.name, ch.events_total))
            count = len(self._channels)
        ranked.sort(key=lambda r: -r[0])
        return {"subscribers": subscribers, "channels": count, "delivered": local.delivered,
                "published": self.published, "top": ranked[:top]}

    # -- ending streams ----------------------------------------------------------------------

    def disconnect(self, name: str | None = None) -> int:
        """End every SSE stream reading ``name`` (every stream of this registry if ``None``).

        The clients reconnect by themselves and resume from history. Safe from any thread;
        returns how many streams are being ended.
        """
        per_server = {}
        with self._lock:
            chans = list(self._channels.values()) if name is None else filter(
                None, [self._channels.get(name)])
            for ch in chans:
                for server, subs in ch.subs.items():
                    per_server.setdefault(server, {}).update(dict.fromkeys(subs.streams()))
        for server, conns in per_server.items():
            _on_loop(server, _end_all, list(conns))
        return sum(len(c) for c in per_server.values())


@attrs.define(slots=True, frozen=True)
class Heartbeat:
    """What a stream is sent when nothing was published for a while (``Channels.heartbeat``):
    ``write(HEARTBEAT, sub)`` sends it the way its transport keeps a connection alive (an SSE
    comment line; a WebSocket ping)."""


HEARTBEAT = Heartbeat()


_HEARTBEAT = sse.HEARTBEAT  # a comment line and no blank line: no client sees an event
_HEARTBEAT_CHUNK = sse.chunk(_HEARTBEAT)

_registries = weakref.WeakSet()  # every Channels alive (metrics find a server's registries)


def registries() -> list:
    """Every :class:`Channels` registry alive in this process (metrics ask each for its
    ``server_stats``)."""
    return list(_registries)


channels = Channels()
"""The default registry, used by ``publish("name", ...)`` and by streams not given one."""


def _on_loop(server, fn, *args) -> None:
    if server._ident == threading.get_ident():
        fn(*args)
    else:
        server.call_soon_threadsafe(fn, *args)


def _end_all(conns) -> None:
    for conn in conns:
        end_stream(conn)


def end_stream(conn: Connection) -> None:
    """End the stream on ``conn`` cleanly (an SSE stream's last chunk, then close); loop
    thread only."""
    http = conn.protocol
    sub = getattr(http, "stream", None)
    if isinstance(sub, Subscription):
        sub.registry._drain_now(conn.server)  # what was published before goes first
        http.stream = None
        names, sub.names = sub.names, []
        sub.registry._remove(conn, names, conn.server)
        write(END, sub)
        if not sub.closes_connection:
            return  # its END began a close of its own (a WebSocket's closing handshake)
    if not conn.closed:
        conn.server.close_when_sent(conn)


@stream_idle.dispatch
def stream_idle_subscription(stream: Subscription, conn: Connection):
    # Idle means no event published on any of its channels for the whole timeout (heartbeats
    # do not count): then the stream ends cleanly; else its deadline moves on.
    server = conn.server
    timeout = server.limits.stream_idle_timeout
    registry = stream.registry
    with registry._lock:
        chans = [registry._channels.get(name) for name in stream.names]
        last = max((ch.last_time for ch in chans if ch is not None), default=0.0)
    if timeout is not None and last + timeout > server.now:
        server.set_deadline(conn, last + timeout)
    else:
        end_stream(conn)


@shutdown_stream.dispatch
def shutdown_stream_subscription(stream: Subscription, conn: Connection):
    end_stream(conn)  # the last chunk, then close


@attrs.define(slots=True, frozen=True)
class End:
    """What a stream is sent last when it ends cleanly: ``write(END, sub)`` (an SSE stream
    over HTTP/1.1: the last chunk, so the client sees a complete response and reconnects)."""


END = End()


# --------------------------------------------------------------------------------------------
# The generic functions of the push protocol


@generic
def publish(channel, message):
    """Publish ``message`` on ``channel``; return the event id. Safe from any thread.

    ``channel`` is a name (the default registry :data:`channels`) or a :class:`Channel`
    (its own registry). ``encode_event`` decides the event type and data text.

    >>> publish("news", {"headline": "clos_web ships"})  # doctest: +ELLIPSIS
    '...-...'
    """


@publish.dispatch
def publish_str(channel: str, message):
    return channels.publish(channel, message)


@publish.dispatch
def publish_channel(channel: Channel, message):
    return channel.registry._publish(channel.name, message)


@generic
def subscribe(channel, conn):
    """Add ``channel`` (a name or :class:`Channel`) to the SSE stream on ``conn`` (live events
    from now on). Call it on the loop thread, e.g. from a handler or a ``close_stream`` method."""


@subscribe.dispatch
def subscribe_str(channel: str, conn: Connection):
    sub = _subscription(conn)
    sub.registry._add(sub, channel)


@subscribe.dispatch
def subscribe_channel(channel: Channel, conn: Connection):
    sub = _subscription(conn)
    if sub.registry is not channel.registry:
        raise ValueError("the channel belongs to another registry than the stream")
    sub.registry._add(sub, channel.name)


@generic
def unsubscribe(channel, conn):
    """Remove ``channel`` (a name or :class:`Channel`) from the stream on ``conn``; ``None``
    removes every channel (the stream stays open)."""


@unsubscribe.dispatch
def unsubscribe_str(channel: str, conn: Connection):
    sub = _subscription(conn)
    if channel in sub.names:
        sub.names.remove(channel)
        sub.registry._remove(conn, [channel], conn.server)


@unsubscribe.dispatch
def unsubscribe_channel(channel: Channel, conn: Connection):
    unsubscribe(channel.name, conn)


@unsubscribe.dispatch
def unsubscribe_none(channel: None, conn: Connection):
    sub = _subscription(conn)
    names, sub.names = sub.names, []
    sub.registry._remove(conn, names, conn.server)


def _subscription(conn: Connection) -> "Subscription":
    sub = getattr(conn.protocol, "stream", None)
    if not isinstance(sub, Subscription):
        raise ValueError("the connection is not a stream of channels")
    return sub


# --------------------------------------------------------------------------------------------
# What handlers return: EventStream (SSE) and LongPoll


def _names(value) -> list:
    if isinstance(value, str):
        return [value]
    return list(value)


@attrs.define(slots=True)
class EventStream:
    """Return this from a handler to answer with an SSE stream of ``channels``.

    ``last_id`` defaults to the request's ``Last-Event-ID`` header or ``lastEventId`` query
    parameter; ``registry`` to the default :data:`channels`. ``presence`` (a JSON-able value,
    ``{"user": "ada"}``) makes the stream present on its channels: see
    :meth:`Channels.presence`.

    >>> EventStream(["news", "user-42"], presence={"user": "ada"})  # doctest: +NORMALIZE_WHITESPACE
    EventStream(channels=['news', 'user-42'], last_id=None, registry=None, headers=(),
                presence={'user': 'ada'})
    """

    channels: list = attrs.field(converter=_names)
    last_id: str | None = None
    registry: Channels | None = None
    headers: tuple = attrs.field(default=(), converter=_check_headers)
    presence: Any = None


@attrs.define(slots=True)
class LongPoll:
    """Return this from a handler to answer a long-poll on ``channels`` as JSON.

    The answer is ``{"events": [{"id", "event", "data"}, ...], "last_id": ID}``: at once if
    events after ``last_id`` (default: the ``Last-Event-ID`` header or ``lastEventId`` query
    parameter) are in history, else when the next event comes, else after ``timeout`` seconds
    with no events. An answer carries the oldest missed events that fit in half the output cap;
    the client polls again from ``last_id`` for the rest. A gap history cannot cover answers a
    ``reset`` event for every channel the client is behind on, and ``last_id`` is then now; an
    event too large for an answer is answered with ``reset`` for its channel, at its id.
    """

    channels: list = attrs.field(converter=_names)
    last_id: str | None = None
    timeout: float = 25.0
    registry: Channels | None = None
    headers: tuple = attrs.field(default=(), converter=_check_headers)


@with_headers.dispatch
def with_headers_event_stream(result: EventStream, headers):
    return attrs.evolve(result, headers=result.headers + tuple(headers))


@with_headers.dispatch
def with_headers_long_poll(result: LongPoll, headers):
    return attrs.evolve(result, headers=result.headers + tuple(headers))


@attrs.define(slots=True, eq=False, repr=False)
class Subscription:
    """A stream reading channels (``conn.protocol.stream``): its registry, connection and
    channel names. This class is the SSE transport over HTTP/1.1 (each event one chunk); a
    transport is a subclass with its own ``write`` methods for :class:`Event`,
    :class:`Heartbeat` and :class:`End` (:class:`RawSubscription` is SSE over HTTP/1.0)."""

    registry: Channels
    conn: Connection
    names: list
    presence: Any = None       # what the handler says of this client (presence), if anything
    client: str | None = None  # its presence id
    batch = SSEBatch  # what a fan-out writes to: many of these at once
    closes_connection = True  # end_stream closes the connection after END (not a WebSocket)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.names[:5]!r}{'...' if len(self.names) > 5 else ''}>"


@attrs.define(slots=True, eq=False, repr=False)
class RawSubscription(Subscription):
    """SSE over HTTP/1.0: the events as they are, the stream ending when the connection
    closes (no chunks)."""

    batch = RawSSEBatch


@attrs.define(slots=True, eq=False, repr=False)
class VectorSubscription(Subscription):
    """SSE over HTTP/1.1 reading several channels of a broker whose positions are per channel
    (Redis): each event's id is the stream's position in every channel
    (``positions``, ``{name: "EPOCH-OFFSET"}``, as :func:`~clos_web.push.broker.vector_id`
    writes it), so one ``Last-Event-ID`` resumes them all."""

    positions: dict = attrs.field(factory=dict)
    batch = VectorBatch

    def frame(self, event: Event, body: bytes) -> bytes:
        """``event`` (``body``: its wire form without the id line) with this stream's id,
        framed for its connection (one chunk)."""
        return sse.chunk(self.raw(event, body))

    def raw(self, event: Event, body: bytes) -> bytes:
        if event.id:
            self.positions[event.channel] = event.id
        return b"id: " + vector_id(self.positions).encode("ascii") + b"\n" + body


def _body(event: Event) -> bytes:
    """``event``'s wire form without its ``id:`` line (each vector stream writes its own)."""
    raw = event.raw
    return raw.partition(b"\n")[2] if raw.startswith(b"id: ") else raw


@attrs.define(slots=True, eq=False, repr=False)
class RawVectorSubscription(VectorSubscription):
    """:class:`VectorSubscription` over HTTP/1.0 (no chunks)."""

    def frame(self, event: Event, body: bytes) -> bytes:
        return self.raw(event, body)

@write.dispatch
def write_event_sse(event: Event, sub: Subscription):
    conn = sub.conn
    conn.server.push(conn, event.chunk)


@write.dispatch
def write_event_sse_batch(event: Event, batch: SSEBatch):
    # the fan-out: the same chunk to every connection, sent with the rest of the burst
    batch.queue(event.chunk)


@write.dispatch
def write_event_sse_raw_batch(event: Event, batch: RawSSEBatch):
    batch.queue(event.raw)


@write.dispatch
def write_heartbeat_sse_batch(beat: Heartbeat, batch: SSEBatch):
    batch[0].server.push_each(batch, _HEARTBEAT_CHUNK)


@write.dispatch
def write_heartbeat_sse_raw_batch(beat: Heartbeat, batch: RawSSEBatch):
    batch[0].server.push_each(batch, _HEARTBEAT)


@write.dispatch
def write_event_vector(event: Event, sub: VectorSubscription):
    sub.conn.server.push(sub.conn, sub.frame(event, _body(event)))


@write.dispatch
def write_event_vector_batch(event: Event, batch: VectorBatch):
    body = _body(event)
    for sub in batch:  # each stream its own id: its position in each of its channels
        sub.conn.server.push(sub.conn, sub.frame(event, body))


@write.dispatch
def write_heartbeat_vector_batch(beat: Heartbeat, batch: VectorBatch):
    for sub in batch:
        write(beat, sub)


@write.dispatch
def write_heartbeat_raw_vector(beat: Heartbeat, sub: RawVectorSubscription):
    sub.conn.server.push(sub.conn, _HEARTBEAT)


@write.dispatch
def write_end_raw_vector(end: End, sub: RawVectorSubscription):
    return None  # the stream ends with the connection


@write.dispatch
def write_event_sse_raw(event: Event, sub: RawSubscription):
    sub.conn.server.push(sub.conn, event.raw)


@write.dispatch
def write_heartbeat_sse(beat: Heartbeat, sub: Subscription):
    sub.conn.server.push(sub.conn, _HEARTBEAT_CHUNK)


@write.dispatch
def write_heartbeat_sse_raw(beat: Heartbeat, sub: RawSubscription):
    sub.conn.server.push(sub.conn, _HEARTBEAT)


@write.dispatch
def write_end_sse(end: End, sub: Subscription):
    sub.conn.server.push(sub.conn, sse.LAST_CHUNK)


@write.dispatch
def write_end_sse_raw(end: End, sub: RawSubscription):
    return None  # the stream ends with the connection


@write.dispatch
def write_event_connection(event: Event, conn: Connection):
    # on a stream: the event goes to that one subscriber (not to the channel); otherwise it
    # is the answer, as long-poll shapes an event: {"id", "event", "data"}
    stream = getattr(conn.protocol, "stream", None)
    if stream is not None and conn.protocol.state is _HTTPState.STREAM:
        write(event, stream)
    else:
        send_response(Response(event.json(), content_type="application/json"), conn)


def request_last_id(request: Request | None) -> str | None:
    """The client's last event id: the ``Last-Event-ID`` header, else ``lastEventId`` (or
    ``last_id``) in the query string, else ``None``."""
    if request is None:
        return None
    value = request.headers.get("last-event-id")
    if value is not None:
        return value
    query = request.query
    if query and "ast" in query:
        try:
            params = parse_params(query)
        except HTTPError:
            return None
        for key in ("lastEventId", "last_id"):
            if key in params:
                return params[key][-1]
    return None


_SSE_FIELDS = header_block([("Content-Type", "text/event-stream"),
                            ("Cache-Control", "no-cache"), ("X-Accel-Buffering", "no")])
# A stream's head over HTTP/1.1 up to its end (``HTTPConnection.end_of_head`` adds that), made by
# the one head writer once a second (a new Date), as PlainText's is: what every new subscriber
# of a stream without headers of its own is sent first.
_sse_head = FixedHead(200, _SSE_FIELDS, chunked=True)


def _stream_head(http, headers: tuple, http10: bool) -> bytes:
    """The head of an SSE stream's answer on ``http`` (HTTP/1.1: chunked) with the handler's
    extra ``headers``; the once-a-second one when there are none (and it is HTTP/1.1)."""
    if headers or http10:
        return http.head(200, _SSE_FIELDS + header_block(headers), chunked=True)
    return _sse_head.current() + http.end_of_head(200)


@write.dispatch
def write_event_stream(obj: EventStream, conn: Connection):
    http = conn.protocol
    request = http.request
    server = conn.server
    registry = obj.registry if obj.registry is not None else channels
    http10 = http.http10
    if http.head_only:
        server.enqueue(conn, http.head(200, _SSE_FIELDS + header_block(obj.headers),
                                       chunked=True))
        return
    last_id = obj.last_id if obj.last_id is not None else request_last_id(request)
    names = list(obj.channels)
    if len(names) > 1 and registry.backplane() is not LOCAL:
        kind = RawVectorSubscription if http10 else VectorSubscription
    else:
        kind = RawSubscription if http10 else Subscription
    sub = kind(registry, conn, names)
    if obj.presence is not None:
        sub.presence, sub.client = obj.presence, secrets.token_hex(6)
    first = registry._join(sub, last_id, _budget(server, conn))  # may refuse (503)
    if first is not None and sub.client is not None and registry.presence_events:
        # the channels' presence now (this client included), before the live events
        first = list(first) + [registry._presence_event("presence", name, None,
                                                        registry._presence_local(name))
                               for name in names]
    # HTTP/1.1: chunked; HTTP/1.0: the stream ends when the connection closes
    head = _stream_head(http, obj.headers, http10)
    retry = int((registry.retry + random.random() * registry.retry_jitter) * 1000)
    # ": ok" and "retry:" end with no blank line: the first event's block absorbs them
    body = sse.preamble(retry)
    if first:
        body = b"".join([body] + [e.raw for e in first])
    http.start_stream(sub, server.now)
    conn.buf = http.buf  # the stream's bare input (the parser's Buffer is let go)
    server.enqueue(conn, head + (body if http10 else sse.chunk(body)))
    server.resume_reading(conn, always=True)  # to notice the client leaving, whatever is queued
    if sub.client is not None:
        for name in names:
            broker_present(registry.backplane(), registry, sub, name, True)


@attrs.define(slots=True, frozen=True)
class Accepted:
    """A handler's answer to a publish: ``202 Accepted`` with the event id (text/plain) once
    the broker has stored the event, ``503`` if it could not. ``publication`` is what
    ``registry.publish`` returned: an id, or a :class:`Publication` still on its way (a Redis
    broker on the loop thread); the answer waits for it without blocking the loop.

    Example::

        @app.post("/pub/{name}")
        def pub(request, name: str):
            return Accepted(registry.publish(name, request.body.decode()))
    """

    publication: Any


def _accepted_response(event_id: str) -> Response:
    return Response(event_id, status=202, content_type="text/plain")


@write.dispatch
def write_accepted(obj: Accepted, conn: Connection):
    pub = obj.publication
    if not isinstance(pub, Publication):
        send_response(_accepted_response(str(pub)), conn)
        return
    server = conn.server
    request = conn.protocol.request

    def settled(p: Publication) -> None:
        result = _accepted_response(p.id) if p.error is None else (
            p.error if isinstance(p.error, HTTPError)
            else BrokerUnavailable(f"the event was not stored: {p.error}"))
        server.call_soon_threadsafe(server.complete, conn, request, result)

    pub.then(settled)  # nothing written now: server.complete answers


def _budget(server, conn: Connection | None = None) -> int:
    """How many bytes a catch-up (an SSE stream's missed events, a long-poll answer) may queue
    on one connection: half the output cap, less what is queued already.

    A stream whose missed events come to more is sent ``reset`` instead of its backlog: the
    client reloads its state and goes on live. That keeps every connection within the cap at
    once, whether or not its client reads, and it is always correct (a reset is never a silent
    gap). Feeding the backlog as the client reads would replay more, but it needs the loop to
    call back when a queue drains and to hold live events back behind the replay; a client that
    far behind does better to reload. The other half of the cap is room for live events while
    the client reads its catch-up (past the cap it is a slow consumer, closed, and resumes).
    A long-poll answer carries the oldest missed events that fit and their last id, and the
    client polls again for the rest.
    """
    budget = server.limits.output_cap // 2
    return budget - conn.out_bytes if conn is not None else budget


@close_stream.dispatch
def close_stream_subscription(stream: Subscription, conn: Connection):
    names, stream.names = stream.names, []
    registry = stream.registry
    registry._remove(conn, names, conn.server)
    if stream.client is not None:
        for name in names:
            broker_present(registry.backplane(), registry, stream, name, False)


@attrs.define(slots=True, eq=False, repr=False)
class PollWaiter:
    """A long-poll waiting for its next event (``conn.protocol.stream`` while it waits): the
    long-poll transport. ``write(event, waiter)`` answers it."""

    registry: Channels
    conn: Connection
    request: Request
    names: list
    last_id: str
    headers: tuple = ()
    done: bool = False
    batch = PollBatch

    def __repr__(self) -> str:
        return f"<PollWaiter {self.names[:5]!r} done={self.done}>"

    def wake(self, parts, last_id: str) -> None:
        """Answer with the events encoded as JSON in ``parts`` and ``last_id`` (loop thread);
        later calls do nothing."""
        if self.done:
            return
        self.done = True
        conn = self.conn
        http = conn.protocol
        if http.stream is self:
            http.stream = None
        self.registry._remove(conn, self.names, conn.server)
        conn.server.complete(conn, self.request, _poll_response(parts, last_id, self.headers))

    def expire(self) -> None:
        self.wake([], self.last_id)


@write.dispatch
def write_event_poll(event: Event, waiter: PollWaiter):
    # An event whose JSON passes the poll budget (half the output cap) is answered with
    # ``reset`` instead: the client reloads that channel rather than the server queueing the
    # event, and polls again from its id (so events after it, on any channel, still come).
    part = _poll_json(event)
    if len(part) > _budget(waiter.conn.server):
        registry = waiter.registry
        with registry._lock:
            part = registry._reset_event(event.channel, True, at=event).json()
    waiter.wake([part], event.id)


@write.dispatch
def write_event_polls(event: Event, batch: PollBatch):
    for waiter in batch:  # each poll is answered on its own (a response each)
        write(event, waiter)


@write.dispatch
def write_heartbeat_polls(beat: Heartbeat, batch: PollBatch):
    return None  # a waiting poll needs no heartbeat: it is answered within its timeout


_last_json = [None, b""]  # [event, its JSON]: encoded once for all the polls it answers


def _poll_json(event: Event) -> bytes:
    if _last_json[0] is not event:
        _last_json[:] = event, event.json()
    return _last_json[1]


def _poll_response(parts, last_id: str, headers: tuple = ()) -> Response:
    """The long-poll answer: ``parts`` (events as JSON bytes) and the id to poll from next."""
    body = b'{"events":[' + b",".join(parts) + b'],"last_id":' + json_bytes(last_id) + b"}"
    return Response(body, content_type="application/json",
                    headers=(("Cache-Control", "no-cache"),) + headers)


def _fit(events, budget: int) -> list:
    """The JSON of the oldest ``events`` whose answer stays within ``budget`` bytes."""
    parts, size = [], 0
    for event in events:
        part = event.json()
        size += len(part) + 1
        if size > budget:
            break
        parts.append(part)
    return parts


@write.dispatch
def write_long_poll(obj: LongPoll, conn: Connection):
    http = conn.protocol
    request = http.request
    server = conn.server
    registry = obj.registry if obj.registry is not None else channels
    names = list(obj.channels)
    last_id = obj.last_id if obj.last_id is not None else request_last_id(request)
    if registry.backplane() is not LOCAL:
        # the broker finds what was missed elsewhere and answers with the first event (or
        # reset) it has for this poll; the client polls again from its id for the rest
        waiter = PollWaiter(registry, conn, request, names, last_id or "", obj.headers)
        if registry._join(waiter, last_id, _budget(server, conn)) is None:
            http.stream = waiter
            server.call_later(obj.timeout, waiter.expire)
        return
    with registry._lock:
        resets, events = registry._catch_up(names, last_id, time.monotonic())
        if resets:
            # a poll answers one position: every channel it is behind on reloads, from now
            resets += [n for n in dict.fromkeys(e.channel for e in events) if n not in resets]
            reset_events = [registry._reset_event(name, True) for name in resets]
        elif not events:
            position = last_id if registry._parse_id(last_id) is not None else registry.last_id
            waiter = PollWaiter(registry, conn, request, names, position, obj.headers)
            for ch in registry._get_all(names):  # all or none (503)
                registry._subs(ch, server).add(waiter)
    if resets:
        parts = [e.json() for e in reset_events]
        send_response(_poll_response(parts, reset_events[-1].id, obj.headers), conn)
        return
    if events:
        # the oldest missed events that fit; the client polls again from the last one
        parts = _fit(events, _budget(server, conn))
        if parts:
            last = events[len(parts) - 1].id
        else:  # the oldest alone passes the budget: its channel reloads, the rest follow
            with registry._lock:
                parts = [registry._reset_event(events[0].channel, True, at=events[0]).json()]
            last = events[0].id
        send_response(_poll_response(parts, last, obj.headers), conn)
        return
    # nothing is written now: the answer comes later (server.complete, from waiter.wake)
    http.stream = waiter
    server.call_later(obj.timeout, waiter.expire)


@close_stream.dispatch
def close_stream_waiter(stream: PollWaiter, conn: Connection):
    stream.done = True
    stream.registry._remove(conn, stream.names, conn.server)


# --------------------------------------------------------------------------------------------
# The stream handler decorator


def channel(registry: Channels | None = None, *, poll: bool = False, timeout: float = 25.0):
    """Make a handler a stream handler (House's ``define-channel``).

    The handler decides which channels the connection joins: it returns a channel name or a
    list of names, or ``False``/``None`` to refuse (403, which also stops a browser's
    ``EventSource`` from reconnecting); it may raise ``HTTPError`` too. Its parameters and their
    types are whatever the router binds (the wrapper keeps the signature). The connection gets an
    SSE stream, or with ``poll=True`` a long-poll answer. Usable bare (``@channel``) or called.

    Example::

        @app.get("/table/{table_id}/events")
        @channel(registry)
        def table_events(table_id: int, session: Session):
            if not session.get("player"):
                return False                  # 403
            return [f"table-{table_id}"]
    """
    if callable(registry) and not isinstance(registry, Channels):
        return channel()(registry)

    def decorate(fn):
        @functools.wraps(fn)
        def handler(*args, **kw):
            result = fn(*args, **kw)
            if result is None or result is False:
                raise HTTPError(403, "Forbidden")
            if isinstance(result, (EventStream, LongPoll, Response)):
                return result
            if poll:
                return LongPoll(result, timeout=timeout, registry=registry)
            return EventStream(result, registry=registry)

        return handler

    return decorate


__all__ = [
    "Channels", "Channel", "Event", "Message", "EventStream", "LongPoll", "Subscription",
    "RawSubscription", "VectorSubscription", "RawVectorSubscription", "PollWaiter", "Heartbeat",
    "HEARTBEAT", "End", "END", "Batch", "SSEBatch",
    "RawSSEBatch", "VectorBatch", "PollBatch",
    "channels", "channel", "publish", "subscribe", "unsubscribe", "encode_event", "end_stream",
    "request_last_id", "Accepted", "Publication", "BrokerUnavailable", "LOCAL",
]
