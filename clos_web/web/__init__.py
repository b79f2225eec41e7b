"""The ``web`` layer: what application programmers touch.

- :mod:`~clos_web.web.app`: ``App`` (routes, mounts, middleware, static files, sessions).
- :mod:`~clos_web.web.routing`: the routing trie.
- :mod:`~clos_web.web.params`: typed handler parameters (``parse_param``), restrictions.
- :mod:`~clos_web.web.responses`: ``PlainText``, ``redirect``, ``as_response``, ``with_headers``.
- :mod:`~clos_web.web.cookies`, :mod:`~clos_web.web.sessions`: cookies and sessions.
- :mod:`~clos_web.web.static`: ``StaticFiles``.
- :mod:`~clos_web.web.middleware`: ``cors``, ``csrf_guard``, ``logging_middleware``.
- :mod:`~clos_web.web.workers`: the pool for blocking handlers.
"""
