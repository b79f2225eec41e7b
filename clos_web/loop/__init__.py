"""The ``loop`` layer: one event loop over epoll (``selectors`` elsewhere), transport only (it
knows nothing of HTTP).

- :mod:`~clos_web.loop.server`: ``Loop`` (its poller, accept, output queues with the
  slow-consumer policy, deadlines, timers, ``call_soon_threadsafe``, the GC policy),
  ``Connection``, ``Listener``, ``Waker``, ``FileSegment``, ``Input`` and ``DISCARD``, the
  pollers (``EpollPoller``, ``SelectorsPoller``, ``DefaultPoller``), and the generic functions
  of the loop's protocol: ``process_ready``, ``buffer_input``, ``connection_made``,
  ``data_received``, ``output_drained``, ``deadline_passed``, ``connection_lost``,
  ``shutdown``, ``refuse_connection``; ``current_loop()``, the loop running on this thread.
"""

from .server import (
    DISCARD, EVENT_READ, EVENT_WRITE, Connection, DefaultPoller, EpollPoller, FileSegment, Input,
    Link, Listener, Loop, Reading, SelectorsPoller, Waker,
    buffer_input, connection_lost, connection_made, data_received, deadline_passed,
    current_loop, output_drained, process_ready, raise_fd_limit, refuse_connection, shutdown,
)

__all__ = [
    "Loop", "Connection", "Input", "DISCARD", "EpollPoller", "SelectorsPoller", "DefaultPoller",
    "Listener", "Waker", "FileSegment", "Link", "Reading", "EVENT_READ",
    "EVENT_WRITE", "process_ready", "buffer_input", "connection_made", "data_received",
    "output_drained", "deadline_passed", "connection_lost", "shutdown", "refuse_connection",
    "raise_fd_limit", "current_loop",
]
