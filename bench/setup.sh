#!/usr/bin/env bash
# Prepare the HTTP benchmark environment (idempotent; fast on a second run).
#  - bench/.venv : a separate venv holding the peer frameworks (never the project venv);
#                  websockets and wsproto are the WebSocket peers of ws_bench.py
#  - wrk, nginx  : Debian packages (load generator and native reference server)
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$BENCH_DIR/.venv"
PY="${BENCH_PYTHON:-python3}"
PEERS=(uvicorn starlette sse-starlette httptools uvloop aiohttp tornado matplotlib websockets wsproto)

log() { echo "[bench/setup] $*" >&2; }

# --- Debian packages -------------------------------------------------------
need_apt=()
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || need_apt+=(nginx)
command -v taskset >/dev/null 2>&1 || need_apt+=(util-linux)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)  # scale_bench.py
if [ ${#need_apt[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    log "installing Debian packages: ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! $SUDO apt-get install -y --no-install-recommends "${need_apt[@]}"; then
        log "apt-get install failed; running apt-get update and retrying"
        $SUDO apt-get update
        $SUDO apt-get install -y --no-install-recommends "${need_apt[@]}"
    fi
fi

# --- peer venv -------------------------------------------------------------
if ! "$VENV/bin/python" -c '' >/dev/null 2>&1; then
    log "creating $VENV"
    if ! "$PY" -m venv --clear "$VENV"; then
        # Debian's own python3 needs python3-venv for ensurepip
        log "python3 -m venv failed; installing python3-venv"
        apt-get install -y python3-venv || { apt-get update && apt-get install -y python3-venv; }
        "$PY" -m venv --clear "$VENV"
    fi
fi

# one interpreter start: print the pip names whose import name is not importable
read -r -a missing <<<"$("$VENV/bin/python" - "${PEERS[@]}" <<'PYEOF'
import importlib.util, sys
names = sys.argv[1:]
print(" ".join(n for n in names if importlib.util.find_spec(n.replace("-", "_")) is None))
PYEOF
)"
if [ ${#missing[@]} -gt 0 ]; then
    log "pip-installing peers: ${missing[*]}"
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q "${missing[@]}"
fi

log "ok: $("$VENV/bin/python" --version), $(wrk --version 2>&1 | head -1 | awk '{print $1, $2}'), $(/usr/sbin/nginx -v 2>&1)"

# push benchmark: nginx + libnginx-mod-nchan, gcc, and the C load generator bench/.build/sse_load
bash "$BENCH_DIR/loadgen/setup.sh" || log "push benchmark set-up failed (push_bench.py says what is missing)"
