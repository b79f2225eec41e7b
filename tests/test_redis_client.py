"""clos_web.redis: the RESP2 reader and writer as bytes, then the non-blocking clients inside a
clos_web server's loop against a real redis-server (tests/redis_server.py starts them; the
client tests are skipped when redis-server is not installed)."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import Future

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from clos_web import App
from clos_web.redis import client as client_module
from clos_web.redis.client import (
    RedisClient, RedisPubSub, RedisTimeout, RedisUnavailable, parse_url,
)
from clos_web.redis.resp import (
    HAVE_HIREDIS, NOT_READY, HiredisReader, ProtocolError, PyReader, ReplyError,
    encode_command,
)

from conftest import connect, wait_for, Reader as HTTPReader
from redis_server import RedisServer, cluster, redis_server  # noqa: F401 (a fixture)

READERS = [PyReader] + ([HiredisReader] if HAVE_HIREDIS else [])
needs_hiredis = pytest.mark.skipif(not HAVE_HIREDIS, reason="hiredis is not installed")


# --------------------------------------------------------------------------------------------
# RESP2 as bytes

def encode_reply(tree) -> bytes:
    """A tagged reply tree as Redis writes it."""
    if isinstance(tree, list):
        return b"*%d\r\n" % len(tree) + b"".join(map(encode_reply, tree))
    kind, *value = tree
    if kind == "$":
        return b"$%d\r\n%s\r\n" % (len(value[0]), value[0])
    if kind == "+":
        return b"+%s\r\n" % value[0]
    if kind == "-":
        return b"-%s\r\n" % value[0].encode()
    if kind == ":":
        return b":%d\r\n" % value[0]
    return {"nil": b"$-1\r\n", "nil-array": b"*-1\r\n"}[kind]


def expected(tree):
    """What a reader should give for a tagged tree (an error reply as a comparable tuple)."""
    if isinstance(tree, list):
        return [expected(t) for t in tree]
    kind, *value = tree
    if kind == "-":
        return ("error", value[0])
    if kind in ("nil", "nil-array"):
        return None
    return value[0]


def comparable(reply):
    if isinstance(reply, list):
        return [comparable(r) for r in reply]
    if isinstance(reply, ReplyError):
        assert type(reply) is ReplyError
        return ("error", reply.args[0])
    return reply


_line = st.binary(max_size=20).filter(lambda b: b"\r" not in b and b"\n" not in b)
_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20)
_leaf = st.one_of(
    st.binary(max_size=40).map(lambda b: ("$", b)),
    _line.map(lambda b: ("+", b)),
    st.integers(-(2 ** 63), 2 ** 63 - 1).map(lambda n: (":", n)),
    _text.map(lambda s: ("-", "ERR " + s)),
    st.just(("nil",)),
    st.just(("nil-array",)),
)
replies = st.recursive(_leaf, lambda kids: st.lists(kids, max_size=5), max_leaves=20)


def read_all(reader, chunks) -> list:
    out = []
    for chunk in chunks:
        reader.feed(chunk)
        while (reply := reader.gets()) is not NOT_READY:
            out.append(comparable(reply))
    return out


@pytest.mark.parametrize("make", READERS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(replies, min_size=1, max_size=4))
def test_readers_parse_replies_split_at_every_point(make, batch):
    data = b"".join(map(encode_reply, batch))
    want = [expected(t) for t in batch]
    for i in range(len(data) + 1):
        assert read_all(make(), [data[:i], data[i:]]) == want
    assert read_all(make(), [data[i:i + 1] for i in range(len(data))]) == want


@needs_hiredis
@settings(max_examples=100, deadline=None)
@given(data=st.lists(replies, min_size=1, max_size=4).map(
    lambda b: b"".join(map(encode_reply, b))), cut=st.integers(0, 10_000))
def test_pure_python_reader_agrees_with_hiredis(data, cut):
    cut %= len(data) + 1
    assert read_all(PyReader(), [data[:cut], data[cut:]]) == \
        read_all(HiredisReader(), [data[:cut], data[cut:]])


def test_reader_values():
    reader = PyReader()
    reader.feed(b"*3\r\n$0\r\n\r\n*0\r\n*2\r\n:-5\r\n-WRONGTYPE bad\r\n")
    reply = reader.gets()
    assert reply[:2] == [b"", []] and reply[2][0] == -5
    assert isinstance(reply[2][1], ReplyError) and reply[2][1].code == "WRONGTYPE"
    assert reader.gets() is NOT_READY and not NOT_READY


@pytest.mark.parametrize("make", READERS)
@pytest.mark.parametrize("bad", [
    b"?x\r\n", b":12a\r\n", b":+1\r\n", b": 1\r\n", b":\r\n", b"$-2\r\n", b"*-2\r\n",
    b":99999999999999999999\r\n", b"$abc\r\n", b"+a\rb\r\n",
])
def test_bad_bytes_raise_protocol_error(make, bad):
    reader = make()
    reader.feed(bad)
    with pytest.raises(ProtocolError):
        reader.gets()


def test_a_bulk_string_must_end_with_crlf():
    reader = PyReader()
    reader.feed(b"$1\r\nab\r\n")
    with pytest.raises(ProtocolError):
        reader.gets()


@pytest.mark.parametrize("make", READERS)
@pytest.mark.parametrize("data", [
    b"$5000\r\n" + b"x" * 5000,             # a bulk string over the bound
    b"+" + b"x" * 5000,                     # a status line that never ends
    b"*1000\r\n" + b"$1\r\na\r\n" * 1000,   # an array over the bound, element by element
])
def test_one_reply_is_bounded_in_bytes(make, data):
    reader = make(max_reply=1000)
    with pytest.raises(ProtocolError):
        for i in range(0, len(data), 100):  # trickled in: the bound holds before the end
            reader.feed(data[i:i + 100])
            assert reader.gets() is NOT_READY


def test_declared_sizes_over_the_bound_fail_before_any_payload():
    for header in (b"$2000\r\n", b"*2000\r\n"):
        reader = PyReader(max_reply=1000)
        reader.feed(header)
        with pytest.raises(ProtocolError):
            reader.gets()


def test_many_replies_each_under_the_bound_are_fine():
    reader = PyReader(max_reply=100)
    reader.feed(b"$50\r\n" + b"y" * 50 + b"\r\n")
    for _ in range(100):
        assert reader.gets() == b"y" * 50
        assert reader.gets() is NOT_READY
        reader.feed(b"$50\r\n" + b"y" * 50 + b"\r\n")


def _feed_time(data: bytes, chunk: int) -> float:
    best = float("inf")
    for _ in range(3):
        reader = PyReader()
        start = time.perf_counter()
        for i in range(0, len(data), chunk):
            reader.feed(data[i:i + chunk])
            reader.gets()
        best = min(best, time.perf_counter() - start)
    return best


@pytest.mark.parametrize("make_data", [
    lambda n: b"$%d\r\n%s\r\n" % (n, b"x" * n),                     # one big bulk string
    lambda n: b"+" + b"x" * n + b"\r\n",                            # one long status line
    lambda n: b"*%d\r\n" % (n // 4) + b":1\r\n" * (n // 4),         # one long array
])
def test_pure_python_reader_is_linear_in_its_input(make_data):
    small, large = make_data(100_000), make_data(400_000)
    ratio = _feed_time(large, 7) / _feed_time(small, 7)
    assert ratio < 10, f"4x the input took {ratio:.1f}x the time"  # linear ~4, quadratic ~16


def test_encode_command():
    assert encode_command("SET", b"k", 7, 1.5) == \
        b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n7\r\n$3\r\n1.5\r\n"
    assert encode_command("ECHO", "é") == b"*2\r\n$4\r\nECHO\r\n$2\r\n\xc3\xa9\r\n"
    for bad in (True, None, object(), [1]):
        with pytest.raises(TypeError):
            encode_command("SET", "k", bad)
    with pytest.raises(TypeError):
        encode_command()


def test_parse_url():
    a = parse_url("redis://user:p%3Aw@[::1]:7000/3")
    assert (a.host, a.port, a.db, a.username, a.password) == ("::1", 7000, 3, "user", "p:w")
    assert a.hostport == "[::1]:7000"
    assert parse_url("redis://h").db == 0
    for bad in ("http://h", "redis://h/x", "redis://h:99999"):
        with pytest.raises(ValueError):
            parse_url(bad)


# --------------------------------------------------------------------------------------------
# The clients, in a clos_web server's loop, against real Redis

WAIT = 5.0


@pytest.fixture
def redis():
    with RedisServer() as server:
        yield server


@pytest.fixture
def web(serve):
    """A clos_web server with one plain route: the loop the clients live in."""
    app = App()
    app.get("/ping")(lambda: "pong")
    return serve(app)


@pytest.fixture(params=READERS, ids=lambda r: r.__name__)
def any_reader(request, monkeypatch):
    """The clients made in this test parse replies with each reader in turn."""
    monkeypatch.setattr(client_module, "Reader", request.param)
    return request.param


@pytest.fixture
def clients():
    made = []
    yield made
    for c in made:
        c.close()


def on_loop(server, fn, *args, timeout: float = WAIT):
    """Run ``fn(*args)`` on the loop thread; return its result."""
    future = Future()

    def run():
        try:
            future.set_result(fn(*args))
        except BaseException as exc:
            future.set_exception(exc)

    server.call_soon_threadsafe(run)
    return future.result(timeout)


class Events:
    """Callbacks that record what they get, and threading.Events to wait on."""

    def __init__(self):
        self.connects = 0
        self.disconnects = []
        self.connected = threading.Event()
        self.disconnected = threading.Event()

    def on_connect(self):
        self.connects += 1
        self.connected.set()

    def on_disconnect(self, exc):
        self.disconnects.append(exc)
        self.disconnected.set()

    def wait_connected(self):
        assert self.connected.wait(WAIT), "not connected in time"
        self.connected.clear()


def start_client(web, url, clients, **kw) -> tuple[RedisClient, Events]:
    events = Events()
    client = RedisClient(web, url, on_connect=events.on_connect,
                         on_disconnect=events.on_disconnect, **kw)
    clients.append(client)
    client.start()
    events.wait_connected()
    return client, events


def call_all(web, client, commands, timeout=5.0) -> list:
    """Send ``commands`` in one loop turn (all in flight together); wait for every reply."""
    replies = [None] * len(commands)
    done = threading.Event()
    left = [len(commands)]
    in_flight = []

    def issue():
        for i, command in enumerate(commands):
            def callback(reply, i=i):
                replies[i] = reply
                left[0] -= 1
                if not left[0]:
                    done.set()
            client.call(callback, *command, timeout=timeout)
        in_flight.append(client.pending)

    on_loop(web, issue)
    assert done.wait(WAIT + timeout), "replies did not all come"
    return replies, in_flight[0]


def test_pipelined_calls_are_answered_in_order(web, redis, clients, any_reader):
    client, _ = start_client(web, redis.url, clients)
    assert type(client._conn.reader) is any_reader
    commands = []
    for i in range(1000):
        commands += [("INCR", "n"), ("SET", f"k{i}", i), ("GET", f"k{i}")]
    replies, in_flight = call_all(web, client, commands)
    assert in_flight == 3000  # all sent before any reply came
    assert replies[0::3] == list(range(1, 1001))
    assert replies[1::3] == [b"OK"] * 1000
    assert replies[2::3] == [str(i).encode() for i in range(1000)]
    assert client.pending == 0
    assert repr(client) == f"<RedisClient 127.0.0.1:{redis.port} connected, 0 pending>"


def test_an_error_reply_is_a_value_and_the_connection_goes_on(web, redis, clients):
    client, events = start_client(web, redis.url, clients)
    (bad, good), _ = call_all(web, client, [("INCR", "x", "y"), ("PING",)])
    assert isinstance(bad, ReplyError) and bad.code == "ERR" and good == b"PONG"
    with pytest.raises(ReplyError):
        client.submit("HGET", "k").result(WAIT)
    assert client.submit("PING").result(WAIT) == b"PONG"
    assert client.connected and events.disconnects == []


def test_submit_from_many_threads(web, redis, clients):
    client, _ = start_client(web, redis.url, clients)

    def work(t):
        return [client.submit("INCR", f"t{t}").result(WAIT) for _ in range(50)]

    threads = [threading.Thread(target=lambda t=t: results.__setitem__(t, work(t)))
               for t in range(8)]
    results = {}
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT * 2)
    assert results == {t: list(range(1, 51)) for t in range(8)}


def commandstats(redis) -> dict:
    info = redis.command("INFO", "commandstats").decode()
    stats = {}
    for line in info.splitlines():
        if line.startswith("cmdstat_"):
            name, _, rest = line.partition(":")
            stats[name[8:]] = int(rest.split(",")[0].split("=")[1])
    return stats


SCRIPT = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


def test_eval_uses_evalsha_and_falls_back_to_eval_on_noscript(web, redis, clients):
    client, _ = start_client(web, redis.url, clients)
    assert client.submit_eval(SCRIPT, ["s"], [5]).result(WAIT) == 5  # NOSCRIPT, then EVAL
    assert client.submit_eval(SCRIPT, ["s"], [5]).result(WAIT) == 10  # EVALSHA hits
    stats = commandstats(redis)
    assert stats["evalsha"] == 2 and stats["eval"] == 1
    assert redis.command("SCRIPT", "FLUSH") == b"OK"
    # many in flight at once: each one's NOSCRIPT falls back on its own, none runs twice
    results = []
    done = threading.Event()

    def issue():
        for _ in range(20):
            client.eval(lambda r: (results.append(r), len(results) == 20 and done.set()),
                        SCRIPT, ["s"], [1])

    on_loop(web, issue)
    assert done.wait(WAIT)
    assert sorted(results) == list(range(11, 31))
    assert redis.command("GET", "s") == b"30"
    stats = commandstats(redis)
    assert stats["evalsha"] == 22 and stats["eval"] == 21


def test_eval_error_reply(web, redis, clients):
    client, _ = start_client(web, redis.url, clients)
    with pytest.raises(ReplyError):
        client.submit_eval("return redis.call('NOPE')").result(WAIT)
    with pytest.raises(TypeError):
        client.submit_eval(SCRIPT, ["k"], [None])


def start_pubsub(web, url, clients, *channels, **kw):
    events = Events()
    got = []
    arrived = threading.Condition()

    def on_message(channel, data):
        with arrived:
            got.append((channel, data))
            arrived.notify_all()

    pubsub = RedisPubSub(web, url, on_message=on_message, on_connect=events.on_connect,
                         on_disconnect=events.on_disconnect, **kw)
    clients.append(pubsub)
    on_loop(web, pubsub.subscribe, *channels)
    pubsub.start()
    events.wait_connected()

    def wait_messages(n):
        with arrived:
            assert arrived.wait_for(lambda: len(got) >= n, WAIT), f"{len(got)} of {n}"
        return list(got)

    return pubsub, events, wait_messages


def test_pubsub_delivers_in_order(web, redis, clients, any_reader):
    pubsub, _, wait_messages = start_pubsub(web, redis.url, clients, "a", b"b")
    assert pubsub.connected and pubsub.channels == {b"a", b"b"}
    client, _ = start_client(web, redis.url, clients)
    commands = [("PUBLISH", "ab"[i % 2], f"m{i}") for i in range(500)]
    replies, _ = call_all(web, client, commands)
    assert replies == [1] * 500
    assert wait_messages(500) == [(b"ab"[i % 2:i % 2 + 1], f"m{i}".encode()) for i in range(500)]
    on_loop(web, pubsub.unsubscribe, "a")
    call_all(web, client, [("PUBLISH", "a", "gone"), ("PUBLISH", "b", "last")])
    assert wait_messages(501)[-1] == (b"b", b"last")
    assert repr(pubsub) == f"<RedisPubSub 127.0.0.1:{redis.port} connected, 1 channels>"


def test_reconnect_after_kill_resubscribes_and_calls_on_connect(web, redis, clients):
    client, events = start_client(web, redis.url, clients, backoff=(0.05, 0.2))
    pubsub, sub_events, wait_messages = start_pubsub(web, redis.url, clients, "news",
                                                backoff=(0.05, 0.2))
    # a call in flight when Redis dies gets RedisUnavailable, not silence
    redis.pause(5)
    future = client.submit("GET", "x")
    wait_for(lambda: client.pending == 1)
    redis.kill()
    with pytest.raises(RedisUnavailable) as lost:
        future.result(WAIT)
    assert not isinstance(lost.value, RedisTimeout)
    assert events.disconnected.wait(WAIT) and sub_events.disconnected.wait(WAIT)
    assert isinstance(events.disconnects[0], RedisUnavailable)
    # while Redis is down, calls fail at once
    started = time.monotonic()
    with pytest.raises(RedisUnavailable, match=f"redis at 127.0.0.1:{redis.port} is "
                                                f"unreachable: "):
        client.submit("PING").result(WAIT)
    assert time.monotonic() - started < 0.5
    assert not client.connected
    redis.restart()
    events.wait_connected()
    sub_events.wait_connected()
    assert events.connects == 2 and sub_events.connects == 2
    assert client.submit("PUBLISH", "news", "back").result(WAIT) == 1  # resubscribed
    assert wait_messages(1) == [(b"news", b"back")]


def test_a_paused_redis_times_calls_out_while_http_is_still_answered(web, redis, clients):
    client, events = start_client(web, redis.url, clients, backoff=(0.05, 0.2))
    assert client.submit("SET", "k", "v").result(WAIT) == b"OK"
    redis.pause(3)
    started = time.monotonic()
    slow = client.submit("GET", "k", timeout=0.5)
    later = client.submit("GET", "k", timeout=5)  # behind it on the same connection
    # the loop is not blocked: HTTP on the same server answers at once, again and again
    with connect(web) as sock:
        reader = HTTPReader(sock)
        for _ in range(5):
            t = time.monotonic()
            sock.sendall(b"GET /ping HTTP/1.1\r\nHost: t\r\n\r\n")
            assert reader.read_response()[2] == b"pong"
            assert time.monotonic() - t < 0.5
    with pytest.raises(RedisTimeout):
        slow.result(WAIT)
    assert 0.4 < time.monotonic() - started < 2.0
    with pytest.raises(RedisUnavailable):  # reset with the connection, well before its 5 s
        later.result(1)
    assert events.disconnected.wait(WAIT)
    assert isinstance(events.disconnects[0], RedisTimeout)
    redis.resume()
    events.wait_connected()
    assert client.submit("GET", "k").result(WAIT) == b"v"


def test_auth_and_select_from_the_url(web, clients):
    with RedisServer(password="s3 cret", db=5) as redis:
        client, _ = start_client(web, redis.url, clients)
        assert "s3%20cret" in redis.url and redis.url.endswith("/5")
        assert client.submit("SET", "k", "in5").result(WAIT) == b"OK"
        assert redis.command("GET", "k", db=5) == b"in5"
        assert redis.command("GET", "k") is None
        # a wrong password: never connected, and calls say why
        wrong = RedisClient(web, f"redis://:nope@127.0.0.1:{redis.port}/0",
                            backoff=(0.05, 0.1))
        clients.append(wrong)
        wrong.start()

        def refused() -> bool:
            with pytest.raises(RedisUnavailable) as failed:
                wrong.submit("PING").result(WAIT)
            return "WRONGPASS" in str(failed.value)

        wait_for(refused)  # once the first attempt is answered, calls say why they fail
        assert not wrong.connected


def test_unreachable_redis_fails_calls_at_once(web, clients):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    client = RedisClient(web, f"redis://127.0.0.1:{port}", backoff=(0.05, 0.1))
    clients.append(client)
    client.start()
    replies = []
    got = threading.Event()
    assert on_loop(web, client.call, lambda r: (replies.append(r), got.set()), "PING") is False
    assert got.wait(WAIT)
    assert isinstance(replies[0], RedisUnavailable)
    assert str(replies[0]).startswith(f"redis at 127.0.0.1:{port} is unreachable: ")


def test_backlog_caps(web, redis, clients):
    client, _ = start_client(web, redis.url, clients, max_pending=10, output_cap=1000)
    results = []

    def issue_big():  # one loop turn: the queue is not flushed between these
        return [client.call(results.append, "SET", "k", "x" * 2000),  # alone: it goes
                client.call(results.append, "SET", "k", "x" * 10)]    # 2000 queued: full

    assert on_loop(web, issue_big) == [True, False]
    wait_for(lambda: len(results) == 2)
    assert on_loop(web, lambda: [client.call(results.append, "PING") for _ in range(11)]) == \
        [True] * 10 + [False]  # 10 pending at most
    wait_for(lambda: len(results) == 13)
    full = [r for r in results if isinstance(r, RedisUnavailable)]
    assert len(full) == 2 and all("backlog full" in str(r) for r in full)
    assert results.count(b"PONG") == 10 and results.count(b"OK") == 1


def test_a_peer_that_breaks_the_protocol_is_dropped(web, clients):
    """A fake Redis answers the handshake, then sends a reply over the client's max_reply
    (declared 1 TB): the connection is reset (the pending call fails) rather than our memory
    growing."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(WAIT)
    client = RedisClient(web, f"redis://127.0.0.1:{listener.getsockname()[1]}",
                         backoff=(1.0, 1.0), max_reply=1000)
    clients.append(client)
    client.start()
    peer, _ = listener.accept()
    with peer, listener:
        peer.settimeout(WAIT)
        assert b"PING" in peer.recv(1000)
        peer.sendall(b"+PONG\r\n")
        wait_for(lambda: client.connected)
        future = client.submit("GET", "k")
        assert b"GET" in peer.recv(1000)
        peer.sendall(b"$1000000000000\r\n" + b"x" * 2000)
        with pytest.raises(RedisUnavailable, match="protocol error"):
            future.result(WAIT)


def test_close_is_idempotent_and_fails_what_waits(web, redis, clients):
    client, events = start_client(web, redis.url, clients)
    redis.pause(2)
    future = client.submit("PING")
    client.close()
    client.close()
    with pytest.raises(RedisUnavailable, match="closed"):
        future.result(WAIT)
    with pytest.raises(RedisUnavailable, match="closed"):
        client.submit("PING").result(WAIT)
    assert repr(client).endswith("closed, 0 pending>") and events.disconnects == []
    redis.resume()


def test_cluster_helper_comes_up():
    with cluster(3) as nodes:
        assert len(nodes) == 3
        for node in nodes:
            info = node.command("CLUSTER", "INFO")
            assert b"cluster_state:ok" in info and b"cluster_known_nodes:3" in info


def test_a_host_name_is_resolved_off_the_loop_thread(web, redis, clients):
    client, _ = start_client(web, f"redis://localhost:{redis.port}/0", clients)
    assert client.submit("PING").result(WAIT) == b"PONG"


def test_loop_thread_methods_refuse_other_threads(web, redis, clients):
    client, _ = start_client(web, redis.url, clients)
    with pytest.raises(RuntimeError, match="loop thread"):
        client.call(print, "PING")
    assert on_loop(web, client.call, lambda reply: None, "PING") is True


def test_the_helpers_fixture_gives_a_fresh_server(redis_server):
    assert redis_server.command("DBSIZE") == 0
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
