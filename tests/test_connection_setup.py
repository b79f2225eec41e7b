"""Connection setup stays cheap in system calls: a new stream is one registration with the
selector and one send, and every accepted socket has TCP_NODELAY without a call of its own."""

from __future__ import annotations

import socket
import threading

from conftest import Reader, connect, load_example, wait_for


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
