"""The server side of a WebSocket connection (RFC 6455), sans I/O: bytes in, events out; calls
in, bytes out.

The opening handshake is checked on the HTTP request (:func:`check_handshake`,
:func:`accept_key`, :func:`parse_subprotocols`, :func:`parse_extensions`); after the 101 the
connection's bytes go to a :class:`WebSocketProtocol`:

>>> ws = WebSocketProtocol()
>>> ws.receive_data(bytes.fromhex("818537fa213d7f9f4d5158"))   # a masked text frame, "Hello"
>>> ws.next_event(), ws.next_event()
(Text('Hello'), None)
>>> ws.send_text("Hi")
b'\\x81\\x02Hi'
>>> ws.receive_data(bytes.fromhex("88823a2b4c5d39c3"))         # the client closes: 1000
>>> ws.next_event(), ws.data_to_send(), ws.state, ws.should_close_transport
(Close(code=1000, reason=''), b'\\x88\\x02\\x03\\xe8', <State.CLOSED: 'closed'>, True)

The protocol knows no socket, no thread and no clock (``now`` is passed in where a deadline
is set or checked). Everything client input can grow is bounded: the unparsed input is at most
what the last ``receive_data`` brought plus a partial frame header once ``next_event`` has
returned None; a message is at most ``max_message`` bytes, refused (1009) from the frame
header that would pass it, before its payload is read (and, compressed, while it inflates);
control payloads are at most 125 bytes; of unanswered pings only the latest is answered
(RFC 6455 5.5.3). Parsing is linear: a payload is unmasked as it arrives and never re-read;
UTF-8 is checked incrementally, so bad text fails at its first bad fragment.

Lengths must be encoded minimally (RFC 6455 5.2, "the minimal number of bytes MUST be used"):
a frame that does not is a protocol error (1002), as in wsproto; websockets accepts it. There
is no legitimate client that sends one, and accepting two spellings of one length buys nothing.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import enum
import hashlib
import re
import struct
import zlib

import attrs

# absolute, so that pytest's --doctest-modules imports this file even before
# clos_web/ws/__init__.py exists (a namespace package until then)
from .deflate import PerMessageDeflate, compress_message

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
INFINITY = float("inf")

# --------------------------------------------------------------------------------------------
# The opening handshake (RFC 6455 section 4.2.1)


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value answering a ``Sec-WebSocket-Key``.

    >>> accept_key("dGhlIHNhbXBsZSBub25jZQ==")
    's3pPLMBiTxaQ9kYGzzhZRbK+xOo='
    """
    return base64.b64encode(hashlib.sha1((key + GUID).encode("ascii")).digest()).decode()


def check_handshake(method: str, headers, version: str = "HTTP/1.1") -> tuple[int, str] | None:
    """None when a request is a valid WebSocket opening handshake, else ``(status, reason)``:
    426 when ``Sec-WebSocket-Version`` is missing or not 13 (answer it with
    ``Sec-WebSocket-Version: 13``), 400 for anything else.

    ``headers`` is a request's ``headers`` (lower-case names, repeated fields joined with
    ``", "``, as :class:`~clos_web.http.parser.Request` has them) or its ``raw_headers`` (a
    list of ``(name, value)``). Checked: GET, HTTP/1.1, ``Upgrade`` has the token
    ``websocket`` and ``Connection`` the token ``upgrade`` (case-insensitive),
    ``Sec-WebSocket-Key`` is base64 of 16 bytes, and ``Sec-WebSocket-Extensions`` and
    ``Sec-WebSocket-Protocol`` follow their grammar when present.

    >>> check_handshake("GET", {"upgrade": "websocket", "connection": "Upgrade",
    ...     "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==", "sec-websocket-version": "13"})
    >>> check_handshake("GET", {"upgrade": "websocket", "connection": "Upgrade"})
    (426, 'Sec-WebSocket-Version must be 13')
    """
    if method != "GET":
        return 400, "a WebSocket handshake is a GET"
    if version != "HTTP/1.1":
        return 400, "WebSocket needs HTTP/1.1"
    if not _has_token(_field(headers, "upgrade"), "websocket"):
        return 400, "Upgrade: websocket missing"
    if not _has_token(_field(headers, "connection"), "upgrade"):
        return 400, "Connection: Upgrade missing"
    if _field(headers, "sec-websocket-version") != "13":
        return 426, "Sec-WebSocket-Version must be 13"
    key = _field(headers, "sec-websocket-key")
    if key is None or len(key) != 24:
        return 400, "bad Sec-WebSocket-Key"
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            return 400, "bad Sec-WebSocket-Key"
    except binascii.Error:
        return 400, "bad Sec-WebSocket-Key"
    value = _field(headers, "sec-websocket-extensions")
    if value is not None and not _EXTENSION_LIST.fullmatch(value) and value.strip(" \t"):
        return 400, "bad Sec-WebSocket-Extensions"
    value = _field(headers, "sec-websocket-protocol")
    if value is not None and not _TOKEN_LIST.fullmatch(value) and value.strip(" \t"):
        return 400, "bad Sec-WebSocket-Protocol"
    return None


def parse_subprotocols(headers) -> list[str]:
    """The subprotocols a client offers (``Sec-WebSocket-Protocol``, ``1#token``), in its
    order of preference; ``[]`` without the field. ``ValueError`` when the field is malformed
    (:func:`check_handshake` refuses those requests).

    >>> parse_subprotocols({"sec-websocket-protocol": "chat.v2, chat"})
    ['chat.v2', 'chat']
    """
    value = _field(headers, "sec-websocket-protocol")
    if value is None or not value.strip(" \t"):
        return []
    if not _TOKEN_LIST.fullmatch(value):
        raise ValueError("malformed Sec-WebSocket-Protocol")
    return _TOKEN.findall(value)


def parse_extensions(headers) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """The extensions a client offers (``Sec-WebSocket-Extensions``, RFC 6455 9.1) in its
    order: ``[(name, [(param, value or None), ...]), ...]``, quoted values unquoted. ``[]``
    without the field; ``ValueError`` when it is malformed (:func:`check_handshake` refuses
    those requests). Linear time; as long as the header (bounded by the HTTP limits).

    >>> parse_extensions({"sec-websocket-extensions":
    ...                   'permessage-deflate; client_max_window_bits, foo; bar="baz"'})
    [('permessage-deflate', [('client_max_window_bits', None)]), ('foo', [('bar', 'baz')])]
    """
    value = _field(headers, "sec-websocket-extensions")
    if value is None or not value.strip(" \t"):
        return []
    if not _EXTENSION_LIST.fullmatch(value):
        raise ValueError("malformed Sec-WebSocket-Extensions")
    offers = []
    for m in _EXTENSION.finditer(value):
        params = []
        for p in _PARAM.finditer(m.group(2)):
            name, arg = p.groups()
            if arg is not None and arg[0] == '"':
                arg = _QUOTED_PAIR.sub(r"\1", arg[1:-1])
                if not _TOKEN.fullmatch(arg):  # RFC 6455 9.1: a quoted value is a token
                    raise ValueError("malformed Sec-WebSocket-Extensions")
            params.append((name, arg))
        offers.append((m.group(1), params))
    return offers


def _field(headers, name: str) -> str | None:
    """Field ``name`` (lower case) of a request's ``headers`` mapping or ``raw_headers``."""
    get = getattr(headers, "get", None)
    if get is not None:
        return get(name)
    values = [value for field, value in headers if field.lower() == name]
    return ", ".join(values) if values else None


def _has_token(value: str | None, token: str) -> bool:
    return value is not None and any(t.strip(" \t").lower() == token for t in value.split(","))


# RFC 6455 9.1 and RFC 9110 5.6, as named regex pieces. Linear: neighbouring pieces are
# separated by characters the classes on either side exclude, and every quantifier is
# possessive (as clos_web.http.grammar).
#  OWS            = *( SP / HTAB )
OWS = r"[ \t]*+"
#  token          = 1*tchar
token = r"[-!#$%&'*+.^_`|~0-9A-Za-z]++"
#  quoted-string  = DQUOTE *( qdtext / quoted-pair ) DQUOTE
#  qdtext         = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
#  quoted-pair    = "\" ( HTAB / SP / VCHAR / obs-text )
quoted_string = r'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]++|\\[\t \x21-\x7e\x80-\xff])*+"'
#  extension-param = token [ "=" (token / quoted-string) ]    (quoted: a token once unquoted)
extension_param = rf"{token}(?:{OWS}={OWS}(?:{token}|{quoted_string}))?+"
#  extension      = extension-token *( ";" extension-param )
extension = rf"{token}(?:{OWS};{OWS}{extension_param})*+"


#  1#element      = [ element ] *( OWS "," OWS [ element ] ), at least one element
#                   (RFC 9110 5.6.1.2: empty elements are accepted and ignored)
def _list_of(element: str) -> str:
    return rf"{OWS}(?:,{OWS})*+{element}(?:{OWS},(?:{OWS}{element})?+)*+{OWS}"


_EXTENSION_LIST = re.compile(_list_of(extension))
_TOKEN_LIST = re.compile(_list_of(token))
_EXTENSION = re.compile(rf"({token})((?:{OWS};{OWS}{extension_param})*+)")
_PARAM = re.compile(rf";{OWS}({token})(?:{OWS}={OWS}({token}|{quoted_string}))?+")
_TOKEN = re.compile(token)
_QUOTED_PAIR = re.compile(r"\\(.)")


# --------------------------------------------------------------------------------------------
# Frames and events


class Opcode(enum.IntEnum):
    """Frame opcodes (RFC 6455 5.2)."""

    CONT = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


_CONT, _TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def encode_frame(opcode: int, payload, *, fin: bool = True, rsv1: bool = False) -> bytes:
    """One unmasked server-to-client frame: the length in its minimal encoding, then
    ``payload`` (bytes-like). Fan-out builds it once per event and sends the same bytes to
    every subscriber (see :class:`SharedMessage`).

    >>> encode_frame(Opcode.TEXT, b"Hello")
    b'\\x81\\x05Hello'
    >>> encode_frame(Opcode.BINARY, b"x" * 300)[:4]
    b'\\x82~\\x01,'
    """
    n = len(payload)
    b0 = opcode | 0x80 if fin else opcode
    if rsv1:
        b0 |= 0x40
    if n < 126:
        return bytes((b0, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", b0, 126, n) + payload
    return struct.pack("!BBQ", b0, 127, n) + payload


def _clip(value) -> str:
    """A short repr of a payload: its start and its size."""
    if len(value) <= 40:
        return repr(value)
    return f"{value[:32]!r}... ({len(value)} {'chars' if isinstance(value, str) else 'bytes'})"


class _Payload:
    """What the messages and control frames below share: a short repr of ``data``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({_clip(self.data)})"


@attrs.frozen(repr=False)
class Text(_Payload):
    """A whole text message from the peer (its fragments joined, its UTF-8 checked)."""

    data: str


@attrs.frozen(repr=False)
class Binary(_Payload):
    """A whole binary message from the peer."""

    data: bytes


@attrs.frozen(repr=False)
class Ping(_Payload):
    """A ping from the peer. Its pong is already queued (``data_to_send``)."""

    data: bytes


@attrs.frozen(repr=False)
class Pong(_Payload):
    """A pong from the peer (the answer to our ping, or unsolicited: a heartbeat)."""

    data: bytes


@attrs.frozen
class Close:
    """The peer's close frame: its code (1005 when it sent none) and reason. When it comes
    first, our answer (the same code) is already queued (``data_to_send``)."""

    code: int
    reason: str


class State(enum.Enum):
    """Where a :class:`WebSocketProtocol` stands."""

    OPEN = "open"        # messages flow both ways
    CLOSING = "closing"  # we sent a close and wait for the peer's (until ``deadline``)
    CLOSED = "closed"    # the closing handshake is over, or the connection failed or ended


# (module names for the members: a State.X lookup goes through EnumType's __getattr__ in 3.11)
_OPEN, _CLOSING, _CLOSED = State


class ConnectionClosed(Exception):
    """A message was sent on a WebSocket that is closing or closed."""


def _valid_close_code(code: int) -> bool:
    """Codes a close frame may carry (RFC 6455 7.4, and 1012-1014 registered with IANA since:
    service restart, try again later, bad gateway); 1004-1006 and 1015 never go on the wire."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def _surrogate_pending(decoder) -> bool:
    """Whether the decoder holds the start of a UTF-16 surrogate (``ED A0``-``ED BF``): no
    byte can make it valid, but CPython's decoder says so only at the next byte. (It is the
    only such prefix: every other impossible one raises at once.)"""
    pending = decoder.getstate()[0]
    return len(pending) >= 2 and pending[0] == 0xED and pending[1] >= 0xA0


def _unmask(data, mask: bytes) -> bytes:
    """``data`` XOR the 4-byte ``mask`` repeated: one pass over big integers (linear, and
    about 20 times faster than a loop over bytes)."""
    n = len(data)
    return (int.from_bytes(data, "little")
            ^ int.from_bytes((mask * ((n >> 2) + 1))[:n], "little")).to_bytes(n, "little")


# --------------------------------------------------------------------------------------------
# The connection


@attrs.define(slots=True, eq=False, repr=False)
class WebSocketProtocol:
    """The server side of one WebSocket connection, without its socket.

    Input: ``receive_data(bytes)`` (``b""`` for EOF), then ``next_event()`` until it returns
    None: :class:`Text`, :class:`Binary`, :class:`Ping`, :class:`Pong`, :class:`Close`. Then
    ``data_to_send()``: what the protocol answers by itself (the pong to the latest ping, the
    close frame echoing the peer's or failing the connection); send it. Once
    ``should_close_transport`` is True, send that last output, then close the socket: the
    closing handshake is over, or the peer failed the protocol, or it went away.

    Output: ``send_text``, ``send_binary``, ``send_shared``, ``ping``, ``pong`` and ``close``
    *return* the frame's bytes (nothing is queued; write them in the order you make them); they
    raise :class:`ConnectionClosed` unless the state is ``OPEN``. Our messages are compressed
    standalone when ``deflate`` was negotiated (see :mod:`clos_web.ws.deflate`).

    ``close_code`` is None while the connection lives; then the code it ended with: the peer's
    (1005 if its close had none), ours when we failed the connection (``failure`` says why:
    1002 protocol error, 1007 invalid data, 1009 too big), or 1006 when it ended without a
    close frame (EOF, or no answer to our close by ``deadline``: see ``timed_out``).

    >>> ws = WebSocketProtocol(max_message=4)
    >>> ws.receive_data(b"\\x82\\x85abcd" + bytes(5))   # 5 bytes: over the limit
    >>> ws.next_event(), ws.close_code, ws.failure
    (None, 1009, 'message over 4 bytes')
    >>> ws.data_to_send()
    b'\\x88\\x16\\x03\\xf1message over 4 bytes'
    """

    max_message: int = 16 * 2**20
    deflate: PerMessageDeflate | None = None
    close_timeout: float = 10.0
    state: State = attrs.field(init=False, default=_OPEN)
    close_code: int | None = attrs.field(init=False, default=None)
    close_reason: str = attrs.field(init=False, default="")
    failure: str | None = attrs.field(init=False, default=None)
    should_close_transport: bool = attrs.field(init=False, default=False)
    deadline: float = attrs.field(init=False, default=INFINITY)
    _in: bytearray = attrs.field(init=False, factory=bytearray)
    _eof: bool = attrs.field(init=False, default=False)
    _pong: bytes | None = attrs.field(init=False, default=None)      # answer to the last ping
    _close_out: bytes | None = attrs.field(init=False, default=None)  # our close frame, queued
    # the frame being read
    _op: int = attrs.field(init=False, default=-1)  # -1: between frames, a header is awaited
    _fin: bool = attrs.field(init=False, default=False)
    _left: int = attrs.field(init=False, default=0)   # payload bytes still to come
    _mask: bytes = attrs.field(init=False, default=b"")  # rotated as the payload is read
    _control: bytes = attrs.field(init=False, default=b"")
    # the message being read
    _msg: int = attrs.field(init=False, default=0)   # _TEXT or _BINARY; 0 between messages
    _compressed: bool = attrs.field(init=False, default=False)
    _finished: bool = attrs.field(init=False, default=False)  # its inflater was finished
    _size: int = attrs.field(init=False, default=0)  # bytes (inflated) so far
    _wire: int = attrs.field(init=False, default=0)  # compressed bytes so far
    _first: bytes | None = attrs.field(init=False, default=None)  # its first part
    _buf: bytearray | None = attrs.field(init=False, default=None)  # all parts, past one
    _decoder: object = attrs.field(init=False, default=None)
    _checking: bool = attrs.field(init=False, default=False)  # its UTF-8 checked part by part

    def __repr__(self) -> str:
        msg = ""
        if self._msg:
            msg = f" message={'TEXT' if self._msg == _TEXT else 'BINARY'} {self._size} bytes"
        code = f" code={self.close_code}" if self.close_code is not None else ""
        return f"<WebSocketProtocol {self.state.name}{code} buffered={len(self._in)}{msg}>"

    @property
    def buffered(self) -> int:
        """Bytes received and not parsed yet."""
        return len(self._in)

    # -- input ---------------------------------------------------------------------------

    def receive_data(self, data) -> None:
        """Take bytes that arrived (bytes, bytearray or memoryview); ``b""``: the peer closed
        its side (EOF). Once the connection is closed, input is discarded (RFC 6455 1.4)."""
        if self.state is _CLOSED:
            return
        if not data:
            self._eof = True
            return
        self._in += data

    def next_event(self):
        """The next event (:class:`Text`, :class:`Binary`, :class:`Ping`, :class:`Pong`,
        :class:`Close`), or None when more bytes are needed or the connection is closed.
        A protocol violation fails the connection (its close frame is queued) and gives None.
        """
        buf = self._in
        while self.state is not _CLOSED:
            if self._op < 0:
                # the common case first: a short unfragmented text or binary frame, whole in
                # the buffer, between messages (RSV clear: b0 is exactly 0x81 or 0x82)
                b0 = buf[0] if buf else 0
                if (b0 == 0x81 or b0 == 0x82) and not self._msg:
                    b1 = buf[1] if len(buf) > 1 else 0
                    end = b1 - 122  # 0x80 | length: the header is 6 bytes, the frame 6 + length
                    if 6 <= end < 132 and end <= len(buf) and end - 6 <= self.max_message:
                        payload = _unmask(buf[6:end], bytes(buf[2:6]))
                        del buf[:end]
                        if b0 == 0x82:
                            return Binary(payload)
                        try:
                            return Text(str(payload, "utf-8"))
                        except UnicodeDecodeError:
                            self._fail(1007, "invalid UTF-8")
                            return None
                if not self._header(buf):
                    break
            left = self._left
            if left:
                n = len(buf)
                if not n:
                    break
                if n > left:
                    n = left
                chunk = _unmask(buf[:n], self._mask)
                del buf[:n]
                self._left = left = left - n
                if n & 3:
                    r = n & 3
                    mask = self._mask
                    self._mask = mask[r:] + mask[:r]
                if self._op < 8:
                    self._payload(chunk, self._fin and not left)
                else:
                    self._control += chunk
                if left or self.state is _CLOSED:
                    break
            event = self._frame_end()
            if event is not None:
                return event
        if self._eof and self.state is not _CLOSED:
            self._ended()
        return None

    def data_to_send(self) -> bytes:
        """What the protocol answers by itself, to send now: the pong to the latest ping
        (RFC 6455 5.5.3 allows answering only the latest), then the close frame answering the
        peer's close or failing the connection. ``b""`` when there is nothing."""
        out = b""
        if self._pong is not None:
            out, self._pong = self._pong, None
        if self._close_out is not None:
            out += self._close_out
            self._close_out = None
        return out

    # -- output --------------------------------------------------------------------------

    def send_text(self, data: str) -> bytes:
        """The frame of text message ``data`` (compressed when negotiated and worth it)."""
        self._check_open()
        return self._message(_TEXT, data.encode())

    def send_binary(self, data) -> bytes:
        """The frame of binary message ``data`` (bytes-like)."""
        self._check_open()
        return self._message(_BINARY, data)

    def send_shared(self, message: SharedMessage) -> bytes:
        """The frame of a message shared by many connections (fan-out): the same bytes object
        for every connection with the same wire form."""
        self._check_open()
        return message.frame(self)

    def ping(self, data=b"") -> bytes:
        """A ping frame (``data`` at most 125 bytes); its pong comes back as a :class:`Pong`."""
        self._check_open()
        if len(data) > 125:
            raise ValueError("a ping carries at most 125 bytes")
        return encode_frame(_PING, data)

    def pong(self, data=b"") -> bytes:
        """An unsolicited pong frame (a one-way heartbeat), ``data`` at most 125 bytes."""
        self._check_open()
        if len(data) > 125:
            raise ValueError("a pong carries at most 125 bytes")
        return encode_frame(_PONG, data)

    def close(self, code: int | None = 1000, reason: str = "", now: float | None = None) -> bytes:
        """Start the closing handshake: the close frame to send (after anything the protocol
        had queued), ``b""`` if the connection is not open. ``code`` None sends no code.
        With ``now``, the peer has until ``deadline = now + close_timeout`` to answer (see
        :meth:`timed_out`); the state is ``CLOSING`` until it does."""
        if self.state is not _OPEN:
            return b""
        if code is None:
            if reason:
                raise ValueError("a close reason needs a code")
            payload = b""
        else:
            if not _valid_close_code(code):
                raise ValueError(f"{code} is not a close code to send")
            payload = code.to_bytes(2, "big") + reason.encode()
            if len(payload) > 125:
                raise ValueError("a close reason has at most 123 bytes")
        self.state = _CLOSING
        if now is not None:
            self.deadline = now + self.close_timeout
        return self.data_to_send() + encode_frame(_CLOSE, payload)

    # -- time ----------------------------------------------------------------------------

    def timed_out(self, now: float) -> bool:
        """Whether ``deadline`` passed: the peer did not answer our close in time. The
        connection is then ``CLOSED`` (1006) and its transport should be closed."""
        if self.state is _CLOSING and now >= self.deadline:
            self._ended()
            return True
        return False

    # -- internals -----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.state is not _OPEN:
            raise ConnectionClosed(f"the WebSocket is {self.state.value}")

    def _message(self, opcode: int, payload) -> bytes:
        deflate = self.deflate
        if deflate is not None:
            data = deflate.compress(payload)
            if data is not None:
                return encode_frame(opcode, data, rsv1=True)
        return encode_frame(opcode, payload)

    def _header(self, buf: bytearray) -> bool:
        """Read a frame header from ``buf`` and check it: True when the frame's payload may
        be read; False when more bytes are needed, or when the frame fails the connection."""
        n = len(buf)
        if n < 2:
            return False
        b0, b1 = buf[0], buf[1]
        if not b1 & 0x80:
            return self._fail(1002, "client frames must be masked")
        length = b1 & 0x7F
        size = 6 if length < 126 else 8 if length == 126 else 14
        if n < size:
            return False
        op = b0 & 0x0F
        rsv = b0 & 0x70
        fin = b0 & 0x80
        if length == 126:
            length = (buf[2] << 8) | buf[3]
            if length < 126:
                return self._fail(1002, "frame length not minimally encoded")
        elif length == 127:
            length = int.from_bytes(buf[2:10], "big")
            if length >> 63:
                return self._fail(1002, "frame length with its top bit set")
            if length < 65536:
                return self._fail(1002, "frame length not minimally encoded")
        if op >= 8:
            if op > _PONG:
                return self._fail(1002, f"unknown opcode {op:#x}")
            if not fin:
                return self._fail(1002, "fragmented control frame")
            if length > 125:
                return self._fail(1002, "control frame over 125 bytes")
            if rsv:
                return self._fail(1002, "reserved bits set on a control frame")
        else:
            if op > _BINARY:
                return self._fail(1002, f"unknown opcode {op:#x}")
            if op == _CONT:
                if not self._msg:
                    return self._fail(1002, "continuation frame without a message")
                if rsv:
                    return self._fail(1002, "reserved bits set on a continuation frame")
            else:
                if self._msg:
                    return self._fail(1002, "new message inside a fragmented one")
                if rsv and (rsv != 0x40 or self.deflate is None):
                    return self._fail(1002, "reserved bits set without an extension")
                self._msg = op
                self._compressed = bool(rsv)
            if self._compressed:
                wire = self._wire + length
                limit = self.max_message
                if wire > limit + (limit >> 3) + 1024:  # deflate can grow incompressible data
                    return self._fail(1009, f"message over {limit} bytes")
                self._wire = wire
            else:
                size_ = self._size + length
                if size_ > self.max_message:
                    return self._fail(1009, f"message over {self.max_message} bytes")
                self._size = size_
        self._mask = bytes(buf[size - 4:size])
        del buf[:size]
        self._op = op
        self._fin = bool(fin)
        self._left = length
        return True

    def _payload(self, chunk: bytes, last: bool) -> None:
        """A piece of a data frame's payload, unmasked; ``last``: the message ends with it.
        A compressed message is inflated here, within what ``max_message`` still allows."""
        if self._compressed:
            deflate = self.deflate
            allowed = self.max_message - self._size
            try:
                out = deflate.inflate(chunk, allowed + 1)
                if last and len(out) <= allowed:
                    out += deflate.finish(allowed + 1 - len(out))
                    self._finished = True
            except zlib.error:
                self._fail(1007, "invalid compressed data")
                return
            if len(out) > allowed:
                self._fail(1009, f"message over {self.max_message} bytes")
                return
            self._size += len(out)
            if not out and not last:
                return
            chunk = out
        self._part(chunk, last)

    def _part(self, data: bytes, last: bool) -> None:
        """A piece of a message's data: text is checked now unless it is the whole message
        (decoded once at its end), so bad UTF-8 fails at the first bad fragment; then kept."""
        if self._msg == _TEXT and (not last or self._first is not None
                                   or self._buf is not None):
            decoder = self._decoder
            if not self._checking:
                if decoder is None:
                    decoder = self._decoder = codecs.getincrementaldecoder("utf-8")()
                else:
                    decoder.reset()
                self._checking = True
            try:
                decoder.decode(data)
            except UnicodeDecodeError:
                self._fail(1007, "invalid UTF-8")
                return
            if data and data[-1] & 0x80 and _surrogate_pending(decoder):
                self._fail(1007, "invalid UTF-8")
                return
        if not data:
            return
        if self._buf is not None:
            self._buf += data
        elif self._first is None:
            self._first = data
        else:
            self._buf = bytearray(self._first)
            self._buf += data
            self._first = None

    def _frame_end(self):
        """A frame was read whole: its event, if it makes one."""
        op = self._op
        self._op = -1
        if op < 8:
            return self._message_end() if self._fin else None
        payload = self._control
        self._control = b""
        if op == _PING:
            if self.state is _OPEN:
                self._pong = encode_frame(_PONG, payload)
            return Ping(payload)
        if op == _PONG:
            return Pong(payload)
        return self._peer_close(payload)

    def _message_end(self):
        if self._compressed and not self._finished:  # it ended with an empty frame
            allowed = self.max_message - self._size
            try:
                out = self.deflate.finish(allowed + 1)
            except zlib.error:
                return self._fail(1007, "invalid compressed data") or None
            if len(out) > allowed:
                return self._fail(1009, f"message over {self.max_message} bytes") or None
            self._size += len(out)
            self._part(out, False)
            if self.state is _CLOSED:
                return None
        data = self._buf if self._buf is not None else self._first or b""
        if self._msg == _TEXT:
            try:
                if self._checking:
                    self._decoder.decode(b"", True)
                    event = Text(data.decode())
                else:
                    event = Text(str(data, "utf-8"))
            except UnicodeDecodeError:
                return self._fail(1007, "invalid UTF-8") or None
        else:
            event = Binary(bytes(data) if self._buf is not None else data)
        self._reset_message()
        return event

    def _reset_message(self) -> None:
        self._msg = 0
        self._compressed = self._finished = self._checking = False
        self._size = self._wire = 0
        self._first = self._buf = None

    def _peer_close(self, payload: bytes):
        if len(payload) == 1:
            return self._fail(1002, "close frame of 1 byte") or None
        if payload:
            code = (payload[0] << 8) | payload[1]
            if not _valid_close_code(code):
                return self._fail(1002, f"invalid close code {code}") or None
            try:
                reason = payload[2:].decode()
            except UnicodeDecodeError:
                return self._fail(1007, "close reason is not UTF-8") or None
        else:
            code, reason = 1005, ""
        if self.state is _OPEN:  # the peer closes first: echo its close (RFC 6455 5.5.1)
            self._close_out = encode_frame(_CLOSE, payload)
        self._closed(code, reason)
        return Close(code, reason)

    def _fail(self, code: int, reason: str) -> bool:
        """Fail the connection (RFC 6455 7.1.7): our close frame says why; nothing more is
        read. Returns False (for ``_header``)."""
        if self.state is _OPEN:
            self._close_out = encode_frame(_CLOSE, code.to_bytes(2, "big")
                                           + reason.encode()[:123])
        self._pong = None
        self._closed(code, reason)
        self.failure = reason
        return False

    def _ended(self) -> None:
        """The connection ended without a closing handshake: EOF, or no answer in time."""
        self._pong = None
        self._closed(1006, "")

    def _closed(self, code: int, reason: str) -> None:
        self.state = _CLOSED
        self.close_code = code
        self.close_reason = reason
        self.should_close_transport = True
        self.deadline = INFINITY
        self._in.clear()
        self._op = -1
        self._control = b""
        self._reset_message()
        if self.deflate is not None:
            self.deflate.reset()


@attrs.define(slots=True, eq=False, repr=False)
class SharedMessage:
    """One message for many connections (fan-out): its frame is built once per wire form and
    the same bytes go to every connection with that form: one plain frame, and one compressed
    frame per ``server_max_window_bits`` in use (15 unless a client asked for less).
    Compressed frames are standalone (see :mod:`clos_web.ws.deflate`), so they suit every
    connection that negotiated permessage-deflate, whatever its context settings.

    >>> event = SharedMessage.text('{"event": "move"}')
    >>> a, b = WebSocketProtocol(), WebSocketProtocol()
    >>> a.send_shared(event) is b.send_shared(event), a.send_shared(event)
    (True, b'\\x81\\x11{"event": "move"}')
    """

    payload: bytes
    opcode: int = Opcode.TEXT
    _plain: bytes | None = attrs.field(init=False, default=None)
    _deflated: dict | None = attrs.field(init=False, default=None)  # window bits -> frame

    @classmethod
    def text(cls, data: str) -> SharedMessage:
        return cls(data.encode(), Opcode.TEXT)

    @classmethod
    def binary(cls, data) -> SharedMessage:
        return cls(bytes(data), Opcode.BINARY)

    def __repr__(self) -> str:
        return f"<SharedMessage {Opcode(self.opcode).name} {_clip(self.payload)}>"

    def frame(self, ws: WebSocketProtocol) -> bytes:
        """The frame for connection ``ws`` (its state is not checked: see
        :meth:`WebSocketProtocol.send_shared`)."""
        deflate = ws.deflate
        if deflate is None or len(self.payload) < deflate.min_size:
            return self.plain_frame()
        bits = deflate.server_max_window_bits
        table = self._deflated
        if table is None:
            table = self._deflated = {}
        frame = table.get(bits)
        if frame is None:
            data = compress_message(self.payload, bits)
            if len(data) < len(self.payload):
                frame = encode_frame(self.opcode, data, rsv1=True)
            else:
                frame = self.plain_frame()
            table[bits] = frame
        return frame

    def plain_frame(self) -> bytes:
        """The uncompressed frame (made once, then the same bytes object)."""
        plain = self._plain
        if plain is None:
            plain = self._plain = encode_frame(self.opcode, self.payload)
        return plain


__all__ = [
    "GUID", "accept_key", "check_handshake", "parse_subprotocols", "parse_extensions",
    "Opcode", "encode_frame", "Text", "Binary", "Ping", "Pong", "Close", "State",
    "ConnectionClosed", "WebSocketProtocol", "SharedMessage",
]
