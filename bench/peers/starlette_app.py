"""Starlette peer for the HTTP benchmark.

Run (from bench/peers/):
    uvicorn starlette_app:app --port N --http h11 --loop asyncio --no-access-log --workers 1
    uvicorn starlette_app:app --port N --http httptools --loop uvloop --no-access-log --workers 1
"""
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


app = Starlette(
    routes=[
        Route("/plaintext", plaintext),
        Route("/json", json_),
        Route("/add", add),
    ]
)
