"""Static files under attack: a FIFO never blocks the loop, ranges on empty files stay valid,
the dot-file rule holds through symlinks."""

from __future__ import annotations

import os
import time

import pytest

from clos_web import App

from conftest import Reader, connect, request


@pytest.fixture
def root(tmp_path):
    (tmp_path / "ok.txt").write_text("fine\n")
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / ".secret").write_text("password\n")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config").write_text("[core]\n")
    os.mkfifo(tmp_path / "pipe.txt")
    os.symlink(tmp_path / ".secret", tmp_path / "innocent.txt")
    os.symlink(tmp_path / ".git", tmp_path / "repo")
    return tmp_path


@pytest.fixture
def server(serve, root):
    app = App()
    app.static("/s", root)
    return serve(app)


def get(server, path, extra=""):
    return request(server, f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode(), timeout=3)


def test_a_fifo_is_refused_without_blocking_the_loop(server, root):
    # were the FIFO opened, the loop would block in open() until a writer appears
    started = time.monotonic()
    status, _, _ = get(server, "/s/pipe.txt")
    assert status == 404
    assert time.monotonic() - started < 1.0
    status, _, body = get(server, "/s/ok.txt")
    assert (status, body) == (200, b"fine\n")


def test_a_suffix_range_on_an_empty_file_is_416_with_a_valid_content_range(server):
    for rng in ("bytes=-5", "bytes=0-", "bytes=0-0"):
        status, headers, _ = get(server, "/s/empty.txt", f"Range: {rng}\r\n")
        assert status == 416, rng
        assert headers["content-range"] == "bytes */0"
    status, headers, body = get(server, "/s/empty.txt")
    assert (status, body, headers["content-length"]) == (200, b"", "0")


def test_symlinks_to_dot_files_are_not_served(server):
    assert get(server, "/s/innocent.txt")[0] == 404
    assert get(server, "/s/repo/config")[0] == 404
    assert get(server, "/s/.secret")[0] == 404


def test_other_connections_are_served_while_a_fifo_is_requested(server):
    with connect(server) as slow:
        slow.sendall(b"GET /s/pipe.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = get(server, "/s/ok.txt")
        assert status == 200
        assert Reader(slow).read_response()[0] == 404
