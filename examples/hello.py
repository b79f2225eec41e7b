"""The contract app: /plaintext, /json and POST /echo.

Run: .venv/bin/python examples/hello.py --port 8000
"""

import argparse
import logging

from clos_web import App, Response, serve

app = App()

HELLO = Response(b"Hello, World!", content_type="text/plain")


@app.get("/plaintext")
def plaintext():
    return HELLO


@app.get("/json")
def json_():
    return {"message": "Hello, World!"}


@app.post("/echo")
def echo(request):
    # The request's Content-Type verbatim (as a raw header: no charset is added).
    ctype = request.header("content-type")
    return Response(request.body, headers=[("Content-Type", ctype)] if ctype else [])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    print(f"serving on http://{args.host}:{args.port}", flush=True)
    serve(app, args.port, args.host)


if __name__ == "__main__":
    main()
