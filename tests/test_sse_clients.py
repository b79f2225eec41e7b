"""Real SSE clients nobody here wrote, over a real socket, against examples/hello.py's /sub and
/pub: ``httpx`` + ``httpx-sse`` and ``sseclient-py`` (test extras).

httpx-sse reports an event for every blank-line-terminated block, even one with no data (it
keeps the last id, so each heartbeat block would come out as an empty event repeating it), where
a browser fires nothing. These tests check that each client sees exactly the published events,
in order, with their ids: nothing after the preamble, nothing for heartbeats; and that resuming
with ``Last-Event-ID`` works with each.
"""

from __future__ import annotations

import threading
import urllib.request

import pytest

httpx = pytest.importorskip("httpx")
httpx_sse = pytest.importorskip("httpx_sse")
sseclient = pytest.importorskip("sseclient")

from conftest import load_example, wait_for  # noqa: E402


class _Reader:
    """Reads one SSE stream with a third-party client on a thread: ``events`` collects
    ``(type, data, id)``; ``pings`` counts the heartbeat comments seen in the raw bytes (so a
    test can wait for heartbeats rather than sleep). The server ends the stream
    (``channels.disconnect``); :meth:`join` waits for the reader to finish."""

    def __init__(self, url: str, last_id: str | None = None):
        self.events = []
        self.raw = b""
        self.error = None
        self.headers = {"Last-Event-ID": last_id} if last_id is not None else {}
        self.url = url
        self.opened = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.opened.wait(10), "the stream did not open"

    @property
    def pings(self) -> int:
        return self.raw.count(b": ping\n")

    def saw(self, raw: bytes) -> bytes:
        self.raw += raw
        return raw

    def _run(self):
        try:
            self.read()
        except Exception as exc:  # reported by join()
            self.error = exc
        finally:
            self.opened.set()

    def join(self, timeout: float = 10.0) -> list:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the client did not see the stream end"
        if self.error is not None:
            raise self.error
        return self.events


class HttpxSSE(_Reader):
    """``httpx_sse.connect_sse`` over an ``httpx.Client``."""

    def read(self):
        class Tee(httpx.SyncByteStream):
            def __init__(tee, stream):
                tee.stream = stream

            def __iter__(tee):
                for raw in tee.stream:
                    yield self.saw(raw)

            def close(tee):
                tee.stream.close()

        with httpx.Client(timeout=httpx.Timeout(10.0)) as client:
            with httpx_sse.connect_sse(client, "GET", self.url, headers=self.headers) as source:
                source.response.stream = Tee(source.response.stream)
                self.opened.set()
                for sse in source.iter_sse():
                    self.events.append((sse.event, sse.data, sse.id))


class SSEClientPy(_Reader):
    """``sseclient.SSEClient`` (sseclient-py) over ``urllib``'s response."""

    def read(self):
        request = urllib.request.Request(self.url, headers=self.headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            self.opened.set()

            def lines():
                for line in response:
                    yield self.saw(line)

            for event in sseclient.SSEClient(lines()).events():
                self.events.append((event.event, event.data, event.id))


CLIENTS = [HttpxSSE, SSEClientPy]


@pytest.fixture
def hello_push(serve):
    """examples/hello.py with a short heartbeat: ``(base_url, channels)``."""
    hello = load_example("hello")
    hello.channels.heartbeat = 0.2
    server = serve(hello.app)
    return f"http://127.0.0.1:{server.port}", hello.channels


def pub(base: str, name: str, data: str) -> str:
    response = httpx.post(f"{base}/pub/{name}", content=data.encode("utf-8"), timeout=5)
    assert response.status_code == 202
    return response.text


@pytest.mark.parametrize("client", CLIENTS, ids=lambda c: c.__name__)
def test_every_event_arrives_in_order_with_its_id_and_no_phantom_event(client, hello_push):
    base, channels = hello_push
    reader = client(f"{base}/sub/room")
    wait_for(lambda: channels.subscriber_count("room") == 1)
    sent = ["first", "", "two\nlines", "é 日本", "last before the heartbeats"]
    expected = [("message", data, pub(base, "room", data)) for data in sent]
    wait_for(lambda: len(reader.events) >= len(sent) or len(reader.events) > 9)
    # the heartbeat sweep runs about once a second: wait for a few heartbeats on the wire
    wait_for(lambda: reader.pings >= 3, timeout=10)
    expected.append(("message", "after", pub(base, "room", "after")))
    wait_for(lambda: len(reader.events) >= len(expected) or len(reader.events) > 20)
    channels.disconnect("room")
    assert reader.join() == expected
    assert reader.raw.startswith(b": ok\nretry: ")


@pytest.mark.parametrize("client", CLIENTS, ids=lambda c: c.__name__)
def test_resume_with_last_event_id_gets_exactly_the_missed_events(client, hello_push):
    base, channels = hello_push
    first = client(f"{base}/sub/resume")
    wait_for(lambda: channels.subscriber_count("resume") == 1)
    seen = [("message", data, pub(base, "resume", data)) for data in ["a", "b"]]
    wait_for(lambda: len(first.events) >= 2)
    channels.disconnect("resume")
    assert first.join() == seen
    wait_for(lambda: channels.subscriber_count("resume") == 0)
    missed = [("message", data, pub(base, "resume", data)) for data in ["c", "d", "e"]]
    again = client(f"{base}/sub/resume", last_id=seen[-1][2])
    wait_for(lambda: len(again.events) >= 3)
    live = ("message", "live", pub(base, "resume", "live"))
    wait_for(lambda: len(again.events) >= 4)
    channels.disconnect("resume")
    assert again.join() == missed + [live]


@pytest.mark.parametrize("client", CLIENTS, ids=lambda c: c.__name__)
def test_an_unknown_last_event_id_gets_a_reset_event_then_live_ones(client, hello_push):
    base, channels = hello_push
    latest = pub(base, "lost", "before")
    reader = client(f"{base}/sub/lost", last_id="from-another-life-7")
    wait_for(lambda: len(reader.events) >= 1)
    live = pub(base, "lost", "live")
    wait_for(lambda: len(reader.events) >= 2)
    channels.disconnect("lost")
    assert reader.join() == [("reset", latest, latest), ("message", "live", live)]
