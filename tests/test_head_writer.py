"""One head writer for every response kind: a header added from user input never splits a
response, whatever the kind (Response, str, PlainText, JSON, static files inline and sendfile,
SSE streams, long-poll, errors, redirects, 100 Continue)."""

from __future__ import annotations

import socket
from urllib.parse import quote

import pytest

from clos_web import (
    App, Channels, EventStream, HTTPError, LongPoll, PlainText, Response, channel, redirect,
    with_headers,
)
from clos_web.http import header_block, response_head

from conftest import Reader, connect

HOSTILE = "a\r\nSet-Cookie: pwned=1\r\n\r\n<script>x</script>"


@pytest.fixture
def app(tmp_path):
    app = App()
    registry = Channels(history=10)
    (tmp_path / "small.txt").write_text("small file\n")
    (tmp_path / "big.bin").write_bytes(b"x" * 200_000)
    app.static("/files", tmp_path)

    @app.get("/response")
    def response():
        return Response("ok", content_type="text/plain")

    @app.get("/str")
    def text():
        return "<p>ok</p>"

    @app.get("/plain")
    def plain():
        return PlainText("ok")

    @app.get("/json")
    def json_():
        return {"ok": True}

    @app.get("/redirect")
    def go():
        return redirect("/response")

    @app.get("/error")
    def error():
        raise HTTPError(418, "teapot")

    @app.get("/stream")
    @channel(registry)
    def stream():
        return "news"

    @app.get("/poll")
    def poll():
        registry.publish("feed", "one")
        return LongPoll(["feed"], last_id=registry.last_id.split("-")[0] + "-0", registry=registry)

    def echo_header(request, call_next):
        # a middleware that copies user input into a response header (the classic mistake)
        value = request.query.partition("h=")[2]
        from urllib.parse import unquote
        try:
            result = call_next(request)
        except HTTPError as err:
            err.headers.append(("X-Echo", unquote(value)))
            raise
        return with_headers(result, [("X-Echo", unquote(value))])

    app.use(echo_header)
    return app


KINDS = ["/response", "/str", "/plain", "/json", "/redirect", "/error", "/stream", "/poll",
         "/files/small.txt", "/files/big.bin"]


def _get(server, path: str, value: str) -> tuple[int, bytes]:
    with connect(server) as sock:
        sock.sendall(f"GET {path}?h={quote(value, safe='')} HTTP/1.1\r\nHost: x\r\n"
                     "Connection: close\r\n\r\n".encode())
        reader = Reader(sock)
        status, headers = reader.read_head()
        raw = b""
        sock.settimeout(0.5)
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                raw += chunk
        except socket.timeout:
            pass
        return status, headers, reader.data + raw


@pytest.mark.parametrize("path", KINDS)
def test_a_benign_header_from_middleware_reaches_every_kind(serve, app, path):
    server = serve(app)
    status, headers, _ = _get(server, path, "hello")
    assert status in (200, 303, 418), status
    assert headers.get("x-echo") == "hello"


@pytest.mark.parametrize("path", KINDS)
def test_a_hostile_header_never_splits_any_kind_of_response(serve, app, path):
    server = serve(app)
    status, headers, rest = _get(server, path, HOSTILE)
    assert status == 500
    assert "set-cookie" not in headers and "x-echo" not in headers
    assert b"pwned" not in rest and b"<script>" not in rest


def test_the_head_writer_refuses_controls_in_names_and_values():
    for bad in [("X-A", "1\r\nB: 2"), ("X-A", "1\nB: 2"), ("X-A", "1\rB"), ("X-A", "\0"),
                ("X A", "1"), ("X-A:", "1"), ("", "1"), ("X-A", "\u0100")]:
        with pytest.raises(ValueError):
            header_block([bad])
    assert header_block([("X-A", "caf\xe9 ok")]) == b"X-A: caf\xe9 ok\r\n"


def test_interim_and_final_heads_come_from_the_same_writer():
    assert response_head(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
    head = response_head(200, header_block([("X-A", "1")]), length=3)
    assert head.startswith(b"HTTP/1.1 200 OK\r\nDate: ")
    assert head.endswith(b"Server: clos_web\r\nX-A: 1\r\nContent-Length: 3\r\n\r\n")
    assert response_head(204, length=0, keep_alive=False).endswith(
        b"Server: clos_web\r\nConnection: close\r\n\r\n")
    assert response_head(200, chunked=True).endswith(b"Transfer-Encoding: chunked\r\n\r\n")


def test_text_error_bodies_are_not_sniffed(hello):
    with connect(hello) as sock:
        sock.sendall(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _ = Reader(sock).read_response()
    assert status == 404
    assert headers["x-content-type-options"] == "nosniff"
    with connect(hello) as sock:
        sock.sendall(b"GET /add?a=x&b=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _ = Reader(sock).read_response()
    assert status == 400
    assert headers["x-content-type-options"] == "nosniff"


def test_a_failing_error_response_method_still_answers_500(serve):
    app = App()

    @app.get("/bad")
    def bad():
        raise HTTPError(400, "bad", headers=[("X-Bad", "1\r\nInjected: yes")])

    server = serve(app)
    with connect(server) as sock:
        sock.sendall(b"GET /bad HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _ = Reader(sock).read_response()
    assert status == 500 and "injected" not in headers
