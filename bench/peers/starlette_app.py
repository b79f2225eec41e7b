"""Starlette peer for the HTTP and push benchmarks (push: sse-starlette's EventSourceResponse).

Run (from bench/peers/):
    uvicorn starlette_app:app --port N --http h11 --loop asyncio --no-access-log --workers 1
    uvicorn starlette_app:app --port N --http httptools --loop uvloop --no-access-log --workers 1
"""
import asyncio
from collections import defaultdict

from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

HELLO = "Hello, World!"


async def plaintext(request):
    return PlainTextResponse(HELLO)


async def json_(request):
    return JSONResponse({"message": HELLO})


async def add(request):
    try:
        a = int(request.query_params["a"])
        b = int(request.query_params["b"])
    except (KeyError, ValueError):
        return PlainTextResponse("bad request", status_code=400)
    return PlainTextResponse(str(a + b))


# push: channel name -> the asyncio.Queue of every subscriber; in-memory fan-out, no history
channels: dict[str, set[asyncio.Queue]] = defaultdict(set)
last_id: dict[str, int] = defaultdict(int)


async def sub(request):
    name = request.path_params["channel"]
    queue: asyncio.Queue = asyncio.Queue()
    channels[name].add(queue)

    async def events():
        try:
            while True:
                event_id, data = await queue.get()
                yield {"id": event_id, "data": data}
        finally:  # the client went away (sse-starlette cancels the generator)
            channels[name].discard(queue)

    return EventSourceResponse(events())


async def pub(request):
    name = request.path_params["channel"]
    data = (await request.body()).decode()
    last_id[name] += 1
    event_id = str(last_id[name])
    for queue in channels.get(name, ()):
        queue.put_nowait((event_id, data))
    return PlainTextResponse(event_id, status_code=202)


app = Starlette(
    routes=[
        Route("/plaintext", plaintext),
        Route("/json", json_),
        Route("/add", add),
        Route("/sub/{channel}", sub),
        Route("/pub/{channel}", pub, methods=["POST"]),
    ]
)
