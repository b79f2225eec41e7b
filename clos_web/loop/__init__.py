"""The ``loop`` layer: one ``selectors`` loop, transport only (it knows nothing of HTTP).

- :mod:`~clos_web.loop.server`: ``Loop`` (selector, accept, output queues with the
  slow-consumer policy, deadlines, timers, ``call_soon_threadsafe``, the GC policy),
  ``Connection``, ``Listener``, ``Waker``, ``FileSegment``, and the generic functions of the
  loop's protocol: ``process_ready``, ``buffer_input``, ``connection_made``, ``data_received``,
  ``output_drained``, ``deadline_passed``, ``connection_lost``, ``shutdown``,
  ``refuse_connection``; ``current_loop()``, the loop running on this thread.
"""

from .server import (
    EVENT_READ, EVENT_WRITE, Connection, FileSegment, Input, Link, Listener, Loop, Reading, Waker,
    buffer_input, connection_lost, connection_made, data_received, deadline_passed,
    current_loop, output_drained, process_ready, raise_fd_limit, refuse_connection, shutdown,
)

__all__ = [
    "Loop", "Connection", "Input", "Listener", "Waker", "FileSegment", "Link", "Reading", "EVENT_READ",
    "EVENT_WRITE", "process_ready", "buffer_input", "connection_made", "data_received",
    "output_drained", "deadline_passed", "connection_lost", "shutdown", "refuse_connection",
    "raise_fd_limit", "current_loop",
]
