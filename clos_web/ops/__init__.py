"""Operations: metrics (``GET /metrics``, :func:`~clos_web.ops.metrics.snapshot`), the
watchdog that reports what holds the loop, and the access log.

>>> from clos_web import App
>>> app = App()
>>> app.mount_metrics("/metrics")
"""
