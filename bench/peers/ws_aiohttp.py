"""aiohttp.web WebSocket echo peer for bench/ws_bench.py: python ws_aiohttp.py --port N

GET /ws-echo: web.WebSocketResponse; every text and binary message is sent back unchanged
(messages up to 16 MiB). No access log, no heartbeat (aiohttp's default).
"""
import argparse

from aiohttp import WSMsgType, web

MAX_MESSAGE = 16 * 1024 * 1024


async def ws_echo(request):
    ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE)
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    args = p.parse_args()
    app = web.Application()
    app.router.add_get("/ws-echo", ws_echo)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None, backlog=4096)


if __name__ == "__main__":
    main()
