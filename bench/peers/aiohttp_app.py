"""aiohttp.web peer for the HTTP and push benchmarks: python aiohttp_app.py --port N"""
import argparse
import asyncio
from collections import defaultdict

from aiohttp import web

HELLO = "Hello, World!"


async def plaintext(request):
    return web.Response(text=HELLO)


async def json_(request):
    return web.json_response({"message": HELLO})


async def add(request):
    try:
        a = int(request.query["a"])
        b = int(request.query["b"])
    except (KeyError, ValueError):
        return web.Response(text="bad request", status=400)
    return web.Response(text=str(a + b))


# push: channel name -> the asyncio.Queue of every subscriber; in-memory fan-out, no history
channels = defaultdict(set)
last_id = defaultdict(int)


async def sub(request):
    name = request.match_info["channel"]
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                       "Cache-Control": "no-cache"})
    await resp.prepare(request)
    queue = asyncio.Queue()
    channels[name].add(queue)
    try:
        while True:
            await resp.write(await queue.get())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        channels[name].discard(queue)
    return resp


async def pub(request):
    name = request.match_info["channel"]
    data = await request.read()
    last_id[name] += 1
    event = b"id: %d\ndata: %s\n\n" % (last_id[name], data)  # encoded once, sent to all
    for queue in channels.get(name, ()):
        queue.put_nowait(event)
    return web.Response(text=str(last_id[name]), status=202)


def make_app():
    app = web.Application()
    app.router.add_get("/plaintext", plaintext)
    app.router.add_get("/json", json_)
    app.router.add_get("/add", add)
    app.router.add_get("/sub/{channel}", sub)
    app.router.add_post("/pub/{channel}", pub)
    return app


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    args = p.parse_args()
    web.run_app(
        make_app(),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
