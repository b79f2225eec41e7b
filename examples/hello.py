"""The contract app: /plaintext, /json, POST /echo, and push: GET /sub/CHANNEL (SSE),
POST /pub/CHANNEL, GET /poll/CHANNEL (long-poll).

Run: .venv/bin/python examples/hello.py --port 8000
"""

import argparse
import logging

from clos_web import App, BadRequest, Channels, Response, channel, serve
from clos_web import PlainText


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
    """POST /pub/CHANNEL: publish the body as one event's data; 202 with the event id."""
    try:
        data = request.body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(reason="the event data must be UTF-8") from None
    return Response(channels.publish(name, data), status=202, content_type="text/plain")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--heartbeat", type=float, default=15.0, metavar="SECONDS",
                        help="comment heartbeat interval on idle SSE streams")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    channels.heartbeat = args.heartbeat
    print(f"serving on http://{args.host}:{args.port}", flush=True)
    serve(app, args.port, args.host)


if __name__ == "__main__":
    main()
