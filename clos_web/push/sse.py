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

A blank line is sent only to end an event that has data. The stream's preamble (``: ok`` and
``retry:``) and the heartbeats (``: ping``) are lines without a blank line after them: a browser
applies ``retry:`` when it reads the line and skips comments, so it sees exactly the same events,
while clients that report every blank-line-terminated block as an event (httpx-sse does, with the
previous id) see no phantom events. Those lines then sit at the start of the next event's block,
where the WHATWG parser ignores comments and keeps ``retry:``::

    : ok
    retry: 2375
    : ping
    id: k3f9a-17
    data: hello

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
    """The ``retry: N`` line (the client's reconnection delay), with no blank line after it.

    The client applies it as soon as it reads the line; a blank line would only end an event
    with no data, which browsers ignore but some clients report as an empty event.

    >>> retry_field(2500)
    b'retry: 2500\\n'
    """
    return b"retry: %d\n" % int(milliseconds)


def preamble(retry_milliseconds: int) -> bytes:
    """What a stream starts with: a ``: ok`` comment (it flushes the headers) and ``retry:``.

    Neither is followed by a blank line, so the first event's block absorbs them.

    >>> preamble(2500)
    b': ok\\nretry: 2500\\n'
    """
    return b": ok\n" + retry_field(retry_milliseconds)


HEARTBEAT = b": ping\n"
"""A heartbeat: one comment line, no blank line (clients skip it; proxies see traffic)."""


def chunk(raw: bytes) -> bytes:
    """``raw`` framed as one HTTP/1.1 chunk (``SIZE CRLF raw CRLF``)."""
    return b"%x\r\n%b\r\n" % (len(raw), raw)


LAST_CHUNK = b"0\r\n\r\n"

__all__ = ["encode", "encode_body", "comment", "retry_field", "preamble", "HEARTBEAT", "chunk",
           "LAST_CHUNK"]
