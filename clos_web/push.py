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
kept) the stream starts with an event of type ``reset`` whose data is the channel's last id.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import secrets
import threading
import time
import weakref
from collections import deque
from typing import Any

import attrs

from . import sse
from ._generic import dispatcher
from .http import (
    HTTPError, Request, Response, header_block, json_bytes, parse_params, response_head,
)
from .http import _headers as _check_headers
from .loop import STREAM as _STREAM, Connection, close_stream, send_response, shutdown_stream, write
from .responses import with_headers

log = logging.getLogger("clos_web.push")

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"

# --------------------------------------------------------------------------------------------
# Events


@attrs.define(slots=True, frozen=True, eq=False)
class Event:
    """One published event, encoded once and shared by every subscriber.

    ``raw`` is the SSE wire form (``id:``, ``event:``, ``data:`` lines); ``chunk`` is the same
    bytes framed as one HTTP/1.1 chunk. ``data`` is the text payload, ``event`` the event type
    (``None`` for the default ``message``), ``seq`` the number inside the id.
    """

    id: str
    seq: int
    channel: str
    event: str | None
    data: str
    time: float
    raw: bytes
    chunk: bytes
    _json: list = attrs.field(factory=list, repr=False)  # cache: [bytes] once computed

    def as_dict(self) -> dict:
        """``{"id", "event", "data"}``, as long-poll answers it."""
        return {"id": self.id, "event": self.event or "message", "data": self.data}

    def json(self) -> bytes:
        """:meth:`as_dict` as compact JSON bytes, encoded at most once."""
        cache = self._json
        if not cache:
            cache.append(json_bytes(self.as_dict()))
        return cache[0]


@attrs.define(slots=True, frozen=True)
class Message:
    """A message with an explicit SSE event type: ``publish("room", Message(card, "move"))``."""

    data: Any
    event: str | None = None


@dispatcher.abstract
def encode_event(message):
    """Decide how ``message`` goes on the wire: return ``(event_type_or_None, data_text)``.

    ``str`` is sent as is, ``bytes`` as UTF-8 text, a dict or list as JSON, a :class:`Message`
    with its event type, an attrs instance as JSON with its class name as the event type. Add a
    method to publish a new class::

        @encode_event.dispatch
        def encode_event(message: Card):
            return "card", f"{message.rank}{message.suit}"
    """


@encode_event.dispatch
def encode_event(message: str):
    return None, message


@encode_event.dispatch
def encode_event(message: bytes):
    return None, message.decode("utf-8")


@encode_event.dispatch
def encode_event(message: dict | list | int | float | bool):
    return None, json.dumps(message, separators=(",", ":"), ensure_ascii=False)


@encode_event.dispatch
def encode_event(message: Message):
    event, data = encode_event(message.data)
    return message.event if message.event is not None else event, data


@encode_event.dispatch
def encode_event(message: object):
    if attrs.has(type(message)):
        return type(message).__name__, json.dumps(
            attrs.asdict(message), separators=(",", ":"), ensure_ascii=False, default=str)
    raise TypeError(f"cannot publish a {type(message).__name__}: add an encode_event method")


# --------------------------------------------------------------------------------------------
# Channels and their registry


@attrs.define(slots=True, eq=False)
class _Subs:
    """One channel's subscribers on one server: SSE streams (chunked or raw) and poll waiters."""

    chunked: dict = attrs.field(factory=dict)   # Connection -> None (HTTP/1.1 streams)
    raw: dict = attrs.field(factory=dict)       # Connection -> None (HTTP/1.0 streams)
    waiters: dict = attrs.field(factory=dict)   # Connection -> _Waiter (long-poll)
    last: float = 0.0                           # last time anything was sent (heartbeats)

    def __bool__(self) -> bool:
        return bool(self.chunked or self.raw or self.waiters)


@attrs.define(slots=True, eq=False)
class Channel:
    """A named channel: its subscribers per server and its bounded history.

    ``evicted`` is the sequence number of the newest event no longer kept: a client whose last
    id is older than that has missed events that cannot be replayed, and is sent ``reset``.
    """

    name: str
    registry: Any
    history: deque = attrs.field(factory=deque)
    evicted: int = 0
    last_id: str | None = None
    subs: dict = attrs.field(factory=dict)  # Server -> _Subs


@attrs.define(slots=True, eq=False)
class _Local:
    """A registry's per-server state: events waiting to be fanned out on that loop, in order."""

    outbox: deque = attrs.field(factory=deque)
    scheduled: bool = False


def _epoch() -> str:
    n = secrets.randbelow(36 ** 5)
    return "".join(_ALPHABET[(n // 36 ** i) % 36] for i in range(5))


@attrs.define(slots=True, eq=False)
class Channels:
    """A registry of channels: subscribers, bounded history, heartbeats, publishing.

    Event ids are ``EPOCH-SEQ`` (``"k3f9a-17"``): ``SEQ`` grows by one per event across the whole
    registry, so one ``Last-Event-ID`` places a client in every channel it reads; ``EPOCH`` is
    random per registry, so an id from before a restart is recognised as unknown.

    >>> registry = Channels(history=100, max_age=60.0, heartbeat=15.0)
    >>> event_id = registry.publish("news", "hello")

    ``history``/``max_age`` bound what each channel keeps for resume (count, seconds);
    ``heartbeat`` is the idle interval between comment heartbeats; ``retry``/``retry_jitter``
    (seconds) set the client's reconnection delay: ``retry`` plus a random part up to
    ``retry_jitter``, chosen per connection so a restart does not bring every client back in the
    same millisecond. ``max_channels`` bounds how many channels may exist at once.
    """

    history: int = 1000
    max_age: float = 300.0
    heartbeat: float = 15.0
    retry: float = 2.0
    retry_jitter: float = 2.0
    max_channels: int = 100_000
    _channels: dict = attrs.field(factory=dict)
    _lock: Any = attrs.field(factory=threading.Lock)
    _seq: int = 0
    _epoch: str = attrs.field(factory=_epoch)
    _forgotten: int = 0
    _locals: Any = attrs.field(factory=weakref.WeakKeyDictionary)

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

    def __contains__(self, name: str) -> bool:
        return name in self._channels

    def __len__(self) -> int:
        return len(self._channels)

    def names(self) -> list:
        """The names of the channels that exist now (with subscribers or history)."""
        with self._lock:
            return list(self._channels)

    def subscriber_count(self, name: str | None = None) -> int:
        """How many connections (streams and waiting polls) read ``name`` (or any channel)."""
        with self._lock:
            chans = self._channels.values() if name is None else filter(
                None, [self._channels.get(name)])
            return sum(len(s.chunked) + len(s.raw) + len(s.waiters)
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
            if len(self._channels) >= self.max_channels:
                raise HTTPError(503, "too many channels")
            ch = self._channels[name] = Channel(name, self, evicted=self._forgotten)
        return ch

    def _prune(self, ch: Channel, now: float) -> None:
        history = ch.history
        cutoff = now - self.max_age
        while history and history[0].time < cutoff:
            self._evict(ch, history.popleft())

    def _evict(self, ch: Channel, event: Event) -> None:
        ch.evicted = event.seq
        if event.seq > self._forgotten:
            self._forgotten = event.seq

    def _maybe_drop(self, ch: Channel) -> None:
        if not ch.subs and not ch.history and self._channels.get(ch.name) is ch:
            del self._channels[ch.name]

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
            subs = ch.subs[server] = _Subs(last=time.monotonic())
        return subs

    def _catch_up(self, names, last_id: str | None, now: float):
        """What a client at ``last_id`` must get before live events: ``(resets, events)``.

        ``resets`` lists the channels whose gap history cannot cover; ``events`` are the missed
        events of the others, in id order.
        """
        last = self._parse_id(last_id)
        if last is None:
            return [], []
        resets, events = [], []
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
            missed = []
            for event in reversed(ch.history):
                if event.seq <= last:
                    break
                missed.append(event)
            missed.reverse()
            events.extend(missed)
        if len(names) > 1 and events:
            events.sort(key=lambda e: e.seq)
        return resets, events

    def _reset_event(self, name: str, with_id: bool) -> Event:
        ch = self._channels.get(name)
        data = ch.last_id if ch is not None and ch.last_id is not None else self.last_id
        pos = self.last_id
        raw = sse.encode(data, "reset", pos if with_id else None)
        return Event(pos, self._seq, name, "reset", data, time.monotonic(), raw, sse.chunk(raw))

    # -- publishing --------------------------------------------------------------------------

    def publish(self, name: str, message, event: str | None = None) -> str:
        """Publish ``message`` on channel ``name``; return its event id. Safe from any thread.

        ``event`` overrides the event type chosen by :func:`encode_event`.
        """
        etype, data = encode_event(message)
        if event is not None:
            etype = event
        body = sse.encode_body(data, etype)
        now = time.monotonic()
        run_now = None
        with self._lock:
            seq = self._seq = self._seq + 1
            eid = f"{self._epoch}-{seq}"
            raw = b"id: " + eid.encode("ascii") + b"\n" + body
            ev = Event(eid, seq, name, etype, data, now, raw, sse.chunk(raw))
            ch = self._channels.get(name)
            if ch is None:
                ch = self._get(name)
            ch.last_id = eid
            history = ch.history
            if self.history > 0:
                history.append(ev)
                if len(history) > self.history:
                    self._evict(ch, history.popleft())
                if history[0].time < now - self.max_age:
                    self._prune(ch, now)
            else:
                self._evict(ch, ev)
            if ch.subs:
                ident = threading.get_ident()
                for server, subs in ch.subs.items():
                    subs.last = now
                    local = self._locals[server]
                    local.outbox.append((ev, list(subs.chunked), list(subs.raw),
                                         list(subs.waiters.values()) if subs.waiters else ()))
                    if not local.scheduled:
                        local.scheduled = True
                        if server._ident == ident:
                            run_now = (server, local)
                        else:
                            server.call_soon_threadsafe(self._drain, server, local)
            elif not history:
                del self._channels[name]
        if run_now is not None:
            self._drain(*run_now)
        return eid

    def _drain(self, server, local: _Local) -> None:
        """Fan out what waits in ``local``'s outbox (loop thread): same bytes to every conn."""
        push = server.push
        lock = self._lock
        outbox = local.outbox
        while True:
            with lock:
                if not outbox:
                    local.scheduled = False
                    return
                batch = list(outbox)
                outbox.clear()
            for ev, chunked, raw, waiters in batch:
                if chunked:
                    _fanout(server, push, chunked, ev.chunk)
                if raw:
                    _fanout(server, push, raw, ev.raw)
                for waiter in waiters:
                    try:
                        waiter.wake([ev])
                    except Exception:
                        log.exception("long-poll answer failed")

    # -- joining and leaving -----------------------------------------------------------------

    def _join(self, sub: "Subscription", last_id: str | None):
        """Subscribe ``sub`` to its channels and return what it must be sent first."""
        server = sub.conn.server
        now = time.monotonic()
        with self._lock:
            resets, events = self._catch_up(sub.names, last_id, now)
            reset_events = [self._reset_event(name, not events) for name in resets]
            for name in sub.names:
                subs = self._subs(self._get(name), server)
                (subs.chunked if sub.chunked else subs.raw)[sub.conn] = None
        return reset_events + events

    def _add(self, sub: "Subscription", name: str) -> None:
        with self._lock:
            if name in sub.names:
                return
            subs = self._subs(self._get(name), sub.conn.server)
            (subs.chunked if sub.chunked else subs.raw)[sub.conn] = None
            sub.names.append(name)

    def _remove(self, conn: Connection, names) -> None:
        server = conn.server
        with self._lock:
            for name in names:
                ch = self._channels.get(name)
                if ch is None:
                    continue
                subs = ch.subs.get(server)
                if subs is None:
                    continue
                subs.chunked.pop(conn, None)
                subs.raw.pop(conn, None)
                subs.waiters.pop(conn, None)
                if not subs:
                    del ch.subs[server]
                    self._maybe_drop(ch)

    # -- the sweep: heartbeats and age -------------------------------------------------------

    def _sweep(self, server, now: float) -> None:
        """Once a second on ``server``'s loop: expire old history, heartbeat idle channels."""
        beat = []
        with self._lock:
            idle = now - self.heartbeat
            for ch in list(self._channels.values()):
                if ch.history and ch.history[0].time < now - self.max_age:
                    self._prune(ch, now)
                subs = ch.subs.get(server)
                if subs is not None and subs.last <= idle and (subs.chunked or subs.raw):
                    subs.last = now
                    beat.append((list(subs.chunked), list(subs.raw)))
                self._maybe_drop(ch)
        push = server.push
        for chunked, raw in beat:
            for conn in chunked:
                push(conn, _HEARTBEAT_CHUNK)
            for conn in raw:
                push(conn, _HEARTBEAT)

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
                    per_server.setdefault(server, {}).update(dict.fromkeys(subs.chunked))
                    per_server[server].update(dict.fromkeys(subs.raw))
        for server, conns in per_server.items():
            _on_loop(server, _end_all, list(conns))
        return sum(len(c) for c in per_server.values())


def _fanout(server, push, conns, data: bytes) -> None:
    """Send the same ``data`` to every connection in ``conns`` (loop thread).

    The fast path is one ``send`` per idle stream (nothing queued): its Python work around the
    system call is a few attribute reads. A partial send, a stream with output already queued
    or any other state goes through ``server.push``, which queues, registers for write-readiness
    and applies the slow-consumer policy.
    """
    size = len(data)
    for conn in conns:
        if conn.out or conn.state is not _STREAM:
            push(conn, data)
            continue
        try:
            sent = conn.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            server.close(conn)
            continue
        if sent != size:
            push(conn, data[sent:])


_HEARTBEAT = sse.HEARTBEAT  # a comment line and no blank line: no client sees an event
_HEARTBEAT_CHUNK = sse.chunk(_HEARTBEAT)

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
    """End the SSE stream on ``conn`` cleanly (last chunk, then close); loop thread only."""
    sub = conn.stream
    if isinstance(sub, Subscription):
        conn.stream = None
        sub.registry._remove(conn, sub.names)
        if sub.chunked:
            conn.server.push(conn, sse.LAST_CHUNK)
    if not conn.closed:
        conn.server.finish_stream(conn)


@shutdown_stream.dispatch
def shutdown_stream(stream: Subscription, conn: Connection):
    end_stream(conn)  # the last chunk, then close


# --------------------------------------------------------------------------------------------
# The generic functions of the push protocol


@dispatcher.abstract
def publish(channel, message):
    """Publish ``message`` on ``channel``; return the event id. Safe from any thread.

    ``channel`` is a name (the default registry :data:`channels`) or a :class:`Channel`
    (its own registry). ``encode_event`` decides the event type and data text.

    >>> publish("news", {"headline": "clos_web ships"})  # doctest: +ELLIPSIS
    '...-...'
    """


@publish.dispatch
def publish(channel: str, message):
    return channels.publish(channel, message)


@publish.dispatch
def publish(channel: Channel, message):
    return channel.registry.publish(channel.name, message)


@dispatcher.abstract
def subscribe(channel, conn):
    """Add ``channel`` (a name or :class:`Channel`) to the SSE stream on ``conn`` (live events
    from now on). Call it on the loop thread, e.g. from a handler or a ``close_stream`` method."""


@subscribe.dispatch
def subscribe(channel: str, conn: Connection):
    sub = _subscription(conn)
    sub.registry._add(sub, channel)


@subscribe.dispatch
def subscribe(channel: Channel, conn: Connection):
    sub = _subscription(conn)
    if sub.registry is not channel.registry:
        raise ValueError("the channel belongs to another registry than the stream")
    sub.registry._add(sub, channel.name)


@dispatcher.abstract
def unsubscribe(channel, conn):
    """Remove ``channel`` (a name or :class:`Channel`) from the stream on ``conn``; ``None``
    removes every channel (the stream stays open)."""


@unsubscribe.dispatch
def unsubscribe(channel: str, conn: Connection):
    sub = _subscription(conn)
    if channel in sub.names:
        sub.names.remove(channel)
        sub.registry._remove(conn, [channel])


@unsubscribe.dispatch
def unsubscribe(channel: Channel, conn: Connection):
    unsubscribe(channel.name, conn)


@unsubscribe.dispatch
def unsubscribe(channel: None, conn: Connection):
    sub = _subscription(conn)
    names, sub.names = sub.names, []
    sub.registry._remove(conn, names)


def _subscription(conn: Connection) -> "Subscription":
    sub = conn.stream
    if not isinstance(sub, Subscription):
        raise ValueError("the connection is not an SSE stream")
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
    parameter; ``registry`` to the default :data:`channels`.

    >>> EventStream(["news", "user-42"])
    EventStream(channels=['news', 'user-42'], last_id=None, registry=None)
    """

    channels: list = attrs.field(converter=_names)
    last_id: str | None = None
    registry: Channels | None = None
    headers: tuple = attrs.field(default=(), converter=_check_headers)


@attrs.define(slots=True)
class LongPoll:
    """Return this from a handler to answer a long-poll on ``channels`` as JSON.

    The answer is ``{"events": [{"id", "event", "data"}, ...], "last_id": ID}``: at once if
    events after ``last_id`` (default: the ``Last-Event-ID`` header or ``lastEventId`` query
    parameter) are in history, else when the next event comes, else after ``timeout`` seconds
    with no events. A gap history cannot cover answers one ``reset`` event.
    """

    channels: list = attrs.field(converter=_names)
    last_id: str | None = None
    timeout: float = 25.0
    registry: Channels | None = None
    headers: tuple = attrs.field(default=(), converter=_check_headers)


@with_headers.dispatch
def with_headers(result: EventStream, headers):
    return attrs.evolve(result, headers=result.headers + tuple(headers))


@with_headers.dispatch
def with_headers(result: LongPoll, headers):
    return attrs.evolve(result, headers=result.headers + tuple(headers))


@attrs.define(slots=True, eq=False)
class Subscription:
    """The state of one SSE connection (``conn.stream``): its registry and channel names."""

    registry: Channels
    conn: Connection
    names: list
    chunked: bool


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


@write.dispatch
def write(obj: EventStream, conn: Connection):
    request = conn.request
    server = conn.server
    registry = obj.registry if obj.registry is not None else channels
    http10 = request is not None and request.version == "HTTP/1.0"
    # HTTP/1.1: chunked; HTTP/1.0: the stream ends when the connection closes
    head = response_head(200, _SSE_FIELDS + header_block(obj.headers), chunked=not http10,
                         keep_alive=not http10, http10=http10)
    if request is not None and request.method == "HEAD":
        server.enqueue(conn, head)
        return
    last_id = obj.last_id if obj.last_id is not None else request_last_id(request)
    conn.keep_alive = False
    sub = Subscription(registry, conn, list(obj.channels), not http10)
    first = registry._join(sub, last_id)
    retry = int((registry.retry + random.random() * registry.retry_jitter) * 1000)
    # ": ok" and "retry:" end with no blank line: the first event's block absorbs them
    body = b"".join([sse.preamble(retry)] + [e.raw for e in first])
    server.begin_stream(conn, sub, head + (body if http10 else sse.chunk(body)))


@close_stream.dispatch
def close_stream(stream: Subscription, conn: Connection):
    names, stream.names = stream.names, []
    stream.registry._remove(conn, names)


@attrs.define(slots=True, eq=False)
class _Waiter:
    """A parked long-poll request (``conn.stream`` while it waits)."""

    registry: Channels
    conn: Connection
    request: Request
    names: list
    last_id: str
    headers: tuple = ()
    done: bool = False

    def wake(self, events) -> None:
        """Answer with ``events`` (loop thread); later calls do nothing."""
        if self.done:
            return
        self.done = True
        conn = self.conn
        if conn.stream is self:
            conn.stream = None
        self.registry._remove(conn, self.names)
        last = events[-1].id if events else self.last_id
        conn.server.complete(conn, self.request, _poll_response(events, last, self.headers))

    def expire(self) -> None:
        self.wake([])


def _poll_response(events, last_id: str, headers: tuple = ()) -> Response:
    body = b'{"events":[' + b",".join(e.json() for e in events) + b'],"last_id":' + \
        json_bytes(last_id) + b"}"
    return Response(body, content_type="application/json",
                    headers=(("Cache-Control", "no-cache"),) + headers)


@write.dispatch
def write(obj: LongPoll, conn: Connection):
    request = conn.request
    server = conn.server
    registry = obj.registry if obj.registry is not None else channels
    names = list(obj.channels)
    last_id = obj.last_id if obj.last_id is not None else request_last_id(request)
    with registry._lock:
        resets, events = registry._catch_up(names, last_id, time.monotonic())
        if resets:
            events = [registry._reset_event(resets[0], True)]
        elif not events:
            position = last_id if registry._parse_id(last_id) is not None else registry.last_id
            waiter = _Waiter(registry, conn, request, names, position, obj.headers)
            for name in names:
                registry._subs(registry._get(name), server).waiters[conn] = waiter
    if events:
        send_response(_poll_response(events, events[-1].id, obj.headers), conn)
        return
    server.park(conn)
    conn.stream = waiter
    server.call_later(obj.timeout, waiter.expire)


@close_stream.dispatch
def close_stream(stream: _Waiter, conn: Connection):
    stream.done = True
    stream.registry._remove(conn, stream.names)


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
    "channels", "channel", "publish", "subscribe", "unsubscribe", "encode_event", "end_stream",
    "request_last_id",
]
