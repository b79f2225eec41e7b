#!/usr/bin/env bash
# Entry point of `make bench` (Makefile: `bench: install; bash bench/run.sh $(ARGS)`):
#   bash bench/run.sh [http_bench.py options]
# e.g.  make bench ARGS="--quick"   or   bash bench/run.sh --rounds 5 --servers clos_web,aiohttp
# Options can also come from $BENCH_ARGS. Runs setup.sh first (idempotent).
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$BENCH_DIR/setup.sh"

marker="$(mktemp)"
trap 'rm -f "$marker"' EXIT
status=0
# shellcheck disable=SC2086  # BENCH_ARGS is intentionally word-split
"$BENCH_DIR/.venv/bin/python" "$BENCH_DIR/http_bench.py" ${BENCH_ARGS:-} "$@" || status=$?

# optional chart of the result just written (matplotlib from bench/.venv; never fatal)
latest="$(find "$BENCH_DIR/results" -maxdepth 1 -name 'http-*.json' -newer "$marker" 2>/dev/null | sort | tail -1)"
if [ -n "$latest" ]; then
    "$BENCH_DIR/.venv/bin/python" "$BENCH_DIR/plot.py" "$latest" || true
fi

# push benchmark (SSE, clos_web vs nginx+Nchan; see README "Push"). It takes the shared options
# (--quick, --rounds, --servers, --no-pin, ...) and ignores HTTP-only ones; its own options go
# in $PUSH_ARGS (e.g. PUSH_ARGS="--scenarios idle,fanout"). Never changes the exit status.
# shellcheck disable=SC2086
"$BENCH_DIR/.venv/bin/python" "$BENCH_DIR/push_bench.py" ${BENCH_ARGS:-} "$@" ${PUSH_ARGS:-} || true
# push charts (delivered/s, latency p50/p99, RSS per connection, connections/s); never fatal
latest="$(find "$BENCH_DIR/results" -maxdepth 1 -name 'push-*.json' -newer "$marker" 2>/dev/null | sort | tail -1)"
if [ -n "$latest" ]; then
    "$BENCH_DIR/.venv/bin/python" "$BENCH_DIR/plot_push.py" "$latest" || true
fi

# scale-out benchmark (clos_web with Redis: CPU per event vs in-memory, cross-process latency,
# reconnect storm; see README "Scale-out (Redis)"). It takes the shared options it knows
# (--quick, --rounds) and ignores the others; its own go in $SCALE_ARGS (e.g.
# SCALE_ARGS="--scenarios cost"). Never changes the exit status.
# shellcheck disable=SC2086
"$BENCH_DIR/.venv/bin/python" "$BENCH_DIR/scale_bench.py" ${BENCH_ARGS:-} "$@" ${SCALE_ARGS:-} || true

# WebSocket benchmark (fanout and idle vs nginx+Nchan, echo vs websockets, aiohttp and uvicorn;
# see README "WebSocket"). It takes the shared options it knows (--quick, --rounds, --servers,
# --no-pin, ...) and ignores the others and server names it does not know; its own go in
# $WS_ARGS (e.g. WS_ARGS="--scenarios echo"). Never changes the exit status.
# shellcheck disable=SC2086
"$BENCH_DIR/.venv/bin/python" "$BENCH_DIR/ws_bench.py" ${BENCH_ARGS:-} "$@" ${WS_ARGS:-} || true
exit $status
