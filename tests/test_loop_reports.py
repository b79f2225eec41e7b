"""The loop reports what blocks it: a handler holding the loop past the threshold is logged
with its route, duration and a stack taken while it blocked, at most once per route per
minute; the lag shows in the loop-lag histogram."""

from __future__ import annotations

import logging
import time

from clos_web import App
from clos_web.ops import metrics as ops_metrics

from conftest import request, wait_for


def blocking_app():
    app = App()

    @app.get("/slow/{n}")
    def slow(n: int):
        time.sleep(0.3)  # holds the loop: what the watchdog must catch
        return "done"

    @app.get("/fast")
    def fast():
        return "ok"

    app.mount_metrics("/metrics")
    return app


def reports(caplog):
    return [r for r in caplog.records
            if r.name == "clos_web.ops" and "held the loop" in r.getMessage()]


def test_a_handler_holding_the_loop_is_reported_with_route_duration_and_stack(serve, caplog):
    caplog.set_level(logging.WARNING, logger="clos_web.ops")
    server = serve(blocking_app())
    assert request(server, b"GET /fast HTTP/1.1\r\nHost: t\r\n\r\n")[0] == 200
    assert not reports(caplog)
    started = time.monotonic()
    assert request(server, b"GET /slow/1 HTTP/1.1\r\nHost: t\r\n\r\n")[0] == 200
    wait_for(lambda: reports(caplog))
    [record] = reports(caplog)
    text = record.getMessage()
    assert text.startswith("GET /slow/{n} held the loop for ")  # the template, not the path
    ms = int(text.split("held the loop for ")[1].split(" ms")[0])
    assert 250 <= ms <= 1000 * (time.monotonic() - started) + 50
    assert "time.sleep(0.3)" in text and "in slow" in text  # the stack while it blocked
    report = server._clos_metrics.watchdog.reports[-1]
    assert report["route"] == "GET /slow/{n}" and report["duration"] >= 0.25
    # the lag shows in the loop-lag histogram: a probe due while it blocked ran late
    assert server._clos_metrics.lag_max >= 0.1
    assert server._clos_metrics.lag.max_bound() >= 0.1


def test_the_same_route_is_reported_at_most_once_a_minute(serve, caplog):
    caplog.set_level(logging.WARNING, logger="clos_web.ops")
    server = serve(blocking_app())
    for n in range(3):
        assert request(server, f"GET /slow/{n} HTTP/1.1\r\nHost: t\r\n\r\n".encode())[0] == 200
    watchdog = server._clos_metrics.watchdog
    wait_for(lambda: watchdog.blocked == 3)  # all three seen over the threshold...
    assert len(reports(caplog)) == 1         # ...and reported once


def test_fast_handlers_are_not_reported(serve, caplog):
    caplog.set_level(logging.WARNING, logger="clos_web.ops")
    server = serve(blocking_app())
    for _ in range(50):
        assert request(server, b"GET /fast HTTP/1.1\r\nHost: t\r\n\r\n")[0] == 200
    assert request(server, b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")[0] == 200
    assert not reports(caplog)
    assert server._clos_metrics.watchdog.is_alive()


def test_the_watchdog_stops_with_its_server(serve):
    server = serve(blocking_app())
    wait_for(lambda: getattr(server, "_clos_metrics", None) is not None
             and server._clos_metrics.watchdog is not None)
    watchdog = server._clos_metrics.watchdog
    server.stop(2)
    watchdog.join(2)
    assert not watchdog.is_alive()
