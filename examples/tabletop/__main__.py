"""``python -m examples.tabletop [--port 8080] [--host 127.0.0.1]``: serve the card table."""

import argparse
import logging
import os
import sys

if __package__ in (None, ""):  # run as a file: python examples/tabletop/__main__.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    __package__ = "examples.tabletop"  # noqa: A001

from clos_web import serve  # noqa: E402

from examples.tabletop.app import tabletop  # noqa: E402


def main(argv=None) -> None:
    """Parse the command line and serve until Ctrl-C."""
    parser = argparse.ArgumentParser(description="clos_web demo: a multiplayer card table")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8080)))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--debug", action="store_true", help="tracebacks on 500 pages")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    print(f"tabletop: http://{'localhost' if args.host == '127.0.0.1' else args.host}:"
          f"{args.port}/  (Ctrl-C stops)", flush=True)
    serve(tabletop().app, args.port, args.host, debug=args.debug)


if __name__ == "__main__":
    main()
