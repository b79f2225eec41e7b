"""WebSocket in the server: the upgrade, the socket's generic functions, channels over
WebSocket, keep-alive and closing, driven over real sockets by the ``websockets`` client
(a library nobody here wrote) and, where a client would not misbehave on purpose, raw bytes."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import threading
import time

import attrs
import pytest

from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect

from clos_web import App, Channels
from clos_web.clos import call_next_method
from clos_web.ws import Binary, Text, WebSocket, on_close, on_open, receive

from conftest import connect, load_example, request, wait_for


@pytest.fixture
def hello(serve):
    """examples/hello.py on an ephemeral port, with its channels at hand."""
    module = load_example("hello")
    server = serve(module.app)
    server.registry = module.channels
    return server


def url(server, path: str) -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


def post(server, path: str, body: bytes) -> int:
    sock = connect(server)
    try:
        sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                     % (path.encode(), len(body), body))
        head = sock.recv(4096)
        return int(head.split(b" ", 2)[1])
    finally:
        sock.close()


def handshake(key: bytes = None, extra: bytes = b"", path: bytes = b"/ws-echo") -> bytes:
    key = key or base64.b64encode(os.urandom(16))
    return (b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key +
            b"\r\nSec-WebSocket-Version: 13\r\n" + extra + b"\r\n")


# --------------------------------------------------------------------------------------------
# the contract app: echo and channels


def test_echo_text_and_binary_with_the_websockets_client(hello):
    with ws_connect(url(hello, "/ws-echo"), compression=None, max_size=None,
                    open_timeout=5) as ws:
        ws.send("héllo")
        assert ws.recv(timeout=5) == "héllo"
        ws.send(b"\x00\xffbin")
        assert ws.recv(timeout=5) == b"\x00\xffbin"
        big = os.urandom(3 * 2**20)
        ws.send(big)
        assert ws.recv(timeout=10) == big


def test_echo_with_permessage_deflate(hello):
    with ws_connect(url(hello, "/ws-echo"), open_timeout=5) as ws:  # offers deflate
        assert ws.response.headers.get("Sec-WebSocket-Extensions", "").startswith(
            "permessage-deflate")
        for text in ["a" * 10_000, "short", json.dumps({"k": list(range(500))})]:
            ws.send(text)
            assert ws.recv(timeout=5) == text


def test_echo_message_of_16_mib_and_one_byte_more_is_refused(hello):
    with ws_connect(url(hello, "/ws-echo"), compression=None, max_size=None,
                    open_timeout=5) as ws:
        data = b"x" * (16 * 2**20)
        ws.send(data)
        assert ws.recv(timeout=30) == data
    with ws_connect(url(hello, "/ws-echo"), compression=None, max_size=None,
                    open_timeout=5) as ws:
        ws.send(b"x" * (16 * 2**20 + 1))
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=30)
        assert info.value.rcvd.code == 1009


def test_channel_subscriber_gets_events_as_json_frames(hello):
    with ws_connect(url(hello, "/ws/news"), open_timeout=5) as ws:
        wait_for(lambda: _subscribers(hello, "news") == 1)
        assert post(hello, "/pub/news", b"first") == 202
        assert post(hello, "/pub/news", b"second") == 202
        one = json.loads(ws.recv(timeout=5))
        two = json.loads(ws.recv(timeout=5))
    assert one["data"] == "first" and two["data"] == "second"
    assert one["event"] == "message" and one["id"] != two["id"]


def _subscribers(server, name) -> int:
    return server.registry.subscriber_count(name)


def _registry(server) -> Channels:
    return server.registry


def test_resume_over_websocket_nothing_lost_nothing_twice(hello):
    with ws_connect(url(hello, "/ws/game"), open_timeout=5) as ws:
        wait_for(lambda: _subscribers(hello, "game") == 1)
        for i in range(3):
            assert post(hello, "/pub/game", b"m%d" % i) == 202
        seen = [json.loads(ws.recv(timeout=5)) for _ in range(3)]
    last = seen[-1]["id"]
    wait_for(lambda: _subscribers(hello, "game") == 0)
    for i in range(3, 6):  # published while nobody listens
        assert post(hello, "/pub/game", b"m%d" % i) == 202
    with ws_connect(url(hello, f"/ws/game?lastEventId={last}"), open_timeout=5) as ws:
        missed = [json.loads(ws.recv(timeout=5)) for _ in range(3)]
        wait_for(lambda: _subscribers(hello, "game") == 1)
        assert post(hello, "/pub/game", b"m6") == 202
        live = json.loads(ws.recv(timeout=5))
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.3)
    assert [e["data"] for e in seen + missed + [live]] == [f"m{i}" for i in range(7)]


def test_unknown_last_id_gets_reset(hello):
    with ws_connect(url(hello, "/ws/r?lastEventId=nope-99"), open_timeout=5) as ws:
        assert json.loads(ws.recv(timeout=5))["event"] == "reset"


def test_fan_out_sends_the_same_frame_bytes_to_every_subscriber(hello):
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(ws_connect(url(hello, "/ws/wide"), compression=None,
                                                open_timeout=5)) for _ in range(20)]
        wait_for(lambda: _subscribers(hello, "wide") == 20)
        assert post(hello, "/pub/wide", b"all") == 202
        got = [json.loads(s.recv(timeout=5)) for s in socks]
        assert all(g == got[0] for g in got)


# --------------------------------------------------------------------------------------------
# the handshake


@pytest.mark.parametrize("raw,status", [
    (b"GET /ws-echo HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET /ws-echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     b"Sec-WebSocket-Version: 13\r\n\r\n", 400),
    (b"GET /ws-echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n", 426),
    (b"POST /ws-echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405),
])
def test_bad_handshakes_are_refused(hello, raw, status):
    got, headers, _ = request(hello, raw)
    assert got == status
    if status == 426:
        assert headers.get("sec-websocket-version") == "13"


def test_accept_key_is_rfc_6455s_example(hello):
    sock = connect(hello)
    sock.sendall(handshake(b"dGhlIHNhbXBsZSBub25jZQ=="))
    head = sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 101 ")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in head
    sock.close()


def test_cross_origin_is_refused_same_origin_and_listed_allowed(serve):
    app = App()

    @app.websocket("/own")
    def own():
        return Echoing()

    @app.websocket("/listed", origins=["https://game.example"])
    def listed():
        return Echoing()

    server = serve(app)
    for path, origin, status in [(b"/own", b"http://evil.example", b"403"),
                                 (b"/listed", b"http://evil.example", b"403"),
                                 (b"/listed", b"https://game.example", b"101"),
                                 (b"/own", b"http://x", b"101"),  # Host: x, same origin
                                 (b"/own", None, b"101")]:       # not a browser
        sock = connect(server)
        extra = b"Origin: " + origin + b"\r\n" if origin else b""
        sock.sendall(handshake(extra=extra, path=path))
        assert sock.recv(4096).startswith(b"HTTP/1.1 " + status + b" "), (path, origin)
        sock.close()
    with ws_connect(url(server, "/own"), origin=f"http://127.0.0.1:{server.port}",
                    open_timeout=5) as ws:
        ws.send("ok")
        assert ws.recv(timeout=5) == "ok"


@attrs.define(slots=True, eq=False, repr=False)
class Echoing(WebSocket):
    pass


@receive.dispatch
def echoing(ws: Echoing, message: Text):
    ws.send(message)


def test_frames_right_behind_the_handshake_are_read(hello):
    sock = connect(hello)
    mask = b"\x01\x02\x03\x04"
    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(b"early"))
    sock.sendall(handshake() + b"\x81\x85" + mask + payload)
    data = b""
    while b"early" not in data:
        chunk = sock.recv(4096)
        assert chunk
        data += chunk
    assert b"\x81\x05early" in data
    sock.close()


# --------------------------------------------------------------------------------------------
# handlers as generic functions


@attrs.define(slots=True, eq=False, repr=False)
class Room(WebSocket):
    user: str
    log: list = attrs.field(factory=list)


def room_app(events: list, registry: Channels):
    app = App()

    @app.websocket("/room/{user}", subprotocols=["v2.room", "v1.room"])
    def room(user: str):
        if user == "banned":
            return None
        ws = Room(user)
        ws.subscribe("room", registry=registry)
        return ws

    return app


_events: list = []


@on_open.dispatch
def room_open(ws: Room):
    _events.append(("open", ws.user, ws.subprotocol))
    ws.send(f"welcome {ws.user}")


@receive.dispatch
def room_text(ws: Room, message: Text):
    _events.append(("text", ws.user, message.data))
    if message.data == "boom":
        raise RuntimeError("a handler bug")
    ws.stream.registry.publish("room", f"{ws.user}: {message.data}")


@receive.dispatch
def room_binary(ws: Room, message: Binary):
    _events.append(("binary", ws.user, message.data))
    ws.send(message.data[::-1])


@on_close.dispatch
def room_close(ws: Room, code: object, reason: object):
    _events.append(("close", ws.user, code))


@receive.around
def room_around(ws: Room, message: Text):
    ws.log.append("around")
    return call_next_method()


def test_generic_handlers_dispatch_on_socket_and_message_class(serve):
    _events.clear()
    registry = Channels()
    server = serve(room_app(_events, registry))
    with ws_connect(url(server, "/room/ada"), subprotocols=["v1.room", "v2.room"],
                    open_timeout=5) as ada:
        assert ada.subprotocol == "v2.room"  # the server's preference among the offered
        assert ada.recv(timeout=5) == "welcome ada"
        with ws_connect(url(server, "/room/bob"), subprotocols=["v1.room"],
                        open_timeout=5) as bob:
            assert bob.recv(timeout=5) == "welcome bob"
            wait_for(lambda: registry.subscriber_count("room") == 2)
            ada.send("hi")
            for client in (ada, bob):
                assert json.loads(client.recv(timeout=5))["data"] == "ada: hi"
            bob.send(b"abc")
            assert bob.recv(timeout=5) == b"cba"
            bob.close(4000, "bye")
        wait_for(lambda: ("close", "bob", 4000) in _events)
        ada.send("boom")  # receive raises: the socket closes with 1011, the server goes on
        with pytest.raises(ConnectionClosed) as info:
            ada.recv(timeout=5)
        assert info.value.rcvd.code == 1011
    assert ("open", "ada", "v2.room") in _events and ("open", "bob", "v1.room") in _events
    assert ("binary", "bob", b"abc") in _events
    wait_for(lambda: ("close", "ada", 1011) in _events)
    wait_for(lambda: registry.subscriber_count("room") == 0)
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(url(server, "/room/banned"), open_timeout=5)
    assert refused.value.response.status_code == 403


def test_send_from_another_thread(serve):
    app = App()
    opened = []

    @app.websocket("/t")
    def t():
        ws = WebSocket()
        opened.append(ws)
        return ws

    server = serve(app)
    with ws_connect(url(server, "/t"), open_timeout=5) as client:
        wait_for(lambda: opened and opened[0].is_open)
        done = threading.Event()

        def worker():
            for i in range(50):
                opened[0].send(f"n{i}")
            done.set()

        threading.Thread(target=worker).start()
        assert done.wait(5)
        assert [client.recv(timeout=5) for _ in range(50)] == [f"n{i}" for i in range(50)]
        opened[0].close(1000, "done")
        with pytest.raises(ConnectionClosed) as info:
            client.recv(timeout=5)
        assert info.value.rcvd.code == 1000


def test_end_stream_and_disconnect_close_with_1001(hello):
    registry = _registry(hello)
    with ws_connect(url(hello, "/ws/bye"), open_timeout=5) as ws:
        wait_for(lambda: _subscribers(hello, "bye") == 1)
        assert registry.disconnect("bye") == 1
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
        assert info.value.rcvd.code == 1001


def test_server_stop_closes_sockets_with_1001(serve):
    app = App()

    @app.websocket("/s")
    def s():
        return WebSocket()

    server = serve(app)
    with ws_connect(url(server, "/s"), open_timeout=5) as client:
        stopper = threading.Thread(target=server.stop, args=(5,))
        stopper.start()
        with pytest.raises(ConnectionClosed) as info:
            client.recv(timeout=5)
        assert info.value.rcvd.code == 1001
    stopper.join(10)
    assert not stopper.is_alive()


def test_keepalive_pings_and_a_dead_peer_is_closed(serve):
    app = App()
    closed = []

    @attrs.define(slots=True, eq=False, repr=False)
    class Quiet(WebSocket):
        pass

    @app.websocket("/q", ping_interval=0.5)
    def q():
        ws = Quiet()
        ws.ping_timeout = 1.0
        return ws

    @on_close.dispatch
    def quiet_closed(ws: Quiet, code: object, reason: object):
        closed.append(code)

    server = serve(app)
    # a live client answers pings (the websockets client does) and stays open
    with ws_connect(url(server, "/q"), open_timeout=5, ping_interval=None) as ws:
        time.sleep(3.5)  # several ping intervals (coarse one-second deadlines)
        ws.send("still here")
        assert not closed
    wait_for(lambda: closed == [1000] or closed == [1005] or len(closed) == 1)
    closed.clear()
    # a peer that never answers (raw socket, reads nothing) is closed after ping + timeout
    sock = connect(server)
    sock.sendall(handshake(path=b"/q"))
    assert sock.recv(4096).startswith(b"HTTP/1.1 101")
    wait_for(lambda: closed == [1006], timeout=8)
    sock.close()


def test_slow_consumer_of_a_channel_is_closed_others_unaffected(serve):
    app = App()
    registry = Channels()

    @app.websocket("/c")
    def c():
        ws = WebSocket()
        ws.subscribe("flood", registry=registry)
        return ws

    server = serve(app, output_cap=256 * 1024)
    slow = connect(server)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.sendall(handshake(path=b"/c"))
    assert slow.recv(4096).startswith(b"HTTP/1.1 101")
    with ws_connect(url(server, "/c"), open_timeout=5, compression=None) as fast:
        wait_for(lambda: registry.subscriber_count("flood") == 2)
        payload = "x" * 4000
        received = 0
        for i in range(3000):  # 12 MB: more than the kernel's buffers hold for the slow one
            registry.publish("flood", payload)
            if i % 16 == 15:  # the fast one keeps up (at most 64 KB behind, under its cap)
                while received <= i:
                    fast.recv(timeout=5)
                    received += 1
        while received < 3000:
            fast.recv(timeout=5)
            received += 1
        wait_for(lambda: registry.subscriber_count("flood") == 1)
    slow.close()


# --------------------------------------------------------------------------------------------
# through Redis: resume on another node, one id for several channels


def _redis_node(url: str):
    from clos_web import Accepted, start
    from clos_web.push.redis_broker import RedisBroker

    registry = Channels(broker=RedisBroker(url, timeout=1.0), heartbeat=0.5)
    app = App()

    @app.websocket("/ws/{names}")
    def sub(request, names: str):
        from clos_web.push import request_last_id
        ws = WebSocket()
        ws.subscribe(names.split(","), request_last_id(request), registry=registry)
        return ws

    @app.post("/pub/{name}")
    def pub(request, name: str):
        return Accepted(registry.publish(name, request.body.decode()))

    server = start(app, 0)
    server.registry = registry
    return server


@pytest.fixture
def redis_nodes():
    redis_server = pytest.importorskip("redis_server")
    import shutil
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    with redis_server.RedisServer() as redis:
        made = [_redis_node(redis.url), _redis_node(redis.url)]
        yield made
        for server in made:
            server.registry.broker.close()
            server.stop(2)


def test_resume_on_another_node_through_redis_nothing_lost_nothing_twice(redis_nodes):
    a, b = redis_nodes
    with ws_connect(url(a, "/ws/tab,hand"), open_timeout=5) as ws:
        wait_for(lambda: a.registry.subscriber_count("tab") == 1)
        assert post(b, "/pub/tab", b"t1") == 202
        assert post(a, "/pub/hand", b"h1") == 202
        got = [json.loads(ws.recv(timeout=5)) for _ in range(2)]
    assert sorted(g["data"] for g in got) == ["h1", "t1"]
    last = got[-1]["id"]  # one id: the position in both channels
    assert "," in last
    for data in (b"t2", b"t3"):
        assert post(a, "/pub/tab", data) == 202
    assert post(b, "/pub/hand", b"h2") == 202
    with ws_connect(url(b, f"/ws/tab,hand?lastEventId={last}"), open_timeout=5) as ws:
        missed = [json.loads(ws.recv(timeout=5))["data"] for _ in range(3)]
        wait_for(lambda: b.registry.subscriber_count("tab") == 1)
        assert post(a, "/pub/tab", b"t4") == 202
        assert json.loads(ws.recv(timeout=5))["data"] == "t4"
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.3)
    assert sorted(missed) == ["h2", "t2", "t3"]
    assert missed.index("t2") < missed.index("t3")


def test_a_blocking_websocket_handler_upgrades_without_errors(serve, caplog):
    """A handler on the worker pool answers later (server.complete): the upgrade switches
    the connection's protocol there too, and HTTP's bookkeeping stays out of it."""
    app = App()

    @app.websocket("/later", blocking=True)
    def later():
        return Echoing()

    server = serve(app)
    with caplog.at_level("ERROR"):
        with ws_connect(url(server, "/later"), open_timeout=5) as ws:
            ws.send("from the pool")
            assert ws.recv(timeout=5) == "from the pool"
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text
