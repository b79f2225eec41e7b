"""The floor of a pure-Python server on this machine: the measuring sticks the benchmarks run
beside the C servers, to show in the same run how much of nginx's and Nchan's rates any Python
code reaches (bench/README.md, "The floor in the same run").

  python floor.py --port N              # http_bench's "floor": a bare selectors loop; per
                                        # request it finds the head's end and the target and
                                        # sends fixed bytes (/plaintext, else a 404)
  python floor.py --port N --minimal    # http_bench's "minimal": the least an HTTP/1.1 server
                                        # does: the head parsed into a dict of fields, Host
                                        # checked, a route table, a head written with Date and
                                        # Content-Length
  python floor.py --port N --sse        # push_bench's "floor" (idle scenarios): a GET is
                                        # answered with a fixed event-stream head and held,
                                        # anything else (the start-up probe, a publish) with an
                                        # empty 202; no channels, no events

None is a server anyone should use: no body, no limits, no errors beyond a missing Host.
"""

import selectors
import socket
import sys
import time

PLAIN = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\n"
         b"Hello, World!")
MISSING = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
NO_HOST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
STREAM = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
          b"Transfer-Encoding: chunked\r\n\r\n")
ACCEPTED = b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"


def answer_floor(buf: bytearray) -> bytes:
    out = []
    while True:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            break
        first = buf.find(b" ", 0, end)
        target = bytes(buf[first + 1:buf.find(b" ", first + 1, end)])
        del buf[:end + 4]
        out.append(PLAIN if target == b"/plaintext" else MISSING)
    return b"".join(out)


ROUTES = {("GET", "/plaintext"): lambda fields: ("Hello, World!", "text/plain")}
DATE = [b"", 0]


def date() -> bytes:
    now = int(time.time())
    if now != DATE[1]:
        DATE[0] = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)).encode()
        DATE[1] = now
    return DATE[0]


def answer_minimal(buf: bytearray) -> bytes:
    out = []
    while True:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            break
        head = buf[:end + 2].decode("latin-1")
        del buf[:end + 4]
        line, _, rest = head.partition("\r\n")
        method, target, version = line.split(" ")
        fields = {}
        for field in rest[:-2].split("\r\n"):
            name, _, value = field.partition(":")
            fields[name.lower()] = value.strip(" \t")
        if "host" not in fields:
            out.append(NO_HOST)
            break
        path, _, query = target.partition("?")
        handler = ROUTES.get((method, path))
        if handler is None:
            out.append(MISSING)
            continue
        text, kind = handler(fields)
        body = text.encode()
        out.append(b"HTTP/1.1 200 OK\r\nDate: %s\r\nContent-Type: %s\r\nContent-Length: %d"
                   b"\r\n\r\n%s" % (date(), kind.encode(), len(body), body))
    return b"".join(out)


def answer_sse(buf: bytearray) -> bytes:
    if b"\r\n\r\n" not in buf:
        return b""
    reply = STREAM if buf.startswith(b"GET ") else ACCEPTED
    buf.clear()  # (a publish's body, a stream's client: nothing more is read)
    return reply


def main() -> None:
    port = int(sys.argv[sys.argv.index("--port") + 1])
    answer = (answer_minimal if "--minimal" in sys.argv else
              answer_sse if "--sse" in sys.argv else answer_floor)
    sel = selectors.DefaultSelector()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(4096)
    listener.setblocking(False)
    sel.register(listener, selectors.EVENT_READ, None)
    while True:
        for key, _ in sel.select():
            if key.data is None:
                while True:
                    try:
                        sock, _ = listener.accept()
                    except BlockingIOError:
                        break
                    sock.setblocking(False)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    sel.register(sock, selectors.EVENT_READ, (sock, bytearray()))
                continue
            sock, buf = key.data
            try:
                data = sock.recv(65536)
            except ConnectionError:
                data = b""
            if not data:
                sel.unregister(sock)
                sock.close()
                continue
            buf += data
            reply = answer(buf)
            if reply:
                sock.send(reply)  # small answers to a client that waits: no partial sends


if __name__ == "__main__":
    main()
