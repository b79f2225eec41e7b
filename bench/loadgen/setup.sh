#!/usr/bin/env bash
# Push benchmark set-up (called by bench/setup.sh; idempotent, fast once done):
#  - Debian packages nginx + libnginx-mod-nchan (the native peer) and gcc, if missing;
#  - builds the load generator bench/loadgen/sse_load.c -> bench/.build/sse_load (gcc -O2),
#    again only when the source is newer than the binary.
set -euo pipefail

LOADGEN_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BENCH_DIR="$(dirname "$LOADGEN_DIR")"
BIN="$BENCH_DIR/.build/sse_load"
log() { echo "[bench/setup push] $*" >&2; }

need_apt=()
[ -x /usr/sbin/nginx ] || need_apt+=(nginx)
[ -f /usr/lib/nginx/modules/ngx_nchan_module.so ] || need_apt+=(libnginx-mod-nchan)
command -v gcc >/dev/null 2>&1 || need_apt+=(gcc libc6-dev)
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

if [ ! -x "$BIN" ] || [ "$LOADGEN_DIR/sse_load.c" -nt "$BIN" ]; then
    mkdir -p "$(dirname "$BIN")"
    log "building $BIN"
    gcc -O2 -Wall -o "$BIN.tmp" "$LOADGEN_DIR/sse_load.c"
    mv "$BIN.tmp" "$BIN"
fi
log "ok: $("$BIN" --selftest)"
