"""The app ``tests/test_scale_out.py`` serves with N workers sharing a Redis broker.

    python -m clos_web tests.scale_app:app --workers 2 --redis URL --port P --pid-file F

(cwd = the repository root.) ``--redis`` sets ``CLOS_WEB_REDIS`` before this module is
imported, so ``registry`` below stores its events in Redis and every worker delivers them.

- ``GET /pid``: this worker's pid, as text (which process a connection reached)
- ``GET /plaintext``: ``Hello, World!`` (a request that never touches Redis)
- ``GET /sub/NAME``: an SSE stream of channel NAME (honours ``Last-Event-ID``)
- ``POST /pub/NAME``: publishes the body (UTF-8) on NAME; ``202`` with the event id once Redis
  stored it, ``503`` when it could not be stored
"""

from __future__ import annotations

import os

from clos_web import Accepted, App, BadRequest, Channels, Response, channel

app = App()
registry = Channels(heartbeat=1.0)

HELLO = Response(b"Hello, World!", content_type="text/plain")


@app.get("/pid")
def pid():
    """This worker's pid."""
    return str(os.getpid())


@app.get("/plaintext")
def plaintext():
    return HELLO


@app.get("/sub/{name}")
@channel(registry)
def sub(name: str):
    """An SSE stream of channel ``name``."""
    return [name]


@app.post("/pub/{name}")
def pub(request, name: str):
    """Publish the body on ``name``: 202 with the event id once stored, 503 if it cannot be."""
    try:
        data = request.body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(reason="the event data must be UTF-8") from None
    return Accepted(registry.publish(name, data))
