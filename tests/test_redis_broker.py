"""RedisBroker over real sockets: two servers in this process, each with its own broker (as two
processes would have), one real redis-server. Publishes on either reach subscribers on both, in
order; a client resumes on the other server with nothing lost and nothing twice; Redis down or
stalled is a 503 for a publish and never for anything else; Redis restarted empty is ``reset``.
"""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest
from httpx_sse import connect_sse

from clos_web import App
from clos_web.http.server import Server
from clos_web.push import Accepted, Channels, channel
from clos_web.push.redis_broker import RedisBroker

from redis_server import RedisServer


def _node(url: str, **kw):
    """A server whose registry stores its events in Redis at ``url``."""
    registry = Channels(broker=RedisBroker(url, timeout=1.0), heartbeat=0.5, **kw)
    app = App()

    @app.get("/sub/{name}")
    @channel(registry)
    def sub(name: str):
        return name.split(",")

    @app.get("/poll/{name}")
    @channel(registry, poll=True, timeout=2.0)
    def poll(name: str):
        return [name]

    @app.post("/pub/{name}")
    def pub(request, name: str):
        return Accepted(registry.publish(name, request.body.decode()))

    @app.get("/plaintext")
    def plaintext():
        return "ok"

    server = Server(app=app, port=0).bind()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.registry = registry
    server.base = f"http://127.0.0.1:{server.port}"
    return server


class Reader:
    """An SSE client (httpx-sse) on a thread: its events, and what ended it."""

    def __init__(self, base: str, path: str, last_id: str | None = None):
        self.events = []
        self.ended = threading.Event()
        self.opened = threading.Event()
        headers = {"Last-Event-ID": last_id} if last_id else {}
        self.client = httpx.Client(timeout=httpx.Timeout(10.0, read=10.0))
        self.thread = threading.Thread(target=self._run, args=(base + path, headers),
                                       daemon=True)
        self.thread.start()
        assert self.opened.wait(5)

    def _run(self, url, headers):
        try:
            with connect_sse(self.client, "GET", url, headers=headers) as source:
                self.response = source.response
                self.opened.set()
                for sse in source.iter_sse():
                    self.events.append((sse.id, sse.event, sse.data))
        except Exception:
            pass
        finally:
            self.opened.set()
            self.ended.set()

    def wait(self, n: int, timeout: float = 5.0):
        deadline = time.monotonic() + timeout
        while len(self.events) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(self.events) >= n, self.events
        return self.events

    def close(self):
        """Hang up now, as a browser closing its tab does: the server sees the close."""
        response = getattr(self, "response", None)
        if response is not None:
            stream = response.extensions.get("network_stream")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self.ended.wait(5)
        self.client.close()


@pytest.fixture
def redis():
    with RedisServer() as server:
        yield server


@pytest.fixture
def nodes(redis):
    made = [_node(redis.url), _node(redis.url)]
    yield made
    for server in made:
        server.registry.broker.close()
        server.stop()


def _publish(node, name: str, data: str) -> httpx.Response:
    return httpx.post(f"{node.base}/pub/{name}", content=data.encode(), timeout=10)


def _settle(reader: Reader, n: int):
    return [(e, d) for _, e, d in reader.wait(n)]


def test_publishes_on_either_server_reach_subscribers_on_both_in_order(nodes):
    a, b = nodes
    readers = [Reader(a.base, "/sub/room"), Reader(b.base, "/sub/room")]
    time.sleep(0.3)  # both processes subscribed (a publish before is history, not live)
    ids = []
    for i in range(20):
        r = _publish(nodes[i % 2], "room", f"m{i}")
        assert r.status_code == 202, r.text
        ids.append(r.text)
    epoch = ids[0].rpartition("-")[0]
    assert ids == [f"{epoch}-{n}" for n in range(1, 21)]
    for reader in readers:
        events = reader.wait(20)
        assert [(i, d) for i, _, d in events] == [(ids[n], f"m{n}") for n in range(20)]
        reader.close()


def test_a_client_resumes_on_the_other_server_with_nothing_lost_and_nothing_twice(nodes):
    a, b = nodes
    first = Reader(a.base, "/sub/game")
    time.sleep(0.2)
    ids = [_publish(a, "game", f"e{i}").text for i in range(10)]
    first.wait(10)
    first.close()
    seen = first.events[3][0]  # the client had read 4 events when it went away
    ids += [_publish(b, "game", f"e{i}").text for i in range(10, 15)]
    again = Reader(b.base, "/sub/game", last_id=seen)
    events = again.wait(11)
    assert [d for _, _, d in events] == [f"e{i}" for i in range(4, 15)]
    _publish(a, "game", "live")
    events = again.wait(12)
    assert events[-1][2] == "live" and len(events) == 12
    assert [i for i, _, _ in events[:11]] == ids[4:15]
    again.close()


def test_an_unknown_or_lost_position_is_reset_never_a_silent_gap(nodes, redis):
    a, b = nodes
    _publish(a, "t", "one")
    reader = Reader(b.base, "/sub/t", last_id="nosuch-3")
    events = reader.wait(1)
    assert events[0][1] == "reset"
    reader.close()
    # Redis restarted empty: the channel's epoch is gone; a client resuming is reset
    last = _publish(a, "t", "two").text
    redis.restart()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        r = _publish(a, "t", "three")
        if r.status_code == 202:
            break
        time.sleep(0.2)
    assert r.status_code == 202 and r.text.rpartition("-")[0] != last.rpartition("-")[0]
    reader = Reader(b.base, "/sub/t", last_id=last)
    assert reader.wait(1)[0][1] == "reset"
    reader.close()


def test_redis_down_is_a_503_for_publishes_only_and_subscribers_stay(nodes, redis):
    a, b = nodes
    reader = Reader(b.base, "/sub/d")
    time.sleep(0.2)
    assert _publish(a, "d", "before").status_code == 202
    reader.wait(1)
    redis.pause(3.0)
    t0 = time.monotonic()
    r = _publish(a, "d", "during")
    assert r.status_code == 503, r.text
    assert time.monotonic() - t0 < 2.5
    for _ in range(5):  # unrelated requests are answered at once meanwhile
        t0 = time.monotonic()
        assert httpx.get(f"{a.base}/plaintext", timeout=5).text == "ok"
        assert time.monotonic() - t0 < 0.5
    assert not reader.ended.is_set()
    redis.resume()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        r = _publish(a, "d", "after")
        if r.status_code == 202:
            break
        time.sleep(0.2)
    assert r.status_code == 202
    events = reader.wait(2, timeout=10)
    data = [d for _, e, d in events if e == "message"]
    assert data[0] == "before" and "during" not in data and data[-1] == "after"
    reader.close()


def test_one_id_resumes_every_channel_of_a_multi_channel_stream_on_the_other_server(nodes):
    a, b = nodes
    reader = Reader(a.base, "/sub/x,y")
    time.sleep(0.3)
    for channel_name, data in [("x", "x1"), ("y", "y1"), ("x", "x2")]:
        assert _publish(b, channel_name, data).status_code == 202
    events = reader.wait(3)
    reader.close()
    last = events[-1][0]
    assert last.count(",") == 1 and ":" in last  # its place in both channels
    assert _publish(a, "y", "y2").status_code == 202  # while the client is away
    assert _publish(b, "x", "x3").status_code == 202
    again = Reader(b.base, "/sub/x,y", last_id=last)
    got = again.wait(2)
    assert sorted(d for _, _, d in got) == ["x3", "y2"]  # nothing lost, nothing twice
    assert all(e == "message" for _, e, _ in got)
    _publish(a, "x", "x4")
    got = again.wait(3)
    assert got[-1][2] == "x4" and len(got) == 3
    again.close()
    # and once more from the newest id, on the first server: nothing to catch up
    third = Reader(a.base, "/sub/x,y", last_id=got[-1][0])
    _publish(b, "y", "y3")
    assert [d for _, _, d in third.wait(1)] == ["y3"]
    third.close()


def test_a_single_id_on_a_multi_channel_stream_resumes_its_channel_and_resets_the_others(nodes):
    a, b = nodes
    _publish(a, "x", "x1")
    _publish(a, "y", "y1")
    seen = _publish(a, "x", "x2").text
    _publish(a, "x", "x3")
    reader = Reader(b.base, "/sub/x,y", last_id=seen)
    events = reader.wait(2)
    kinds = sorted((e, d) for _, e, d in events)
    assert ("message", "x3") in kinds and any(e == "reset" for e, _ in kinds)
    reader.close()


def test_long_poll_resumes_on_the_other_server(nodes):
    a, b = nodes
    ids = [_publish(a, "p", f"p{i}").text for i in range(3)]
    got = []
    last = ids[0]
    for _ in range(4):
        r = httpx.get(f"{b.base}/poll/p", params={"lastEventId": last}, timeout=10)
        assert r.status_code == 200
        body = r.json()
        got += [e["data"] for e in body["events"]]
        last = body["last_id"]
        if len(got) == 2:
            break
    assert got == ["p1", "p2"]
    # a poll that waits is answered by the next event, published on the other server
    result = {}
    thread = threading.Thread(target=lambda: result.update(
        r=httpx.get(f"{b.base}/poll/p", params={"lastEventId": last}, timeout=10)))
    thread.start()
    time.sleep(0.3)
    _publish(a, "p", "p3")
    thread.join(10)
    assert [e["data"] for e in result["r"].json()["events"]] == ["p3"]


def test_a_stream_subscribed_to_one_more_channel_at_run_time_gets_its_events(nodes):
    from clos_web.push import subscribe

    a, b = nodes
    reader = Reader(a.base, "/sub/first")
    time.sleep(0.2)
    (conn,) = [c for c in list(a.conns) if getattr(c.protocol, "stream", None) is not None]
    a.call_soon_threadsafe(subscribe, a.registry.channel("second"), conn)
    time.sleep(0.3)
    assert _publish(b, "second", "s1").status_code == 202
    assert _publish(b, "first", "f1").status_code == 202
    assert sorted(d for _, _, d in reader.wait(2)) == ["f1", "s1"]
    reader.close()


@pytest.mark.parametrize("name", ["", "}", "}x", "a}b", "{", "{a}", "room-1", "é"])
def test_a_channels_keys_share_one_cluster_slot_whatever_its_name(name):
    from clos_web.push.redis_broker import _keys, _presence_keys
    from clos_web.redis.cluster import key_slot

    keys = _keys(name) + _presence_keys(name)
    assert len({key_slot(k.encode()) for k in keys}) == 1
    assert len(set(keys)) == 4


def test_a_subscriber_too_far_behind_in_its_catch_up_is_reset_from_where_the_process_is(
        monkeypatch):
    """The live events kept for a subscriber still catching up are bounded: past the bound it
    is sent reset at the process's position, never a silent gap (no Redis needed here)."""
    from clos_web.push import redis_broker as rb

    monkeypatch.setattr(rb, "_MAX_WAITING", 3)
    got = []

    class Registry:
        presence_events = False

        def _deliver(self, ev):
            pass

        def _live(self, sub, name, first):
            got.extend(first)

    class Sub:
        names = ["c"]
        conn = type("C", (), {"closed": False})()

    broker = rb.RedisBroker("redis://127.0.0.1:1/0")
    broker._registry = Registry()
    rc = broker._remote("c")
    rc.epoch, rc.offset = "ep", 10
    join = rb._Join(Sub(), "c", ("ep", 10), None, top=12, history=[])
    rc.joins.append(join)
    for offset in range(11, 17):
        broker._deliver(rc, offset, None, f"m{offset}")
    assert join.overflow and len(join.buffer) == 3
    broker._settle_joins(rc)
    assert [(e.event, e.id) for e in got] == [("reset", "ep-16")]


def test_a_redis_broker_serves_one_registry():
    broker = RedisBroker("redis://127.0.0.1:1/0")
    first, second = Channels(broker=broker), Channels(broker=broker)
    broker._bind(first)
    broker._bind(first)
    with pytest.raises(ValueError, match="another registry"):
        broker._bind(second)
