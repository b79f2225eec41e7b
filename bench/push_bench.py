#!/usr/bin/env python3
"""Push benchmark: clos_web (examples/hello.py) vs nginx + Nchan and the Python peers
(uvicorn+Starlette+sse-starlette in its h11/asyncio and httptools/uvloop configs, aiohttp,
Tornado; bench/peers/), over Server-Sent Events.

This is a benchmark, not a test: a missed target or a lost event is printed (NOT met /
FAILURE) and never makes the run exit non-zero.

Scenarios (full sizes; --quick shrinks them for a smoke run):
  fanout      10,000 subscribers on 1 channel, 100 publishes at 10/s, 64 B payload
  tables      10,000 subscribers over 1,000 channels, 2,000 publishes/s for 10 s
  idle        10,000 idle subscribers (1,000 channels): server RSS per connection,
              connections accepted (stream headers received) per second while opening them
  idle-max    the same at 19,000 idle subscribers (1,900 channels), about the most one
              process holds under the 20,000 fd limit here
  throughput  1,000 subscribers on 1 channel, publish as fast as the server answers for 10 s

Method (see bench/README.md, "Push"): every server is started fresh for every run, pinned to
core 0 (taskset -c 0); the C load generator bench/.build/sse_load runs pinned to core 1;
rounds are interleaved (scenario by scenario, clos_web and nchan alternate, the order rotates
each round) and every number reported is the median over rounds (loss, duplicates and errors
are summed). Only 127.0.0.0/8 is ever contacted. Standard library only.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import http.client
import json
import os
import platform
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

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
PEERS_DIR = BENCH_DIR / "peers"
LOADGEN = BENCH_DIR / ".build" / "sse_load"
LOADGEN_SRC = BENCH_DIR / "loadgen" / "sse_load.c"
NGINX_BIN = "/usr/sbin/nginx"
NCHAN_MODULE = "/usr/lib/nginx/modules/ngx_nchan_module.so"
HOST = "127.0.0.1"
PY_PEERS = ["uvicorn-h11", "uvicorn-httptools-uvloop", "aiohttp", "tornado"]
# "floor" is a measuring stick, not a peer (peers/floor.py --sse): a bare Python loop, run in
# the idle scenarios only, for the connection setup any Python code can reach here
SERVERS = ["clos_web", "nchan"] + PY_PEERS + ["floor"]
CLOS, NCHAN, FLOOR = "clos_web", "nchan", "floor"
BENCH_VENV_PY = BENCH_DIR / ".venv" / "bin" / "python"
START_TIMEOUT_S = 20.0
FOREIGN_CPU_WARN = 0.10
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[push] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# scenarios: load generator arguments

def scenarios(quick: bool) -> dict[str, dict]:
    q = quick
    return {
        "fanout": {
            "what": ("1,000 subs / 1 channel, 20 publishes at 10/s, 64 B" if q else
                     "10,000 subs / 1 channel, 100 publishes at 10/s, 64 B"),
            "args": ["--subs", 1000 if q else 10000, "--channels", 1, "--rate", 10,
                     "--publishes", 20 if q else 100, "--payload", 64, "--drain", 30],
        },
        "tables": {
            "what": ("1,000 subs / 100 channels, 500 publishes/s for 2 s" if q else
                     "10,000 subs / 1,000 channels, 2,000 publishes/s for 10 s"),
            "args": ["--subs", 1000 if q else 10000, "--channels", 100 if q else 1000,
                     "--rate", 500 if q else 2000, "--duration", 2 if q else 10,
                     "--publishes", 1000 if q else 20000, "--payload", 64,
                     "--pub-conns", 4, "--pub-depth", 256, "--drain", 30],
        },
        "idle": {
            "what": ("1,000 idle subs / 100 channels" if q else
                     "10,000 idle subs / 1,000 channels, held 5 s"),
            "args": ["--subs", 1000 if q else 10000, "--channels", 100 if q else 1000,
                     "--rate", 0, "--hold", 3 if q else 5],
            "idle": True,
        },
        "idle-max": {
            "what": ("1,900 idle subs / 190 channels" if q else
                     "19,000 idle subs / 1,900 channels, held 5 s"),
            "args": ["--subs", 1900 if q else 19000, "--channels", 190 if q else 1900,
                     "--rate", 0, "--hold", 3 if q else 5],
            "idle": True,
        },
        "throughput": {
            "what": ("200 subs / 1 channel, max publish rate for 2 s" if q else
                     "1,000 subs / 1 channel, max publish rate for 10 s (1 conn, 8 pipelined)"),
            "args": ["--subs", 200 if q else 1000, "--channels", 1, "--rate", "max",
                     "--duration", 2 if q else 10, "--payload", 64, "--pub-depth", 8,
                     "--drain", 30],
        },
    }


# --------------------------------------------------------------------------------------------
# servers

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def server_argv(name: str, repo: Path, port: int, tmp: Path) -> tuple[list[str], Path, dict]:
    if name == CLOS:
        return ([str(repo / ".venv" / "bin" / "python"), "examples/hello.py", "--port", str(port)],
                repo, {"PYTHONPATH": str(repo)})
    py = str(BENCH_VENV_PY)
    if name == FLOOR:
        return [py, "floor.py", "--port", str(port), "--sse"], PEERS_DIR, {}
    uvicorn = [py, "-m", "uvicorn", "starlette_app:app", "--host", HOST, "--port", str(port),
               "--workers", "1", "--no-access-log", "--log-level", "warning",
               "--backlog", "4096"]
    if name == "uvicorn-h11":
        return uvicorn + ["--http", "h11", "--loop", "asyncio"], PEERS_DIR, {}
    if name == "uvicorn-httptools-uvloop":
        return uvicorn + ["--http", "httptools", "--loop", "uvloop"], PEERS_DIR, {}
    if name in ("aiohttp", "tornado"):
        return [py, f"{name}_app.py", "--port", str(port)], PEERS_DIR, {}
    conf = (PEERS_DIR / "nchan.conf.template").read_text()
    conf = (conf.replace("@PORT@", str(port)).replace("@TMPDIR@", str(tmp))
            .replace("@USER_LINE@", "user root;" if os.geteuid() == 0 else "")
            .replace("@MODULE@", NCHAN_MODULE))
    (tmp / "nginx.conf").write_text(conf)
    return ([NGINX_BIN, "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-e",
             str(tmp / "error.log")], PEERS_DIR, {})


class Server:
    """One server process in its own session, pinned to core 0."""

    def __init__(self, name: str, repo: Path, pin: bool):
        self.name, self.repo, self.pin = name, repo, pin
        self.proc = None
        self.tmp = None
        self.logf = None

    def start(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix=f"push-{self.name}-"))
        self.port = free_port()
        argv, cwd, extra = server_argv(self.name, self.repo, self.port, self.tmp)
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
                status = http_post(self.port, "/pub/bench-probe", b"probe")
                if 200 <= status < 300:
                    return
                err = f"probe answered {status}"
            except OSError as e:
                err = str(e)
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer in {START_TIMEOUT_S:.0f}s ({err})\n"
                           + self.log_tail())

    def pids(self) -> list[int]:
        """Every live process of the server's process group (nginx: master and workers)."""
        out = []
        if self.proc is None:
            return out
        for d in os.listdir("/proc"):
            if d.isdigit():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    st = Path(f"/proc/{d}/stat").read_text()
                    if int(st[st.rindex(")") + 2:].split()[2]) == self.proc.pid:
                        out.append(int(d))
        return sorted(out)

    def rss_kb(self) -> dict[int, int]:
        rss = {}
        for pid in self.pids():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        rss[pid] = int(line.split()[1])
        return rss

    def cpu_s(self) -> float:
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                st = Path(f"/proc/{pid}/stat").read_text()
                rest = st[st.rindex(")") + 2:].split()
                total += int(rest[11]) + int(rest[12])
        return total / _CLK_TCK

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        chunks = []
        for fname in ("server.log", "error.log"):
            p = self.tmp / fname if self.tmp else None
            if p and p.exists():
                chunks.append(p.read_text(errors="replace"))
        return "\n".join(chunks)

    def log_tail(self, n: int = 20) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def stop(self) -> str:
        """Stop the process group (SIGINT, SIGTERM, SIGKILL); return the log text."""
        if self.proc is not None and self.proc.poll() is None:
            for sig, wait in ((signal.SIGINT, 5.0), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, sig)
                try:
                    self.proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        text = self.log_text() if self.tmp else ""
        if self.logf:
            self.logf.close()
            self.logf = None
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
        return text


def http_post(port: int, path: str, body: bytes, timeout: float = 2.0) -> int:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "text/plain"})
        r = conn.getresponse()
        r.read()
        return r.status
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------
# CPU accounting of the pinned cores

def cpu_jiffies() -> dict[str, tuple[int, int]]:
    out = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("cpu") and line[3:4].isdigit():
                name, *vals = line.split()
                v = (list(map(int, vals)) + [0] * 8)[:8]
                # busy = everything but idle and iowait (this kernel charges softirq time,
                # i.e. loopback TCP work, to the running task as well)
                out[name] = (sum(v) - v[3] - v[4], sum(v))
    return out


def core_busy(before: dict, after: dict, cpu: str) -> float | None:
    if cpu not in before or cpu not in after:
        return None
    tot = after[cpu][1] - before[cpu][1]
    return (after[cpu][0] - before[cpu][0]) / tot if tot > 0 else None


# --------------------------------------------------------------------------------------------
# one run

def sample_idle_rss(rec: dict, srv, rss0: dict) -> None:
    """Once every subscriber is up: let the server settle (buffers, GC), then record its RSS
    (three samples, then the figure kept)."""
    time.sleep(1.0)
    samples = []
    for _ in range(3):
        samples.append(sum(srv.rss_kb().values()))
        time.sleep(0.5)
    rec["rss_before_kb"] = rss0
    rec["rss_idle_kb"] = srv.rss_kb()
    rec["rss_idle_samples_kb"] = samples


def account_cpu(rec: dict, srv, start: tuple) -> None:
    """The run's wall time, the server's and the load generator's CPU, each core's busy time
    and what others used of it (``contended``), from ``start = (t0, server cpu, jiffies,
    children's rusage)`` to now."""
    t0, c0, j0, ru0 = start
    t1, c1, j1 = time.monotonic(), srv.cpu_s(), cpu_jiffies()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = t1 - t0
    rec["wall_s"] = round(wall, 3)
    rec["server_cpu_pct"] = round(100 * (c1 - c0) / wall, 1) if wall > 0 else None
    lg_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    rec["loadgen_cpu_pct_whole_run"] = round(100 * lg_cpu / wall, 1) if wall > 0 else None
    b0, b1 = core_busy(j0, j1, "cpu0"), core_busy(j0, j1, "cpu1")
    rec["core0_busy_pct"] = round(100 * b0, 1) if b0 is not None else None
    rec["core1_busy_pct"] = round(100 * b1, 1) if b1 is not None else None
    if b0 is not None and b1 is not None and wall > 0:
        other0 = b0 - (c1 - c0) / wall
        other1 = b1 - lg_cpu / wall
        rec["other_core0_pct"] = round(100 * other0, 1)
        rec["other_core1_pct"] = round(100 * other1, 1)
        rec["contended"] = other0 > FOREIGN_CPU_WARN or other1 > FOREIGN_CPU_WARN


def read_load(rec: dict, lg, stderr_lines: list, out: str):
    """The load generator's JSON result (also ``rec["load"]``), or None when unreadable."""
    rec["loadgen_rc"] = lg.returncode
    rec["loadgen_stderr"] = stderr_lines[-40:]
    try:
        res = json.loads(out)
    except ValueError:
        res = None
        rec["status"] = "loadgen-output-unreadable"
        rec["loadgen_stdout"] = out[-4000:]
    rec["load"] = res
    return res


def finish_run(rec: dict, srv, res, scen: dict, rss0: dict) -> None:
    """The idle RSS per subscriber, and whether the server outlived the run (loop body)."""
    if res is not None and scen.get("idle") and "rss_idle_kb" in rec:
        n = res.get("subs_ready") or 0
        delta = sum(rec["rss_idle_kb"].values()) - sum(rss0.values())
        rec["rss_delta_kb"] = delta
        rec["rss_per_conn_kb"] = round(delta / n, 3) if n else None
    rec["server_alive_after"] = srv.alive()
    if not srv.alive():
        rec["status"] = "server-died"
        rec["server_exit"] = srv.proc.returncode


def keep_server_log(rec: dict, text: str) -> None:
    """The server log's lines that matter (warnings, errors, tracebacks; not the banner),
    and its tail when the run failed without any."""
    interesting = [ln for ln in text.splitlines()
                   if any(k in ln for k in ("ERROR", "WARNING", "Traceback", "Error", "[alert]",
                                            "[crit]", "[error]", "[emerg]", "[warn]"))]
    rec["server_log_lines"] = interesting[:60]
    rec["server_log_line_count"] = len(interesting)
    if rec["status"] != "ok" and not interesting:
        rec["server_log_tail"] = text.splitlines()[-30:]


def run_once(name: str, scen_name: str, scen: dict, a: argparse.Namespace, rnd: int) -> dict:
    rec: dict = {"server": name, "scenario": scen_name, "round": rnd, "status": "ok"}
    srv = Server(name, a.repo, not a.no_pin)
    try:
        srv.start()
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
        argv += [str(x) for x in scen["args"]]
        if not a.no_pin:
            argv = ["taskset", "-c", "1"] + argv
        rec["loadgen_argv"] = argv
        start = (time.monotonic(), srv.cpu_s(), cpu_jiffies(),
                 resource.getrusage(resource.RUSAGE_CHILDREN))
        lg = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              stdin=subprocess.DEVNULL)
        stderr_lines: list[str] = []
        ready = threading.Event()

        def read_stderr():
            for line in lg.stderr:
                stderr_lines.append(line.rstrip("\n"))
                if line.startswith("# ready"):
                    ready.set()
        reader = threading.Thread(target=read_stderr, daemon=True)
        reader.start()
        if scen.get("idle"):
            if ready.wait(timeout=a.run_timeout):
                sample_idle_rss(rec, srv, rss0)
        try:
            out, _ = lg.communicate(timeout=a.run_timeout + 30)
        except subprocess.TimeoutExpired:
            lg.kill()
            out, _ = lg.communicate()
            rec["status"] = "loadgen-timeout"
        reader.join(timeout=2)
        account_cpu(rec, srv, start)
        res = read_load(rec, lg, stderr_lines, out)
        finish_run(rec, srv, res, scen, rss0)
    finally:
        text = srv.stop()
    keep_server_log(rec, text)
    return rec


def summary_line(rec: dict) -> str:
    r = rec.get("load") or {}
    lat = r.get("latency_ms", {})
    parts = [f"{rec['server']:<8} {rec['scenario']:<10} r{rec['round']} {rec['status']}",
             f"ready {r.get('subs_ready')}/{(r.get('config') or {}).get('subs')}"]
    if rec["scenario"].startswith("idle"):
        parts.append(f"{rec.get('rss_per_conn_kb')} KB/conn, {r.get('connects_per_s')} conn/s")
    else:
        parts.append(f"pub {r.get('acked')}/{r.get('published')} at {r.get('pub_per_s')}/s, "
                     f"delivered {r.get('delivered')}/{r.get('expected')} "
                     f"({r.get('delivered_per_s')}/s), lost {r.get('lost')}, "
                     f"dup {r.get('duplicates')}, ooo {r.get('out_of_order')}, "
                     f"p50 {lat.get('p50')} p99 {lat.get('p99')} max {lat.get('max')} ms")
    parts.append(f"cpu srv {rec.get('server_cpu_pct')}% lg {r.get('loadgen_cpu_pct')}%"
                 f" (other {rec.get('other_core0_pct')}%/{rec.get('other_core1_pct')}%)")
    if r.get("end_reason") not in (None, "all-delivered", "hold-done"):
        parts.append(f"END {r.get('end_reason')}")
    return " | ".join(parts)


# --------------------------------------------------------------------------------------------
# summary

def metric(rec: dict, key: str):
    r = rec.get("load") or {}
    if key == "p50":
        return (r.get("latency_ms") or {}).get("p50")
    if key == "p99":
        return (r.get("latency_ms") or {}).get("p99")
    if key == "max":
        return (r.get("latency_ms") or {}).get("max")
    if key == "rss_per_conn_kb":
        return rec.get("rss_per_conn_kb")
    if key == "server_cpu_pct":
        return rec.get("server_cpu_pct")
    if key == "loadgen_cpu_pct":
        return r.get("loadgen_cpu_pct") if not rec["scenario"].startswith("idle") else \
            rec.get("loadgen_cpu_pct_whole_run")
    if key == "errors":
        return ((r.get("subs_failed") or 0) + (r.get("sub_disconnects") or 0)
                + (r.get("pub_errors") or 0) + (r.get("pub_conn_errors") or 0))
    return r.get(key)


SUMMED = {"lost", "duplicates", "out_of_order", "errors"}

ROWS = {
    "fanout": [("p50", "latency p50 ms"), ("p99", "latency p99 ms"), ("max", "latency max ms"),
               ("delivered_per_s", "delivered events/s"), ("lost", "lost"),
               ("duplicates", "duplicates"), ("out_of_order", "out of order"),
               ("errors", "conn/pub errors"), ("server_cpu_pct", "server CPU %"),
               ("loadgen_cpu_pct", "loadgen CPU %")],
    "tables": [("p50", "latency p50 ms"), ("p99", "latency p99 ms"), ("max", "latency max ms"),
               ("pub_per_s", "publishes/s acked"), ("delivered_per_s", "delivered events/s"),
               ("lost", "lost"), ("duplicates", "duplicates"), ("out_of_order", "out of order"),
               ("errors", "conn/pub errors"), ("server_cpu_pct", "server CPU %"),
               ("loadgen_cpu_pct", "loadgen CPU %")],
    "idle": [("rss_per_conn_kb", "RSS KB per idle conn"), ("connects_per_s", "conns accepted/s"),
             ("subs_ready", "subscribers up"), ("errors", "conn errors"),
             ("server_cpu_pct", "server CPU %"), ("loadgen_cpu_pct", "loadgen CPU %")],
    "throughput": [("pub_per_s", "publishes/s acked"), ("delivered_per_s", "delivered events/s"),
                   ("p50", "latency p50 ms"), ("p99", "latency p99 ms"), ("lost", "lost"),
                   ("duplicates", "duplicates"), ("out_of_order", "out of order"),
                   ("errors", "conn/pub errors"), ("server_cpu_pct", "server CPU %"),
                   ("loadgen_cpu_pct", "loadgen CPU %")],
}
ROWS["idle-max"] = ROWS["idle"]

# the figure each scenario is judged by, and whether higher is better
KEY_METRICS = [("fanout", "delivered_per_s", "delivered/s", True),
               ("tables", "p99", "latency p99", False),
               ("idle", "rss_per_conn_kb", "RSS/conn", False),
               ("idle", "connects_per_s", "conns/s", True),
               ("idle-max", "rss_per_conn_kb", "RSS/conn", False),
               ("idle-max", "connects_per_s", "conns/s", True),
               ("throughput", "delivered_per_s", "delivered/s", True)]


def held(runs: list[dict], server: str, scen: str) -> tuple[bool, str]:
    """Did server hold the scenario in every round: runs ok, no loss, no duplicates, and (idle)
    every subscriber up?"""
    rs = [r for r in runs if r["server"] == server and r["scenario"] == scen]
    if not rs:
        return False, "not run"
    bad = []
    for r in rs:
        ld = r.get("load") or {}
        if r["status"] != "ok" or not ld:
            bad.append(r["status"])
        elif (metric(r, "lost") or 0) or (metric(r, "duplicates") or 0):
            bad.append(f"lost {metric(r, 'lost') or 0} dup {metric(r, 'duplicates') or 0}")
        elif ((ld.get("config") or {}).get("rate", 0) > 0
              and (ld.get("acked") or 0) < (ld.get("config") or {}).get("publishes", 0)):
            # a fixed-rate scenario: the server did not accept the publishes it was offered
            bad.append(f"accepted only {ld.get('acked')} of {ld['config']['publishes']} "
                       f"publishes ({ld.get('pub_per_s')}/s of {ld['config']['rate']}/s)")
        elif scen.startswith("idle") and (ld.get("subs_ready") or 0) < (ld.get("config") or
                                                                         {}).get("subs", 0):
            bad.append(f"{ld.get('subs_ready')} of {(ld.get('config') or {}).get('subs')} up")
    return (not bad), "; ".join(bad)


def aggregate(runs: list[dict], server: str, scen: str, key: str):
    vals = [metric(r, key) for r in runs
            if r["server"] == server and r["scenario"] == scen and r.get("load")]
    vals = [v for v in vals if v is not None]
    if not vals:
        return None
    return sum(vals) if key in SUMMED else statistics.median(vals)


def fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and abs(v) >= 1000 or isinstance(v, int):
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in
                     enumerate(zip(headers, widths)))
    print(line)
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                        for i, (c, w) in enumerate(zip(row, widths))))


def report(runs: list[dict], scen_names: list[str], scen_defs: dict, servers: list[str],
           rounds: int) -> dict:
    summary: dict = {}
    verdicts: dict = {}  # scenario -> server -> held()'s (ok, why): "not run" is no failure
    print()
    print(f"Push benchmark: medians of {rounds} round(s); lost/duplicates/out-of-order/errors "
          f"are totals over the rounds")
    for s in scen_names:
        print(f"\n({s}) {scen_defs[s]['what']}")
        headers = ["metric"] + servers + (["clos_web/nchan"] if {CLOS, NCHAN} <= set(servers) else [])
        rows = []
        summary[s] = {}
        for key, label in ROWS[s]:
            vals = {sv: aggregate(runs, sv, s, key) for sv in servers}
            summary[s][key] = vals
            row = [label] + [fmt(vals[sv]) for sv in servers]
            if len(headers) > len(servers) + 1:
                c, n = vals.get(CLOS), vals.get(NCHAN)
                row.append(f"{c / n:.2f}x" if c is not None and n not in (None, 0) and
                           key not in SUMMED else "")
            rows.append(row)
        held_row = ["held (no loss/dup/failure)"]
        summary[s]["held"] = {}
        verdicts[s] = {sv: held(runs, sv, s) for sv in servers}
        for sv in servers:
            ok, why = verdicts[s][sv]
            summary[s]["held"][sv] = ok
            held_row.append("yes" if ok else "-" if why == "not run" else "FAIL")
        if len(headers) > len(servers) + 1:
            held_row.append("")
        rows.insert(0, held_row)
        print_table(headers, rows)
        bad = [r for r in runs if r["scenario"] == s and r["status"] != "ok"]
        for r in bad:
            print(f"  run failed: {r['server']} round {r['round']}: {r['status']} "
                  f"{r.get('error', '')[:200]}")
        for sv in servers:
            ok, why = verdicts[s][sv]
            if not ok and why != "not run":
                print(f"  FAILURE {sv}: {why}")
    # clos_web / peer on the figure each scenario is judged by
    peers = [sv for sv in servers if sv != CLOS]
    if CLOS in servers and peers:
        print("\nclos_web / peer (higher-is-better figures: clos_web's value / the peer's; "
              "lower-is-better ones (p99, RSS): the peer's / clos_web's; > 1 = clos_web ahead;"
              " FAIL = the peer did not hold the scenario)")
        rows = []
        summary["ratios"] = {}
        for s, key, label, higher in KEY_METRICS:
            if s not in scen_names:
                continue
            row = [f"{s} {label}"]
            for sv in peers:
                c, p = summary[s][key].get(CLOS), summary[s][key].get(sv)
                ok, why = verdicts[s][sv]
                if why == "not run":
                    row.append("-")  # (the floor outside the idle scenarios)
                elif not ok:
                    row.append("FAIL")
                    summary["ratios"][f"{s} {key} {sv}"] = "FAIL"
                elif c in (None, 0) or p in (None, 0):
                    row.append("-")
                else:
                    r = c / p if higher else p / c
                    summary["ratios"][f"{s} {key} {sv}"] = round(r, 3)
                    row.append(f"{r:.2f}x")
            rows.append(row)
        print_table(["scenario figure"] + peers, rows)
    return summary


def targets(runs: list[dict], summary: dict, scen_names: list[str], servers: list[str]) -> list:
    out = []

    def add(name, ok, detail):
        state = "n/a" if ok is None else ("met" if ok else "NOT met")
        out.append({"target": name, "result": state, "detail": detail})

    # zero loss and zero duplicates, everywhere
    for s in scen_names:
        if s.startswith("idle"):
            continue
        for sv in servers:
            rs = [r for r in runs if r["server"] == sv and r["scenario"] == s]
            if not rs:
                continue
            lost = sum(metric(r, "lost") or 0 for r in rs)
            dup = sum(metric(r, "duplicates") or 0 for r in rs)
            failed = [r for r in rs if r["status"] != "ok" or not r.get("load")]
            ok = lost == 0 and dup == 0 and not failed
            add(f"({s}) {sv}: zero loss, zero duplicates", ok,
                f"lost {lost}, duplicates {dup}" + (f", {len(failed)} failed run(s)"
                                                    if failed else ""))
    have_both = {CLOS, NCHAN} <= set(servers)
    for s in ("fanout", "throughput"):
        if s in scen_names:
            c = summary[s]["delivered_per_s"].get(CLOS)
            n = summary[s]["delivered_per_s"].get(NCHAN) if have_both else None
            add(f"({s}) clos_web delivered/s >= nchan", None if c is None or n is None else c >= n,
                f"{fmt(c)} vs {fmt(n)}")
    if "tables" in scen_names:
        p99 = summary["tables"]["p99"].get(CLOS)
        add("(tables) clos_web p99 <= 10 ms", None if p99 is None else p99 <= 10.0,
            f"p99 {fmt(p99)} ms")
    for idle in ("idle", "idle-max"):
        if idle not in scen_names:
            continue
        kb = summary[idle]["rss_per_conn_kb"].get(CLOS)
        add(f"({idle}) clos_web <= 3 KB RSS per idle connection",
            None if kb is None else kb <= 3.0, f"{fmt(kb)} KB")
        cps = summary[idle]["connects_per_s"].get(CLOS)
        add(f"({idle}) clos_web >= 10,000 connections accepted/s",
            None if cps is None else cps >= 10000, f"{fmt(cps)}/s")
        # issue 15, with the same run's floor (a bare Python loop) beside it when it ran
        n = summary[idle]["connects_per_s"].get(NCHAN) if have_both else None
        f = summary[idle]["connects_per_s"].get(FLOOR)
        add(f"({idle}) clos_web connections accepted/s >= nchan",
            None if cps is None or n is None else cps >= n,
            f"{fmt(cps)} vs {fmt(n)}/s" + (f"; the floor {fmt(f)}/s ({f / n:.2f}x nchan)"
                                           if f and n else ""))
    # clos_web ahead of every Python peer in every scenario (a peer that failed is behind;
    # clos_web failing a scenario is not ahead)
    py = [sv for sv in servers if sv in PY_PEERS]
    if CLOS in servers and py:
        for s, key, label, higher in KEY_METRICS:
            if s not in scen_names:
                continue
            c = summary[s][key].get(CLOS)
            behind, detail = [], []
            for sv in py:
                p = summary[s][key].get(sv)
                if not summary[s]["held"].get(sv):
                    detail.append(f"{sv} FAIL")
                    continue
                detail.append(f"{sv} {fmt(p)}")
                if c is None or p is not None and (c < p if higher else c > p):
                    behind.append(sv)
            ok = summary[s]["held"].get(CLOS) and c is not None and not behind
            add(f"({s}) clos_web ahead of every Python peer on {label}", ok,
                f"clos_web {fmt(c)} vs " + ", ".join(detail)
                + (f"; behind {', '.join(behind)}" if behind else ""))
    print("\nTargets:")
    for t in out:
        mark = "FAILURE" if "zero loss" in t["target"] and t["result"] == "NOT met" else t["result"]
        print(f"  {mark:8} {t['target']}: {t['detail']}")
    return out


# --------------------------------------------------------------------------------------------
# main

def cmd_out(argv: list[str]) -> str:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        return (p.stdout + p.stderr).strip()
    except (OSError, subprocess.SubprocessError) as e:
        return f"unavailable: {e}"


def machine_info(repo: Path) -> dict:
    cpu_model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    clos_py = repo / ".venv" / "bin" / "python"
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "kernel": platform.release(),
        "platform": platform.platform(),
        "python_harness": platform.python_version(),
        "python_clos_web": cmd_out([str(clos_py), "--version"]) if clos_py.exists() else None,
        "nginx": cmd_out([NGINX_BIN, "-v"]) if Path(NGINX_BIN).exists() else None,
        "nchan": cmd_out(["dpkg-query", "-W", "-f=${Version}", "libnginx-mod-nchan"]),
        "gcc": cmd_out(["gcc", "--version"]).splitlines()[0] if shutil.which("gcc") else None,
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
        "rlimit_nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
        "somaxconn": Path("/proc/sys/net/core/somaxconn").read_text().strip(),
        "git_commit": cmd_out(["git", "-C", str(repo), "rev-parse", "HEAD"]),
        "git_dirty": bool(cmd_out(["git", "-C", str(repo), "status", "--porcelain",
                                   "--untracked-files=no"])),
        "note": "shared 2-core machine: other engineers' tests may run at the same time",
    }


def raise_fd_limit() -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def ensure_loadgen(path: Path) -> bool:
    if path.exists() and (not LOADGEN_SRC.exists() or
                          path.stat().st_mtime >= LOADGEN_SRC.stat().st_mtime):
        return True
    if not shutil.which("gcc"):
        return path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    log(f"building {path}")
    r = subprocess.run(["gcc", "-O2", "-Wall", "-o", str(path), str(LOADGEN_SRC)])
    return r.returncode == 0


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (3)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 1 round, small sizes (1,000 subscribers, 2 s)")
    p.add_argument("--scenarios", default="fanout,tables,idle,idle-max,throughput")
    p.add_argument("--servers", default=",".join(SERVERS))
    p.add_argument("--repo", type=Path, default=REPO_DIR)
    p.add_argument("--loadgen", type=Path, default=LOADGEN)
    p.add_argument("--run-timeout", type=float, default=180.0,
                   help="hard bound of one load generator run, seconds")
    p.add_argument("--results-dir", type=Path, default=BENCH_DIR / "results")
    p.add_argument("--no-save", action="store_true")
    p.add_argument("--no-pin", action="store_true")
    p.add_argument("--report", type=Path, metavar="PUSH_JSON",
                   help="print the tables and targets of a saved run again (no load), and "
                        "store the recomputed summary and targets in that file")
    # run.sh passes the HTTP benchmark's options too: ignore the ones meant for it alone
    a, unknown = p.parse_known_args(argv)
    if unknown:
        log(f"ignoring options meant for the HTTP benchmark: {' '.join(unknown)}")
    if a.rounds is None:
        a.rounds = 1 if a.quick else 3
    return a


def _sigterm(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    a = parse_args(argv)
    # Python's own SIGINT handler (also when started in the background with SIGINT ignored):
    # the servers then get the default SIGINT after exec, and SIGTERM cleans up like Ctrl-C.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _sigterm)
    if a.report:
        doc = json.loads(a.report.read_text())
        cfg = doc["config"]
        defs = {s: {"what": v["what"]} for s, v in cfg["scenario_defs"].items()}
        doc["summary"] = report(doc["runs"], cfg["scenarios"], defs, cfg["servers"],
                                cfg["rounds"])
        doc["targets"] = targets(doc["runs"], doc["summary"], cfg["scenarios"], cfg["servers"])
        a.report.write_text(json.dumps(doc, indent=1, default=str))
        return 0
    scen_defs = scenarios(a.quick)
    scen_names = [s.strip() for s in a.scenarios.split(",") if s.strip()]
    servers = [s.strip() for s in a.servers.split(",") if s.strip()]
    for s in scen_names:
        if s not in scen_defs:
            print(f"unknown scenario {s!r}; choose from {','.join(scen_defs)}", file=sys.stderr)
            return 2
    other = [s for s in servers if s not in SERVERS]
    if other:  # e.g. --servers clos_web,aiohttp from the HTTP benchmark's options
        log(f"no push peer named {','.join(other)} (push servers: {','.join(SERVERS)}): skipped")
        servers = [s for s in servers if s in SERVERS]
    if not servers:
        log("no push server selected: nothing to do")
        return 0
    soft, hard = raise_fd_limit()
    log(f"RLIMIT_NOFILE {soft}/{hard}")
    if not ensure_loadgen(a.loadgen):
        print(f"load generator {a.loadgen} missing and could not be built (bench/setup.sh)",
              file=sys.stderr)
        return 1
    if NCHAN in servers and not (Path(NGINX_BIN).exists() and Path(NCHAN_MODULE).exists()):
        log("nginx or the Nchan module is missing (bench/setup.sh installs them): nchan skipped")
        servers.remove(NCHAN)
    if a.no_pin or not shutil.which("taskset"):
        a.no_pin = True
    st = subprocess.run([str(a.loadgen), "--selftest"], capture_output=True, text=True)
    log(f"load generator self-test: {st.stdout.strip()} {st.stderr.strip()}")
    info = machine_info(a.repo)
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
            k = (rnd - 1) % len(servers)
            order = servers[k:] + servers[:k]
            for s in scen_names:
                for sv in order:
                    if sv == FLOOR and not scen_defs[s].get("idle"):
                        continue  # the floor holds subscribers; it has no channels
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
              f">{FOREIGN_CPU_WARN:.0%} of core 0 or 1): the machine is shared, numbers are noisy")
    hot = [r for r in runs if (metric(r, "loadgen_cpu_pct") or 0) > 90]
    if hot:
        print(f"{len(hot)} run(s) had the load generator above 90% of core 1 "
              f"(those numbers are load-generator bound): "
              + ", ".join(f"{r['server']}/{r['scenario']}/r{r['round']}" for r in hot))
    elapsed = time.monotonic() - t_start
    print(f"\n{len(runs)} runs in {elapsed / 60:.1f} min")
    if not a.no_save:
        a.results_dir.mkdir(parents=True, exist_ok=True)
        path = a.results_dir / f"push-{stamp}.json"
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
