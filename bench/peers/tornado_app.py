"""Tornado peer for the HTTP benchmark: python tornado_app.py --port N"""
import argparse
import asyncio
import logging
import signal

import tornado.web
from tornado.escape import json_encode

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


def make_app():
    return tornado.web.Application(
        [(r"/plaintext", Plaintext), (r"/json", Json), (r"/add", Add)],
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
