"""The SSE wire format as bytes, checked against a reference parser written from the WHATWG
algorithm ("Server-sent events", section 9.2.6, "Interpreting an event stream"); no sockets."""

from __future__ import annotations

import codecs
import re

import pytest
from hypothesis import given, settings, strategies as st

from clos_web.push import sse
from clos_web.push import Channels, Event, Message, encode_event


class SSEParser:
    """An incremental event-stream parser following the WHATWG algorithm step by step.

    ``feed(bytes)`` any split of the stream; dispatched events land in ``events`` as dicts
    ``{"type", "data", "id"}`` (``id`` is the last event ID string at dispatch), comments in
    ``comments``, and the latest ``retry:`` value in ``retry``. ``ignored`` counts the blank
    lines that dispatched nothing (no data): a browser fires no event for them, but clients such
    as httpx-sse report each one as an empty event, so a stream must not send any.
    """

    def __init__(self):
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.pending = ""          # text not yet ended by a line terminator
        self.started = False       # BOM handling happens once, at the start
        self.skip_lf = False       # the previous chunk ended with CR: a leading LF is its pair
        self.data = ""
        self.event_type = ""
        self.last_id_buffer = ""
        self.last_id = ""
        self.retry = None
        self.events = []
        self.comments = []
        self.ignored = 0

    def feed(self, data: bytes) -> None:
        text = self.decoder.decode(data)
        if not self.started and text:
            self.started = True
            if text.startswith("\ufeff"):
                text = text[1:]
        if self.skip_lf and text:
            self.skip_lf = False
            if text.startswith("\n"):
                text = text[1:]
        text = self.pending + text
        # Lines end with CRLF, LF or CR; a CR at the very end may be the first half of a CRLF.
        lines = re.split(r"\r\n|\n|\r", text)
        self.pending = lines.pop()
        if text.endswith("\r") and not text.endswith("\r\n"):
            self.skip_lf = True
        for line in lines:
            self._line(line)

    def _line(self, line: str) -> None:
        if line == "":
            self._dispatch()
            return
        if line.startswith(":"):
            self.comments.append(line[1:])
            return
        if ":" in line:
            field, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
        else:
            field, value = line, ""
        if field == "event":
            self.event_type = value
        elif field == "data":
            self.data += value + "\n"
        elif field == "id":
            if "\0" not in value:
                self.last_id_buffer = value
        elif field == "retry":
            if value and all(c in "0123456789" for c in value):
                self.retry = int(value)
        # any other field is ignored

    def _dispatch(self) -> None:
        self.last_id = self.last_id_buffer
        if self.data == "":
            self.event_type = ""
            self.ignored += 1
            return
        data = self.data[:-1] if self.data.endswith("\n") else self.data
        self.events.append({"type": self.event_type or "message", "data": data,
                            "id": self.last_id})
        self.data = ""
        self.event_type = ""


def dechunk(data: bytes) -> tuple:
    """Decode HTTP/1.1 chunked framing: ``(payload, complete)``; ``complete`` once the last
    chunk was seen."""
    out = bytearray()
    pos = 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            return bytes(out), False
        size = int(data[pos:end], 16)
        if size == 0:
            return bytes(out), True
        out += data[end + 2:end + 2 + size]
        assert data[end + 2 + size:end + 4 + size] == b"\r\n"
        pos = end + 4 + size


def parse(data: bytes, splits=()) -> SSEParser:
    parser = SSEParser()
    pos = 0
    for cut in sorted(splits):
        parser.feed(data[pos:cut])
        pos = cut
    parser.feed(data[pos:])
    return parser


def normalise(text: str) -> str:
    return re.sub(r"\r\n|\r", "\n", text)


# A field value may not contain CR or LF; an id may not contain NUL either.
field_text = st.text(st.characters(blacklist_characters="\r\n\0", blacklist_categories=("Cs",)))
data_text = st.text(st.characters(blacklist_categories=("Cs",)))
# Data rich in line terminators of every kind.
line_soup = st.lists(st.sampled_from(["a", "é", "日本", " ", ":", "\r", "\n", "\r\n", "data: x",
                                      "\ufeff", ""]), max_size=20).map("".join)


@settings(max_examples=300, deadline=None)
@given(data=st.one_of(data_text, line_soup), event=st.none() | field_text,
       id=st.none() | field_text, retry=st.none() | st.integers(0, 10 ** 9))
def test_encode_round_trips_through_the_reference_parser(data, event, id, retry):
    wire = sse.encode(data, event, id, retry)
    wire.decode("utf-8")  # UTF-8, always
    parser = parse(wire)
    assert parser.events == [{"type": event or "message", "data": normalise(data),
                              "id": id or ""}]
    assert parser.retry == retry


@settings(max_examples=200, deadline=None)
@given(events=st.lists(st.tuples(st.one_of(data_text, line_soup), st.none() | field_text),
                       min_size=1, max_size=8),
       cuts=st.lists(st.integers(0, 10_000), max_size=12))
def test_a_stream_of_events_parses_the_same_however_it_is_split(events, cuts):
    wire = sse.comment("ok") + sse.retry_field(1500) + b"".join(
        sse.encode(data, event, f"e-{i}") for i, (data, event) in enumerate(events))
    whole = parse(wire)
    split = parse(wire, [c % (len(wire) + 1) for c in cuts])
    expected = [{"type": event or "message", "data": normalise(data), "id": f"e-{i}"}
                for i, (data, event) in enumerate(events)]
    assert whole.events == expected
    assert split.events == expected
    assert whole.comments == split.comments == [" ok"]
    assert whole.retry == split.retry == 1500


def _old_wire(retry, items, beats):
    """The stream as it was sent before: ``retry:`` and each heartbeat as its own block."""
    out = sse.comment("ok") + b"retry: %d\n\n" % retry
    for i, (data, event) in enumerate(items):
        out += b": ping\n\n" * beats[i] + sse.encode(data, event, f"e-{i}")
    return out + b": ping\n\n" * beats[len(items)]


def _new_wire(retry, items, beats):
    out = sse.preamble(retry)
    for i, (data, event) in enumerate(items):
        out += sse.HEARTBEAT * beats[i] + sse.encode(data, event, f"e-{i}")
    return out + sse.HEARTBEAT * beats[len(items)]


@settings(max_examples=200, deadline=None)
@given(items=st.lists(st.tuples(st.one_of(data_text, line_soup), st.none() | field_text),
                      max_size=6),
       beats=st.lists(st.integers(0, 3), min_size=7, max_size=7),
       retry=st.integers(0, 10 ** 6), cuts=st.lists(st.integers(0, 10_000), max_size=12))
def test_preamble_and_heartbeats_dispatch_nothing_and_browsers_see_the_same_stream(
        items, beats, retry, cuts):
    """The preamble and the heartbeats are lines with no blank line after them: a WHATWG parser
    sees exactly the events, ids and retry it saw when each was its own block, and no blank line
    ever ends a block without data (which httpx-sse would report as an empty event)."""
    new = _new_wire(retry, items, beats)
    old = parse(_old_wire(retry, items, beats))
    for parser in (parse(new), parse(new, [c % (len(new) + 1) for c in cuts])):
        assert parser.events == old.events
        assert parser.retry == old.retry == retry
        assert parser.last_id == old.last_id
        assert parser.comments == old.comments
        assert parser.ignored == 0
    assert b"\n\n" not in sse.preamble(retry) + sse.HEARTBEAT


def test_the_retry_line_is_applied_before_any_event_arrives():
    parser = parse(sse.preamble(1500) + sse.HEARTBEAT)
    assert parser.retry == 1500 and parser.events == [] and parser.ignored == 0
    assert parser.comments == [" ok", " ping"]


def test_each_line_of_a_multi_line_payload_is_one_data_line_whatever_the_terminator():
    assert sse.encode_body("a\nb\r\nc\rd") == b"data: a\ndata: b\ndata: c\ndata: d\n\n"
    assert sse.encode_body("trailing\n") == b"data: trailing\ndata: \n\n"
    assert sse.encode_body("") == b"data: \n\n"
    assert parse(sse.encode_body("")).events == [{"type": "message", "data": "", "id": ""}]


def test_field_order_and_names_follow_the_spec():
    assert sse.encode("x", "move", "k-1", 2500) == \
        b"id: k-1\nretry: 2500\nevent: move\ndata: x\n\n"
    assert sse.comment("ping") == b": ping\n"
    assert sse.comment("") == b":\n"


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\r\nb"])
def test_cr_or_lf_in_an_id_or_event_type_is_refused(bad):
    with pytest.raises(ValueError):
        sse.encode("x", event=bad)
    with pytest.raises(ValueError):
        sse.encode("x", id=bad)


def test_nul_in_an_id_is_refused():
    with pytest.raises(ValueError):
        sse.encode("x", id="a\0b")


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_chunk_framing_round_trips(raw):
    assert dechunk(sse.chunk(raw) + sse.LAST_CHUNK) == (raw, True)


def test_published_events_are_encoded_once_with_a_short_ascii_monotonic_id():
    registry = Channels()
    ids = [registry.publish("c", f"m{i}") for i in range(5)]
    events = registry.events("c")
    assert [e.id for e in events] == ids
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    for e in events:
        assert isinstance(e, Event)
        assert e.id.isascii() and len(e.id) <= 12
        assert e.chunk == sse.chunk(e.raw)
        assert parse(e.raw).events == [{"type": "message", "data": e.data, "id": e.id}]
        with pytest.raises(AttributeError):
            e.raw = b""  # frozen: shared by every subscriber


def test_encode_event_methods_decide_the_wire_form():
    import attrs

    @attrs.define
    class Moved:
        card: str
        to: int

    assert encode_event("hi") == (None, "hi")
    assert encode_event("é".encode()) == (None, "é")
    assert encode_event({"a": [1, "é"]}) == (None, '{"a":[1,"é"]}')
    assert encode_event(Moved("QS", 3)) == ("Moved", '{"card":"QS","to":3}')
    assert encode_event(Message({"x": 1}, "tick")) == ("tick", '{"x":1}')
    with pytest.raises(TypeError):
        encode_event(object())
