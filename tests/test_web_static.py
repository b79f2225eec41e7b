"""Static files over real sockets: safe paths, content types, ETag/Last-Modified/304, ranges,
large files through sendfile while other requests go on."""

from __future__ import annotations

import os
import time

import pytest

from clos_web import App

from conftest import Reader, connect, request


def GET(path: str, extra: str = "", method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


@pytest.fixture
def site(tmp_path, serve):
    root = tmp_path / "public"
    (root / "css").mkdir(parents=True)
    (root / "index.html").write_text("<h1>home</h1>")
    (root / "css" / "site.css").write_text("body{}")
    (root / "big.bin").write_bytes(os.urandom(3_000_000))
    (root / ".secret").write_text("hidden")
    (tmp_path / "outside.txt").write_text("outside")
    os.symlink(tmp_path / "outside.txt", root / "escape.txt")
    os.symlink(root / "css" / "site.css", root / "inside.css")
    app = App()
    app.static("/static", root, max_age=60)
    app.get("/plaintext")(lambda: "hi")
    server = serve(app)
    server.root = root
    return server


def test_files_with_content_types_and_caching_headers(site):
    status, headers, body = request(site, GET("/static/css/site.css"))
    assert (status, body) == (200, b"body{}")
    assert headers["content-type"] == "text/css; charset=utf-8"
    assert headers["cache-control"] == "max-age=60" and headers["etag"].startswith('"')
    assert "last-modified" in headers
    status, headers, body = request(site, GET("/static/"))
    assert (status, body) == (200, b"<h1>home</h1>")
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert request(site, GET("/static/inside.css"))[2] == b"body{}"  # symlink inside: fine
    status, headers, _ = request(site, GET("/static/css/site.css", method="HEAD"), head_only=True)
    assert status == 200 and headers["content-length"] == "6"


@pytest.mark.parametrize("path", [
    "/static/../outside.txt", "/static/%2e%2e/outside.txt", "/static/css/..%2F..%2Foutside.txt",
    "/static/..%2foutside.txt", "/static/escape.txt", "/static/.secret", "/static/css",
    "/static/nope.txt", "/static/css//site.css", "/static/%00", "/static/..\\outside.txt",
])
def test_no_escape_from_the_directory(site, path):
    status, _, body = request(site, GET(path))
    assert status in (404, 400) and b"outside" not in body and b"hidden" not in body


def test_etag_and_last_modified_give_304(site):
    _, headers, _ = request(site, GET("/static/css/site.css"))
    etag, modified = headers["etag"], headers["last-modified"]
    status, headers, body = request(site, GET("/static/css/site.css", f"If-None-Match: {etag}\r\n"))
    assert (status, body) == (304, b"") and headers["etag"] == etag
    status, _, _ = request(site, GET("/static/css/site.css", f"If-Modified-Since: {modified}\r\n"))
    assert status == 304
    status, _, _ = request(site, GET("/static/css/site.css", 'If-None-Match: "other"\r\n'))
    assert status == 200


def test_range_requests(site):
    data = (site.root / "big.bin").read_bytes()
    status, headers, body = request(site, GET("/static/big.bin", "Range: bytes=10-19\r\n"))
    assert (status, body) == (206, data[10:20])
    assert headers["content-range"] == f"bytes 10-19/{len(data)}"
    status, _, body = request(site, GET("/static/big.bin", "Range: bytes=-5\r\n"))
    assert (status, body) == (206, data[-5:])
    status, _, body = request(site, GET("/static/big.bin", "Range: bytes=2999990-\r\n"))
    assert (status, body) == (206, data[2999990:])
    status, headers, _ = request(site, GET("/static/big.bin", "Range: bytes=5000000-\r\n"))
    assert status == 416 and headers["content-range"] == f"bytes */{len(data)}"
    status, _, body = request(site, GET("/static/big.bin",
                                        'Range: bytes=0-1\r\nIf-Range: "stale"\r\n'))
    assert status == 200 and len(body) == len(data)


def test_a_large_file_is_sent_without_blocking_other_connections(site):
    data = (site.root / "big.bin").read_bytes()
    with connect(site, timeout=10) as slow, connect(site) as fast:
        slow.sendall(GET("/static/big.bin") + GET("/plaintext"))
        time.sleep(0.1)  # the file is partly sent; the client does not read yet
        reader = Reader(fast)
        for _ in range(20):
            t = time.monotonic()
            fast.sendall(GET("/plaintext"))
            assert reader.read_response()[2] == b"hi"
            assert time.monotonic() - t < 0.2
        slow_reader = Reader(slow)
        status, headers, body = slow_reader.read_response()
        assert status == 200 and body == data
        assert slow_reader.read_response()[2] == b"hi"
