"""The Server-Sent Events wire format (WHATWG HTML, "Server-sent events"), sans-I/O.

Pure functions from values to bytes; no sockets here. An event is a block of ``field: value``
lines ended by a blank line::

    id: k3f9a-17
    event: move
    data: first line
    data: second line

A multi-line payload becomes one ``data:`` line per line (CR, LF and CRLF all split it), which a
client joins back with LF. Everything is UTF-8. The ``push`` layer encodes each published event
once with :func:`encode` and frames it once with :func:`chunk` for HTTP/1.1 subscribers.
"""

from __future__ import annotations

import re

_NEWLINE = re.compile(r"\r\n|\r|\n")


def _check_field(name: str, value: str) -> None:
    if "\n" in value or "\r" in value:
        raise ValueError(f"SSE {name} may not contain CR or LF: {value!r}")
    if name == "id" and "\0" in value:
        raise ValueError("SSE id may not contain NUL")


def encode_body(data: str, event: str | None = None) -> bytes:
    """The ``event:`` and ``data:`` lines of one event and its closing blank line, as UTF-8.

    >>> encode_body("a\\r\\nb", "move")
    b'event: move\\ndata: a\\ndata: b\\n\\n'
    """
    if "\n" in data or "\r" in data:
        data = "\ndata: ".join(_NEWLINE.split(data))
    if event is None:
        return ("data: " + data + "\n\n").encode("utf-8")
    _check_field("event", event)
    return ("event: " + event + "\ndata: " + data + "\n\n").encode("utf-8")


def encode(data: str, event: str | None = None, id: str | None = None,
           retry: int | None = None) -> bytes:
    """One complete SSE event as UTF-8 bytes: ``id:``, ``event:``, ``retry:``, ``data:`` lines.

    >>> encode("hello", event="greeting", id="a-1")
    b'id: a-1\\nevent: greeting\\ndata: hello\\n\\n'
    """
    head = b""
    if id is not None:
        _check_field("id", id)
        head = b"id: " + id.encode("utf-8") + b"\n"
    if retry is not None:
        head += b"retry: %d\n" % int(retry)
    return head + encode_body(data, event)


def comment(text: str = "") -> bytes:
    """A comment line (ignored by clients; used to flush headers and as a heartbeat).

    >>> comment("ping")
    b': ping\\n'
    """
    if not text:
        return b":\n"
    return b"".join(b": " + line.encode("utf-8") + b"\n" for line in _NEWLINE.split(text))


def retry_field(milliseconds: int) -> bytes:
    """``retry: N`` followed by a blank line (tells the client its reconnection delay)."""
    return b"retry: %d\n\n" % int(milliseconds)


def chunk(raw: bytes) -> bytes:
    """``raw`` framed as one HTTP/1.1 chunk (``SIZE CRLF raw CRLF``)."""
    return b"%x\r\n%b\r\n" % (len(raw), raw)


LAST_CHUNK = b"0\r\n\r\n"

__all__ = ["encode", "encode_body", "comment", "retry_field", "chunk", "LAST_CHUNK"]
