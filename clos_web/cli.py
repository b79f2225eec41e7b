"""Serving an app from the command line: ``python -m clos_web MODULE:APP``.

One process by default, exactly as :func:`~clos_web.serve`. With ``--workers N`` (N > 1) a
small supervisor forks N worker processes; each binds the same host:port with ``SO_REUSEPORT``
and runs its own loop, so the kernel spreads new connections over them. The supervisor binds
nothing, restarts a worker that dies (and gives up on a crash loop), forwards SIGTERM/SIGINT,
replaces its workers one at a time on SIGHUP (a rolling restart: new code, nothing dropped),
and its workers stop by themselves when it is gone. Workers share channels only through a broker
(``--redis URL``, which sets ``CLOS_WEB_REDIS`` before the app is imported)::

    python -m clos_web examples.hello:app --port 8000 --workers 4 --redis redis://127.0.0.1/0

With ``--metrics-port P`` each worker (slot k, 1..N) also listens on ``P + k - 1``, in the same
loop, serving the same app: ``/metrics`` and the dashboard there are that worker's, so
Prometheus scrapes every worker by its own port (one process listens on P as well).

Scripts take the same flags by building on :func:`parser` and :func:`run`, as
``examples/hello.py`` does:

>>> args = parser().parse_args(["myapp:app", "--workers", "2", "--metrics-port", "9100"])
>>> (args.app, args.port, args.workers, args.redis, args.metrics_port)
('myapp:app', 8000, 2, None, 9100)
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import errno
import importlib
import importlib.util
import logging
import os
import pathlib
import select
import signal
import socket
import sys
import threading
import time
import traceback
from typing import Any, Callable

import attrs

from clos_web.http.parser import Limits
from clos_web.http.server import Server
from clos_web.loop.server import EVENT_READ, Loop, process_ready

log = logging.getLogger("clos_web.cli")

REDIS_ENV = "CLOS_WEB_REDIS"
"""The environment variable a :class:`~clos_web.Channels` made without a broker reads."""

EXIT_USAGE = 2          # bad command line, MODULE:APP not found, workers without a broker
EXIT_FAILED = 1         # could not listen, a worker crash loop, the app failed to import
EXIT_CANNOT_LISTEN = 3  # a worker's exit status: binding failed (the supervisor gives up)

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_SUPERVISOR_SIGNALS = (*_STOP_SIGNALS, signal.SIGHUP, signal.SIGCHLD)


class CLIError(Exception):
    """A problem worth one line on stderr and an exit status (``code``), not a traceback."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------------------------
# The command line


def _workers(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, not {text!r}")
    return n


def _port(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port, 1 to 65535, not {text!r}")
    return n


def add_arguments(p: argparse.ArgumentParser, port: int = 8000) -> argparse.ArgumentParser:
    """Add the serving options (``--port --host --workers --redis --metrics-port --pid-file
    --log-level``) to ``p``; a script adds its own beside them and hands the parsed result to
    :func:`run`."""
    p.add_argument("--port", type=int, default=port, help=f"TCP port (default {port})")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--workers", type=_workers, default=1, metavar="N",
                   help="worker processes sharing the port with SO_REUSEPORT under a "
                        "supervisor (default 1: no supervisor, serve in this process); N > 1 "
                        f"needs a broker: --redis or {REDIS_ENV}")
    p.add_argument("--redis", metavar="URL",
                   help=f"the channels' broker: sets {REDIS_ENV}=URL before the app is "
                        "imported (workers inherit it)")
    p.add_argument("--metrics-port", type=_port, metavar="P",
                   help="a port of its own per worker, to scrape each one's /metrics (and "
                        "open its dashboard): worker k of N also listens on P+k-1, so P to "
                        "P+N-1 (with one process, P as well); same host, same app")
    p.add_argument("--pid-file", metavar="PATH",
                   help="write this process's pid there (the supervisor's with --workers), "
                        "removed on exit")
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error", "critical"],
                   help="logging level (default info)")
    return p


def parser(description: str | None = None, port: int = 8000) -> argparse.ArgumentParser:
    """The ``python -m clos_web`` parser: ``MODULE:APP`` and the options of
    :func:`add_arguments`."""
    p = argparse.ArgumentParser(
        prog="python -m clos_web", description=description or __doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("app", metavar="MODULE:APP",
                   help="the app to serve: MODULE is a module name (the current directory is "
                        "on sys.path) or a path to a .py file; APP an attribute of it (default "
                        "'app'), or 'factory()' to call a function that returns the app")
    return add_arguments(p, port)


def main(argv: list[str] | None = None) -> int:
    """``python -m clos_web MODULE:APP [options]``; the exit status."""
    args = parser().parse_args(argv)
    return run(lambda: load_app(args.app), args)


# --------------------------------------------------------------------------------------------
# Finding the app


def load_app(spec: str) -> Any:
    """The app named by ``"MODULE:APP"``: MODULE a module name (the current directory first on
    ``sys.path``) or a ``.py`` file; APP an attribute (dotted is fine), ``app`` when left out, or
    ``"name()"`` to call a factory. A name that is not there raises :class:`CLIError`; an error
    inside the module's own code propagates.

    >>> load_app("clos_web:default_app") is __import__("clos_web").default_app
    True
    """
    module_name, _, attr = spec.partition(":")
    attr = attr or "app"
    call = attr.endswith("()")
    if call:
        attr = attr[:-2]
    if not module_name or not all(part.isidentifier() for part in attr.split(".")):
        raise CLIError(f"{spec!r} is not MODULE:APP (for example myapp:app or myapp:make())")
    module = load_module(module_name)
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise CLIError(f"module {module_name!r} has no attribute {attr!r}") from None
    if call:
        if not callable(obj):
            raise CLIError(f"{module_name}:{attr} is not callable (drop the '()')")
        obj = obj()
    if not callable(getattr(obj, "handle", None)):
        raise CLIError(f"{spec} is a {type(obj).__name__}, not an app "
                       "(an App, or anything with handle(request, conn))")
    return obj


def load_module(name: str):
    """Import the module ``name`` (the current directory first on ``sys.path``), or load a fresh
    copy of a ``.py`` file when ``name`` is a path. A module that is not there raises
    :class:`CLIError`; an error inside the module's own code propagates.

    >>> load_module("clos_web.cli").REDIS_ENV
    'CLOS_WEB_REDIS'
    """
    if name.endswith(".py") or os.sep in name:
        path = pathlib.Path(name)
        if not path.is_file():
            raise CLIError(f"no such file: {name}")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name is not None and (name == e.name or name.startswith(e.name + ".")):
            raise CLIError(f"cannot import {name!r}: no module named {e.name!r}") from None
        raise


# --------------------------------------------------------------------------------------------
# Running


def use_redis(url: str | None) -> None:
    """Set ``CLOS_WEB_REDIS=url`` (when given) for channels created from now on, here and in
    any process started from here."""
    if url:
        os.environ[REDIS_ENV] = url


def run(load: Callable[[], Any], args: argparse.Namespace) -> int:
    """Serve the app ``load()`` returns as ``args`` say (see :func:`add_arguments`); the exit
    status. ``load`` is called once, after ``--redis`` is in the environment and before any
    worker is forked. Errors worth one line (:class:`CLIError`) are printed to stderr.
    Hand the status to ``sys.exit`` at once: once a one-process server has stopped on the main
    thread, the process ends within :data:`EXIT_GRACE` seconds whatever still runs."""
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        use_redis(args.redis)
        if args.workers > 1 and not os.environ.get(REDIS_ENV):
            raise CLIError(f"--workers {args.workers} needs a broker (--redis URL or "
                           f"{REDIS_ENV}): without one each worker has its own channels and "
                           "a subscriber on one misses what is published on another")
        if args.workers > 1 and args.port == 0:
            raise CLIError("--workers needs a fixed --port (each worker binds the same one)")
        metrics_port = getattr(args, "metrics_port", None)  # (a script's own parser may lack it)
        if metrics_port is not None:
            _check_metrics_ports(metrics_port, args.workers, args.port)
        try:
            app = load()
        except CLIError:
            raise
        except Exception:
            sys.stderr.write(f"clos_web: the app failed to load:\n{traceback.format_exc()}")
            return EXIT_FAILED
        if args.workers == 1:
            return _serve_here(app, args)
        return Supervisor(app, args.host, args.port, args.workers, args.pid_file,
                          metrics_port=metrics_port).run()
    except CLIError as e:
        print(f"clos_web: {e}", file=sys.stderr, flush=True)
        return e.code


def _ports(first: int, n: int) -> str:
    return str(first) if n == 1 else f"{first}-{first + n - 1}"


def _check_metrics_ports(first: int, workers: int, port: int) -> None:
    """The ports ``--metrics-port`` gives ``workers`` workers must be ports, and not the
    shared one (a worker would serve its own port with everyone's connections)."""
    last = first + workers - 1
    if last > 65535:
        raise CLIError(f"--metrics-port {first} with {workers} workers needs ports "
                       f"{_ports(first, workers)}: past 65535")
    if first <= port <= last:
        raise CLIError(f"--metrics-port {first} gives ports {_ports(first, workers)}, "
                       f"which hold --port {port}: pick ports apart")


def _listen_error(host: str, port: int, e: OSError) -> CLIError:
    why = "address in use" if e.errno == errno.EADDRINUSE else (e.strerror or str(e))
    return CLIError(f"cannot listen on {host}:{port}: {why}", EXIT_FAILED)


EXIT_GRACE = 1.0
"""Seconds the process may take to exit once its server stopped (see :func:`_serve_here`)."""


def _serve_here(app, args) -> int:
    """One process, as :func:`clos_web.serve` does. On the main thread, SIGTERM/SIGINT drain
    the server (a second one, or the stop timeout, closes what is left); once it has stopped
    the process exits within :data:`EXIT_GRACE` seconds, even if a blocking handler that
    outlived the stop still runs on a worker thread (its answer has nowhere to go, and
    Python would otherwise wait for it at exit)."""
    server = Server(app, args.host, args.port, Limits())
    try:
        server.bind()
    except OSError as e:
        raise _listen_error(args.host, args.port, e) from None
    metrics_port = getattr(args, "metrics_port", None)
    if metrics_port is not None:
        try:
            server.listen(args.host, metrics_port)
        except OSError as e:
            server.stop()  # (bound, never run: its sockets closed)
            raise _listen_error(args.host, metrics_port, e) from None
    main = threading.current_thread() is threading.main_thread()
    with _PidFile(args.pid_file):
        also = f" (and on port {metrics_port})" if metrics_port is not None else ""
        print(f"serving on {server.url}{also}", flush=True)
        server.serve_forever(stop_on_signals=main)
    if main:
        _exit_soon(0, EXIT_GRACE)
    return 0


def _exit_soon(status: int, grace: float) -> None:
    """End this process with ``status`` in ``grace`` seconds if it has not ended by then: a
    daemon thread that calls ``os._exit``. The normal exit (atexit handlers, buffers flushed)
    comes first unless threads still busy hold it (Python joins its worker threads at exit)."""

    def watchdog():
        time.sleep(grace)
        busy = [t.name for t in threading.enumerate()
                if t is not threading.current_thread() and t.is_alive()]
        log.warning("still running %.1f s after the stop (%s): exiting without them",
                    grace, ", ".join(busy) or "exit handlers")
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(status)

    threading.Thread(target=watchdog, name="clos_web-exit", daemon=True).start()


@attrs.define
class _PidFile:
    """Writes this process's pid to ``path`` atomically (a temporary file renamed over it);
    removes it on leaving, if it still holds our pid."""

    path: str | None

    def __enter__(self):
        if self.path:
            tmp = f"{self.path}.{os.getpid()}.tmp"
            try:
                with open(tmp, "w") as f:
                    f.write(f"{os.getpid()}\n")
                os.replace(tmp, self.path)
            except OSError as e:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise CLIError(f"cannot write the pid file {self.path}: {e.strerror}",
                               EXIT_FAILED) from None
        return self

    def __exit__(self, *exc):
        if self.path:
            try:
                with open(self.path) as f:
                    mine = f.read().strip() == str(os.getpid())
                if mine:
                    os.unlink(self.path)
            except OSError:
                pass


# --------------------------------------------------------------------------------------------
# The supervisor


@attrs.define(eq=False, repr=False)
class Supervisor:
    """Forks ``workers`` processes serving ``app`` on ``host:port`` (``SO_REUSEPORT``) and
    keeps them running; :meth:`run` (main thread only) returns the exit status. It binds
    nothing itself, and writes its pid to ``pid_file`` (if given) once the port is free.

    A worker that dies is restarted after a short backoff; a slot that dies ``crash_limit``
    times within ``crash_window`` seconds makes it give up (stop the others, exit 1). SIGTERM
    or SIGINT are forwarded as SIGTERM (the workers stop gracefully, as
    :func:`~clos_web.serve` does; a second signal closes at once); it waits up to
    ``stop_timeout`` seconds, kills what is left, and returns 0.

    SIGHUP (or :meth:`restart`) is a rolling restart: the workers are replaced one at a time.
    For each, a new worker is forked (from the supervisor, so the app as it was loaded; code
    changed on disk needs a new supervisor) and, once its loop runs on the shared port
    (``ready_timeout``), the old one gets SIGTERM: it drains (answers in flight finish, its
    streams end cleanly and their clients reconnect to the others) and the next slot goes
    once it has exited (SIGKILL after ``worker_stop_timeout`` + 5 s). A new worker that dies
    or is not ready in time ends the roll: the old one keeps serving. The supervisor's pid
    does not change. (Before, SIGHUP stopped everything.)
    A worker stops by itself, gracefully, when the supervisor is gone: its loop watches the read
    end of a pipe whose write end only the supervisor holds, and EOF there means the supervisor
    has exited (even by SIGKILL), so no orphan keeps the port.

    With ``metrics_port`` P, worker k (its slot) also listens on ``P + k - 1`` (see
    :func:`_serve_worker`); the supervisor probes those ports too before forking.

    >>> Supervisor(app=None, host="127.0.0.1", port=8000, workers=4, metrics_port=9100)
    <Supervisor 127.0.0.1:8000 workers=0/4 metrics=9100-9103>
    """

    app: Any
    host: str
    port: int
    workers: int
    pid_file: str | None = None
    metrics_port: int | None = None               # worker k also listens on this + k - 1
    stop_timeout: float = 10.0
    worker_stop_timeout: float = 5.0
    crash_limit: int = 5
    crash_window: float = 10.0
    pids: dict = attrs.field(factory=dict)        # pid -> slot
    crashes: dict = attrs.field(factory=dict)     # slot -> deque of crash times
    respawn: dict = attrs.field(factory=dict)     # slot -> when to start it again
    stopping: float | None = None                 # the deadline once stopping
    ready_timeout: float = 30.0
    rolling: list = attrs.field(factory=list)     # slots still to replace (SIGHUP)
    roll: tuple | None = None                     # (slot, old pid, new pid, deadline)
    retiring: set = attrs.field(factory=set)      # old pids told to stop by a roll
    ready: dict = attrs.field(factory=dict)       # pid -> read end of its "my loop runs" pipe
    accepting: set = attrs.field(factory=set)     # pids whose loop has said it runs
    status: int = 0
    _signals: list = attrs.field(factory=list)
    _wake: tuple = ()
    _alive: tuple = ()

    def __repr__(self) -> str:
        metrics = (f" metrics={_ports(self.metrics_port, self.workers)}"
                   if self.metrics_port is not None else "")
        return (f"<Supervisor {self.host}:{self.port} workers={len(self.pids)}/{self.workers}"
                f"{metrics}>")

    def run(self) -> int:
        """Supervise until told to stop (or a crash loop); the exit status."""
        self._probe()
        with _PidFile(self.pid_file):
            return self._supervise()

    def _supervise(self) -> int:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        self._wake = (wake_r, wake_w)
        self._alive = os.pipe()   # workers watch the read end; EOF means we are gone
        old_wakeup = signal.set_wakeup_fd(wake_w)
        old = {s: signal.signal(s, self._on_signal) for s in _SUPERVISOR_SIGNALS}
        own = (f" (each also on its own port: {_ports(self.metrics_port, self.workers)})"
               if self.metrics_port is not None else "")
        print(f"serving on http://{self.host}:{self.port} with {self.workers} workers{own}",
              flush=True)
        try:
            for slot in range(1, self.workers + 1):
                self._spawn(slot)
            while self.pids or self.stopping is None:
                self._reap()
                self._handle_signals()
                self._tick()
                if self.pids or self.stopping is None:
                    self._sleep()
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
            signal.set_wakeup_fd(old_wakeup)
            for fd in (*self._wake, *self._alive, *self.ready.values()):
                os.close(fd)
            self.ready.clear()
        return self.status

    def _probe(self) -> None:
        """Fail early with one line when a port cannot be had (bound, then closed at once):
        the shared one, and each worker's own with ``metrics_port``."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        ports = [self.port]
        if self.metrics_port is not None:
            ports += [self.metrics_port + k for k in range(self.workers)]
        for port in ports:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                try:
                    probe.bind((self.host, port))
                except OSError as e:
                    raise _listen_error(self.host, port, e) from None

    def _on_signal(self, signum, frame) -> None:
        self._signals.append(signum)  # the wakeup fd wakes the loop

    def _handle_signals(self) -> None:
        while self._signals:
            signum = self._signals.pop(0)
            if signum in _STOP_SIGNALS:
                log.info("%s: stopping %d workers", signal.Signals(signum).name, len(self.pids))
                self.stop()
            elif signum == signal.SIGHUP:
                self.restart()

    def restart(self) -> None:
        """Replace every worker, one at a time (a rolling restart; see the class). Asked
        during a roll, the roll starts over once this one is done."""
        if self.stopping is not None:
            return
        slots = sorted(set(self.pids.values()) | set(self.respawn))
        log.info("rolling restart of %d workers", len(slots))
        self.rolling.extend(slot for slot in slots if slot not in self.rolling)

    def _roll_on(self, now: float) -> None:
        """One step of a rolling restart, when there is one to take."""
        if self.roll is None:
            while self.rolling and self.roll is None:
                slot = self.rolling.pop(0)
                old = [pid for pid, s in self.pids.items() if s == slot]
                if not old:  # the slot is waiting to be respawned: that is a new worker too
                    continue
                new = self._spawn(slot)
                self.roll = (slot, old[0], new, now + self.ready_timeout)
            return
        slot, old, new, deadline = self.roll
        if new is not None:
            if new in self.accepting:
                log.info("worker %d (pid %d) accepts: stopping pid %d", slot, new, old)
                self.retiring.add(old)
                _kill(old, signal.SIGTERM)
                self.roll = (slot, old, None, now + self.worker_stop_timeout + 5)
            elif now >= deadline:
                log.error("worker %d (pid %d) not ready within %.0f s: rolling restart "
                          "abandoned, pid %d goes on", slot, new, self.ready_timeout, old)
                self._abandon_roll(new)
        elif old not in self.pids:
            self.retiring.discard(old)
            self.roll = None
        elif now >= deadline:
            log.warning("worker %d (pid %d) still draining: killing it", slot, old)
            _kill(old, signal.SIGKILL)

    def _abandon_roll(self, new: int | None) -> None:
        self.roll = None
        self.rolling.clear()
        if new is not None and new in self.pids:
            self.retiring.add(new)
            _kill(new, signal.SIGKILL)

    def stop(self, status: int | None = None) -> None:
        """Forward SIGTERM to every worker (again: they close at once) and stop restarting."""
        if status is not None:
            self.status = status
        if self.stopping is None:
            self.stopping = time.monotonic() + self.stop_timeout
        self.respawn.clear()
        self.rolling.clear()
        self.roll = None
        for pid in self.pids:
            _kill(pid, signal.SIGTERM)

    def _tick(self) -> None:
        now = time.monotonic()
        self._read_ready()
        if self.stopping is not None:
            if now >= self.stopping and self.pids:
                log.warning("workers %s still running after %.0f s: killing them",
                            sorted(self.pids), self.stop_timeout)
                for pid in list(self.pids):
                    _kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    log.info("worker %d (pid %d) killed", self.pids.pop(pid), pid)
            return
        for slot, when in list(self.respawn.items()):
            if now >= when:
                del self.respawn[slot]
                self._spawn(slot)
        self._roll_on(now)

    def _read_ready(self) -> None:
        """Note the workers whose loop said it runs (a byte on their pipe; EOF: it died)."""
        for pid, fd in list(self.ready.items()):
            try:
                said = os.read(fd, 1)
            except BlockingIOError:
                continue
            except OSError:
                said = b""
            if said:
                self.accepting.add(pid)
            os.close(fd)
            del self.ready[pid]

    def _sleep(self) -> None:
        now = time.monotonic()
        wake = [self.stopping] if self.stopping is not None else list(self.respawn.values())
        if self.roll is not None:
            wake.append(self.roll[3])
        timeout = max(0.0, min([1.0, *(w - now for w in wake)]))
        if self._signals:
            return
        try:
            select.select([self._wake[0], *self.ready.values()], [], [], timeout)
        except InterruptedError:
            pass
        try:
            while os.read(self._wake[0], 4096):
                pass
        except BlockingIOError:
            pass

    def _reap(self) -> None:
        while self.pids:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = self.pids.pop(pid, None)
            self.accepting.discard(pid)
            fd = self.ready.pop(pid, None)
            if fd is not None:
                os.close(fd)
            if slot is not None:
                self._exited(slot, pid, status)

    def _exited(self, slot: int, pid: int, status: int) -> None:
        code = os.waitstatus_to_exitcode(status)
        if code >= 0:
            how = f"exit status {code}"
        else:
            try:
                how = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"killed by signal {-code}"
        log.info("worker %d (pid %d) exited: %s", slot, pid, how)
        if self.stopping is not None:
            return
        if pid in self.retiring:  # told to stop by a rolling restart: replaced already
            self.retiring.discard(pid)
            return
        if self.roll is not None and pid == self.roll[2]:
            log.error("worker %d (pid %d) died before it accepted: rolling restart "
                      "abandoned, pid %d goes on", slot, pid, self.roll[1])
            self._abandon_roll(None)
            return
        if any(s == slot for s in self.pids.values()):
            return  # the slot is served (the old worker of a roll died; its successor serves)
        if code == EXIT_CANNOT_LISTEN:
            log.error("worker %d could not listen: stopping", slot)
            self.stop(EXIT_FAILED)
            return
        now = time.monotonic()
        times = self.crashes.setdefault(slot, collections.deque())
        times.append(now)
        while times and times[0] < now - self.crash_window:
            times.popleft()
        if len(times) >= self.crash_limit:
            log.error("worker %d died %d times within %.0f s: giving up", slot, len(times),
                      self.crash_window)
            self.stop(EXIT_FAILED)
            return
        self.respawn[slot] = now + min(0.05 * 2 ** (len(times) - 1), 2.0)

    def _spawn(self, slot: int) -> int:
        ready_r, ready_w = os.pipe()
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SUPERVISOR_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                os.close(ready_r)
                os._exit(self._worker(mask, ready_w, slot))
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(ready_w)
        os.set_blocking(ready_r, False)
        self.ready[pid] = ready_r
        self.pids[pid] = slot
        log.info("worker %d started (pid %d)", slot, pid)
        return pid

    def _worker(self, mask, ready_fd: int, slot: int = 0) -> int:
        """The child's side: serve until stopped; the exit status (never returns otherwise).
        ``CLOS_WEB_WORKER`` tells the worker its slot (metrics label their series with it)."""
        status = EXIT_FAILED
        os.environ["CLOS_WEB_WORKER"] = str(slot)
        try:
            signal.set_wakeup_fd(-1)
            for s in _SUPERVISOR_SIGNALS:
                signal.signal(s, signal.SIG_DFL)
            os.setpgid(0, 0)  # Ctrl-C reaches the supervisor only; it forwards one SIGTERM
            for fd in (*self._wake, self._alive[1], *self.ready.values()):
                os.close(fd)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            own = self.metrics_port + slot - 1 if self.metrics_port is not None else None
            status = _serve_worker(self.app, self.host, self.port, self._alive[0],
                                   self.worker_stop_timeout, ready_fd, own_port=own)
        except BaseException:
            traceback.print_exc()
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            except Exception:
                pass
        return status


def _serve_worker(app, host: str, port: int, alive_fd: int, stop_timeout: float,
                  ready_fd: int, own_port: int | None = None) -> int:
    """A worker's server: on the shared ``host:port`` (``SO_REUSEPORT``) and, with
    ``own_port``, on that port of its own too (the same loop and app: ``--metrics-port``).
    A port that cannot be had is one line on stderr and :data:`EXIT_CANNOT_LISTEN`.

    The worker's own port has ``SO_REUSEPORT`` too, although one worker holds it: in a rolling
    restart the new worker of a slot binds it while the old one still does (the supervisor
    stops the old one only once the new one runs), and both hold it until the old one's stop
    closes its listeners, a moment in which a scrape reaches either (both are that slot's).
    The other way, the new worker waiting for the port, would make it report ready before it
    holds the port, so a port another program took would be found only after the old worker
    was gone; this way the new worker fails at once and the roll is abandoned, the old one
    serving on.
    """
    server = Server(app, host, port, Limits(), reuse_port=True)
    try:
        server.bind()
    except OSError as e:
        print(f"clos_web: {_listen_error(host, port, e)}", file=sys.stderr, flush=True)
        return EXIT_CANNOT_LISTEN
    if own_port is not None:
        try:
            server.listen(host, own_port, reuse_port=True)
        except OSError as e:
            server.stop()  # (bound, never run: its sockets closed)
            print(f"clos_web: {_listen_error(host, own_port, e)}", file=sys.stderr, flush=True)
            return EXIT_CANNOT_LISTEN
    os.set_blocking(alive_fd, False)
    server.register(alive_fd, _SupervisorPipe(alive_fd, stop_timeout), EVENT_READ)
    server.call_soon_threadsafe(_say_ready, ready_fd)  # on the loop's first turn
    server.serve_forever(stop_on_signals=True, stop_timeout=stop_timeout)
    return 0


def _say_ready(fd: int) -> None:
    """Tell the supervisor this worker's loop runs on the shared port (one byte, then EOF)."""
    try:
        os.write(fd, b"\0")
    except OSError:
        pass
    os.close(fd)


@attrs.define
class _SupervisorPipe:
    """A worker's end of a pipe only the supervisor writes to: EOF means it is gone."""

    fd: int
    stop_timeout: float


@process_ready.dispatch
def process_ready_supervisor_pipe(ready: _SupervisorPipe, server: Loop, events):
    try:
        if os.read(ready.fd, 4096):
            return
    except BlockingIOError:
        return
    server.unregister(ready.fd)
    log.warning("worker pid %d: the supervisor is gone; stopping", os.getpid())
    server.stop(ready.stop_timeout)


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
