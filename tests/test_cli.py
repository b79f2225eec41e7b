"""``python -m clos_web MODULE:APP`` and ``--workers N``: real processes, real sockets.

Every process a test starts is killed at teardown (the supervisor and the workers it forked);
every wait has a bound.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT, load_example, request, wait_for

PY = sys.executable
REDIS = "redis://127.0.0.1:1/0"  # nothing listens there; the apps below never connect
GET_PID = b"GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
GET_PLAIN = b"GET /plaintext HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"

PID_APP = '''
import os
from clos_web import App

SEEN_AT_IMPORT = os.environ.get("CLOS_WEB_REDIS", "")
app = App()

@app.get("/pid")
def pid():
    return str(os.getpid())

@app.get("/redis")
def redis():
    return SEEN_AT_IMPORT

def make():
    return app
'''


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def children(pid: int) -> set[int]:
    """The pids whose parent is ``pid`` (from /proc), zombies excluded."""
    out = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[1]) == pid:
            out.add(int(entry))
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def env(**extra) -> dict:
    base = {k: v for k, v in os.environ.items() if k != "CLOS_WEB_REDIS"}
    base["PYTHONPATH"] = str(ROOT)
    base.update(extra)
    return base


def run_cli(*args, cwd=ROOT, timeout=30, **extra_env):
    return subprocess.run([PY, "-m", "clos_web", *args], cwd=cwd, env=env(**extra_env),
                          capture_output=True, timeout=timeout)


@pytest.fixture
def spawn(tmp_path):
    """``spawn(argv, cwd=..., **env) -> Popen``; at teardown every process started, and every
    child it forked, is killed."""
    procs = []

    def start(argv, cwd=ROOT, **extra_env):
        n = len(procs)
        out = open(tmp_path / f"out{n}", "wb")
        err = open(tmp_path / f"err{n}", "wb")
        proc = subprocess.Popen(argv, cwd=cwd, env=env(**extra_env), stdout=out, stderr=err)
        proc.out_path, proc.err_path = tmp_path / f"out{n}", tmp_path / f"err{n}"
        out.close()
        err.close()
        proc.seen_children = set()
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        kill_all(proc, children(proc.pid) | proc.seen_children)


def kill_all(proc, kids) -> None:
    """SIGKILL a supervisor ``proc`` (and wait for it) and the worker pids ``kids``."""
    proc.kill()
    proc.wait(10)
    for kid in kids:
        try:
            os.kill(kid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def serving(port: int, data: bytes = GET_PLAIN):
    """A predicate: the server on ``port`` answers ``data`` with a 200."""

    def check():
        try:
            return request(port, data, timeout=2)[0] == 200
        except OSError:
            return False

    return check


def pids_served(port: int, want: set[int], tries: int = 400) -> set[int]:
    """GET /pid over new connections until every pid in ``want`` answered (or ``tries`` ran
    out); the pids seen."""
    seen = set()
    for _ in range(tries):
        status, _, body = request(port, GET_PID, timeout=5)
        assert status == 200
        seen.add(int(body))
        if want <= seen:
            break
    return seen


def stderr_lines(result) -> list[str]:
    return [line for line in result.stderr.decode().splitlines() if line.strip()]


# --------------------------------------------------------------------------------------------
# The command line itself


def test_help_lists_every_option():
    result = run_cli("--help", timeout=20)
    assert result.returncode == 0
    text = result.stdout.decode()
    for option in ("MODULE:APP", "--port", "--host", "--workers", "--redis", "--pid-file",
                   "--log-level", "--metrics-port"):
        assert option in text, option


@pytest.mark.parametrize("spec, words", [
    ("no_such_module_zz:app", ["no_such_module_zz"]),
    ("examples.hello:no_such_app", ["examples.hello", "no_such_app"]),
    ("examples.hello:HELLO", ["HELLO", "not an app"]),
    ("examples.hello:app()", ["app", "not callable"]),
    (":app", ["MODULE:APP"]),
])
def test_a_bad_module_app_is_one_line_and_exit_2(spec, words):
    result = run_cli(spec, "--port", str(free_port()))
    assert result.returncode == 2, result.stderr
    lines = stderr_lines(result)
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    for word in words:
        assert word in lines[0]


def test_a_port_in_use_is_one_line_and_exit_1():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_cli("examples.hello:app", "--port", str(port))
        assert result.returncode == 1, result.stderr
        lines = stderr_lines(result)
        assert len(lines) == 1 and "Traceback" not in lines[0], lines
        assert str(port) in lines[0] and "in use" in lines[0]
        many = run_cli("examples.hello:app", "--port", str(port), "--workers", "2",
                       CLOS_WEB_REDIS=REDIS)
        assert many.returncode == 1, many.stderr
        lines = [line for line in stderr_lines(many) if "in use" in line]
        assert len(lines) == 1 and str(port) in lines[0], many.stderr


def test_workers_without_a_broker_are_refused():
    result = run_cli("examples.hello:app", "--port", str(free_port()), "--workers", "2")
    assert result.returncode == 2
    lines = stderr_lines(result)
    assert len(lines) == 1 and "--redis" in lines[0] and "CLOS_WEB_REDIS" in lines[0], lines


def test_a_fixed_port_is_needed_for_workers():
    result = run_cli("examples.hello:app", "--port", "0", "--workers", "2", CLOS_WEB_REDIS=REDIS)
    assert result.returncode == 2
    assert len(stderr_lines(result)) == 1


def test_the_spec_forms(tmp_path, monkeypatch):
    from clos_web import cli

    (tmp_path / "pidapp.py").write_text(PID_APP)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = __import__("pidapp")
    assert cli.load_app("pidapp:app") is module.app
    assert cli.load_app("pidapp") is module.app                 # APP defaults to app
    assert cli.load_app("pidapp:make()") is module.app          # a factory, called
    from_file = cli.load_app(f"{tmp_path / 'pidapp.py'}:app")   # a file path works too
    assert type(from_file).__name__ == "App" and from_file is not module.app
    with pytest.raises(cli.CLIError) as info:
        cli.load_app("pidapp:nothing")
    assert info.value.code == 2 and "nothing" in str(info.value)


# --------------------------------------------------------------------------------------------
# One process


def test_one_process_serves_examples_hello_and_stops_on_sigterm(spawn, tmp_path):
    port = free_port()
    pid_file = tmp_path / "hello.pid"
    proc = spawn([PY, "-m", "clos_web", "examples.hello:app", "--port", str(port),
                  "--pid-file", str(pid_file)])
    wait_for(serving(port), timeout=15, interval=0.05)
    assert request(port, GET_PLAIN)[2] == b"Hello, World!"
    assert int(pid_file.read_text()) == proc.pid
    assert not children(proc.pid)                       # no supervisor, no workers
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    assert not pid_file.exists()
    assert proc.out_path.read_text().startswith(f"serving on http://127.0.0.1:{port}")


def test_hello_main_takes_the_same_flags(spawn, tmp_path, capsys):
    hello = load_example("hello")
    with pytest.raises(SystemExit) as info:                  # refused before serving anything
        hello.main(["--port", str(free_port()), "--workers", "2"])
    assert info.value.code == 2
    assert "--redis" in capsys.readouterr().err
    port = free_port()
    pid_file = tmp_path / "hello.pid"
    proc = spawn([PY, str(ROOT / "examples" / "hello.py"), "--port", str(port),
                  "--heartbeat", "1", "--pid-file", str(pid_file)])
    wait_for(serving(port), timeout=15, interval=0.05)
    assert int(pid_file.read_text()) == proc.pid
    proc.send_signal(signal.SIGINT)
    assert proc.wait(15) == 0
    assert not pid_file.exists()


def test_hello_main_with_redis_gives_its_channels_the_redis_broker(monkeypatch):
    from clos_web import cli
    from clos_web.push.redis_broker import RedisBroker

    hello = load_example("hello")
    monkeypatch.delenv("CLOS_WEB_REDIS", raising=False)
    served = []

    def fake_run(load, args):  # what cli.run does first, then load, no serving
        cli.use_redis(args.redis)
        served.append(load())
        return 0

    monkeypatch.setattr(cli, "run", fake_run)
    with pytest.raises(SystemExit):
        hello.main(["--heartbeat", "3"])
    assert served[-1] is hello.app and hello.channels.heartbeat == 3
    monkeypatch.setenv("CLOS_WEB_REDIS", "")  # monkeypatch restores the variable afterwards
    with pytest.raises(SystemExit):
        hello.main(["--redis", REDIS, "--workers", "2"])
    assert os.environ["CLOS_WEB_REDIS"] == REDIS
    # the channels made at import read the variable at their first use, not at import
    assert served[-1] is hello.app
    broker = hello.channels.backplane()
    assert isinstance(broker, RedisBroker) and broker.url == REDIS


# --------------------------------------------------------------------------------------------
# N workers under a supervisor


def start_workers(spawn, tmp_path, *extra, **extra_env):
    (tmp_path / "pidapp.py").write_text(PID_APP)
    port = free_port()
    pid_file = tmp_path / "sup.pid"
    proc = spawn([PY, "-m", "clos_web", "pidapp:app", "--port", str(port), "--workers", "2",
                  "--pid-file", str(pid_file), *extra], cwd=tmp_path, **extra_env)
    wait_for(lambda: len(children(proc.pid)) == 2 and pid_file.exists(), timeout=15)
    wait_for(serving(port, GET_PID), timeout=15, interval=0.05)
    proc.seen_children |= children(proc.pid)
    return proc, port, pid_file


def test_workers_share_the_port_restart_and_stop_on_sigterm(spawn, tmp_path):
    proc, port, pid_file = start_workers(spawn, tmp_path, CLOS_WEB_REDIS=REDIS)
    assert int(pid_file.read_text()) == proc.pid
    workers = children(proc.pid)
    assert len(workers) == 2 and proc.pid not in workers
    assert pids_served(port, workers) == workers          # SO_REUSEPORT spreads connections

    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    seen = {}

    def replaced():  # one reading of /proc: two workers, one of them new
        kids = seen["now"] = children(proc.pid)
        return len(kids) == 2 and victim not in kids and len(kids - workers) == 1

    wait_for(replaced, timeout=10)
    now = seen["now"]
    proc.seen_children |= now
    (replacement,) = now - workers
    assert pids_served(port, now) == now                   # the new one serves too
    assert proc.poll() is None

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    wait_for(lambda: not any(alive(pid) for pid in now), timeout=10)
    assert not pid_file.exists()
    log = proc.err_path.read_text()
    for pid in workers | now:
        assert f"pid {pid}" in log                          # one line per start and exit


def test_workers_exit_by_themselves_when_the_supervisor_is_killed(spawn, tmp_path):
    proc, port, _ = start_workers(spawn, tmp_path, CLOS_WEB_REDIS=REDIS)
    workers = children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    wait_for(lambda: not any(alive(pid) for pid in workers), timeout=15)
    with pytest.raises(OSError):
        request(port, GET_PID, timeout=2)                 # nobody keeps the port


def test_redis_flag_is_in_the_environment_before_the_app_is_imported(spawn, tmp_path):
    proc, port, _ = start_workers(spawn, tmp_path, "--redis", REDIS)
    for _ in range(10):
        status, _, body = request(port, b"GET /redis HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (status, body) == (200, REDIS.encode())


CRASHING_APP = '''
import os
from clos_web import App

app = App()
os.register_at_fork(after_in_child=lambda: os._exit(7))   # every worker dies at once
'''


def test_a_crash_loop_gives_up_and_exits_non_zero(spawn, tmp_path):
    (tmp_path / "crashapp.py").write_text(CRASHING_APP)
    proc = spawn([PY, "-m", "clos_web", "crashapp:app", "--port", str(free_port()),
                  "--workers", "2"], cwd=tmp_path, CLOS_WEB_REDIS=REDIS)
    started = time.monotonic()
    code = proc.wait(30)
    assert code != 0
    assert time.monotonic() - started < 25
    log = proc.err_path.read_text()
    assert "giving up" in log
    assert log.count("started") <= 2 * 5                  # a bounded number of restarts
