"""A reference WebSocket echo server (the ``websockets`` library) to validate the conformance
suite in ``test_ws_conformance.py`` before clos_web serves WebSocket.

It keeps the ``/ws-echo`` contract of ``examples/hello.py``: every text and binary message
echoed unchanged, messages up to 16 MiB (a larger one closes with 1009), any origin. Other
paths are a 404. Messages are received fragment by fragment (``recv_streaming``), so invalid
UTF-8 in the first fragment of a text message fails the connection at once (1007).

    with ReferenceServer(compression="deflate") as server:
        print(server.host, server.port)      # an ephemeral port on 127.0.0.1

Run by hand: ``.venv/bin/python tests/ws_reference.py --port 9001 [--deflate]``.
"""

from __future__ import annotations

import argparse
import asyncio
import http
import threading
from urllib.parse import urlsplit

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

MAX_MESSAGE = 16 * 1024 * 1024
ECHO_PATH = "/ws-echo"


async def echo(connection):
    """Echo each whole message back as one message, of the type it came as."""
    try:
        while True:
            parts = [part async for part in connection.recv_streaming()]
            await connection.send("".join(parts) if isinstance(parts[0], str)
                                  else b"".join(parts))
    except ConnectionClosed:
        pass


def route(connection, request):
    """A 404 for any path but ``/ws-echo`` (the handshake is checked by websockets after)."""
    if urlsplit(request.path).path != ECHO_PATH:
        return connection.respond(http.HTTPStatus.NOT_FOUND, "Not Found\n")
    return None


class ReferenceServer:
    """The echo server on its own thread and event loop; ``start()`` returns once it listens.

    ``compression`` is None (no extension) or ``"deflate"`` (permessage-deflate when offered).
    """

    def __init__(self, *, compression: str | None = None, max_size: int = MAX_MESSAGE,
                 host: str = "127.0.0.1", port: int = 0):
        self.compression = compression
        self.max_size = max_size
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server = None
        self._thread: threading.Thread | None = None

    def __repr__(self):
        return f"<ReferenceServer {self.host}:{self.port} compression={self.compression}>"

    async def _start(self):
        self._server = await serve(
            echo, self.host, self.port, process_request=route,
            compression=self.compression, max_size=self.max_size,
            ping_interval=None, close_timeout=2, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    def start(self, timeout: float = 10.0) -> "ReferenceServer":
        started = threading.Event()
        failure: list[BaseException] = []

        def run():
            self._loop = asyncio.new_event_loop()
            try:
                self._loop.run_until_complete(self._start())
            except BaseException as exc:  # reported to start()
                failure.append(exc)
                started.set()
                return
            started.set()
            self._loop.run_forever()
            self._loop.close()

        self._thread = threading.Thread(target=run, name="ws-reference", daemon=True)
        self._thread.start()
        if not started.wait(timeout):
            raise TimeoutError("the reference server did not start")
        if failure:
            raise failure[0]
        return self

    def stop(self, timeout: float = 5.0):
        """Close every connection (1001, then abort what is left after a second) and stop."""
        if self._loop is None or self._thread is None:
            return

        async def shutdown():
            self._server.close()
            try:
                await asyncio.wait_for(asyncio.shield(self._server.wait_closed()), 1.0)
            except TimeoutError:
                # connections whose client keeps its TCP end open after the closing handshake
                for connection in self._server.all_connections:
                    connection.transport.abort()
                await asyncio.wait_for(self._server.wait_closed(), timeout)

        if self._server is not None:
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout + 2.0)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--deflate", action="store_true", help="offer permessage-deflate")
    args = parser.parse_args(argv)
    server = ReferenceServer(compression="deflate" if args.deflate else None,
                             host=args.host, port=args.port).start()
    print(f"echoing on ws://{server.host}:{server.port}{ECHO_PATH}")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
