"""permessage-deflate (RFC 7692) for the server side of a WebSocket, sans I/O.

Three pieces:

- :func:`negotiate` picks the first acceptable ``permessage-deflate`` offer of a client and
  gives the ``Sec-WebSocket-Extensions`` value to answer with, and a :class:`PerMessageDeflate`
  for the connection;
- :class:`PerMessageDeflate` inflates what the client sends, bounded: it never makes more than
  the caller allows (a zip bomb stops at the message limit), and it holds an inflater between
  messages only when the client keeps its compression context;
- :func:`compress_message` deflates one outgoing message *standalone*: its bytes never refer to
  an earlier message, so one compressed frame is readable by every client, whatever each one
  negotiated. That is what keeps fan-out encode-once (see ``SharedMessage`` in
  :mod:`clos_web.ws.protocol`).

Why standalone is sound: every response we give contains ``server_no_context_takeover``
(RFC 7692 7.1.1.1 lets a server add it even when the offer did not ask for it), so no client
may expect our messages to share a window. A client that keeps its inflater between messages
anyway is fine too: a standalone message refers to nothing before it. Standalone messages come
from one compressor per thread and window size, flushed with ``Z_FULL_FLUSH`` after each message
(the flush resets the compressor's history: decompression can start at that point), instead of
a compressor per message (making one costs about 80 µs and 256 KiB; a flush costs nothing).
"""

from __future__ import annotations

import threading
import zlib

import attrs

_TAIL = b"\x00\x00\xff\xff"   # the empty stored block a sync/full flush ends with (RFC 7692 7.2.1)

LEVEL = 6                  # zlib's default compression level
MIN_SIZE = 64              # messages shorter than this are sent uncompressed by default
_WINDOW_BITS = {str(n): n for n in range(8, 16)}   # "8".."15", no leading zero, no sign
_PARAMS = frozenset(("server_no_context_takeover", "client_no_context_takeover",
                     "server_max_window_bits", "client_max_window_bits"))


@attrs.define(slots=True, eq=False, repr=False)
class PerMessageDeflate:
    """The negotiated permessage-deflate of one connection, and its inflater.

    ``server_max_window_bits``: the window our messages are compressed in (the client's offer
    may cap it). ``client_max_window_bits``: the window the client compresses in, so the window
    our inflater needs (15 unless the client let us cap it). ``client_no_context_takeover``:
    the client starts every message afresh, so no inflater is kept between messages (an idle
    connection then holds no zlib state at all). Our own messages never use context takeover.
    ``min_size``: a message shorter than this is sent uncompressed (RSV1 clear), as is one that
    does not get smaller.

    >>> pmd = PerMessageDeflate()
    >>> data = pmd.compress(b"hello, " * 20)
    >>> len(data), pmd.inflate(data, 1000) + pmd.finish(1000) == b"hello, " * 20
    (12, True)
    """

    server_max_window_bits: int = 15
    client_max_window_bits: int = 15
    client_no_context_takeover: bool = False
    min_size: int = MIN_SIZE
    _inflater: object = None

    def __repr__(self) -> str:
        return (f"<PerMessageDeflate server_bits={self.server_max_window_bits} "
                f"client_bits={self.client_max_window_bits} "
                f"client_resets={self.client_no_context_takeover} "
                f"inflating={self._inflater is not None}>")

    @property
    def inflating(self) -> bool:
        """Whether an inflater (and its window) is held now."""
        return self._inflater is not None

    def inflate(self, data, max_length: int) -> bytes:
        """Some of a compressed message's bytes, inflated: at most ``max_length`` bytes. Getting
        exactly ``max_length`` bytes may mean the message is longer still: pass one more than
        what is allowed, and take ``max_length`` bytes back as "over the limit". Raises
        ``zlib.error`` for data that is not a deflate stream."""
        inflater = self._inflater
        if inflater is None:
            inflater = self._inflater = zlib.decompressobj(
                wbits=-max(self.client_max_window_bits, 9))
        return inflater.decompress(data, max_length)

    def finish(self, max_length: int) -> bytes:
        """The end of a compressed message: what its last bytes still held (at most
        ``max_length`` bytes, as :meth:`inflate`). Without client context takeover, or once the
        client ended its deflate stream (a BFINAL block), the inflater is let go."""
        inflater = self._inflater
        if inflater is None:  # an empty message: nothing was inflated
            inflater = self._inflater = zlib.decompressobj(
                wbits=-max(self.client_max_window_bits, 9))
        out = inflater.decompress(_TAIL, max_length)
        if self.client_no_context_takeover or inflater.eof:
            self._inflater = None
        return out

    def reset(self) -> None:
        """Forget the inflater (the connection failed or closed)."""
        self._inflater = None

    def compress(self, payload) -> bytes | None:
        """``payload`` compressed standalone for this connection, or None when it is shorter
        than ``min_size`` or does not get smaller (send it uncompressed then)."""
        if len(payload) < self.min_size:
            return None
        data = compress_message(payload, self.server_max_window_bits)
        return data if len(data) < len(payload) else None


_local = threading.local()


def compress_message(payload, wbits: int = 15) -> bytes:
    """``payload`` deflated as one standalone permessage-deflate message (the trailing
    ``00 00 ff ff`` removed, RFC 7692 7.2.1): its bytes refer to nothing sent before, so any
    client inflates it, whatever its context settings, as long as its window is at least
    ``2**wbits`` (``server_max_window_bits`` of the connection; 9 to 15).

    >>> data = compress_message(b"hello " * 100)
    >>> len(data) < 20, zlib.decompressobj(wbits=-15).decompress(data + b"\\0\\0\\xff\\xff")[:12]
    (True, b'hello hello ')
    """
    compressors = getattr(_local, "compressors", None)
    if compressors is None:
        compressors = _local.compressors = {}
    compressor = compressors.get(wbits)
    if compressor is None:
        if not 9 <= wbits <= 15:
            raise ValueError(f"window bits must be 9 to 15, not {wbits}")
        compressor = compressors[wbits] = zlib.compressobj(LEVEL, zlib.DEFLATED, -wbits)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_FULL_FLUSH)
    return data[:-4]


def negotiate(offers, *, client_no_context_takeover: bool = True,
              client_max_window_bits: int | None = None, min_size: int = MIN_SIZE):
    """The answer to a client's extension offers: ``(Sec-WebSocket-Extensions value,
    PerMessageDeflate)`` for the first acceptable ``permessage-deflate`` offer, or None.

    ``offers`` is what :func:`~clos_web.ws.protocol.parse_extensions` returns. An offer with an
    unknown parameter, a repeated one or a bad value is declined (RFC 7692 5: the next offer
    is tried), as is one asking ``server_max_window_bits=8`` (zlib cannot compress in a
    256-byte window). The answer always has ``server_no_context_takeover``.

    ``client_no_context_takeover`` (default True) asks the client to compress each message
    afresh: no inflater is kept between its messages (memory first). ``client_max_window_bits``
    caps the client's window when its offer lets us (the offer has that parameter): the
    inflater kept between messages is then ``2**bits`` bytes instead of 32 KiB.

    >>> from clos_web.ws.protocol import parse_extensions
    >>> offers = parse_extensions({"sec-websocket-extensions":
    ...                            "permessage-deflate; client_max_window_bits"})
    >>> negotiate(offers)[0]
    'permessage-deflate; server_no_context_takeover; client_no_context_takeover'
    >>> negotiate(offers, client_no_context_takeover=False, client_max_window_bits=12)[0]
    'permessage-deflate; server_no_context_takeover; client_max_window_bits=12'
    """
    for name, params in offers:
        if name.lower() != "permessage-deflate":
            continue
        offer = _offer(params)
        if offer is None:
            continue
        server_bits = offer.get("server_max_window_bits")
        if server_bits == 8:
            continue
        answer = ["permessage-deflate", "server_no_context_takeover"]
        resets = client_no_context_takeover or "client_no_context_takeover" in offer
        if resets:
            answer.append("client_no_context_takeover")
        if server_bits is not None:
            answer.append(f"server_max_window_bits={server_bits}")
        client_bits = 15
        if "client_max_window_bits" in offer:
            offered = offer["client_max_window_bits"]  # None: "any value you like"
            bits = min(offered or 15, client_max_window_bits or 15)
            if bits < 15 or offered is not None:
                answer.append(f"client_max_window_bits={bits}")
            client_bits = bits
        return "; ".join(answer), PerMessageDeflate(
            server_max_window_bits=server_bits or 15, client_max_window_bits=client_bits,
            client_no_context_takeover=resets, min_size=min_size)
    return None


def _offer(params) -> dict | None:
    """One offer's parameters by name, with their values checked (RFC 7692 7.1), or None when
    the offer must be declined."""
    offer = {}
    for name, value in params:
        name = name.lower()
        if name not in _PARAMS or name in offer:
            return None
        if name.endswith("context_takeover"):
            if value is not None:
                return None
        elif value is not None:
            value = _WINDOW_BITS.get(value)
            if value is None:
                return None
        elif name == "server_max_window_bits":
            return None   # it needs a value; only client_max_window_bits may come without
        offer[name] = value
    return offer


__all__ = ["PerMessageDeflate", "compress_message", "negotiate", "MIN_SIZE"]
