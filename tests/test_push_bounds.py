"""Byte bounds of the push layer: history per channel and per registry (in bytes, counting what
an event really costs), catch-up and long-poll answers within the output cap, a channel registry
that anonymous clients cannot fill, and joins that register all their channels or none."""

from __future__ import annotations

import gc
import json
import threading
import tracemalloc

import pytest
from hypothesis import given, settings, strategies as st

from clos_web import Channels, HTTPError
from clos_web.push.channels import Subscription, _channel_size

from conftest import request, wait_for
from test_push import SSEClient, data_of, push  # noqa: F401 (push is a fixture)


def on_loop(server, fn):
    """Run ``fn()`` on ``server``'s loop thread and return its result."""
    box, done = [], threading.Event()
    server.call_soon_threadsafe(lambda: (box.append(fn()), done.set()))
    assert done.wait(5), "the loop did not run the call"
    return box[0]


def seq(event_id: str) -> int:
    return int(event_id.rsplit("-", 1)[1])


def kept_ids(registry) -> list:
    return sorted((e.id for name in registry.names() for e in registry.events(name)), key=seq)


def poll(server, path: str):
    status, headers, body = request(server, f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    return status, body


# --------------------------------------------------------------------------------------------
# History in bytes


def test_a_channels_history_is_bounded_in_bytes_and_its_oldest_events_go_first(push):
    server, registry, _ = push(history=10_000, history_bytes=64 * 1024)
    ids = [registry.publish("big", f"{i} " + "x" * 1000) for i in range(500)]
    kept = registry.events("big")
    assert sum(e.size for e in kept) == registry.channel("big").bytes <= 64 * 1024
    assert [e.id for e in kept] == ids[-len(kept):]      # the newest, with no hole
    for e in kept:                                       # raw + chunk + a fixed overhead
        assert e.size > len(e.raw) + len(e.chunk) + len(e.data)
    assert len(kept) < 64 * 1024 // 3000
    # a client behind the evicted events is told so; one within history gets exactly the rest
    client = SSEClient(server, "/sub/big", headers=[("Last-Event-ID", ids[0])])
    assert [(e["type"], e["id"]) for e in client.wait_events(1)] == [("reset", registry.last_id)]
    client.close()
    client = SSEClient(server, "/sub/big", headers=[("Last-Event-ID", kept[0].id)])
    assert [e["id"] for e in client.wait_events(len(kept) - 1)] == [e.id for e in kept[1:]]
    client.close()


def test_an_event_larger_than_the_channel_bound_is_sent_live_but_not_kept(push):
    server, registry, _ = push(history_bytes=4096)
    client = SSEClient(server, "/sub/huge")
    wait_for(lambda: registry.subscriber_count("huge") == 1)
    before = registry.publish("huge", "small")
    big = registry.publish("huge", "b" * 10_000)
    assert data_of(client.wait_events(2)) == ["small", "b" * 10_000]
    assert registry.events("huge") == [] and registry.channel("huge").bytes == 0
    client.close()
    again = SSEClient(server, "/sub/huge", headers=[("Last-Event-ID", before)])
    assert [(e["type"], e["data"]) for e in again.wait_events(1)] == [("reset", big)]
    again.close()


def test_the_registry_bounds_all_history_in_bytes_evicting_the_oldest_events_first():
    registry = Channels(history=10_000, history_bytes=1 << 20, max_bytes=256 * 1024)
    ids = [registry.publish(f"room-{i % 7}", f"{i} " + "y" * 2000) for i in range(700)]
    assert registry.used_bytes <= 256 * 1024
    kept = kept_ids(registry)
    assert kept == ids[-len(kept):] and len(kept) > 30   # the newest across every channel
    # a channel behind the registry's eviction replays nothing it cannot: reset
    assert registry.events("room-0", after=ids[0]) == registry.events("room-0")


def test_the_registry_bound_evicts_the_oldest_kept_event_even_behind_per_channel_evictions():
    registry = Channels(history=3)
    x1 = registry.publish("x", "x" * 1000)
    y1 = registry.publish("y", "y" * 1000)
    xs = [registry.publish("x", "x" * 1000) for _ in range(3)]   # x1 leaves x's history
    assert [e.id for e in registry.events("x")] == xs
    registry.max_bytes = registry.used_bytes
    registry.publish("z", "z")          # over the bound: the oldest kept event is y1, not x2
    assert y1 not in kept_ids(registry) and "y" not in registry
    assert [e.id for e in registry.events("x")] == xs and x1 not in kept_ids(registry)
    assert registry.used_bytes <= registry.max_bytes


def test_evicted_events_are_freed_however_many_pass_through_a_short_history():
    registry = Channels(history=3)
    for i in range(2000):
        registry.publish(f"c{i % 3}", "w" * 500)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(20_000):
            registry.publish(f"c{i % 3}", "w" * 500)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, grown   # 20,000 events of ~1.5 KB went through; 9 are kept
    assert registry.used_bytes < 32 * 1024                # 9 events and 3 channels


def test_channel_names_count_too_and_channels_left_without_history_are_dropped():
    registry = Channels(max_bytes=64 * 1024)
    for i in range(1000):
        registry.publish("n" * 2000 + str(i), "tiny")   # ~2 KB of name for 4 bytes of data
    assert registry.used_bytes <= 64 * 1024
    assert 3 < len(registry) < 32
    assert sorted(registry.names(), key=lambda n: int(n[2000:]))[-1] == "n" * 2000 + "999"


def test_the_accounted_cost_of_history_covers_its_real_memory():
    """What the registry counts is at least what history really takes (CPython's allocations,
    traced), and not wildly more."""
    names = [f"channel-{i}" for i in range(50)]
    payloads = ["", "plain ascii " * 20, "é" * 300, "日本" * 100, "🂡 " * 80, "a\nb\r\nc" * 30]
    gc.collect()
    tracemalloc.start()
    try:
        registry = Channels(history=100_000, history_bytes=1 << 30, max_bytes=1 << 30)
        before = tracemalloc.get_traced_memory()[0]
        for i in range(3000):
            registry.publish(names[i % 50], payloads[i % len(payloads)] + str(i))
        gc.collect()
        real = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert real <= registry.used_bytes <= 2 * real


class _StubServer:
    """Enough of a server for the registry's bookkeeping (fan-out is not under test here)."""

    _ident = None
    now = 0.0

    def add_sweeper(self, fn):
        pass

    def call_soon_threadsafe(self, fn, *args):
        pass


class _StubConn:
    def __init__(self, server):
        self.server = server


operations = st.lists(st.one_of(
    st.tuples(st.just("publish"), st.sampled_from("abcdef"), st.integers(0, 3000)),
    st.tuples(st.just("join"), st.lists(st.sampled_from("abcdef"), min_size=1, max_size=3)),
    st.tuples(st.just("leave"), st.integers(0, 10)),
), max_size=60)


@settings(max_examples=300, deadline=None)
@given(ops=operations, probes=st.lists(st.tuples(st.sampled_from("abcdef"), st.integers(0, 70)),
                                       min_size=1, max_size=8))
def test_the_bounds_hold_and_a_resume_gets_exactly_its_missed_events_or_a_reset(ops, probes):
    """Random publishes, joins and leaves against a small registry: every bound holds, the
    accounting adds up, a channel with a subscriber is never evicted, a refused join registers
    nothing, and resuming any channel from any position gives exactly the events published on
    it since, or a reset: never a silent gap."""
    registry = Channels(history=5, history_bytes=8000, max_bytes=30_000, max_channels=4)
    server = _StubServer()
    published = []  # (seq, channel, data)
    subs = []
    for op in ops:
        if op[0] == "publish":
            _, name, size = op
            try:
                eid = registry.publish(name, "p" * size)
            except HTTPError as err:
                assert err.status == 503
                assert all(registry.subscriber_count(n) for n in registry.names())
                continue
            published.append((seq(eid), name, "p" * size))
        elif op[0] == "join":
            before = {n: registry.subscriber_count(n) for n in "abcdef"}
            sub = Subscription(registry, _StubConn(server), list(op[1]))
            try:
                registry._join(sub, None)
            except HTTPError as err:
                assert err.status == 503
                assert {n: registry.subscriber_count(n) for n in "abcdef"} == before
                continue
            subs.append(sub)
        elif subs:
            sub = subs.pop(op[1] % len(subs))
            registry._remove(sub.conn, sub.names, server)
        # the bounds and the accounting
        names = registry.names()
        assert len(names) <= 4
        kept = {n: registry.events(n) for n in names}
        assert registry.used_bytes == sum(e.size for es in kept.values() for e in es) + sum(
            _channel_size(n) for n in names)
        assert registry.used_bytes <= 30_000 or not any(kept.values())
        for n, events in kept.items():
            assert len(events) <= 5 and sum(e.size for e in events) <= 8000
            assert registry.channel(n).bytes == sum(e.size for e in events)
        for sub in subs:
            assert all(n in registry for n in sub.names)   # never evicted under a subscriber
    epoch = registry.last_id.split("-")[0]
    for name, position in probes:
        position = min(position, len(published))
        with registry._lock:
            resets, events = registry._catch_up([name], f"{epoch}-{position}", 0.0)
        missed = [(q, n, d) for q, n, d in published if n == name and q > position]
        if resets:
            assert resets == [name] and events == []
        else:
            assert [(e.seq, e.channel, e.data) for e in events] == missed


# --------------------------------------------------------------------------------------------
# Catch-up within the output cap


CAP = 256 * 1024


@pytest.fixture
def backlog(push):
    """A server with a 256 KiB output cap and a channel with ~4.8 MB of history behind
    ``start``: ``(server, registry, start, ids)``."""
    server, registry, _ = push(limits={"output_cap": CAP}, history=100_000,
                               history_bytes=64 << 20, max_bytes=64 << 20)
    start = registry.last_id
    ids = [registry.publish("backlog", f"{i} " + "z" * 16_000) for i in range(300)]
    return server, registry, start, ids


def test_a_resumed_client_that_reads_nothing_holds_at_most_the_output_cap(backlog):
    server, registry, start, ids = backlog
    clients = [SSEClient(server, "/sub/backlog", headers=[("Last-Event-ID", start)],
                         rcvbuf=4096) for _ in range(5)]
    wait_for(lambda: registry.subscriber_count("backlog") == 5)
    queued = on_loop(server, lambda: [c.out_bytes for c in server.conns])
    assert len(queued) == 5 and max(queued) <= CAP, queued
    for c in clients:
        c.close()


def test_a_resumed_client_that_reads_gets_every_missed_event_or_a_reset_never_a_gap(backlog):
    server, registry, start, ids = backlog
    for behind in [1, 4, 7, 8, 9, 15, 16, 17, 40, 300]:
        last = ids[-behind - 1] if behind < len(ids) else start
        client = SSEClient(server, "/sub/backlog", headers=[("Last-Event-ID", last)])
        first = client.wait_events(1)[0]
        if first["type"] == "reset":
            assert first["id"] == registry.last_id and first["data"] == ids[-1]
            assert behind * 16_000 > CAP // 4        # only a backlog that does not fit
        else:
            got = client.wait_events(behind)
            assert [e["id"] for e in got] == ids[-behind:]
            assert behind <= 8                       # 128 KB fit: replayed exactly
        client.close()
        wait_for(lambda: registry.subscriber_count("backlog") == 0)
    # after a reset, live events follow with nothing lost
    client = SSEClient(server, "/sub/backlog", headers=[("Last-Event-ID", start)])
    assert client.wait_events(1)[0]["type"] == "reset"
    wait_for(lambda: registry.subscriber_count("backlog") == 1)
    live = registry.publish("backlog", "live")
    assert [(e["type"], e["id"]) for e in client.wait_events(2)][1] == ("message", live)
    client.close()


def test_a_long_poll_answer_fits_the_cap_and_the_client_polls_again_for_the_rest(backlog):
    server, registry, start, ids = backlog
    last, got, answers = start, [], 0
    while last != ids[-1]:
        status, body = poll(server, f"/poll/backlog?lastEventId={last}")
        assert status == 200 and len(body) <= CAP
        answer = json.loads(body)
        assert answer["events"] and all(e["event"] == "message" for e in answer["events"])
        assert answer["last_id"] == answer["events"][-1]["id"]
        got += answer["events"]
        last = answer["last_id"]
        answers += 1
        assert answers <= 300
    assert [e["id"] for e in got] == ids and answers > 1


def test_a_long_poll_event_larger_than_the_cap_is_answered_with_reset(push):
    server, registry, _ = push(limits={"output_cap": 64 * 1024})
    before = registry.publish("lp", "small")
    big = registry.publish("lp", "q" * 100_000)
    status, body = poll(server, f"/poll/lp?lastEventId={before}")
    assert status == 200 and len(body) < 64 * 1024
    assert json.loads(body) == {"events": [{"id": big, "event": "reset", "data": big}],
                                "last_id": big}
    # the same for a waiting poll woken by an oversized event
    result = {}
    waiter = threading.Thread(target=lambda: result.update(r=poll(
        server, f"/poll/lp?lastEventId={big}")))
    waiter.start()
    wait_for(lambda: registry.subscriber_count("lp") == 1)
    bigger = registry.publish("lp", "r" * 100_000)
    waiter.join(5)
    status, body = result["r"]
    assert status == 200 and len(body) < 64 * 1024
    assert json.loads(body)["events"] == [{"id": bigger, "event": "reset", "data": bigger}]


def test_an_oversized_event_in_a_multi_channel_poll_resets_its_channel_and_skips_nothing(push):
    server, registry, _ = push(limits={"output_cap": 64 * 1024})
    start = registry.publish("other", "start")
    big = registry.publish("a", "q" * 100_000)
    after = registry.publish("b", "after the big one")
    status, body = poll(server, f"/poll/a,b?lastEventId={start}")
    answer = json.loads(body)
    assert answer == {"events": [{"id": big, "event": "reset", "data": big}], "last_id": big}
    status, body = poll(server, f"/poll/a,b?lastEventId={big}")
    assert json.loads(body)["events"] == [{"id": after, "event": "message",
                                           "data": "after the big one"}]
    # a waiting poll woken by an oversized event: the next poll still gets what followed it
    result = {}
    waiter = threading.Thread(target=lambda: result.update(r=poll(
        server, f"/poll/a,b?lastEventId={after}")))
    waiter.start()
    wait_for(lambda: registry.subscriber_count() == 2)
    done = threading.Event()
    server.call_soon_threadsafe(lambda: (registry.publish("a", "r" * 100_000),
                                         registry.publish("b", "right after"), done.set()))
    assert done.wait(5)
    waiter.join(5)
    answer = json.loads(result["r"][1])
    assert [e["event"] for e in answer["events"]] == ["reset"]
    status, body = poll(server, f"/poll/a,b?lastEventId={answer['last_id']}")
    assert [e["data"] for e in json.loads(body)["events"]] == ["right after"]


def test_a_poll_behind_an_evicted_channel_resets_every_channel_it_missed_events_on(push):
    server, registry, _ = push(history=2)
    start = registry.publish("other", "start")
    registry.publish("b", "b1")
    for i in range(3):
        registry.publish("a", f"a{i}")       # a's first event leaves its history
    status, body = poll(server, f"/poll/a,b?lastEventId={start}")
    answer = json.loads(body)
    assert sorted(e["data"] for e in answer["events"]) == sorted(
        [registry.events("a")[-1].id, registry.events("b")[-1].id])
    assert {e["event"] for e in answer["events"]} == {"reset"}   # b1 is not silently skipped
    assert answer["last_id"] == registry.last_id


# --------------------------------------------------------------------------------------------
# The channel registry cannot be filled by anonymous clients


def test_idle_channels_holding_history_are_evicted_oldest_first_before_any_is_refused(push):
    server, registry, _ = push(max_channels=4)
    ids = {name: registry.publish(name, f"in {name}") for name in "abcd"}
    registry.publish("a", "a again")                  # a is now the most recently used
    registry.publish("e", "new")                      # full: the least recently used goes
    assert sorted(registry.names()) == ["a", "c", "d", "e"]
    # a client resuming on the evicted channel is told so: reset, never silence
    client = SSEClient(server, "/sub/b", headers=[("Last-Event-ID", ids["a"])])
    assert client.status == 200
    assert client.wait_events(1)[0]["type"] == "reset"
    assert sorted(registry.names()) == ["a", "b", "d", "e"]   # c made room for b
    # channels with subscribers are never evicted: once all have one, a new channel is refused
    others = [SSEClient(server, f"/sub/{name}") for name in "ade"]
    wait_for(lambda: registry.subscriber_count() == 4)
    with pytest.raises(HTTPError) as refused:
        registry.publish("f", "no room")
    assert refused.value.status == 503
    refused_stream = SSEClient(server, "/sub/f")
    assert refused_stream.status == 503
    refused_stream.close()
    status, body = request(server, b"GET /poll/f HTTP/1.1\r\nHost: t\r\n\r\n")[::2]
    assert status == 503 and b"channels" in body
    status = request(server, b"POST /pub/f HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx")[0]
    assert status == 503
    assert sorted(registry.names()) == ["a", "b", "d", "e"]
    # one subscriber leaves: its channel holds only history now, so it makes room
    others[0].close()
    wait_for(lambda: registry.subscriber_count("a") == 0)
    registry.publish("f", "room again")
    assert sorted(registry.names()) == ["b", "d", "e", "f"]
    for c in [client, *others[1:]]:
        c.close()


def test_a_refused_multi_channel_subscribe_leaves_nothing_registered(push):
    server, registry, app = push(max_channels=2)
    holder = SSEClient(server, "/sub/x,y")
    wait_for(lambda: registry.subscriber_count() == 2)
    refused = SSEClient(server, "/sub/x,z")
    assert refused.status == 503
    refused.close()
    status = request(server, b"GET /poll/x,z HTTP/1.1\r\nHost: t\r\n\r\n")[0]
    assert status == 503
    assert registry.subscriber_count("x") == 1 and registry.subscriber_count() == 2
    assert sorted(registry.names()) == ["x", "y"]
    registry.publish("x", "to the one subscriber")
    assert data_of(holder.wait_events(1)) == ["to the one subscriber"]
    holder.close()
    wait_for(lambda: registry.subscriber_count() == 0)


def test_joining_an_idle_channel_never_evicts_it_for_another_channel_of_the_same_join(push):
    server, registry, _ = push(max_channels=2)
    old = registry.publish("kept", "history")
    registry.publish("other", "history")
    # joining kept + new needs one slot: "other" goes, never "kept"
    client = SSEClient(server, "/sub/kept,new", headers=[("Last-Event-ID", registry.last_id)])
    wait_for(lambda: registry.subscriber_count() == 2)
    assert sorted(registry.names()) == ["kept", "new"]
    assert [e.id for e in registry.events("kept")] == [old]
    client.close()
