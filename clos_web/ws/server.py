"""WebSocket over the loop: the upgrade, the socket object, its generics, and channels.

A handler registered with ``@app.websocket(path)`` binds its typed parameters like any handler
and returns a :class:`WebSocket` (an attrs class users subclass). ``write(ws, conn)`` answers
the upgrade (``101``, RFC 6455 §4.2.2) and *switches the connection's protocol*: from then on
``conn.protocol`` is the socket object itself, so the loop's generic functions
(``data_received``, ``deadline_passed``, ``connection_lost``, ``shutdown``,
``output_drained``) dispatch on the user's class, and the frames are read and written by the
sans-I/O :class:`~clos_web.ws.protocol.WebSocketProtocol`.

What the application extends, as generic functions::

    @attrs.define
    class Chat(WebSocket):
        user: str

    @app.websocket("/chat/{user}")
    def chat(user: str):
        return Chat(user)

    @on_open.dispatch
    def chat_open(ws: Chat):
        ws.subscribe("room")

    @receive.dispatch
    def chat_text(ws: Chat, message: Text):
        publish("room", {"from": ws.user, "text": message.data})

``receive(ws, message)`` dispatches on the socket's class *and* the message's (:class:`Text`,
:class:`Binary`); ``on_open(ws)`` and ``on_close(ws, code, reason)`` frame its life; all three
take ``before``/``after``/``around`` methods. ``ws.send(...)`` and ``ws.close(code)`` work
from the loop and from any thread.

Channels: ``ws.subscribe(names, last_event_id)`` joins channels with the rules of SSE (history,
resume, ``reset``, the slow-consumer cap); each event is one text frame of JSON ``{"id",
"event", "data"}``, encoded once per event and sent as the same bytes to every subscriber.
A socket is kept alive with pings every ``ping_interval`` seconds it is quiet; a peer that
answers nothing within ``ping_timeout`` is dead and closed.
"""

from __future__ import annotations

import functools
import logging
import secrets
import threading
from typing import Any

import attrs

from ..clos import generic
from ..http import HTTPError, Request, json_bytes
from ..http.head import header_block, response_head
from ..http.server import close_stream, count_answer, write
from ..loop.server import (
    OPEN, Connection, Input, connection_lost, data_received, deadline_passed, output_drained,
    shutdown,
)
from ..push.broker import LOCAL, broker_present, vector_id
from ..push.channels import (
    Batch, Channels, End, Event, Heartbeat, Subscription, VectorSubscription, _budget, _names,
    channels as default_channels,
)
from .deflate import negotiate
from .protocol import (
    _OPEN as _WS_OPEN, Binary, Close, Opcode, Ping, Pong, SharedMessage, Text,
    WebSocketProtocol, accept_key, check_handshake, parse_extensions, parse_subprotocols,
)

log = logging.getLogger("clos_web.ws")

DEFAULT_MAX_MESSAGE = 1024 * 1024


# --------------------------------------------------------------------------------------------
# The generic functions an application extends


@generic
def on_open(ws):
    """Called once the upgrade is answered (``101`` queued): the socket can send, subscribe,
    close. An exception closes it with 1011."""


@generic
def receive(ws, message):
    """Called for each complete message: ``message`` is a :class:`Text` (``.data`` a ``str``)
    or a :class:`Binary` (``.data`` ``bytes``). Dispatches on both classes. An exception closes
    the socket with 1011 (the loop goes on)."""


@generic
def on_close(ws, code, reason):
    """Called once when the socket is closed: ``code`` is the peer's close code (1005 if its
    close frame had none), the code we failed it with (1002, 1007, 1009...), or 1006 when the
    connection was lost without a close handshake."""


@on_open.dispatch
def on_open_default(ws: object):
    return None


@receive.dispatch
def receive_default(ws: object, message: object):
    return None  # a socket that says nothing about messages ignores them


@on_close.dispatch
def on_close_default(ws: object, code: object, reason: object):
    return None


# --------------------------------------------------------------------------------------------
# The socket object


@attrs.define(slots=True, eq=False, repr=False)
class WebSocket:
    """One WebSocket connection, as the application sees it: return one (or an instance of
    your subclass) from a ``@app.websocket`` handler. Every field has a default and is set
    after construction (``init=False``), so subclasses declare fields of their own freely.

    - ``subprotocol``: the one chosen from those the client offered (``None``: none); set it
      in the handler, or list the ones the server speaks, in preference order, in
      ``subprotocols`` (or the route's ``subprotocols=[...]``): the first the client offered
      is chosen.
    - ``max_message`` (bytes; 1009 past it), ``compression`` (accept permessage-deflate when
      offered), ``ping_interval``/``ping_timeout``/``close_timeout`` (seconds).
    - Once open: ``conn`` (the transport), ``request`` (the upgrade request, until
      ``on_open`` returns: keep what you need of it, as an idle socket does not keep its
      headers), ``protocol``
      (the :class:`~clos_web.ws.protocol.WebSocketProtocol`), ``stream`` (the channel
      subscription, if any), ``close_code`` (once closed).

    >>> WebSocket()
    <WebSocket new>
    """

    subprotocol: str | None = attrs.field(default=None, init=False)
    subprotocols: Any = attrs.field(default=(), init=False)
    max_message: int = attrs.field(default=DEFAULT_MAX_MESSAGE, init=False)
    compression: bool = attrs.field(default=True, init=False)
    ping_interval: float = attrs.field(default=20.0, init=False)
    ping_timeout: float = attrs.field(default=20.0, init=False)
    close_timeout: float = attrs.field(default=5.0, init=False)
    conn: Any = attrs.field(default=None, init=False)
    request: Any = attrs.field(default=None, init=False)
    protocol: Any = attrs.field(default=None, init=False)
    stream: Any = attrs.field(default=None, init=False)
    close_code: int | None = attrs.field(default=None, init=False)
    _pending: Any = attrs.field(default=None, init=False)   # subscribe() calls before open
    _awaiting_pong: bool = attrs.field(default=False, init=False)
    _closing_since: float | None = attrs.field(default=None, init=False)
    _notified: bool = attrs.field(default=False, init=False)
    _deflate: Any = attrs.field(default=None, init=False)    # the negotiated parameters

    def __repr__(self) -> str:
        if self.conn is None:
            state = "new"
        elif self.close_code is not None:
            state = f"closed {self.close_code}"
        else:
            state = self.protocol.state.name.lower() if self.protocol is not None else "open"
        return f"<{type(self).__name__} {state}>"

    @property
    def is_open(self) -> bool:
        """Whether messages can be sent now (open, no close sent or received)."""
        return (self.conn is not None and self.close_code is None
                and self.protocol is not None and self.protocol.state is _WS_OPEN)

    # -- sending -------------------------------------------------------------------------

    def send(self, message) -> bool:
        """Send ``message``: a ``str`` or :class:`Text` as a text frame, ``bytes`` (or
        ``bytearray``, ``memoryview``) or :class:`Binary` as a binary frame. From the loop or
        any thread (then it is sent on the loop, soon). Returns False when the socket is not
        open (nothing is sent). A client that reads nothing while more than the server's
        ``output_cap`` is queued is closed as a slow consumer."""
        conn = self.conn
        if conn is None:
            raise RuntimeError("this WebSocket is not open yet: send from on_open or later")
        if threading.get_ident() != conn.server._ident:
            conn.server.call_soon_threadsafe(self.send, message)
            return self.is_open
        if not self.is_open:
            return False
        cls = message.__class__
        if cls is Text:
            message = message.data
        elif cls is Binary:
            message = message.data
        if isinstance(message, str):
            frame = self.protocol.send_text(message)
        elif isinstance(message, (bytes, bytearray, memoryview)):
            frame = self.protocol.send_binary(bytes(message))
        else:
            raise TypeError(f"a WebSocket sends str, bytes, Text or Binary, "
                            f"not {type(message).__name__}")
        return _queue(conn, frame)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake (from the loop or any thread): the close frame goes
        out, the connection closes when the peer answers or after ``close_timeout``."""
        conn = self.conn
        if conn is None:
            raise RuntimeError("this WebSocket is not open yet")
        if threading.get_ident() != conn.server._ident:
            conn.server.call_soon_threadsafe(self.close, code, reason)
            return
        if conn.state is not OPEN or not self.is_open:
            return
        server = conn.server
        server.enqueue(conn, self.protocol.close(code, reason, now=server.now))
        self._closing_since = server.now
        server.set_deadline(conn, server.now + self.close_timeout)
        _settle(self, conn)

    # -- channels --------------------------------------------------------------------------

    def subscribe(self, names, last_event_id: str | None = None, *,
                  registry: Channels | None = None, presence=None) -> None:
        """Receive the events of channel(s) ``names``: the ones missed after
        ``last_event_id`` first (from history; ``reset`` when history cannot cover the gap),
        then live ones, each one text frame of JSON ``{"id", "event", "data"}``. Before the
        socket is open (in the handler) the call waits for the open. Loop thread only.
        ``presence`` (a JSON-able value) makes this client present on the channels (see
        :meth:`~clos_web.push.Channels.presence`). A second call adds channels (live events
        only). Raises ``HTTPError(503)`` when the registry cannot take the channels."""
        names = _names(names)
        registry = registry if registry is not None else default_channels
        if self.conn is None:
            if self._pending is None:
                self._pending = []
            self._pending.append((names, last_event_id, registry, presence))
            return
        _subscribe(self, names, last_event_id, registry, presence)

    def unsubscribe(self, names=None) -> None:
        """Stop receiving ``names`` (all channels if ``None``). Loop thread only."""
        sub = self.stream
        if sub is None or self.conn is None:
            return
        drop = list(sub.names) if names is None else [n for n in _names(names)
                                                       if n in sub.names]
        sub.registry._remove(self.conn, drop, self.conn.server)
        sub.names[:] = [n for n in sub.names if n not in drop]
        if sub.client is not None:
            for name in drop:
                broker_present(sub.registry.backplane(), sub.registry, sub, name, False)


def _queue(conn: Connection, frame: bytes) -> bool:
    """Queue a frame a handler sends: over the output cap already queued, the client is a
    slow consumer and is closed; one frame larger than the cap goes when less is queued."""
    server = conn.server
    if conn.state is not OPEN:
        return False
    if conn.out_bytes > server.limits.output_cap:
        log.info("closing slow WebSocket consumer %s (%d bytes queued)", conn.addr,
                 conn.out_bytes)
        server.close(conn)
        return False
    server.enqueue(conn, frame)
    server.flush(conn)
    return True


# --------------------------------------------------------------------------------------------
# The upgrade


def handshake_problem(request: Request) -> HTTPError | None:
    """Why ``request`` is not a WebSocket opening handshake (RFC 6455 §4.2.1): an
    :class:`HTTPError` (400, or 426 with ``Sec-WebSocket-Version: 13``), or ``None``."""
    problem = check_handshake(request.method, request.headers, request.version)
    if problem is None:
        return None
    status, reason = problem
    headers = [("Sec-WebSocket-Version", "13")] if status == 426 else []
    return HTTPError(status, reason, headers=headers)


def origin_allowed(request: Request, origins) -> bool:
    """Whether the ``Origin`` of ``request`` may open a WebSocket: no ``Origin`` (not a
    browser), the same origin as the ``Host`` it asked for, one of ``origins`` (exact
    ``scheme://host[:port]`` strings), or any when ``origins == "*"``. A browser opens
    cross-site WebSockets with the user's cookies: without this check any site could act as
    the user (cross-site WebSocket hijacking)."""
    origin = request.headers.get("origin")
    if origin is None or origins == "*":
        return True
    if origins and origin in origins:
        return True
    host = request.headers.get("host")
    if host is None:
        return False
    return origin in (f"http://{host}", f"https://{host}")


def _choose_subprotocol(ws: WebSocket, offered: list, preferred) -> str | None:
    if ws.subprotocol is not None:
        if ws.subprotocol not in offered:
            raise ValueError(f"subprotocol {ws.subprotocol!r} was not offered by the client "
                             f"({offered!r})")
        return ws.subprotocol
    for name in preferred or ():
        if name in offered:
            return name
    return None


@write.dispatch
def write_websocket(ws: WebSocket, conn: Connection):
    http = conn.protocol
    request = http.request
    server = conn.server
    problem = handshake_problem(request)
    if problem is not None:
        raise problem
    if ws.conn is not None:
        raise RuntimeError(f"{ws!r} is open on another connection already")
    offered = parse_subprotocols(request.headers)
    ws.subprotocol = _choose_subprotocol(ws, offered, ws.subprotocols)
    fields = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
              ("Sec-WebSocket-Accept", accept_key(request.headers["sec-websocket-key"]))]
    if ws.subprotocol is not None:
        fields.append(("Sec-WebSocket-Protocol", ws.subprotocol))
    deflate = None
    if ws.compression:
        accepted = negotiate(parse_extensions(request.headers))
        if accepted is not None:
            answer, deflate = accepted
            fields.append(("Sec-WebSocket-Extensions", answer))
    head = response_head(101, header_block(fields))
    http.status = 101
    http.response_started = True
    http.switch()
    server.enqueue(conn, head)
    count_answer(server.answers, request, 101)  # HTTP's part ends here (no answered)
    ws.conn, ws.request = conn, request
    ws._deflate = deflate
    ws.protocol = WebSocketProtocol(max_message=ws.max_message, deflate=deflate,
                                    close_timeout=ws.close_timeout)
    conn.protocol = ws
    # the HTTP side is done with: its buffer becomes a bare one (what came behind the
    # handshake is kept), so an idle socket holds only what WebSocket needs
    conn.buf = Input(conn.buf.data)
    # process() sets the connection's deadline from the HTTP side's once this returns
    http.deadline = server.now + ws.ping_interval
    server.resume_reading(conn)
    server.call_soon_threadsafe(_opened, ws, conn)


def _opened(ws: WebSocket, conn: Connection) -> None:
    """After the 101 is queued: subscriptions asked for in the handler, ``on_open``, then any
    frames that came right behind the handshake."""
    if conn.state is not OPEN or conn.protocol is not ws:
        return
    try:
        pending, ws._pending = ws._pending, None
        for names, last_id, registry, presence in pending or ():
            _subscribe(ws, names, last_id, registry, presence)
        on_open(ws)
        ws.request = None  # an idle socket does not keep the upgrade's headers (~1.5 KB)
    except HTTPError as err:
        _fail(ws, conn, 1013 if err.status == 503 else 1011, err.reason)
        return
    except Exception:
        log.exception("on_open failed for %r", ws)
        _fail(ws, conn, 1011, "internal error")
        return
    if conn.buf.data:
        data_received(ws, conn)
    else:
        server = conn.server
        server.flush(conn)


def _fail(ws: WebSocket, conn: Connection, code: int, reason: str) -> None:
    if ws.is_open:
        ws.close(code, reason[:100])
    else:
        conn.server.close_when_sent(conn)


# --------------------------------------------------------------------------------------------
# The loop's generic functions, for a connection whose protocol is a WebSocket


@data_received.dispatch
def data_received_websocket(ws: WebSocket, conn: Connection):
    data = conn.buf.data
    protocol = ws.protocol
    if data:
        protocol.receive_data(bytes(data))
        data.clear()
    ws._awaiting_pong = False
    _events(ws, conn)


def _events(ws: WebSocket, conn: Connection) -> None:
    """Handle the complete frames: messages to ``receive``, the peer's close; answers (pongs,
    the close echo) go out. While more than the output cap is queued, frames wait (the
    transport stops reading too): a client that sends without reading is held back."""
    protocol = ws.protocol
    server = conn.server
    cap = server.limits.output_cap
    while conn.state is OPEN and conn.out_bytes <= cap:
        event = protocol.next_event()
        if event is None:
            break
        cls = event.__class__
        if cls is Text or cls is Binary:
            try:
                receive(ws, event)
            except Exception:
                log.exception("receive failed for %r", ws)
                if ws.is_open:
                    ws.close(1011, "internal error")
        elif cls is Close:
            out = protocol.data_to_send()
            if out:
                server.enqueue(conn, out)
            _notify(ws, event.code, event.reason)
        elif cls is Ping:  # every ping answered, in order (the RFC requires the last only)
            server.enqueue(conn, protocol.data_to_send())
        # Pong: the peer is alive (any input says so)
    if conn.state is not OPEN:
        return
    _settle(ws, conn)


def _settle(ws: WebSocket, conn: Connection) -> None:
    """Send what the protocol has to say; close the transport once the protocol is done."""
    protocol = ws.protocol
    server = conn.server
    out = protocol.data_to_send()
    if out:
        server.enqueue(conn, out)
    if protocol.should_close_transport:
        if not ws._notified:  # we failed it (1002, 1007, 1009...) or the handshake completed
            _notify(ws, protocol.close_code or 1006, getattr(protocol, "close_reason", "") or "")
        server.close_when_sent(conn)
        return
    server.flush(conn)
    if ws._closing_since is None:
        server.set_deadline(conn, server.now + ws.ping_interval)


def _notify(ws: WebSocket, code: int, reason: str) -> None:
    if ws._notified:
        return
    ws._notified = True
    ws.close_code = code
    _leave_channels(ws)
    try:
        on_close(ws, code, reason)
    except Exception:
        log.exception("on_close failed for %r", ws)


def _leave_channels(ws: WebSocket) -> None:
    sub = ws.stream
    if sub is not None:
        ws.stream = None
        close_stream(sub, ws.conn)


@output_drained.dispatch
def output_drained_websocket(ws: WebSocket, conn: Connection):
    if ws.protocol is not None:
        _events(ws, conn)


@deadline_passed.dispatch
def deadline_passed_websocket(ws: WebSocket, conn: Connection):
    server = conn.server
    if ws._closing_since is not None:  # no close from the peer in time
        ws.protocol.timed_out(float("inf"))
        _notify(ws, 1006, "no close frame from the peer")
        server.close(conn)
        return
    if not ws.is_open:
        return
    if ws._awaiting_pong:  # a ping went unanswered: the peer is gone
        log.info("closing dead WebSocket peer %s", conn.addr)
        _notify(ws, 1006, "no answer to a ping")
        server.close(conn)
        return
    ws._awaiting_pong = True
    server.enqueue(conn, ws.protocol.ping(b""))
    server.flush(conn)
    server.set_deadline(conn, server.now + ws.ping_timeout)


@connection_lost.dispatch
def connection_lost_websocket(ws: WebSocket, conn: Connection):
    _notify(ws, 1006, "connection lost")


@shutdown.dispatch
def shutdown_websocket(ws: WebSocket, conn: Connection):
    if ws.is_open:
        ws.close(1001, "going away")
    elif ws._closing_since is None:
        conn.server.close_when_sent(conn)


# --------------------------------------------------------------------------------------------
# Channels over WebSocket: a transport of the push layer


class WebSocketBatch(Batch):
    """What the WebSocket transport's batches share: their name in metrics, and their
    heartbeat (none: a socket pings by itself when quiet)."""

    __slots__ = ()
    transport = "websocket"


class WSBatch(WebSocketBatch):
    """WebSocket subscribers without compression: each event one text frame, the same bytes
    for all."""

    __slots__ = ()


class WSDeflateBatch(WebSocketBatch):
    """WebSocket subscribers that negotiated permessage-deflate: each event one compressed
    text frame (compressed once, standalone, so every client decodes it), the same bytes for
    all with the same window size."""

    __slots__ = ()

    def send_queued(self) -> None:
        """The burst's frames for each socket's window size, joined once per window size."""
        messages, self.queued = self.queued, None
        if not messages:
            return
        joined: dict = {}  # the socket's protocol settings -> the burst's bytes
        for conn in self:
            protocol = conn.protocol.protocol
            deflate = protocol.deflate
            key = None if deflate is None else (deflate.server_max_window_bits,
                                                 deflate.min_size)
            data = joined.get(key)
            if data is None:
                data = joined[key] = b"".join([m.frame(protocol) for m in messages])
            conn.server.push(conn, data, burst=len(messages) > 1)


class WSVectorBatch(WebSocketBatch):
    """WebSocket subscribers of several channels of a broker with positions per channel
    (Redis): each gets the event with its own id (its position in every channel it reads)."""

    __slots__ = ()

    @classmethod
    def of(cls, members: dict) -> "WSVectorBatch":
        return cls(members.values())


@attrs.define(slots=True, eq=False, repr=False)
class WSSubscription(Subscription):
    """The WebSocket transport of channels (``ws.stream``): events as text frames of JSON.
    Ending it (``end_stream``, ``Channels.disconnect``) closes the socket with 1001, after which
    the client reconnects and resumes."""

    ws: Any = None
    batch = WSBatch
    closes_connection = False


@attrs.define(slots=True, eq=False, repr=False)
class WSDeflateSubscription(WSSubscription):
    """:class:`WSSubscription` for a client that negotiated permessage-deflate."""

    batch = WSDeflateBatch


@attrs.define(slots=True, eq=False, repr=False)
class WSVectorSubscription(VectorSubscription):
    """Several channels of a Redis-like broker over WebSocket: each event's ``id`` is the
    stream's position in every channel (one id resumes them all)."""

    ws: Any = None
    batch = WSVectorBatch
    closes_connection = False

    def message(self, event: Event) -> bytes:
        if event.id:
            self.positions[event.channel] = event.id
        return json_bytes({"id": vector_id(self.positions), "event": event.event or "message",
                           "data": event.data})


# (event, its SharedMessage) of the last event written: swapped whole, so threads agree
_last_shared: tuple = (None, None)


def event_frame(event: Event) -> bytes:
    """``event`` as one uncompressed text frame of JSON ``{"id", "event", "data"}``: built
    once per event (by its :func:`event_message`) and shared by every subscriber."""
    return event_message(event).plain_frame()


def event_message(event: Event) -> SharedMessage:
    """``event`` as a :class:`~clos_web.ws.protocol.SharedMessage`: its frame for a client
    that negotiated permessage-deflate is compressed once (standalone) and shared by all."""
    global _last_shared
    last = _last_shared
    if last[0] is event:
        return last[1]
    message = SharedMessage(event.json(), Opcode.TEXT)
    _last_shared = (event, message)
    return message


def _frame_for(sub, event: Event) -> bytes:
    ws = sub.ws
    if isinstance(sub, WSVectorSubscription):
        message = SharedMessage(sub.message(event), Opcode.TEXT)  # its own id: its own frame
        return message.frame(ws.protocol)
    if ws is not None and ws._deflate is not None:
        return event_message(event).frame(ws.protocol)
    return event_frame(event)


@write.dispatch
def write_event_ws(event: Event, sub: WSSubscription):
    sub.conn.server.push(sub.conn, _frame_for(sub, event))


@write.dispatch
def write_event_ws_vector(event: Event, sub: WSVectorSubscription):
    sub.conn.server.push(sub.conn, _frame_for(sub, event))


@write.dispatch
def write_event_ws_batch(event: Event, batch: WSBatch):
    batch.queue(event_frame(event))  # sent with the rest of the burst, the same bytes to all


@write.dispatch
def write_event_ws_deflate_batch(event: Event, batch: WSDeflateBatch):
    batch.queue(event_message(event))  # one compressed frame per window size, shared


@write.dispatch
def write_event_ws_vector_batch(event: Event, batch: WSVectorBatch):
    for sub in batch:
        sub.conn.server.push(sub.conn, _frame_for(sub, event))


# Heartbeats: a WebSocket keeps itself alive (a ping whenever it has been quiet for
# ping_interval, and a dead peer is closed), so the channels' heartbeats send nothing more.

@write.dispatch
def write_heartbeat_ws_batch(beat: Heartbeat, batch: WebSocketBatch):
    return None


@write.dispatch
def write_heartbeat_ws(beat: Heartbeat, sub: WSSubscription):
    return None


@write.dispatch
def write_heartbeat_ws_vector(beat: Heartbeat, sub: WSVectorSubscription):
    return None


@write.dispatch
def write_end_ws(end: End, sub: WSSubscription):
    if sub.ws is not None:
        sub.ws.close(1001, "stream ended: reconnect to resume")


@write.dispatch
def write_end_ws_vector(end: End, sub: WSVectorSubscription):
    if sub.ws is not None:
        sub.ws.close(1001, "stream ended: reconnect to resume")


def _subscribe(ws: WebSocket, names: list, last_id, registry: Channels, presence) -> None:
    conn = ws.conn
    server = conn.server
    sub = ws.stream
    if sub is not None:
        if sub.registry is not registry:
            raise ValueError("a WebSocket reads the channels of one registry")
        for name in names:
            if name not in sub.names:
                registry._add(sub, name)
        return
    if len(names) > 1 and registry.backplane() is not LOCAL:
        sub = WSVectorSubscription(registry, conn, list(names))
    elif ws._deflate is not None:
        sub = WSDeflateSubscription(registry, conn, list(names))
    else:
        sub = WSSubscription(registry, conn, list(names))
    sub.ws = ws
    if presence is not None:
        sub.presence, sub.client = presence, secrets.token_hex(6)
    first = registry._join(sub, last_id, _budget(server, conn))  # may refuse (503)
    ws.stream = sub
    if first is not None and sub.client is not None and registry.presence_events:
        first = list(first) + [registry._presence_event("presence", name, None,
                                                        registry._presence_local(name))
                               for name in names]
    for event in first or ():
        server.push(conn, _frame_for(sub, event))
    if sub.client is not None:
        for name in names:
            broker_present(registry.backplane(), registry, sub, name, True)


# --------------------------------------------------------------------------------------------
# The route decorator's pieces (App.websocket)


def websocket_route(fn, *, origins=None, subprotocols=None, max_message=None,
                    compression=None, ping_interval=None):
    """Wrap a WebSocket handler ``fn`` for :meth:`App.websocket <clos_web.App.websocket>`: a
    guard that refuses what is not a handshake (400/426) or comes from another origin (403)
    before the handler runs, and a handler that applies the route's settings to the socket
    it returns (``None``/``False`` refuses with 403)."""

    def guard(request: Request) -> None:
        problem = handshake_problem(request)
        if problem is not None:
            raise problem
        if not origin_allowed(request, origins):
            raise HTTPError(403, "WebSocket from another origin refused")

    @functools.wraps(fn)
    def handler(*args, **kw):
        ws = fn(*args, **kw)
        if ws is None or ws is False:
            raise HTTPError(403, "Forbidden")
        if not isinstance(ws, WebSocket):
            raise TypeError(f"a WebSocket handler returns a WebSocket, not "
                            f"{type(ws).__name__}")
        if max_message is not None:
            ws.max_message = max_message
        if compression is not None:
            ws.compression = compression
        if ping_interval is not None:
            ws.ping_interval = ping_interval
        if subprotocols and not ws.subprotocols:
            ws.subprotocols = list(subprotocols)
        return ws

    return guard, handler


__all__ = [
    "WebSocket", "Text", "Binary", "Ping", "Pong", "Close", "on_open", "receive", "on_close",
    "WSSubscription", "WSDeflateSubscription", "WSVectorSubscription", "WSBatch",
    "WSDeflateBatch", "WSVectorBatch", "WebSocketBatch", "event_frame", "event_message",
    "handshake_problem", "origin_allowed", "websocket_route",
]
