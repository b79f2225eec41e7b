"""The HTTP layer against hostile clients: what cannot be HTTP is refused at once, and chunk
framing costs bounded memory and work."""

from __future__ import annotations

import socket
import ssl
import time
import tracemalloc

import pytest

from clos_web import App, Response

from conftest import Reader, connect


def test_a_tls_client_hello_on_the_plain_port_is_refused_at_once(hello):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", hello.port), timeout=5) as raw:
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            with context.wrap_socket(raw, server_hostname="localhost"):
                pass
    # the header deadline is 10 s: the answer must not wait for it
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize("first", [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",   # TLS ClientHello
    b"\x00\x00\x00\x00",                                # binary junk
    b"GET\tI am not HTTP",                               # not a space after the method
    b" GET / HTTP/1.1",                                  # no method
    b"\x80GET",                                          # SSLv2-style hello
])
def test_first_bytes_that_cannot_be_a_request_get_400_without_waiting(hello, first):
    with connect(hello, timeout=3) as sock:
        started = time.monotonic()
        sock.sendall(first)
        status, headers, _ = Reader(sock).read_response()
        assert status == 400
        assert time.monotonic() - started < 1.0
        assert headers.get("connection") == "close"


def test_a_request_arriving_a_byte_at_a_time_is_not_refused_early(hello):
    with connect(hello) as sock:
        for b in b"\r\nGET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n":
            sock.send(bytes([b]))
        assert Reader(sock).read_response()[:1] == (200,)


def _one_byte_chunks(data: bytes) -> bytes:
    return b"".join(b"1\r\n" + data[i:i + 1] + b"\r\n" for i in range(len(data))) + b"0\r\n\r\n"


def _post_chunked(server, body_wire: bytes):
    with connect(server, timeout=30) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Type: application/octet-stream\r\n\r\n")
        view = memoryview(body_wire)
        for i in range(0, len(view), 65536):
            try:
                sock.sendall(view[i:i + 65536])
            except (BrokenPipeError, ConnectionResetError):
                break
        return Reader(sock).read_response()


@pytest.fixture
def echo(serve):
    app = App()

    @app.post("/echo")
    def echo(request):
        return Response(request.body, content_type="application/octet-stream")

    return serve(app)


def test_one_byte_chunks_cost_their_data_not_an_object_each(echo):
    data = bytes(range(256)) * 400  # 100 KiB in 102,400 chunks of one byte
    wire = _one_byte_chunks(data)
    tracemalloc.start()
    try:
        status, _, body = _post_chunked(echo, wire)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (status, body) == (200, data)
    # before: a bytes object and a list slot per chunk, ~48x the data (4.9 MB here)
    assert peak < 2_500_000, peak


def test_chunk_framing_beyond_its_allowance_is_413(serve):
    app = App()

    @app.post("/echo")
    def echo(request):
        return Response(request.body)

    server = serve(app, max_body=64 * 1024)
    status, _, body = _post_chunked(server, _one_byte_chunks(b"x" * 30_000))
    assert status == 413
    assert b"chunk framing" in body
    # the same data in sane chunks is fine
    wire = b"7530\r\n" + b"x" * 30_000 + b"\r\n0\r\n\r\n"
    status, _, body = _post_chunked(server, wire)
    assert (status, len(body)) == (200, 30_000)


@pytest.fixture
def guarded(serve):
    from clos_web import HTTPError

    app = App()

    def logged_in(request):
        if request.headers.get("authorization") != "Bearer good":
            raise HTTPError(401, "log in first", headers=[("WWW-Authenticate", "Bearer")])

    @app.post("/upload", guard=logged_in)
    def upload(request):
        return Response(b"got %d" % len(request.body))

    @app.get("/only-get")
    def only_get():
        return "hi"

    return serve(app)


@pytest.mark.parametrize("target, auth, status", [
    ("/nowhere", "good", 404),
    ("/only-get", "good", 405),
    ("/upload", "bad", 401),
])
def test_expect_100_continue_on_a_refused_request_gets_the_refusal_not_continue(
        guarded, target, auth, status):
    with connect(guarded, timeout=3) as sock:
        sock.sendall(f"POST {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {auth}\r\n"
                     "Content-Length: 1000000\r\nExpect: 100-continue\r\n\r\n".encode())
        reader = Reader(sock)
        got, headers, _ = reader.read_response()
        assert got == status  # not 100: the client uploads nothing
        assert headers["connection"] == "close"
        assert reader.closed()


def test_expect_100_continue_on_an_accepted_request_still_gets_continue(guarded):
    with connect(guarded, timeout=3) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer good\r\n"
                     b"Content-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        reader = Reader(sock)
        assert reader.read_response()[0] == 100
        sock.sendall(b"body")
        assert reader.read_response()[::2] == (200, b"got 4")


def test_a_guard_refuses_requests_without_expect_too(guarded):
    with connect(guarded, timeout=3) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody")
        status, headers, _ = Reader(sock).read_response()
        assert status == 401 and headers["www-authenticate"] == "Bearer"
