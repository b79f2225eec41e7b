"""`websockets` (asyncio) echo peer for bench/ws_bench.py: python ws_websockets.py --port N

GET /ws-echo: every text and binary message is sent back unchanged (messages up to 16 MiB).
The library's own server (websockets.asyncio.server.serve) with its defaults otherwise
(keep-alive pings every 20 s; compression only if the client offers it, which the load
generator does not). Any other path: 404.
"""
import argparse
import asyncio
from http import HTTPStatus

from websockets.asyncio.server import serve

MAX_MESSAGE = 16 * 1024 * 1024


async def echo(ws):
    async for message in ws:  # str for text, bytes for binary: sent back as the same type
        await ws.send(message)


def only_echo_path(connection, request):
    if request.path != "/ws-echo":
        return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
    return None


async def main(host: str, port: int) -> None:
    async with serve(echo, host, port, max_size=MAX_MESSAGE, process_request=only_echo_path,
                     backlog=4096) as server:
        await server.serve_forever()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    args = p.parse_args()
    try:
        asyncio.run(main(args.host, args.port))
    except KeyboardInterrupt:
        pass
