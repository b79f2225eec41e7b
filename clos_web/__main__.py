"""``python -m clos_web MODULE:APP [--port P] [--host H] [--workers N] [--redis URL]
[--pid-file PATH] [--log-level LEVEL]``: see :mod:`clos_web.cli`."""

import sys

from clos_web.cli import main

if __name__ == "__main__":
    sys.exit(main())
