"""The contract app: /plaintext, /json, POST /echo, and push: GET /sub/CHANNEL (SSE),
POST /pub/CHANNEL, GET /poll/CHANNEL (long-poll), GET /ws/CHANNEL (WebSocket subscriber) and
GET /ws-echo (WebSocket echo), GET /metrics (Prometheus) and GET /_clos/ (the live dashboard).
The WebSocket routes take any Origin: what they serve is as
public as /sub/CHANNEL (an app's own routes default to its own origin).

Run: .venv/bin/python examples/hello.py --port 8000 [--workers N --redis URL]
"""

import argparse
import sys

import attrs

from clos_web import App, BadRequest, Channels, PlainText, Response, channel, cli
from clos_web.push import Accepted, request_last_id
from clos_web.ws import Binary, Text, WebSocket, receive


app = App()
channels = Channels()  # this app's channels (history, heartbeats)

HELLO = Response(b"Hello, World!", content_type="text/plain")


@app.get("/plaintext")
def plaintext():
    return HELLO


@app.get("/json")
def json_():
    return {"message": "Hello, World!"}


@app.post("/echo")
def echo(request):
    # The request's Content-Type verbatim (as a raw header: no charset is added).
    ctype = request.header("content-type")
    return Response(request.body, headers=[("Content-Type", ctype)] if ctype else [])


@app.get("/add")
def add(a: int, b: int):
    """GET /add?a=INT&b=INT: the sum as text/plain; a missing or non-integer one is a 400."""
    return PlainText(a + b)


@app.get("/sub/{name}")
@channel(channels)
def sub(name: str):
    """GET /sub/CHANNEL: an SSE stream of CHANNEL (resumes from Last-Event-ID)."""
    return name


@app.get("/poll/{name}")
@channel(channels, poll=True)
def poll(name: str):
    """GET /poll/CHANNEL?lastEventId=ID: long-poll; JSON events after ID."""
    return name


@app.post("/pub/{name}")
def pub(request, name: str):
    """POST /pub/CHANNEL: publish the body as one event's data; 202 with the event id once
    stored (503 if the broker could not store it)."""
    try:
        data = request.body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(reason="the event data must be UTF-8") from None
    return Accepted(channels.publish(name, data))


@app.websocket("/ws/{name}", origins="*")
def ws_sub(request, name: str):
    """GET /ws/CHANNEL: a WebSocket subscriber of CHANNEL (resumes from ?lastEventId=); each
    event one text frame of JSON {"id", "event", "data"}."""
    ws = WebSocket()
    ws.subscribe(name, request_last_id(request), registry=channels)
    return ws


@attrs.define(slots=True, eq=False, repr=False)
class Echo(WebSocket):
    """A socket that sends every message back."""


@app.websocket("/ws-echo", origins="*", max_message=16 * 2**20)
def ws_echo():
    """GET /ws-echo: every text and binary message echoed unchanged (up to 16 MiB)."""
    return Echo()


@receive.dispatch
def echo_message(ws: Echo, message: Text | Binary):
    ws.send(message)


app.mount_metrics("/metrics")  # GET /metrics: Prometheus text (clos_web.ops.metrics)
app.mount_dashboard("/_clos")  # GET /_clos/: the live dashboard (no token: try it at once)


def main(argv=None):
    """Serve this app: ``--port --host --heartbeat`` and the flags of ``python -m clos_web``
    (``--workers N --redis URL --pid-file PATH --log-level``), which mean the same here."""
    parser = argparse.ArgumentParser(description=__doc__)
    cli.add_arguments(parser)
    parser.add_argument("--heartbeat", type=float, default=15.0, metavar="SECONDS",
                        help="comment heartbeat interval on idle SSE streams")
    args = parser.parse_args(argv)

    def load():
        # (--redis is in the environment now: the channels above read it at their first use)
        channels.heartbeat = args.heartbeat
        return app

    sys.exit(cli.run(load, args))


if __name__ == "__main__":
    main()
