"""Scale-out, black box: ``python -m clos_web tests.scale_app:app --workers 2 --redis URL`` as
real processes, a real ``redis-server``, clients on real sockets.

The contract checked: every worker delivers every event stored in Redis to its subscribers;
event ids are ``EPOCH-OFFSET`` per channel (offsets 1, 2, 3 ...); ``POST /pub`` answers ``202``
with the event id once Redis stored it and ``503`` (never ``202``) when it could not, and a 503'd
event never reaches a subscriber; a client resuming with ``Last-Event-ID`` on any worker gets
exactly the events after it, in order, then live ones, or ``reset`` first when Redis lost the
channel. A stream whose ``200`` head has arrived is subscribed: it gets every event stored after.

Which worker a connection reached is learnt on that connection: ``GET /pid`` first, then the
``/pub`` or ``/sub`` request on the same keep-alive connection (SO_REUSEPORT picks the worker
per connection). Subscribers are a small raw-socket SSE reader (WHATWG parsing: an event is
dispatched at a blank line when it has data, its id is the last ``id:`` seen), one thread each.

Every process started here (supervisor, workers, Redis) is killed at teardown; every wait has a
bound. Without ``redis-server`` the tests skip.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import ROOT, Reader, connect, wait_for
from redis_server import redis_server  # noqa: F401  (the fixture)
from test_cli import GET_PID, PY, children, env, free_port, kill_all, pids_served, serving

CHANNEL = "room"

# --------------------------------------------------------------------------------------------
# Clients


def offset(event_id: str) -> int:
    """The OFFSET of an ``EPOCH-OFFSET`` id."""
    epoch, sep, number = event_id.rpartition("-")
    assert sep and epoch and number.isdigit(), f"not EPOCH-OFFSET: {event_id!r}"
    return int(number)


def epoch(event_id: str) -> str:
    return event_id.rpartition("-")[0]


class Stream:
    """One SSE subscriber: a new connection, ``GET /pid`` (``pid``: the worker it reached), then
    ``GET /sub/NAME`` (with ``Last-Event-ID`` when ``last_id`` is given) on the same connection.
    A thread reads the chunked body: ``events`` collects ``(type, data, id)``, ``pings`` counts
    heartbeat comments, ``ended`` is set when the stream ends (final chunk, EOF or reset)."""

    def __init__(self, port: int, name: str = CHANNEL, last_id: str | None = None,
                 timeout: float = 10.0):
        self.name = name
        self.sock = connect(port, timeout)
        try:
            reader = Reader(self.sock)
            self.sock.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
            status, _, body = reader.read_response()
            assert status == 200, (status, body)
            self.pid = int(body)
            extra = f"Last-Event-ID: {last_id}\r\n" if last_id is not None else ""
            self.sock.sendall(f"GET /sub/{name} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
            status, headers = reader.read_head()
            assert status == 200, status
            assert headers.get("transfer-encoding") == "chunked", headers
            assert headers.get("content-type", "").startswith("text/event-stream"), headers
        except BaseException:
            self.sock.close()
            raise
        self.sock.settimeout(30)  # heartbeats come every second; 30 s of silence is a failure
        self.events: list[tuple[str, str, str | None]] = []
        self.pings = 0
        self.error: BaseException | None = None
        self.ended = threading.Event()
        self.changed = threading.Condition()
        self._chunked = bytearray(reader.data)
        self._text = bytearray()
        self._last_id: str | None = None
        self._type = ""
        self._data: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def __repr__(self) -> str:
        return f"<Stream pid={self.pid} {len(self.events)} events>"

    @property
    def last_id(self) -> str | None:
        return self._last_id

    @property
    def data(self) -> list[str]:
        return [data for kind, data, _ in self.events if kind == "message"]

    def _run(self) -> None:
        try:
            if self._decode():
                return
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return
                self._chunked += chunk
                if self._decode():
                    return
        except OSError as e:  # reset by a killed worker, or closed by close()
            if not isinstance(e, (ConnectionResetError, BrokenPipeError)) and \
                    not self.ended.is_set():
                self.error = e
        finally:
            with self.changed:
                self.ended.set()
                self.changed.notify_all()

    def _decode(self) -> bool:
        """Take whole chunks off the buffer; True at the final (empty) chunk."""
        buf = self._chunked
        while True:
            end = buf.find(b"\r\n")
            if end < 0:
                return False
            size = int(bytes(buf[:end]).split(b";")[0], 16)
            if size == 0:
                return True
            if len(buf) < end + 2 + size + 2:
                return False
            self._text += buf[end + 2:end + 2 + size]
            del buf[:end + 2 + size + 2]
            self._parse()

    def _parse(self) -> None:
        text = self._text
        while True:
            end = text.find(b"\n")
            if end < 0:
                return
            line = bytes(text[:end]).rstrip(b"\r").decode("utf-8")
            del text[:end + 1]
            if not line:
                if self._data:
                    with self.changed:
                        self.events.append((self._type or "message", "\n".join(self._data),
                                            self._last_id))
                        self.changed.notify_all()
                self._type, self._data = "", []
                continue
            if line.startswith(":"):
                if line == ": ping":
                    with self.changed:
                        self.pings += 1
                        self.changed.notify_all()
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "id" and "\0" not in value:
                self._last_id = value
            elif field == "event":
                self._type = value
            elif field == "data":
                self._data.append(value)

    def wait(self, predicate, timeout: float = 10.0, what: str = "") -> None:
        """Wait until ``predicate(self)`` (checked on every event, ping and the end)."""
        with self.changed:
            if not self.changed.wait_for(lambda: predicate(self), timeout):
                raise AssertionError(f"{self!r} (ended={self.ended.is_set()}, error="
                                     f"{self.error!r}): not {what or predicate} in {timeout} s;"
                                     f" got {self.events[-5:]}")

    def wait_for_id(self, event_id: str, timeout: float = 15.0) -> None:
        self.wait(lambda s: any(e[2] == event_id for e in s.events), timeout,
                  f"event {event_id}")

    def close(self) -> None:
        self.ended.set()  # what follows is our doing, not an error
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5)


class Conn:
    """A keep-alive connection to one worker (``pid``), for ``POST /pub`` and ``GET``."""

    def __init__(self, port: int, timeout: float = 10.0):
        self.sock = connect(port, timeout)
        self.reader = Reader(self.sock)
        status, _, body = self.request(GET_PID.replace(b"Connection: close\r\n", b""))
        assert status == 200
        self.pid = int(body)

    def request(self, data: bytes):
        self.sock.sendall(data)
        return self.reader.read_response()

    def get(self, path: str):
        return self.request(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())

    def post(self, name: str, data: str):
        """``(status, body text)`` of ``POST /pub/name``."""
        body = data.encode()
        status, headers, answer = self.request(
            f"POST /pub/{name} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
            f"Content-Type: text/plain\r\n\r\n".encode() + body)
        if status == 202:
            assert headers.get("content-type", "").startswith("text/plain"), headers
        return status, answer.decode()

    def close(self) -> None:
        self.sock.close()


# --------------------------------------------------------------------------------------------
# The processes


class Cluster:
    """The supervisor ``proc`` serving tests/scale_app.py on ``port`` with 2 workers over
    ``redis``. Streams and connections opened through it are closed at teardown."""

    def __init__(self, proc, port: int, redis):
        self.proc, self.port, self.redis = proc, port, redis
        self.seen: set[int] = set()
        self.opened: list = []

    def workers(self) -> set[int]:
        now = children(self.proc.pid)
        self.seen |= now
        return now

    def stream(self, name: str = CHANNEL, last_id: str | None = None) -> Stream:
        s = Stream(self.port, name, last_id)
        self.opened.append(s)
        return s

    def streams_on_each(self, name: str = CHANNEL, least: int = 1, tries: int = 60):
        """New streams until every worker has ``least`` of them (``tries`` at most)."""
        pids = self.workers()
        streams = []
        for _ in range(tries):
            streams.append(self.stream(name))
            if all(sum(s.pid == p for s in streams) >= least for p in pids):
                return streams
        raise AssertionError(f"{tries} connections did not reach every worker: "
                             f"{[s.pid for s in streams]} vs {pids}")

    def conn(self, pid: int | None = None, tries: int = 60) -> Conn:
        """A connection to worker ``pid`` (any worker when None). A connection refused or
        reset (it reached a worker as it died) is tried again."""
        error = None
        for _ in range(tries):
            try:
                c = Conn(self.port)
            except (OSError, EOFError) as e:
                error = e
                time.sleep(0.05)
                continue
            self.opened.append(c)
            if pid is None or c.pid == pid:
                return c
            c.close()
        raise AssertionError(f"{tries} connections did not reach worker {pid} ({error!r})")

    def conns(self) -> list[Conn]:
        """One connection to each worker."""
        return [self.conn(pid) for pid in sorted(self.workers())]

    def publish(self, conns: list[Conn], items, name: str = CHANNEL) -> list[str]:
        """Publish each of ``items`` through ``conns`` in turn; each must be a 202; the ids."""
        ids = []
        for i, data in enumerate(items):
            status, body = conns[i % len(conns)].post(name, data)
            assert status == 202, (data, status, body)
            ids.append(body)
        return ids

    def publish_until_accepted(self, data: str, name: str = CHANNEL, timeout: float = 20.0,
                               refused: list | None = None) -> str:
        """Publish ``data`` (a new suffix per try) on new connections until one is a 202
        (503s are fine meanwhile, and are added to ``refused``); its event id and data."""
        deadline = time.monotonic() + timeout
        n = 0
        while True:
            n += 1
            item = f"{data}#{n}"
            c = self.conn()
            try:
                status, body = c.post(name, item)
            except (OSError, EOFError):
                status, body = None, ""
            c.close()
            if status == 202:
                return body, item
            assert status in (503, None), (status, body)
            if status == 503 and refused is not None:
                refused.append(item)
            assert time.monotonic() < deadline, f"no 202 within {timeout} s (last {status})"
            time.sleep(0.1)

    def until_each_accepts(self, prefix: str, refused: list | None = None,
                           timeout: float = 20.0) -> list:
        """After Redis was away: publish through each worker in turn (new connections: a 503
        may close one) until it answers 202; each worker's client reconnects on its own
        (backoff with jitter), so 503s come meanwhile (added to ``refused``). ``[(id,
        data)]``, one per worker, in the order published."""
        accepted = []
        for pid in sorted(self.workers()):
            deadline = time.monotonic() + timeout
            n = 0
            while True:
                n += 1
                item = f"{prefix}-{pid}-{n}"
                try:
                    status, body = self.conn(pid).post(CHANNEL, item)
                except (OSError, EOFError):
                    status, body = None, ""
                if status == 202:
                    accepted.append((body, item))
                    break
                assert status in (503, None), (status, body)
                if status == 503 and refused is not None:
                    refused.append(item)
                assert time.monotonic() < deadline, f"worker {pid}: no 202 within {timeout} s"
                time.sleep(0.1)
        return accepted

    def close(self) -> None:
        for thing in self.opened:
            thing.close()


@pytest.fixture
def scale(redis_server, tmp_path):  # noqa: F811
    """2 workers of tests/scale_app.py over a fresh Redis; all killed at teardown."""
    port = free_port()
    pid_file = tmp_path / "supervisor.pid"
    out, err = tmp_path / "out", tmp_path / "err"
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen(
            [PY, "-m", "clos_web", "tests.scale_app:app", "--workers", "2", "--redis",
             redis_server.url, "--port", str(port), "--pid-file", str(pid_file)],
            cwd=ROOT, env=env(), stdout=o, stderr=e, stdin=subprocess.DEVNULL)
    cluster = Cluster(proc, port, redis_server)
    try:
        wait_for(lambda: proc.poll() is not None or
                 (len(cluster.workers()) == 2 and pid_file.exists()), timeout=20)
        assert proc.poll() is None, err.read_text()
        wait_for(serving(port, GET_PID), timeout=20, interval=0.05)
        workers = cluster.workers()
        assert pids_served(port, workers) == workers, "SO_REUSEPORT spreads connections"
        yield cluster
    finally:
        cluster.close()
        kill_all(proc, cluster.seen | (children(proc.pid) if proc.poll() is None else set()))


def check_ids(ids: list[str], first: int = 1) -> None:
    """One epoch, offsets ``first``, ``first + 1``, ... with no gap."""
    assert len({epoch(i) for i in ids}) == 1, ids
    assert [offset(i) for i in ids] == list(range(first, first + len(ids))), ids


# --------------------------------------------------------------------------------------------
# 1. Every worker delivers every event, in order


def test_subscribers_on_every_worker_get_every_event_in_order(scale):
    streams = scale.streams_on_each(least=2)
    while len(streams) < 20:
        streams.append(scale.stream())
    conns = scale.conns()
    # UTF-8 and multi-line data come back as published (one data: line per line)
    items = [f"event-{n}" if n % 10 else f"event-{n} \u00e9\u2713\nsecond line\n third"
             for n in range(1, 51)]
    ids = scale.publish(conns, items)            # alternating: half through each worker
    check_ids(ids)
    for s in streams:
        s.wait_for_id(ids[-1])
    for s in streams:
        assert [e[0] for e in s.events] == ["message"] * 50, s.events[:3]
        assert s.data == items, (s.pid, s.data)
        assert [e[2] for e in s.events] == ids
        assert not s.ended.is_set()


# --------------------------------------------------------------------------------------------
# 2. A worker killed while events flow


def test_a_killed_workers_subscribers_resume_elsewhere_with_nothing_lost_or_repeated(scale):
    streams = scale.streams_on_each(least=3)
    conns = scale.conns()
    acked: dict[str, str] = {}      # data -> id, answered 202
    refused: set[str] = set()       # answered 503
    unknown: set[str] = set()       # no answer (the worker died under the request)
    errors: list = []
    stop = threading.Event()

    def publisher():
        try:
            n = 0
            while not stop.is_set():
                n += 1
                data = f"e{n}"
                i = n % len(conns)
                try:
                    status, body = conns[i].post(CHANNEL, data)
                except (OSError, EOFError):
                    unknown.add(data)
                    conns[i] = scale.conn()          # whichever worker answers
                    continue
                if status == 202:
                    acked[data] = body
                else:
                    assert status == 503, (status, body)
                    refused.add(data)
                time.sleep(0.01)                     # pace: about 100 events a second
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=publisher, daemon=True)
    resumed: dict[Stream, Stream] = {}              # a killed worker's stream -> its successor
    thread.start()
    try:
        for s in streams:                            # every subscriber has a last id
            s.wait(lambda s: len(s.events) >= 5 or errors, 10, "5 events")
        assert not errors, errors
        victim = streams[0].pid
        os.kill(victim, signal.SIGKILL)
        on_victim = [s for s in streams if s.pid == victim]
        for s in on_victim:
            assert s.ended.wait(10), "the killed worker's stream did not end"
        # reconnect as EventSource does: the last id seen, whichever worker answers
        for s in on_victim:
            error = None
            for _ in range(50):
                try:
                    resumed[s] = scale.stream(last_id=s.last_id)
                    break
                except (OSError, EOFError) as e:     # it reached the dead worker's backlog
                    error = e
                    time.sleep(0.05)
            else:
                raise AssertionError(f"could not reconnect within 50 tries: {error!r}")
        wait_for(lambda: len(scale.workers()) == 2 and victim not in scale.workers(), 15)
        flowing = len(acked)
        wait_for(lambda: len(acked) >= flowing + 50 or not thread.is_alive(), 20)
        assert thread.is_alive(), errors             # events went on flowing after the kill
    finally:
        stop.set()
        thread.join(10)
    assert not errors, errors
    last_id, last = scale.publish_until_accepted("last")
    acked[last] = last_id
    finals = [s for s in streams if s.pid != victim] + list(resumed.values())
    for s in finals:
        s.wait_for_id(last_id, 20)
    history = {}                                     # each stream's events over its reconnect
    for s in streams:
        history[s] = list(s.events) + (resumed[s].events if s in resumed else [])
    for s in streams:
        if s not in resumed:
            assert not s.ended.is_set(), "a stream on the surviving worker ended"

    order = list(acked)                              # publish order (one thread, in turn)
    for s, events in history.items():
        assert all(kind == "message" for kind, _, _ in events), [e for e in events
                                                                 if e[0] != "message"]
        got = [data for _, data, _ in events]
        assert len(got) == len(set(got)), "an event was delivered twice"
        ids = [i for _, _, i in events]
        assert [offset(i) for i in ids] == sorted(set(offset(i) for i in ids)), "out of order"
        assert not refused & set(got), f"503'd events delivered: {sorted(refused & set(got))}"
        assert set(got) <= set(acked) | unknown, set(got) - set(acked) - unknown
        for data, eid in zip(got, ids):
            if data in acked:
                assert acked[data] == eid, (data, eid, acked[data])
    # every stream began with the same event (opened before publishing) and ends at the last
    reference = history[streams[0]]
    for s, events in history.items():
        assert events == reference, f"streams differ: {s.pid} vs {streams[0].pid}"
    check_ids([i for _, _, i in reference])          # offsets 1..N: every stored event came
    got = [data for _, data, _ in reference]
    assert [d for d in got if d in acked] == order   # every 202'd event, in publish order
    assert len(set(got) & set(acked)) == len(acked)


# --------------------------------------------------------------------------------------------
# 3. Redis unreachable: 503 fast, the rest keeps serving


def test_with_redis_frozen_publish_is_503_while_plain_requests_and_streams_go_on(scale):
    streams = scale.streams_on_each()
    conns = scale.conns()
    plain = scale.conns()
    before = scale.publish(conns, ["before-1", "before-2"])
    for s in streams:
        s.wait_for_id(before[-1])

    slow: list = []
    answers: list = []
    stop = threading.Event()

    def plaintext():
        try:
            while not stop.is_set():
                for c in plain:
                    started = time.monotonic()
                    status, _, body = c.get("/plaintext")
                    took = time.monotonic() - started
                    answers.append((c.pid, status, body, took))
                    if took >= 1.0:
                        slow.append((c.pid, took))
                time.sleep(0.05)
        except BaseException as e:
            slow.append(e)

    pings = [s.pings for s in streams]
    scale.redis.pause(30)                            # resumed below, or by itself in 30 s
    refused = []
    thread = threading.Thread(target=plaintext, daemon=True)
    thread.start()
    try:
        for c in conns:                              # each worker, one after the other
            for n in range(2):
                data = f"frozen-{c.pid}-{n}"
                started = time.monotonic()
                status, body = scale.conn(c.pid).post(CHANNEL, data)
                took = time.monotonic() - started
                assert status == 503, (status, body)  # never 202 for an event not stored
                assert took < 6.0, f"503 after {took:.1f} s"
                refused.append(data)
        for s, p in zip(streams, pings):             # heartbeats keep coming
            s.wait(lambda s, p=p: s.pings >= p + 2, 10, "2 more heartbeats")
        assert not any(s.ended.is_set() for s in streams), "a stream ended"
    finally:
        stop.set()
        thread.join(10)
        scale.redis.resume()
    assert not slow, f"/plaintext was slow or failed while Redis was frozen: {slow}"
    assert {pid for pid, *_ in answers} == {c.pid for c in plain}
    assert all(status == 200 and body == b"Hello, World!" for _, status, body, _ in answers)

    # thawed: each worker answers 202 again once its own Redis client is back (it reconnects
    # with backoff and jitter, so not both at once: 503s meanwhile), and what it took is
    # delivered
    firsts = [item for _, item in scale.until_each_accepts("thawed", refused)]
    after = scale.publish([scale.conn(c.pid) for c in conns], ["after-1", "after-2", "after-3"])
    for s in streams:
        s.wait_for_id(after[-1])
        assert not s.ended.is_set()
        assert s.data == ["before-1", "before-2", *firsts, "after-1", "after-2", "after-3"], \
            f"503'd events delivered, or 202'd ones missing: {s.data}"
        check_ids([e[2] for e in s.events])


# --------------------------------------------------------------------------------------------
# 4. Redis restarted empty: reset


def test_after_redis_restarts_empty_an_old_last_event_id_gets_reset_first(scale):
    s = scale.stream()
    conns = scale.conns()
    old = scale.publish(conns, ["old-1", "old-2", "old-3"])
    s.wait_for_id(old[-1])
    old_id = s.last_id
    assert old_id == old[-1]
    s.close()

    scale.redis.restart()                            # same port, nothing kept
    news = scale.until_each_accepts("new")           # each worker's client is back
    new_id = news[-1][0]
    assert epoch(new_id) != epoch(old_id), "the channel was lost: a new epoch"
    assert [offset(i) for i, _ in news] == list(range(1, len(news) + 1))

    resumed = scale.stream(last_id=old_id)
    resumed.wait(lambda s: len(s.events) >= 1, 10, "the reset event")
    kind, data, _ = resumed.events[0]
    assert kind == "reset", resumed.events
    assert data == new_id, "reset's data is the channel's last id"
    later = scale.publish(conns, ["later-1", "later-2", "later-3"])
    resumed.wait_for_id(later[-1])
    assert [e[0] for e in resumed.events] == ["reset", "message", "message", "message"], \
        resumed.events
    assert resumed.data == ["later-1", "later-2", "later-3"]
    assert [e[2] for e in resumed.events[1:]] == later
    check_ids([i for i, _ in news] + later)


# --------------------------------------------------------------------------------------------
# 5. Resume on the other worker


def test_resuming_on_the_other_worker_gets_exactly_the_missed_events_then_live_ones(scale):
    first = scale.stream()
    conns = scale.conns()
    items = [f"n{n}" for n in range(1, 18)]
    ids = scale.publish(conns, items[:10])
    first.wait(lambda s: len(s.events) >= 4, 10, "4 events")
    assert [e[1:] for e in first.events[:4]] == list(zip(items[:4], ids[:4]))
    first.close()
    ids += scale.publish(conns, items[10:15])

    for _ in range(60):                              # fresh connections until the other worker
        resumed = scale.stream(last_id=ids[3])
        if resumed.pid != first.pid:
            break
        resumed.close()
    else:
        raise AssertionError("60 connections all reached the same worker")
    resumed.wait_for_id(ids[14])
    assert resumed.data == items[4:15]               # exactly 5..15, in order
    ids += scale.publish(conns, items[15:])           # then live ones
    resumed.wait_for_id(ids[16])
    assert resumed.data == items[4:]
    assert [e[2] for e in resumed.events] == ids[4:]
    assert all(e[0] == "message" for e in resumed.events)
    check_ids(ids)
