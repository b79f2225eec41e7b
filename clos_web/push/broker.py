"""The broker protocol: where a registry's events are stored and how they reach every process.

A :class:`~clos_web.push.channels.Channels` registry keeps its subscribers (connections) in
the process; its *broker* assigns each event its position, keeps history and carries events to
every process that has subscribers. The protocol is three generic functions, each specialised
on the broker's class:

- :func:`broker_publish` ``(broker, registry, name, etype, data)``: store and carry one event;
  return its id (or, where the answer comes later, a :class:`Publication`).
- :func:`broker_join` ``(broker, registry, sub, last_id, budget)``: subscribe ``sub`` (a stream
  or a waiting long-poll) to its channels; return the events it must be sent first (missed
  ones, or ``reset``), or ``None`` when the broker sends them itself later.
- :func:`broker_add` ``(broker, registry, sub, name)``: one more channel for a stream.
- :func:`broker_present` ``(broker, registry, sub, name, joined)`` and :func:`broker_presence`
  ``(broker, registry, name)``: presence, who reads a channel.
- :func:`broker_leave` ``(broker, registry, name)``: the process has no subscriber of ``name``
  any more.

Two brokers ship: :data:`LOCAL` (:class:`LocalBroker`, this process's memory: the default) and
:class:`~clos_web.push.redis_broker.RedisBroker` (many processes and machines over Redis).
Presence (who is subscribed) is the registry's :meth:`~clos_web.push.channels.Channels.presence`
where a broker supports it.

>>> from clos_web.push import Channels
>>> registry = Channels(broker=LOCAL)
>>> registry.publish("news", "hi").endswith("-1")
True
"""

from __future__ import annotations

import logging
import threading
import zlib
from typing import Callable

import attrs

from ..clos import generic
from ..http import HTTPError

log = logging.getLogger("clos_web.push")


class BrokerUnavailable(HTTPError):
    """The broker cannot store an event now (Redis unreachable, timed out): a 503. An event
    that raised this was not stored and reaches nobody."""

    def __init__(self, reason: str):
        super().__init__(503, reason)


@attrs.define(slots=True, eq=False, repr=False)
class LocalBroker:
    """The in-memory broker: ids, history and fan-out in this process (one process only)."""

    def __repr__(self) -> str:
        return "<LocalBroker>"


LOCAL = LocalBroker()
"""The default broker: this process's memory."""


@generic
def broker_publish(broker, registry, name, etype, data):
    """Store the event (``etype`` ``None`` for ``message``; ``data`` its text) on channel
    ``name`` and carry it to every subscriber; return its id, or a :class:`Publication` that
    completes once the broker has stored it. Raise :class:`BrokerUnavailable` (503) when the
    event cannot be stored."""


@broker_publish.dispatch
def broker_publish_local(broker: LocalBroker, registry: object, name, etype, data):
    return registry._publish_local(name, etype, data)


@generic
def broker_join(broker, registry, sub, last_id, budget):
    """Subscribe ``sub`` to every channel in ``sub.names`` (all or none) and return the events
    to send it before live ones: those after ``last_id``, or ``reset`` events where history
    cannot cover the gap or the missed events pass ``budget`` bytes. A broker that must ask
    elsewhere first returns ``None`` and writes them to ``sub`` itself, before any live
    event."""


@broker_join.dispatch
def broker_join_local(broker: LocalBroker, registry: object, sub, last_id, budget):
    return registry._join_local(sub, last_id, budget)


@generic
def broker_add(broker, registry, sub, name):
    """Subscribe the stream ``sub`` (joined already) to one more channel, ``name``, from now
    on (``subscribe(channel, conn)`` on a stream)."""


@broker_add.dispatch
def broker_add_local(broker: LocalBroker, registry: object, sub, name):
    return registry._add_local(sub, name)


@generic
def broker_leave(broker, registry, name):
    """The registry dropped channel ``name``: nobody in this process reads it now."""


@broker_leave.dispatch
def broker_leave_local(broker: LocalBroker, registry: object, name):
    return None


@generic
def broker_present(broker, registry, sub, name, joined):
    """Stream ``sub`` (with presence info) joined (``joined`` true) or left channel
    ``name``: record it where presence is kept and, with the registry's
    ``presence_events``, publish a ``join`` or ``leave`` event on the channel."""


@broker_present.dispatch
def broker_present_local(broker: LocalBroker, registry: object, sub, name, joined):
    if registry.presence_events:
        _announce(registry, name, "join" if joined else "leave", sub.client, sub.presence)


def _announce(registry, name: str, kind: str, client: str, info) -> None:
    """Publish a ``join``/``leave`` event: ``{"client": id, "info": info}``."""
    from .channels import Message
    try:
        registry.publish(name, Message({"client": client, "info": info}, kind))
    except Exception as exc:  # a stream that comes or goes is never refused for this
        log.warning("announcing %s of %s on %r failed: %s", kind, client, name, exc)


@generic
def broker_presence(broker, registry, name):
    """``{client id: info}`` of the streams reading ``name`` now, in every process."""


@broker_presence.dispatch
def broker_presence_local(broker: LocalBroker, registry: object, name):
    return registry._presence_local(name)


def channel_tag(name: str) -> str:
    """The short tag of a channel's name in a :func:`vector_id` (24 bits of its CRC-32).

    >>> len(channel_tag("room-1"))
    6
    """
    return f"{zlib.crc32(name.encode('utf-8', 'surrogatepass')) & 0xFFFFFF:06x}"


def vector_id(positions: dict) -> str:
    """The id of an event on a stream of several channels: its position in each,
    ``{name: "EPOCH-OFFSET"}`` -> ``"TAG:EPOCH-OFFSET,..."``.

    >>> vector_id({"a": "k3f9a2bc-4", "b": "*-0"}).count(",")
    1
    """
    return ",".join(f"{channel_tag(name)}:{pos}" for name, pos in positions.items())


@attrs.define(slots=True, eq=False, repr=False)
class Publication:
    """An event on its way to the broker: ``id`` once stored, ``error`` (an exception) if it
    could not be. ``then(fn)`` calls ``fn(publication)`` when it is settled (at once if it
    is). A handler returns it inside :class:`~clos_web.push.channels.Accepted` to answer 202
    with the id once stored, or 503.

    >>> p = Publication("news")
    >>> p.settle("k3f9a-1", None); p.id
    'k3f9a-1'
    """

    channel: str
    id: str | None = None
    error: BaseException | None = None
    done: bool = False
    _waiters: list = attrs.field(factory=list)
    _lock: threading.Lock = attrs.field(factory=threading.Lock)

    def __repr__(self) -> str:
        state = self.id if self.id else ("failed" if self.error else "pending")
        return f"<Publication {self.channel[:40]!r} {state}>"

    def settle(self, event_id: str | None, error: BaseException | None) -> None:
        with self._lock:
            if self.done:
                return
            self.id, self.error, self.done = event_id, error, True
            waiters, self._waiters = self._waiters, []
        for fn in waiters:
            fn(self)

    def then(self, fn: Callable) -> None:
        with self._lock:
            if not self.done:
                self._waiters.append(fn)
                return
        fn(self)


__all__ = ["broker_publish", "broker_join", "broker_add", "broker_leave", "broker_present",
           "broker_presence", "LocalBroker",
           "LOCAL", "BrokerUnavailable", "Publication", "channel_tag", "vector_id"]
