#!/usr/bin/env python3
"""Scale-out benchmark (issue 12): clos_web (examples/hello.py) with a Redis broker.

This is a benchmark, not a test: a missed target, a lost or a duplicated event is printed
(NOT met / FAILURE) and never makes the run exit non-zero.

Scenarios (full sizes; --quick shrinks them for a smoke run):
  cost     1 process, 2,000 subscribers on 10 channels, 200 publishes/s for 15 s, run once
           with the in-memory broker and once with --redis (a private redis-server), rounds
           interleaved: server CPU seconds (user+sys, /proc) per delivered event, Redis' CPU
           separately. Target: Redis / in-memory <= 1.3x.
  cost-narrow  the same with 10 subscribers per channel (2,000 on 200 channels, 1,000
           publishes/s for 10 s): the cost of a publish, not of a delivery, dominates. From
           both shapes the report solves CPU = a x publishes + b x deliveries per broker (the
           capacity model in bench/README.md is built on a and b).
  split    2 single processes on two ports sharing one Redis: A holds 2,000 subscribers on
           200 channels and publishes nothing, B takes 1,000 publishes/s for 10 s and has no
           subscribers. B's CPU per publish is the cost of taking a publish (HTTP + the
           script); A's is the cost of receiving one from Redis and delivering it (CPU =
           messages x a_msg + deliveries x b). Latency here crosses processes by Redis alone.
  latency  --workers 2 --redis, 5,000 subscribers over 500 channels spread over both workers
           by SO_REUSEPORT, 1,000 publishes/s through 8 publisher connections (both workers)
           for 30 s: publish -> receive latency p50/p99/max, loss, duplicates.
           Target: p99 <= 5 ms, nothing lost or duplicated.
  latency-low  the same at 250 publishes/s for 15 s: the Redis hop without saturated cores.
  storm    --workers 2 --redis, 5,000 subscribers over 500 channels, 100 publishes/s for 25 s;
           6 s into publishing one worker is SIGKILLed. Its subscribers reconnect (after the
           retry time the stream gave them, as a browser does) with Last-Event-ID and land on
           the survivor or the supervisor's replacement. Measured: time from the kill to the
           last resumed stream, loss, duplicates. Target: all resumed within 10 s, nothing lost.

The load generator is bench/.build/sse_load (bench/loadgen/sse_load.c; `--reconnect` is what
the storm uses). Nothing is pinned: the servers, Redis and the load generator share the two
cores, so every figure comes from per-process CPU in /proc, and the rest of the machine's load
(other engineers' work) is printed beside it. Only 127.0.0.0/8 is contacted.
Standard library only (the push benchmark's helpers are reused).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
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
import push_bench as pb  # noqa: E402  (free_port, cpu_jiffies, machine_info, http_post, ...)

BENCH_DIR = pb.BENCH_DIR
REPO_DIR = pb.REPO_DIR
HOST = pb.HOST
START_TIMEOUT_S = 20.0
_CLK_TCK = os.sysconf("SC_CLK_TCK")
SCENARIOS = ["cost", "cost-narrow", "split", "latency", "latency-low", "storm"]
COST = ("cost", "cost-narrow")          # 1 process, in-memory and Redis
SPLIT = "split"                         # 2 single processes on 2 ports, one Redis
LATENCY = ("latency", "latency-low")    # 2 workers + Redis


def log(msg: str) -> None:
    print(f"[scale] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# processes and their CPU

def proc_cpu_s(pid: int) -> float | None:
    """user+system CPU seconds of one process (None once it is gone)."""
    try:
        st = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = st[st.rindex(")") + 2:].split()
    return (int(rest[11]) + int(rest[12])) / _CLK_TCK


def children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                st = Path(f"/proc/{d}/stat").read_text()
                if int(st[st.rindex(")") + 2:].split()[1]) == pid:
                    out.append(int(d))
    return sorted(out)


def fd_count(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        return len(os.listdir(f"/proc/{pid}/fd"))
    return None


def machine_busy_s(j: dict) -> float:
    """Busy CPU seconds of all cores together, from push_bench.cpu_jiffies()."""
    return sum(v[0] for v in j.values()) / _CLK_TCK


class Redis:
    """A private redis-server on a free port: no persistence, its own temporary directory."""

    def __init__(self):
        self.proc = None
        self.tmp = None

    def start(self) -> "Redis":
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.tmp = Path(tempfile.mkdtemp(prefix="scale-redis-"))
        self.port = pb.free_port()
        self.logf = open(self.tmp / "redis.log", "wb")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no",
             "--dir", str(self.tmp), "--daemonize", "no"],
            stdout=self.logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server exited: "
                                   + (self.tmp / "redis.log").read_text(errors="replace")[-500:])
            with contextlib.suppress(OSError):
                with socket.create_connection((HOST, self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return self
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer PING within 10 s")

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def cpu_s(self) -> float:
        return proc_cpu_s(self.proc.pid) or 0.0

    def commandstats(self) -> dict:
        """{command: {"calls", "usec"}} from INFO commandstats ({} if it cannot be read)."""
        out: dict = {}
        with contextlib.suppress(OSError, ValueError):
            with socket.create_connection((HOST, self.port), timeout=2) as s:
                s.sendall(b"INFO commandstats\r\n")
                data = b""
                while b"\r\n" not in data or len(data) < int(data[1:data.index(b"\r\n")]) + 4:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            for line in data.decode(errors="replace").splitlines():
                if line.startswith("cmdstat_"):
                    name, _, fields = line[8:].partition(":")
                    kv = dict(f.split("=", 1) for f in fields.split(","))
                    out[name] = {"calls": int(kv["calls"]), "usec": int(kv["usec"])}
        return out

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.tmp:
            self.logf.close()
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None


class Clos:
    """`python -m clos_web examples.hello:app` (1 process, or a supervisor and its workers)."""

    def __init__(self, repo: Path, workers: int, redis_url: str | None):
        self.repo, self.workers, self.redis_url = repo, workers, redis_url
        self.proc = None
        self.tmp = None

    def start(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="scale-clos-"))
        self.port = pb.free_port()
        argv = [str(self.repo / ".venv" / "bin" / "python"), "-m", "clos_web",
                "examples.hello:app", "--port", str(self.port), "--log-level", "warning"]
        if self.workers > 1:
            argv += ["--workers", str(self.workers)]
        if self.redis_url:
            argv += ["--redis", self.redis_url]
        env = dict(os.environ)
        env.pop("VIRTUAL_ENV", None)
        env.pop("CLOS_WEB_REDIS", None)
        env["PYTHONPATH"] = str(self.repo)
        self.argv = argv
        self.logf = open(self.tmp / "server.log", "wb")
        self.proc = subprocess.Popen(argv, cwd=self.repo, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self.logf, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        err = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"clos_web exited with {self.proc.returncode} at start\n"
                                   + self.log_tail())
            if len(self.worker_pids()) == self.workers:
                try:
                    # every worker answers: SO_REUSEPORT spreads a few probes over them
                    if all(pb.http_post(self.port, "/pub/bench-probe", b"probe") == 202
                           for _ in range(4 * self.workers)):
                        return
                    err = "probe not answered 202"
                except OSError as e:
                    err = str(e)
            time.sleep(0.1)
        raise RuntimeError(f"clos_web did not answer in {START_TIMEOUT_S:.0f}s ({err})\n"
                           + self.log_tail())

    def worker_pids(self) -> list[int]:
        """The processes that serve: the workers, or the one process."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        return children(self.proc.pid) if self.workers > 1 else [self.proc.pid]

    def cpu_s(self) -> float:
        """CPU seconds of the live serving processes and the supervisor."""
        pids = self.worker_pids() + ([self.proc.pid] if self.workers > 1 else [])
        return sum(proc_cpu_s(p) or 0.0 for p in pids)

    def log_tail(self, n: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.tmp / "server.log").read_text(errors="replace")
                             .splitlines()[-n:])
        return ""

    def stop(self) -> str:
        text = ""
        if self.proc is not None and self.proc.poll() is None:
            workers = self.worker_pids()
            self.proc.terminate()
            try:
                self.proc.wait(12)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            for pid in workers:  # the supervisor's own stop kills them; make sure
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self.tmp:
            text = self.log_tail(200)
            self.logf.close()
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
        return text


# --------------------------------------------------------------------------------------------
# scenarios

def scenario_defs(quick: bool) -> dict:
    q = quick
    return {
        "cost": {
            "what": ("500 subs / 10 channels, 100 publishes/s for 4 s, 1 process"
                     if q else "2,000 subs / 10 channels, 200 publishes/s for 15 s, 1 process"),
            "args": ["--subs", 500 if q else 2000, "--channels", 10, "--rate", 100 if q else 200,
                     "--duration", 4 if q else 15, "--payload", 64, "--pub-conns", 2,
                     "--pub-depth", 64, "--drain", 30],
        },
        "cost-narrow": {
            "what": ("500 subs / 50 channels, 250 publishes/s for 4 s, 1 process"
                     if q else "2,000 subs / 200 channels, 1,000 publishes/s for 10 s, "
                               "1 process"),
            "args": ["--subs", 500 if q else 2000, "--channels", 50 if q else 200,
                     "--rate", 250 if q else 1000, "--duration", 4 if q else 10,
                     "--payload", 64, "--pub-conns", 4, "--pub-depth", 256, "--drain", 30],
        },
        SPLIT: {
            "what": ("A: 500 subs / 50 channels; B: 250 publishes/s for 4 s; one Redis"
                     if q else "A: 2,000 subs / 200 channels; B: 1,000 publishes/s for 10 s; "
                               "one Redis"),
            "args": ["--subs", 500 if q else 2000, "--channels", 50 if q else 200,
                     "--rate", 250 if q else 1000, "--duration", 4 if q else 10,
                     "--payload", 64, "--pub-conns", 4, "--pub-depth", 256, "--drain", 30],
        },
        "latency-low": {
            "what": ("1,000 subs / 100 channels, 125 publishes/s for 5 s, 2 workers + Redis"
                     if q else "5,000 subs / 500 channels, 250 publishes/s for 15 s, "
                               "2 workers + Redis"),
            "args": ["--subs", 1000 if q else 5000, "--channels", 100 if q else 500,
                     "--rate", 125 if q else 250, "--duration", 5 if q else 15,
                     "--payload", 64, "--pub-conns", 8, "--pub-depth", 256, "--drain", 30],
        },
        "latency": {
            "what": ("1,000 subs / 100 channels, 500 publishes/s for 5 s, 2 workers + Redis"
                     if q else "5,000 subs / 500 channels, 1,000 publishes/s for 30 s, "
                               "2 workers + Redis"),
            "args": ["--subs", 1000 if q else 5000, "--channels", 100 if q else 500,
                     "--rate", 500 if q else 1000, "--duration", 5 if q else 30,
                     "--payload", 64, "--pub-conns", 8, "--pub-depth", 256, "--drain", 30],
        },
        "storm": {
            "what": ("1,000 subs / 100 channels, 100 publishes/s for 12 s, 2 workers + Redis, "
                     "one worker SIGKILLed 3 s in" if q else
                     "5,000 subs / 500 channels, 100 publishes/s for 25 s, 2 workers + Redis, "
                     "one worker SIGKILLed 6 s in"),
            "args": ["--subs", 1000 if q else 5000, "--channels", 100 if q else 500,
                     "--rate", 100, "--duration", 12 if q else 25, "--payload", 64,
                     "--pub-conns", 8, "--pub-depth", 256, "--drain", 30, "--reconnect", 4],
            "kill_after_s": 3.0 if q else 6.0,
        },
    }


class LoadGen:
    """sse_load in the background; its stderr lines watched for '# publishing'."""

    def __init__(self, argv: list[str], timeout: float):
        self.argv, self.timeout = argv, timeout
        self.publishing = threading.Event()
        self.t_pub_mono = None
        self.stderr: list[str] = []
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, stdin=subprocess.DEVNULL)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.stderr.append(line.rstrip("\n"))
            if line.startswith("# publishing"):
                self.t_pub_mono = float(line.split("t_mono=")[1])
                self.publishing.set()

    def finish(self) -> tuple[dict | None, str]:
        status = "ok"
        try:
            out, _ = self.proc.communicate(timeout=self.timeout + 30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
            status = "loadgen-timeout"
        self.reader.join(timeout=2)
        try:
            return json.loads(out), status
        except ValueError:
            return None, "loadgen-output-unreadable"


def loadgen_argv(a, port: int, scen: dict) -> list[str]:
    return ([str(a.loadgen), "--port", str(port), "--timeout", str(a.run_timeout)]
            + [str(x) for x in scen["args"]])


def run_one(a, scen_name: str, scen: dict, mode: str, rnd: int) -> dict:
    """One run: fresh Redis (unless in-memory), fresh clos_web, one load generator run."""
    workers = 1 if scen_name in COST else 2
    rec: dict = {"scenario": scen_name, "mode": mode, "round": rnd, "workers": workers,
                 "status": "ok"}
    redis = Redis() if mode == "redis" else None
    srv = pub_srv = lg = None
    try:
        if redis:
            redis.start()
        srv = Clos(a.repo, workers, redis.url if redis else None)
        srv.start()
        rec["server_argv"] = srv.argv
        rec["worker_pids"] = srv.worker_pids()
        argv = loadgen_argv(a, srv.port, scen)
        if scen_name == SPLIT:  # publishes go to a second process sharing the Redis
            pub_srv = Clos(a.repo, 1, redis.url)
            pub_srv.start()
            argv += ["--pub-port", str(pub_srv.port)]
        rec["loadgen_argv"] = argv
        lg = LoadGen(argv, a.run_timeout)
        if not lg.publishing.wait(a.run_timeout):
            rec["status"] = "never-published"
        # CPU from the start of publishing to the end of the run
        j0, c0 = pb.cpu_jiffies(), srv.cpu_s()
        p0 = pub_srv.cpu_s() if pub_srv else 0.0
        r0 = redis.cpu_s() if redis else 0.0
        t0 = time.monotonic()
        per_worker0 = {p: proc_cpu_s(p) for p in srv.worker_pids()}
        stats0 = redis.commandstats() if redis else {}
        rec["fds_per_worker"] = {str(p): fd_count(p) for p in per_worker0}
        if scen.get("kill_after_s"):
            storm(rec, srv, lg, scen["kill_after_s"])
        # sample CPU just before the load generator exits (the drain ends when all arrived)
        c1, r1, p1, j1, t1, per_worker1 = c0, r0, p0, j0, t0, dict(per_worker0)
        while lg.proc.poll() is None and time.monotonic() - t0 < a.run_timeout + 30:
            c1, r1, j1, t1 = srv.cpu_s(), (redis.cpu_s() if redis else 0.0), \
                pb.cpu_jiffies(), time.monotonic()
            p1 = pub_srv.cpu_s() if pub_srv else 0.0
            per_worker1 = {p: proc_cpu_s(p) for p in srv.worker_pids()}
            time.sleep(0.05)
        if redis:
            stats1 = redis.commandstats()
            rec["redis_commands"] = {
                k: {"calls": v["calls"] - stats0.get(k, {}).get("calls", 0),
                    "usec": v["usec"] - stats0.get(k, {}).get("usec", 0)}
                for k, v in stats1.items()
                if v["calls"] - stats0.get(k, {}).get("calls", 0) > 0 and k != "info"}
        load, status = lg.finish()
        if status != "ok":
            rec["status"] = status
        rec["load"] = load
        rec["loadgen_stderr"] = lg.stderr[-30:]
        wall = t1 - t0
        rec["wall_s"] = round(wall, 3)
        if scen.get("kill_after_s"):
            # a killed worker is gone from /proc: add the CPU it had used when killed (c0
            # holds its CPU at the start of publishing)
            c1 += rec.get("killed_cpu_s", 0.0)
        rec["server_cpu_s"] = round(c1 - c0, 3)
        if pub_srv:
            rec["pub_server_cpu_s"] = round(p1 - p0, 3)
        rec["redis_cpu_s"] = round(r1 - r0, 3)
        rec["worker_cpu_s"] = {str(p): round((per_worker1.get(p) or 0) - (v or 0), 3)
                               for p, v in per_worker0.items() if p in per_worker1}
        lg_cpu = (load or {}).get("loadgen_cpu_measured_s") or 0.0
        rec["loadgen_cpu_s"] = lg_cpu
        busy = machine_busy_s(j1) - machine_busy_s(j0)
        ncpu = max(1, len(j1))
        ours = (c1 - c0) + (p1 - p0) + (r1 - r0) + lg_cpu
        rec["machine_busy_pct"] = round(100 * busy / (wall * ncpu), 1) if wall > 0 else None
        rec["other_load_pct"] = (round(100 * (busy - ours) / (wall * ncpu), 1)
                                 if wall > 0 else None)
        delivered = (load or {}).get("delivered") or 0
        if delivered:
            rec["server_us_per_event"] = round(1e6 * (c1 - c0) / delivered, 3)
            rec["redis_us_per_event"] = round(1e6 * (r1 - r0) / delivered, 3) if redis else None
        if srv.proc.poll() is not None:
            rec["status"] = "server-died"
    except (RuntimeError, OSError) as e:
        log(f"{scen_name}/{mode}: {e}")
        rec.update(status="failed", error=str(e)[:2000])
    finally:
        if lg is not None and lg.proc.poll() is None:
            lg.proc.kill()
            lg.proc.wait()
        if pub_srv is not None:
            pub_srv.stop()
        if srv is not None:
            text = srv.stop()
            rec["server_log_lines"] = [ln for ln in text.splitlines()
                                       if any(k in ln for k in ("ERROR", "WARNING", "Traceback",
                                                                "Error"))][:40]
        if redis is not None:
            redis.stop()
    return rec


def storm(rec: dict, srv: Clos, lg: LoadGen, after_s: float) -> None:
    """SIGKILL one worker `after_s` seconds into publishing; note when, and when the
    supervisor's replacement is up."""
    deadline = (lg.t_pub_mono or time.monotonic()) + after_s
    while time.monotonic() < deadline and lg.proc.poll() is None:
        time.sleep(0.05)
    pids = srv.worker_pids()
    if not pids:
        raise RuntimeError("no worker to kill (the supervisor is gone)")
    fds = {p: fd_count(p) for p in pids}
    rec["fds_per_worker_before_kill"] = {str(p): n for p, n in fds.items()}
    victim = max(pids, key=lambda p: fds.get(p) or 0)  # the worker holding more streams
    rec["killed_cpu_s"] = proc_cpu_s(victim) or 0.0
    t_kill = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    rec["killed_pid"] = victim
    rec["t_kill_mono"] = t_kill
    # the replacement: a new child of the supervisor
    while time.monotonic() - t_kill < 15 and lg.proc.poll() is None:
        now_pids = srv.worker_pids()
        new = [p for p in now_pids if p not in pids]
        if new:
            rec["replacement_pid"] = new[0]
            rec["replacement_after_s"] = round(time.monotonic() - t_kill, 3)
            break
        time.sleep(0.01)


# --------------------------------------------------------------------------------------------
# report

def load_of(rec: dict) -> dict:
    return rec.get("load") or {}


def ok_delivery(rec: dict) -> tuple[bool, str]:
    ld = load_of(rec)
    if rec["status"] != "ok" or not ld:
        return False, rec["status"] + (" " + rec.get("error", "")[:200] if rec.get("error")
                                       else "")
    bad = []
    if ld.get("lost"):
        bad.append(f"lost {ld['lost']}")
    if ld.get("duplicates"):
        bad.append(f"duplicates {ld['duplicates']}")
    if ld.get("subs_ready", 0) < (ld.get("config") or {}).get("subs", 0):
        bad.append(f"{ld.get('subs_ready')} of {ld['config']['subs']} subscribers up")
    cfg = ld.get("config") or {}
    offered = int(cfg.get("rate", 0) * cfg.get("duration", 0))
    if offered and (ld.get("acked") or 0) < 0.98 * offered:
        bad.append(f"fell behind: {ld.get('acked')} of {offered} publishes accepted")
    if ld.get("end_reason") != "all-delivered":
        bad.append(f"ended: {ld.get('end_reason')}")
    return not bad, ", ".join(bad)


def redis_ops(rec: dict, detail: bool = False) -> str:
    """Redis calls per acked publish from INFO commandstats: the client's commands (EVALSHA,
    XRANGE, SUBSCRIBE...) and, counted apart by Redis, those its script runs; with
    ``detail`` each command, e.g. 'evalsha 1.00 (41 us) xadd 1.00 ...'."""
    pubs = load_of(rec).get("acked") or 0
    cmds = rec.get("redis_commands") or {}
    if not pubs or not cmds:
        return "-"
    if not detail:
        ev = cmds.get("evalsha") or {}
        us = ev.get("usec", 0) / ev["calls"] if ev.get("calls") else 0
        return f"{sum(v['calls'] for v in cmds.values()) / pubs:.1f} ({us:.0f} us/script)"
    return " ".join(f"{k} {v['calls'] / pubs:.2f} ({v['usec'] / v['calls']:.1f} us)"
                    for k, v in sorted(cmds.items(), key=lambda kv: -kv[1]["calls"]))


def delivery_targets(target, scen: str, rec: dict) -> None:
    """Two targets per run: nothing lost or duplicated (judged on what was acknowledged), and
    the run held (every subscriber up, the offered rate accepted, everything delivered)."""
    ld = load_of(rec)
    tag = f"({scen}) r{rec['round']}"
    if ld:
        lost, dup = ld.get("lost") or 0, ld.get("duplicates") or 0
        target(f"{tag}: nothing lost, no duplicates", lost == 0 and dup == 0,
               f"lost {lost}, duplicates {dup} of {fmt(ld.get('delivered'))} delivered")
    ok, why = ok_delivery(rec)
    target(f"{tag}: held the offered load", ok, why or "yes")


def fmt(v, nd=2) -> str:
    if v is None:
        return "-"
    if isinstance(v, (int, float)) and abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def report(runs: list[dict], scen_names: list[str]) -> tuple[dict, list]:
    summary: dict = {}
    targets: list = []

    def target(name, ok, detail):
        state = "n/a" if ok is None else ("met" if ok else "NOT met")
        targets.append({"target": name, "result": state, "detail": detail})

    def med(vals):
        vals = [v for v in vals if v is not None]
        return statistics.median(vals) if vals else None

    print("\nScale-out benchmark (clos_web examples/hello.py; the machine is shared: 'other "
          "load' is the CPU others used meanwhile, in % of all cores)")
    for scen in [c for c in COST if c in scen_names]:
        print(f"\n({scen}) CPU per delivered event, 1 process, in-memory broker vs Redis")
        rows = []
        for mode in ("memory", "redis"):
            rs = [r for r in runs if r["scenario"] == scen and r["mode"] == mode]
            for r in rs:
                ld = load_of(r)
                rows.append([f"{mode} r{r['round']}", r["status"], fmt(ld.get("delivered")),
                             fmt(ld.get("delivered_per_s")), fmt(r.get("server_cpu_s")),
                             fmt(r.get("server_us_per_event")), fmt(r.get("redis_cpu_s")),
                             fmt(r.get("redis_us_per_event")), redis_ops(r),
                             fmt((ld.get("latency_ms") or {}).get("p99")),
                             f"{ld.get('lost')}/{ld.get('duplicates')}",
                             fmt(r.get("other_load_pct"), 1)])
            good = [r for r in rs if ok_delivery(r)[0]]
            summary[f"{scen}_{mode}_us_per_event"] = med([r.get("server_us_per_event")
                                                          for r in good])
            summary[f"{scen}_{mode}_redis_us_per_event"] = med([r.get("redis_us_per_event")
                                                                for r in good])
            # CPU seconds per publish and per delivery of this shape (medians), for the model
            summary[f"{scen}_{mode}_shape"] = {
                "server_cpu_s": med([r.get("server_cpu_s") for r in good]),
                "redis_cpu_s": med([r.get("redis_cpu_s") for r in good]),
                "publishes": med([load_of(r).get("acked") for r in good]),
                "deliveries": med([load_of(r).get("delivered") for r in good])}
        pb.print_table(["mode round", "status", "delivered", "events/s", "srv CPU s",
                        "srv us/event", "redis CPU s", "redis us/event", "redis calls/pub",
                        "p99 ms", "lost/dup", "other %"], rows)
        for r in rs:
            print(f"  Redis calls per publish, {mode} r{r['round']}: {redis_ops(r, True)}")
        m = summary[f"{scen}_memory_us_per_event"]
        rd = summary[f"{scen}_redis_us_per_event"]
        ratio = rd / m if m and rd else None
        summary[f"{scen}_ratio"] = round(ratio, 3) if ratio else None
        rr = summary[f"{scen}_redis_redis_us_per_event"]
        print(f"  median server us/event: in-memory {fmt(m)}, Redis {fmt(rd)} "
              f"(+ Redis itself {fmt(rr)}): ratio {fmt(ratio)}x")
        target(f"({scen}) server CPU per delivered event, Redis / in-memory <= 1.3x",
               None if ratio is None else ratio <= 1.3,
               f"{fmt(ratio)}x ({fmt(rd)} vs {fmt(m)} us/event; Redis' own CPU {fmt(rr)} "
               "us/event)")
        for r in runs:
            if r["scenario"] == scen:
                ok, why = ok_delivery(r)
                if not ok:
                    print(f"  FAILURE {scen}/{r['mode']} r{r['round']}: {why}")
    if all(c in scen_names for c in COST):
        # CPU = a x publishes + b x deliveries, from the two shapes (2 equations, 2 unknowns)
        print("\nper publish (a) and per delivery (b), from cost and cost-narrow:")
        model = {}
        for mode in ("memory", "redis"):
            w, n = summary[f"cost_{mode}_shape"], summary[f"cost-narrow_{mode}_shape"]
            for who in ("server", "redis"):
                if mode == "memory" and who == "redis":
                    continue
                try:
                    p1, d1, c1 = w["publishes"], w["deliveries"], w[f"{who}_cpu_s"]
                    p2, d2, c2 = n["publishes"], n["deliveries"], n[f"{who}_cpu_s"]
                    det = p1 * d2 - p2 * d1
                    a_ = (c1 * d2 - c2 * d1) / det
                    b_ = (p1 * c2 - p2 * c1) / det
                except (TypeError, ZeroDivisionError):
                    continue
                model[f"{mode}_{who}"] = {"us_per_publish": round(1e6 * a_, 2),
                                          "us_per_delivery": round(1e6 * b_, 3)}
                print(f"  {mode:6} broker, {who} CPU: a = {1e6 * a_:.1f} us per publish, "
                      f"b = {1e6 * b_:.2f} us per delivery")
        summary["cpu_model"] = model
    if SPLIT in scen_names:
        print(f"\n({SPLIT}) A holds the subscribers, B takes the publishes; one Redis")
        rows = []
        rs = [r for r in runs if r["scenario"] == SPLIT]
        b = (summary.get("cpu_model", {}).get("redis_server") or {}).get("us_per_delivery")
        for r in rs:
            ld = load_of(r)
            lat = ld.get("latency_ms") or {}
            pubs, dels = ld.get("acked") or 0, ld.get("delivered") or 0
            a_pub = 1e6 * r["pub_server_cpu_s"] / pubs if pubs and "pub_server_cpu_s" in r \
                else None
            a_recv = 1e6 * r["server_cpu_s"] / pubs if pubs and "server_cpu_s" in r else None
            a_msg = (a_recv - b * dels / pubs) if a_recv is not None and b is not None \
                else None
            r["us_per_publish_taken"] = a_pub
            r["us_per_publish_received"] = a_recv
            r["us_per_message_received"] = a_msg
            rows.append([f"r{r['round']}", r["status"], fmt(ld.get("pub_per_s")),
                         fmt(ld.get("delivered_per_s")), fmt(r.get("pub_server_cpu_s")),
                         fmt(a_pub), fmt(r.get("server_cpu_s")), fmt(a_recv), fmt(a_msg),
                         fmt(r.get("redis_cpu_s")), fmt(lat.get("p50")), fmt(lat.get("p99")),
                         fmt(lat.get("max")), f"{ld.get('lost')}/{ld.get('duplicates')}",
                         fmt(r.get("other_load_pct"), 1)])
        pb.print_table(["round", "status", "pub/s", "events/s", "B CPU s", "B us/publish",
                        "A CPU s", "A us/publish", "A us/message (b removed)", "redis CPU s",
                        "p50 ms", "p99 ms", "max ms", "lost/dup", "other %"], rows)
        good = [r for r in rs if ok_delivery(r)[0]]
        summary["split_us_per_publish_taken"] = med([r.get("us_per_publish_taken")
                                                     for r in good])
        summary["split_us_per_message_received"] = med([r.get("us_per_message_received")
                                                        for r in good])
        summary["split_p99_ms"] = med([(load_of(r).get("latency_ms") or {}).get("p99")
                                       for r in good])
        for r in rs:
            delivery_targets(target, SPLIT, r)
    for scen in [s_ for s_ in LATENCY if s_ in scen_names]:
        print(f"\n({scen}) 2 workers + Redis: publish -> receive")
        rows = []
        rs = [r for r in runs if r["scenario"] == scen]
        for r in rs:
            ld = load_of(r)
            lat = ld.get("latency_ms") or {}
            rows.append([f"r{r['round']}", r["status"],
                         "/".join(str(v) for v in (r.get("fds_per_worker") or {}).values()),
                         fmt(ld.get("pub_per_s")),
                         fmt(ld.get("delivered_per_s")), fmt(lat.get("p50")),
                         fmt(lat.get("p99")), fmt(lat.get("max")), fmt(ld.get("lost")),
                         fmt(ld.get("duplicates")), fmt(ld.get("out_of_order")),
                         fmt(r.get("server_cpu_s")), fmt(r.get("redis_cpu_s")), redis_ops(r),
                         fmt(r.get("machine_busy_pct"), 1), fmt(r.get("other_load_pct"), 1)])
        pb.print_table(["round", "status", "fds per worker", "pub/s", "events/s", "p50 ms",
                        "p99 ms", "max ms", "lost", "dup", "ooo", "srv CPU s", "redis CPU s",
                        "redis calls/pub", "machine busy %", "other %"], rows)
        for r in rs:
            print(f"  Redis calls per publish, r{r['round']}: {redis_ops(r, True)}")
        p99 = med([(load_of(r).get("latency_ms") or {}).get("p99") for r in rs
                   if ok_delivery(r)[0]])
        summary[f"{scen}_p99_ms"] = p99
        summary[f"{scen}_p50_ms"] = med([(load_of(r).get("latency_ms") or {}).get("p50")
                                         for r in rs if ok_delivery(r)[0]])
        summary[f"{scen}_max_ms"] = max([(load_of(r).get("latency_ms") or {}).get("max") or 0
                                         for r in rs] or [0])
        target(f"({scen}) cross-process p99 <= 5 ms", None if p99 is None else p99 <= 5.0,
               f"p99 {fmt(p99)} ms (p50 {fmt(summary[f'{scen}_p50_ms'])}, max "
               f"{fmt(summary[f'{scen}_max_ms'])})")
        for r in rs:
            delivery_targets(target, scen, r)
    if "storm" in scen_names:
        print("\n(storm) 2 workers + Redis, one worker SIGKILLed while publishing")
        rows = []
        rs = [r for r in runs if r["scenario"] == "storm"]
        for r in rs:
            ld = load_of(r)
            rc = ld.get("reconnect") or {}
            t_kill = r.get("t_kill_mono")
            resumed = (rc.get("t_last_resume_mono") - t_kill
                       if t_kill and rc.get("t_last_resume_mono") else None)
            r["all_resumed_after_s"] = round(resumed, 3) if resumed is not None else None
            rows.append([f"r{r['round']}", r["status"],
                         fmt(rc.get("disconnects")), fmt(rc.get("resumes")),
                         fmt(rc.get("down_at_end")), fmt(r.get("replacement_after_s")),
                         fmt(resumed), fmt(rc.get("max_outage_s")),
                         fmt(rc.get("max_connect_to_resume_s"), 3), fmt(ld.get("lost")),
                         fmt(ld.get("duplicates")), fmt(ld.get("other_events")),
                         fmt(rc.get("pub_reconnects")), fmt(r.get("other_load_pct"), 1)])
        pb.print_table(["round", "status", "dropped", "resumed", "down at end",
                        "replacement s", "all resumed s", "max outage s",
                        "max connect->resumed s", "lost", "dup",
                        "resets", "pub reconn", "other %"], rows)
        for r in rs:
            ld = load_of(r)
            rc = ld.get("reconnect") or {}
            res = r.get("all_resumed_after_s")
            all_up = rc.get("down_at_end") == 0 and (rc.get("disconnects") or 0) > 0
            target(f"(storm) r{r['round']}: every dropped subscriber resumed within 10 s",
                   None if not ld else (all_up and res is not None and res <= 10.0),
                   f"{fmt(rc.get('resumes'))} resumes of {fmt(rc.get('disconnects'))} dropped "
                   f"streams, the last {fmt(res)} s after the kill "
                   f"(down at end: {rc.get('down_at_end')})")
            delivery_targets(target, "storm", r)
        summary["storm_all_resumed_s"] = med([r.get("all_resumed_after_s") for r in rs])
    print("\nTargets:")
    for t in targets:
        mark = ("FAILURE" if ("lost" in t["target"]) and t["result"] == "NOT met"
                else t["result"])
        print(f"  {mark:8} {t['target']}: {t['detail']}")
    return summary, targets


# --------------------------------------------------------------------------------------------
# main

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--rounds", type=int, default=None,
                   help="rounds of each scenario (cost: in-memory and Redis alternate), "
                        "default 2 for cost, 1 for the others (1 each with --quick)")
    p.add_argument("--quick", action="store_true", help="smoke run: small sizes, 1 round")
    p.add_argument("--repo", type=Path, default=REPO_DIR)
    p.add_argument("--loadgen", type=Path, default=pb.LOADGEN)
    p.add_argument("--run-timeout", type=float, default=150.0,
                   help="hard bound of one load generator run, seconds")
    p.add_argument("--results-dir", type=Path, default=BENCH_DIR / "results")
    p.add_argument("--no-save", action="store_true")
    p.add_argument("--report", type=Path, metavar="SCALE_JSON",
                   help="print the tables and targets of a saved run again (no load)")
    # run.sh passes the HTTP benchmark's options too: ignore the ones meant for others
    a, unknown = p.parse_known_args(argv)
    if unknown:
        log(f"ignoring options meant for another benchmark: {' '.join(unknown)}")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, pb._sigterm)  # SIGTERM cleans up like Ctrl-C
    if a.report:
        doc = json.loads(a.report.read_text())
        report(doc["runs"], doc["config"]["scenarios"])
        return 0
    defs = scenario_defs(a.quick)
    names = [s.strip() for s in a.scenarios.split(",") if s.strip()]
    for s in names:
        if s not in defs:
            print(f"unknown scenario {s!r}; choose from {','.join(defs)}", file=sys.stderr)
            return 2
    if shutil.which("redis-server") is None:
        log("redis-server is not installed (bench/setup.sh or apt-get install redis-server): "
            "nothing to do")
        return 0
    soft, hard = pb.raise_fd_limit()
    log(f"RLIMIT_NOFILE {soft}/{hard}")
    if not pb.ensure_loadgen(a.loadgen):
        print(f"load generator {a.loadgen} missing and could not be built (bench/setup.sh)",
              file=sys.stderr)
        return 1
    info = pb.machine_info(a.repo)
    info["redis_server"] = pb.cmd_out(["redis-server", "--version"])
    la = float(info["loadavg_at_start"][0])
    if la > 0.5:
        log(f"load average {la} at start: the machine is busy, numbers will be noisy")
    started = _dt.datetime.now(_dt.timezone.utc)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    runs: list[dict] = []
    interrupted = False
    t_start = time.monotonic()
    try:
        for s in names:
            rounds = a.rounds or (1 if a.quick else (2 if s in COST else 1))
            for rnd in range(1, rounds + 1):
                modes = ["memory", "redis"] if s in COST else ["redis"]
                if rnd % 2 == 0:
                    modes.reverse()
                for mode in modes:
                    log(f"{s} {mode} round {rnd}/{rounds} ...")
                    rec = run_one(a, s, defs[s], mode, rnd)
                    runs.append(rec)
                    ld = load_of(rec)
                    lat = ld.get("latency_ms") or {}
                    log(f"  {rec['status']}: delivered {ld.get('delivered')}/"
                        f"{ld.get('expected')} lost {ld.get('lost')} dup "
                        f"{ld.get('duplicates')} p50 {lat.get('p50')} p99 {lat.get('p99')} "
                        f"max {lat.get('max')} ms; server CPU {rec.get('server_cpu_s')} s "
                        f"({rec.get('server_us_per_event')} us/event), Redis CPU "
                        f"{rec.get('redis_cpu_s')} s; other load {rec.get('other_load_pct')}%"
                        f"; end {ld.get('end_reason')}")
                    for ln in rec.get("server_log_lines", [])[:5]:
                        log(f"  server log: {ln[:300]}")
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: reporting what ran")
    summary, targets = report(runs, names)
    elapsed = time.monotonic() - t_start
    print(f"\n{len(runs)} runs in {elapsed / 60:.1f} min")
    if not a.no_save:
        a.results_dir.mkdir(parents=True, exist_ok=True)
        path = a.results_dir / f"scale-{stamp}.json"
        doc = {"started_utc": started.isoformat(), "elapsed_s": round(elapsed, 1),
               "interrupted": interrupted, "machine": info,
               "config": {"scenarios": names, "quick": a.quick, "rounds": a.rounds,
                          "scenario_defs": {s: {"what": defs[s]["what"],
                                                "args": [str(x) for x in defs[s]["args"]]}
                                            for s in names}},
               "summary": summary, "targets": targets, "runs": runs}
        path.write_text(json.dumps(doc, indent=1, default=str))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
