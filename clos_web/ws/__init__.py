"""The ``ws`` layer: WebSocket (RFC 6455, permessage-deflate RFC 7692) on the same loop,
port and channels as HTTP.

- :mod:`clos_web.ws.protocol`: the sans-I/O protocol (frames, masking, fragmentation, UTF-8,
  the close handshake, limits) and the handshake's pieces.
- :mod:`clos_web.ws.deflate`: permessage-deflate, negotiated and bounded.
- :mod:`clos_web.ws.server`: the upgrade, :class:`WebSocket` and its generic functions
  ``on_open``, ``receive``, ``on_close``, and channels over WebSocket.
"""

from .protocol import Binary, Close, Ping, Pong, Text, WebSocketProtocol, accept_key
from .server import (
    WebSocket, WSSubscription, event_frame, handshake_problem, on_close, on_open,
    origin_allowed, receive,
)

__all__ = [
    "WebSocket", "Text", "Binary", "Ping", "Pong", "Close", "WebSocketProtocol", "accept_key",
    "on_open", "receive", "on_close", "WSSubscription", "event_frame", "handshake_problem",
    "origin_allowed",
]
