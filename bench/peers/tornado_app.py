"""Tornado peer for the HTTP and push benchmarks: python tornado_app.py --port N"""
import argparse
import asyncio
import logging
import signal
from collections import defaultdict

import tornado.web
from tornado.escape import json_encode
from tornado.iostream import StreamClosedError
from tornado.queues import Queue

HELLO = "Hello, World!"


class Plaintext(tornado.web.RequestHandler):
    def get(self):
        self.set_header("Content-Type", "text/plain")
        self.write(HELLO)


class Json(tornado.web.RequestHandler):
    def get(self):
        self.set_header("Content-Type", "application/json")
        self.write(json_encode({"message": HELLO}))


class Add(tornado.web.RequestHandler):
    def get(self):
        try:
            a = int(self.get_query_argument("a"))
            b = int(self.get_query_argument("b"))
        except (tornado.web.MissingArgumentError, ValueError):
            self.set_status(400)
            self.write("bad request")
            return
        self.set_header("Content-Type", "text/plain")
        self.write(str(a + b))


# push: channel name -> the tornado Queue of every subscriber; in-memory fan-out, no history
channels = defaultdict(set)
last_id = defaultdict(int)


class Sub(tornado.web.RequestHandler):
    async def get(self, name):
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.queue = Queue()
        self.channel = name
        channels[name].add(self.queue)
        try:
            await self.flush()  # the response head goes out at once
            while True:
                self.write(await self.queue.get())
                await self.flush()
        except StreamClosedError:
            pass
        finally:
            channels[name].discard(self.queue)

    def on_connection_close(self):
        channels[self.channel].discard(self.queue)


class Pub(tornado.web.RequestHandler):
    def post(self, name):
        last_id[name] += 1
        event = b"id: %d\ndata: %s\n\n" % (last_id[name], self.request.body)
        for queue in channels.get(name, ()):
            queue.put_nowait(event)
        self.set_status(202)
        self.write(str(last_id[name]))


def make_app():
    return tornado.web.Application(
        [(r"/plaintext", Plaintext), (r"/json", Json), (r"/add", Add),
         (r"/sub/([^/]+)", Sub), (r"/pub/([^/]+)", Pub)],
        log_function=lambda handler: None,  # no access log
    )


async def serve(host, port):
    app = make_app()
    app.listen(port, address=host, backlog=4096)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    args = p.parse_args()
    logging.disable(logging.CRITICAL)  # logging off
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
