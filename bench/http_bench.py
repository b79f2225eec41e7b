#!/usr/bin/env python3
"""HTTP request/response benchmark: clos_web vs. Python peers vs. nginx.

This is a benchmark, not a test. It never exits non-zero because a target was
missed (only on usage errors or when nothing at all could be measured).

Method (see bench/README.md):
  * every server runs pinned to core 0 (``taskset -c 0``), the load generator
    ``wrk -t1`` pinned to core 1 (``taskset -c 1``);
  * per round, each server is started fresh, probed until it answers (bounded
    wait), warmed up, then measured for every (path, connections) cell, then
    stopped; rounds are interleaved (round 1: all servers, round 2: all
    servers, ...) and the server order is rotated from round to round;
  * the reported number of a cell is the median over rounds;
  * a ratio of two paths of one server (clos_web's /add against its /plaintext)
    is also measured paired: after its cells, in every round, the two paths
    alternate in short runs on the same server instance (ABBA order), and the
    ratio is the median of the per-pair ratios. Cells of one path run 10 s or
    more apart, and on this kind of shared machine the speed drifts by 2x
    within minutes; a pair's two runs see the same machine.

Only 127.0.0.1 is ever contacted. Standard library only.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
PEERS_DIR = BENCH_DIR / "peers"
BENCH_VENV_PY = BENCH_DIR / ".venv" / "bin" / "python"
NGINX_BIN = "/usr/sbin/nginx"
HOST = "127.0.0.1"

ALL_SERVERS = [
    "clos_web",
    "uvicorn-h11",
    "uvicorn-httptools-uvloop",
    "aiohttp",
    "tornado",
    "nginx",
    # measuring sticks, not peers (peers/floor.py, README "The floor"): /plaintext only
    "floor",
    "minimal",
]
DEFAULT_PATHS = ["/plaintext", "/json", "/add?a=1&b=2"]
PATH_ALIASES = {"plaintext": "/plaintext", "json": "/json", "add": "/add?a=1&b=2"}
# expected body of a 200 answer, used by the pre-run probe
EXPECTED_BODY = {
    "/plaintext": b"Hello, World!",
    "/add?a=1&b=2": b"3",
}
DEFAULT_CONNS = [100, 1000]
CLOS = "clos_web"
PT, ADD = "/plaintext", "/add?a=1&b=2"
PAIR_CONNS = 100  # the paired /add vs /plaintext runs: connections, seconds per run
PAIR_SECONDS = 2

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0
# a run where other processes used more than this share of core 0 or core 1 is
# flagged "contended" (its numbers are distorted; rerun on a quiet machine)
FOREIGN_CPU_WARN = 0.10


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def path_label(path: str) -> str:
    return path.lstrip("/").split("?", 1)[0] or "/"


# --------------------------------------------------------------------------
# server definitions
# --------------------------------------------------------------------------


@dataclass
class ServerSpec:
    name: str
    argv: list[str]  # may contain "{port}" / "{tmp}" placeholders
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)
    prepare: object = None  # callable(tmpdir: Path, port: int) -> None
    requires: list[Path] = field(default_factory=list)


def _nginx_prepare(tmp: Path, port: int) -> None:
    template = (PEERS_DIR / "nginx.conf.template").read_text()
    user_line = "user root;" if os.geteuid() == 0 else ""
    conf = (
        template.replace("@PORT@", str(port))
        .replace("@TMPDIR@", str(tmp))
        .replace("@USER_LINE@", user_line)
    )
    (tmp / "nginx.conf").write_text(conf)


def server_specs(repo: Path) -> dict[str, ServerSpec]:
    clos_py = repo / ".venv" / "bin" / "python"
    hello = repo / "examples" / "hello.py"
    peer_py = str(BENCH_VENV_PY)
    env_clos = {"PYTHONPATH": str(repo)}
    uvicorn = [
        peer_py, "-m", "uvicorn", "starlette_app:app",
        "--host", HOST, "--port", "{port}",
        "--workers", "1", "--no-access-log", "--log-level", "warning",
    ]
    return {
        "clos_web": ServerSpec(
            "clos_web",
            [str(clos_py), "examples/hello.py", "--port", "{port}"],
            cwd=repo, env=env_clos, requires=[clos_py, hello],
        ),
        "uvicorn-h11": ServerSpec(
            "uvicorn-h11", uvicorn + ["--http", "h11", "--loop", "asyncio"],
            cwd=PEERS_DIR, requires=[BENCH_VENV_PY],
        ),
        "uvicorn-httptools-uvloop": ServerSpec(
            "uvicorn-httptools-uvloop",
            uvicorn + ["--http", "httptools", "--loop", "uvloop"],
            cwd=PEERS_DIR, requires=[BENCH_VENV_PY],
        ),
        "aiohttp": ServerSpec(
            "aiohttp", [peer_py, "aiohttp_app.py", "--port", "{port}"],
            cwd=PEERS_DIR, requires=[BENCH_VENV_PY],
        ),
        "tornado": ServerSpec(
            "tornado", [peer_py, "tornado_app.py", "--port", "{port}"],
            cwd=PEERS_DIR, requires=[BENCH_VENV_PY],
        ),
        "nginx": ServerSpec(
            "nginx",
            [NGINX_BIN, "-p", "{tmp}", "-c", "{tmp}/nginx.conf", "-e", "{tmp}/error.log"],
            cwd=PEERS_DIR, prepare=_nginx_prepare, requires=[Path(NGINX_BIN)],
        ),
        "floor": ServerSpec(
            "floor", [peer_py, "floor.py", "--port", "{port}"],
            cwd=PEERS_DIR, requires=[BENCH_VENV_PY],
        ),
        "minimal": ServerSpec(
            "minimal", [peer_py, "floor.py", "--port", "{port}", "--minimal"],
            cwd=PEERS_DIR, requires=[BENCH_VENV_PY],
        ),
    }


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class ServerError(RuntimeError):
    pass


class RunningServer:
    """One started server process (own session/process group, pinned to core 0)."""

    def __init__(self, spec: ServerSpec, pin: bool):
        self.spec = spec
        self.pin = pin
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.tmp: Path | None = None
        self.logfile = None

    def start(self) -> None:
        for req in self.spec.requires:
            if not req.exists():
                raise ServerError(f"{self.spec.name}: required file missing: {req}")
        self.tmp = Path(tempfile.mkdtemp(prefix=f"bench-{self.spec.name}-"))
        self.port = free_port()
        if self.spec.prepare:
            self.spec.prepare(self.tmp, self.port)
        argv = [a.replace("{port}", str(self.port)).replace("{tmp}", str(self.tmp))
                for a in self.spec.argv]
        if self.pin:
            argv = ["taskset", "-c", "0"] + argv
        env = dict(os.environ)
        env.pop("VIRTUAL_ENV", None)
        env.update(self.spec.env)
        self.logfile = open(self.tmp / "server.log", "wb")
        self.argv = argv
        self.proc = subprocess.Popen(
            argv, cwd=self.spec.cwd, env=env, stdin=subprocess.DEVNULL,
            stdout=self.logfile, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def log_tail(self, n: int = 15) -> str:
        if not self.tmp:
            return ""
        chunks = []
        for name in ("server.log", "error.log"):
            p = self.tmp / name
            if p.exists():
                lines = p.read_text(errors="replace").splitlines()[-n:]
                if lines:
                    chunks.append(f"--- {name} ---\n" + "\n".join(lines))
        return "\n".join(chunks)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        last_err = "no answer"
        while time.monotonic() < deadline:
            if not self.alive():
                raise ServerError(
                    f"{self.spec.name}: exited with code {self.proc.returncode} during "
                    f"startup\n{self.log_tail()}")
            try:
                status, _ = http_get(self.port, "/plaintext", timeout=1.0)
                return  # any HTTP answer means the port is serving
            except OSError as e:
                last_err = str(e)
            time.sleep(0.1)
        raise ServerError(
            f"{self.spec.name}: did not answer on {HOST}:{self.port} within "
            f"{timeout:.0f}s ({last_err})\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            pgid = self.proc.pid  # leader of its own session (start_new_session)
            for sig, wait in ((signal.SIGINT, STOP_TIMEOUT_S), (signal.SIGTERM, 3.0),
                              (signal.SIGKILL, 3.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, sig)
                try:
                    self.proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        # nginx workers (same process group) may outlive the master briefly
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        if self.logfile:
            self.logfile.close()
            self.logfile = None
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


# --------------------------------------------------------------------------
# CPU accounting (diagnostics: is the server saturating core 0, is wrk the
# bottleneck on core 1, is something else running on the cores?)
# --------------------------------------------------------------------------

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_jiffies() -> dict[str, dict[str, int]]:
    """cpuN -> jiffy counters from /proc/stat (busy/total, task = user+nice+system, steal)."""
    out = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("cpu") and line[3:4].isdigit():
                name, *vals = line.split()
                v = (list(map(int, vals)) + [0] * 8)[:8]
                idle = v[3] + v[4]  # idle + iowait
                out[name] = {"busy": sum(v) - idle, "total": sum(v),
                             "task": v[0] + v[1] + v[2], "steal": v[7]}
    return out


def group_cpu_seconds(pgid: int) -> float:
    """utime+stime of all live processes of process group pgid."""
    total = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            st = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        rest = st[st.rindex(")") + 2:].split()
        if int(rest[2]) == pgid:
            total += int(rest[11]) + int(rest[12])
    return total / _CLK_TCK


def cpu_usage(before: dict, after: dict, cpu: str, what: str = "busy") -> float | None:
    """Share of one core's time spent in `what` between two cpu_jiffies() samples."""
    if cpu not in before or cpu not in after:
        return None
    tot = after[cpu]["total"] - before[cpu]["total"]
    return (after[cpu][what] - before[cpu][what]) / tot if tot > 0 else None


# --------------------------------------------------------------------------
# wrk
# --------------------------------------------------------------------------

_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_NUM_UNIT = r"([\d.]+)\s*(us|ms|s|m|h)"


def _to_ms(num: str, unit: str) -> float:
    return float(num) * _UNIT_MS[unit]


def parse_wrk(out: str) -> dict:
    r: dict = {}
    m = re.search(r"Requests/sec:\s*([\d.]+)", out)
    r["rps"] = float(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in " + _NUM_UNIT, out)
    r["requests"] = int(m.group(1)) if m else None
    m = re.search(r"Latency\s+" + _NUM_UNIT + r"\s+" + _NUM_UNIT + r"\s+" + _NUM_UNIT, out)
    if m:
        r["lat_avg_ms"] = _to_ms(m.group(1), m.group(2))
        r["lat_stdev_ms"] = _to_ms(m.group(3), m.group(4))
        r["lat_max_ms"] = _to_ms(m.group(5), m.group(6))
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s*{pct}%\s+" + _NUM_UNIT, out, re.M)
        if m:
            r[f"lat_p{pct}_ms"] = _to_ms(m.group(1), m.group(2))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    r["socket_errors"] = (
        dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups()), strict=True))
        if m else {"connect": 0, "read": 0, "write": 0, "timeout": 0})
    m = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    r["non_2xx"] = int(m.group(1)) if m else 0
    return r


def run_wrk(port: int, path: str, conns: int, duration: float, threads: int,
            pin: bool) -> dict:
    url = f"http://{HOST}:{port}{path}"
    argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{max(1, round(duration))}s",
            "--latency", url]
    if pin:
        argv = ["taskset", "-c", "1"] + argv
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60,
                           stdin=subprocess.DEVNULL)
        out, rc = p.stdout + p.stderr, p.returncode
    except subprocess.TimeoutExpired as e:
        out, rc = f"wrk timed out: {e}", -1
    wall = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = parse_wrk(out)
    res["wrk_rc"] = rc
    # CPU of the reaped wrk process (taskset execs wrk, so it is the same process)
    res["wrk_cpu"] = ((ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)) / wall
    res["wrk_output"] = out
    return res


# --------------------------------------------------------------------------
# machine info
# --------------------------------------------------------------------------


def _cmd_out(argv: list[str], **kw) -> str:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=30, **kw)
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
    peer_versions = {}
    if BENCH_VENV_PY.exists():
        code = ("import importlib.metadata as m, json, platform\n"
                "d={'python': platform.python_version()}\n"
                "for n in ('uvicorn','starlette','httptools','uvloop','aiohttp','tornado','h11'):\n"
                "  try: d[n]=m.version(n)\n"
                "  except Exception: d[n]=None\n"
                "print(json.dumps(d))")
        with contextlib.suppress(ValueError):
            peer_versions = json.loads(_cmd_out([str(BENCH_VENV_PY), "-c", code]))
    clos_py = repo / ".venv" / "bin" / "python"
    return {
        "nproc": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "kernel": platform.release(),
        "platform": platform.platform(),
        "python_harness": platform.python_version(),
        "python_clos_web": _cmd_out([str(clos_py), "--version"]) if clos_py.exists() else None,
        "peer_versions": peer_versions,
        "wrk": _cmd_out(["wrk", "--version"]).splitlines()[0] if shutil.which("wrk") else None,
        "nginx": _cmd_out([NGINX_BIN, "-v"]) if Path(NGINX_BIN).exists() else None,
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
        "rlimit_nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
        "git_commit": _cmd_out(["git", "-C", str(repo), "rev-parse", "HEAD"]),
        "git_dirty": bool(_cmd_out(["git", "-C", str(repo), "status", "--porcelain",
                                    "--untracked-files=no"])),
    }


def raise_fd_limit(conns: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < conns + 256:
        log(f"WARNING: fd limit {soft} is low for -c{conns} (hard limit {hard})")


# --------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------


def fmt_rps(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}"


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(widths[0]) if i == 0 else h.rjust(widths[i])
                     for i, h in enumerate(headers))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i])
                        for i, c in enumerate(r)))


def summarize(runs: list[dict], servers: list[str], paths: list[str],
              conns_list: list[int]) -> dict:
    """cells[server][f"{path}|{conns}"] = {status, median_rps, ...}"""
    cells: dict = {}
    for s in servers:
        cells[s] = {}
        for path in paths:
            for c in conns_list:
                rs = [r for r in runs if r["server"] == s and r["path"] == path
                      and r["conns"] == c]
                key = f"{path}|{c}"
                if not rs:
                    cells[s][key] = {"status": "not-run"}
                    continue
                if all(r["status"] == "skipped" for r in rs):
                    cells[s][key] = {"status": "skipped", "reason": rs[0].get("reason")}
                    continue
                ok = [r for r in rs if r["status"] == "ok"]
                failed = [r for r in rs if r["status"] == "failed"]
                cell = {
                    "status": "failed" if failed else ("ok" if ok else "failed"),
                    "n_ok": len(ok), "n_failed": len(failed),
                    "reasons": sorted({r.get("reason", "") for r in failed}),
                }
                if ok:
                    cell["median_rps"] = statistics.median(r["rps"] for r in ok)
                    cell["rps_all"] = [r["rps"] for r in ok]
                    for k in ("lat_p50_ms", "lat_p99_ms"):
                        vals = [r[k] for r in ok if r.get(k) is not None]
                        if vals:
                            cell[k] = statistics.median(vals)
                cells[s][key] = cell
    return cells


def cell_text(cell: dict, value: str, rounds: int | None = None) -> str:
    st = cell["status"]
    if st == "ok":
        if rounds and cell.get("n_ok", rounds) < rounds:
            return f"{value} ({cell['n_ok']}/{rounds})"
        return value
    if st == "skipped":
        return "n/a"
    if st == "not-run":
        return "-"
    return "FAIL"


def report(cells: dict, servers: list[str], paths: list[str], conns_list: list[int],
           runs: list[dict], pairs: list[dict]) -> list[dict]:
    cols = [(p, c) for p in paths for c in conns_list]
    headers = ["server"] + [f"{path_label(p)} c{c}" for p, c in cols]

    rounds = max((r["round"] for r in runs), default=0)
    print("\nRequests/sec (median over rounds; n/a = route not served, FAIL = a run "
          "failed, (k/n) = median of only k of n rounds)")
    rows = []
    for s in servers:
        rows.append([s] + [cell_text(cells[s][f"{p}|{c}"],
                                     fmt_rps(cells[s][f"{p}|{c}"].get("median_rps")), rounds)
                           for p, c in cols])
    print_table(headers, rows)

    print("\nLatency p50 / p99 in ms (median over rounds)")
    rows = []
    for s in servers:
        row = [s]
        for p, c in cols:
            cell = cells[s][f"{p}|{c}"]
            v = (f"{cell['lat_p50_ms']:.2f}/{cell['lat_p99_ms']:.2f}"
                 if "lat_p50_ms" in cell and "lat_p99_ms" in cell else "")
            row.append(cell_text(cell, v))
        rows.append(row)
    print_table(headers, rows)

    def ratio(peer: str, p: str, c: int) -> float | None:
        a = cells.get(CLOS, {}).get(f"{p}|{c}", {})
        b = cells.get(peer, {}).get(f"{p}|{c}", {})
        if a.get("status") == "ok" and b.get("status") == "ok" and b["median_rps"]:
            return a["median_rps"] / b["median_rps"]
        return None

    if CLOS in servers and len(servers) > 1:
        print(f"\nRatio {CLOS} / peer (req/s; >1 means {CLOS} is faster)")
        rows = []
        for s in servers:
            if s == CLOS:
                continue
            rows.append([s] + [f"{r:.2f}x" if (r := ratio(s, p, c)) is not None else "-"
                               for p, c in cols])
        print_table(headers, rows)
        print()
        for s in servers:
            if s == CLOS:
                continue
            parts = []
            for p, c in cols:
                r = ratio(s, p, c)
                if r is not None:
                    parts.append(f"{r:.2f}x {s} ({path_label(p)} c{c})")
            if parts:
                print(f"{CLOS} is " + ", ".join(parts))

    # errors seen by wrk
    bad = [r for r in runs if r["status"] != "skipped" and (
        r.get("non_2xx") or any((r.get("socket_errors") or {}).values())
        or r["status"] == "failed")]
    print("\nwrk errors (non-2xx responses, socket errors) and failed runs:")
    if not bad:
        print("  none")
    for r in bad:
        se = r.get("socket_errors") or {}
        print(f"  round {r['round']} {r['server']:<25} {path_label(r['path']):<9} "
              f"c{r['conns']:<5} non-2xx={r.get('non_2xx', 0)} "
              f"socket: connect={se.get('connect', 0)} read={se.get('read', 0)} "
              f"write={se.get('write', 0)} timeout={se.get('timeout', 0)}"
              + (f"  FAILED: {r.get('reason')}" if r["status"] == "failed" else ""))

    contended = [r for r in runs if r.get("contended")]
    if contended:
        print(f"\nWARNING: {len(contended)} of {sum(1 for r in runs if 'rps' in r)} runs were "
              f"contended (other processes used > {FOREIGN_CPU_WARN:.0%} of the server's or "
              "wrk's core); their numbers are low and noisy:")
        for r in contended:
            print(f"  round {r['round']} {r['server']:<25} {path_label(r['path']):<9} "
                  f"c{r['conns']:<5} other load core0 {r['foreign_core0']:.0%}, "
                  f"core1 {r['foreign_core1']:.0%}")

    # targets
    def med(s: str, p: str, c: int):
        cell = cells.get(s, {}).get(f"{p}|{c}")
        if cell is None or cell["status"] == "not-run":
            return None, "not measured"
        if cell["status"] != "ok":
            return None, f"{s} {path_label(p)} c{c} {cell['status']}"
        return cell["median_rps"], ""

    defs = [
        (f"{CLOS} plaintext c100 >= 1.3x aiohttp", CLOS, PT, 100, "aiohttp", PT, 100, 1.3),
        (f"{CLOS} plaintext c100 >= 3x uvicorn-h11", CLOS, PT, 100, "uvicorn-h11", PT, 100, 3.0),
        (f"{CLOS} plaintext c1000 >= 1.5x aiohttp", CLOS, PT, 1000, "aiohttp", PT, 1000, 1.5),
        # issue 15; "floor" and "minimal" below say what Python itself reaches in the same run
        (f"{CLOS} plaintext c100 >= 0.7x nginx", CLOS, PT, 100, "nginx", PT, 100, 0.7),
    ]
    targets = []
    print("\nTargets:")

    def verdict(text: str, factor: float, value: float | None, detail: str) -> None:
        word = "met" if value is not None and value >= factor else (
            "n/a" if detail == "not measured" else "NOT met")
        print(f"  [{word:>7}] {text}: {detail}")
        targets.append({"target": text, "factor": factor, "value": value,
                        "verdict": word, "detail": detail})

    for text, s1, p1, c1, s2, p2, c2, factor in defs:
        a, why_a = med(s1, p1, c1)
        b, why_b = med(s2, p2, c2)
        if a is None or b is None:
            verdict(text, factor, None, why_a or why_b)
        else:
            verdict(text, factor, a / b, f"{a / b:.2f}x ({fmt_rps(a)} vs {fmt_rps(b)} req/s)")
    # /add against /plaintext: the median of the paired runs' ratios (see the docstring)
    text = f"{CLOS} add >= 0.85x {CLOS} plaintext (c{PAIR_CONNS}, paired)"
    a, _ = med(CLOS, ADD, PAIR_CONNS)
    b, _ = med(CLOS, PT, PAIR_CONNS)
    cells_txt = f"; the c{PAIR_CONNS} cells' medians give {a / b:.2f}x" if a and b else ""
    if pairs:
        ratios = [p["ratio"] for p in pairs]
        q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
        q2 = statistics.median(ratios)
        verdict(text, 0.85, q2, f"{q2:.2f}x, median of {len(ratios)} pairs (quartiles "
                f"{q1:.2f}-{q3:.2f}x){cells_txt}")
    else:
        verdict(text, 0.85, None, "not measured")
    # the floor: how much of nginx's rate Python code reaches at all (peers/floor.py)
    n, _ = med("nginx", PT, 100)
    floors = [(s, r) for s in ("floor", "minimal") if (r := med(s, PT, 100)[0]) and n]
    if floors:
        print("  (the same run's floor, plaintext c100: " + ", ".join(
            f"{s} {r / n:.2f}x nginx" for s, r in floors) + f"; {CLOS} "
            + (f"{c / n:.2f}x" if (c := med(CLOS, PT, 100)[0]) else "-") + ")")
    return targets


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="HTTP benchmark: clos_web vs. Python peers and nginx (wrk, pinned cores).")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3)")
    ap.add_argument("--duration", type=float, default=None,
                    help="seconds per wrk run (default 5)")
    ap.add_argument("--warmup", type=float, default=None,
                    help="warm-up seconds after each server start (default 2)")
    ap.add_argument("--servers", default=",".join(ALL_SERVERS),
                    help=f"comma list out of: {','.join(ALL_SERVERS)}")
    ap.add_argument("--conns", default=",".join(map(str, DEFAULT_CONNS)),
                    help="comma list of wrk connection counts (default 100,1000)")
    ap.add_argument("--paths", default=",".join(DEFAULT_PATHS),
                    help="comma list of paths, or aliases plaintext,json,add")
    ap.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 1 round, 3 s per run, 1 s warm-up (explicit options win)")
    ap.add_argument("--repo", type=Path, default=REPO_DIR,
                    help="repo root holding .venv/ and examples/hello.py (default: bench/..)")
    ap.add_argument("--results-dir", type=Path, default=BENCH_DIR / "results")
    ap.add_argument("--no-save", action="store_true", help="do not write the JSON file")
    ap.add_argument("--retry-contended", type=int, default=1, metavar="N",
                    help="re-run a cell up to N times when other processes used more "
                         f"than {FOREIGN_CPU_WARN * 100:.0f}%% of the server's or wrk's core "
                         "(default 1)")
    ap.add_argument("--pairs", type=int, default=None, metavar="N",
                    help="paired /add vs /plaintext runs of clos_web per round "
                         "(default 8; 2 with --quick; 0 turns them off)")
    ap.add_argument("--no-pin", action="store_true",
                    help="do not use taskset (automatic when fewer than 2 CPUs)")
    a = ap.parse_args(argv)

    quick = {"rounds": 1, "duration": 3.0, "warmup": 1.0, "pairs": 2}
    normal = {"rounds": 3, "duration": 5.0, "warmup": 2.0, "pairs": 8}
    for k, v in (quick if a.quick else normal).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    a.server_list = [s.strip() for s in a.servers.split(",") if s.strip()]
    unknown = [s for s in a.server_list if s not in ALL_SERVERS]
    if unknown:
        ap.error(f"unknown server(s) {unknown}; choose from {ALL_SERVERS}")
    a.conns_list = [int(c) for c in a.conns.split(",") if c.strip()]
    a.path_list = []
    for p in a.paths.split(","):
        p = p.strip()
        if p:
            p = PATH_ALIASES.get(p, p)
            a.path_list.append(p if p.startswith("/") else "/" + p)
    if a.rounds < 1 or a.duration < 1 or not a.conns_list or not a.path_list:
        ap.error("need rounds >= 1, duration >= 1, at least one conns value and one path")
    a.repo = a.repo.resolve()
    return a


def probe_paths(server: RunningServer, paths: list[str]) -> dict[str, str | None]:
    """path -> None if servable, else a reason to skip it."""
    out: dict[str, str | None] = {}
    for p in paths:
        try:
            status, body = http_get(server.port, p)
        except OSError as e:
            out[p] = f"probe error: {e}"
            continue
        if status == 404:
            out[p] = "404 (route not served)"
        elif not 200 <= status < 300:
            out[p] = f"probe answered {status}"
        elif p in EXPECTED_BODY and body.strip() != EXPECTED_BODY[p]:
            out[p] = f"probe body {body[:40]!r} != {EXPECTED_BODY[p]!r}"
        elif p == "/json":
            try:
                ok = json.loads(body) == {"message": "Hello, World!"}
            except ValueError:
                ok = False
            out[p] = None if ok else f"probe body {body[:40]!r} is not the expected JSON"
        else:
            out[p] = None
    return out


def measured_wrk(srv: RunningServer, path: str, conns: int, a: argparse.Namespace,
                 pin: bool, duration: float | None = None) -> dict:
    """One wrk run plus CPU accounting of the server, wrk and everything else."""
    j0, g0, t0 = cpu_jiffies(), group_cpu_seconds(srv.proc.pid), time.monotonic()
    res = run_wrk(srv.port, path, conns, duration or a.duration, a.threads, pin)
    j1, g1, t1 = cpu_jiffies(), group_cpu_seconds(srv.proc.pid), time.monotonic()
    res["server_cpu"] = (g1 - g0) / (t1 - t0)  # 1.0 = one core fully busy
    res["core0_busy"] = cpu_usage(j0, j1, "cpu0")
    res["core1_busy"] = cpu_usage(j0, j1, "cpu1")
    if pin and res["core0_busy"] is not None and res["core1_busy"] is not None:
        # process time (user+system, not irq/softirq) on the pinned cores that is
        # not charged to the server resp. wrk, plus time stolen by the hypervisor
        res["foreign_core0"] = max(0.0, cpu_usage(j0, j1, "cpu0", "task")
                                   - res["server_cpu"]) + cpu_usage(j0, j1, "cpu0", "steal")
        res["foreign_core1"] = max(0.0, cpu_usage(j0, j1, "cpu1", "task")
                                   - res["wrk_cpu"]) + cpu_usage(j0, j1, "cpu1", "steal")
        res["contended"] = max(res["foreign_core0"], res["foreign_core1"]) > FOREIGN_CPU_WARN
    return res


def paired_runs(srv: "RunningServer", a: argparse.Namespace, rnd: int, pin: bool,
                pairs: list[dict]) -> None:
    """``a.pairs`` pairs of short wrk runs of /plaintext and /add on one server instance,
    in ABBA order (so a drift during a pair favours neither path). A pair with a failed or
    contended run (see measured_wrk) is logged and left out of the ratio."""
    for i in range(a.pairs):
        order = (PT, ADD) if i % 2 == 0 else (ADD, PT)
        got, why = {}, ""
        for path in order:
            res = measured_wrk(srv, path, PAIR_CONNS, a, pin, duration=PAIR_SECONDS)
            if res["wrk_rc"] != 0 or not res.get("rps") or res["non_2xx"]:
                why = f"{path_label(path)} failed"
            elif res.get("contended"):
                why = (f"{path_label(path)} contended (other load "
                       f"{res['foreign_core0']:.0%}/{res['foreign_core1']:.0%})")
            if why:
                break
            got[path] = res["rps"]
        if why or not srv.alive():
            log(f"round {rnd}: pair {i + 1}: {why or 'server died'}; pair left out")
            continue
        pairs.append({"round": rnd, "pair": i + 1, "plaintext_rps": got[PT],
                      "add_rps": got[ADD], "ratio": got[ADD] / got[PT]})
        log(f"round {rnd}: pair {i + 1}: plaintext {fmt_rps(got[PT])} add "
            f"{fmt_rps(got[ADD])} req/s: {got[ADD] / got[PT]:.2f}x")


def bench_server(spec: ServerSpec, a: argparse.Namespace, rnd: int, pin: bool,
                 runs: list[dict], pairs: list[dict]) -> None:
    srv = RunningServer(spec, pin)
    base = {"round": rnd, "server": spec.name}

    def record_all(status: str, reason: str) -> None:
        for p in a.path_list:
            for c in a.conns_list:
                runs.append({**base, "path": p, "conns": c, "status": status,
                             "reason": reason})

    try:
        try:
            srv.start()
            srv.wait_ready()
        except ServerError as e:
            log(f"round {rnd}: {spec.name} FAILED TO START: {e}")
            record_all("failed", "server did not start")
            return
        probes = probe_paths(srv, a.path_list)
        servable = [p for p in a.path_list if probes[p] is None]
        for p, why in probes.items():
            if why is not None:
                lvl = "skipping" if why.startswith("404") else "FAILED"
                log(f"round {rnd}: {spec.name} {p}: {lvl} ({why})")
        if servable and a.warmup > 0:
            run_wrk(srv.port, servable[0], min(a.conns_list), a.warmup, a.threads, pin)
        for p in a.path_list:
            for c in a.conns_list:
                rec = {**base, "path": p, "conns": c}
                why = probes[p]
                if why is not None:
                    status = "skipped" if why.startswith("404") else "failed"
                    runs.append({**rec, "status": status, "reason": why})
                    continue
                if not srv.alive():
                    runs.append({**rec, "status": "failed", "reason": "server died"})
                    continue
                attempts = []
                for attempt in range(a.retry_contended + 1):
                    res = measured_wrk(srv, p, c, a, pin)
                    attempts.append(res)
                    if not res.get("contended") or attempt == a.retry_contended \
                            or not srv.alive():
                        break
                    log(f"round {rnd}: {spec.name} {path_label(p)} c{c}: contended "
                        f"({fmt_rps(res.get('rps'))} req/s, other load "
                        f"{res['foreign_core0']:.0%}/{res['foreign_core1']:.0%}); retrying")
                    time.sleep(1.0)
                # keep the least contended attempt; the others stay in the raw data
                res = min(attempts, key=lambda r: max(r.get("foreign_core0", 0.0),
                                                      r.get("foreign_core1", 0.0)))
                discarded = [r for r in attempts if r is not res]
                for r in discarded:
                    r.pop("wrk_output", None)
                rec.update(res)
                if discarded:
                    rec["discarded_contended_attempts"] = discarded
                reasons = []
                if res["wrk_rc"] != 0:
                    reasons.append(f"wrk exit code {res['wrk_rc']}")
                if not res.get("rps") or not res.get("requests"):
                    reasons.append("no requests completed")
                if res["non_2xx"]:
                    reasons.append(f"{res['non_2xx']} non-2xx responses")
                if not srv.alive():
                    reasons.append("server died during the run")
                rec["status"] = "failed" if reasons else "ok"
                if reasons:
                    rec["reason"] = "; ".join(reasons)
                runs.append(rec)
                se = res["socket_errors"]
                se_txt = (" socket errors " + ",".join(f"{k}={v}" for k, v in se.items() if v)
                          if any(se.values()) else "")
                lat = (f" p50 {res['lat_p50_ms']:.2f}ms p99 {res['lat_p99_ms']:.2f}ms"
                       if "lat_p50_ms" in res and "lat_p99_ms" in res else "")
                cpu = (f" | cpu server {res['server_cpu']:.0%} wrk {res['wrk_cpu']:.0%}"
                       + (f" other {res['foreign_core0']:.0%}/{res['foreign_core1']:.0%}"
                          if "foreign_core0" in res else "")
                       + (" CONTENDED" if res.get("contended") else ""))
                log(f"round {rnd}: {spec.name:<25} {path_label(p):<9} c{c:<5} "
                    f"{fmt_rps(res.get('rps')):>9} req/s{lat}{cpu}"
                    + (f" non-2xx={res['non_2xx']}" if res["non_2xx"] else "") + se_txt
                    + (f"  FAILED: {rec['reason']}" if reasons else ""))
                if reasons and srv.alive() is False:
                    log(srv.log_tail())
        if spec.name == CLOS and a.pairs > 0 and probes.get(PT, "") is None \
                and probes.get(ADD, "") is None and srv.alive():
            paired_runs(srv, a, rnd, pin, pairs)
    finally:
        srv.stop()


def main(argv=None) -> int:
    a = parse_args(argv)
    if shutil.which("wrk") is None:
        log("wrk not found; run bench/setup.sh (apt-get install wrk)")
        return 2
    ncpu = len(os.sched_getaffinity(0))
    pin = not a.no_pin
    if pin and (ncpu < 2 or shutil.which("taskset") is None):
        log("WARNING: fewer than 2 usable CPUs or no taskset; running unpinned")
        pin = False
    raise_fd_limit(max(a.conns_list))
    specs = server_specs(a.repo)
    load1 = float(Path("/proc/loadavg").read_text().split()[0])
    if load1 > 0.5:
        log(f"WARNING: load average is {load1:.2f}; other work on this machine "
            "will distort the numbers")

    info = machine_info(a.repo)
    started = _dt.datetime.now(_dt.timezone.utc)
    n_cells = len(a.server_list) * len(a.path_list) * len(a.conns_list)
    est = a.rounds * (n_cells * (a.duration + 0.3) + len(a.server_list) * (a.warmup + 1.5))
    log(f"servers={a.server_list} paths={a.path_list} conns={a.conns_list} "
        f"rounds={a.rounds} duration={a.duration:g}s warmup={a.warmup:g}s "
        f"pinned={'server:0 wrk:1' if pin else 'no'}; at most ~{est / 60:.1f} min")

    runs: list[dict] = []
    pairs: list[dict] = []
    interrupted = False

    def on_term(signum, frame):
        raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, on_term)
    # Ctrl-C must stop the servers even when started from a non-interactive
    # shell in the background (which would leave SIGINT ignored)
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        for rnd in range(1, a.rounds + 1):
            k = (rnd - 1) % len(a.server_list)
            order = a.server_list[k:] + a.server_list[:k]  # rotate order per round
            log(f"=== round {rnd}/{a.rounds}: {', '.join(order)}")
            for name in order:
                bench_server(specs[name], a, rnd, pin, runs, pairs)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted; servers stopped, reporting what was measured")
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)

    cells = summarize(runs, a.server_list, a.path_list, a.conns_list)
    print(f"\nHTTP benchmark, {started:%Y-%m-%d %H:%M UTC}: {info['cpu_model']}, "
          f"{info['nproc']} CPUs, kernel {info['kernel']}, wrk -t{a.threads} "
          f"-d{round(a.duration)}s, {a.rounds} round(s)"
          + (" (INTERRUPTED)" if interrupted else ""))
    targets = report(cells, a.server_list, a.path_list, a.conns_list, runs, pairs)

    if not a.no_save:
        a.results_dir.mkdir(parents=True, exist_ok=True)
        out = a.results_dir / f"http-{started:%Y%m%dT%H%M%SZ}.json"
        doc = {
            "benchmark": "http",
            "started_utc": started.isoformat(),
            "finished_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(),
            "interrupted": interrupted,
            "machine": info,
            "config": {
                "servers": a.server_list, "paths": a.path_list, "conns": a.conns_list,
                "rounds": a.rounds, "duration_s": a.duration, "warmup_s": a.warmup,
                "wrk_threads": a.threads, "pinned": pin,
                "retry_contended": a.retry_contended,
                "server_cpu": "0" if pin else None, "wrk_cpu": "1" if pin else None,
                "commands": {n: specs[n].argv for n in a.server_list},
            },
            "cells": cells,
            "targets": targets,
            "runs": runs,
            "pairs": pairs,
        }
        out.write_text(json.dumps(doc, indent=1))
        print(f"\nraw results: {out}")
    measured = any(r["status"] == "ok" for r in runs)
    if interrupted:
        return 130
    return 0 if measured else 1


if __name__ == "__main__":
    sys.exit(main())
