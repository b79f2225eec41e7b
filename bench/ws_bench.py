#!/usr/bin/env python3
"""WebSocket benchmark: clos_web (examples/hello.py) vs nginx + Nchan and the Python WebSocket
servers people use (the `websockets` library's own asyncio server, aiohttp, uvicorn with a
minimal ASGI app; bench/peers/ws_*.py).

This is a benchmark, not a test: a missed target, a lost event or a wrong echo is printed
(NOT met / FAILURE) and never makes the run exit non-zero. A server that does not speak
WebSocket yet (clos_web before its WebSocket transport lands) shows as "not available".

Scenarios (full sizes; --quick shrinks them for a smoke run):
  fanout  clos_web vs Nchan (`nchan_subscriber websocket`): 10,000 WebSocket subscribers on
          1 channel, 100 publishes at 10/s over HTTP (POST /pub/CHANNEL), 64 B payload, as
          push_bench's SSE fanout (--quick: 1,000 subscribers, 200 publishes at 100/s: the same
          100,000 deliveries/s asked). Delivered events/s, latency, loss. Target: >= 1.0x
          Nchan.
  echo    100 connections to GET /ws-echo, each with one 64-byte text message in flight
          (masked by the client, every echo checked byte for byte), 10 s after a 2 s warm-up:
          round trips/s and latency. clos_web vs websockets, aiohttp and uvicorn (the faster
          of its WebSocket backends; the others can be named with --servers). Target: ahead
          of each.
  idle    10,000 idle WebSocket subscribers over 1,000 channels, held 5 s: server RSS delta /
          subscribers, subscriptions opened per second. clos_web vs Nchan. Target: <= 3 KB.

Method (as push_bench.py, whose helpers it uses; see bench/README.md, "WebSocket"): every
server is started fresh for every run and pinned to core 0 (taskset -c 0); the C load
generator bench/.build/sse_load (--ws / --echo) runs pinned to core 1; rounds are
interleaved and the server order rotates every round; every number reported is the median
over rounds (loss, duplicates, bad echoes and errors are summed). RLIMIT_NOFILE is raised to
the hard limit and connections are spread over 127.0.0.1-8 as source addresses. Only
127.0.0.0/8 is ever contacted. Standard library only.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as _dt
import hashlib
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import push_bench as pb  # noqa: E402  (free_port, Server, cpu_jiffies, machine_info, ...)

BENCH_DIR = pb.BENCH_DIR
REPO_DIR = pb.REPO_DIR
PEERS_DIR = pb.PEERS_DIR
HOST = pb.HOST
CLOS, NCHAN = "clos_web", "nchan"
UVICORN_BACKENDS = ["websockets-sansio", "websockets", "wsproto"]  # uvicorn --ws values
UVICORN_DEFAULT = "uvicorn-websockets-sansio"  # the faster in our runs (README "WebSocket")
ECHO_PEERS = ["websockets", "aiohttp"] + [f"uvicorn-{b}" for b in UVICORN_BACKENDS]
SERVERS = [CLOS, NCHAN] + ECHO_PEERS
DEFAULT_SERVERS = [CLOS, NCHAN, "websockets", "aiohttp", UVICORN_DEFAULT]
SCENARIOS = ["fanout", "echo", "idle"]
# which servers take part in which scenario
TAKES_PART = {"fanout": {CLOS, NCHAN}, "idle": {CLOS, NCHAN}, "echo": {CLOS, *ECHO_PEERS}}
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
START_TIMEOUT_S = 20.0
MAX_MESSAGE = 16 * 1024 * 1024


def log(msg: str) -> None:
    print(f"[ws] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# scenarios: load generator arguments

def scenarios(quick: bool, echo_conns: int, echo_size: int) -> dict[str, dict]:
    q = quick
    return {
        "fanout": {
            # the same 100,000 deliveries/s offered at both sizes (push_bench's quick fanout
            # offers 10,000/s, which every server delivers: its ratio says nothing)
            "what": ("1,000 WebSocket subs / 1 channel, 200 publishes at 100/s, 64 B" if q else
                     "10,000 WebSocket subs / 1 channel, 100 publishes at 10/s, 64 B"),
            "args": ["--ws", "--subs", 1000 if q else 10000, "--channels", 1,
                     "--rate", 100 if q else 10, "--publishes", 200 if q else 100,
                     "--payload", 64, "--drain", 30],
        },
        "echo": {
            "what": (f"{echo_conns} connections, 1 x {echo_size} B text message in flight each, "
                     + ("3 s after 1 s warm-up" if q else "10 s after 2 s warm-up")),
            "args": ["--echo", "--path", "/ws-echo", "--conns", echo_conns, "--depth", 1,
                     "--size", echo_size, "--warmup", 1 if q else 2, "--duration", 3 if q else 10,
                     "--drain", 10],
            "echo": True,
        },
        "idle": {
            "what": ("1,000 idle WebSocket subs / 100 channels, held 3 s" if q else
                     "10,000 idle WebSocket subs / 1,000 channels, held 5 s"),
            "args": ["--ws", "--subs", 1000 if q else 10000, "--channels", 100 if q else 1000,
                     "--rate", 0, "--hold", 3 if q else 5],
            "idle": True,
        },
    }


def loadgen_args(scen: dict, server: str) -> list[str]:
    args = [str(x) for x in scen["args"]]
    if "--ws" in args:  # clos_web wraps each event in JSON; Nchan sends the body as it is
        args += ["--ws-format", "raw" if server == NCHAN else "json"]
    return args


# --------------------------------------------------------------------------------------------
# servers

def ws_server_argv(name: str, repo: Path, port: int, tmp: Path) -> tuple[list[str], Path, dict]:
    if name == CLOS:
        return ([str(repo / ".venv" / "bin" / "python"), "examples/hello.py", "--port", str(port)],
                repo, {"PYTHONPATH": str(repo)})
    if name == NCHAN:
        conf = (PEERS_DIR / "nchan_ws.conf.template").read_text()
        conf = (conf.replace("@PORT@", str(port)).replace("@TMPDIR@", str(tmp))
                .replace("@USER_LINE@", "user root;" if os.geteuid() == 0 else "")
                .replace("@MODULE@", pb.NCHAN_MODULE))
        (tmp / "nginx.conf").write_text(conf)
        return ([pb.NGINX_BIN, "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-e",
                 str(tmp / "error.log")], PEERS_DIR, {})
    py = str(pb.BENCH_VENV_PY)
    if name == "websockets":
        return [py, "ws_websockets.py", "--port", str(port)], PEERS_DIR, {}
    if name == "aiohttp":
        return [py, "ws_aiohttp.py", "--port", str(port)], PEERS_DIR, {}
    backend = name.removeprefix("uvicorn-")
    return ([py, "-m", "uvicorn", "ws_asgi:app", "--host", HOST, "--port", str(port),
             "--workers", "1", "--no-access-log", "--log-level", "warning", "--backlog", "4096",
             "--loop", "uvloop", "--http", "httptools", "--ws", backend,
             "--ws-max-size", str(MAX_MESSAGE)], PEERS_DIR, {})


class NotAvailable(Exception):
    """The server runs but does not serve what the scenario needs (e.g. no WebSocket yet)."""


def ws_probe(port: int, path: str, echo: bool, timeout: float = 3.0) -> None:
    """One WebSocket client: the opening handshake on path (101 and Sec-WebSocket-Accept
    checked), with echo a masked "probe" text message that must come back, then a close.
    Raises NotAvailable with the reason when the server answers but not as it should, OSError
    when it does not answer at all."""
    key = base64.b64encode(os.urandom(16)).decode()
    want = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                raise NotAvailable(f"GET {path}: connection closed without an answer")
            buf += chunk
            if len(buf) > 65536:
                raise NotAvailable(f"GET {path}: answer head over 64 KiB")
        head, buf = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        if status != 101:
            raise NotAvailable(f"GET {path} (WebSocket handshake) answered {lines[0]!r}")
        headers = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            headers[k.strip().lower()] = v.strip()
        if headers.get("sec-websocket-accept") != want:
            raise NotAvailable(f"GET {path}: 101 with a wrong Sec-WebSocket-Accept")
        mask = os.urandom(4)

        def frame(opcode: int, payload: bytes) -> bytes:
            return (bytes([0x80 | opcode, 0x80 | len(payload)]) + mask
                    + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        if echo:
            s.sendall(frame(1, b"probe"))
            deadline = time.monotonic() + timeout
            while True:
                while len(buf) < 2 or len(buf) < 2 + (buf[1] & 0x7f):
                    if time.monotonic() > deadline:
                        raise NotAvailable(f"{path}: no echo of the probe message")
                    chunk = s.recv(65536)
                    if not chunk:
                        raise NotAvailable(f"{path}: closed instead of echoing")
                    buf += chunk
                n = buf[1] & 0x7f  # the probe's echo and any ping are < 126 bytes
                opcode, payload, buf = buf[0] & 15, buf[2:2 + n], buf[2 + n:]
                if opcode == 1:
                    if payload != b"probe":
                        raise NotAvailable(f"{path}: echoed {payload[:40]!r} for b'probe'")
                    break
                if opcode == 8:
                    raise NotAvailable(f"{path}: closed instead of echoing")
        with contextlib.suppress(OSError):
            s.sendall(frame(8, b"\x03\xe8"))


class WsServer(pb.Server):
    """push_bench's Server (process group, pinning, RSS, CPU, stop) with this benchmark's
    commands and a WebSocket probe."""

    def start(self, scenario: str) -> None:  # noqa: D401 (overrides pb.Server.start)
        self.tmp = Path(tempfile.mkdtemp(prefix=f"ws-{self.name}-"))
        self.port = pb.free_port()
        argv, cwd, extra = ws_server_argv(self.name, self.repo, self.port, self.tmp)
        if self.pin:
            argv = ["taskset", "-c", "0"] + argv
        env = dict(os.environ)
        env.pop("VIRTUAL_ENV", None)
        env.update(extra)
        self.argv = argv
        self.logf = open(self.tmp / "server.log", "wb")
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self.logf, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        err = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} at start\n"
                                   + self.log_tail())
            try:
                if scenario == "echo":
                    ws_probe(self.port, "/ws-echo", echo=True)
                else:
                    status = pb.http_post(self.port, "/pub/bench-probe", b"probe")
                    if not 200 <= status < 300:
                        raise NotAvailable(f"POST /pub/bench-probe answered {status}")
                    ws_probe(self.port, "/ws/bench-probe", echo=False)
                return
            except OSError as e:  # not listening yet
                err = str(e)
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer in {START_TIMEOUT_S:.0f}s ({err})\n"
                           + self.log_tail())


# --------------------------------------------------------------------------------------------
# one run

def run_once(name: str, scen_name: str, scen: dict, a: argparse.Namespace, rnd: int) -> dict:
    rec: dict = {"server": name, "scenario": scen_name, "round": rnd, "status": "ok"}
    srv = WsServer(name, a.repo, not a.no_pin)
    try:
        srv.start(scen_name)
    except NotAvailable as e:
        log(f"{name}: not available for {scen_name}: {e}")
        rec.update(status="not-available", error=str(e))
        srv.stop()
        return rec
    except (RuntimeError, OSError) as e:
        log(f"{name}: start failed: {e}")
        rec.update(status="server-start-failed", error=str(e))
        srv.stop()
        return rec
    rec["server_argv"] = srv.argv
    try:
        time.sleep(0.3)
        rss0 = srv.rss_kb()
        argv = [str(a.loadgen), "--port", str(srv.port), "--timeout", str(a.run_timeout)]
        argv += loadgen_args(scen, name)
        if not a.no_pin:
            argv = ["taskset", "-c", "1"] + argv
        rec["loadgen_argv"] = argv
        start = (time.monotonic(), srv.cpu_s(), pb.cpu_jiffies(),
                 resource.getrusage(resource.RUSAGE_CHILDREN))
        lg = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              stdin=subprocess.DEVNULL)
        stderr_lines: list[str] = []
        ready = threading.Event()
        window: dict = {}  # echo: server CPU and core use over the measured window

        def read_stderr():
            for line in lg.stderr:
                stderr_lines.append(line.rstrip("\n"))
                if line.startswith("# ready"):
                    ready.set()
                elif line.startswith("# measuring"):
                    window["start"] = (time.monotonic(), srv.cpu_s(), pb.cpu_jiffies())
                elif line.startswith("# measured"):
                    window["end"] = (time.monotonic(), srv.cpu_s(), pb.cpu_jiffies())
        out_chunks: list[str] = []
        # both pipes are read by threads: communicate() would race the stderr reader for lines
        readers = [threading.Thread(target=read_stderr, daemon=True),
                   threading.Thread(target=lambda: out_chunks.append(lg.stdout.read()),
                                    daemon=True)]
        for t in readers:
            t.start()
        if scen.get("idle") and ready.wait(timeout=a.run_timeout):
            pb.sample_idle_rss(rec, srv, rss0)
        try:
            lg.wait(timeout=a.run_timeout + 30)
        except subprocess.TimeoutExpired:
            lg.kill()
            lg.wait()
            rec["status"] = "loadgen-timeout"
        for t in readers:
            t.join(timeout=5)
        out = "".join(out_chunks)
        pb.account_cpu(rec, srv, start)
        res = pb.read_load(rec, lg, stderr_lines, out)
        if "start" in window and "end" in window:
            (ta, ca, ja), (tb, cb, jb) = window["start"], window["end"]
            if tb > ta:
                rec["server_cpu_pct_whole_run"] = rec["server_cpu_pct"]
                rec["server_cpu_pct"] = round(100 * (cb - ca) / (tb - ta), 1)
                w0 = pb.core_busy(ja, jb, "cpu0")
                if w0 is not None:  # core 0 holds only the server: the rest is someone else
                    rec["other_core0_pct"] = round(100 * (w0 - (cb - ca) / (tb - ta)), 1)
                    rec["contended"] = (rec["other_core0_pct"] / 100 > pb.FOREIGN_CPU_WARN
                                        or (rec.get("other_core1_pct") or 0) / 100
                                        > pb.FOREIGN_CPU_WARN)
        pb.finish_run(rec, srv, res, scen, rss0)
    finally:
        text = srv.stop()
    pb.keep_server_log(rec, text)
    return rec


def summary_line(rec: dict) -> str:
    r = rec.get("load") or {}
    lat = r.get("latency_ms", {})
    head = f"{rec['server']:<8} {rec['scenario']:<6} r{rec['round']} {rec['status']}"
    if rec["status"] in ("not-available", "server-start-failed"):
        return f"{head} | {rec.get('error', '')[:200]}"
    parts = [head]
    if rec["scenario"] == "echo":
        parts.append(f"conns {r.get('conns_ready')}/{(r.get('config') or {}).get('conns')}, "
                     f"{r.get('round_trips_per_s')} round trips/s, bad echoes {bad_echoes(rec)}, "
                     f"lost conns {r.get('conns_lost')}, p50 {lat.get('p50')} p99 "
                     f"{lat.get('p99')} ms")
    elif rec["scenario"] == "idle":
        parts.append(f"ready {r.get('subs_ready')}/{(r.get('config') or {}).get('subs')}, "
                     f"{rec.get('rss_per_conn_kb')} KB/conn, {r.get('connects_per_s')} conn/s")
    else:
        parts.append(f"ready {r.get('subs_ready')}/{(r.get('config') or {}).get('subs')}, "
                     f"pub {r.get('acked')}/{r.get('published')}, delivered "
                     f"{r.get('delivered')}/{r.get('expected')} ({r.get('delivered_per_s')}/s), "
                     f"lost {r.get('lost')}, dup {r.get('duplicates')}, p50 {lat.get('p50')} "
                     f"p99 {lat.get('p99')} ms")
    parts.append(f"cpu srv {rec.get('server_cpu_pct')}% lg {r.get('loadgen_cpu_pct')}%"
                 f" (other {rec.get('other_core0_pct')}%/{rec.get('other_core1_pct')}%)")
    if r.get("end_reason") not in (None, "all-delivered", "hold-done", "done"):
        parts.append(f"END {r.get('end_reason')}")
    return " | ".join(parts)


# --------------------------------------------------------------------------------------------
# summary

def bad_echoes(rec: dict) -> int | None:
    r = rec.get("load") or {}
    if rec["scenario"] != "echo" or not r:
        return None
    return sum(r.get(k) or 0 for k in ("mismatches", "wrong_length", "wrong_type", "unexpected",
                                       "unanswered"))


def metric(rec: dict, key: str):
    r = rec.get("load") or {}
    lat = r.get("latency_ms") or {}
    if key in ("p50", "p99", "max"):
        return lat.get(key)
    if key in ("rss_per_conn_kb", "server_cpu_pct"):
        return rec.get(key)
    if key == "loadgen_cpu_pct":
        return rec.get("loadgen_cpu_pct_whole_run") if rec["scenario"] == "idle" else \
            r.get("loadgen_cpu_pct")
    if key == "bad_echoes":
        return bad_echoes(rec)
    if key == "errors":
        if rec["scenario"] == "echo":
            return ((r.get("conns_failed") or 0) + (r.get("conns_lost") or 0)
                    + (r.get("protocol_errors") or 0))
        ws = r.get("ws") or {}
        return ((r.get("subs_failed") or 0) + (r.get("sub_disconnects") or 0)
                + (r.get("pub_errors") or 0) + (r.get("pub_conn_errors") or 0)
                + (ws.get("protocol_errors") or 0))
    return r.get(key)


SUMMED = {"lost", "duplicates", "out_of_order", "errors", "bad_echoes"}

ROWS = {
    "fanout": [("delivered_per_s", "delivered events/s"), ("p50", "latency p50 ms"),
               ("p99", "latency p99 ms"), ("max", "latency max ms"), ("lost", "lost"),
               ("duplicates", "duplicates"), ("out_of_order", "out of order"),
               ("errors", "conn/pub/protocol errors"), ("server_cpu_pct", "server CPU %"),
               ("loadgen_cpu_pct", "loadgen CPU %")],
    "echo": [("round_trips_per_s", "round trips/s"), ("p50", "latency p50 ms"),
             ("p99", "latency p99 ms"), ("max", "latency max ms"),
             ("bad_echoes", "bad or missing echoes"), ("errors", "conn/protocol errors"),
             ("server_cpu_pct", "server CPU % (measured window)"),
             ("loadgen_cpu_pct", "loadgen CPU %")],
    "idle": [("rss_per_conn_kb", "RSS KB per idle WebSocket"),
             ("connects_per_s", "subscriptions opened/s"), ("subs_ready", "subscribers up"),
             ("errors", "conn errors"), ("server_cpu_pct", "server CPU %"),
             ("loadgen_cpu_pct", "loadgen CPU %")],
}

# the figure each scenario is judged by, and whether higher is better
KEY_METRICS = {"fanout": ("delivered_per_s", "delivered/s", True),
               "echo": ("round_trips_per_s", "round trips/s", True),
               "idle": ("rss_per_conn_kb", "RSS/conn", False)}


def availability(runs: list[dict], server: str, scen: str) -> str | None:
    """The reason a server was not available for a scenario in every round it ran, else
    None."""
    rs = [r for r in runs if r["server"] == server and r["scenario"] == scen]
    if rs and all(r["status"] == "not-available" for r in rs):
        return rs[0].get("error", "not available")
    return None


def held(runs: list[dict], server: str, scen: str) -> tuple[bool, str]:
    """Did the server hold the scenario in every round: runs ok, every connection up, and
    (fanout) every publish accepted, nothing lost or duplicated, (echo) every echo exact and
    no connection lost?"""
    rs = [r for r in runs if r["server"] == server and r["scenario"] == scen]
    if not rs:
        return False, "not run"
    bad = []
    for r in rs:
        ld = r.get("load") or {}
        cfg = ld.get("config") or {}
        if r["status"] != "ok" or not ld:
            bad.append(r["status"] + (f" ({r.get('error', '')[:120]})" if r.get("error") else ""))
        elif scen == "echo":
            if (ld.get("conns_ready") or 0) < cfg.get("conns", 0):
                bad.append(f"{ld.get('conns_ready')} of {cfg.get('conns')} connections up")
            elif bad_echoes(r):
                bad.append(f"{bad_echoes(r)} bad or missing echoes (mismatches "
                           f"{ld.get('mismatches')}, wrong length {ld.get('wrong_length')}, "
                           f"unanswered {ld.get('unanswered')})")
            elif ld.get("conns_lost") or ld.get("protocol_errors"):
                bad.append(f"{ld.get('conns_lost')} connections lost, "
                           f"{ld.get('protocol_errors')} protocol errors")
            elif not ld.get("round_trips"):
                bad.append("no round trip")
        elif (ld.get("subs_ready") or 0) < cfg.get("subs", 0):
            bad.append(f"{ld.get('subs_ready')} of {cfg.get('subs')} up")
        elif (metric(r, "lost") or 0) or (metric(r, "duplicates") or 0):
            bad.append(f"lost {metric(r, 'lost') or 0} dup {metric(r, 'duplicates') or 0}")
        elif cfg.get("rate", 0) > 0 and (ld.get("acked") or 0) < cfg.get("publishes", 0):
            bad.append(f"accepted only {ld.get('acked')} of {cfg['publishes']} publishes")
    return (not bad), "; ".join(bad)


def aggregate(runs: list[dict], server: str, scen: str, key: str):
    vals = [metric(r, key) for r in runs
            if r["server"] == server and r["scenario"] == scen and r.get("load")]
    vals = [v for v in vals if v is not None]
    if not vals:
        return None
    return sum(vals) if key in SUMMED else statistics.median(vals)


def report(runs: list[dict], scen_names: list[str], scen_defs: dict, servers: list[str],
           rounds: int) -> dict:
    summary: dict = {}
    print()
    print(f"WebSocket benchmark: medians of {rounds} round(s); lost/duplicates/bad echoes/"
          "errors are totals over the rounds; n/a = the server does not serve it (yet)")
    for s in scen_names:
        svs = [sv for sv in servers if sv in TAKES_PART[s]]
        if not svs:
            continue
        print(f"\n({s}) {scen_defs[s]['what']}")
        summary[s] = {"held": {}, "not_available": {}}
        na = {sv: availability(runs, sv, s) for sv in svs}
        headers = ["metric"] + svs
        rows = []
        held_row = ["held (no loss/error)"]
        for sv in svs:
            ok, why = held(runs, sv, s)
            summary[s]["held"][sv] = ok
            if na[sv]:
                summary[s]["not_available"][sv] = na[sv]
            held_row.append("n/a" if na[sv] else "yes" if ok else "FAIL")
        rows.append(held_row)
        for key, label in ROWS[s]:
            vals = {sv: aggregate(runs, sv, s, key) for sv in svs}
            summary[s][key] = vals
            rows.append([label] + ["n/a" if na[sv] else pb.fmt(vals[sv]) for sv in svs])
        # clos_web / peer on the scenario's figure, measured in this run
        key, label, higher = KEY_METRICS[s]
        if CLOS in svs and len(svs) > 1:
            row = [(f"clos_web / peer, {label}" if higher else f"peer / clos_web, {label}")
                   + " (> 1: clos_web ahead)"]
            summary[s]["ratios"] = {}
            for sv in svs:
                c, p = summary[s][key].get(CLOS), summary[s][key].get(sv)
                if sv == CLOS:
                    row.append("")
                elif na[CLOS] or na[sv]:
                    row.append("n/a")
                elif not summary[s]["held"].get(sv):
                    row.append("peer FAIL")
                elif c in (None, 0) or p in (None, 0):
                    row.append("-")
                else:
                    r = c / p if higher else p / c
                    summary[s]["ratios"][sv] = round(r, 3)
                    row.append(f"{r:.2f}x")
            rows.append(row)
        pb.print_table(headers, rows)
        for r in runs:
            if r["scenario"] == s and r["status"] not in ("ok", "not-available"):
                print(f"  run failed: {r['server']} round {r['round']}: {r['status']} "
                      f"{r.get('error', '')[:200]}")
        for sv in svs:
            if na[sv]:
                print(f"  NOT AVAILABLE {sv}: {na[sv]}")
            else:
                ok, why = held(runs, sv, s)
                if not ok:
                    print(f"  FAILURE {sv}: {why}")
    return summary


def targets(runs: list[dict], summary: dict, scen_names: list[str], servers: list[str]) -> list:
    out = []

    def add(name, ok, detail):
        state = "n/a" if ok is None else ("met" if ok else "NOT met")
        out.append({"target": name, "result": state, "detail": detail})

    def clos_missing(s):
        return (summary.get(s) or {}).get("not_available", {}).get(CLOS)

    for s in ("fanout", "echo"):
        if s not in scen_names or s not in summary:
            continue
        for sv in [sv for sv in servers if sv in TAKES_PART[s]]:
            if summary[s]["not_available"].get(sv):
                continue
            ok, why = held(runs, sv, s)
            add(f"({s}) {sv}: " + ("zero loss, zero duplicates" if s == "fanout"
                                   else "every echo exact, no connection lost"), ok, why or "ok")
    if "fanout" in summary and {CLOS, NCHAN} <= set(servers):
        c, n = (summary["fanout"]["delivered_per_s"].get(k) for k in (CLOS, NCHAN))
        if clos_missing("fanout"):
            add("(fanout) clos_web delivered/s >= 1.0x nchan", None,
                f"clos_web not available: {clos_missing('fanout')}; nchan {pb.fmt(n)}/s")
        else:
            ok = (None if c is None or n is None else
                  c >= n and summary["fanout"]["held"].get(CLOS, False))
            add("(fanout) clos_web delivered/s >= 1.0x nchan", ok,
                f"{pb.fmt(c)} vs {pb.fmt(n)}" + (f" = {c / n:.2f}x" if c and n else ""))
    if "echo" in summary and CLOS in servers:
        for sv in [sv for sv in servers if sv in ECHO_PEERS]:
            p = summary["echo"]["round_trips_per_s"].get(sv)
            name = f"(echo) clos_web round trips/s ahead of {sv}"
            if clos_missing("echo"):
                add(name, None, f"clos_web not available: {clos_missing('echo')}; "
                                f"{sv} {pb.fmt(p)}/s")
                continue
            c = summary["echo"]["round_trips_per_s"].get(CLOS)
            if not summary["echo"]["held"].get(sv):
                # a peer that failed to start has no figure: no comparison, not a win
                ok = None if p is None else summary["echo"]["held"].get(CLOS, False)
                add(name, ok, f"clos_web {pb.fmt(c)}/s vs {sv} FAIL")
                continue
            ok = (None if c is None or p is None else
                  c > p and summary["echo"]["held"].get(CLOS, False))
            add(name, ok, f"{pb.fmt(c)} vs {pb.fmt(p)}" + (f" = {c / p:.2f}x" if c and p else ""))
    if "idle" in summary and CLOS in servers:
        kb = summary["idle"]["rss_per_conn_kb"].get(CLOS)
        nkb = summary["idle"]["rss_per_conn_kb"].get(NCHAN)
        beside = f"; nchan {pb.fmt(nkb)} KB" if NCHAN in servers else ""
        if clos_missing("idle"):
            add("(idle) clos_web <= 3 KB RSS per idle WebSocket", None,
                f"clos_web not available: {clos_missing('idle')}{beside}")
        else:
            ok = None if kb is None else kb <= 3.0 and summary["idle"]["held"].get(CLOS, False)
            add("(idle) clos_web <= 3 KB RSS per idle WebSocket", ok, f"{pb.fmt(kb)} KB{beside}")
    print("\nTargets:")
    for t in out:
        mark = ("FAILURE" if (": zero loss" in t["target"] or ": every echo" in t["target"])
                and t["result"] == "NOT met" else t["result"])
        print(f"  {mark:8} {t['target']}: {t['detail']}")
    return out


# --------------------------------------------------------------------------------------------
# main

def parse_args(argv=None) -> argparse.Namespace:
    # allow_abbrev=False: an option of another benchmark must never pass for a prefix of ours
    p = argparse.ArgumentParser(description=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (3)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 1 round, small sizes (1,000 subscribers, 3 s of echo)")
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--servers", default=",".join(DEFAULT_SERVERS),
                   help=f"any of {','.join(SERVERS)} (default: {','.join(DEFAULT_SERVERS)})")
    p.add_argument("--echo-conns", type=int, default=100)
    p.add_argument("--echo-size", type=int, default=64, help="echo message bytes (64)")
    p.add_argument("--repo", type=Path, default=REPO_DIR)
    p.add_argument("--loadgen", type=Path, default=pb.LOADGEN)
    p.add_argument("--run-timeout", type=float, default=180.0,
                   help="hard bound of one load generator run, seconds")
    p.add_argument("--results-dir", type=Path, default=BENCH_DIR / "results")
    p.add_argument("--no-save", action="store_true")
    p.add_argument("--no-pin", action="store_true")
    p.add_argument("--report", type=Path, metavar="WS_JSON",
                   help="print the tables and targets of a saved run again (no load)")
    # run.sh passes the other benchmarks' options too: ignore the ones meant for them
    a, unknown = p.parse_known_args(argv)
    if unknown:
        log(f"ignoring options meant for the other benchmarks: {' '.join(unknown)}")
    if a.rounds is None:
        a.rounds = 1 if a.quick else 3
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, pb._sigterm)  # SIGTERM cleans up like Ctrl-C
    if a.report:
        doc = json.loads(a.report.read_text())
        cfg = doc["config"]
        defs = {s: {"what": v["what"]} for s, v in cfg["scenario_defs"].items()}
        doc["summary"] = report(doc["runs"], cfg["scenarios"], defs, cfg["servers"],
                                cfg["rounds"])
        doc["targets"] = targets(doc["runs"], doc["summary"], cfg["scenarios"], cfg["servers"])
        a.report.write_text(json.dumps(doc, indent=1, default=str))
        return 0
    scen_defs = scenarios(a.quick, a.echo_conns, a.echo_size)
    scen_names = [s.strip() for s in a.scenarios.split(",") if s.strip()]
    for s in scen_names:
        if s not in scen_defs:
            print(f"unknown scenario {s!r}; choose from {','.join(scen_defs)}", file=sys.stderr)
            return 2
    servers = [s.strip() for s in a.servers.split(",") if s.strip()]
    other = [s for s in servers if s not in SERVERS]
    if other:  # e.g. --servers clos_web,tornado from the HTTP benchmark's options
        log(f"no WebSocket peer named {','.join(other)} (these are: {','.join(SERVERS)}): "
            "skipped")
        servers = [s for s in servers if s in SERVERS]
    if not servers:
        log("no WebSocket server selected: nothing to do")
        return 0
    soft, hard = pb.raise_fd_limit()
    log(f"RLIMIT_NOFILE {soft}/{hard}")
    if not pb.ensure_loadgen(a.loadgen):
        print(f"load generator {a.loadgen} missing and could not be built (bench/setup.sh)",
              file=sys.stderr)
        return 1
    if NCHAN in servers and not (Path(pb.NGINX_BIN).exists() and Path(pb.NCHAN_MODULE).exists()):
        log("nginx or the Nchan module is missing (bench/setup.sh installs them): nchan skipped")
        servers.remove(NCHAN)
    py_peers = [s for s in servers if s in ECHO_PEERS]
    if py_peers and not pb.BENCH_VENV_PY.exists():
        log(f"{pb.BENCH_VENV_PY} missing (bench/setup.sh creates it): {','.join(py_peers)} "
            "skipped")
        servers = [s for s in servers if s not in py_peers]
    if a.no_pin or not shutil.which("taskset"):
        a.no_pin = True
    st = subprocess.run([str(a.loadgen), "--selftest"], capture_output=True, text=True)
    log(f"load generator self-test: {st.stdout.strip()} {st.stderr.strip()[-2000:]}")
    info = pb.machine_info(a.repo)
    info["peer_versions"] = pb.cmd_out(
        [str(pb.BENCH_VENV_PY), "-c", "import importlib.metadata as m; print(', '.join("
         "f'{p} {m.version(p)}' for p in ('websockets', 'wsproto', 'aiohttp', 'uvicorn', "
         "'uvloop', 'httptools')))"]) if pb.BENCH_VENV_PY.exists() else None
    la = float(info["loadavg_at_start"][0])
    if la > 0.5:
        log(f"load average {la} at start: the machine is busy, numbers will be noisy")
    started = _dt.datetime.now(_dt.timezone.utc)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    runs: list[dict] = []
    interrupted = False
    t_start = time.monotonic()
    try:
        for rnd in range(1, a.rounds + 1):
            for s in scen_names:
                svs = [sv for sv in servers if sv in TAKES_PART[s]]
                if not svs:
                    continue
                k = (rnd - 1) % len(svs)
                for sv in svs[k:] + svs[:k]:
                    log(f"round {rnd}/{a.rounds} {s} {sv} ...")
                    rec = run_once(sv, s, scen_defs[s], a, rnd)
                    runs.append(rec)
                    log(summary_line(rec))
                    for ln in rec.get("server_log_lines", [])[:5]:
                        log(f"  server log: {ln[:300]}")
                    if rec.get("server_log_line_count", 0) > 5:
                        log(f"  ... {rec['server_log_line_count'] - 5} more server log lines "
                            "(in the JSON)")
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: reporting what ran")
    summary = report(runs, scen_names, scen_defs, servers, a.rounds)
    tg = targets(runs, summary, scen_names, servers)
    contended = [r for r in runs if r.get("contended")]
    if contended:
        print(f"\n{len(contended)} of {len(runs)} runs were contended (other processes used "
              f">{pb.FOREIGN_CPU_WARN:.0%} of core 0 or 1): the machine is shared, numbers are "
              "noisy")
    hot = [r for r in runs if (metric(r, "loadgen_cpu_pct") or 0) > 90]
    if hot:
        print(f"{len(hot)} run(s) had the load generator above 90% of core 1 "
              "(those numbers are load-generator bound): "
              + ", ".join(f"{r['server']}/{r['scenario']}/r{r['round']}" for r in hot))
    elapsed = time.monotonic() - t_start
    print(f"\n{len(runs)} runs in {elapsed / 60:.1f} min")
    if not a.no_save:
        a.results_dir.mkdir(parents=True, exist_ok=True)
        path = a.results_dir / f"ws-{stamp}.json"
        doc = {
            "started_utc": started.isoformat(), "elapsed_s": round(elapsed, 1),
            "interrupted": interrupted, "machine": info,
            "config": {"rounds": a.rounds, "quick": a.quick, "scenarios": scen_names,
                       "servers": servers, "pinned": not a.no_pin,
                       "scenario_defs": {s: {"what": scen_defs[s]["what"],
                                             "args": [str(x) for x in scen_defs[s]["args"]]}
                                         for s in scen_names},
                       "loadgen": str(a.loadgen), "loadgen_selftest": st.stdout.strip()},
            "summary": summary, "targets": tg, "runs": runs,
        }
        path.write_text(json.dumps(doc, indent=1, default=str))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
