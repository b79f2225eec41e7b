"""HTTP/1.1 over real sockets: keep-alive, pipelining, bodies, 100-continue, HEAD, refusals."""

from __future__ import annotations

import email.utils
import socket
import time

import pytest

from clos_web import App, HTTPError, Response
from clos_web.http.head import _STATUS_LINES

from conftest import Reader, connect, request, wait_for

GET_PLAIN = b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n"


def test_plaintext_and_json_follow_the_contract(hello):
    status, headers, body = request(hello, GET_PLAIN)
    assert (status, body) == (200, b"Hello, World!")
    assert headers["content-type"] == "text/plain; charset=utf-8"
    status, headers, body = request(hello, b"GET /json HTTP/1.1\r\nHost: t\r\n\r\n")
    assert (status, body) == (200, b'{"message":"Hello, World!"}')
    assert headers["content-type"] == "application/json"


def test_echo_returns_the_body_byte_for_byte_with_its_content_type(hello):
    body = bytes(range(256)) * 4
    status, headers, got = request(
        hello, b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-thing\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body) + body)
    assert (status, got) == (200, body)
    assert headers["content-type"] == "application/x-thing"


def test_keep_alive_is_the_default_in_http_1_1(hello):
    with connect(hello) as sock:
        reader = Reader(sock)
        for _ in range(3):
            sock.sendall(GET_PLAIN)
            status, headers, body = reader.read_response()
            assert status == 200 and "connection" not in headers
        assert not reader.closed(0.3)


def test_connection_close_is_honoured(hello):
    with connect(hello) as sock:
        sock.sendall(b"GET /plaintext HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        reader = Reader(sock)
        status, headers, body = reader.read_response()
        assert status == 200 and headers["connection"] == "close"
        assert reader.closed()


def test_http_1_0_is_answered_and_closed_by_default(hello):
    with connect(hello) as sock:
        sock.sendall(b"GET /plaintext HTTP/1.0\r\n\r\n")
        reader = Reader(sock)
        status, headers, body = reader.read_response()
        assert (status, body) == (200, b"Hello, World!")
        assert headers["connection"] == "close"
        assert reader.closed()


def test_http_1_0_is_kept_alive_when_the_client_asks(hello):
    with connect(hello) as sock:
        reader = Reader(sock)
        for _ in range(2):
            sock.sendall(b"GET /plaintext HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            status, headers, body = reader.read_response()
            assert status == 200 and headers["connection"] == "keep-alive"
        assert not reader.closed(0.3)


def test_pipelined_requests_get_responses_in_request_order(hello):
    reqs = b"".join(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (len(b), b)
        for b in (b"first", b"second", b"third"))
    with connect(hello) as sock:
        sock.sendall(reqs + GET_PLAIN + b"GET /json HTTP/1.1\r\nHost: t\r\n\r\n")
        reader = Reader(sock)
        bodies = [reader.read_response()[2] for _ in range(5)]
    assert bodies == [b"first", b"second", b"third", b"Hello, World!",
                      b'{"message":"Hello, World!"}']


def test_many_pipelined_requests_while_the_client_does_not_read(serve):
    """Responses pile up past the output cap: the server stops reading, then resumes."""
    app = App()

    @app.get("/big")
    def big():
        return Response(b"x" * 100_000)

    server = serve(app, output_cap=200_000)
    n = 40
    with connect(server, timeout=10) as sock:
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n" * n)
        time.sleep(0.3)
        reader = Reader(sock)
        for _ in range(n):
            status, _, body = reader.read_response()
            assert status == 200 and len(body) == 100_000


def test_chunked_body_with_extensions_and_trailers(hello):
    data = (b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;name=value\r\nhello\r\n"
            b"1\r\n \r\n"
            b"5\r\nworld\r\n"
            b"0\r\nX-Trailer: yes\r\nOther: 1\r\n\r\n")
    with connect(hello) as sock:
        sock.sendall(data + GET_PLAIN)
        reader = Reader(sock)
        assert reader.read_response()[2] == b"hello world"
        assert reader.read_response()[2] == b"Hello, World!"


def test_a_body_sent_a_byte_at_a_time_arrives_whole(hello):
    body = b"0123456789" * 30
    data = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    with connect(hello) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(0, len(data), 7):
            sock.sendall(data[i:i + 7])
        assert Reader(sock).read_response()[2] == body


def test_expect_100_continue_gets_the_interim_response_before_the_body(hello):
    with connect(hello) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        reader = Reader(sock)
        status, _, _ = reader.read_response()
        assert status == 100
        sock.sendall(b"body")
        status, _, body = reader.read_response()
        assert (status, body) == (200, b"body")


def test_expect_100_continue_gets_the_final_error_at_once_when_the_body_is_refused(serve):
    app = App()
    app.post("/up")(lambda: "ok")
    server = serve(app, max_body=1000)
    with connect(server) as sock:
        sock.sendall(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        reader = Reader(sock)
        status, headers, _ = reader.read_response()
        assert status == 413 and headers["connection"] == "close"
        assert reader.closed()


def test_head_has_gets_headers_and_no_body(hello):
    with connect(hello) as sock:
        sock.sendall(b"HEAD /plaintext HTTP/1.1\r\nHost: t\r\n\r\n" + GET_PLAIN)
        reader = Reader(sock)
        status, headers, _ = reader.read_response(head_only=True)
        assert status == 200 and headers["content-length"] == "13"
        assert headers["content-type"] == "text/plain; charset=utf-8"
        # the next response starts right away: no body bytes were sent for HEAD
        status, _, body = reader.read_response()
        assert (status, body) == (200, b"Hello, World!")


def test_404_and_405_with_allow(hello):
    assert request(hello, b"GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n")[0] == 404
    status, headers, _ = request(hello, b"DELETE /plaintext HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status == 405 and headers["allow"] == "GET, HEAD"


REFUSALS = [
    (b"GET /plaintext HTTP/1.1\r\n\r\n", 400, "missing Host"),
    (b"GET /plaintext HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "repeated Host"),
    (b"GET /plaintext HTTP/1.1\r\nHost : a\r\n\r\n", 400, "whitespace before colon"),
    (b"GET /plaintext HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  folded\r\n\r\n", 400,
     "obsolete line folding"),
    (b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\n", 400,
     "invalid Content-Length"),
    (b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400,
     "conflicting Content-Length"),
    (b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
     400, "Content-Length with Transfer-Encoding"),
    (b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501,
     "transfer coding not implemented"),
    (b"GET /plaintext HTTP/2.0\r\nHost: a\r\n\r\n", 505, "not supported"),
    (b"GET /plaintext\r\nHost: a\r\n\r\n", 400, "malformed request line"),
    (b"GET  /plaintext HTTP/1.1\r\nHost: a\r\n\r\n", 400, "malformed request line"),
    (b"G(T /plaintext HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bad method"),
    (b"GET /plaintext HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400, "bad header value"),
    (b"GET /plaintext HTTP/1.1\nHost: a\n\n", 400, "bare LF"),
]


@pytest.mark.parametrize("data,status,reason", REFUSALS, ids=[r[2] for r in REFUSALS])
def test_bad_requests_are_refused_with_a_reason_and_the_connection_closed(hello, data, status,
                                                                         reason):
    with connect(hello) as sock:
        sock.sendall(data)
        reader = Reader(sock)
        got, headers, body = reader.read_response()
        assert got == status
        assert reason.encode() in body
        assert headers["connection"] == "close"
        assert reader.closed()


def test_request_line_over_the_limit_is_414(serve):
    server = serve(App(), max_request_line=100)
    status, headers, _ = request(server, b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    assert status == 414
    # and without waiting for the end of the line
    with connect(server) as sock:
        sock.sendall(b"GET /" + b"a" * 300)
        assert Reader(sock).read_response()[0] == 414


def test_header_fields_over_the_limit_are_431(serve):
    server = serve(App(), max_header_bytes=1000)
    fields = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 50) for i in range(40))
    assert request(server, b"GET / HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n")[0] == 431
    with connect(server) as sock:  # refused before the head is complete
        sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n" + fields)
        assert Reader(sock).read_response()[0] == 431


def test_body_over_the_limit_is_413_decided_from_content_length(serve):
    app = App()
    app.post("/up")(lambda: "ok")
    server = serve(app, max_body=1000)
    with connect(server) as sock:
        # the body is never sent: the answer must come from the header alone
        sock.sendall(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n\r\n")
        reader = Reader(sock)
        assert reader.read_response()[0] == 413
        assert reader.closed()


def test_a_route_may_raise_the_body_limit(serve):
    app = App()
    app.post("/small")(lambda request: str(len(request.body)))
    app.route("POST", "/big", max_body=100_000)(lambda request: str(len(request.body)))
    server = serve(app, max_body=1000)
    body = b"z" * 50_000
    assert request(server, b"POST /small HTTP/1.1\r\nHost: t\r\nContent-Length: 50000\r\n\r\n"
                   + body)[0] == 413
    status, _, got = request(server, b"POST /big HTTP/1.1\r\nHost: t\r\n"
                             b"Content-Length: 50000\r\n\r\n" + body)
    assert (status, got) == (200, b"50000")


def test_chunked_body_over_the_limit_is_413(serve):
    app = App()
    app.post("/up")(lambda: "ok")
    server = serve(app, max_body=1000)
    chunks = b"".join(b"100\r\n" + b"a" * 256 + b"\r\n" for _ in range(10))
    data = b"POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks
    assert request(server, data)[0] == 413


def test_responses_carry_date_length_in_bytes_and_charset(serve):
    app = App()
    app.get("/utf8")(lambda: "héllo wörld ✓")
    server = serve(app)
    status, headers, body = request(server, b"GET /utf8 HTTP/1.1\r\nHost: t\r\n\r\n")
    assert body.decode("utf-8") == "héllo wörld ✓"
    assert int(headers["content-length"]) == len("héllo wörld ✓".encode()) == 17
    assert headers["content-type"] == "text/html; charset=utf-8"
    parsed = email.utils.parsedate_to_datetime(headers["date"])
    assert abs(parsed.timestamp() - time.time()) < 5
    assert headers["date"].endswith(" GMT")


def test_a_header_value_with_cr_or_lf_is_refused(serve):
    app = App()

    @app.get("/split")
    def split(request):
        return Response("x", headers={"X-Name": request.query.replace("%0D%0A", "\r\n")})

    server = serve(app)
    status, headers, body = request(
        server, b"GET /split?evil%0D%0ASet-Cookie:%20a=b HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status == 500
    assert "set-cookie" not in headers


def test_an_exception_in_a_handler_is_a_500_for_that_request_only(serve):
    app = App()

    @app.get("/boom")
    def boom():
        raise RuntimeError("plain error")  # House let this escape and kill its server

    @app.get("/assert")
    def fails():
        assert False, "nope"

    app.get("/ok")(lambda: "fine")
    server = serve(app)
    with connect(server) as sock:
        reader = Reader(sock)
        sock.sendall(b"GET /boom HTTP/1.1\r\nHost: t\r\n\r\n")
        status, _, body = reader.read_response()
        assert status == 500 and b"plain error" not in body  # no traceback outside debug
        sock.sendall(b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n")  # same connection goes on
        assert reader.read_response()[2] == b"fine"
    assert request(server, b"GET /assert HTTP/1.1\r\nHost: t\r\n\r\n")[0] == 500
    assert request(server, b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n")[2] == b"fine"


def test_debug_mode_shows_the_traceback(serve):
    app = App()

    @app.get("/boom")
    def boom():
        raise RuntimeError("visible in debug")

    server = serve(app, debug=True)
    status, _, body = request(server, b"GET /boom HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status == 500 and b"RuntimeError: visible in debug" in body


def test_a_handler_may_raise_http_error(serve):
    app = App()

    @app.get("/forbidden")
    def forbidden():
        raise HTTPError(403, "not your card")

    server = serve(app)
    status, _, body = request(server, b"GET /forbidden HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status == 403 and b"not your card" in body


def test_client_input_grows_no_server_structure(hello):
    """Thousands of distinct paths, methods, header names: nothing is kept afterwards."""
    statuses = len(_STATUS_LINES)
    with connect(hello) as sock:
        reader = Reader(sock)
        for i in range(300):
            fields = b"".join(b"X-Unique-%d-%d: v\r\n" % (i, j) for j in range(20))
            sock.sendall(b"M%d /p%d?q=%d HTTP/1.1\r\nHost: t\r\n%s\r\n" % (i, i, i, fields))
            assert reader.read_response()[0] in (404, 405)
    assert len(_STATUS_LINES) <= statuses + 2
    conns = hello.conns
    wait_for(lambda: len(conns) == 0)
    assert all(len(b) < 5 for b in hello._buckets.values())
