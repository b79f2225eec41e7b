"""The sans-I/O WebSocket protocol (RFC 6455) and permessage-deflate (RFC 7692), on bytes.

No sockets: frames are built as a client builds them, fed to a ``WebSocketProtocol`` split at
arbitrary points, and the events and the bytes it answers are checked. ``websockets`` (its
sans-I/O layer) is the reference: it encodes the client's frames (masks, fragments, deflate) and
parses what we send, so both directions are checked against an independent implementation.
"""

from __future__ import annotations

import base64
import contextlib
import gc
import struct
import time
import tracemalloc
import zlib
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory, PerMessageDeflate as WSDeflate,
)
from websockets.frames import Close as WSClose, Frame, Opcode
from websockets.headers import build_extension, parse_extension, parse_subprotocol
from websockets.protocol import Protocol as WSProtocol, Side

from clos_web.ws.deflate import PerMessageDeflate, compress_message, negotiate
from clos_web.ws.protocol import (
    GUID, Binary, Close, ConnectionClosed, Ping, Pong, SharedMessage, State, Text,
    WebSocketProtocol, accept_key, check_handshake, encode_frame, parse_extensions,
    parse_subprotocols,
)

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# --------------------------------------------------------------------------------------------
# Helpers: frames as a client sends them


def client_frame(opcode, payload=b"", *, fin=True, mask=b"\x37\xfa\x21\x3d", extensions=None,
                 rsv1=False) -> bytes:
    """A masked client frame, serialized by websockets (its mask key forced to ``mask``)."""
    with mock.patch("secrets.token_bytes", return_value=mask):
        return Frame(Opcode(opcode), payload, fin, rsv1).serialize(mask=True,
                                                                   extensions=extensions)


def raw_frame(b0: int, payload: bytes = b"", *, mask: bytes | None = b"\x01\x02\x03\x04",
              length: bytes | None = None) -> bytes:
    """A frame built by hand, for what websockets refuses to build (bad bits, bad lengths):
    ``b0`` is the first byte, ``length`` the length field as sent (else the minimal one)."""
    n = len(payload)
    if length is None:
        length = (bytes((n,)) if n < 126 else bytes((126,)) + struct.pack("!H", n) if n < 65536
                  else bytes((127,)) + struct.pack("!Q", n))
    if mask is None:
        return bytes((b0,)) + length + payload
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes((b0, length[0] | 0x80)) + length[1:] + mask + masked


def feed(ws: WebSocketProtocol, data: bytes, cuts=()) -> tuple[list, bytes]:
    """Feed ``data`` in pieces cut at ``cuts``; after each piece take every event, and what to
    send after each event. Returns (events, bytes to send)."""
    events, out = [], bytearray()
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < len(data))), len(data)]
    for a, b in zip(bounds, bounds[1:]):
        ws.receive_data(data[a:b])
        while (event := ws.next_event()) is not None:
            events.append(event)
            out += ws.data_to_send()
        out += ws.data_to_send()
    return events, bytes(out)


def client_reads(data: bytes, extensions=()) -> list[Frame]:
    """The frames websockets' client-side parser reads from what we sent."""
    client = WSProtocol(Side.CLIENT, max_size=None)
    client.extensions = list(extensions)
    client.receive_data(data)
    assert client.parser_exc is None, client.parser_exc
    return client.events_received()


def closed_with(ws: WebSocketProtocol, code: int, out: bytes) -> None:
    """``ws`` failed (or closed) with ``code``, and the close frame it sent says so."""
    assert ws.state is State.CLOSED
    assert ws.should_close_transport
    assert ws.close_code == code
    frames = client_reads(out)
    assert frames[-1].opcode is Opcode.CLOSE
    assert WSClose.parse(frames[-1].data).code == code


# --------------------------------------------------------------------------------------------
# Opening handshake (RFC 6455 section 4.2.1)

GOOD = {"host": "example.com", "upgrade": "websocket", "connection": "Upgrade",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==", "sec-websocket-version": "13"}


def test_accept_key_is_the_rfc_example():
    assert GUID == "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_a_valid_handshake_passes_as_a_mapping_and_as_raw_field_lines():
    assert check_handshake("GET", GOOD) is None
    raw = [("Host", "x"), ("Upgrade", "WebSocket"), ("Connection", "keep-alive, Upgrade"),
           ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13")]
    assert check_handshake("GET", raw) is None
    assert check_handshake("GET", {**GOOD, "upgrade": "foo/2, websocket"}) is None


@pytest.mark.parametrize("change, status", [
    ({"method": "POST"}, 400),
    ({"version": "HTTP/1.0"}, 400),
    ({"upgrade": None}, 400),
    ({"upgrade": "h2c"}, 400),
    ({"connection": None}, 400),
    ({"connection": "keep-alive"}, 400),
    ({"sec-websocket-key": None}, 400),
    ({"sec-websocket-key": base64.b64encode(b"x" * 15).decode()}, 400),
    ({"sec-websocket-key": base64.b64encode(b"x" * 17).decode()}, 400),
    ({"sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==, dGhlIHNhbXBsZSBub25jZQ=="}, 400),
    ({"sec-websocket-key": "!!!!!!!!!!!!!!!!!!!!!!=="}, 400),
    ({"sec-websocket-version": None}, 426),
    ({"sec-websocket-version": "8"}, 426),
    ({"sec-websocket-version": "13, 8"}, 426),
    ({"sec-websocket-extensions": "permessage-deflate; x=\"unterminated"}, 400),
    ({"sec-websocket-extensions": ";"}, 400),
    ({"sec-websocket-protocol": "chat, sup er"}, 400),
])
def test_a_bad_handshake_is_refused_with_a_status_and_a_short_reason(change, status):
    headers = dict(GOOD)
    method = change.pop("method", "GET") if "method" in change else "GET"
    version = change.pop("version", "HTTP/1.1") if "version" in change else "HTTP/1.1"
    for name, value in change.items():
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    refused = check_handshake(method, headers, version)
    assert refused is not None
    assert refused[0] == status
    assert 0 < len(refused[1]) < 80


def test_subprotocols_are_the_tokens_offered_in_order():
    assert parse_subprotocols({"sec-websocket-protocol": "chat, superchat"}) == ["chat",
                                                                              "superchat"]
    assert parse_subprotocols([("Sec-WebSocket-Protocol", "a"), ("sec-websocket-protocol",
                                                                 "b ,, c")]) == ["a", "b", "c"]
    assert parse_subprotocols({}) == []
    with pytest.raises(ValueError):
        parse_subprotocols({"sec-websocket-protocol": "a b"})


_tchar = st.sampled_from("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFXYZ")
_token = st.text(_tchar, min_size=1, max_size=8)
_ows = st.sampled_from(["", " ", "\t", "  "])


@st.composite
def extension_headers(draw):
    """A Sec-WebSocket-Extensions value by RFC 6455 section 9.1 (tokens, quoted tokens)."""
    items = []
    for _ in range(draw(st.integers(1, 4))):
        text = draw(_token)
        for _ in range(draw(st.integers(0, 3))):
            text += draw(_ows) + ";" + draw(_ows) + draw(_token)
            kind = draw(st.sampled_from(["none", "token", "quoted"]))
            if kind == "token":
                text += draw(_ows) + "=" + draw(_ows) + draw(_token)
            elif kind == "quoted":
                value = draw(_token)
                text += '="' + "".join("\\" + c if draw(st.booleans()) else c
                                       for c in value) + '"'
        items.append(text)
    return (draw(_ows) + "," + draw(_ows)).join(items)


@SETTINGS
@given(extension_headers())
def test_extensions_parse_as_websockets_parses_them(value):
    assert parse_extensions({"sec-websocket-extensions": value}) == \
        [(name, list(params)) for name, params in parse_extension(value)]
    assert check_handshake("GET", {**GOOD, "sec-websocket-extensions": value}) is None


@SETTINGS
@given(st.lists(_token, min_size=1, max_size=5), _ows)
def test_subprotocols_parse_as_websockets_parses_them(tokens, ows):
    value = ("," + ows).join(tokens)
    assert parse_subprotocols({"sec-websocket-protocol": value}) == parse_subprotocol(value)


@pytest.mark.parametrize("value", [
    'a;b="', "a;b=\"\\", ",", "a;", "a;b=", 'a;b="c d"', "a b", "a;b=c=d", "a;;b",
])
def test_a_malformed_extension_header_is_a_value_error(value):
    with pytest.raises(ValueError):
        parse_extensions({"sec-websocket-extensions": value})


def _cpu(fn, arg, repeat=3) -> float:
    best = float("inf")
    gc.disable()
    try:
        for _ in range(repeat):
            t = time.thread_time()
            with contextlib.suppress(ValueError):
                fn(arg)
            best = min(best, time.thread_time() - t)
    finally:
        gc.enable()
    return best


@pytest.mark.parametrize("unit", ['a;b="', 'a;b="\\"', ",", "a;", "a; b=c", ' ;', '"',
                                  "a;b=\"c\", ", "\\", "a" * 7 + " "])
def test_list_headers_parse_in_linear_time(unit):
    small, large = unit * (100_000 // len(unit)), unit * (1_000_000 // len(unit))
    for fn in (lambda v: parse_extensions({"sec-websocket-extensions": v}),
               lambda v: parse_subprotocols({"sec-websocket-protocol": v})):
        t_small, t_large = _cpu(fn, small), _cpu(fn, large)
        assert t_large < 2.0
        assert t_large < 0.005 or t_large / max(t_small, 2e-4) < 40


# --------------------------------------------------------------------------------------------
# Data frames, fragments, control frames


def test_a_masked_text_frame_is_a_text_event():
    ws = WebSocketProtocol()
    events, out = feed(ws, client_frame(1, "héllo".encode()))
    assert events == [Text("héllo")] and out == b""
    assert ws.state is State.OPEN and not ws.should_close_transport


def test_fragments_are_joined_into_one_message_and_pings_between_them_are_answered():
    data = (client_frame(2, b"ab", fin=False) + client_frame(9, b"are you there")
            + client_frame(0, b"cd", fin=False) + client_frame(0, b"ef"))
    ws = WebSocketProtocol()
    events, out = feed(ws, data)
    assert events == [Ping(b"are you there"), Binary(b"abcdef")]
    assert [(f.opcode, f.data) for f in client_reads(out)] == [(Opcode.PONG, b"are you there")]


def test_a_pong_is_an_event_and_needs_no_answer():
    ws = WebSocketProtocol()
    assert feed(ws, client_frame(10, b"t=1")) == ([Pong(b"t=1")], b"")


def test_only_the_latest_unanswered_ping_is_answered_so_queued_output_is_bounded():
    ws = WebSocketProtocol()
    data = b"".join(client_frame(9, b"%d" % i) for i in range(300))
    ws.receive_data(data)
    while ws.next_event() is not None:
        pass
    assert [f.data for f in client_reads(ws.data_to_send())] == [b"299"]


@pytest.mark.parametrize("name, data, code", [
    ("unmasked", raw_frame(0x81, b"hi", mask=None), 1002),
    ("rsv1 without deflate", raw_frame(0xC1, b"hi"), 1002),
    ("rsv2", raw_frame(0xA1, b"hi"), 1002),
    ("rsv3", raw_frame(0x91, b"hi"), 1002),
    *[(f"opcode {op:#x}", raw_frame(0x80 | op, b"x"), 1002) for op in (3, 4, 5, 6, 7, 11, 15)],
    ("ping over 125 bytes", raw_frame(0x89, b"x" * 126), 1002),
    ("fragmented ping", raw_frame(0x09, b"x"), 1002),
    ("fragmented close", raw_frame(0x08, b"\x03\xe8"), 1002),
    ("continuation first", raw_frame(0x80, b"x"), 1002),
    ("text inside fragments", raw_frame(0x01, b"a") + raw_frame(0x81, b"b"), 1002),
    ("binary inside fragments", raw_frame(0x02, b"a") + raw_frame(0x82, b"b"), 1002),
    ("16-bit length for 5 bytes", raw_frame(0x82, b"x" * 5, length=b"\x7e\x00\x05"), 1002),
    ("64-bit length for 200 bytes", raw_frame(0x82, b"x" * 200,
                                              length=b"\x7f" + struct.pack("!Q", 200)), 1002),
    ("64-bit length with its top bit set", raw_frame(0x82, b"", length=b"\x7f\x80" + b"\0" * 7),
     1002),
    ("invalid UTF-8", raw_frame(0x81, b"\xff"), 1007),
    ("a surrogate", raw_frame(0x81, b"\xed\xa0\x80"), 1007),
    ("UTF-8 cut at the end", raw_frame(0x01, b"\xce") + raw_frame(0x80, b""), 1007),
    ("close of 1 byte", raw_frame(0x88, b"\x03"), 1002),
    ("close reason not UTF-8", raw_frame(0x88, b"\x03\xe8\xff"), 1007),
])
def test_a_protocol_violation_fails_the_connection_with_its_code(name, data, code):
    ws = WebSocketProtocol()
    events, out = feed(ws, data + client_frame(1, b"after"))
    assert events == []
    closed_with(ws, code, out)
    assert ws.failure
    assert ws.receive_data(client_frame(1, b"more")) is None and ws.next_event() is None
    assert ws.buffered == 0


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011,
                                  1012, 1013, 1014, 3000, 3999, 4000, 4999])
def test_a_close_with_a_valid_code_is_echoed(code):
    ws = WebSocketProtocol()
    events, out = feed(ws, client_frame(8, struct.pack("!H", code) + "bye ✓".encode()))
    assert events == [Close(code, "bye ✓")]
    closed_with(ws, code, out)
    assert ws.close_reason == "bye ✓" and ws.failure is None


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999,
                                  5000, 65535])
def test_a_close_with_an_invalid_code_is_a_protocol_error(code):
    ws = WebSocketProtocol()
    events, out = feed(ws, raw_frame(0x88, struct.pack("!H", code)))
    assert events == []
    closed_with(ws, 1002, out)


def test_an_empty_close_is_code_1005_and_is_answered_with_an_empty_close():
    ws = WebSocketProtocol()
    events, out = feed(ws, client_frame(8, b""))
    assert events == [Close(1005, "")]
    assert ws.state is State.CLOSED and ws.should_close_transport and ws.close_code == 1005
    assert [(f.opcode, f.data) for f in client_reads(out)] == [(Opcode.CLOSE, b"")]


def test_a_close_between_fragments_ends_the_connection_and_nothing_after_it_is_read():
    ws = WebSocketProtocol()
    events, out = feed(ws, client_frame(1, b"part", fin=False) + client_frame(8, b"\x03\xe8")
                       + client_frame(0, b"rest") + client_frame(1, b"late"))
    assert events == [Close(1000, "")]
    closed_with(ws, 1000, out)
    assert ws.buffered == 0


def test_a_server_close_waits_for_the_peer_then_closes_the_transport():
    ws = WebSocketProtocol(close_timeout=5.0)
    frame = ws.close(1001, "going away", now=100.0)
    assert ws.state is State.CLOSING and not ws.should_close_transport
    assert ws.deadline == 105.0
    f, = client_reads(frame)
    assert WSClose.parse(f.data) == WSClose(1001, "going away")
    assert ws.close() == b""   # once only
    with pytest.raises(ConnectionClosed):
        ws.send_text("too late")
    # a message still in flight from the peer is delivered; no pong is sent any more
    events, out = feed(ws, client_frame(1, b"in flight") + client_frame(9, b"p")
                       + client_frame(8, b"\x03\xe8"))
    assert events == [Text("in flight"), Ping(b"p"), Close(1000, "")]
    assert out == b""
    assert ws.state is State.CLOSED and ws.should_close_transport and ws.close_code == 1000


def test_a_peer_that_does_not_answer_a_close_is_dropped_at_the_deadline():
    ws = WebSocketProtocol(close_timeout=5.0)
    ws.close(now=10.0)
    assert ws.timed_out(14.9) is False and ws.state is State.CLOSING
    assert ws.timed_out(15.0) is True
    assert ws.state is State.CLOSED and ws.should_close_transport and ws.close_code == 1006


def test_eof_without_a_close_is_1006_after_the_frames_before_it():
    ws = WebSocketProtocol()
    ws.receive_data(client_frame(1, b"last words"))
    ws.receive_data(b"")
    assert ws.next_event() == Text("last words")
    assert ws.next_event() is None
    assert ws.state is State.CLOSED and ws.should_close_transport and ws.close_code == 1006
    assert ws.data_to_send() == b""


def test_sending_after_close_raises_and_bad_arguments_are_value_errors():
    ws = WebSocketProtocol()
    with pytest.raises(ValueError):
        ws.ping(b"x" * 126)
    with pytest.raises(ValueError):
        ws.close(1005)
    with pytest.raises(ValueError):
        ws.close(1000, "x" * 124)
    feed(ws, client_frame(8, b"\x03\xe8"))
    for send in (ws.send_text, ws.send_binary, ws.ping, ws.pong):
        with pytest.raises(ConnectionClosed):
            send("x" if send == ws.send_text else b"x")


# UTF-8 checked incrementally


def test_a_code_point_split_across_fragments_is_fine():
    data = "€uro".encode()
    ws = WebSocketProtocol()
    events, _ = feed(ws, client_frame(1, data[:1], fin=False) + client_frame(0, data[1:2],
                     fin=False) + client_frame(0, data[2:]))
    assert events == [Text("€uro")]


def test_invalid_utf8_fails_at_the_first_invalid_fragment_not_at_the_end_of_the_message():
    ws = WebSocketProtocol()
    ws.receive_data(client_frame(1, b"good ", fin=False) + client_frame(0, b"\xce\xba\xed\xa0",
                                                                         fin=False))
    assert ws.next_event() is None
    closed_with(ws, 1007, ws.data_to_send())


def test_invalid_utf8_fails_before_the_rest_of_its_frame_arrives():
    frame = client_frame(1, b"\xff" + b"x" * 1000)
    ws = WebSocketProtocol()
    ws.receive_data(frame[:20])   # header, mask and a few payload bytes
    assert ws.next_event() is None
    closed_with(ws, 1007, ws.data_to_send())


# Sizes


def test_a_frame_over_max_message_is_refused_from_its_header():
    ws = WebSocketProtocol(max_message=1000)
    ws.receive_data(b"\x82\xff" + struct.pack("!Q", 2**40) + b"mask")  # the header only
    assert ws.next_event() is None
    closed_with(ws, 1009, ws.data_to_send())


def test_fragments_over_max_message_together_are_refused_at_the_fragment_that_passes_it():
    ws = WebSocketProtocol(max_message=1000)
    ws.receive_data(client_frame(2, b"x" * 600, fin=False))
    assert ws.next_event() is None and ws.state is State.OPEN
    ws.receive_data(client_frame(0, b"x" * 401)[:8])  # the second fragment's header
    assert ws.next_event() is None
    closed_with(ws, 1009, ws.data_to_send())


@pytest.mark.parametrize("opcode", [1, 2])
def test_a_short_single_frame_over_a_small_max_message_is_refused(opcode):
    ws = WebSocketProtocol(max_message=4)
    assert feed(ws, client_frame(opcode, b"1234"))[0] in ([Text("1234")], [Binary(b"1234")])
    events, out = feed(ws, client_frame(opcode, b"12345"))
    assert events == []
    closed_with(ws, 1009, out)


def test_a_message_of_exactly_max_message_is_fine():
    ws = WebSocketProtocol(max_message=1000)
    events, _ = feed(ws, client_frame(2, b"x" * 600, fin=False) + client_frame(0, b"y" * 400))
    assert events == [Binary(b"x" * 600 + b"y" * 400)]


def test_the_input_buffer_keeps_at_most_a_partial_frame_header():
    ws = WebSocketProtocol()
    data = client_frame(2, b"z" * 70_000) + client_frame(1, b"next")
    events = []
    for i in range(0, len(data), 4093):
        ws.receive_data(data[i:i + 4093])
        while (event := ws.next_event()) is not None:
            events.append(event)
        assert ws.buffered < 14
    assert events == [Binary(b"z" * 70_000), Text("next")]


# Linear time: a slowloris of tiny frames, and a large message byte by byte


def _bytewise(data: bytes, step: int = 1) -> int:
    """Feed ``data`` ``step`` bytes at a time, taking every event; the number of events."""
    ws = WebSocketProtocol()
    receive, next_event = ws.receive_data, ws.next_event
    n = 0
    for i in range(0, len(data), step):
        receive(data[i:i + step])
        while next_event() is not None:
            n += 1
    return n


def _cpu_time(fn, arg, repeat: int) -> float:
    best = float("inf")
    gc.disable()
    try:
        for _ in range(repeat):
            t = time.thread_time()
            fn(arg)
            best = min(best, time.thread_time() - t)
    finally:
        gc.enable()
    return best


@pytest.mark.slow
def test_100k_tiny_frames_byte_by_byte_cost_10_times_10k():
    frame = client_frame(1, b"x")
    assert _bytewise(frame * 1000) == 1000
    small = _cpu_time(_bytewise, frame * 10_000, 3)
    large = _cpu_time(_bytewise, frame * 100_000, 2)
    assert large / small < 25, (small, large)


def test_a_large_message_in_small_pieces_costs_linear_time():
    # 16-byte pieces: few enough calls that copying the message so far per piece would show
    def message(n):
        return client_frame(1, b"a" * (n - 4), fin=False) + client_frame(0, "€".encode() + b"!")

    def pieces(data):
        return _bytewise(data, 16)
    assert pieces(message(1000)) == 1
    small = _cpu_time(pieces, message(100_000), 3)
    large = _cpu_time(pieces, message(1_000_000), 3)
    assert large < 2.0 and large / small < 25, (small, large)


# --------------------------------------------------------------------------------------------
# Against websockets: random message sequences, split anywhere


@st.composite
def messages(draw, max_size=300):
    """A list of (kind, payload, fragment cuts, pings between fragments, masks)."""
    out = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["text", "binary", "ping", "pong"]))
        if kind == "text":
            payload = draw(st.text(max_size=max_size // 3)).encode()
        elif kind == "binary":
            payload = draw(st.binary(max_size=max_size))
        else:
            payload = draw(st.binary(max_size=125))
        cuts = ()
        if kind in ("text", "binary"):
            cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=4)))
        pings = [draw(st.none() | st.binary(max_size=20)) for _ in cuts]
        masks = [draw(st.binary(min_size=4, max_size=4)) for _ in range(len(cuts) + 1)]
        out.append((kind, payload, cuts, pings, masks))
    return out


def encode_client(msgs, extensions=None, compress=()):
    """Client frames for ``msgs``, and the events we must see. A message is compressed
    (websockets' client extension) when its index is in ``compress``."""
    data, expected = bytearray(), []
    for i, (kind, payload, cuts, pings, masks) in enumerate(msgs):
        ext = extensions if i in compress else None
        if kind in ("ping", "pong"):
            data += client_frame(9 if kind == "ping" else 10, payload, mask=masks[0])
            expected.append(Ping(payload) if kind == "ping" else Pong(payload))
            continue
        pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)])]
        for j, piece in enumerate(pieces):
            opcode = (1 if kind == "text" else 2) if j == 0 else 0
            data += client_frame(opcode, piece, fin=j == len(pieces) - 1, mask=masks[j],
                                 extensions=ext)
            if j < len(pings) and pings[j] is not None:
                data += client_frame(9, pings[j], mask=masks[j])
                expected.append(Ping(pings[j]))
        expected.append(Text(payload.decode()) if kind == "text" else Binary(payload))
    return bytes(data), expected


def check_pongs(out: bytes, events: list) -> None:
    pongs = [f.data for f in client_reads(out) if f.opcode is Opcode.PONG]
    assert pongs == [e.data for e in events if isinstance(e, Ping)]


@SETTINGS
@given(messages(), st.lists(st.integers(0, 5000), max_size=8))
def test_random_messages_split_anywhere_give_the_same_events(msgs, cuts):
    data, expected = encode_client(msgs)
    ws = WebSocketProtocol()
    events, out = feed(ws, data, cuts)
    assert events == expected
    check_pongs(out, events)
    assert ws.state is State.OPEN and ws.buffered == 0


def test_every_split_point_of_a_small_sequence_and_byte_by_byte():
    msgs = [("text", "añb€".encode(), [2, 5], [b"p", None], [b"abcd", b"efgh", b"ijkl"]),
            ("ping", b"hi", (), [], [b"\0\0\0\0"]),
            ("binary", bytes(range(130)), [1], [b""], [b"mask", b"MASK"])]
    data, expected = encode_client(msgs)
    for i in range(len(data) + 1):
        for j in (i, min(i + 7, len(data))):
            ws = WebSocketProtocol()
            events, out = feed(ws, data, [i, j])
            assert events == expected, (i, j)
            check_pongs(out, events)
    events, _ = feed(WebSocketProtocol(), data, range(len(data)))
    assert events == expected


# permessage-deflate: negotiation, both directions, against websockets' extension

_bits = st.sampled_from([None, 9, 10, 12, 15])


@st.composite
def deflate_setups(draw):
    """A websockets client offer and our policy, negotiated: (our PerMessageDeflate, the
    client's PerMessageDeflate extension)."""
    factory = ClientPerMessageDeflateFactory(
        server_no_context_takeover=draw(st.booleans()),
        client_no_context_takeover=draw(st.booleans()),
        server_max_window_bits=draw(_bits),
        client_max_window_bits=draw(st.sampled_from([None, True, 9, 11, 15])))
    offer = build_extension([("permessage-deflate", factory.get_request_params())])
    negotiated = negotiate(parse_extensions({"sec-websocket-extensions": offer}),
                           client_no_context_takeover=draw(st.booleans()),
                           client_max_window_bits=draw(_bits))
    assert negotiated is not None, offer
    response, ours = negotiated
    assert "server_no_context_takeover" in response
    (name, params), = parse_extension(response)
    client = factory.process_response_params(params, [])
    return ours, client


def negotiated_pair(**policy):
    factory = ClientPerMessageDeflateFactory()
    offer = build_extension([("permessage-deflate", factory.get_request_params())])
    response, ours = negotiate(parse_extensions({"sec-websocket-extensions": offer}), **policy)
    return ours, factory.process_response_params(parse_extension(response)[0][1], [])


@SETTINGS
@given(deflate_setups(), messages(max_size=3000), st.data())
def test_compressed_random_messages_split_anywhere_give_the_same_events(setup, msgs, data):
    ours, client = setup
    compress = data.draw(st.sets(st.integers(0, len(msgs) - 1)))
    wire, expected = encode_client(msgs, [client], compress)
    ws = WebSocketProtocol(deflate=ours)
    events, out = feed(ws, wire, data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    assert events == expected
    check_pongs(out, events)
    assert ws.state is State.OPEN


@SETTINGS
@given(deflate_setups(), st.lists(st.one_of(st.text(max_size=500), st.binary(max_size=3000)),
                                  min_size=1, max_size=6))
def test_what_we_send_with_deflate_is_read_by_the_websockets_client(setup, payloads):
    ours, client = setup
    ws = WebSocketProtocol(deflate=ours)
    wire = b"".join(ws.send_text(p) if isinstance(p, str) else ws.send_binary(p)
                    for p in payloads)
    frames = client_reads(wire, [client])   # the client keeps its context or not, as agreed
    assert [f.data.decode() if f.opcode is Opcode.TEXT else bytes(f.data) for f in frames] \
        == payloads


@SETTINGS
@given(st.lists(st.one_of(st.text(max_size=300), st.binary(max_size=70_000),
                          st.tuples(st.sampled_from(["ping", "pong"]), st.binary(max_size=125))),
                max_size=6),
       st.sampled_from([1000, 1001, 1011, 4000]), st.text(max_size=30))
def test_what_we_send_is_read_by_the_websockets_client(items, code, reason):
    ws = WebSocketProtocol()
    wire, expected = bytearray(), []
    for item in items:
        if isinstance(item, tuple):
            wire += ws.ping(item[1]) if item[0] == "ping" else ws.pong(item[1])
            expected.append((Opcode.PING if item[0] == "ping" else Opcode.PONG, item[1]))
        elif isinstance(item, str):
            wire += ws.send_text(item)
            expected.append((Opcode.TEXT, item.encode()))
        else:
            wire += ws.send_binary(item)
            expected.append((Opcode.BINARY, item))
    reason = reason.encode()[:123].decode(errors="ignore")
    wire += ws.close(code, reason)
    frames = client_reads(bytes(wire))
    assert [(f.opcode, bytes(f.data)) for f in frames[:-1]] == expected
    assert WSClose.parse(frames[-1].data) == WSClose(code, reason)


@SETTINGS
@given(st.lists(deflate_setups(), min_size=1, max_size=4),
       st.lists(st.text(max_size=2000), min_size=1, max_size=4))
def test_one_shared_frame_per_event_is_read_by_every_client_whatever_it_negotiated(setups,
                                                                               events):
    shared = [SharedMessage.text(e) for e in events]
    for ours, client in setups:
        ws = WebSocketProtocol(deflate=ours)
        wire = b"".join(s.frame(ws) for s in shared)
        assert [f.data.decode() for f in client_reads(wire, [client])] == events
    plain = WebSocketProtocol()
    assert [f.data.decode() for f in client_reads(b"".join(s.frame(plain) for s in shared))] \
        == events


def test_a_shared_frame_is_built_once_per_wire_form():
    ours, _ = negotiated_pair()
    shared = SharedMessage.text('{"event":"move","data":"' + "card " * 40 + '"}')
    a, b = WebSocketProtocol(deflate=ours), WebSocketProtocol(deflate=ours)
    assert shared.frame(a) is shared.frame(b)
    assert shared.frame(WebSocketProtocol()) is shared.frame(WebSocketProtocol())
    assert len(shared.frame(a)) < len(shared.frame(WebSocketProtocol()))


@SETTINGS
@given(st.lists(st.binary(max_size=5000), min_size=1, max_size=5), st.sampled_from([9, 12, 15]),
       st.booleans())
def test_compress_message_inflates_in_a_websockets_client_that_keeps_its_context(payloads, bits,
                                                                                 reset):
    client = WSDeflate(remote_no_context_takeover=reset, local_no_context_takeover=False,
                       remote_max_window_bits=bits, local_max_window_bits=15)
    for p in payloads:
        frame = Frame(Opcode.BINARY, compress_message(p, bits), rsv1=True)
        assert client.decode(frame).data == p


@SETTINGS
@given(st.lists(st.binary(max_size=5000), min_size=1, max_size=5), st.sampled_from([9, 12, 15]),
       st.booleans())
def test_a_websockets_compressor_inflates_in_ours(payloads, bits, reset):
    client = WSDeflate(remote_no_context_takeover=True, local_no_context_takeover=reset,
                       remote_max_window_bits=15, local_max_window_bits=bits)
    ours = PerMessageDeflate(client_max_window_bits=bits, client_no_context_takeover=reset)
    for p in payloads:
        data = client.encode(Frame(Opcode.BINARY, p)).data
        assert ours.inflate(data, 10**6) + ours.finish(10**6) == p


@pytest.mark.parametrize("offer", [
    "permessage-deflate; unknown=1",
    "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
    "permessage-deflate; server_no_context_takeover=1",
    "permessage-deflate; client_no_context_takeover=yes",
    "permessage-deflate; server_max_window_bits",
    "permessage-deflate; server_max_window_bits=16",
    "permessage-deflate; server_max_window_bits=7",
    "permessage-deflate; server_max_window_bits=09",
    "permessage-deflate; server_max_window_bits=8",      # zlib cannot compress in 256 bytes
    "permessage-deflate; client_max_window_bits=16",
    "permessage-deflate; client_max_window_bits=1x",
    "x-webkit-deflate-frame",
])
def test_a_malformed_or_unsupported_offer_is_ignored_and_the_next_one_taken(offer):
    offers = parse_extensions({"sec-websocket-extensions": offer})
    assert negotiate(offers) is None
    response, pmd = negotiate(offers + parse_extensions(
        {"sec-websocket-extensions": 'permessage-deflate; server_max_window_bits="10"'}))
    assert response == ("permessage-deflate; server_no_context_takeover; "
                        "client_no_context_takeover; server_max_window_bits=10")
    assert pmd.server_max_window_bits == 10


def test_the_client_window_is_capped_when_the_client_lets_us():
    offers = parse_extensions({"sec-websocket-extensions":
                               "permessage-deflate; client_max_window_bits"})
    response, pmd = negotiate(offers, client_no_context_takeover=False,
                              client_max_window_bits=10)
    assert response == "permessage-deflate; server_no_context_takeover; client_max_window_bits=10"
    assert (pmd.client_max_window_bits, pmd.client_no_context_takeover) == (10, False)
    # without the parameter in the offer the client's window cannot be limited: 15
    response, pmd = negotiate(parse_extensions({"sec-websocket-extensions":
                                                "permessage-deflate"}),
                              client_no_context_takeover=False, client_max_window_bits=10)
    assert response == "permessage-deflate; server_no_context_takeover"
    assert pmd.client_max_window_bits == 15


def test_rsv1_is_refused_on_control_and_continuation_frames_even_with_deflate():
    for data in (raw_frame(0xC9, b"x"), raw_frame(0x01, b"a") + raw_frame(0xC0, b"b")):
        ours, _ = negotiated_pair()
        ws = WebSocketProtocol(deflate=ours)
        events, out = feed(ws, data)
        closed_with(ws, 1002, out)


def test_a_compressed_message_may_end_with_an_empty_frame_and_may_be_empty():
    body = zlib.compressobj(6, zlib.DEFLATED, -15)
    data = body.compress("chargé ".encode() * 20) + body.flush(zlib.Z_SYNC_FLUSH)
    ours, _ = negotiated_pair()
    ws = WebSocketProtocol(deflate=ours)
    events, _ = feed(ws, raw_frame(0x41, data[:-4]) + raw_frame(0x80, b"")  # text, then FIN
                     + raw_frame(0xC2, b"") + raw_frame(0xC1, b"\x00"))      # two empty ones
    assert events == [Text("chargé " * 20), Binary(b""), Text("")]
    assert ws.state is State.OPEN


def test_corrupt_compressed_data_is_1007():
    ours, _ = negotiated_pair()
    ws = WebSocketProtocol(deflate=ours)
    events, out = feed(ws, raw_frame(0xC2, b"\xff\xff\xff\xff"))
    closed_with(ws, 1007, out)


def test_a_zip_bomb_is_refused_without_inflating_it():
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    payload = bomb.compress(b"\0" * (64 * 2**20)) + bomb.flush(zlib.Z_SYNC_FLUSH)
    payload = payload[:-4]
    assert len(payload) < 100_000
    ours, client = negotiated_pair()
    ws = WebSocketProtocol(max_message=2**20, deflate=ours)
    frame = raw_frame(0xC2, payload)
    tracemalloc.start()
    try:
        events, out = feed(ws, frame)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert events == []
    closed_with(ws, 1009, out)
    assert peak < 3 * 2**20 + 3 * len(frame), peak


def test_a_compressed_message_of_exactly_max_message_is_fine_and_one_byte_more_is_not():
    for size, ok in ((5000, True), (5001, False)):
        ours, client = negotiated_pair()
        ws = WebSocketProtocol(max_message=5000, deflate=ours)
        events, out = feed(ws, client_frame(2, b"a" * size, extensions=[client]))
        if ok:
            assert events == [Binary(b"a" * size)]
        else:
            closed_with(ws, 1009, out)


def test_without_client_context_takeover_an_idle_connection_holds_no_inflater():
    ours, client = negotiated_pair()   # our default asks client_no_context_takeover
    assert ours.client_no_context_takeover
    ws = WebSocketProtocol(deflate=ours)
    events, _ = feed(ws, client_frame(1, b"hello " * 50, extensions=[client]))
    assert events == [Text("hello " * 50)]
    assert not ours.inflating
    ours2, client2 = negotiated_pair(client_no_context_takeover=False)
    ws = WebSocketProtocol(deflate=ours2)
    feed(ws, client_frame(1, b"hello " * 50, extensions=[client2]))
    assert ours2.inflating   # its window is kept for the next message


def test_small_or_incompressible_messages_are_sent_uncompressed():
    ours, client = negotiated_pair()
    ws = WebSocketProtocol(deflate=ours)
    short = ws.send_text("hi")
    assert short == encode_frame(1, b"hi")
    noise = bytes(range(256)) * 1
    assert ws.send_binary(noise) == encode_frame(2, noise)


def test_encode_frame_uses_the_minimal_length_encoding():
    for n, head in ((0, b"\x82\x00"), (125, b"\x82\x7d"), (126, b"\x82\x7e\x00\x7e"),
                    (65535, b"\x82\x7e\xff\xff"), (65536, b"\x82\x7f" + struct.pack("!Q", 65536))):
        frame = encode_frame(2, b"x" * n)
        assert frame[:len(head)] == head and len(frame) == len(head) + n
    assert encode_frame(1, b"a", fin=False, rsv1=True) == b"\x41\x01a"


def test_reprs_are_short():
    ws = WebSocketProtocol()
    feed(ws, client_frame(2, b"x" * 10_000, fin=False))
    assert len(repr(ws)) < 120
    assert len(repr(Text("x" * 10_000))) < 120 and len(repr(Binary(b"x" * 10_000))) < 120
    assert len(repr(SharedMessage.text("x" * 10_000))) < 120
