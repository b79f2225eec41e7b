"""Cached-call overhead of clos_web.clos, against a direct call and against plum.

A benchmark, not a test: it prints and never fails. For each case it times a call through the
generic function (after a first call has filled its cache) and the direct call of the method
that runs, best and median of many timeit repeats, and prints the overhead per call against the
target from issue 11 (a cached call costs at most 0.25 µs more than the direct call).

    .venv/bin/python bench/dispatch_bench.py [--repeat 31] [--number 200000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import plum  # noqa: E402

from clos_web.clos import call_next_method, generic  # noqa: E402

TARGET_US = 0.25


class Shape:
    pass


class Square(Shape):
    side = 3


class Circle(Shape):
    r = 1


# -- 1 argument, one specialised position ----------------------------------------------------

@generic
def area(shape):
    """The area of a shape."""


@area.dispatch
def area_square(shape: Square):
    return shape.side


@area.dispatch
def area_circle(shape: Circle):
    return shape.r


# -- 2 arguments, both specialised -----------------------------------------------------------

class Conn:
    pass


@generic
def write(obj, conn):
    """Write obj on conn."""


@write.dispatch
def write_bytes(obj: bytes, conn: Conn):
    return obj


@write.dispatch
def write_str(obj: str, conn: Conn):
    return obj


@write.dispatch
def write_any(obj: object, conn: object):
    return obj


# -- 3 arguments, a type[X] position (as parse_param) ----------------------------------------

@generic
def parse_param(kind, raw, bound):
    """Convert raw to kind."""


@parse_param.dispatch
def parse_any(kind: object, raw: object, bound):
    return raw


@parse_param.dispatch
def parse_int(kind: type[int], raw: str, bound):
    return raw


@parse_param.dispatch
def parse_float(kind: type[float], raw: int | float, bound):
    return raw


# -- before / after / around ------------------------------------------------------------------

@generic
def handle(request):
    """Handle a request."""


@handle.before
def handle_check(request: Shape):
    pass


@handle.after
def handle_audit(request: Shape):
    pass


@handle.around
def handle_wrap(request: object):
    return call_next_method()


@handle.dispatch
def handle_square(request: Square):
    return request.side


def handle_by_hand(request):
    """What the combination does, written out: the baseline for the qualified case (the
    around method's wrapping as a plain function calling the rest)."""
    return handle_inner_by_hand(request)


def handle_inner_by_hand(request):
    handle_check(request)
    value = handle_square(request)
    handle_audit(request)
    return value


# -- before + after, no around (a primary with an audit, as the framework's metrics) -------

@generic
def respond(request):
    """Respond to a request."""


@respond.before
def respond_check(request: Shape):
    pass


@respond.after
def respond_audit(request: Shape):
    pass


@respond.dispatch
def respond_square(request: Square):
    return request.side


def respond_by_hand(request):
    respond_check(request)
    value = respond_square(request)
    respond_audit(request)
    return value


# -- a primary calling the next primary ------------------------------------------------------

@generic
def size(shape):
    """The size of a shape."""


@size.dispatch
def size_shape(shape: Shape):
    return 1


@size.dispatch
def size_square(shape: Square):
    return call_next_method() + 1


def size_square_by_hand(shape):
    return size_shape(shape) + 1


# -- plum's own Function, for comparison -----------------------------------------------------

dispatcher = plum.Dispatcher()


@dispatcher.abstract
def plum_area(shape):
    """The area of a shape."""


@plum_area.dispatch
def plum_area(shape: Square):  # noqa: F811
    return shape.side


@plum_area.dispatch
def plum_area(shape: Circle):  # noqa: F811
    return shape.r


plum_area_square = plum_area.resolve_method((Square(),))[0]


@dispatcher.abstract
def plum_parse(kind, raw, bound):
    """Convert raw to kind."""


@plum_parse.dispatch
def plum_parse(kind: type[int], raw: str, bound):  # noqa: F811
    return raw


@plum_parse.dispatch
def plum_parse(kind: object, raw: object, bound):  # noqa: F811
    return raw


plum_parse_int = plum_parse.resolve_method((int, "1", None))[0]


CASES = [
    # (label, generic call, direct call)
    ("1 arg, 1 specialised position", "area(sq)", "area_square(sq)"),
    ("2 args, 2 specialised positions", "write(b, conn)", "write_bytes(b, conn)"),
    ("3 args, type[X] + class positions", "parse_param(int, s, None)", "parse_int(int, s, None)"),
    ("before + after", "respond(sq)", "respond_by_hand(sq)"),
    ("primary + call_next_method()", "size(sq)", "size_square_by_hand(sq)"),
    ("around + before + after", "handle(sq)", "handle_by_hand(sq)"),
    ("plum Function, 1 arg", "plum_area(sq)", "plum_area_square(sq)"),
    ("plum Function, type[X] (uncached)", "plum_parse(int, s, None)",
     "plum_parse_int(int, s, None)"),
]


def timing(stmt: str, number: int, repeat: int) -> tuple[float, float]:
    """(best, median) µs per call."""
    env = dict(globals(), sq=Square(), b=b"x", s="1", conn=Conn())
    times = timeit.repeat(stmt, globals=env, number=number, repeat=repeat)
    per_call = [t / number * 1e6 for t in times]
    return min(per_call), statistics.median(per_call)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=31)
    parser.add_argument("--number", type=int, default=200_000)
    args = parser.parse_args()
    env = dict(globals(), sq=Square(), b=b"x", s="1", conn=Conn())
    for _, call, direct in CASES:  # fill the caches, and check both calls agree
        assert eval(call, env) == eval(direct, env), call
    print(f"python {sys.version.split()[0]}, plum {plum.__version__}; µs per call, "
          f"best / median of {args.repeat} x {args.number}")
    print(f"{'case':<36} {'generic':>15} {'direct':>15} {'overhead':>15}  target")
    for label, call, direct in CASES:
        g_best, g_med = timing(call, args.number, args.repeat)
        d_best, d_med = timing(direct, args.number, args.repeat)
        over_best, over_med = g_best - d_best, g_med - d_med
        if label.startswith("plum"):
            verdict = "(comparison)"
        else:
            verdict = "met" if over_best <= TARGET_US else "NOT met"
        print(f"{label:<36} {g_best:6.3f} / {g_med:6.3f} {d_best:6.3f} / {d_med:6.3f} "
              f"{over_best:6.3f} / {over_med:6.3f}  {verdict}")
    print(f"target: a cached call costs at most {TARGET_US} µs more than the direct call "
          f"(judged on the best times; the median shows the noise)")


if __name__ == "__main__":
    main()
