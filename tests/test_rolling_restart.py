"""A rolling restart: SIGHUP to the supervisor of ``python -m clos_web tests.scale_app:app
--workers 2 --redis URL`` replaces the workers one at a time while events are published and
subscribers (reconnecting with ``Last-Event-ID`` as EventSource does) read them.

Checked: the supervisor's pid is unchanged and every worker's pid changed; every subscriber
got every acknowledged (202) event exactly once, in order; nothing refused (503) came. Uses the
processes, clients and fixture of tests/test_scale_out.py; every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import threading
import time

from conftest import Reader, connect, wait_for
from redis_server import redis_server  # noqa: F401  (the fixture)
from test_scale_out import CHANNEL, GET_PID, check_ids, offset, scale  # noqa: F401


def post(sock, reader, data: str):
    body = data.encode()
    sock.sendall(f"POST /pub/{CHANNEL} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
                 f"Content-Type: text/plain\r\n\r\n".encode() + body)
    status, headers, answer = reader.read_response()
    return status, headers.get("connection") == "close", answer.decode()


def test_sighup_replaces_every_worker_one_at_a_time_with_no_event_lost(scale, tmp_path):
    proc = scale.proc
    before = scale.workers()
    chains = [[s] for s in scale.streams_on_each(least=3)]   # each subscriber's streams
    acked: dict[str, str] = {}
    refused: set[str] = set()
    unknown: set[str] = set()       # no answer (the connection closed under the request)
    errors: list = []
    stop = threading.Event()

    def publisher():
        sock = reader = None
        n = 0
        try:
            while not stop.is_set():
                if sock is None:
                    try:
                        sock = connect(scale.port, 10)
                    except OSError:
                        time.sleep(0.05)
                        continue
                    reader = Reader(sock)
                n += 1
                data = f"e{n}"
                try:
                    status, closing, body = post(sock, reader, data)
                except (OSError, EOFError):
                    unknown.add(data)
                    sock.close()
                    sock = None
                    continue
                if status == 202:
                    acked[data] = body
                else:
                    assert status == 503, (status, body)
                    refused.add(data)
                if closing:          # a draining worker's last answer on this connection
                    sock.close()
                    sock = None
                time.sleep(0.01)
        except BaseException as e:
            errors.append(e)
        finally:
            if sock is not None:
                sock.close()

    def resume_ended() -> None:
        """Reconnect each subscriber whose stream ended, from the last id it saw."""
        for chain in chains:
            s = chain[-1]
            if s.ended.is_set():
                last = next((c.last_id for c in reversed(chain) if c.last_id), None)
                for _ in range(50):
                    try:
                        chain.append(scale.stream(last_id=last))
                        break
                    except (OSError, EOFError):
                        time.sleep(0.05)
                else:
                    raise AssertionError("could not reconnect in 50 tries")
                s.close()

    thread = threading.Thread(target=publisher, daemon=True)
    thread.start()
    try:
        for chain in chains:
            chain[0].wait(lambda s: len(s.events) >= 5 or errors, 10, "5 events")
        assert not errors, errors
        os.kill(proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 60
        while True:
            resume_ended()
            now = scale.workers()
            if len(now) == 2 and not now & before:
                break
            assert proc.poll() is None, "the supervisor exited on SIGHUP"
            assert time.monotonic() < deadline, f"workers {now}, before {before}"
            time.sleep(0.05)
        flowing = len(acked)
        wait_for(lambda: (resume_ended(), len(acked) >= flowing + 50 or errors)[1], 20)
        assert thread.is_alive(), errors
    finally:
        stop.set()
        thread.join(10)
    assert not errors, errors
    resume_ended()
    last_id, last = scale.publish_until_accepted("last")
    acked[last] = last_id
    for chain in chains:
        chain[-1].wait_for_id(last_id, 20)

    after = scale.workers()
    assert proc.poll() is None
    assert len(after) == 2 and not after & before          # every worker pid changed
    assert int((tmp_path / "supervisor.pid").read_text()) == proc.pid   # the supervisor's not
    assert any(len(chain) > 1 for chain in chains)          # streams did end and resume
    log = (tmp_path / "err").read_text()
    assert "rolling restart" in log and "abandoned" not in log and "killing" not in log, log

    order = list(acked)                                     # publish order (one thread)
    for chain in chains:
        events = [e for s in chain for e in s.events]
        assert all(kind == "message" for kind, _, _ in events), events
        got = [data for _, data, _ in events]
        assert len(got) == len(set(got)), "an event was delivered twice"
        check_ids([i for _, _, i in events])                # offsets 1..N, no gap, in order
        assert not refused & set(got), sorted(refused & set(got))
        assert set(got) <= set(acked) | unknown
        assert [d for d in got if d in acked] == order      # every 202'd event, in order
        for data, eid in zip(got, (i for _, _, i in events)):
            if data in acked:
                assert acked[data] == eid
