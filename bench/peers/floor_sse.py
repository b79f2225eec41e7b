"""The floor of a pure-Python SSE server on this machine: what push_bench.py's "floor" server
runs in the idle scenarios, to show in the same run how fast any Python code can take on new
subscribers (connection setup) against Nchan's rate (bench/README.md, "The floor").

A bare selectors loop: it accepts until EAGAIN, answers a GET's head with a fixed
event-stream head and holds the connection, answers anything else (the benchmark's start-up
probe, a publish) with an empty 202. No channels, no events: a measuring stick, not a peer.

  python floor_sse.py --port N
"""

import selectors
import socket
import sys

STREAM = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
          b"Transfer-Encoding: chunked\r\n\r\n")
ACCEPTED = b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"


def main() -> None:
    port = int(sys.argv[sys.argv.index("--port") + 1])
    sel = selectors.DefaultSelector()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(4096)
    listener.setblocking(False)
    sel.register(listener, selectors.EVENT_READ, None)
    while True:
        for key, _ in sel.select():
            sock = key.data
            if sock is None:
                while True:
                    try:
                        sock, _ = listener.accept()
                    except BlockingIOError:
                        break
                    sock.setblocking(False)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    sel.register(sock, selectors.EVENT_READ, sock)
                continue
            try:
                data = sock.recv(65536)
            except ConnectionError:
                data = b""
            if not data:
                sel.unregister(sock)
                sock.close()
            elif b"\r\n\r\n" in data:  # a head in one read: the load tool sends it whole
                sock.send(STREAM if data.startswith(b"GET ") else ACCEPTED)


if __name__ == "__main__":
    main()
