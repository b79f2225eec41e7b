"""Redis Cluster for clos_web: :class:`RedisCluster`, a drop-in for
:class:`~clos_web.redis.client.RedisClient` that routes each command to the master holding its
key, in the server's own selector loop like every other clos_web socket.

::

    from clos_web.redis.cluster import RedisCluster, make_client, make_pubsub

    cluster = RedisCluster(server, "redis+cluster://:secret@10.0.0.5:7000,10.0.0.6:7000",
                           on_connect=lambda: print("every master is up"))
    cluster.start()                                    # from any thread; returns at once
    cluster.call(print, "SET", "user:{42}:name", "ada")   # loop thread: to the key's master
    cluster.eval(print, "return redis.call('GET', KEYS[1])", ["user:{42}:name"], [])
    cluster.submit("GET", "user:{42}:name").result(1)  # any other thread: b'ada'

The URL names one or more *seed* nodes: ``redis+cluster://[[user]:password@]host:port[,host:port
...]`` (database 0 only: a cluster has no other). :class:`RedisCluster` asks a seed for the slot
map (``CLUSTER SLOTS``, through a :class:`RedisClient`, so never blocking), keeps one pipelined
:class:`RedisClient` per master, and sends each command to the master of the slot of its first
key: ``CRC16(key) mod 16384`` (XMODEM, :func:`key_slot`), where a key with a non-empty hash tag
(``{...}``, the first ``{`` and the first ``}`` after it) hashes only the tag, so keys sharing a
tag share a node. A script's slot is its first key's; a command with no key goes to any master.

When the map is out of date, Redis says so and the command is sent once more where it says:
``MOVED slot host:port`` (the slot has a new owner: the map is fixed for that slot at once and
read again in full) or ``ASK slot host:port`` (the slot is being migrated and this key is
already there: ``ASKING`` then the command, on that node, once). Only one redirect is followed
per call, within the call's original ``timeout``. Until every master has been connected once,
calls made wait for that (each within its ``timeout``, at most ``max_pending`` of them), so a
command sent just after :meth:`~RedisCluster.start` is not lost to the start-up. When a master
goes away later its client reconnects by itself (as every :class:`RedisClient` does), calls
routed to it fail at once with :class:`~clos_web.redis.client.RedisUnavailable` meanwhile, and
the map is read again (at once,
then every second while any master is down: a replica may have taken over). ``connected`` is
true while every master's client is; ``on_connect()`` is called when they all are (at start,
after a master came back, after a new map changed the masters), ``on_disconnect(exc)`` when one
of them is lost.

Pub/sub needs none of this: a ``PUBLISH`` on any node of a Redis Cluster is broadcast over the
cluster bus to every node, and a subscriber on any node receives it. So a subscriber stays one
:class:`~clos_web.redis.client.RedisPubSub` connection, to the first seed
(:func:`make_pubsub`); it reconnects to that node when it comes back.
:func:`make_client` and :func:`make_pubsub` choose by the URL, so code written for one Redis
(:class:`~clos_web.push.redis_broker.RedisBroker`) runs on a cluster given a
``redis+cluster://`` URL.

Not here: reading from replicas, and commands whose keys span slots (Redis answers
``CROSSSLOT``; keep such keys under one hash tag).
"""

from __future__ import annotations

import binascii
import collections
import concurrent.futures
import logging
import threading
import urllib.parse
from typing import Any, Callable

import attrs

from .client import (
    RedisAddress, RedisClient, RedisPubSub, RedisTimeout, RedisUnavailable, _deliver,
    _future_callback, check_backoff, close_on_loop,
)
from .resp import DEFAULT_MAX_REPLY, ReplyError, _arg, encode_command

__all__ = [
    "RedisCluster", "Redirect", "make_client", "make_pubsub", "key_slot", "first_key",
    "parse_cluster_url", "parse_redirect", "is_cluster_url", "SLOTS",
]

log = logging.getLogger("clos_web.redis")

SLOTS = 16384
CLUSTER_SCHEME = "redis+cluster"


# --------------------------------------------------------------------------------------------
# Slots


def key_slot(key) -> int:
    """The cluster slot of ``key`` (``str`` as UTF-8, ``bytes``, ``int``), as Redis computes it
    (``CLUSTER KEYSLOT``): CRC16-XMODEM of the key, or of its hash tag, modulo 16384.

    >>> key_slot("123456789"), key_slot("foo")
    (12739, 12182)
    >>> key_slot("{user1000}.following") == key_slot("{user1000}.followers")
    True
    >>> key_slot("foo{}{bar}") == key_slot("foo{}{bar}x")   # an empty tag: the whole key
    False
    """
    data = key if key.__class__ is bytes else _arg(key)
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1:end]
    return binascii.crc_hqx(data, 0) & (SLOTS - 1)


# Which argument is a command's first key: the second word (index 1) unless named here. This
# is a closed table of what a key-value client sends, not all of Redis' command table.
_NO_KEY = frozenset(name.encode() for name in (
    "PING ECHO INFO TIME DBSIZE RANDOMKEY KEYS SCAN FLUSHALL FLUSHDB LASTSAVE SAVE BGSAVE "
    "CLUSTER SCRIPT CONFIG CLIENT COMMAND PUBLISH SPUBLISH FUNCTION SLOWLOG LATENCY ACL AUTH "
    "HELLO SELECT SWAPDB READONLY READWRITE ASKING MULTI EXEC DISCARD WAIT UNWATCH SHUTDOWN "
    "MONITOR ROLE").split())
_KEY_AT = {b"OBJECT": 2, b"MEMORY": 2, b"XINFO": 2}
_SCRIPTS = frozenset((b"EVAL", b"EVALSHA", b"EVAL_RO", b"EVALSHA_RO", b"FCALL", b"FCALL_RO"))
_STREAMS = frozenset((b"XREAD", b"XREADGROUP"))


def first_key(args) -> bytes | None:
    """The first key of the command ``args`` (what routes it), or ``None`` for a command with
    no key.

    >>> first_key(["SET", "k", 1]), first_key(["PING"]), first_key(["EVAL", "s", 1, "a", "b"])
    (b'k', None, b'a')
    >>> first_key(["XREAD", "COUNT", 2, "STREAMS", "s1", "s2", 0, 0])
    b's1'
    """
    if not args:
        return None
    name = _arg(args[0]).upper()
    if name in _NO_KEY:
        return None
    if name in _SCRIPTS:
        count = _arg(args[2]) if len(args) > 3 else b"0"
        if not (count.isdigit() and int(count) > 0):
            return None
        return _arg(args[3])
    if name in _STREAMS:
        for i in range(1, len(args) - 1):
            if _arg(args[i]).upper() == b"STREAMS":
                return _arg(args[i + 1])
        return None
    at = _KEY_AT.get(name, 1)
    return _arg(args[at]) if len(args) > at else None


@attrs.frozen
class Redirect:
    """What a ``MOVED`` or ``ASK`` error reply says: where slot ``slot`` is to be asked
    (``host`` empty: the node that answered, on ``port``)."""

    kind: str   # "MOVED" or "ASK"
    slot: int
    host: str
    port: int


def parse_redirect(reply) -> Redirect | None:
    """The :class:`Redirect` in an error reply ``MOVED slot host:port`` or ``ASK slot
    host:port``; ``None`` for any other reply.

    >>> parse_redirect(ReplyError("MOVED 3999 127.0.0.1:6381"))
    Redirect(kind='MOVED', slot=3999, host='127.0.0.1', port=6381)
    >>> parse_redirect(ReplyError("ASK 12 [::1]:7000")), parse_redirect(ReplyError("ERR no"))
    (Redirect(kind='ASK', slot=12, host='::1', port=7000), None)
    """
    if not isinstance(reply, ReplyError) or not reply.args:
        return None
    parts = str(reply.args[0]).split(" ")
    if len(parts) != 3 or parts[0] not in ("MOVED", "ASK"):
        return None
    kind, slot, where = parts
    host, sep, port = where.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not (sep and slot.isascii() and slot.isdigit() and port.isascii() and port.isdigit()):
        return None
    slot_n, port_n = int(slot), int(port)
    if slot_n >= SLOTS or not 0 < port_n < 65536:
        return None
    return Redirect(kind, slot_n, host, port_n)


# --------------------------------------------------------------------------------------------
# URLs


def is_cluster_url(url: str) -> bool:
    """True for a ``redis+cluster://`` URL."""
    return url.split("://", 1)[0].lower() == CLUSTER_SCHEME


def parse_cluster_url(url: str) -> tuple:
    """The seed nodes of ``redis+cluster://[[user]:password@]host[:port][,host[:port]...][/0]``,
    as :class:`~clos_web.redis.client.RedisAddress` values (port 6379 by default; each carries
    the credentials).

    >>> [a.hostport for a in parse_cluster_url("redis+cluster://:pw@10.0.0.1:7000,[::1]:7001")]
    ['10.0.0.1:7000', '[::1]:7001']
    >>> parse_cluster_url("redis+cluster://:s%40cret@h")[0].password
    's@cret'
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != CLUSTER_SCHEME:
        raise ValueError(f"a Redis Cluster URL starts with redis+cluster://, not {url!r}")
    if "?" in rest or "#" in rest:
        raise ValueError(f"a Redis Cluster URL has no query or fragment: {url!r}")
    netloc, _, path = rest.partition("/")
    if path.strip("/") not in ("", "0"):
        raise ValueError(f"a Redis Cluster has only database 0, not {path!r}")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, pw = userinfo.partition(":")
        unquote = urllib.parse.unquote
        username = unquote(user) if user else None
        password = unquote(pw) if colon else None
    seeds = []
    for item in hosts.split(","):
        if not item:
            raise ValueError(f"an empty seed node in Redis Cluster URL {url!r}")
        parts = urllib.parse.urlsplit("//" + item)
        try:
            port = parts.port or 6379
        except ValueError:
            raise ValueError(f"bad port in Redis Cluster URL {url!r}") from None
        if not parts.hostname or parts.netloc != item:
            raise ValueError(f"bad seed node {item!r} in Redis Cluster URL {url!r}")
        seeds.append(RedisAddress(parts.hostname, port, 0, username, password))
    return tuple(seeds)


def _node_url(address: RedisAddress) -> str:
    quote = urllib.parse.quote
    auth = ""
    if address.password is not None:
        auth = f"{quote(address.username or '', safe='')}:{quote(address.password, safe='')}@"
    return f"redis://{auth}{address.hostport}/0"


# --------------------------------------------------------------------------------------------
# The cluster client


def _ignore(reply) -> None:
    pass


@attrs.define(slots=True, eq=False, repr=False)
class RedisCluster:
    """Commands to a Redis Cluster from ``server``'s loop (see the module docstring). The
    options are :class:`~clos_web.redis.client.RedisClient`'s, and apply to each master's
    client; ``max_pending`` and ``output_cap`` bound each of them.

    >>> RedisCluster(None, "redis+cluster://10.0.0.1:7000,10.0.0.2:7000")
    <RedisCluster 10.0.0.1:7000 (+1 seeds) disconnected, 0 masters>
    """

    server: Any
    url: str
    connect_timeout: float = attrs.field(default=2.0, kw_only=True)
    backoff: tuple = attrs.field(default=(0.05, 2.0), kw_only=True)
    on_connect: Callable | None = attrs.field(default=None, kw_only=True)
    on_disconnect: Callable | None = attrs.field(default=None, kw_only=True)
    output_cap: int = attrs.field(default=16 * 1024 * 1024, kw_only=True)
    max_reply: int = attrs.field(default=DEFAULT_MAX_REPLY, kw_only=True)
    max_pending: int = attrs.field(default=100_000, kw_only=True)
    seeds: tuple = attrs.field(init=False)
    moved: int = attrs.field(default=0, init=False)    # MOVED replies followed
    asked: int = attrs.field(default=0, init=False)    # ASK replies followed
    refreshes: int = attrs.field(default=0, init=False)  # slot maps read
    _nodes: dict = attrs.field(factory=dict, init=False)   # (host, port) -> RedisClient
    _slots: list | None = attrs.field(default=None, init=False)  # slot -> RedisClient | None
    _seeding: RedisClient | None = attrs.field(default=None, init=False)
    _seed_next: int = attrs.field(default=0, init=False)
    _refreshing: bool = attrs.field(default=False, init=False)
    _timer: bool = attrs.field(default=False, init=False)
    _fails: int = attrs.field(default=0, init=False)
    _announced: bool = attrs.field(default=False, init=False)
    _early: collections.deque = attrs.field(factory=collections.deque, init=False)  # waiting
    _ever_up: bool = attrs.field(default=False, init=False)
    _started: bool = attrs.field(default=False, init=False)
    _closed: bool = attrs.field(default=False, init=False)
    _loop_ident: int | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        self.seeds = parse_cluster_url(self.url)
        check_backoff(self.backoff)

    def __repr__(self) -> str:
        more = f" (+{len(self.seeds) - 1} seeds)" if len(self.seeds) > 1 else ""
        state = ("closed" if self._closed else "connected" if self.connected else
                 "connecting" if self._nodes else "disconnected")
        return (f"<RedisCluster {self.seeds[0].hostport}{more} {state}, "
                f"{len(self._nodes)} masters>")

    @property
    def connected(self) -> bool:
        """True while the slot map is known and every master's client is connected."""
        nodes = self._nodes
        return bool(nodes) and self._slots is not None and all(
            c.connected for c in nodes.values())

    @property
    def pending(self) -> int:
        """Replies awaited, over all masters."""
        return sum(c.pending for c in list(self._nodes.values()))

    @property
    def masters(self) -> list:
        """The ``host:port`` of each master in the slot map."""
        return [c.address.hostport for c in list(self._nodes.values())]

    # -- life ----------------------------------------------------------------------------------

    def start(self) -> "RedisCluster":
        """Read the slot map and connect to every master (from any thread; returns at once).
        It keeps reconnecting on its own until :meth:`close`."""
        if not self._started and not self._closed:
            self._started = True
            self.server.call_soon_threadsafe(self._refresh)
        return self

    def close(self) -> None:
        """Close every connection and stop reconnecting (idempotent, any thread; waits at most
        5 s for the loop). Calls waiting for replies get :class:`RedisUnavailable`."""
        if self._closed:
            return
        self._closed = True
        close_on_loop(self)

    def _close_now(self, done: threading.Event | None = None) -> None:
        early, self._early = self._early, collections.deque()
        for entry in early:
            if entry[0] is not None:
                _deliver(entry[0], RedisUnavailable(f"redis cluster {self.seeds[0].hostport}: "
                                                    f"the client is closed"))
                entry[0] = None
        clients = list(self._nodes.values())
        if self._seeding is not None:
            clients.append(self._seeding)
            self._seeding = None
        for client in clients:
            client.close()
        if done is not None:
            done.set()

    def _check_thread(self) -> None:
        ident = self._loop_ident
        if ident is not None and ident != threading.get_ident():
            raise RuntimeError("RedisCluster: call this on the loop thread (from another "
                               "thread: submit, or server.call_soon_threadsafe)")

    # -- the slot map --------------------------------------------------------------------------

    def _refresh(self) -> None:
        """Read the slot map (once at a time), through a connected master, else a seed."""
        self._loop_ident = threading.get_ident()
        if self._closed or self._refreshing:
            return
        self._refreshing = True
        via = next((c for c in self._nodes.values() if c.connected), None)
        if via is not None:
            via.call(lambda reply: self._slots_reply(via, reply), "CLUSTER", "SLOTS",
                     timeout=self.connect_timeout)
            return
        seed = self.seeds[self._seed_next % len(self.seeds)]
        self._seed_next += 1
        client = RedisClient(self.server, _node_url(seed), connect_timeout=self.connect_timeout,
                             backoff=self.backoff, max_reply=self.max_reply)
        client.on_connect = lambda: client.call(
            lambda reply: self._slots_reply(client, reply), "CLUSTER", "SLOTS",
            timeout=self.connect_timeout)
        self._seeding = client
        client.start()
        self.server.call_later(2 * self.connect_timeout + 0.1, self._seed_deadline, client)

    def _seed_deadline(self, client: RedisClient) -> None:
        if self._seeding is client:  # this seed never answered: the next one, later
            self._seeding = None
            client.close()
            self._failed(f"seed {client.address.hostport} did not answer CLUSTER SLOTS")

    def _failed(self, why) -> None:
        self._refreshing = False
        self._fails += 1
        first, most = self.backoff
        if self._fails == 1 or self._fails % 10 == 0:
            log.warning("%r: reading the slot map failed: %s", self, why)
        self._refresh_later(min(most, first * 2 ** min(self._fails, 32)))

    def _refresh_later(self, delay: float) -> None:
        if self._timer or self._closed:
            return
        self._timer = True
        self.server.call_later(delay, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = False
        self._refresh()

    def _slots_reply(self, via: RedisClient, reply) -> None:
        if via is self._seeding:
            self._seeding = None
            self.server.call_soon_threadsafe(via.close)  # after this callback returns
        if self._closed:
            return
        if isinstance(reply, Exception):
            self._failed(reply)
            return
        try:
            masters, slots = self._read_map(via, reply)
        except (TypeError, ValueError, IndexError, AttributeError) as exc:
            self._failed(f"a bad CLUSTER SLOTS reply ({exc}): {reply!r:.200}")
            return
        self._refreshing = False
        self._fails = 0
        self.refreshes += 1
        self._apply(masters, slots)

    def _read_map(self, via: RedisClient, reply) -> tuple:
        """``({(host, port): RedisClient}, [client per slot])`` from a ``CLUSTER SLOTS``
        reply; clients of known masters are kept, new ones made (not started)."""
        if not reply:
            raise ValueError("no slot is served")
        masters: dict = {}
        slots: list = [None] * SLOTS
        for entry in reply:
            start, end, master = int(entry[0]), int(entry[1]), entry[2]
            if not 0 <= start <= end < SLOTS:
                raise ValueError(f"slots {start}-{end}")
            host = bytes(master[0]).decode()
            if host in ("", "?"):  # the node does not know its address: the one we asked
                host = via.address.host
            key = (host, int(master[1]))
            client = masters.get(key) or self._nodes.get(key)
            if client is None:
                client = self._client(*key)
            masters[key] = client
            slots[start:end + 1] = [client] * (end - start + 1)
        return masters, slots

    def _client(self, host: str, port: int) -> RedisClient:
        seed = self.seeds[0]
        address = RedisAddress(host, port, 0, seed.username, seed.password)
        client = RedisClient(self.server, _node_url(address),
                             connect_timeout=self.connect_timeout, backoff=self.backoff,
                             output_cap=self.output_cap, max_reply=self.max_reply,
                             max_pending=self.max_pending, on_connect=self._node_up)
        client.on_disconnect = lambda exc: self._node_down(client, exc)
        return client

    def _apply(self, masters: dict, slots: list) -> None:
        old = self._nodes
        changed = masters.keys() != old.keys()
        self._nodes, self._slots = masters, slots
        for key, client in old.items():
            if masters.get(key) is not client:
                client.close()
        for key, client in masters.items():
            if old.get(key) is not client:
                client.start()
        if changed:
            self._announced = False
        self._maybe_announce()
        if not self.connected:  # a master is down: it may be replaced, look again soon
            self._refresh_later(min(1.0, self.backoff[1]))

    def _maybe_announce(self) -> None:
        if self._announced or self._closed or not self.connected:
            return
        self._announced = True
        if not self._ever_up:  # the calls made during the start go now, in order
            self._ever_up = True
            early, self._early = self._early, collections.deque()
            now = self.server.now
            for entry in early:
                callback, slot, send, deadline = entry
                if callback is not None:
                    entry[0] = None
                    self._route(callback, slot, send,
                                None if deadline is None else max(deadline - now, 0.001))
        if self.on_connect is not None:
            try:
                self.on_connect()
            except Exception:
                log.exception("on_connect failed")

    def _node_up(self) -> None:
        self._maybe_announce()

    def _node_down(self, client: RedisClient, exc) -> None:
        if self._closed or client not in self._nodes.values():
            return
        if self._announced:
            self._announced = False
            if self.on_disconnect is not None:
                try:
                    self.on_disconnect(exc)
                except Exception:
                    log.exception("on_disconnect failed")
        self._refresh_later(self.backoff[0])

    def _node_at(self, host: str, port: int) -> RedisClient:
        """The client of the master at ``host:port`` (made and started if new: a redirect
        named it before the map did)."""
        key = (host, port)
        client = self._nodes.get(key)
        if client is None:
            client = self._client(host, port)
            self._nodes = {**self._nodes, key: client}  # new dict: other threads iterate it
            client.start()
        return client

    # -- routing ---------------------------------------------------------------------------

    def _for_slot(self, slot: int | None) -> RedisClient | None:
        slots = self._slots
        if slots is None:
            return None
        if slot is None:  # no key: any master, a connected one if there is
            nodes = list(self._nodes.values())
            return next((c for c in nodes if c.connected), nodes[0] if nodes else None)
        return slots[slot]

    def _route(self, callback: Callable, slot: int | None, send: Callable,
               timeout: float | None) -> bool:
        if not self._ever_up and not self._closed:
            return self._wait_for_start(callback, slot, send, timeout)
        node = self._for_slot(slot)
        if node is None:
            why = ("the slot map is not known yet" if self._slots is None else
                   f"no master serves slot {slot}")
            self.server.call_soon_threadsafe(callback, RedisUnavailable(
                f"redis cluster {self.seeds[0].hostport}: {why}"))
            if self._slots is not None:
                self._refresh()
            return False
        deadline = None if timeout is None else self.server.now + timeout

        def on_reply(reply):
            if reply.__class__ is ReplyError:
                redirect = parse_redirect(reply)
                if redirect is not None:
                    self._follow(redirect, node, callback, send, deadline)
                    return
            callback(reply)

        return send(node, on_reply, timeout, False)

    def _wait_for_start(self, callback: Callable, slot: int | None, send: Callable,
                        timeout: float | None) -> bool:
        early = self._early
        while early and early[0][0] is None:
            early.popleft()
        if len(early) >= self.max_pending:
            self.server.call_soon_threadsafe(callback, RedisUnavailable(
                f"redis cluster {self.seeds[0].hostport}: backlog full ({len(early)} calls "
                f"wait for the first connection)"))
            return False
        entry = [callback, slot, send, None if timeout is None else self.server.now + timeout]
        early.append(entry)
        if timeout is not None:
            self.server.call_later(timeout, self._expire, entry, timeout)
        return True

    def _expire(self, entry: list, timeout: float) -> None:
        callback = entry[0]
        if callback is not None:
            entry[0] = None
            _deliver(callback, RedisTimeout(f"redis cluster {self.seeds[0].hostport}: not "
                                            f"connected within {timeout} s ({self._why()})"))

    def _why(self) -> str:
        if self._slots is None:
            return "the slot map is not known yet"
        down = [c.address.hostport for c in self._nodes.values() if not c.connected]
        return f"masters not connected: {', '.join(down)}" if down else "connecting"

    def _follow(self, redirect: Redirect, origin: RedisClient, callback: Callable,
                send: Callable, deadline: float | None) -> None:
        """Send once more where ``redirect`` says (no further redirect is followed)."""
        if self._closed:
            callback(RedisUnavailable(f"redis cluster {self.seeds[0].hostport}: the client "
                                      f"is closed"))
            return
        target = self._node_at(redirect.host or origin.address.host, redirect.port)
        if redirect.kind == "MOVED":
            self.moved += 1
            if self._slots is not None:
                self._slots[redirect.slot] = target
            self._refresh()
        else:
            self.asked += 1
        if not target.connected:
            callback(RedisUnavailable(f"redis at {target.address.hostport}: slot "
                                      f"{redirect.slot} is there ({redirect.kind}), not "
                                      f"connected yet"))
            return
        timeout = None if deadline is None else max(deadline - self.server.now, 0.001)
        send(target, callback, timeout, redirect.kind == "ASK")

    def call(self, callback: Callable, *args, timeout: float | None = 5.0) -> bool:
        """Send the command ``args`` to its key's master (loop thread only); as
        :meth:`RedisClient.call <clos_web.redis.client.RedisClient.call>`."""
        self._check_thread()
        key = first_key(args)

        def send(node, cb, t, asking):
            if asking:
                node.call(_ignore, "ASKING", timeout=t)
            return node.call(cb, *args, timeout=t)

        return self._route(callback, None if key is None else key_slot(key), send, timeout)

    def eval(self, callback: Callable, script: str | bytes, keys=(), args=(), *,
             timeout: float | None = 5.0) -> bool:
        """Run a Lua ``script`` on the master of its first key (any master without keys;
        loop thread only); as :meth:`RedisClient.eval <clos_web.redis.client.RedisClient.eval>`.
        Every key must be in the same slot (one hash tag)."""
        self._check_thread()
        keys, args = list(keys), list(args)

        def send(node, cb, t, asking):
            if asking:  # EVAL, not EVALSHA: a NOSCRIPT fallback would go without ASKING
                node.call(_ignore, "ASKING", timeout=t)
                return node.call(cb, "EVAL", script, len(keys), *keys, *args, timeout=t)
            return node.eval(cb, script, keys, args, timeout=t)

        return self._route(callback, key_slot(keys[0]) if keys else None, send, timeout)

    def submit(self, *args, timeout: float | None = 5.0) -> concurrent.futures.Future:
        """:meth:`call` from any thread; a ``Future`` of the reply (as
        :meth:`RedisClient.submit <clos_web.redis.client.RedisClient.submit>`; never wait on
        it on the loop thread)."""
        encode_command(*args)  # bad types fail here, now
        return self._submit(self.call, args, {"timeout": timeout})

    def submit_eval(self, script: str | bytes, keys=(), args=(), *,
                    timeout: float | None = 5.0) -> concurrent.futures.Future:
        """:meth:`eval` from any thread, as :meth:`submit`."""
        encode_command("EVALSHA", "", len(keys), *keys, *args)
        return self._submit(self.eval, (script, list(keys), list(args)), {"timeout": timeout})

    def _submit(self, method: Callable, args: tuple, kw: dict) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        done = _future_callback(future)
        if self._closed or self.server.stopped.is_set():
            done(RedisUnavailable(f"redis cluster {self.seeds[0].hostport}: " + (
                "the client is closed" if self._closed else "the server's loop is stopped")))
        else:
            self.server.call_soon_threadsafe(lambda: method(done, *args, **kw))
        return future


# --------------------------------------------------------------------------------------------
# Choosing by URL


def make_client(server, url: str, **kw):
    """A command client for ``url``: :class:`RedisCluster` for ``redis+cluster://``, else
    :class:`~clos_web.redis.client.RedisClient` (``kw``: their options).

    >>> make_client(None, "redis+cluster://10.0.0.1:7000")
    <RedisCluster 10.0.0.1:7000 disconnected, 0 masters>
    >>> make_client(None, "redis://10.0.0.1:6379/0")
    <RedisClient 10.0.0.1:6379 disconnected, 0 pending>
    """
    if is_cluster_url(url):
        return RedisCluster(server, url, **kw)
    return RedisClient(server, url, **kw)


def make_pubsub(server, url: str, **kw) -> RedisPubSub:
    """A subscriber for ``url``: for ``redis+cluster://``, one
    :class:`~clos_web.redis.client.RedisPubSub` on the first seed node (a cluster broadcasts
    every ``PUBLISH`` to all its nodes, so one node hears every channel); else on ``url``.

    >>> make_pubsub(None, "redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7000", on_message=print)
    <RedisPubSub 10.0.0.1:7000 disconnected, 0 channels>
    """
    if is_cluster_url(url):
        url = _node_url(parse_cluster_url(url)[0])
    return RedisPubSub(server, url, **kw)
