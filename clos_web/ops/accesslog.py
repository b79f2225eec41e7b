"""The access log: one structured line per answered request, off by default.

``enable(fmt="json" | "text", logger=None)`` adds an ``after`` method on
:func:`~clos_web.http.server.answered` (every request, once its answer is queued) that logs
``time`` (unix seconds), ``method``, ``route`` (the template, never the raw path),
``status``, ``bytes``, ``duration`` (seconds, at the loop's resolution: see
:mod:`clos_web.ops.metrics`) and ``client`` (its address) at INFO on ``logger`` (default
``logging.getLogger("clos_web.access")``); ``disable()`` removes it, so an app that never
enables it pays nothing.

``bytes`` is what the connection has queued when the answer is: the answer itself (head
included) in the usual case of an answer queued in the turn that read the request; with a
pipelining client whose earlier answer is still unsent, that answer's rest too.

>>> enable("text"); disable()
"""

from __future__ import annotations

import json
import logging
import time

from ..http.parser import Request
from ..http.server import answered
from ..loop.server import Connection
from .metrics import _template

_state = {"method": None, "fmt": "json", "logger": None, "offset": 0.0}


def enable(fmt: str = "json", logger: logging.Logger | None = None) -> None:
    """Log one line per answered request, as JSON (``fmt="json"``) or ``key=value`` text."""
    if fmt not in ("json", "text"):
        raise ValueError("fmt is 'json' or 'text'")
    _state.update(fmt=fmt, logger=logger or logging.getLogger("clos_web.access"),
                  offset=time.time() - time.monotonic())
    if _state["method"] is None:
        _state["method"] = answered.after(log_answer)


def disable() -> None:
    """Stop logging requests (the ``after`` method goes)."""
    method, _state["method"] = _state["method"], None
    if method is not None:
        answered.remove_method(method)


def log_answer(conn: Connection, request: Request):
    """The ``after`` method on ``answered`` that :func:`enable` adds, after ``answered``'s own
    method has counted the answer. Specialised on ``Request``, not ``object``: a method with
    the same specialisers *replaces* another (as in CLOS), so a user's after method on
    ``(Connection, object)`` would otherwise be lost on ``enable`` and stay lost after
    ``disable``."""
    server = conn.server
    route = _template(request.route)
    began = getattr(conn.protocol, "deferred_at", None)
    duration = 0.0 if began is None else server.now - began
    addr = conn.addr
    record = {
        "time": round(server.now + _state["offset"], 6), "method": request.method[:16],
        "route": route, "status": conn.protocol.status, "bytes": conn.out_bytes,
        "duration": round(duration, 6),
        "client": addr[0] if isinstance(addr, tuple) else str(addr),
    }
    if _state["fmt"] == "json":
        line = json.dumps(record, separators=(",", ":"))
    else:
        line = " ".join(f"{k}={json.dumps(v) if isinstance(v, str) else v}"
                        for k, v in record.items())
    _state["logger"].info("%s", line)


__all__ = ["enable", "disable", "log_answer"]
