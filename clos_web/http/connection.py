"""The sans-I/O HTTP/1.1 server connection: bytes in, requests out; responses in, bytes out.

An :class:`HTTPConnection` knows nothing of sockets (h11's ``Connection`` is the model). The loop
feeds it what arrived (``receive_data``), asks for the next complete request
(``next_request``), and writes what the answer's ``write`` method makes with ``head``. The
connection owns the HTTP side of things:

- its :class:`State`, one at a time, compared with ``is``;
- keep-alive (the request's ``Connection`` field, HTTP/1.0, a ``Connection: close`` in the
  response's own fields, a server that is draining) and pipelining: requests are answered one
  after the other, in order;
- ``Expect: 100-continue``: ``interim()`` gives the ``100 Continue`` to send once the body is
  wanted (a request refused from its head gets its refusal instead, see ``Buffer.body_limit``);
- the limits of :class:`~clos_web.http.parser.Limits`, and its deadline as data: ``deadline``
  is when it wants to be woken (header, body, keep-alive and stream-idle deadlines), and
  ``timed_out(now)`` says what that means;
- streams: ``start_stream`` turns the answer into a long-lived stream (SSE).

It is tested with bytes and a fake clock (``tests/test_http_connection.py``), no sockets.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

from ..loop.server import DISCARD
from .errors import HTTPError, RequestTimeout
from .head import (
    _SERVER, Response, _has_body, _wire, connection_field, date_line, head_end, response_head,
    status_line,
)
from .parser import Buffer, Limits, Request, parse

INFINITY = float("inf")


class State(enum.Enum):
    """Where an :class:`HTTPConnection` stands."""

    IDLE = "idle"          # between requests (keep-alive)
    HEAD = "head"          # a request's head is arriving
    BODY = "body"          # a head is parsed, its body is arriving
    BUSY = "busy"          # a complete request is being answered (now, or later)
    STREAM = "stream"      # the answer is a long-lived stream: nothing more is read as requests
    CLOSING = "closing"    # the last answer is written (or input was refused): no more requests
    SWITCHED = "switched"  # the connection speaks another protocol now (101 Switching)


# The members as module names: in Python 3.11 ``EnumType`` has a ``__getattr__``, so every
# ``State.X`` costs ~950 instructions (a global: ~30), several times per request.
IDLE, HEAD, BODY, BUSY, STREAM, CLOSING, SWITCHED = State
_ANSWERING = (BUSY, STREAM)


class StreamingError(RuntimeError):
    """A response was written to a connection whose answer is a stream."""


@attrs.define(slots=True, eq=False, repr=False)
class HTTPConnection:
    """The HTTP side of one client connection, without its socket.

    >>> http = HTTPConnection(Limits())
    >>> http.receive_data(b"GET /hello HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
    >>> http.next_request(now=0.0).path, http.state
    ('/hello', <State.BUSY: 'busy'>)
    >>> http.head(200, length=2)[:17], http.state
    (b'HTTP/1.1 200 OK\\r\\n', <State.BUSY: 'busy'>)
    >>> http.response_done(now=1.0); http.state, http.deadline
    (<State.IDLE: 'idle'>, 61.0)
    """

    limits: Limits = attrs.field(factory=Limits)
    buf: Buffer = None
    state: State = IDLE
    request: Request | None = None
    keep_alive: bool = True
    deadline: float = INFINITY
    draining: bool = False     # the server is stopping: no keep-alive after this answer
    stream: Any = None         # what produces a streamed answer (push: a Subscription)
    status: int = 0            # the status of the last head written (logs, metrics)
    response_started: bool = False
    deferred_at: float | None = None  # server.now when an answer was left for later (metrics)

    def __attrs_post_init__(self):
        if self.buf is None:
            self.buf = Buffer(limits=self.limits)

    def __repr__(self) -> str:
        target = self.request.target[:60] if self.request is not None else None
        return (f"<HTTPConnection {self.state.name} request={target!r} "
                f"buffered={len(self.buf.data)} keep_alive={self.keep_alive}>")

    # -- input ---------------------------------------------------------------------------

    def receive_data(self, data) -> None:
        """Take bytes that arrived. A stream's or a closing connection's input is discarded:
        the client has nothing more to say there (and must not fill memory saying it)."""
        if self.state is STREAM or self.state is CLOSING:
            return
        self.buf.data += data

    @property
    def wants_input(self) -> bool:
        """Whether buffered input may be parsed now (no answer is in progress)."""
        state = self.state
        return state is IDLE or state is HEAD or state is BODY

    def next_request(self, now: float) -> Request | None:
        """The next complete request, or None when more bytes are needed (or an answer is in
        progress: requests are answered in order).

        Parsing is the generic function :func:`~clos_web.http.parser.parse` on ``self.buf``, so
        a ``Buffer`` subclass with a ``parse`` method of its own parses its own way. A bad
        request raises an :class:`HTTPError` and the connection is ``CLOSING``: the stream of
        requests cannot be trusted after it (the error carries ``request`` when the request was
        refused from its head).
        """
        state = self.state
        if not (state is IDLE or state is HEAD or state is BODY):
            return None
        buf = self.buf
        if state is IDLE and not buf.data:
            return None
        try:
            request = parse(buf)
        except HTTPError:
            self.state = CLOSING
            self.keep_alive = False
            self.deadline = now + self.limits.keepalive_timeout
            raise
        if request is None:
            if state is IDLE and not buf.data:
                return None  # empty lines between requests (RFC 9112 2.2): still idle
            if state is IDLE:  # the first bytes of a request: its head must come in time
                self.state = state = HEAD
                self.deadline = now + self.limits.header_timeout
            if state is HEAD and buf.pending is not None:
                self.state = BODY
                self.deadline = now + self.limits.body_timeout
            return None
        self.state = BUSY
        self.request = request
        self.keep_alive = request.keep_alive and not self.draining
        self.deadline = INFINITY
        self.response_started = False
        self.deferred_at = None
        return request

    def interim(self) -> bytes:
        """``100 Continue`` once a request that asked for it (``Expect: 100-continue``) has had
        its head accepted, else ``b""``."""
        buf = self.buf
        if buf.continue_needed:
            buf.continue_needed = False
            return response_head(100)
        return b""

    # -- output --------------------------------------------------------------------------

    @property
    def head_only(self) -> bool:
        """Whether the answer has no body on the wire (a HEAD request)."""
        request = self.request
        return request is not None and request.method == "HEAD"

    @property
    def http10(self) -> bool:
        request = self.request
        return request is not None and request.version == "HTTP/1.0"

    def head(self, status: int, block: bytes = b"", *, length: int | None = None,
             chunked: bool = False) -> bytes:
        """The head of the answer to the current request, from the one head writer
        (:func:`~clos_web.http.head.response_head`), with the ``Connection`` field this
        connection needs. ``block`` is header fields made by
        :func:`~clos_web.http.head.header_block` (checked); a ``Connection: close`` among them
        closes the connection after this answer.
        """
        if self.state is STREAM:
            raise StreamingError("the answer on this connection is a stream: write an Event "
                                 "to it (or publish on its channel), not a response")
        http10 = self.http10
        chunked = chunked and not http10
        if status >= 200:
            self.status = status
            self.response_started = True
            block, closes = connection_field(block)
            if closes:
                self.keep_alive = False
            if length is None and not chunked and _has_body(status):
                self.keep_alive = False  # the body ends when the connection closes
        return response_head(status, block, length=length, chunked=chunked,
                             keep_alive=self.keep_alive, http10=http10)

    def end_of_head(self, status: int) -> bytes:
        """For a ``write`` method that keeps a head of its own, made once by the head writer
        (PlainText caches one per second): record the answer and return how its head ends here
        (the ``Connection`` field this connection needs, then the blank line)."""
        if self.state is STREAM:
            raise StreamingError("the answer on this connection is a stream: write an Event "
                                 "to it (or publish on its channel), not a response")
        self.status = status
        self.response_started = True
        request = self.request
        return head_end(self.keep_alive, request is not None and request.version == "HTTP/1.0")

    def encode(self, response: Response) -> bytes:
        """``response`` on the wire for the current request: head (its checked fields are
        cached on the response) and body, none for HEAD."""
        wire = response._wire
        if wire is None:
            wire = _wire(response)
        if response._closes:
            self.keep_alive = False
        return self.encode_fields(response.status, wire, response.body)

    def encode_fields(self, status: int, fields: bytes, body: bytes) -> bytes:
        """An answer on the wire for the current request from its parts, as :meth:`encode`
        writes a :class:`Response`: ``fields`` are header lines made by ``header_block``,
        the framing field (``Content-Length``) included and no ``Connection`` field (the
        head writer adds it). For a ``write`` method that makes its fields itself, without a
        Response in between (the JSON answer's)."""
        if self.state is STREAM:
            raise StreamingError("the answer on this connection is a stream: write an Event "
                                 "to it (or publish on its channel), not a response")
        self.status = status
        self.response_started = True
        request = self.request
        http10 = request is not None and request.version == "HTTP/1.0"
        # the head writer's assembly (encode_response's), inlined: every answer's hot path
        head = b"".join((status_line(status), date_line(), _SERVER, fields,
                         head_end(self.keep_alive, http10)))
        if (request is not None and request.method == "HEAD") or not _has_body(status):
            return head
        return head + body

    def response_done(self, now: float) -> None:
        """The answer to the current request is written: go on to the next, or close."""
        if self.state is not BUSY:
            return
        self.request = None
        self.state = IDLE if self.keep_alive and not self.draining else CLOSING
        # an idle connection is closed after this; a closing one too if its client does not
        # read what is left to send
        self.deadline = now + self.limits.keepalive_timeout

    def start_stream(self, stream, now: float) -> None:
        """The answer is a long-lived stream produced by ``stream``: from now on nothing is
        read as requests, and the connection closes when the stream ends."""
        self.state = STREAM
        self.stream = stream
        # nothing more is parsed or kept: the parser's Buffer goes, for the shared input that
        # keeps nothing (the caller points the connection's ``buf`` at it too: an idle stream
        # holds no buffer)
        self.buf = DISCARD
        self.keep_alive = False
        self.request = None
        idle = self.limits.stream_idle_timeout
        self.deadline = INFINITY if idle is None else now + idle

    def switch(self) -> None:
        """The connection speaks another protocol from now on (after a 101)."""
        self.state = SWITCHED
        self.deadline = INFINITY

    def drain(self) -> None:
        """The server is stopping: the current answer is the last one."""
        self.draining = True
        self.keep_alive = False

    # -- time ----------------------------------------------------------------------------

    def timed_out(self, now: float):
        """What ``deadline`` passing means now: an :class:`HTTPError` to answer (408: a head or
        body that did not arrive in time), ``True`` to close quietly (an idle keep-alive
        connection, one that never said anything, or a closing one whose client does not read
        its last answer), ``False`` for nothing (the deadline moved, or the state has none)."""
        if now < self.deadline:
            return False
        state = self.state
        if state is HEAD or state is BODY:
            self.state = CLOSING
            self.keep_alive = False
            self.request = None
            # the 408 must be read: a client that does not is closed after this
            self.deadline = now + self.limits.keepalive_timeout
            return RequestTimeout(reason="request not received in time")
        if state is IDLE or state is CLOSING:
            return True
        return False


__all__ = ["HTTPConnection", "State", "StreamingError"]
