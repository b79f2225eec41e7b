"""The worker pool for blocking handlers (``@app.get(path, blocking=True)``).

A blocking handler (disk, a database driver, ``time.sleep``) must not run on the loop: it runs
on a bounded pool of threads, and its result (or exception) goes back to the loop with
``server.call_soon_threadsafe(server.complete, conn, request, result)``, which writes it in the
connection's pipelined order. Other connections are served meanwhile. Past ``max_pending``
queued jobs the answer is 503 at once, so a flood cannot queue unbounded work.

>>> pool = WorkerPool(max_workers=2)
>>> pool.max_workers
2
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import attrs

from ..http import HTTPError
from ..http import DEFERRED


@attrs.define(slots=True, eq=False)
class WorkerPool:
    """A bounded thread pool handing results back to the loop. Threads start on first use."""

    max_workers: int = 16
    max_pending: int = 1024
    _executor: ThreadPoolExecutor | None = None
    _pending: int = 0
    _lock: threading.Lock = attrs.field(factory=threading.Lock)

    def submit(self, conn, request, job: Callable):
        """Run ``job()`` on a worker; its result answers ``request`` on ``conn``. Returns
        :data:`~clos_web.DEFERRED` for the app's ``handle`` to return (503 when full)."""
        server = conn.server
        with self._lock:
            if self._pending >= self.max_pending:
                raise HTTPError(503, "worker pool full", headers=[("Retry-After", "1")])
            self._pending += 1
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.max_workers,
                                                    thread_name_prefix="clos_web-worker")
            executor = self._executor

        def run():
            try:
                result = job()
            except BaseException as exc:  # handed to the loop, which answers 500 (or the status)
                result = exc
            with self._lock:
                self._pending -= 1
            server.call_soon_threadsafe(server.complete, conn, request, result)

        executor.submit(run)
        return DEFERRED

    def shutdown(self, wait: bool = True) -> None:
        """Stop the threads (after the queued jobs when ``wait``)."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=wait)


__all__ = ["WorkerPool"]
