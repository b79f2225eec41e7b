"""Presence over real sockets: who reads a channel, with the info its handler gave, as a
``presence`` snapshot then ``join``/``leave`` events on each stream, and ``registry.presence``;
in one process (the in-memory broker) and across servers through Redis, where the entries of
a process that died age out and are announced as ``leave``."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from clos_web import App
from clos_web.http.server import Server
from clos_web.push import Channels, EventStream
from clos_web.push.redis_broker import RedisBroker

from redis_server import RedisServer
from test_redis_broker import Reader


def _node(registry: Channels):
    app = App()

    @app.get("/room/{name}")
    def room(name: str, user: str):
        return EventStream([name], registry=registry, presence={"user": user})

    @app.get("/who/{name}", blocking=True)  # presence() may wait for Redis: not on the loop
    def who(name: str):
        return registry.presence(name)

    server = Server(app=app, port=0).bind()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.base = f"http://127.0.0.1:{server.port}"
    server.registry = registry
    return server


def _users(events, kind):
    return [json.loads(d) for _, e, d in events if e == kind]


def _wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.02)


def _who(node, name):
    return {c: i["user"] for c, i in httpx.get(f"{node.base}/who/{name}", timeout=5).json().items()}


def _check_presence(first, second):
    """alice on ``first``, then bob on ``second``: snapshots, joins, presence(), a leave."""
    alice = Reader(first.base, "/room/lobby?user=alice")
    _wait_for(lambda: _users(alice.events, "presence"))
    (snapshot,) = _users(alice.events, "presence")
    assert sorted(i["user"] for i in snapshot.values()) == ["alice"]
    bob = Reader(second.base, "/room/lobby?user=bob")
    _wait_for(lambda: any(j["info"]["user"] == "bob" for j in _users(alice.events, "join")))
    _wait_for(lambda: _users(bob.events, "presence"))
    assert sorted(i["user"] for i in _users(bob.events, "presence")[0].values()) == [
        "alice", "bob"]
    for node in (first, second):
        assert sorted(_who(node, "lobby").values()) == ["alice", "bob"]
    bob.close()
    _wait_for(lambda: any(j["info"]["user"] == "bob" for j in _users(alice.events, "leave")))
    assert sorted(_who(first, "lobby").values()) == ["alice"]
    alice.close()


def test_presence_in_one_process():
    node = _node(Channels(presence_events=True))
    try:
        _check_presence(node, node)
        _wait_for(lambda: node.registry.presence("lobby") == {})  # alice hung up too
    finally:
        node.stop()


def test_streams_without_presence_events_get_no_presence_events():
    node = _node(Channels())
    try:
        reader = Reader(node.base, "/room/quiet?user=carol")
        _wait_for(lambda: node.registry.presence("quiet"))
        assert list(node.registry.presence("quiet").values()) == [{"user": "carol"}]
        node.registry.publish("quiet", "hi")
        assert [e for _, e, _ in reader.wait(1)] == ["message"]
        reader.close()
    finally:
        node.stop()


@pytest.fixture
def redis():
    with RedisServer() as server:
        yield server


def _redis_node(url):
    return _node(Channels(broker=RedisBroker(url, timeout=1.0), presence_events=True,
                          presence_ttl=1.5))


def test_presence_across_servers_through_redis(redis):
    a, b = _redis_node(redis.url), _redis_node(redis.url)
    try:
        _check_presence(a, b)
    finally:
        for node in (a, b):
            node.registry.broker.close()
            node.stop()


def test_the_clients_of_a_process_that_died_age_out_and_leave(redis):
    a = _redis_node(redis.url)
    try:
        alice = Reader(a.base, "/room/hall?user=alice")
        _wait_for(lambda: _users(alice.events, "presence"))
        # a client of a process that died: its entry is never refreshed again
        redis.command("HSET", "clos_web:{#hall}:p", "ghost", json.dumps({"user": "ghost"}))
        t = redis.command("TIME")
        now_ms = int(t[0]) * 1000 + int(t[1]) // 1000
        redis.command("ZADD", "clos_web:{#hall}:z", now_ms + 300, "ghost")
        assert "ghost" in _who(a, "hall").values()
        _wait_for(lambda: any(j["info"]["user"] == "ghost"
                              for j in _users(alice.events, "leave")), timeout=5)
        assert sorted(_who(a, "hall").values()) == ["alice"]
        alice.close()
    finally:
        a.registry.broker.close()
        a.stop()
