"""clos_web: an event-driven web framework built from generic functions over attrs classes."""

from __future__ import annotations

import threading

from .web.app import App, Route, default_app, respond
from .web.cookies import cookie_header, cookies, delete_cookie, parse_cookies, set_cookie
from .web.middleware import cors, csrf_guard, logging_middleware
from .web.params import Length, ParamError, Pattern, Range, UploadedFile, parse_param, restrict
from .web.responses import PlainText, as_response, json_text, redirect, to_json, with_headers
from .web.sessions import MemorySessions, Session, SignedCookieSessions
from .web.static import StaticFiles
from .web.workers import WorkerPool
from .http import (
    DEFERRED, BadRequest, Buffer, HTTPError, HeaderFieldsTooLarge, Limits, MethodNotAllowed,
    NotFound, NotImplementedCoding, PayloadTooLarge, Request, RequestTimeout, Response, Server,
    URITooLong, VersionNotSupported, error_response, handle_request, parse, parse_params,
    send_response, write,
)
from .loop import Connection, buffer_input, process_ready, raise_fd_limit
from .push import (
    Accepted, Channel, Channels, Event, EventStream, LongPoll, Message, channel, channels,
    encode_event,
    end_stream, publish, subscribe, unsubscribe,
)
from .ws import Binary, Text, WebSocket, on_close, on_open, receive
from .clos import call_next_method, describe, generic, next_method_p


def start(app, port: int = 0, host: str = "127.0.0.1", *, background: bool = True,
          limits: Limits | None = None, debug: bool = False) -> Server:
    """Start serving ``app``. With ``background=True`` (the default) the loop runs on a thread
    and the :class:`Server` is returned at once, for the REPL and tests; ``port=0`` picks a free
    port (``server.port``). With ``background=False`` this blocks like :func:`serve`."""
    server = Server(app, host, port, limits or Limits(), debug)
    if background:
        return server.start()
    server.bind()
    server.serve_forever(stop_on_signals=threading.current_thread() is threading.main_thread())
    return server


def serve(app, port: int = 8080, host: str = "127.0.0.1", **kw) -> Server:
    """Serve ``app`` on this thread until Ctrl-C, SIGTERM or ``server.stop``. On the main
    thread the signals stop it gracefully: requests in flight finish, streams end cleanly;
    a second signal closes what is left at once."""
    return start(app, port, host, background=False, **kw)


__all__ = [
    "App", "Route", "Server", "start", "serve", "Limits", "Request", "Response", "Buffer",
    "HTTPError", "BadRequest", "NotFound", "MethodNotAllowed", "RequestTimeout",
    "PayloadTooLarge", "URITooLong", "HeaderFieldsTooLarge", "NotImplementedCoding",
    "VersionNotSupported", "parse", "parse_params", "process_ready", "buffer_input",
    "handle_request", "write", "error_response", "Connection",
    "DEFERRED", "raise_fd_limit", "generic", "call_next_method", "next_method_p", "describe",
    "send_response", "to_json", "json_text", "respond",
    "default_app", "parse_param", "restrict", "Range", "Length", "Pattern", "UploadedFile",
    "ParamError", "PlainText", "redirect", "as_response", "with_headers", "cookies",
    "parse_cookies",
    "cookie_header", "set_cookie", "delete_cookie", "Session", "MemorySessions",
    "SignedCookieSessions", "StaticFiles", "WorkerPool", "cors", "csrf_guard", "logging_middleware",
    "Channel", "Channels", "Accepted", "Event", "EventStream", "LongPoll", "Message", "channel",
    "channels",
    "encode_event", "end_stream", "publish", "subscribe", "unsubscribe",
    "WebSocket", "Text", "Binary", "on_open", "receive", "on_close",
]
