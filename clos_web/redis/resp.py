"""RESP2, Redis' wire protocol, sans I/O: commands to bytes, bytes to replies.

:func:`encode_command` writes a command as Redis reads it (an array of bulk strings)::

    >>> encode_command("SET", "k", 42)
    b'*3\\r\\n$3\\r\\nSET\\r\\n$1\\r\\nk\\r\\n$2\\r\\n42\\r\\n'

A :data:`Reader` is fed whatever bytes arrived and hands out whole replies, one per
:meth:`~PyReader.gets`, or :data:`NOT_READY` while the next one is incomplete. Replies come back
as Python values: a simple string or a bulk string as ``bytes``, an integer as ``int``, a nil as
``None``, an array as a ``list`` (nested as sent), an error reply as a :class:`ReplyError`
*instance* (returned, not raised: an error answers one command, the connection goes on)::

    >>> reader = PyReader()
    >>> reader.feed(b"+OK\\r\\n:7\\r\\n*2\\r\\n$1\\r\\na\\r\\n$-1\\r\\n-ERR no\\r\\n$5\\r\\nhel")
    >>> [reader.gets() for _ in range(5)]
    [b'OK', 7, [b'a', None], ReplyError('ERR no'), NOT_READY]
    >>> reader.feed(b"lo\\r\\n")
    >>> reader.gets()
    b'hello'

Bad bytes raise :class:`ProtocolError` and leave the reader unusable (close the connection).
One reply may take at most ``max_reply`` bytes (512 MiB by default, Redis' own
``proto-max-bulk-len``): past that, :class:`ProtocolError`, whether the bytes are all there or
still arriving, so a broken or hostile peer cannot grow our memory without bound.

:data:`Reader` is :class:`HiredisReader` (the C parser of the ``hiredis`` package, the
``redis`` extra) when it is importable, else the pure-Python :class:`PyReader`; both have this
interface and give the same values. :class:`PyReader` is linear in its input however it is
split: it keeps its place (an offset into its buffer, the arrays it is filling, where it last
looked for a line end) between feeds, and never parses a byte twice.
"""

from __future__ import annotations

import re

try:
    import hiredis as _hiredis
except ImportError:  # pragma: no cover - the pure-Python reader is used
    _hiredis = None

__all__ = [
    "RedisError", "ReplyError", "ProtocolError", "NOT_READY", "Reader", "PyReader",
    "HiredisReader", "HAVE_HIREDIS", "encode_command", "DEFAULT_MAX_REPLY",
]

DEFAULT_MAX_REPLY = 512 * 1024 * 1024  # Redis' proto-max-bulk-len
HAVE_HIREDIS = _hiredis is not None


class RedisError(Exception):
    """The base of every error of :mod:`clos_web.redis`."""


class ReplyError(RedisError):
    """An error reply from Redis (``-ERR ...``, ``-NOSCRIPT ...``): returned as a reply value,
    not raised by the reader.

    >>> ReplyError("NOSCRIPT No matching script").code
    'NOSCRIPT'
    """

    @property
    def code(self) -> str:
        """The error's first word (``ERR``, ``WRONGTYPE``, ``NOSCRIPT``, ``MOVED``...)."""
        message = self.args[0] if self.args else ""
        return message.split(" ", 1)[0]


class ProtocolError(RedisError):
    """The peer does not speak RESP2, or a reply is over the reader's byte bound."""


class _NotReady:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NOT_READY"

    def __bool__(self) -> bool:
        return False


NOT_READY = _NotReady()
"""What ``gets()`` returns while the next reply is not complete."""


# --------------------------------------------------------------------------------------------
# Writing commands

def _arg(value) -> bytes:
    cls = value.__class__
    if cls is bytes:
        return value
    if cls is str:
        return value.encode()
    if cls is int or cls is float:
        return repr(value).encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return str.encode(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(int(value)).encode()  # an IntEnum's value, not its repr
    if isinstance(value, float):
        return repr(float(value)).encode()
    raise TypeError(f"a Redis argument is str, bytes, int or float, not {cls.__name__}")


def encode_command(*args) -> bytes:
    """The RESP2 bytes of the command ``args`` (each ``str`` (UTF-8), ``bytes``, ``int`` or
    ``float``; ``bool`` and ``None`` are refused with ``TypeError``, so no ``"True"`` or
    ``"None"`` is ever stored by mistake).

    >>> encode_command("GET", b"k\\xff")
    b'*2\\r\\n$3\\r\\nGET\\r\\n$2\\r\\nk\\xff\\r\\n'
    """
    if not args:
        raise TypeError("a command has at least its name")
    parts = [b"*%d\r\n" % len(args)]
    append = parts.append
    for value in args:
        cls = value.__class__
        if cls is str:
            value = value.encode()
        elif cls is int:
            value = b"%d" % value
        elif cls is not bytes:
            value = _arg(value)
        append(b"$%d\r\n%b\r\n" % (len(value), value))
    return b"".join(parts)


# --------------------------------------------------------------------------------------------
# Reading replies

# A RESP integer (RESP2 writes no sign on positives and no leading zeros), 64 bits at most.
_INTEGER = re.compile(rb"0|-?[1-9][0-9]{0,18}")
_INT64 = 1 << 63
_PLUS, _MINUS, _COLON, _DOLLAR, _STAR = b"+-:$*"


def _integer(line, what: str) -> int:
    if len(line) > 20 or _INTEGER.fullmatch(line) is None:
        raise ProtocolError(f"bad {what}: {bytes(line[:24])!r}")
    value = int(line)
    if not -_INT64 <= value < _INT64:
        raise ProtocolError(f"{what} out of range: {value}")
    return value


class PyReader:
    """The pure-Python RESP2 reader: ``feed(data)``, then ``gets()`` until :data:`NOT_READY`.

    ``max_reply`` bounds the bytes of one reply (``ProtocolError`` past it); ``max_depth``
    bounds the nesting of arrays (Redis nests two or three deep).

    >>> reader = PyReader(max_reply=10)
    >>> reader.feed(b"$100\\r\\n")
    >>> reader.gets()
    Traceback (most recent call last):
    ...
    clos_web.redis.resp.ProtocolError: a bulk string of 100 bytes is over the reply bound (10)
    """

    __slots__ = ("max_reply", "max_depth", "_buf", "_pos", "_base", "_scan", "_start",
                 "_bulk", "_stack")

    def __init__(self, max_reply: int = DEFAULT_MAX_REPLY, max_depth: int = 64):
        self.max_reply = max_reply
        self.max_depth = max_depth
        self._buf = bytearray()
        self._pos = 0      # where the next unparsed byte is, in _buf
        self._base = 0     # how many bytes were dropped from _buf's front (absolute offsets)
        self._scan = 0     # no line end before this index: already searched
        self._start = -1   # absolute offset where the reply in progress began, or -1
        self._bulk = -1    # the length of the bulk string whose bytes are awaited, or -1
        self._stack = []   # the arrays being filled: [items, still missing]

    def __repr__(self) -> str:
        return f"<PyReader {len(self._buf) - self._pos} bytes unparsed>"

    def feed(self, data, offset: int = 0, length: int = -1) -> None:
        """Append bytes (any bytes-like object; ``offset``/``length`` take a slice of it, as
        hiredis' ``feed`` does)."""
        buf = self._buf
        pos = self._pos
        if pos:
            if pos == len(buf):
                buf.clear()
                self._scan = 0
            elif pos * 2 >= len(buf):  # drop what was parsed: amortised O(1) per byte
                del buf[:pos]
                self._scan = max(0, self._scan - pos)
            else:
                pos = 0
            if pos:
                self._base += pos
                self._pos = 0
        if offset or length >= 0:
            data = memoryview(data)[offset:offset + length if length >= 0 else None]
        buf += data

    def len(self) -> int:
        """Bytes held and not yet handed out."""
        return len(self._buf) - self._pos

    def _incomplete(self):
        if self._start >= 0 and self._base + len(self._buf) - self._start > self.max_reply:
            raise ProtocolError(f"a reply is over the reply bound ({self.max_reply} bytes)")
        return NOT_READY

    def gets(self):
        """The next whole reply, or :data:`NOT_READY`."""
        buf = self._buf
        stack = self._stack
        while True:
            pos = self._pos
            if self._bulk >= 0:
                end = pos + self._bulk
                if len(buf) < end + 2:
                    return self._incomplete()
                if buf[end] != 13 or buf[end + 1] != 10:
                    raise ProtocolError("a bulk string is not followed by CRLF")
                value = bytes(buf[pos:end])
                self._pos = end + 2
                self._bulk = -1
            else:
                if pos >= len(buf):
                    return self._incomplete()
                if self._start < 0:
                    self._start = self._base + pos
                scan = self._scan
                i = buf.find(b"\r\n", pos if scan < pos else scan)
                if i < 0:
                    self._scan = max(pos, len(buf) - 1)  # a lone CR at the end may be half
                    return self._incomplete()
                self._scan = 0
                kind = buf[pos]
                line = buf[pos + 1:i]
                self._pos = i + 2
                if kind == _DOLLAR:
                    n = _integer(line, "bulk string length")
                    if n < -1:
                        raise ProtocolError(f"bad bulk string length {n}")
                    if n > self.max_reply:
                        raise ProtocolError(f"a bulk string of {n} bytes is over the reply "
                                            f"bound ({self.max_reply})")
                    if n >= 0:
                        self._bulk = n
                        continue
                    value = None
                elif kind == _STAR:
                    n = _integer(line, "array length")
                    if n < -1:
                        raise ProtocolError(f"bad array length {n}")
                    if n * 3 > self.max_reply:  # each element takes 3 bytes at least
                        raise ProtocolError(f"an array of {n} elements is over the reply "
                                            f"bound ({self.max_reply} bytes)")
                    if n > 0:
                        if len(stack) >= self.max_depth:
                            raise ProtocolError(f"arrays nested over {self.max_depth} deep")
                        stack.append([[], n])
                        continue
                    value = None if n < 0 else []
                elif kind == _COLON:
                    value = _integer(line, "integer")
                elif kind == _PLUS or kind == _MINUS:
                    if 13 in line or 10 in line:
                        raise ProtocolError("a CR or LF inside a status line")
                    if kind == _PLUS:
                        value = bytes(line)
                    else:
                        value = ReplyError(line.decode("utf-8", "replace"))
                else:
                    raise ProtocolError(f"unknown reply type byte {bytes([kind])!r}")
            # one value is complete: it fills the innermost array, or it is the reply
            while stack:
                top = stack[-1]
                top[0].append(value)
                top[1] -= 1
                if top[1]:
                    break
                stack.pop()
                value = top[0]
            else:
                if self._base + self._pos - self._start > self.max_reply:
                    raise ProtocolError(f"a reply is over the reply bound "
                                        f"({self.max_reply} bytes)")
                self._start = -1
                return value


class HiredisReader:
    """The same interface over ``hiredis.Reader`` (the C parser), with the same values,
    errors and byte bound. Only when ``hiredis`` is installed (``pip install
    clos_web[redis]``); else this name is ``None``."""

    __slots__ = ("max_reply", "_reader")

    def __init__(self, max_reply: int = DEFAULT_MAX_REPLY, max_depth: int = 64):
        self.max_reply = max_reply
        self._reader = _hiredis.Reader(protocolError=ProtocolError, replyError=ReplyError,
                                       notEnoughData=NOT_READY)

    def __repr__(self) -> str:
        return f"<HiredisReader {self._reader.len()} bytes held>"

    def feed(self, data, offset: int = 0, length: int = -1) -> None:
        """Append bytes (``offset``/``length`` take a slice)."""
        if length >= 0:
            self._reader.feed(data, offset, length)
        elif offset:
            self._reader.feed(data, offset)
        else:
            self._reader.feed(data)

    def len(self) -> int:
        """Bytes held (hiredis keeps up to 1 KiB of parsed bytes too)."""
        return self._reader.len()

    def gets(self):
        """The next whole reply, or :data:`NOT_READY`."""
        reply = self._reader.gets()
        if reply is NOT_READY and self._reader.len() > self.max_reply:
            # hiredis drops parsed bytes once 1 KiB is parsed: what it holds now is the
            # incomplete reply and at most 1 KiB more, so the bound is kept within 1 KiB
            raise ProtocolError(f"a reply is over the reply bound ({self.max_reply} bytes)")
        return reply


if not HAVE_HIREDIS:  # pragma: no cover
    HiredisReader = None  # noqa: F811

Reader = HiredisReader if HAVE_HIREDIS else PyReader
"""The reader clients use: :class:`HiredisReader` when ``hiredis`` imports, else
:class:`PyReader`."""
