"""Connection setup stays cheap: a new stream is one registration with the poller and one
send, every accepted socket has TCP_NODELAY without a call of its own; the pollers (epoll with
one dict entry per socket, selectors elsewhere) serve alike; an idle stream holds no buffer."""

from __future__ import annotations

import socket
import threading

import pytest

from clos_web import Limits, Response
from clos_web.http.server import Server
from clos_web.loop.server import (DISCARD, EVENT_READ, EVENT_WRITE, EpollPoller,
                                  SelectorsPoller)

from conftest import Reader, connect, load_example, request, wait_for


class CountingSelector:
    """Wraps a selector and counts register/modify/unregister by file descriptor."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = []
        self.lock = threading.Lock()

    def _note(self, what, fileobj):
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        with self.lock:
            self.calls.append((what, fd))

    def register(self, fileobj, events, data=None):
        self._note("register", fileobj)
        return self.inner.register(fileobj, events, data)

    def modify(self, fileobj, events, data=None):
        self._note("modify", fileobj)
        return self.inner.modify(fileobj, events, data)

    def unregister(self, fileobj):
        self._note("unregister", fileobj)
        return self.inner.unregister(fileobj)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_a_new_sse_stream_is_one_registration_and_its_head_one_send(serve):
    hello = load_example("hello")
    server = serve(hello.app)
    counting = CountingSelector(server.selector)
    done = threading.Event()

    def swap():
        server.selector = counting
        done.set()

    server.call_soon_threadsafe(swap)
    assert done.wait(5)
    sock = connect(server)
    sock.sendall(b"GET /sub/room HTTP/1.1\r\nHost: t\r\n\r\n")
    reader = Reader(sock)
    assert reader.read_head()[0] == 200
    wait_for(lambda: hello.channels.subscriber_count("room") == 1)
    conn = next(c for c in list(server.conns) if getattr(c.protocol, "stream", None))
    fd = conn.sock.fileno()
    with counting.lock:
        mine = [what for what, f in counting.calls if f == fd]
    # registered once when accepted; the head and preamble went out in one send, with no
    # write interest set and cleared around it
    assert mine == ["register"]
    # and the socket has TCP_NODELAY (from the listening socket on Linux)
    assert conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    sock.close()


def test_every_accepted_connection_has_nodelay(serve):
    server = serve(load_example("hello").app)
    socks = [connect(server) for _ in range(5)]
    wait_for(lambda: len(server.conns) >= 5)
    assert all(c.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
               for c in list(server.conns))
    for s in socks:
        s.close()


def _read_until(reader: Reader, marker: bytes) -> bytes:
    while marker not in reader.data:
        if not reader._fill():
            raise EOFError(f"closed before {marker!r}; got {reader.data!r}")
    return reader.data


# --------------------------------------------------------------------------------------------
# The poller: epoll and one dict entry per socket (selectors where there is no epoll)


@pytest.mark.parametrize("poller", [EpollPoller, SelectorsPoller])
def test_either_poller_serves_requests_streams_and_large_answers(poller):
    """The loop over either poller: keep-alive requests, a stream and its events, and an
    answer larger than the socket takes at once (write interest on and off)."""
    hello = load_example("hello")
    big = b"x" * (16 << 20)
    hello.app.get("/big")(lambda: Response(big, content_type="application/octet-stream"))
    server = Server(hello.app, "127.0.0.1", 0, Limits(), poller=poller).start()
    try:
        assert type(server.selector) is poller
        with connect(server) as sock:
            reader = Reader(sock)
            for _ in range(3):
                sock.sendall(b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n")
                assert reader.read_response()[2] == b"Hello, World!"
        stream = connect(server)
        stream.sendall(b"GET /sub/room HTTP/1.1\r\nHost: t\r\n\r\n")
        events = Reader(stream)
        assert events.read_head()[0] == 200
        wait_for(lambda: hello.channels.subscriber_count("room") == 1)
        with connect(server) as slow:
            slow.sendall(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
            # the client reads nothing yet: the server fills the socket and waits to write
            wait_for(lambda: any(c.out_bytes and c.events & EVENT_WRITE
                                 for c in list(server.conns)))
            status, _, body = Reader(slow).read_response()
            assert status == 200 and body == big
        request(server, b"POST /pub/room HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
        assert b"data: hello" in _read_until(events, b"data: hello")
        stream.close()
        wait_for(lambda: hello.channels.subscriber_count("room") == 0)
    finally:
        server.stop(2)
    assert server.stopped.is_set()


def test_the_epoll_poller_reports_a_hang_up_as_what_the_socket_waits_for():
    poller = EpollPoller()
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    try:
        poller.register(a, EVENT_READ, "reader")
        poller.register(c, EVENT_WRITE, "writer")
        b.close()
        d.close()
        ready = dict(poller.select(0))
        assert ready == {"reader": EVENT_READ, "writer": EVENT_WRITE}
        stranger = socket.socket()  # (open, and never registered)
        with pytest.raises(KeyError):
            poller.modify(stranger, EVENT_READ, "x")
        stranger.close()
        poller.unregister(a)
        with pytest.raises(KeyError):
            poller.unregister(a)
        assert dict(poller.select(0)) == {"writer": EVENT_WRITE} and len(poller) == 1
    finally:
        poller.close()
        a.close()
        c.close()


def test_the_epoll_poller_returns_at_most_maxevents_and_the_rest_next_time():
    poller = EpollPoller(maxevents=2)
    pairs = [socket.socketpair() for _ in range(5)]
    try:
        for i, (a, b) in enumerate(pairs):
            poller.register(a, EVENT_READ, i)
            b.send(b"x")
        first = poller.select(0)
        assert len(first) == 2
        assert len(poller.select(0, 10)) == 5  # (level-triggered: still ready)
    finally:
        poller.close()
        for a, b in pairs:
            a.close()
            b.close()


def test_an_idle_stream_keeps_no_input_buffer_and_no_output_list(serve):
    """What an idle stream holds: its input is the shared DISCARD (what its client sends is
    dropped: the stream goes on), its output queue the shared empty tuple."""
    hello = load_example("hello")
    server = serve(hello.app)
    streams = [connect(server) for _ in range(3)]
    for sock in streams:
        sock.sendall(b"GET /sub/room HTTP/1.1\r\nHost: t\r\n\r\n")
    readers = [Reader(sock) for sock in streams]
    assert all(r.read_head()[0] == 200 for r in readers)
    wait_for(lambda: hello.channels.subscriber_count("room") == 3)
    conns = [c for c in list(server.conns) if getattr(c.protocol, "stream", None)]
    assert len(conns) == 3
    # (the loop may still be between its send and forgetting what it sent)
    wait_for(lambda: [(c.buf is DISCARD, c.protocol.buf is DISCARD, c.out) for c in conns]
             == [(True, True, ())] * 3)
    streams[0].sendall(b"chatter the stream ignores" * 100)
    request(server, b"POST /pub/room HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi")
    for r in readers:
        assert b"data: hi" in _read_until(r, b"data: hi")
    assert DISCARD.data == b"" and hello.channels.subscriber_count("room") == 3
    for sock in streams:
        sock.close()


def test_an_accepted_socket_is_the_base_socket_type_and_serves_as_one(serve):
    server = serve(load_example("hello").app)
    with socket.create_connection(("127.0.0.1", server.port)) as client:
        client.sendall(b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n")
        assert client.recv(4096).endswith(b"Hello, World!")
        conn = next(iter(server.conns))
        assert type(conn.sock) is socket.SocketType and conn.sock.gettimeout() == 0.0
        assert conn.sock.getpeername() == client.getsockname() == conn.addr
        assert conn.sock.family == socket.AF_INET and conn.sock.type == socket.SOCK_STREAM
        assert conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_a_closed_connection_is_let_go_at_once_not_when_its_deadline_comes(serve):
    """A connection waits in a one-second deadline bucket (10 s for a new one's first head,
    60 s for a keep-alive one): one that closes before then leaves the bucket as it closes.
    (A reconnect storm otherwise kept every closed connection, its HTTP state and its buffer
    for up to a minute: rate x 60 s of them.)"""
    import gc

    from clos_web.loop.server import Connection

    def ours() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if type(o) is Connection and o.server is server)

    server = serve(load_example("hello").app)
    for _ in range(100):  # keep-alive requests, then the client goes
        with connect(server) as sock:
            sock.sendall(b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n")
            assert Reader(sock).read_response()[0] == 200
    streams = []
    for i in range(100):  # streams, closed by their clients
        sock = connect(server)
        sock.sendall(b"GET /sub/room%d HTTP/1.1\r\nHost: t\r\n\r\n" % i)
        streams.append((sock, Reader(sock)))
    for sock, reader in streams:
        assert reader.read_head()[0] == 200
        sock.close()
    wait_for(lambda: not server.conns)
    # (by the end of the loop's turn; the buckets would have kept them 10 s, or 60 s)
    wait_for(lambda: ours() == 0, timeout=3)
    done = threading.Event()
    waiting = []
    server.call_soon_threadsafe(lambda: (waiting.extend(server._buckets.values()), done.set()))
    assert done.wait(5) and not any(waiting)


def test_a_deadline_already_past_fires_at_the_next_sweep(serve):
    """``set_deadline(conn, when)`` with ``when`` seconds in the past (a method that computes
    it from an old activity time) fires at the loop's next sweep, within about a second; it
    used to land in a bucket the sweep had passed, and never fired."""
    server = serve(load_example("hello").app)
    sock = connect(server)
    sock.sendall(b"GET /sub/late HTTP/1.1\r\nHost: t\r\n\r\n")
    reader = Reader(sock)
    assert reader.read_head()[0] == 200
    wait_for(lambda: len(server.conns) == 1)
    (conn,) = list(server.conns)
    server.call_soon_threadsafe(lambda: server.set_deadline(conn, server.now - 5))
    # the stream's deadline passing ends it (stream_idle's default): the client sees the end
    sock.settimeout(5)
    rest = b""
    while True:
        data = sock.recv(65536)
        if not data:
            break
        rest += data
    assert rest.endswith(b"0\r\n\r\n")
    sock.close()
