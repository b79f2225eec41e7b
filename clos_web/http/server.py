"""HTTP over the loop's transport: the :class:`Server`, and the generic functions that answer.

The loop hands a connection's bytes to its protocol, here an
:class:`~clos_web.http.connection.HTTPConnection` (sans-I/O), through ``data_received``. The
methods below drive it: each complete request goes to ``handle_request(conn, request)``, whose
result is written with ``write(result, conn)`` (an exception with ``error_response``); the bytes
go out through the transport's API (``server.enqueue``, ``flush``, ``push``,
``close_when_sent``), never a socket. Requests are answered one after the other, in order;
a handler that answers later (a worker thread, a long-poll) returns :data:`DEFERRED` and the
answer comes with ``server.complete(conn, request, result)``.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

import attrs

from ..clos import generic
from ..loop.server import (
    OPEN, Connection, FileSegment, Loop, connection_lost, connection_made, data_received,
    deadline_passed, output_drained, refuse_connection, shutdown,
)
from .connection import BODY, BUSY, CLOSING, HEAD, IDLE, STREAM, HTTPConnection
from .errors import HTTPError
from .head import Response, header_block, response_head
from .parser import Buffer, Limits, Request

log = logging.getLogger("clos_web")


# The methods counted by name in ``Server.answers``; any other counts as "OTHER" (a client
# chooses the method: the set of keys must stay bounded)
COUNTED_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS",
                             "CONNECT", "TRACE"))


# --------------------------------------------------------------------------------------------
# The generic functions of answering


@generic
def handle_request(conn, request):
    """Answer one complete ``request`` on ``conn``: the app's ``handle`` finds the route and
    calls the handler; its result is written with ``write`` (an exception it raised with
    ``error_response``)."""


@generic
def write(obj, conn):
    """Serialise ``obj`` (a Response, str, bytes, a JSON-able value, an SSE stream, a published
    event...) onto ``conn`` (or onto a subscriber of a channel).

    Add a method to teach clos_web a new kind of response, or a new transport for events.
    """


@generic
def error_response(error, conn):
    """Answer ``conn`` with an error: ``error`` is an :class:`HTTPError` or a status ``int``."""


@generic
def close_stream(stream, conn):
    """Called when a connection whose answer is a stream (``conn.protocol.stream``) closes,
    whatever the reason: release what the stream holds (the push layer unsubscribes it from
    every channel)."""


@close_stream.dispatch
def close_stream_object(stream: object, conn: Connection):
    return None


@generic
def shutdown_stream(stream, conn):
    """End a stream gracefully when its server stops (a protocol may send a last frame)."""


@shutdown_stream.dispatch
def shutdown_stream_object(stream: object, conn: Connection):
    conn.server.close_when_sent(conn)


@generic
def stream_idle(stream, conn):
    """Called when a stream's idle deadline passes (``Limits.stream_idle_timeout``): end it,
    or give it a new deadline with ``conn.server.set_deadline`` if it was not idle after all.
    By default the stream ends cleanly (``shutdown_stream``): a client that still wants it
    reconnects, so a stream nobody publishes to does not hold its slot for ever."""


@stream_idle.dispatch
def stream_idle_object(stream: object, conn: Connection):
    shutdown_stream(stream, conn)


# --------------------------------------------------------------------------------------------
# The server


@attrs.define(slots=False, eq=False, repr=False)
class Server(Loop):
    """An HTTP server: one event loop (:class:`~clos_web.loop.server.Loop`) serving ``app``.

    ``app`` is anything with ``handle(request, conn)`` (usually an :class:`~clos_web.App`)
    and optionally ``body_limit(request, default)``. ``Server(app, port=0).start()`` runs it on
    a thread and returns at once (REPL, tests); ``serve_forever()`` runs it on the calling
    thread; ``stop(timeout)`` stops accepting, lets answers in flight finish, ends streams
    cleanly and closes everything.

    ``answers`` counts every answered request (:func:`count_answer`): ``{route: {status: n}}``
    for the requests a route answered with its own method, ``{(route, method): {status: n}}``
    for the others (HEAD on a GET route, an unmatched request: ``route`` None, ``method`` one
    of :data:`COUNTED_METHODS` or ``"OTHER"``). The metrics (:mod:`clos_web.ops.metrics`) read
    it when scraped.

    >>> Server(object())
    <Server 127.0.0.1:0 conns=0>
    """

    app: Any = None
    host: str = "127.0.0.1"
    port: int = 0
    limits: Limits = attrs.field(factory=Limits)
    debug: bool = False
    answers: dict = attrs.field(factory=dict, init=False)

    def _body_limit(self, request: Request) -> int:
        fn = getattr(self.app, "body_limit", None)
        return fn(request, self.limits.max_body) if fn is not None else self.limits.max_body

    def complete(self, conn: Connection, request: Request, result) -> None:
        """Answer a request whose handler answered later (:data:`DEFERRED`): ``result`` is
        what it returned, or the exception it raised. Loop thread only (from another thread:
        ``call_soon_threadsafe(server.complete, conn, request, result)``). A connection that
        closed meanwhile is left alone."""
        http = conn.protocol
        if conn.state is not OPEN or http.state is not BUSY or http.request is not request:
            return
        answer(conn, request, result)
        if conn.protocol is not http:
            return  # the answer switched protocols (a WebSocket's 101): HTTP is done here
        answered(conn, request)
        process(http, conn)


@connection_made.dispatch
def connection_made_http(server: Server, conn: Connection):
    limits = server.limits
    http = HTTPConnection(limits, Buffer(limits=limits, body_limit=server._body_limit))
    conn.protocol = http
    conn.buf = http.buf
    http.deadline = server.now + limits.header_timeout  # a client that says nothing is closed
    server.set_deadline(conn, http.deadline)


@refuse_connection.dispatch
def refuse_connection_http(server: Server, sock: object):
    # never blocks: the answer fits in a new socket's buffer, or is dropped
    try:
        sock.send(response_head(503, _TOO_MANY_FIELDS, length=len(_TOO_MANY_BODY),
                                keep_alive=False) + _TOO_MANY_BODY)
    except OSError:
        pass


_TOO_MANY_BODY = b"503 too many connections from your address\n"
_TOO_MANY_FIELDS = header_block([("Content-Type", "text/plain; charset=utf-8"),
                                 ("Retry-After", "1")])


# --------------------------------------------------------------------------------------------
# HTTPConnection's methods for the loop's protocol


@output_drained.dispatch
def output_drained_http(protocol: HTTPConnection, conn: Connection):
    if protocol.wants_input and conn.buf.data:
        process(protocol, conn)


@deadline_passed.dispatch
def deadline_passed_http(protocol: HTTPConnection, conn: Connection):
    server = conn.server
    if protocol.state is STREAM:
        if protocol.stream is not None:
            stream_idle(protocol.stream, conn)
        return
    outcome = protocol.timed_out(server.now)
    if outcome is True:
        server.close(conn)
    elif isinstance(outcome, HTTPError):
        error_response(outcome, conn)
        server.close_when_sent(conn)
        if conn.state is OPEN:  # a client that does not read its 408 is closed in time too
            server.set_deadline(conn, protocol.deadline)
    elif protocol.deadline != float("inf"):
        server.set_deadline(conn, protocol.deadline)


@connection_lost.dispatch
def connection_lost_http(protocol: HTTPConnection, conn: Connection):
    stream = protocol.stream
    if stream is not None:
        protocol.stream = None
        close_stream(stream, conn)


@shutdown.dispatch
def shutdown_http(protocol: HTTPConnection, conn: Connection):
    protocol.drain()
    state = protocol.state
    server = conn.server
    if state is IDLE and not conn.buf.data:
        if conn.out:
            server.close_when_sent(conn)  # the last answer is still on its way out
        else:
            server.close(conn)
    elif state is STREAM:
        shutdown_stream(protocol.stream, conn)
    elif state is CLOSING and not conn.out:
        server.close(conn)
    # a request in flight (head, body, answer) finishes, then closes (draining)


# --------------------------------------------------------------------------------------------
# The request loop


@data_received.dispatch
def process(http: HTTPConnection, conn: object):
    """The request loop: parse and answer buffered requests, in order, until one is
    incomplete or an answer is pending. (A stream's or a closing connection's input is
    dropped; a pipelining client's input is bounded while an answer is in progress.)"""
    state = http.state
    if state is STREAM or state is CLOSING:
        conn.buf.data.clear()  # a stream's client has nothing more to say: what it says is dropped
        return
    if state is BUSY:
        limits = http.limits
        if len(conn.buf.data) > limits.max_request_line + limits.max_header_bytes:
            conn.server.pause_reading(conn)
        return
    server = conn.server
    limits = http.limits
    buf = http.buf
    while conn.state is OPEN:
        state = http.state
        if state is IDLE:
            if not buf.data:
                break
        elif state is not HEAD and state is not BODY:
            break
        try:
            request = http.next_request(server.now)
        except HTTPError as err:
            # a bad request: answer it (as itself, if it was refused from its head) and close:
            # after a framing error the stream of requests cannot be trusted
            http.request = getattr(err, "request", None)
            error_response(err, conn)
            http.request = None
            server.close_when_sent(conn)
            if conn.state is OPEN:  # a client that does not read its error is closed in time
                server.set_deadline(conn, http.deadline)
            return
        if buf.continue_needed:
            server.enqueue(conn, http.interim())
        if request is None:
            break
        queued = conn.out_bytes
        try:
            handle_request(conn, request)
        except Exception as exc:  # a qualified method of handle_request refused, or failed
            answer(conn, request, exc)
        if http.state is BUSY and http.request is request:
            # answered now, unless nothing was written (DEFERRED: server.complete answers)
            if http.response_started or conn.out_bytes > queued:
                answered(conn, request)
            else:
                http.deferred_at = server.now  # answered later: answered_later times it
        if conn.out_bytes > limits.output_cap:
            break  # backpressure: go on when the client has read (output_drained)
    if conn.state is OPEN:
        server.set_deadline(conn, http.deadline)
        server.flush(conn)


def count_answer(answers: dict, request, status: int) -> None:
    """Count one answer to ``request`` with ``status`` in ``answers`` (a server's
    :attr:`~Server.answers`): ``answered`` does, for every request; a protocol that takes the
    connection over counts its own answer (a WebSocket's 101). Two dict updates with cheap
    keys: the route (identity) for its own method, else ``(route, method)``; then the status."""
    route = request.route
    method = request.method
    if route is None or method != route.method:
        route = (route, method if method in COUNTED_METHODS else "OTHER")
    by_status = answers.get(route)
    if by_status is None:
        by_status = answers[route] = {}
    by_status[status] = by_status.get(status, 0) + 1


@generic
def answered(conn, request):
    """The answer to ``request`` is written (queued) on ``conn``, now or later (a handler that
    returned ``DEFERRED``): it is counted (``server.answers``), the connection goes on to the
    next request, or closes after this one. An ``after`` method sees every request once it is
    answered (the access log is one: ``conn.protocol.status`` is the status written)."""


@answered.dispatch
def answered_http(conn: Connection, request: object):
    server = conn.server
    http = conn.protocol
    count_answer(server.answers, request, http.status)
    began = http.deferred_at
    if began is not None:
        answered_later(conn, request, server.now - began)
    http.response_done(server.now)
    if http.state is CLOSING:
        server.close_when_sent(conn)
    elif conn.reading is not conn.reading.NORMAL:
        server.resume_reading(conn)


@generic
def answered_later(conn, request, seconds):
    """An answer left for later (its handler returned :data:`DEFERRED`: a worker thread, a
    long-poll, a publish waiting for a broker) is written, ``seconds`` after the handler
    returned (the loop's clock, ``server.now``). Called by ``answered``'s method before the
    connection goes on; the metrics add a method that records the time by route."""


@answered_later.dispatch
def answered_later_any(conn: Connection, request: object, seconds: object):
    return None


@handle_request.dispatch
def handle_request_connection(conn: Connection, request: object):
    try:
        result = conn.server.app.handle(request, conn)
    except Exception as exc:
        answer(conn, request, exc)
        return
    if result is DEFERRED:  # the handler answers later through server.complete
        return
    mark, queued = len(conn.out), conn.out_bytes
    try:
        write(result, conn)  # the common case; anything else is answer()'s to handle
    except Exception as exc:
        _take_back(conn, mark, queued)
        answer(conn, request, exc)


class _Deferred:
    """Returned by an app's ``handle`` when the response will be written later."""

    def __repr__(self):
        return "DEFERRED"


DEFERRED = _Deferred()


def answer(conn: Connection, request: Request, result) -> None:
    """Write ``result`` (a handler's return value, or the exception it raised) as the response
    to ``request`` on ``conn``: ``write`` for values, ``error_response`` for exceptions (an
    exception instance is answered as if raised, so a worker thread can hand one back).

    A ``write`` or ``error_response`` method that fails (a header refused by the head writer,
    a bug) leaves nothing half-written: what it queued is taken back and a plain 500 goes out.
    """
    mark, queued = len(conn.out), conn.out_bytes
    try:
        try:
            if isinstance(result, BaseException):
                raise result
            write(result, conn)
        except HTTPError as err:
            _take_back(conn, mark, queued)
            error_response(err, conn)
    except Exception as exc:
        log.error("handler failed for %s %s\n%s", request.method, request.target,
                  "".join(traceback.format_exception(exc)))
        _take_back(conn, mark, queued)
        http = conn.protocol
        try:
            error_response(_internal_error(exc, conn.server.debug), conn)
        except Exception:
            log.exception("error_response failed")
            _take_back(conn, mark, queued)
            http.keep_alive = False
            http.response_started = True
            conn.server.enqueue(conn, response_head(500, length=0, keep_alive=False))


def _take_back(conn: Connection, mark: int, queued: int) -> None:
    """Drop what was queued on ``conn`` after ``mark`` items (a response that failed midway)."""
    out = conn.out
    if len(out) > mark and conn.out_bytes >= queued:
        for item in out[mark:]:
            if item.__class__ is FileSegment:
                item.close()
        del out[mark:]
        conn.out_bytes = queued


def _internal_error(exc: BaseException, debug: bool) -> HTTPError:
    err = HTTPError(500, "Internal Server Error")
    if debug:
        err.debug_text = "".join(traceback.format_exception(exc))
    return err


# --------------------------------------------------------------------------------------------
# write and error_response methods for the basic kinds of answer


def send_response(response: Response, conn: Connection) -> None:
    """Encode ``response`` for the current request of ``conn`` and queue it (a ``write``
    method's usual last step)."""
    conn.server.enqueue(conn, conn.protocol.encode(response))


@write.dispatch
def write_response(obj: Response, conn: Connection):
    conn.server.enqueue(conn, conn.protocol.encode(obj))


@write.dispatch
def write_str(obj: str, conn: Connection):
    send_response(Response(obj, content_type="text/html"), conn)


@write.dispatch
def write_bytes(obj: bytes, conn: Connection):
    send_response(Response(obj, content_type="application/octet-stream"), conn)


@write.dispatch
def write_none(obj: None, conn: Connection):
    send_response(Response(b"", status=204), conn)


@error_response.dispatch
def error_response_int(error: int, conn: Connection):
    error_response(HTTPError(error), conn)


@error_response.dispatch
def error_response_http_error(error: HTTPError, conn: Connection):
    text = f"{error.status} {error.reason}\n"
    debug_text = getattr(error, "debug_text", None)
    if debug_text:
        text += "\n" + debug_text
    response = Response(text, status=error.status, content_type="text/plain",
                        headers=error.headers)
    send_response(response, conn)


__all__ = [
    "Server", "handle_request", "write", "error_response", "close_stream", "shutdown_stream",
    "stream_idle", "send_response", "answer", "answered", "answered_later", "DEFERRED",
    "COUNTED_METHODS", "count_answer", "process",
]
