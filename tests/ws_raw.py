"""A tiny raw-frame WebSocket client for conformance tests (RFC 6455, RFC 7692).

It builds any frame, valid or not, sends it whole or in chunks, and reads the server's frames
with a deadline: every read either returns, raises ``TimeoutError`` (the server hung) or
``EOFError`` (the server closed the TCP connection). Nothing in here is lenient on the server's
behalf: a masked server frame or a bad ``Sec-WebSocket-Accept`` is an ``AssertionError``.

Example (``port`` of a server echoing on ``/ws-echo``)::

    client = WSClient.connect("127.0.0.1", port, "/ws-echo")
    client.send_frame(OP_TEXT, b"hi")
    assert client.read_message() == Message(OP_TEXT, b"hi")
    client.send_close(1000)
    assert client.expect_close(1000, reply=False).code == 1000
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import time
import zlib
from typing import NamedTuple

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
CONTROL_OPCODES = frozenset({OP_CLOSE, OP_PING, OP_PONG})
RSV1, RSV2, RSV3 = 0b100, 0b010, 0b001

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
DEFLATE_TAIL = b"\x00\x00\xff\xff"  # what RFC 7692 strips from the end of each message
MAX_HEAD = 64 * 1024  # a handshake response head larger than this is a failure

TIMEOUT = 5.0


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key`` (RFC 6455 §4.2.2).

    >>> accept_key("dGhlIHNhbXBsZSBub25jZQ==")
    's3pPLMBiTxaQ9kYGzzhZRbK+xOo='
    """
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + GUID).digest()).decode("ascii")


def new_key() -> str:
    """A fresh random ``Sec-WebSocket-Key``: base64 of 16 random bytes."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


def mask_bytes(payload: bytes, key: bytes) -> bytes:
    """``payload`` XOR the repeated 4-byte ``key`` (masking and unmasking are the same).

    >>> mask_bytes(mask_bytes(b"hello", b"abcd"), b"abcd")
    b'hello'
    """
    n = len(payload)
    if n == 0:
        return b""
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


def frame_bytes(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0,
                mask: bool = True, mask_key: bytes | None = None,
                length: int | None = None) -> bytes:
    """One frame on the wire. ``rsv`` is the 3-bit RSV1..RSV3 field; ``length`` claims a payload
    length other than ``len(payload)`` (only the header and the given payload are produced).

    >>> frame_bytes(OP_TEXT, b"Hi", mask=False)
    b'\\x81\\x02Hi'
    >>> frame_bytes(OP_BINARY, b"", fin=False, rsv=RSV1, mask_key=b"\\0\\0\\0\\0")
    b'B\\x80\\x00\\x00\\x00\\x00'
    """
    n = len(payload) if length is None else length
    head = bytearray([(0x80 if fin else 0) | (rsv & 7) << 4 | (opcode & 0xF)])
    mask_bit = 0x80 if mask else 0
    if n < 126:
        head.append(mask_bit | n)
    elif n < 1 << 16:
        head.append(mask_bit | 126)
        head += struct.pack("!H", n)
    else:
        head.append(mask_bit | 127)
        head += struct.pack("!Q", n)
    if not mask:
        return bytes(head) + payload
    key = os.urandom(4) if mask_key is None else mask_key
    return bytes(head) + key + mask_bytes(payload, key)


def close_payload(code: int | None = None, reason: bytes = b"") -> bytes:
    """The payload of a close frame: a 2-byte code then the reason bytes (empty without code).

    >>> close_payload(1000, b"bye")
    b'\\x03\\xe8bye'
    """
    return b"" if code is None else struct.pack("!H", code) + reason


class Frame(NamedTuple):
    """A frame read from the server (payload unmasked, not decompressed)."""

    fin: bool
    rsv: int
    opcode: int
    payload: bytes

    @property
    def code(self) -> int | None:
        """The close code of a close frame (None if it has no payload)."""
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    @property
    def reason(self) -> bytes:
        return self.payload[2:]


class Message(NamedTuple):
    """A whole message read from the server (fragments joined, decompressed)."""

    opcode: int
    payload: bytes


class UnexpectedClose(AssertionError):
    """The server sent a close frame where a message or another frame was expected."""

    def __init__(self, frame: Frame):
        super().__init__(f"server closed with code {frame.code} reason {frame.reason!r}")
        self.frame = frame


def handshake_request(host: str, port: int, path: str, *, key: str | None = None,
                      method: str = "GET", version: str | None = "13",
                      upgrade: str | None = "websocket", connection: str | None = "Upgrade",
                      extensions: str | None = None, headers=()) -> bytes:
    """An opening handshake request; ``None`` for a header leaves it out.

    >>> handshake_request("h", 1, "/ws", key="k", extensions=None).split(b"\\r\\n")[:3]
    [b'GET /ws HTTP/1.1', b'Host: h:1', b'Upgrade: websocket']
    """
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
    if upgrade is not None:
        lines.append(f"Upgrade: {upgrade}")
    if connection is not None:
        lines.append(f"Connection: {connection}")
    if key is not None:
        lines.append(f"Sec-WebSocket-Key: {key}")
    if version is not None:
        lines.append(f"Sec-WebSocket-Version: {version}")
    if extensions is not None:
        lines.append(f"Sec-WebSocket-Extensions: {extensions}")
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def parse_head(head: bytes):
    """``(status, headers)`` of a response head (headers: lower-case name → list of values)."""
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return status, headers


def header_tokens(headers, name: str) -> list[str]:
    """The comma-separated tokens of header ``name`` over all its lines, lower-cased."""
    return [t.strip().lower() for v in headers.get(name, []) for t in v.split(",") if t.strip()]


def deflate_message(payload: bytes, wbits: int = 15) -> bytes:
    """``payload`` compressed as one permessage-deflate message (RFC 7692 §7.2.1).

    >>> zlib.decompressobj(-15).decompress(deflate_message(b"abc" * 9) + DEFLATE_TAIL)
    b'abcabcabcabcabcabcabcabcabc'
    """
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -wbits)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(DEFLATE_TAIL)
    return data[:-4]


def deflate_zeros(mebibytes: int) -> bytes:
    """A permessage-deflate message that inflates to ``mebibytes`` MiB of zeros, built from
    one compressed MiB repeated (a full flush makes each MiB independent of the ones before),
    so a decompression bomb of 1 GiB costs about 1 MiB and no 1 GiB compression here."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = bytes(1 << 20)
    first = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    rest = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    return (first + rest * (mebibytes - 1))[:-4]


class WSClient:
    """A client over one TCP connection whose opening handshake succeeded."""

    def __init__(self, sock: socket.socket, leftover: bytes = b"", headers=None):
        self.sock = sock
        self.headers = headers or {}
        self.buf = bytearray(leftover)
        self.scratch = bytearray(1 << 16)
        self.pings: list[bytes] = []  # server-initiated pings seen (not answered)
        self.trailing = b""  # what came between the server's close frame and its EOF
        self.deflate = self._negotiated_deflate()
        self.inflater = zlib.decompressobj(-15)

    # -- connecting --------------------------------------------------------------------------

    @classmethod
    def connect(cls, host: str, port: int, path: str, *, timeout: float = TIMEOUT,
                extensions: str | None = None, headers=()) -> "WSClient":
        """Connect and complete the opening handshake; assert a 101 with the right accept key."""
        key = new_key()
        sock = open_socket(host, port, timeout)
        try:
            sock.sendall(handshake_request(host, port, path, key=key, extensions=extensions,
                                           headers=headers))
            head, leftover = read_head(sock, timeout)
            status, response_headers = parse_head(head)
            assert status == 101, f"handshake answered {status}: {head!r}"
            assert response_headers.get("sec-websocket-accept") == [accept_key(key)], head
            assert "websocket" in header_tokens(response_headers, "upgrade"), head
            assert "upgrade" in header_tokens(response_headers, "connection"), head
        except BaseException:
            sock.close()
            raise
        return cls(sock, leftover, response_headers)

    def _negotiated_deflate(self) -> dict | None:
        """The permessage-deflate parameters the server accepted, or None."""
        for offer in self.headers.get("sec-websocket-extensions", []):
            for extension in offer.split(","):
                name, *params = [p.strip() for p in extension.split(";")]
                if name.lower() == "permessage-deflate":
                    return dict((p.partition("=")[0].lower(), p.partition("=")[2].strip('"'))
                                for p in params)
        return None

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- sending -----------------------------------------------------------------------------

    def send(self, data: bytes, chunks=None):
        """Send ``data`` whole, or cut at the sizes in ``chunks`` (an int: that size each),
        each piece in its own ``send`` with Nagle off."""
        if chunks is None:
            self.sock.sendall(data)
            return
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sizes = iter(chunks) if not isinstance(chunks, int) else None
        view, pos = memoryview(data), 0
        while pos < len(data):
            size = chunks if sizes is None else next(sizes, len(data) - pos)
            size = max(1, size)
            self.sock.sendall(view[pos:pos + size])
            pos += size

    def send_frame(self, opcode: int, payload: bytes = b"", *, chunks=None, **options):
        """Build a frame (see ``frame_bytes``) and send it (see ``send``)."""
        self.send(frame_bytes(opcode, payload, **options), chunks)

    def send_close(self, code: int | None = 1000, reason: bytes = b""):
        self.send_frame(OP_CLOSE, close_payload(code, reason))

    def send_quietly(self, data: bytes):
        """Send, ignoring a peer that already closed (it may close before reading it all)."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError, socket.timeout, OSError):
            pass

    # -- reading -----------------------------------------------------------------------------

    def _fill(self, deadline: float):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no frame from the server within the timeout")
        self.sock.settimeout(remaining)
        try:
            n = self.sock.recv_into(self.scratch)
        except socket.timeout:
            raise TimeoutError("no frame from the server within the timeout") from None
        except ConnectionResetError:
            raise EOFError("connection reset by the server") from None
        if n == 0:
            raise EOFError("the server closed the TCP connection")
        self.buf += memoryview(self.scratch)[:n]

    def _take(self, n: int, deadline: float) -> bytes:
        while len(self.buf) < n:
            self._fill(deadline)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_frame(self, timeout: float = TIMEOUT, *, skip_pings: bool = True) -> Frame:
        """The next frame. Server-initiated pings are recorded in ``pings`` and skipped."""
        deadline = time.monotonic() + timeout
        while True:
            b0, b1 = self._take(2, deadline)
            assert not b1 & 0x80, "the server masked a frame (RFC 6455 §5.1 forbids it)"
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._take(2, deadline))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._take(8, deadline))[0]
            frame = Frame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0xF, self._take(n, deadline))
            if skip_pings and frame.opcode == OP_PING:
                self.pings.append(frame.payload)
                continue
            return frame

    def read_message(self, timeout: float = TIMEOUT, *, allow_pongs: bool = False) -> Message:
        """The next whole message: fragments joined, a compressed one inflated. A close frame
        raises ``UnexpectedClose``; a pong is an error unless ``allow_pongs``."""
        deadline = time.monotonic() + timeout
        parts, first = [], None
        while True:
            frame = self.read_frame(max(0.0, deadline - time.monotonic()))
            if frame.opcode == OP_CLOSE:
                raise UnexpectedClose(frame)
            if frame.opcode == OP_PONG:
                assert allow_pongs, f"unexpected pong {frame.payload!r}"
                continue
            if first is None:
                assert frame.opcode in (OP_TEXT, OP_BINARY), f"message starts with {frame}"
                first = frame
            else:
                assert frame.opcode == OP_CONT, f"new frame {frame.opcode} inside a message"
                assert frame.rsv == 0, f"RSV {frame.rsv} on a continuation frame"
            parts.append(frame.payload)
            if frame.fin:
                break
        payload = b"".join(parts)
        assert (first.rsv & (RSV2 | RSV3)) == 0, f"RSV {first.rsv:03b} on a message"
        if first.rsv & RSV1:
            assert self.deflate is not None, "RSV1 set without permessage-deflate"
            payload = self.inflate(payload)
        return Message(first.opcode, payload)

    def compress(self, payload: bytes) -> bytes:
        """``payload`` as one compressed message within the window the server allowed us."""
        bits = (self.deflate or {}).get("client_max_window_bits") or "15"
        return deflate_message(payload, int(bits))

    def inflate(self, data: bytes) -> bytes:
        """Inflate one compressed message from the server (context kept across messages)."""
        if self.inflater.eof:  # the server ended a message with a final block
            self.inflater = zlib.decompressobj(-15)
        return self.inflater.decompress(data + DEFLATE_TAIL)

    def expect_close(self, codes=None, *, timeout: float = TIMEOUT, reply: bool = True,
                     allow_data: bool = True) -> Frame:
        """Read until the server's close frame and check its code (an int, a collection of
        ints, or None for any); then, if ``reply``, answer with a close as a client must, and
        check the server closes the TCP connection within ``timeout``. Data frames and pongs
        before the close are skipped if ``allow_data``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                frame = self.read_frame(max(0.0, deadline - time.monotonic()))
            except EOFError:
                raise AssertionError(
                    f"the server closed the TCP connection without a close frame "
                    f"(expected code {codes})") from None
            if frame.opcode == OP_CLOSE:
                break
            assert allow_data, f"expected a close frame, got {frame}"
        if codes is not None:
            wanted = {codes} if isinstance(codes, int) else set(codes)
            assert frame.code in wanted, (
                f"close code {frame.code} (reason {frame.reason!r}), expected {sorted(wanted)}")
        if reply:
            self.send_quietly(frame_bytes(OP_CLOSE, frame.payload[:2]))
        assert self.at_eof(max(0.0, deadline - time.monotonic()) + 1.0), \
            "the server did not close the TCP connection after the closing handshake"
        assert not self.trailing, f"the server sent {self.trailing[:64]!r} after its close frame"
        return frame

    def at_eof(self, timeout: float = TIMEOUT) -> bool:
        """True when the server closes the TCP connection within ``timeout``. Bytes it sends
        meanwhile are kept in ``trailing`` (a server sends nothing after its close frame)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._fill(deadline)
            except EOFError:
                self.trailing, self.buf = bytes(self.buf), bytearray()
                return True
            except TimeoutError:
                self.trailing, self.buf = bytes(self.buf), bytearray()
                return False


def open_socket(host: str, port: int, timeout: float = TIMEOUT) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def read_head(sock: socket.socket, timeout: float = TIMEOUT):
    """``(head, leftover)``: the response head up to the blank line, and the bytes after it."""
    deadline = time.monotonic() + timeout
    data = b""
    while b"\r\n\r\n" not in data:
        assert len(data) <= MAX_HEAD, "response head too large"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no full response head within {timeout} s: {data!r}")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            raise TimeoutError(f"no full response head within {timeout} s: {data!r}") from None
        if not chunk:
            raise EOFError(f"closed before a full response head: {data!r}")
        data += chunk
    head, _, leftover = data.partition(b"\r\n\r\n")
    return head, leftover


def http_exchange(host: str, port: int, request: bytes, timeout: float = TIMEOUT):
    """Send a raw handshake request on a new connection: ``(status, headers, rest)`` where
    ``rest`` is whatever followed the head before the server closed or went quiet."""
    with open_socket(host, port, timeout) as sock:
        sock.sendall(request)
        head, rest = read_head(sock, timeout)
        return (*parse_head(head), rest)
