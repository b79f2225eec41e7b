"""The web layer: the /add contract, typed handlers, 400s, HEAD/OPTIONS/405, results and write
methods, cookies, sessions, middleware, mounts, the REPL, blocking handlers.

What needs no socket goes through the in-process client (clos_web.testing, the same connection
objects and generics as a server); what is about the wire stays on real sockets: pipelining and
keep-alive, bytes compared across HTTP versions, the REPL changing a running server, a blocking
handler's timing against other connections."""

from __future__ import annotations

import json
import re
import logging
import threading
import time

import attrs
import pytest

import clos_web
from clos_web import (
    App, Response, Session, SignedCookieSessions, cookies, cors, logging_middleware, redirect,
    set_cookie,
)
from clos_web import Connection, send_response
from clos_web import PlainText

from clos_web.testing import TestClient

from conftest import Reader, connect, load_example, request


def GET(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


def test_add_follows_the_contract():
    client = TestClient(load_example("hello").app)
    response = client.get("/add?a=12&b=30")
    assert (response.status, response.body) == (200, b"42")
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    response = client.get("/add?a=12")
    assert response.status == 400 and b"'b'" in response.body and b"missing" in response.body
    assert response.headers["content-type"].startswith("text/plain")
    response = client.get("/add?a=12abc&b=1")
    assert response.status == 400 and b"'a'" in response.body
    assert b"not an integer" in response.body
    response = client.get("/add?a=1&b=x", headers={"Accept": "application/json"})
    assert response.status == 400 and response.headers["content-type"] == "application/json"
    assert response.json() == {"error": "bad parameter", "parameter": "b",
                               "reason": "not an integer: 'x'", "status": 400}


def item_app() -> App:
    app = App()

    @app.get("/item/{n}")
    def item(n: int):
        return f"item {n}"

    app.post("/item/{n}")(lambda n: "posted")
    return app


def test_head_options_405_404_on_typed_routes():
    client = TestClient(item_app())
    response = client.head("/item/3")
    assert (response.status, response.body) == (200, b"")
    assert response.headers["content-length"] == "6"
    assert client.get("/item/3").body == b"item 3"
    response = client.options("/item/3")
    assert response.status == 204 and response.headers["allow"] == "GET, HEAD, POST, OPTIONS"
    response = client.delete("/item/3")
    assert response.status == 405 and response.headers["allow"] == "GET, HEAD, POST"
    assert client.get("/nothing/here").status == 404
    response = client.get("/item/3/")
    assert response.status == 308 and response.headers["location"] == "/item/3"


def test_a_head_answer_has_no_body_on_the_wire_before_a_pipelined_request(serve):
    server = serve(item_app())
    with connect(server) as sock:
        reader = Reader(sock)
        sock.sendall(b"HEAD /item/3 HTTP/1.1\r\nHost: t\r\n\r\n" + GET("/item/3"))
        status, headers, _ = reader.read_response(head_only=True)
        assert status == 200 and headers["content-length"] == "6"
        assert reader.read_response()[2] == b"item 3"


@attrs.define
class Point:
    x: int
    y: int


def test_results_are_written_by_their_class():
    app = App()
    app.get("/str")(lambda: "<b>hi</b>")
    app.get("/bytes")(lambda: b"\x00\x01")
    app.get("/dict")(lambda: {"a": [1, 2]})
    app.get("/attrs")(lambda: Point(1, 2))
    app.get("/none")(lambda: None)
    app.get("/go")(lambda: redirect("/str"))
    app.get("/made")(lambda: Response("made", status=201, content_type="text/plain",
                                      headers=[("X-Thing", "1")]))
    client = TestClient(app)
    cases = {"/str": (200, "text/html; charset=utf-8", b"<b>hi</b>"),
             "/bytes": (200, "application/octet-stream", b"\x00\x01"),
             "/dict": (200, "application/json", b'{"a":[1,2]}'),
             "/attrs": (200, "application/json", b'{"x":1,"y":2}'),
             "/made": (201, "text/plain; charset=utf-8", b"made")}
    for path, (status, ctype, body) in cases.items():
        got = client.get(path)
        assert (got.status, got.headers.get("content-type"), got.body) == (status, ctype, body)
    assert client.get("/none").status == 204
    response = client.get("/go")
    assert response.status == 303 and response.headers["location"] == "/str"


def test_plaintext_is_written_as_its_response_would_be(serve):
    """PlainText's own write method (a cached head) sends the bytes that the Response it
    stands for would: HEAD, HTTP/1.0, keep-alive and close alike."""
    app = App()
    app.get("/pt")(lambda: PlainText("é 42"))
    app.get("/resp")(lambda: Response("é 42", content_type="text/plain"))
    server = serve(app)

    def raw(head: str) -> bytes:
        with connect(server) as sock:
            # a last request that closes, answered if the first one kept the connection
            sock.sendall(head.encode() + GET("/resp", "Connection: close\r\n"))
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        return re.sub(rb"Date: [^\r]*\r\n", b"", data)

    for head in ("GET {} HTTP/1.1\r\nHost: t\r\n\r\n", "HEAD {} HTTP/1.1\r\nHost: t\r\n\r\n",
                 "GET {} HTTP/1.0\r\n\r\n", "GET {} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
                 "GET {} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"):
        assert raw(head.format("/pt")) == raw(head.format("/resp")), head
    assert b"Content-Length: 5\r\n" in raw("GET /pt HTTP/1.1\r\nHost: t\r\n\r\n")


class Card:
    def __init__(self, rank):
        self.rank = rank


def test_repl_changes_take_effect_on_a_running_server(serve):
    """Redefine a handler, a parse_param method, and add a write method while serving. (A
    type's first parse_param method comes before the handlers that use it: a handler is
    checked when it is declared.)"""
    app = App()

    @clos_web.parse_param.dispatch
    def parse_card(kind: type[Card], raw: str, bound):
        return Card(raw)

    @app.get("/card")
    def card(c: Card):
        return c

    server = serve(app)  # started with background=True
    assert request(server, GET("/card?c=ace"))[0] == 500  # parsed, but no write for Card

    @clos_web.write.dispatch
    def write_card(obj: Card, conn: Connection):
        send_response(Response(f"card {obj.rank}", content_type="text/plain"), conn)

    assert request(server, GET("/card?c=ace"))[2] == b"card ace"

    @clos_web.parse_param.dispatch
    def parse_card(kind: type[Card], raw: str, bound):  # noqa: F811 (redefined)
        if raw == "joker":
            raise ValueError("no jokers at this table")
        return Card(raw)

    status, _, body = request(server, GET("/card?c=joker"))
    assert status == 400 and b"no jokers" in body

    @app.get("/card")
    def card(c: Card):  # noqa: F811 (redefined at the "REPL")
        return f"new {c.rank}"

    assert request(server, GET("/card?c=king"))[2] == b"new king"


def test_cookies_are_parsed_and_set_with_their_attributes():
    app = App()

    @app.get("/c")
    def c(request):
        theme = cookies(request).get("theme", "none")
        response = set_cookie(Response(theme), "theme", "dark", max_age=3600, secure=True,
                              samesite="Strict", domain="example.com", path="/app")
        return set_cookie(response, "seen", "1", httponly=False, samesite=None)

    response = TestClient(app).get("/c", headers={"Cookie": "a=1; theme=light"})
    assert response.body == b"light"
    assert [(n, v) for n, v in response.raw_headers if n == "Set-Cookie"] == [
        ("Set-Cookie", "theme=dark; Path=/app; Domain=example.com; Max-Age=3600; Secure; "
                       "HttpOnly; SameSite=Strict"), ("Set-Cookie", "seen=1; Path=/")]


@pytest.mark.parametrize("store", [None, SignedCookieSessions(secret=b"s" * 32)],
                         ids=["memory", "signed-cookie"])
def test_sessions_keep_state_between_requests(store):
    app = App()
    if store is not None:
        app.sessions = store

    @app.get("/count")
    def count(session: Session):
        session["n"] = session.get("n", 0) + 1
        return str(session["n"])

    app.get("/plain")(lambda: "plain")
    client = TestClient(app)  # keeps the cookies its answers set
    assert "set-cookie" not in client.get("/plain").headers
    response = client.get("/count")
    assert response.body == b"1"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert [client.get("/count").body for _ in range(2)] == [b"2", b"3"]
    token = client.cookies["session"]
    client.cookies["session"] = token[:-3] + ("abc" if not token.endswith("abc") else "xyz")
    assert client.get("/count").body == b"1"


def test_memory_sessions_expire_when_idle_and_are_capped():
    now = [0.0]
    store = clos_web.MemorySessions(idle_timeout=0.05, max_sessions=3, clock=lambda: now[0])
    made = [store.create() for _ in range(3)]
    assert len(store) == 0  # stored by save, once the answer is a success
    for session in made:
        store.save(session)
    with pytest.raises(clos_web.HTTPError) as err:  # full: refused, and no one is evicted
        store.create()
    assert err.value.status == 503 and [s.id for s in made] == list(store._sessions)
    now[0] += 0.1  # all idle past their timeout
    store.save(store.create())
    assert len(store) == 1


def test_middleware_is_ordered_and_wraps_errors_too(caplog):
    app = App()
    seen = []

    def outer(request, call_next):
        seen.append("outer")
        return call_next(request)

    def inner(request, call_next):
        seen.append("inner")
        return call_next(request)

    app.use(outer)
    app.use(inner)
    app.use(logging_middleware)
    app.use(cors(origins=["https://a.example"]))
    app.get("/x")(lambda: "x")
    client = TestClient(app)
    with caplog.at_level(logging.INFO, logger="clos_web.access"):
        response = client.get("/x", headers={"Origin": "https://a.example"})
        assert response.status == 200
        assert response.headers["access-control-allow-origin"] == "https://a.example"
        assert response.headers["vary"] == "Origin"
        response = client.get("/x", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in response.headers
        assert client.get("/missing").status == 404
    assert seen[:2] == ["outer", "inner"]
    assert any("GET /x 200" in r.getMessage() for r in caplog.records)
    assert any("GET /missing 404" in r.getMessage() for r in caplog.records)
    response = client.options("/x", headers={"Origin": "https://a.example",
                                             "Access-Control-Request-Method": "PUT"})
    assert response.status == 204
    assert "PUT" in response.headers["access-control-allow-methods"]


def test_mounted_apps():
    api = App()
    api.get("/users/{uid}")(lambda uid: {"user": uid})
    root = App()
    root.get("/")(lambda: "home")
    root.mount("/api/v1", api)
    client = TestClient(root)
    assert client.get("/api/v1/users/ada").body == b'{"user":"ada"}'
    assert client.get("/").body == b"home"
    assert client.get("/api/v2/users/ada").status == 404


def test_form_post_and_json_post():
    app = App()

    @app.post("/sum")
    def total(a: int, b: int):
        return {"sum": a + b}

    client = TestClient(app)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert client.post("/sum", body=b"a=2&b=40", headers=form).body == b'{"sum":42}'
    response = client.post("/sum", body=b'{"a": 1, "b": "x"}',
                           headers={"Content-Type": "application/json"})
    assert response.status == 400 and json.loads(response.body)["parameter"] == "b"


def test_a_blocking_handler_does_not_slow_other_connections(serve):
    app = App()
    app.get("/plaintext")(lambda: Response(b"Hello, World!", content_type="text/plain"))

    @app.get("/slow", blocking=True)
    def slow(seconds: float):
        time.sleep(seconds)
        return f"slept on {threading.current_thread().name}"

    server = serve(app)
    with connect(server) as slow_sock, connect(server) as fast:
        started = time.monotonic()
        slow_sock.sendall(GET("/slow?seconds=1") + GET("/plaintext"))
        reader = Reader(fast)
        worst = 0.0
        n = 0
        while time.monotonic() - started < 0.8:
            t = time.monotonic()
            fast.sendall(GET("/plaintext"))
            assert reader.read_response()[2] == b"Hello, World!"
            worst = max(worst, time.monotonic() - t)
            n += 1
        assert n >= 50 and worst < 0.2
        slow_reader = Reader(slow_sock)
        status, _, body = slow_reader.read_response()
        assert status == 200 and body.startswith(b"slept on clos_web-worker")
        assert 0.95 <= time.monotonic() - started < 3
        assert slow_reader.read_response()[2] == b"Hello, World!"  # pipelined order kept


def test_a_blocking_handler_that_raises_is_a_500_and_debug_shows_the_traceback():
    app = App()

    @app.get("/boom", blocking=True)
    def boom():
        raise RuntimeError("in a worker")

    response = TestClient(app, debug=True).get("/boom")
    assert response.status == 500 and b"RuntimeError: in a worker" in response.body
