"""The ``loop`` layer: one ``selectors`` loop serving many connections (transport only).

- :mod:`~clos_web.loop.server`: ``Server`` (selector, accept, output queues with the
  slow-consumer policy, timers, ``call_soon_threadsafe``, the GC policy), ``Connection``,
  ``Listener``, ``Waker``, and the generic functions of the loop's protocol.
"""

from .server import (
    DEFERRED, EVENT_READ, EVENT_WRITE, Connection, FileSegment, Listener, Server, Waker, answer,
    buffer_input, close_stream, error_response, handle_request, process_ready, raise_fd_limit,
    send_response, shutdown_stream, stream_idle, write,
)

__all__ = [
    "Server", "Connection", "Listener", "Waker", "FileSegment", "DEFERRED", "EVENT_READ",
    "EVENT_WRITE", "process_ready", "buffer_input", "handle_request", "write", "error_response",
    "close_stream", "shutdown_stream", "stream_idle", "send_response", "answer",
    "raise_fd_limit",
]
