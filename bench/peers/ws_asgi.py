"""A minimal ASGI WebSocket echo app for uvicorn, for bench/ws_bench.py:
    uvicorn ws_asgi:app --ws websockets|wsproto ...

GET /ws-echo: accept, then send every text and binary message back unchanged (uvicorn's
--ws-max-size raises the message bound to 16 MiB). Other paths: 404 (HTTP) or a refused
handshake (WebSocket).
"""


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 404,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"not found\n"})
        return
    # websocket
    if scope["path"] != "/ws-echo":
        await receive()  # websocket.connect
        await send({"type": "websocket.close", "code": 1008})
        return
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "websocket.connect":
            await send({"type": "websocket.accept"})
        elif kind == "websocket.receive":
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"]})
        elif kind == "websocket.disconnect":
            return
