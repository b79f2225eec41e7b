"""clos_web.testing: the in-process client (no sockets, no threads, a clock of its own) answers
as a server does: methods and bodies, HEAD, errors, cookies and sessions, blocking handlers,
long-polls by the client's clock, SSE streams event by event, ``render``, the pytest fixture,
and qualified methods on the generics running through it as through a server."""

from __future__ import annotations

import re
import tempfile
import threading
import time
from pathlib import Path

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clos_web import (
    App, Channels, Connection, HTTPError, Limits, LongPoll, MemorySessions, Message, PlainText,
    Request, Response, Session, SignedCookieSessions, UploadedFile, call_next_method, channel,
    cookies, delete_cookie, respond, send_response, set_cookie, with_headers, write,
)
from clos_web import testing
from clos_web.testing import SSEEvent, TestClient, render
from clos_web.testing import clos_web_client  # noqa: F401 (the fixture, plugin or not)

from conftest import request as raw_request
from test_sse_wire import SSEParser


def GET(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


def without_date(headers: dict) -> dict:
    return {k: v for k, v in headers.items() if k != "date"}


# --------------------------------------------------------------------------------------------
# Methods, bodies, HEAD


@attrs.define
class Move:
    card: int
    x: float


def web_app() -> App:
    app = App()
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        app.route(method, "/m")(lambda request: f"{request.method} {request.body.decode()}")

    @app.post("/sum")
    def total(a: int, b: int):
        return {"sum": a + b}

    @app.put("/move/{table}")
    def move(table: str, move: Move):
        return {"table": table, "move": move}

    @app.post("/echo")
    def echo(request):
        return Response(request.body, headers=[("Content-Type",
                                                request.header("content-type") or "none")])

    @app.post("/up")
    def up(title: str, file: UploadedFile):
        return [title, file.filename, file.content_type, file.data.decode()]

    @app.get("/item/{n}")
    def item(n: int):
        return f"item {n}"

    @app.get("/add")
    def add(a: int, b: int):
        return PlainText(a + b)

    @app.get("/boom")
    def boom():
        raise RuntimeError("kaput in a handler")

    return app


@pytest.mark.parametrize("method", ["get", "post", "put", "patch", "delete", "options"])
def test_each_method_reaches_its_route_with_its_body(method):
    client = TestClient(web_app())
    response = getattr(client, method)("/m", body="é")
    assert isinstance(response, testing.TestResponse)
    assert (response.status, response.text) == (200, f"{method.upper()} é")
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.header("Content-Length") == str(len(response.body))
    assert client.request(method.upper(), "/m").text == f"{method.upper()} "


def test_json_form_raw_and_multipart_bodies():
    client = TestClient(web_app())
    assert client.post("/sum", json={"a": 2, "b": 40}).json() == {"sum": 42}
    assert client.post("/sum", data={"a": "2", "b": "40"}).json() == {"sum": 42}
    assert client.post("/sum?a=1", data={"b": ["2"]}).json() == {"sum": 3}
    moved = client.put("/move/green", json={"card": 3, "x": 1.5})
    assert moved.json() == {"table": "green", "move": {"card": 3, "x": 1.5}}
    raw = client.post("/echo", body=b"\x00\xff raw", headers={"Content-Type": "x/y"})
    assert (raw.body, raw.headers["content-type"]) == (b"\x00\xff raw", "x/y")
    assert client.post("/echo", body=b"").headers["content-type"] == "none"
    body = (b"--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nhello\r\n"
            b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n"
            b"Content-Type: text/plain\r\n\r\nfile\r\nbody\r\n--XyZ--\r\n")
    up = client.post("/up", body=body,
                     headers={"Content-Type": "multipart/form-data; boundary=XyZ"})
    assert up.json() == ["hello", "a.txt", "text/plain", "file\r\nbody"]


def test_head_is_the_get_answer_without_its_body():
    client = TestClient(web_app())
    got, head = client.get("/item/12"), client.head("/item/12")
    assert (got.status, got.body) == (200, b"item 12")
    assert (head.status, head.body) == (200, b"")
    assert without_date(head.headers) == without_date(got.headers)
    assert head.headers["content-length"] == "7"


def test_http10_requests_are_answered_and_closed():
    response = TestClient(web_app()).request("GET", "/add?a=1&b=2", http10=True)
    assert (response.status, response.body) == (200, b"3")
    assert response.headers["connection"] == "close"


# --------------------------------------------------------------------------------------------
# Errors


def test_404_405_and_400_with_json_for_json_clients():
    client = TestClient(web_app())
    missing = client.get("/nothing/here")
    assert missing.status == 404 and missing.headers["content-type"].startswith("text/plain")
    wrong = client.delete("/item/3")
    assert wrong.status == 405 and wrong.headers["allow"] == "GET, HEAD"
    options = client.options("/item/3")
    assert options.status == 204 and options.headers["allow"] == "GET, HEAD, OPTIONS"
    assert client.get("/item/3/").headers["location"] == "/item/3"
    bad = client.get("/add?a=1")
    assert bad.status == 400 and "'b'" in bad.text and "missing" in bad.text
    bad = client.get("/add?a=1&b=x", headers={"Accept": "application/json"})
    assert bad.status == 400 and bad.headers["content-type"] == "application/json"
    assert bad.json() == {"error": "bad parameter", "parameter": "b",
                          "reason": "not an integer: 'x'", "status": 400}
    broken = client.post("/sum", body=b"{not json", headers={"Content-Type": "application/json"})
    assert broken.status == 400


@pytest.mark.parametrize("debug", [True, False])
def test_a_handler_that_raises_is_a_500_with_the_traceback_only_in_debug(debug):
    client = TestClient(web_app(), debug=debug)
    response = client.get("/boom")
    assert response.status == 500
    if debug:
        assert "Traceback" in response.text
        assert "RuntimeError: kaput in a handler" in response.text
    else:
        assert response.text == "500 Internal Server Error\n"
    assert client.get("/add?a=1&b=1").text == "2"  # the next request is answered as usual


# --------------------------------------------------------------------------------------------
# Cookies and sessions


def test_cookies_set_by_answers_are_kept_sent_and_deleted():
    app = App()
    app.get("/set")(lambda: set_cookie(set_cookie(Response("set"), "theme", "dark"),
                                       "lang", "fr", max_age=60))
    app.get("/show")(lambda request: cookies(request))
    app.get("/forget")(lambda: delete_cookie(Response("gone"), "theme"))
    client = TestClient(app)
    assert client.get("/show").json() == {}
    response = client.get("/set")
    assert [v for n, v in response.raw_headers if n == "Set-Cookie"] == [
        "theme=dark; Path=/; HttpOnly; SameSite=Lax",
        "lang=fr; Path=/; Max-Age=60; HttpOnly; SameSite=Lax"]
    assert client.cookies == {"theme": "dark", "lang": "fr"}
    assert client.get("/show").json() == {"theme": "dark", "lang": "fr"}
    client.get("/forget")
    assert client.get("/show").json() == {"lang": "fr"}
    assert TestClient(app).get("/show").json() == {}  # another client, another jar


@pytest.mark.parametrize("store", [MemorySessions, lambda: SignedCookieSessions(b"s" * 32)],
                         ids=["memory", "signed-cookie"])
def test_sessions_last_across_requests_of_one_client(store):
    app = App(sessions=store())

    @app.get("/count")
    def count(session: Session):
        session["n"] = session.get("n", 0) + 1
        return str(session["n"])

    app.get("/plain")(lambda: "plain")
    client = TestClient(app)
    assert "set-cookie" not in client.get("/plain").headers and client.cookies == {}
    assert [client.get("/count").text for _ in range(3)] == ["1", "2", "3"]
    assert set(client.cookies) == {"session"}
    assert TestClient(app).get("/count").text == "1"
    token = client.cookies["session"]
    client.cookies["session"] = token[:-3] + ("abc" if not token.endswith("abc") else "xyz")
    assert client.get("/count").text == "1"  # a forged cookie is a new session


# --------------------------------------------------------------------------------------------
# Blocking handlers


def test_a_blocking_handler_answers_from_a_worker_thread():
    app = App()

    @app.get("/slow", blocking=True)
    def slow(seconds: float):
        time.sleep(seconds)
        return {"thread": threading.current_thread().name, "ident": threading.get_ident()}

    @app.get("/fails", blocking=True)
    def fails():
        raise RuntimeError("in a worker")

    client = TestClient(app)
    answer = client.get("/slow?seconds=0.05").json()
    assert answer["thread"].startswith("clos_web-worker")
    assert answer["ident"] != threading.get_ident()
    failed = client.get("/fails")
    assert failed.status == 500 and "RuntimeError: in a worker" in failed.text
    with pytest.raises(TimeoutError):
        TestClient(app, timeout=0.2).get("/slow?seconds=1")


# --------------------------------------------------------------------------------------------
# Long-poll


def poll_app(registry: Channels, timeout: float = 30.0) -> App:
    app = App()

    @app.get("/poll/{name}")
    @channel(registry, poll=True, timeout=timeout)
    def poll(name: str):
        return [name]

    @app.get("/wait/{name}")
    def wait(name: str):
        return LongPoll([name], timeout=timeout, registry=registry)

    return app


@pytest.mark.parametrize("path", ["/poll/lp", "/wait/lp"])
def test_a_long_poll_times_out_by_the_clients_clock_without_a_real_wait(path):
    registry = Channels()
    client = TestClient(poll_app(registry, timeout=30.0), timeout=60.0)
    last = registry.publish("lp", "old")
    clock, started = client.server.now, time.monotonic()
    response = client.get(f"{path}?lastEventId={last}")
    assert time.monotonic() - started < 5  # a poll timeout of 30 s, not waited for
    assert client.server.now - clock >= 30.0
    assert (response.status, response.json()) == (200, {"events": [], "last_id": last})
    assert response.headers["cache-control"] == "no-cache"
    assert registry.subscriber_count() == 0


def test_a_long_poll_is_answered_by_a_publish_or_at_once_from_history():
    registry = Channels()
    client = TestClient(poll_app(registry, timeout=30.0))
    last = registry.publish("lp", "old")
    clock = client.server.now
    client.server.call_later(2.0, registry.publish, "lp", Message({"n": 1}, "tick"))
    response = client.get(f"/poll/lp?lastEventId={last}")
    new = registry.last_id
    assert response.json() == {"events": [{"id": new, "event": "tick", "data": '{"n":1}'}],
                               "last_id": new}
    assert 2.0 <= client.server.now - clock < 30.0  # the publish, not the timeout, answered
    assert registry.subscriber_count() == 0
    registry.publish("lp", "a")
    registry.publish("lp", "b")
    got = client.get(f"/poll/lp?lastEventId={new}").json()
    assert [e["data"] for e in got["events"]] == ["a", "b"]
    assert got["last_id"] == registry.last_id
    reset = client.get("/poll/lp?lastEventId=nonsense").json()
    assert reset["events"][0]["event"] == "reset"


# --------------------------------------------------------------------------------------------
# SSE streams


def stream_app(registry: Channels) -> App:
    app = App()

    @app.get("/sub/{names}")
    @channel(registry)
    def sub(names: str, request):
        if request.header("authorization") == "Bearer bad":
            return False  # 403
        return names.split(",")

    @app.get("/mine")
    def mine(session: Session):
        session["streaming"] = True
        return channel(registry)(lambda: "private")()

    return app


@attrs.define
class Moved:
    card: str
    seat: int


def test_a_stream_gives_the_events_published_after_it_opened_in_order():
    registry = Channels(retry=1.0, retry_jitter=0.0)
    client = TestClient(stream_app(registry))
    registry.publish("news", "before")  # not asked for: no last event id
    stream = client.stream("/sub/news")
    assert isinstance(stream, testing.TestStream)
    assert stream.response.status == 200
    assert stream.response.headers["content-type"] == "text/event-stream"
    assert stream.response.headers["transfer-encoding"] == "chunked"
    assert stream.events() == [] and registry.subscriber_count("news") == 1
    ids = [registry.publish("news", m) for m in
           ["plain", Message("hi", "chat"), Moved("QS", 3), "one\ntwo\r\nthree", "é 🂡"]]
    assert stream.events() == [
        SSEEvent(ids[0], "message", "plain", 1000), SSEEvent(ids[1], "chat", "hi", 1000),
        SSEEvent(ids[2], "Moved", '{"card":"QS","seat":3}', 1000),
        SSEEvent(ids[3], "message", "one\ntwo\nthree", 1000),
        SSEEvent(ids[4], "message", "é 🂡", 1000)]
    assert stream.events() == []  # each event is returned once
    publisher = threading.Thread(target=registry.publish, args=("news", "from a thread"))
    publisher.start()
    publisher.join(5)
    assert [e.data for e in stream.events()] == ["from a thread"]
    assert not stream.closed


def test_a_stream_resumes_from_last_event_id_and_an_unknown_id_gets_reset():
    registry = Channels()
    client = TestClient(stream_app(registry))
    first = client.stream("/sub/r")
    ids = [registry.publish("r", str(i)) for i in range(3)]
    assert [(e.data, e.id) for e in first.events()] == list(zip("012", ids))
    first.close()
    missed = [registry.publish("r", "3"), registry.publish("other", "not read"),
              registry.publish("r", "4")]
    again = client.stream("/sub/r", last_event_id=ids[-1])
    assert [(e.data, e.id) for e in again.events()] == [("3", missed[0]), ("4", missed[2])]
    query = client.stream(f"/sub/r?lastEventId={ids[1]}")  # the polyfills' way
    assert [e.data for e in query.events()] == ["2", "3", "4"]
    for unknown in ("nonsense", ids[0].split("-")[0] + "-999999"):
        lost = client.stream("/sub/r", last_event_id=unknown)
        event = lost.events()[0]
        assert (event.event, event.data, event.id) == ("reset", registry.last_id,
                                                       registry.last_id)


def test_idle_streams_get_heartbeats_as_the_clients_clock_advances():
    registry = Channels(heartbeat=5.0)
    client = TestClient(stream_app(registry))
    stream = client.stream("/sub/quiet")
    stream.events()
    sent = stream.conn.sock.sent  # the stand-in socket's bytes not yet read by events()
    client.advance(3.0)
    assert bytes(sent) == b""
    client.advance(3.0)
    assert bytes(sent) == b"7\r\n: ping\n\r\n"
    assert stream.events() == []  # a comment is no event
    client.advance(10.0)
    assert bytes(sent) == b"7\r\n: ping\n\r\n" * 2  # one every 5 s of the client's clock


def test_a_stream_idle_deadline_passes_by_the_clients_clock():
    registry = Channels(heartbeat=60.0)
    client = TestClient(stream_app(registry), Limits(stream_idle_timeout=10.0))
    stream = client.stream("/sub/idle")
    client.advance(9.0)
    assert not stream.closed
    client.advance(2.0)
    assert stream.events() == [] and stream.ended and stream.closed
    assert registry.subscriber_count() == 0


def test_a_stream_closed_by_the_client_or_the_server_leaves_its_channels():
    registry = Channels()
    client = TestClient(stream_app(registry))
    stream = client.stream("/sub/a,b,c")
    assert registry.subscriber_count() == 3
    stream.close()  # close_stream ran: unsubscribed from every channel at once
    assert registry.subscriber_count() == 0 and stream.closed
    ended = client.stream("/sub/x")
    registry.publish("x", "last")
    assert registry.disconnect("x") == 1
    assert [e.data for e in ended.events()] == ["last"]
    assert ended.ended and ended.closed and registry.subscriber_count() == 0
    with TestClient(stream_app(registry)) as other:
        other.stream("/sub/y")
        other.stream("/sub/z")
        assert registry.subscriber_count() == 2
    assert registry.subscriber_count() == 0  # closing the client closes its streams


def test_a_refused_stream_is_a_response_and_a_stream_may_set_a_cookie():
    registry = Channels()
    client = TestClient(stream_app(registry))
    refused = client.stream("/sub/secret", headers={"Authorization": "Bearer bad"})
    assert isinstance(refused, testing.TestResponse)
    assert (refused.status, refused.text) == (403, "403 Forbidden\n")
    assert registry.subscriber_count() == 0 and not client.server.conns
    mine = client.stream("/mine")
    assert isinstance(mine, testing.TestStream) and set(client.cookies) == {"session"}
    registry.publish("private", "for you")
    assert [e.data for e in mine.events()] == ["for you"]


_SSE_LINES = st.sampled_from([
    "data: a", "data:b", "data", "data:  two spaces", "data: é日本", "data: 🂡", "event: chat",
    "event:", "event", "id: 7", "id:", "id: a\0b", "retry: 1500", "retry: 15x", "retry:",
    ": comment", ":", "", "", "other: field", "dat", "data : not data"])
_ENDS = st.sampled_from(["\n", "\r\n", "\r"])


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(st.tuples(_SSE_LINES, _ENDS), max_size=25), data=st.data())
def test_stream_events_are_parsed_as_whatwg_says_however_the_bytes_arrive(lines, data):
    """The client's parsing (chunk framing, then lines and fields) agrees with the reference
    WHATWG parser of test_sse_wire, with the chunks and the arrivals split anywhere."""
    text = ("".join(line + end for line, end in lines) + "\n\ndata: end\n\n").encode()
    sizes = data.draw(st.lists(st.integers(1, 9), max_size=len(text)))
    wire, rest = b"", text
    for size in sizes + [len(rest)]:
        piece, rest = rest[:size], rest[size:]
        if piece:
            wire += b"%x\r\n%s\r\n" % (len(piece), piece)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    client = TestClient(stream_app(Channels(retry=9.0, retry_jitter=0.0)))
    stream = client.stream("/sub/parsing")
    assert stream.events() == []  # the preamble: ": ok", "retry: 9000"
    got = []
    for start, end in zip([0] + cuts, cuts + [len(wire)]):
        stream.conn.sock.sent += wire[start:end]
        got += stream.events()
    reference = SSEParser()
    reference.feed(text)
    assert [(e.id, e.event, e.data) for e in got] == [
        (e["id"], e["type"], e["data"]) for e in reference.events]
    # the last event comes after every retry: field; before any, the preamble's retry holds
    assert got[-1].data == "end"
    assert got[-1].retry == (9000 if reference.retry is None else reference.retry)


def feed_chunk(stream, body: bytes) -> list:
    """Put ``body`` on ``stream``'s stand-in socket as one chunk; return the events."""
    stream.conn.sock.sent += b"%x\r\n%s\r\n" % (len(body), body)
    return stream.events()


def fresh_stream():
    stream = TestClient(stream_app(Channels(retry=9.0, retry_jitter=0.0))).stream("/sub/odd")
    assert stream.events() == [] and stream.conn.sock.sent == b""
    return stream


def test_feed_chunk_reaches_the_parser():
    assert feed_chunk(fresh_stream(), b"data: x\n\n") == [SSEEvent("", "message", "x", 9000)]


def test_stream_parsing_ignores_a_retry_of_non_ascii_digits():
    assert feed_chunk(fresh_stream(), "retry: ²\ndata: x\n\n".encode()) == [
        SSEEvent("", "message", "x", 9000)]


# --------------------------------------------------------------------------------------------
# render


class Card:
    def __init__(self, rank):
        self.rank = rank


@write.dispatch
def write_card_for_render(obj: Card, conn: Connection):
    send_response(Response(f"card {obj.rank}", content_type="text/plain"), conn)


def test_render_gives_the_bytes_that_write_queues():
    data = render({"a": [1, 2]})
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert data.endswith(b"Content-Type: application/json\r\nContent-Length: 11\r\n\r\n"
                         b'{"a":[1,2]}')
    assert render("hi", b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n").endswith(
        b"Content-Length: 2\r\n\r\n")
    assert b"Connection: close\r\n" in render("hi", b"GET / HTTP/1.0\r\n\r\n")
    assert render(Card("ace")).endswith(b"Content-Length: 8\r\n\r\ncard ace")
    assert render(None).startswith(b"HTTP/1.1 204 No Content\r\n")

    def undated(data: bytes) -> bytes:
        return re.sub(rb"Date: [^\r]*\r\n", b"", data)

    assert undated(render(PlainText("é 42"))) == undated(
        render(Response("é 42", content_type="text/plain")))
    with pytest.raises(ValueError):
        render("x", b"GET / HTTP/1.1\r\n")  # not a complete request


def test_the_client_writes_what_render_renders():
    app = App()
    app.get("/card")(lambda: Card("king"))
    response = TestClient(app).get("/card")
    rendered = render(Card("king"))
    assert rendered.endswith(b"\r\n\r\n" + response.body)
    assert response.headers["content-type"] == "text/plain; charset=utf-8"


# --------------------------------------------------------------------------------------------
# The fixture


def test_the_fixture_makes_clients_and_closes_their_streams_after_the_test(request):
    registry = Channels()
    left = []

    def check_after_the_fixture():  # registered first: runs after the fixture's teardown
        left.append(registry.subscriber_count())
        assert left == [0], "the fixture left streams open"

    request.addfinalizer(check_after_the_fixture)
    make = request.getfixturevalue("clos_web_client")
    client = make(stream_app(registry), debug=False)
    assert isinstance(client, TestClient) and client.server.debug is False
    client.stream("/sub/a")
    make(stream_app(registry)).stream("/sub/b")
    assert registry.subscriber_count() == 2


def test_the_fixture_as_a_test_parameter(clos_web_client):
    client = clos_web_client(web_app())
    assert client.get("/add?a=20&b=22").text == "42"


# --------------------------------------------------------------------------------------------
# Qualified methods run through the client as through a server


def both(serve, app, *paths):
    """Each path's ``(status, headers without Date, body)`` from the client and a server."""
    client = TestClient(app, debug=False)
    server = serve(app)
    through_client = []
    for path in paths:
        response = client.get(path)
        through_client.append((response.status, without_date(response.headers), response.body))
    through_server = []
    for path in paths:
        status, headers, body = raw_request(server, GET(path))
        through_server.append((status, without_date(headers), body))
    return through_client, through_server


def test_a_before_method_on_write_runs_through_the_client_as_through_a_server(serve):
    app = App()
    app.get("/made")(lambda: Response("made", status=201, headers=[("X-A", "1")]))
    app.get("/teapot")(lambda: Response("short and stout", status=418))
    app.get("/text")(lambda: "text")  # a str is written without a Response object
    seen = []

    @write.before
    def refuse_teapots(obj: Response, conn: Connection):
        seen.append((obj.status, type(conn.sock).__name__ != "socket"))
        if obj.status == 418:
            raise HTTPError(403, "no teapots")

    try:
        through_client, through_server = both(serve, app, "/made", "/teapot", "/text")
    finally:
        write.remove_method(refuse_teapots)
    assert through_client == through_server
    assert [r[0] for r in through_client] == [201, 403, 200]
    assert through_client[1][2] == b"403 no teapots\n"
    # through the client (a stand-in socket), then through the server (a real socket); an
    # error answer and a str are sent without a Response going through write
    assert seen == [(201, True), (418, True), (201, False), (418, False)]


def test_around_and_before_methods_on_respond_for_an_app_subclass(serve):
    class Shop(App):
        pass

    calls = []

    @respond.around
    def shop_times(app: Shop, request: Request, conn):
        calls.append((request.path, isinstance(conn, Connection)))
        return with_headers(call_next_method(), [("X-Around", "yes")])

    @respond.before
    def shop_guards(app: Shop, request: Request, conn):
        if request.path == "/secret":
            raise HTTPError(401, "who are you")

    shop = Shop()
    shop.get("/")(lambda: "shop")
    shop.get("/secret")(lambda: "never")
    plain = App()
    plain.get("/")(lambda: "plain")
    try:
        through_client, through_server = both(serve, shop, "/", "/secret")
        assert TestClient(plain).get("/").headers.get("x-around") is None
    finally:
        respond.remove_method(shop_times)
        respond.remove_method(shop_guards)
    assert through_client == through_server
    assert through_client[0][0] == 200 and through_client[0][1]["x-around"] == "yes"
    assert through_client[0][2] == b"shop"
    assert through_client[1][:1] == (401,) and through_client[1][2] == b"401 who are you\n"
    assert calls == [("/", True), ("/secret", True)] * 2


# --------------------------------------------------------------------------------------------
# Bugs the tests above found in the client, and in push's clock (fixed)


def test_a_large_static_file_comes_back_whole():
    with tempfile.TemporaryDirectory() as directory:
        Path(directory, "big.bin").write_bytes(b"x" * 200_000)
        app = App()
        app.static("/s", directory)
        response = TestClient(app).get("/s/big.bin")
    assert response.status == 200 and response.headers["content-length"] == "200000"
    assert len(response.body) == 200_000


def test_repeated_header_fields_are_all_sent():
    app = App()
    app.get("/h")(lambda request: request.header("x-a"))
    client = TestClient(app)
    assert client.get("/h", headers=[("X-A", "1"), ("X-A", "2")]).text == "1, 2"
    two_hosts = client.get("/h", headers=[("Host", "a"), ("Host", "b")])
    assert two_hosts.status == 400  # RFC 9112 3.2, as a server answers it


def test_waiting_for_a_blocking_handler_does_not_move_the_clients_clock():
    registry = Channels()
    app = poll_app(registry, timeout=30.0)

    @app.get("/slow", blocking=True)
    def slow():
        time.sleep(0.3)
        return "done"

    client = TestClient(app)
    client.server.call_later(1.0, registry.publish, "lp", "now")
    client.get(f"/poll/lp?lastEventId={registry.last_id}")  # answered; its expiry stays due
    clock = client.server.now
    assert client.get("/slow").text == "done"
    assert client.server.now == clock


def test_a_publish_resets_the_heartbeat_interval_on_the_clients_clock():
    registry = Channels(heartbeat=5.0)
    client = TestClient(stream_app(registry))
    stream = client.stream("/sub/quiet")
    client.advance(16.0)
    stream.events()
    registry.publish("quiet", "news")
    client.run_pending()  # the loop fans out what a turn published at the end of the turn
    sent = bytes(stream.conn.sock.sent)
    assert b"news" in sent
    client.advance(4.0)
    assert bytes(stream.conn.sock.sent) == sent  # no heartbeat 4 s after an event


def test_history_kept_after_the_clients_clock_moves_past_max_age():
    registry = Channels(max_age=60.0)
    client = TestClient(stream_app(registry))
    client.stream("/sub/watching")  # the registry sweeps on this client's server from now on
    client.advance(61.0)
    first = registry.publish("h", "a")
    registry.publish("h", "b")
    client.advance(1.0)
    assert [e.data for e in registry.events("h")] == ["a", "b"]
    assert [e.data for e in client.stream("/sub/h", last_event_id=first).events()] == ["b"]
