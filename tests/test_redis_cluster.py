"""clos_web.redis.cluster against a real 3-master Redis Cluster (tests/redis_server.cluster();
skipped without redis-server): key slots as Redis computes them, routing by slot, MOVED and ASK
during a slot migration, a master lost and back, and RedisBroker's resume tests through a
``redis+cluster://`` URL (two servers, each with its own broker)."""

from __future__ import annotations

import collections
import socket
import time
import uuid

import httpx
import pytest
from hypothesis import given, settings, strategies as st

import clos_web
from clos_web import App
from clos_web.push.redis_broker import RedisBroker
from clos_web.redis.client import RedisClient, RedisPubSub, RedisTimeout, RedisUnavailable
from clos_web.redis.cluster import (
    RedisCluster, Redirect, first_key, key_slot, make_client, make_pubsub, parse_cluster_url,
    parse_redirect,
)
from clos_web.redis.resp import ReplyError

from conftest import wait_for
from redis_server import cluster
from test_redis_broker import Reader, _node, _publish

WAIT = 10.0


# --------------------------------------------------------------------------------------------
# Pure parts: slots, URLs, redirects


def test_key_slot_known_values():
    assert key_slot(b"123456789") == 0x31C3 & 16383 == 12739  # CRC16-XMODEM's check value
    assert key_slot("foo") == 12182 and key_slot("bar") == 5061
    assert key_slot("{user1000}.following") == key_slot("{user1000}.followers") == \
        key_slot("user1000")
    assert key_slot("foo{}{bar}") == key_slot(b"foo{}{bar}")  # empty tag: the whole key
    assert key_slot("foo{{bar}}zap") == key_slot("{bar")      # first { to the first } after
    assert key_slot("foo{bar}{zap}") == key_slot("bar")
    assert key_slot(42) == key_slot("42")
    assert key_slot("é") == key_slot("é".encode())


def test_first_key_of_commands():
    assert first_key(("GET", "k")) == b"k"
    assert first_key(("SET", b"k\xff", 1)) == b"k\xff"
    for keyless in (("PING",), ("cluster", "slots"), ("INFO",), ("PUBLISH", "ch", "m")):
        assert first_key(keyless) is None
    assert first_key(("EVALSHA", "abc", 2, "a", "b", "x")) == b"a"
    assert first_key(("EVAL", "return 1", 0)) is None
    assert first_key(("EVAL", "return 1", "zz", "a")) is None
    assert first_key(("OBJECT", "ENCODING", "k")) == b"k"
    assert first_key(("XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", ">")) == b"s"


def test_cluster_urls():
    seeds = parse_cluster_url("redis+cluster://user:p%40ss@10.0.0.1:7000,h2,[::1]:7002/0")
    assert [(s.host, s.port) for s in seeds] == [("10.0.0.1", 7000), ("h2", 6379),
                                                 ("::1", 7002)]
    assert {(s.username, s.password, s.db) for s in seeds} == {("user", "p@ss", 0)}
    assert parse_cluster_url("redis+cluster://:pw@h:1")[0].username is None
    for bad in ("redis://h:1", "redis+cluster://h:1/2", "redis+cluster://h:1,,h:2",
                "redis+cluster://h:99999", "redis+cluster://", "redis+cluster://h:1?x=1",
                "redis+cluster://h:x"):
        with pytest.raises(ValueError):
            parse_cluster_url(bad)


def test_make_client_and_make_pubsub_choose_by_url():
    assert type(make_client(None, "redis+cluster://10.0.0.1:7000")) is RedisCluster
    assert type(make_client(None, "redis://10.0.0.1:7000/0")) is RedisClient
    pubsub = make_pubsub(None, "redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7001",
                         on_message=print)
    assert type(pubsub) is RedisPubSub
    assert (pubsub.address.host, pubsub.address.port, pubsub.address.password) == \
        ("10.0.0.1", 7000, "pw")
    assert type(make_pubsub(None, "redis://h:1/3", on_message=print)) is RedisPubSub


def test_redirect_replies_are_parsed_and_others_are_not():
    assert parse_redirect(ReplyError("MOVED 3999 127.0.0.1:6381")) == \
        Redirect("MOVED", 3999, "127.0.0.1", 6381)
    assert parse_redirect(ReplyError("ASK 16383 10.1.2.3:7000")) == \
        Redirect("ASK", 16383, "10.1.2.3", 7000)
    assert parse_redirect(ReplyError("MOVED 1 :7000")) == Redirect("MOVED", 1, "", 7000)
    assert parse_redirect(ReplyError("ASK 5 [fe80::1]:7000")).host == "fe80::1"
    for other in (ReplyError("ERR unknown"), ReplyError("MOVED 16384 h:1"),
                  ReplyError("MOVED x h:1"), ReplyError("MOVED 1 h"), ReplyError("MOVED 1"),
                  ReplyError("ASK 1 h:0"), ReplyError("TRYAGAIN later"), b"MOVED 1 h:1",
                  RedisUnavailable("MOVED 1 h:1"), None):
        assert parse_redirect(other) is None


# --------------------------------------------------------------------------------------------
# A real cluster


@pytest.fixture(scope="module")
def nodes():
    with cluster(3) as made:
        yield made


@pytest.fixture(scope="module")
def web():
    """A clos_web server: the loop the cluster clients live in."""
    app = App()
    app.get("/ping")(lambda: "pong")
    server = clos_web.start(app, 0)
    yield server
    server.stop(2)


def url_of(nodes, *more: str) -> str:
    return "redis+cluster://" + ",".join([*more, *(f"127.0.0.1:{n.port}" for n in nodes)])


def slot_owners(node) -> dict:
    """slot -> port of its master, as ``node`` sees the cluster."""
    owners = {}
    for start, end, master, *_ in node.command("CLUSTER", "SLOTS"):
        for slot in range(start, end + 1):
            owners[slot] = master[1]
    return owners


@pytest.fixture
def make(web, nodes):
    made = []

    def new(url=None, **kw):
        client = RedisCluster(web, url or url_of(nodes), **kw)
        made.append(client)
        return client

    yield new
    for client in made:
        client.close()


def started(client: RedisCluster) -> RedisCluster:
    client.start()
    wait_for(lambda: client.connected, WAIT)
    return client


_key_part = st.one_of(st.sampled_from([b"{", b"}", b"{}", b"user", b"\xff", b"\x00"]),
                      st.binary(max_size=6))


@settings(max_examples=120, deadline=None)
@given(key=st.one_of(st.lists(_key_part, max_size=8).map(b"".join),
                     st.text(max_size=12).map(str.encode)))
def test_key_slot_agrees_with_cluster_keyslot(nodes, key):
    assert key_slot(key) == nodes[0].command("CLUSTER", "KEYSLOT", key)


def test_set_and_get_are_routed_to_the_master_of_each_key(make, nodes):
    ups = []
    # one seed is enough: the others are learnt from the slot map
    client = started(make(f"redis+cluster://127.0.0.1:{nodes[1].port}",
                          on_connect=lambda: ups.append(1)))
    assert sorted(client.masters) == sorted(f"127.0.0.1:{n.port}" for n in nodes)
    assert "connected, 3 masters" in repr(client)
    prefix = uuid.uuid4().hex
    keys = [f"{prefix}:{i}" for i in range(300)]
    sets = [client.submit("SET", k, f"v{i}") for i, k in enumerate(keys)]
    assert [f.result(WAIT) for f in sets] == [b"OK"] * len(keys)
    gets = [client.submit("GET", k) for k in keys]
    assert [f.result(WAIT) for f in gets] == [f"v{i}".encode() for i in range(len(keys))]
    assert client.moved == client.asked == 0  # each went straight to its master
    owners = slot_owners(nodes[0])
    by_port = {n.port: n for n in nodes}
    landed = collections.Counter()
    for i, k in enumerate(keys):
        port = owners[key_slot(k)]
        assert by_port[port].command("GET", k) == f"v{i}".encode()
        landed[port] += 1
    assert len(landed) == 3
    assert client.submit("PING").result(WAIT) == b"PONG"  # no key: any master
    assert ups == [1]


def test_a_dead_seed_is_passed_over(make, nodes):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # nothing listens there once closed
    client = started(make(url_of(nodes[:1], f"127.0.0.1:{dead}"), connect_timeout=0.3))
    assert client.submit("SET", "passed-over", "1").result(WAIT) == b"OK"


def test_calls_made_at_start_wait_for_the_masters_within_their_timeout(make, nodes):
    client = make()
    client.start()
    futures = [client.submit("SET", f"early:{i}", i) for i in range(50)]
    assert [f.result(WAIT) for f in futures] == [b"OK"] * 50
    # nothing listens on the seed: a call waits its timeout, then fails (never hangs)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    lonely = make(f"redis+cluster://127.0.0.1:{dead}", connect_timeout=0.2).start()
    t0 = time.monotonic()
    with pytest.raises(RedisTimeout, match="not connected within 0.3 s"):
        lonely.submit("GET", "k", timeout=0.3).result(WAIT)
    assert time.monotonic() - t0 < 2.0
    lonely.close()
    with pytest.raises(RedisUnavailable, match="closed"):
        lonely.submit("GET", "k").result(WAIT)


def test_eval_is_routed_by_its_first_key(make):
    client = started(make())
    script = "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('GET', KEYS[#KEYS])"
    tag = uuid.uuid4().hex
    futures = [client.submit_eval(script, [f"{tag}:{{t{i}}}:a", f"{tag}:{{t{i}}}:b"], [f"x{i}"])
               for i in range(60)]
    assert [f.result(WAIT) for f in futures] == [None] * 60  # :b unset: both keys, one node
    futures = [client.submit_eval(script, [f"{tag}:{{t{i}}}:a"], [f"x{i}"]) for i in range(60)]
    assert [f.result(WAIT) for f in futures] == [f"x{i}".encode() for i in range(60)]
    assert client.moved == client.asked == 0
    assert client.submit_eval("return 7").result(WAIT) == 7  # no key: any master
    with pytest.raises(ReplyError, match="CROSSSLOT"):  # keys of two slots: Redis says so
        client.submit_eval(script, ["{a}x", "{b}y"], ["v"]).result(WAIT)


def test_ask_during_a_slot_migration_then_moved_after_it(make, nodes):
    client = started(make())
    tag = "{mig" + uuid.uuid4().hex + "}"
    old, new = f"{tag}:old", f"{tag}:new"
    slot = key_slot(old)
    by_port = {n.port: n for n in nodes}
    src = by_port[slot_owners(nodes[0])[slot]]
    dst, other = [n for n in nodes if n is not src]
    ids = {n.port: n.command("CLUSTER", "MYID").decode() for n in nodes}
    assert client.submit("SET", old, "v1").result(WAIT) == b"OK"
    assert dst.command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[src.port]) == b"OK"
    assert src.command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[dst.port]) == b"OK"
    # a key the source does not hold is asked of the target (ASKING, then the command)
    assert client.submit("SET", new, "v2").result(WAIT) == b"OK"
    assert (client.asked, client.moved) == (1, 0)
    assert dst.command("CLUSTER", "COUNTKEYSINSLOT", slot) == 1
    assert client.submit("GET", old).result(WAIT) == b"v1"  # still at the source
    assert client.asked == 1
    assert src.command("MIGRATE", "127.0.0.1", dst.port, "", 0, 5000, "KEYS", old) == b"OK"
    for node in (dst, src, other):
        assert node.command("CLUSTER", "SETSLOT", slot, "NODE", ids[dst.port]) == b"OK"
    # the client's map still names the source: MOVED, followed once, and the map fixed
    assert client.submit("GET", old).result(WAIT) == b"v1"
    assert (client.asked, client.moved) == (1, 1)
    assert [client.submit("GET", k).result(WAIT) for k in (old, new)] == [b"v1", b"v2"]
    assert client.moved == 1
    wait_for(lambda: client.refreshes >= 2, WAIT)  # and the whole map read again


def test_a_lost_master_fails_its_calls_at_once_and_is_used_again_when_back(web):
    with cluster(3) as own:
        ups, downs = [], []
        client = RedisCluster(web, url_of(own), on_connect=lambda: ups.append(1),
                              on_disconnect=downs.append, backoff=(0.05, 0.2))
        try:
            started(client)
            owners = slot_owners(own[0])
            victim = own[2]
            keys = {owners[key_slot(f"k{i}")] == victim.port: f"k{i}" for i in range(100)}
            assert client.submit("SET", keys[True], "x").result(WAIT) == b"OK"
            victim.kill()
            wait_for(lambda: downs, WAIT)
            assert not client.connected
            t0 = time.monotonic()
            with pytest.raises(RedisUnavailable):
                client.submit("GET", keys[True], timeout=5).result(WAIT)
            assert time.monotonic() - t0 < 1.0  # at once, not after the timeout
            assert client.submit("SET", keys[False], "y").result(WAIT) == b"OK"
            victim.start()  # the same port and nodes.conf: it rejoins (empty)
            wait_for(lambda: client.connected and len(ups) == 2, WAIT)
            wait_for(lambda: b"cluster_state:ok" in victim.command("CLUSTER", "INFO"), WAIT)
            assert client.submit("SET", keys[True], "z").result(WAIT) == b"OK"
            assert victim.command("GET", keys[True]) == b"z"
        finally:
            client.close()
    assert "closed" in repr(client)


# --------------------------------------------------------------------------------------------
# RedisBroker on the cluster: the resume tests of test_redis_broker.py


@pytest.fixture
def pair(nodes):
    made = [_node(url_of(nodes)), _node(url_of(nodes))]
    yield made
    for server in made:
        server.registry.broker.close()
        server.stop()


def _names_on_every_master(nodes, prefix: str) -> list:
    owners = slot_owners(nodes[0])
    names, seen = [], set()
    for i in range(1000):
        name = f"{prefix}{i}"
        port = owners[key_slot(name)]
        if port not in seen:
            seen.add(port)
            names.append(name)
        if len(seen) == len(nodes):
            return names
    raise AssertionError("no channel name found for some master")


def test_broker_uses_the_cluster_client(pair):
    for server in pair:
        broker = server.registry.broker
        assert isinstance(broker, RedisBroker)
        assert httpx.post(f"{server.base}/pub/any", content=b"x", timeout=10).status_code == 202
        assert type(broker.client) is RedisCluster and broker.client.connected
        assert type(broker.pubsub) is RedisPubSub


def test_cluster_publishes_on_either_server_reach_subscribers_on_both_in_order(pair, nodes):
    a, b = pair
    names = _names_on_every_master(nodes, "room" + uuid.uuid4().hex[:8])
    readers = {name: [Reader(a.base, f"/sub/{name}"), Reader(b.base, f"/sub/{name}")]
               for name in names}
    time.sleep(0.3)  # both processes subscribed (a publish before is history, not live)
    for name in names:
        ids = []
        for i in range(20):
            r = _publish(pair[i % 2], name, f"m{i}")
            assert r.status_code == 202, r.text
            ids.append(r.text)
        epoch = ids[0].rpartition("-")[0]
        assert ids == [f"{epoch}-{n}" for n in range(1, 21)]
        for reader in readers[name]:
            events = reader.wait(20)
            assert [(i, d) for i, _, d in events] == [(ids[n], f"m{n}") for n in range(20)]
            reader.close()


def test_cluster_a_client_resumes_on_the_other_server_with_nothing_lost_and_nothing_twice(
        pair, nodes):
    a, b = pair
    for name in _names_on_every_master(nodes, "game" + uuid.uuid4().hex[:8]):
        first = Reader(a.base, f"/sub/{name}")
        time.sleep(0.2)
        ids = [_publish(a, name, f"e{i}").text for i in range(10)]
        first.wait(10)
        first.close()
        seen = first.events[3][0]  # the client had read 4 events when it went away
        ids += [_publish(b, name, f"e{i}").text for i in range(10, 15)]
        again = Reader(b.base, f"/sub/{name}", last_id=seen)
        events = again.wait(11)
        assert [d for _, _, d in events] == [f"e{i}" for i in range(4, 15)]
        _publish(a, name, "live")
        events = again.wait(12)
        assert events[-1][2] == "live" and len(events) == 12
        assert [i for i, _, _ in events[:11]] == ids[4:15]
        again.close()


def test_cluster_an_unknown_position_is_reset_never_a_silent_gap(pair):
    a, b = pair
    name = "t" + uuid.uuid4().hex[:8]
    assert _publish(a, name, "one").status_code == 202
    reader = Reader(b.base, f"/sub/{name}", last_id="nosuch-3")
    events = reader.wait(1)
    assert events[0][1] == "reset"
    reader.close()
