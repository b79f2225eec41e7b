"""aiohttp.web peer for the HTTP benchmark: python aiohttp_app.py --port N"""
import argparse

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


def make_app():
    app = web.Application()
    app.router.add_get("/plaintext", plaintext)
    app.router.add_get("/json", json_)
    app.router.add_get("/add", add)
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
