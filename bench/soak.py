#!/usr/bin/env python3
"""Soak run: mixed load against ONE clos_web process (examples/hello.py) for --minutes
(default 30), reporting RSS, fd count and loop lag every minute and checking that nothing was
lost.

This is a benchmark, not a test: a missed goal prints ``NOT met`` and never makes the run exit
non-zero (only a harness that cannot start at all exits 2).

Load (all on 127.0.0.1, all bounded; sizes are options):
  SSE subscribers   bench/.build/sse_load, two staggered loops: every minute each starts
                    --subs subscribers over --channels channels, publishes --rate/s for up to
                    45 s, checks every event (loss, duplicates, order), and leaves
  WS subscribers    the same with sse_load --ws on GET /ws/CHANNEL (two more loops)
  WS echo           sse_load --echo bursts every 30 s (4 connections, 2 s after 1 s of
                    warm-up, as fast as echoed; 64 B / 2 KiB / 64 KiB messages)
  keep-alive HTTP   Python asyncio clients: GET /plaintext /json /add, HEAD, POST /echo,
                    some pipelined, every answer checked, connections renewed now and then
  long-polls        GET /poll/CHANNEL pollers joining, resuming and leaving; every event checked
  slow readers      SSE streams read through a 4 KiB receive buffer in small sips with stalls,
                    resuming with Last-Event-ID; and stalled readers that never read
  bad requests      malformed, oversized and abandoned requests: each must get a 4xx (or be
                    dropped when abandoned), never a 5xx or a hang

Every 5 s it samples the server's RSS (VmRSS), open fds (/proc/PID/fd) and CPU, and the latency
of tiny requests (GET /plaintext on one keep-alive connection). Loop lag: when GET /metrics
answers with ``clos_web_loop_lag_seconds`` (a histogram), the minute's figure is from it (mean
and p99 bucket bound); otherwise the tiny-request latency is the proxy, and the output says so.

Goal printed at the end: RSS and fds flat (every minute of the last third within 5% of the
mean of the middle third: minutes 20-30 against 10-20 for 30 minutes), and zero loss (every
subscriber got every event; every echo exact). Results: bench/results/soak-<UTC>.json; chart:
bench/charts/soak.png (--chart).

    bench/.venv/bin/python bench/soak.py --minutes 2        # a development run
    make soak                                               # 30 minutes
    make soak ARGS="--minutes 5 --subs 50"
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as _dt
import json
import os
import platform
import random
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
LOADGEN = BENCH_DIR / ".build" / "sse_load"
HOST = "127.0.0.1"
SAMPLE_S = 5.0
FLAT_TOLERANCE = 0.05
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def log(msg: str) -> None:
    print(f"[soak] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# the server

class Server:
    """``examples/hello.py --port P`` in its own process group; stopped with SIGINT, then
    SIGTERM, then SIGKILL."""

    def __init__(self, repo: Path, port: int, logfile: Path):
        self.repo, self.port, self.logfile = repo, port, logfile
        self.cmd = [str(repo / ".venv" / "bin" / "python"), "examples/hello.py", "--port", str(port)]
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> None:
        env = dict(os.environ, PYTHONPATH=str(self.repo))
        self._log = open(self.logfile, "wb")
        self.proc = subprocess.Popen(self.cmd, cwd=self.repo, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.tail()}")
            try:
                with socket.create_connection((HOST, self.port), timeout=1) as s:
                    s.sendall(b"GET /plaintext HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")
                    if s.recv(64).startswith(b"HTTP/1.1 200"):
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not answer within {timeout} s: {self.tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        for sig, wait in ((signal.SIGINT, 10), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(wait)
        self._log.close()


def proc_sample(pid: int) -> dict | None:
    """RSS (KB), open fds, threads and CPU seconds of ``pid`` from /proc."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            rss_kb = int(f.read().split()[1]) * _PAGE_KB
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / _CLK_TCK
        threads = int(fields[17])
    except (OSError, ValueError, IndexError):
        return None
    return {"rss_kb": rss_kb, "fds": fds, "cpu_s": cpu, "threads": threads}


# --------------------------------------------------------------------------------------------
# a small HTTP/1.1 client over asyncio streams

class HTTPError(Exception):
    pass


async def read_response(reader: asyncio.StreamReader, head: bool = False):
    """One response: (status, headers dict with lower-case names, body bytes)."""
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise HTTPError(f"bad status line {lines[0][:60]!r}")
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    if head or status in (204, 304) or status < 200:
        return status, headers, b""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                return status, headers, bytes(body)
            body += (await reader.readexactly(size + 2))[:-2]
    if "content-length" in headers:
        return status, headers, await reader.readexactly(int(headers["content-length"]))
    return status, headers, await reader.read()


def request_bytes(method: str, path: str, body: bytes = b"", headers=()) -> bytes:
    head = [f"{method} {path} HTTP/1.1", "Host: soak"]
    head += [f"{k}: {v}" for k, v in headers]
    if body or method == "POST":
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


async def connect(port: int, rcvbuf: int | None = None):
    if rcvbuf is None:
        return await asyncio.open_connection(HOST, port, limit=2**20)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (HOST, port))
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock, limit=2**20)


def close_writer(w: asyncio.StreamWriter | None) -> None:
    if w is not None:
        with contextlib.suppress(Exception):
            w.close()


def bump(d: dict, key: str, n: int = 1) -> None:
    d[key] = d.get(key, 0) + n


# --------------------------------------------------------------------------------------------
# the soak

class Soak:
    def __init__(self, args, port: int, logdir: Path):
        self.a, self.port, self.logdir = args, port, logdir
        self.t0 = 0.0
        self.deadline = 0.0
        self.stopping = asyncio.Event()     # no new work: finish what runs
        self.stats = {k: {} for k in ("http", "bad", "poll", "slow", "stalled", "publish")}
        self.errors: list[str] = []         # first few error descriptions, with times
        self.loadgen_runs: list[dict] = []
        self.samples: list[dict] = []
        self.metrics_scrapes: list[dict] = []
        self.metrics_ok = False
        self.procs: set[asyncio.subprocess.Process] = set()
        self.published = {"poll": 0, "slow": 0}   # last acknowledged sequence per channel
        self.pub_done = asyncio.Event()

    # -- bookkeeping
    def now(self) -> float:
        return time.monotonic() - self.t0

    def error(self, kind: str, msg: str) -> None:
        bump(self.stats.setdefault("errors", {}), kind)
        if len(self.errors) < 200:
            self.errors.append(f"t={self.now():.1f}s {kind}: {msg}")

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    async def pause(self, seconds: float) -> bool:
        """Sleep ``seconds`` or until stopping; True if still running."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)
        return not self.stopping.is_set()

    # -- keep-alive HTTP clients
    async def http_client(self, k: int) -> None:
        rng = random.Random(k)
        st = self.stats["http"]
        period = 1.0 / self.a.http_rate
        while not self.stopping.is_set():
            r = w = None
            try:
                r, w = await asyncio.wait_for(connect(self.port), 10)
                bump(st, "connections")
                for _ in range(rng.randint(50, 400)):
                    if self.stopping.is_set():
                        break
                    batch = [self._http_case(rng) for _ in range(3 if rng.random() < 0.1 else 1)]
                    w.write(b"".join(req for req, _, _ in batch))
                    for req, is_head, check in batch:
                        status, headers, body = await asyncio.wait_for(read_response(r, is_head), 10)
                        problem = check(status, headers, body)
                        if problem:
                            self.error("http", problem)
                        else:
                            bump(st, "ok")
                    if len(batch) > 1:
                        bump(st, "pipelined", len(batch))
                    await asyncio.sleep(period * len(batch) * rng.uniform(0.5, 1.5))
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, HTTPError,
                    asyncio.LimitOverrunError, ValueError) as e:
                self.error("http", f"client {k}: {type(e).__name__} {e}")
                await self.pause(1.0)
            finally:
                close_writer(w)

    @staticmethod
    def _http_case(rng: random.Random):
        kind = rng.choice(("plaintext", "plaintext", "json", "add", "head", "echo"))
        if kind == "plaintext":
            return (request_bytes("GET", "/plaintext"), False, lambda s, h, b: None
                    if s == 200 and b == b"Hello, World!" else f"/plaintext {s} {b[:40]!r}")
        if kind == "head":
            return (request_bytes("HEAD", "/plaintext"), True,
                    lambda s, h, b: None if s == 200 else f"HEAD /plaintext {s}")
        if kind == "json":
            return (request_bytes("GET", "/json"), False,
                    lambda s, h, b: None if s == 200 and json.loads(b) == {"message": "Hello, World!"}
                    else f"/json {s} {b[:40]!r}")
        if kind == "add":
            x, y = rng.randint(-10**9, 10**9), rng.randint(-10**9, 10**9)
            return (request_bytes("GET", f"/add?a={x}&b={y}"), False,
                    lambda s, h, b: None if s == 200 and b.strip() == str(x + y).encode()
                    else f"/add {s} {b[:40]!r}")
        body = rng.randbytes(rng.choice((0, 10, 1000, 20000)))
        return (request_bytes("POST", "/echo", body, [("Content-Type", "application/octet-stream")]),
                False, lambda s, h, b: None if s == 200 and b == body else f"/echo {s} {len(b)} B")

    # -- bad requests
    BAD = {
        "garbage": (b"GARBAGE\r\n\r\n", (400,)),
        "bad-header": (b"GET /plaintext HTTP/1.1\r\nHost: soak\r\nNo colon here\r\n\r\n", (400,)),
        "long-line": (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: soak\r\n\r\n", (414, 400)),
        "big-headers": (b"GET /plaintext HTTP/1.1\r\nHost: soak\r\n"
                        + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 1000) for i in range(70))
                        + b"\r\n", (431, 400)),
        "add-not-int": (b"GET /add?a=1&b=x HTTP/1.1\r\nHost: soak\r\n\r\n", (400,)),
        "add-missing": (b"GET /add?a=1 HTTP/1.1\r\nHost: soak\r\n\r\n", (400,)),
        "not-found": (b"GET /no/such/route HTTP/1.1\r\nHost: soak\r\n\r\n", (404,)),
        "body-too-big": (b"POST /echo HTTP/1.1\r\nHost: soak\r\nContent-Length: 2000000\r\n\r\n",
                         (413,)),
        "bad-chunk": (b"POST /echo HTTP/1.1\r\nHost: soak\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"zz\r\nhello\r\n0\r\n\r\n", (400,)),
        "cl-and-te": (b"POST /echo HTTP/1.1\r\nHost: soak\r\nContent-Length: 5\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", (400,)),
        "no-host": (b"GET /plaintext HTTP/1.1\r\n\r\n", (400,)),
        "pub-not-utf8": (b"POST /pub/soak-bad HTTP/1.1\r\nHost: soak\r\nContent-Length: 2\r\n\r\n"
                         b"\xff\xfe", (400,)),
        "ws-no-key": (b"GET /ws/soak-bad HTTP/1.1\r\nHost: soak\r\nUpgrade: websocket\r\n"
                      b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n", (400,)),
        "http2-preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", (400, 505)),
        "bad-method": (b"G(T /plaintext HTTP/1.1\r\nHost: soak\r\n\r\n", (400, 501)),
        "abandoned": (b"GET /plaintext HT", ()),     # half a request line, then we close
    }

    async def bad_requests(self) -> None:
        rng = random.Random(7)
        st = self.stats["bad"]
        names = sorted(self.BAD)
        while await self.pause(rng.uniform(0.5, 1.5) / self.a.bad_rate):
            name = rng.choice(names)
            data, expected = self.BAD[name]
            r = w = None
            try:
                r, w = await asyncio.wait_for(connect(self.port), 10)
                w.write(data)
                if not expected:
                    await w.drain()
                    bump(st, "abandoned")
                    continue
                status, _, _ = await asyncio.wait_for(read_response(r), 15)
                bump(st, str(status))
                if status >= 500 and status not in expected:
                    self.error("bad-5xx", f"{name} answered {status}")
                elif status not in expected:
                    bump(st, "other-4xx")
                    if status < 400:
                        self.error("bad-accepted", f"{name} answered {status}")
            except asyncio.TimeoutError:
                self.error("bad-hang", f"{name}: no answer within 15 s")
            except (OSError, asyncio.IncompleteReadError, HTTPError, ValueError):
                # a server may close at once on garbage: that is an answer too, but say so
                bump(st, "closed-without-answer")
                bump(st, f"closed:{name}")
            finally:
                close_writer(w)

    # -- the Python publisher of the long-poll and slow-reader channels
    async def publisher(self) -> None:
        st = self.stats["publish"]
        period = 1.0 / self.a.pub_rate
        r = w = None
        seq = {"poll": 0, "slow": 0}
        pad = "x" * 380
        try:
            while not self.stopping.is_set():
                try:
                    if w is None:
                        r, w = await asyncio.wait_for(connect(self.port), 10)
                    for chan in ("poll", "slow"):
                        n = seq[chan] + 1
                        body = f"p={n}" if chan == "poll" else f"s={n} {pad}"
                        w.write(request_bytes("POST", f"/pub/soak-{chan}", body.encode(),
                                              [("Content-Type", "text/plain")]))
                        status, _, _ = await asyncio.wait_for(read_response(r), 10)
                        if status != 202:
                            # not acknowledged: the readers may never see it; publish it again
                            self.error("publish", f"{chan} {n}: {status}")
                            continue
                        seq[chan] = self.published[chan] = n
                        bump(st, chan)
                except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, HTTPError,
                        ValueError) as e:
                    self.error("publish", f"{type(e).__name__} {e}")
                    close_writer(w)
                    r = w = None
                await self.pause(period)
        finally:
            close_writer(w)
            self.pub_done.set()

    def caught_up(self, chan: str, last: int) -> bool:
        return self.pub_done.is_set() and last >= self.published[chan]

    def check_seq(self, st: dict, prev: int, seq: int, who: str) -> int:
        """Account event ``seq`` after ``prev`` (0: none yet); returns the new last."""
        if prev and seq != prev + 1:
            if seq <= prev:
                bump(st, "duplicates")
                self.error("duplicate", f"{who}: {seq} after {prev}")
                return prev
            bump(st, "lost", seq - prev - 1)
            self.error("loss", f"{who}: {seq} after {prev}")
        bump(st, "events")
        return seq

    # -- long-polls
    async def poller(self, k: int) -> None:
        rng = random.Random(100 + k)
        st = self.stats["poll"]
        last_id, last = None, 0
        while not self.stopping.is_set() or (last and not self.caught_up("poll", last)):
            r = w = None
            life = time.monotonic() + rng.uniform(20, 90)
            try:
                r, w = await asyncio.wait_for(connect(self.port), 10)
                bump(st, "joins" if last_id is None else "resumes")
                while time.monotonic() < life or self.stopping.is_set():
                    if self.stopping.is_set():
                        with contextlib.suppress(asyncio.TimeoutError):
                            await asyncio.wait_for(self.pub_done.wait(), 30)
                        if not last or self.caught_up("poll", last):
                            break
                    if self.pub_done.is_set() and self.remaining() < -20:
                        bump(st, "lost", self.published["poll"] - last)
                        self.error("loss", f"poller {k}: stuck at {last}, published "
                                   f"{self.published['poll']}")
                        return
                    q = f"?lastEventId={last_id}" if last_id else ""
                    w.write(request_bytes("GET", f"/poll/soak-poll{q}"))
                    status, _, body = await asyncio.wait_for(read_response(r), 90)
                    bump(st, "polls")
                    if status != 200:
                        self.error("poll", f"poller {k}: status {status}")
                        await self.pause(1)
                        continue
                    doc = json.loads(body)
                    for ev in doc.get("events", []):
                        data = ev.get("data", "")
                        if ev.get("event", "message") != "message" or not data.startswith("p="):
                            bump(st, "other:" + str(ev.get("event")))
                            if ev.get("event") == "reset" and last:
                                self.error("loss", f"poller {k}: reset after {last}")
                                bump(st, "resets")
                            continue
                        last = self.check_seq(st, last, int(data[2:]), f"poller {k}")
                    last_id = doc.get("last_id") or last_id
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, HTTPError,
                    ValueError) as e:
                self.error("poll", f"poller {k}: {type(e).__name__} {e}")
            finally:
                close_writer(w)
            if self.stopping.is_set():
                continue
            bump(st, "leaves")
            if rng.random() < 0.5:
                last_id, last = None, 0        # a new poller, from now on
            await self.pause(rng.uniform(0, 3))

    # -- slow readers: SSE through a small receive buffer, small sips, stalls, resume
    async def slow_reader(self, k: int) -> None:
        rng = random.Random(200 + k)
        st = self.stats["slow"]
        last_id, last = None, 0
        while not self.stopping.is_set() or (last and not self.caught_up("slow", last)):
            r = w = None
            life = time.monotonic() + rng.uniform(20, 90)
            try:
                r, w = await asyncio.wait_for(connect(self.port, rcvbuf=4096), 10)
                hdrs = [("Last-Event-ID", last_id)] if last_id else []
                bump(st, "joins" if last_id is None else "resumes")
                w.write(request_bytes("GET", "/sub/soak-slow", headers=hdrs))
                status, headers, _ = await asyncio.wait_for(read_response(r, head=True), 10)
                if status != 200 or "chunked" not in headers.get("transfer-encoding", ""):
                    self.error("slow", f"reader {k}: status {status} {headers}")
                    await self.pause(1)
                    continue
                raw, text = bytearray(), ""
                while time.monotonic() < life or (self.stopping.is_set() and last
                                                   and not self.caught_up("slow", last)):
                    if self.stopping.is_set() and (not last or self.caught_up("slow", last)):
                        break
                    if self.pub_done.is_set() and self.remaining() < -20:
                        bump(st, "lost", self.published["slow"] - last)
                        self.error("loss", f"slow reader {k}: stuck at {last}")
                        return
                    try:
                        chunk = await asyncio.wait_for(r.read(256),
                                                       2 if self.stopping.is_set() else 60)
                    except asyncio.TimeoutError:
                        if self.stopping.is_set():
                            continue    # waiting for the last events
                        raise
                    if not chunk:
                        self.error("slow", f"reader {k}: stream ended by the server")
                        break
                    raw += chunk
                    text += dechunk(raw)
                    *blocks, text = text.split("\n\n")
                    for block in blocks:
                        ev_id = data = None
                        for line in block.split("\n"):
                            if line.startswith("id:"):
                                ev_id = line[3:].strip()
                            elif line.startswith("data:"):
                                data = line[5:].lstrip()
                        if ev_id:
                            last_id = ev_id
                        if data and data.startswith("s="):
                            last = self.check_seq(st, last, int(data[2:].split(" ", 1)[0]),
                                                  f"slow reader {k}")
                        elif data is not None:
                            bump(st, "other-events")
                    # a sip of 256 B every 50 ms (5 KB/s), with a stall of 2-6 s now and then
                    await asyncio.sleep(rng.uniform(2, 6) if rng.random() < 0.01 else 0.05)
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, HTTPError,
                    ValueError) as e:
                self.error("slow", f"reader {k}: {type(e).__name__} {e}")
            finally:
                close_writer(w)
            if self.stopping.is_set():
                continue
            bump(st, "leaves")
            if rng.random() < 0.3:
                last_id, last = None, 0
            await self.pause(rng.uniform(0, 3))

    async def stalled_reader(self, k: int) -> None:
        """Opens an SSE stream, reads the head, then never reads again for 30-90 s."""
        rng = random.Random(300 + k)
        st = self.stats["stalled"]
        while not self.stopping.is_set():
            r = w = None
            try:
                r, w = await asyncio.wait_for(connect(self.port, rcvbuf=4096), 10)
                w.write(request_bytes("GET", "/sub/soak-slow"))
                status, _, _ = await asyncio.wait_for(read_response(r, head=True), 10)
                bump(st, "opened" if status == 200 else f"status-{status}")
                await self.pause(rng.uniform(30, 90))
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, HTTPError) as e:
                self.error("stalled", f"{type(e).__name__} {e}")
                await self.pause(1)
            finally:
                close_writer(w)

    # -- sse_load loops
    async def loadgen_loop(self, name: str, mode: str, offset: float, period: float) -> None:
        k = 0
        while True:
            start = self.t0 + offset + k * period
            k += 1
            if start >= self.deadline or (self.stopping.is_set() and self.remaining() > 0):
                return      # the time is up, or the run was cut short (the server died)
            # a run that starts before the deadline runs whole (the last minute is loaded as
            # every other; the run ends up to a minute late)
            await asyncio.sleep(max(0.0, start - time.monotonic()))
            if mode == "echo":
                size = (64, 2048, 65536)[k % 3]
                args = ["--echo", "--conns", self.a.echo_conns, "--size", size,
                        "--duration", 2, "--warmup", 1, "--drain", 5, "--timeout", 30]
            else:
                dur = 45
                args = ["--subs", self.a.subs, "--channels", self.a.channels,
                        "--prefix", f"soak-{name}-", "--rate", self.a.rate, "--duration", dur,
                        "--drain", 8, "--connect-timeout", 10, "--timeout", dur + 40]
                if mode == "ws":
                    args.insert(0, "--ws")
            await self.run_loadgen(name, mode, [str(x) for x in args])

    async def run_loadgen(self, name: str, mode: str, args: list[str]) -> None:
        cmd = [str(self.a.loadgen), "--port", str(self.port)] + args
        t = self.now()
        with open(self.logdir / f"loadgen-{name}.log", "ab") as errlog:
            errlog.write(f"# t={t:.1f} {' '.join(cmd)}\n".encode())
            errlog.flush()
            proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                        stderr=errlog)
            self.procs.add(proc)
            try:
                out, _ = await proc.communicate()
            finally:
                self.procs.discard(proc)
        run = {"name": name, "mode": mode, "t_start": round(t, 1), "t_end": round(self.now(), 1),
               "rc": proc.returncode}
        try:
            res = json.loads(out)
        except ValueError:
            self.error(f"loadgen-{mode}", f"{name}: exit {proc.returncode}, no JSON "
                       f"(see {self.logdir}/loadgen-{name}.log)")
            run["failed"] = True
            self.loadgen_runs.append(run)
            return
        res.pop("worst_conns", None)
        run["result"] = res
        self.loadgen_runs.append(run)
        for problem in loadgen_problems(mode, res):
            self.error(f"loadgen-{mode}", f"{name} t={t:.0f}s: {problem}")

    # -- sampling
    async def sampler(self, server: Server) -> None:
        r = w = None
        tick = 0
        while True:
            target = self.t0 + tick * SAMPLE_S
            tick += 1
            await asyncio.sleep(max(0.0, target - time.monotonic()))
            s = {"t": round(self.now(), 2)}
            p = proc_sample(server.proc.pid)
            if p is None:
                s["dead"] = True
                self.samples.append(s)
                return
            s.update(p)
            lat = []
            try:
                if w is None:
                    r, w = await asyncio.wait_for(connect(self.port), 5)
                for _ in range(5):
                    t1 = time.perf_counter()
                    w.write(request_bytes("GET", "/plaintext"))
                    status, _, _ = await asyncio.wait_for(read_response(r), 10)
                    lat.append((time.perf_counter() - t1) * 1000)
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, HTTPError) as e:
                self.error("probe", f"{type(e).__name__} {e}")
                close_writer(w)
                r = w = None
            s["probe_ms"] = [round(x, 3) for x in lat]
            if self.metrics_ok:
                m = await self.scrape_metrics()
                if m is not None:
                    m["t"] = s["t"]
                    self.metrics_scrapes.append(m)
            self.samples.append(s)
            if self.stopping.is_set() and s["t"] >= self.a.minutes * 60:
                return

    async def scrape_metrics(self) -> dict | None:
        r = w = None
        try:
            r, w = await asyncio.wait_for(connect(self.port), 5)
            w.write(request_bytes("GET", "/metrics"))
            status, _, body = await asyncio.wait_for(read_response(r), 10)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, HTTPError) as e:
            self.error("metrics", f"{type(e).__name__} {e}")
            return None
        finally:
            close_writer(w)
        return parse_lag(body.decode("utf-8", "replace")) if status == 200 else None

    # -- the whole run
    async def run(self, server: Server) -> None:
        self.metrics_ok = (await self.scrape_metrics()) is not None
        self.errors.clear()
        self.stats.pop("errors", None)
        self.t0 = time.monotonic()
        self.deadline = self.t0 + self.a.minutes * 60
        tasks = [asyncio.create_task(self.sampler(server), name="sampler"),
                 asyncio.create_task(self.minute_reporter(server), name="reporter"),
                 asyncio.create_task(self.publisher(), name="publisher"),
                 asyncio.create_task(self.bad_requests(), name="bad")]
        tasks += [asyncio.create_task(self.http_client(k)) for k in range(self.a.http_clients)]
        tasks += [asyncio.create_task(self.poller(k)) for k in range(self.a.pollers)]
        tasks += [asyncio.create_task(self.slow_reader(k)) for k in range(self.a.slow_readers)]
        tasks += [asyncio.create_task(self.stalled_reader(k)) for k in range(self.a.stalled)]
        loops = [("sse-a", "sse", 0), ("sse-b", "sse", 30), ("ws-a", "ws", 15), ("ws-b", "ws", 45)]
        tasks += [asyncio.create_task(self.loadgen_loop(n, m, o, 60.0), name=n)
                  for n, m, o in loops]
        tasks.append(asyncio.create_task(self.loadgen_loop("echo", "echo", 5, 30.0), name="echo"))
        try:
            while self.remaining() > 0 and server.alive():
                await asyncio.sleep(min(1.0, max(0.05, self.remaining())))
            if not server.alive():
                self.error("server", f"died (exit {server.proc.returncode}): {server.tail(5)}")
            log("time is up: stopping the load (readers catch up with the last events)")
            self.stopping.set()
            done, pending = await asyncio.wait(tasks, timeout=150)
            for t in done:
                if not t.cancelled() and t.exception() is not None:
                    self.error("harness", f"{t.get_name()}: {t.exception()!r}")
            for t in pending:
                log(f"still running after 150 s, cancelled: {t.get_name()}")
                t.cancel()
        finally:
            for p in list(self.procs):
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def minute_reporter(self, server: Server) -> None:
        for m in range(1, self.a.minutes + 1):
            await asyncio.sleep(max(0.0, self.t0 + m * 60 + 0.5 - time.monotonic()))
            rows = minute_rows(self.samples, self.metrics_scrapes, m)
            if not rows:
                continue
            row = rows[-1]
            lost = total_loss(self)
            lag = (f"loop lag mean {row['lag_ms']:.2f} ms, p99 <= {row['lag_p99_ms']:.1f} ms"
                   if row.get("lag_ms") is not None else
                   f"tiny-request latency (lag proxy) p50 {row['probe_p50_ms']:.2f} ms, "
                   f"max {row['probe_max_ms']:.1f} ms")
            n_err = sum(self.stats.get("errors", {}).values())
            log(f"minute {m:2d}/{self.a.minutes}: RSS {row['rss_mb']:.1f} MB, fds {row['fds']}, "
                f"{lag}, CPU {row['cpu_pct']:.0f}% | http ok {self.stats['http'].get('ok', 0):,}"
                f", bad {sum(v for k, v in self.stats['bad'].items() if k[:1].isdigit()):,}"
                f", loadgen runs {len(self.loadgen_runs)}, lost {lost}, errors {n_err}")


def dechunk(raw: bytearray) -> str:
    """Take the complete chunks off the front of ``raw``; their payload as text."""
    out = bytearray()
    while True:
        i = raw.find(b"\r\n")
        if i < 0:
            break
        size = int(bytes(raw[:i]).split(b";")[0], 16)
        if len(raw) < i + 2 + size + 2:
            break
        out += raw[i + 2:i + 2 + size]
        del raw[:i + 2 + size + 2]
    return out.decode("utf-8")


def loadgen_problems(mode: str, res: dict) -> list[str]:
    if mode == "echo":
        bad = {k: res.get(k, 0) for k in ("conns_failed", "connect_errors", "http_errors",
               "handshake_errors", "mismatches", "wrong_length", "wrong_type", "unexpected",
               "unanswered", "conns_lost", "protocol_errors")}
    else:
        bad = {k: res.get(k, 0) for k in ("subs_failed", "connect_errors", "http_errors",
               "sub_disconnects", "pub_errors", "pub_non2xx", "pub_conn_errors", "lost",
               "duplicates", "out_of_order", "wrong_channel", "bad_payloads")}
        if res.get("acked", 0) < res.get("published", 0):
            bad["unacked"] = res["published"] - res["acked"]
        for k in ("handshake_errors", "protocol_errors", "json_errors"):
            bad[k] = res.get("ws", {}).get(k, 0)
    return [f"{k}={v}" for k, v in bad.items() if v]


# other families of GET /metrics kept per scrape (summed over their label sets)
KEPT_METRICS = ("clos_web_connections", "clos_web_subscribers", "clos_web_channels",
                "clos_web_events_delivered_total", "clos_web_slow_consumers_closed_total",
                "clos_web_requests_total")


def parse_lag(text: str) -> dict | None:
    """``clos_web_loop_lag_seconds`` from Prometheus text: a histogram's buckets (summed over
    label sets), sum and count; or a gauge's value. Also the KEPT_METRICS, under "kept"."""
    buckets: dict[float, float] = {}
    out = {"sum": 0.0, "count": 0.0, "kept": {}}
    found = False
    for line in text.splitlines():
        if not line.startswith("clos_web_"):
            continue
        name, _, rest = line.partition("{") if "{" in line.split(" ")[0] else (line.split(" ")[0], "", "")
        try:
            value = float(line.rsplit(" ", 1)[1] if rest == "" else rest.rsplit("}", 1)[1].split()[0])
        except (ValueError, IndexError):
            continue
        if name in KEPT_METRICS:
            out["kept"][name] = out["kept"].get(name, 0.0) + value
        if not name.startswith("clos_web_loop_lag_seconds"):
            continue
        found = True
        if name == "clos_web_loop_lag_seconds_bucket":
            le = rest.split('le="', 1)[1].split('"', 1)[0]
            key = float("inf") if le in ("+Inf", "Inf") else float(le)
            buckets[key] = buckets.get(key, 0.0) + value
        elif name == "clos_web_loop_lag_seconds_sum":
            out["sum"] += value
        elif name == "clos_web_loop_lag_seconds_count":
            out["count"] += value
        elif name == "clos_web_loop_lag_seconds":
            out["gauge"] = value
    if not found:
        return None
    out["buckets"] = sorted(buckets.items())
    return out


def minute_rows(samples: list[dict], scrapes: list[dict], upto: int) -> list[dict]:
    """Per-minute figures for minutes 1..upto (minute m covers samples with t in (60(m-1),
    60m]): medians of RSS and fds, max RSS and fds, CPU %, tiny-request latency p50/max, and the
    loop lag from /metrics when there is one."""
    rows = []
    prev_cpu = samples[0] if samples else None
    for m in range(1, upto + 1):
        ss = [s for s in samples if "rss_kb" in s and 60 * (m - 1) < s["t"] <= 60 * m]
        if not ss:
            break
        probes = [x for s in ss for x in s.get("probe_ms", [])]
        row = {"minute": m,
               "rss_mb": statistics.median(s["rss_kb"] for s in ss) / 1024,
               "rss_max_mb": max(s["rss_kb"] for s in ss) / 1024,
               "fds": int(statistics.median(s["fds"] for s in ss)),
               "fds_max": max(s["fds"] for s in ss),
               "threads": max(s["threads"] for s in ss),
               "cpu_pct": 100 * (ss[-1]["cpu_s"] - prev_cpu["cpu_s"]) / max(1e-9, ss[-1]["t"] - prev_cpu["t"]),
               "probe_p50_ms": statistics.median(probes) if probes else float("nan"),
               "probe_max_ms": max(probes) if probes else float("nan"),
               "samples": len(ss)}
        prev_cpu = ss[-1]
        sc = [x for x in scrapes if 60 * (m - 1) <= x["t"] <= 60 * m]
        if sc:
            kept = sc[-1].get("kept", {})
            row["metrics"] = {k: kept[k] - sc[0]["kept"].get(k, 0.0) if k.endswith("_total")
                              else kept[k] for k in kept}
        if len(sc) >= 2 and "gauge" not in sc[-1]:
            a, b = sc[0], sc[-1]
            dn = b["count"] - a["count"]
            if dn > 0:
                row["lag_ms"] = 1000 * (b["sum"] - a["sum"]) / dn
                before = dict(a["buckets"])
                p99 = float("inf")
                for le, c in b["buckets"]:
                    if c - before.get(le, 0.0) >= 0.99 * dn:
                        p99 = le
                        break
                row["lag_p99_ms"] = 1000 * p99
        elif sc and "gauge" in sc[-1]:
            row["lag_ms"] = 1000 * statistics.mean(x["gauge"] for x in sc)
            row["lag_p99_ms"] = 1000 * max(x["gauge"] for x in sc)
        rows.append(row)
    return rows


def total_loss(soak: Soak) -> int:
    lost = sum(soak.stats[k].get("lost", 0) + soak.stats[k].get("duplicates", 0)
               for k in ("poll", "slow"))
    for run in soak.loadgen_runs:
        res = run.get("result", {})
        if run["mode"] == "echo":
            lost += res.get("mismatches", 0) + res.get("wrong_length", 0) + res.get("unanswered", 0)
        else:
            lost += res.get("lost", 0) + res.get("duplicates", 0) + res.get("out_of_order", 0)
    return lost


def flatness(rows: list[dict], key: str, minutes: int) -> dict:
    """Every minute of the last third within FLAT_TOLERANCE of the middle third's mean."""
    lo, hi = minutes // 3, (2 * minutes) // 3
    mid = [r[key] for r in rows if lo < r["minute"] <= hi]
    last = [r[key] for r in rows if hi < r["minute"] <= minutes]
    if not mid or not last:
        return {"met": False, "why": "not enough minutes"}
    ref = statistics.mean(mid)
    worst = max(last, key=lambda v: abs(v - ref))
    dev = (worst - ref) / ref if ref else float("inf")
    return {"met": abs(dev) <= FLAT_TOLERANCE, "middle": [lo, hi], "last": [hi, minutes],
            "middle_mean": ref, "last_mean": statistics.mean(last), "worst_last": worst,
            "worst_deviation": dev}


# --------------------------------------------------------------------------------------------
# report, JSON, chart

def summarize(soak: Soak, rows: list[dict], args) -> dict:
    agg: dict[str, dict] = {}
    for run in soak.loadgen_runs:
        a = agg.setdefault(run["mode"], {"runs": 0, "failed_runs": 0})
        a["runs"] += 1
        res = run.get("result")
        if res is None:
            a["failed_runs"] += 1
            continue
        keys = (("round_trips", "echoes_ok", "mismatches", "wrong_length", "unanswered",
                 "conns_lost", "protocol_errors", "conns_ready")
                if run["mode"] == "echo" else
                ("subs_ready", "subs_failed", "published", "acked", "expected", "delivered",
                 "lost", "duplicates", "out_of_order", "bad_payloads", "sub_disconnects"))
        for k in keys:
            a[k] = a.get(k, 0) + res.get(k, 0)
        if "latency_ms" in res:
            a["latency_p99_ms_max"] = max(a.get("latency_p99_ms_max", 0), res["latency_ms"]["p99"])
    rss = flatness(rows, "rss_mb", args.minutes)
    fds = flatness(rows, "fds", args.minutes)
    lost = total_loss(soak)
    incomplete = sum(a.get("failed_runs", 0) + a.get("subs_failed", 0) for a in agg.values())
    errors = soak.stats.get("errors", {})
    return {"loadgen": agg, "rss_flat": rss, "fds_flat": fds, "lost": lost,
            "incomplete_runs": incomplete, "errors": errors,
            "goal_met": rss["met"] and fds["met"] and lost == 0 and not incomplete
            and not errors.get("server")}


def print_report(soak: Soak, rows: list[dict], summary: dict, args) -> None:
    lag_src = ("clos_web_loop_lag_seconds from GET /metrics" if soak.metrics_ok else
               "no /metrics: the latency of GET /plaintext (5 per 5 s) is the lag proxy")
    print(f"\nSoak: {args.minutes} min against one examples/hello.py; loop lag: {lag_src}\n")
    print("| min | RSS MB (median / max) | fds (median / max) | CPU % | lag ms | probe p50 / max ms |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        lag = (f"{r['lag_ms']:.2f} (p99 <= {r['lag_p99_ms']:.0f})" if r.get("lag_ms") is not None
               else "-")
        print(f"| {r['minute']} | {r['rss_mb']:.1f} / {r['rss_max_mb']:.1f} | {r['fds']} / "
              f"{r['fds_max']} | {r['cpu_pct']:.0f} | {lag} | {r['probe_p50_ms']:.2f} / "
              f"{r['probe_max_ms']:.1f} |")
    print()
    for mode, a in summary["loadgen"].items():
        print(f"sse_load {mode}: " + ", ".join(f"{k} {v:,}" if isinstance(v, int) else
                                                f"{k} {v:.1f}" for k, v in a.items()))
    for k in ("http", "bad", "poll", "slow", "stalled", "publish"):
        print(f"{k}: " + ", ".join(f"{n} {v:,}" for n, v in sorted(soak.stats[k].items())))
    if soak.errors:
        print(f"\nerrors by kind: {summary['errors']} (first {min(15, len(soak.errors))}):")
        for e in soak.errors[:15]:
            print("  " + e)
    print()
    for key, label in (("rss_flat", "RSS"), ("fds_flat", "fds")):
        f = summary[key]
        if "middle_mean" in f:
            print(f"{label} flat (each minute {f['last'][0]}-{f['last'][1]} within 5% of the mean "
                  f"of minutes {f['middle'][0]}-{f['middle'][1]}, {f['middle_mean']:.1f}): "
                  f"{'met' if f['met'] else 'NOT met'} (worst {f['worst_last']:.1f}, "
                  f"{100 * f['worst_deviation']:+.1f}%)")
        else:
            print(f"{label} flat: NOT met ({f['why']})")
    print(f"zero loss (SSE, WebSocket, long-poll, slow readers, echo): "
          f"{'met' if summary['lost'] == 0 and not summary['incomplete_runs'] else 'NOT met'} "
          f"(lost/duplicated/out of order/bad echoes {summary['lost']}, failed runs or "
          f"subscribers {summary['incomplete_runs']})")
    print(f"GOAL {'met' if summary['goal_met'] else 'NOT met'}")


def draw_chart(rows: list[dict], summary: dict, metrics_ok: bool, path: Path, title: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        log("matplotlib missing (run bench/setup.sh): no chart")
        return
    mins = [r["minute"] for r in rows]
    fig, axes = plt.subplots(3, 1, figsize=(8, 7.5), sharex=True)
    lag_key = "lag_ms" if metrics_ok and any(r.get("lag_ms") is not None for r in rows) else None
    panels = [("rss_mb", "rss_max_mb", "RSS (MB)"), ("fds", "fds_max", "open fds"),
              (lag_key or "probe_p50_ms", None if lag_key else "probe_max_ms",
               "loop lag, mean (ms)" if lag_key else "lag proxy: GET /plaintext (ms)")]
    for ax, (key, key_max, label) in zip(axes, panels):
        ax.plot(mins, [r.get(key) for r in rows], marker="o", ms=3, label="median" if key_max
                else "mean")
        if key_max:
            ax.plot(mins, [r[key_max] for r in rows], ls="--", lw=0.8, color="gray", label="max")
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        f = summary.get("rss_flat" if key == "rss_mb" else "fds_flat" if key == "fds" else "", {})
        if "middle" in f:
            ax.axvspan(f["middle"][0] + 0.5, f["middle"][1] + 0.5, color="tab:blue", alpha=0.06)
            ax.axvspan(f["last"][0] + 0.5, f["last"][1] + 0.5, color="tab:green", alpha=0.08)
            ax.axhspan(f["middle_mean"] * 0.95, f["middle_mean"] * 1.05, color="tab:green",
                       alpha=0.12)
        ax.legend(loc="lower right", fontsize=8)
    axes[-1].xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes[-1].set_xlabel("minute (each point: the minute ending there; band: middle third's "
                        "mean ±5%)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    log(f"chart: {path}")


def machine_info(repo: Path) -> dict:
    def run(*cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, cwd=repo, timeout=10).stdout.strip()
        except OSError:
            return ""
    cpu = ""
    with contextlib.suppress(OSError):
        cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                    if l.startswith("model name")), "")
    return {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
            "python": platform.python_version(), "loadavg": os.getloadavg(),
            "commit": run("git", "rev-parse", "--short", "HEAD"),
            "dirty": bool(run("git", "status", "--porcelain", "--untracked-files=no"))}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=int, default=30, help="length of the run (30)")
    p.add_argument("--port", type=int, default=0, help="server port (a free one)")
    p.add_argument("--repo", type=Path, default=REPO_DIR, help="tree with .venv and examples/")
    p.add_argument("--loadgen", type=Path, default=LOADGEN, help="the sse_load binary")
    p.add_argument("--subs", type=int, default=100, help="subscribers per sse_load run (100)")
    p.add_argument("--channels", type=int, default=10, help="channels per sse_load run (10)")
    p.add_argument("--rate", type=int, default=10, help="publishes/s per sse_load run (10)")
    p.add_argument("--echo-conns", type=int, default=4, help="WebSocket echo connections (4)")
    p.add_argument("--http-clients", type=int, default=8, help="keep-alive clients (8)")
    p.add_argument("--http-rate", type=float, default=25.0, help="requests/s per client (25)")
    p.add_argument("--pollers", type=int, default=4, help="long-pollers (4)")
    p.add_argument("--slow-readers", type=int, default=4, help="slow SSE readers (4)")
    p.add_argument("--stalled", type=int, default=2, help="SSE streams never read (2)")
    p.add_argument("--pub-rate", type=float, default=5.0,
                   help="publishes/s to each of the long-poll and slow-reader channels (5)")
    p.add_argument("--bad-rate", type=float, default=2.0, help="bad requests/s (2)")
    p.add_argument("--results-dir", type=Path, default=BENCH_DIR / "results")
    p.add_argument("--chart", type=Path, default=BENCH_DIR / "charts" / "soak.png")
    p.add_argument("--no-save", action="store_true", help="no JSON, no chart")
    args = p.parse_args(argv)
    if args.minutes < 1:
        p.error("--minutes must be at least 1")
    if not os.access(args.loadgen, os.X_OK):
        log(f"{args.loadgen} is missing: run bash bench/setup.sh (or bench/loadgen/setup.sh)")
        return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    args.results_dir.mkdir(parents=True, exist_ok=True)
    logdir = args.results_dir / f"soak-{stamp}"
    logdir.mkdir(exist_ok=True)
    port = args.port or free_port()
    machine = machine_info(args.repo)
    server = Server(args.repo, port, logdir / "server.log")
    log(f"{args.minutes} min soak, server {' '.join(server.cmd)} (port {port}), logs in {logdir}")
    if machine["loadavg"][0] > 1.0:
        log(f"load average {machine['loadavg'][0]:.2f}: the machine is busy (figures are noisier)")
    server.start()
    idle_start = proc_sample(server.proc.pid)
    soak = Soak(args, port, logdir)
    interrupted = False
    loop = asyncio.new_event_loop()
    main_task = loop.create_task(soak.run(server))
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, main_task.cancel)
    try:
        loop.run_until_complete(main_task)
    except asyncio.CancelledError:
        interrupted = True
        log("interrupted: reporting what was measured")
    finally:
        time.sleep(2.0)     # the server closes what the clients closed
        idle_end = proc_sample(server.proc.pid) if server.alive() else None
        server.stop()
        loop.close()

    rows = minute_rows(soak.samples, soak.metrics_scrapes, args.minutes)
    summary = summarize(soak, rows, args)
    summary["interrupted"] = interrupted
    summary["idle_fds"] = {"before": idle_start and idle_start["fds"],
                           "after": idle_end and idle_end["fds"]}
    summary["idle_rss_mb"] = {"before": idle_start and idle_start["rss_kb"] / 1024,
                              "after": idle_end and idle_end["rss_kb"] / 1024}
    print_report(soak, rows, summary, args)
    print(f"idle before / after the load: fds {summary['idle_fds']['before']} / "
          f"{summary['idle_fds']['after']}, RSS {summary['idle_rss_mb']['before']:.1f} / "
          f"{(summary['idle_rss_mb']['after'] or 0):.1f} MB")
    if args.no_save:
        return 0
    doc = {"kind": "soak", "stamp": stamp, "machine": machine, "config": vars(args) | {
               "port": port, "server_cmd": server.cmd, "sample_s": SAMPLE_S,
               "loop_lag_source": "metrics" if soak.metrics_ok else "proxy: GET /plaintext latency"},
           "summary": summary, "minutes": rows, "stats": soak.stats, "errors": soak.errors,
           "loadgen_runs": soak.loadgen_runs, "samples": soak.samples,
           "metrics_scrapes": soak.metrics_scrapes}
    out = args.results_dir / f"soak-{stamp}.json"
    out.write_text(json.dumps(doc, indent=1, default=str))
    log(f"results: {out}")
    title = (f"clos_web soak {stamp}: {args.minutes} min, one hello.py process "
             f"(commit {machine['commit']}) - goal {'met' if summary['goal_met'] else 'NOT met'}")
    draw_chart(rows, summary, soak.metrics_ok, args.chart, title)
    return 0


if __name__ == "__main__":
    sys.exit(main())
