"""WebSocket conformance over real sockets (RFC 6455, RFC 7692), raw frames, modelled on the
Autobahn|Testsuite case groups: 1 framing, 2 pings/pongs, 3 reserved bits, 4 opcodes,
5 fragmentation, 6 UTF-8, 7 close, 9 limits, 10 masking, 12/13 permessage-deflate, then the
opening handshake and robustness under many connections.

The server under test is the ``/ws-echo`` of ``examples/hello.py`` (DESIGN.md, "Example apps"):
every text and binary message echoed unchanged, up to 16 MiB (larger: close 1009). Until
clos_web serves WebSocket the suite runs against ``tests/ws_reference.py`` (the ``websockets``
library). Where that reference departs from RFC 6455 or from our contract, the case is listed in
``REFERENCE_DIFFERS`` and runs as a strict xfail against the reference only: the RFC wins.

Every read has a deadline (``ws_raw``); a server that hangs fails the case, it does not hang
the suite.
"""

from __future__ import annotations

import os
import random
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ws_raw import (
    DEFLATE_TAIL, OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RSV1, RSV2, RSV3,
    Message, WSClient, accept_key, close_payload, deflate_message,
    deflate_zeros, frame_bytes, handshake_request, header_tokens, http_exchange, new_key,
    open_socket, read_head,
)
from ws_reference import ReferenceServer

MiB = 1 << 20
MAX_MESSAGE = 16 * MiB  # hello.py's /ws-echo limit
BIG_TIMEOUT = 30.0  # for the 16 MiB cases on a loaded 2-core machine

# -- the servers under test ----------------------------------------------------------------
# The lead adds clos_web with one line in each list (the `hello` fixture of conftest.py starts
# examples/hello.py on an ephemeral port; `_target` below already knows the name "clos_web").
ECHO_SERVERS = [
    "reference",
    "clos_web",
]
DEFLATE_SERVERS = [  # servers expected to negotiate permessage-deflate when offered
    "reference-deflate",
    "clos_web",
]

# Cases where websockets 17 departs from RFC 6455 or from hello.py's contract: a strict xfail
# against the reference only ("name" for every case of a test, "name[id]" for one case).
REFERENCE_DIFFERS = {
    "test_handshake_rejected_with_400[no-upgrade]":
        "websockets answers a missing Upgrade with 426 (the contract says 400)",
    "test_handshake_rejected_with_400[upgrade-h2c]":
        "websockets answers a wrong Upgrade with 426 (the contract says 400)",
    "test_handshake_rejected_with_400[no-connection]":
        "websockets answers a missing Connection: upgrade with 426 (the contract says 400)",
    "test_handshake_rejected_with_400[connection-keep-alive]":
        "websockets answers Connection without upgrade with 426 (the contract says 400)",
    "test_close_between_fragments_is_a_normal_close":
        "websockets answers a close between fragments with 1002 'incomplete fragmented "
        "message', though RFC 6455 §5.4 allows control frames there",
    "test_handshake_version_is_426_naming_13":
        "websockets answers a missing or other Sec-WebSocket-Version with a 400 lacking the "
        "Sec-WebSocket-Version header (RFC 6455 §4.2.2 requires the header; 426 by contract)",
}


@pytest.fixture(scope="module")
def reference_servers():
    """``get(compression)``: a reference echo server per compression, started on first use."""
    servers: dict = {}

    def get(compression):
        if compression not in servers:
            servers[compression] = ReferenceServer(compression=compression).start()
        return servers[compression]

    yield get
    for server in servers.values():
        server.stop()


def _reference_differs(request) -> str | None:
    """The reason ``REFERENCE_DIFFERS`` gives for this test (or this case of it), if any."""
    callspec = getattr(request.node, "callspec", None)
    ids = f"-{callspec.id}-" if callspec else ""
    for key, reason in REFERENCE_DIFFERS.items():
        name, _, case = key.partition("[")
        if name == request.node.originalname and (not case or f"-{case[:-1]}-" in ids):
            return reason
    return None


def _target(request, name: str):
    """``(host, port, path)`` of the echo endpoint of server ``name``."""
    if name == "clos_web":
        server = request.getfixturevalue("hello")
        return ("127.0.0.1", server.port, "/ws-echo")
    server = request.getfixturevalue("reference_servers")(
        "deflate" if name == "reference-deflate" else None)
    reason = _reference_differs(request)
    if reason:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))
    return (server.host, server.port, "/ws-echo")


@pytest.fixture(params=ECHO_SERVERS)
def ws_echo(request):
    """``(host, port, path)`` of a WebSocket echo endpoint (hello.py's ``/ws-echo`` contract)."""
    return _target(request, request.param)


@pytest.fixture(params=DEFLATE_SERVERS)
def ws_echo_deflate(request):
    """``(host, port, path)`` of an echo endpoint that negotiates permessage-deflate."""
    return _target(request, request.param)


def _client_factory(target):
    clients = []

    def connect(**options) -> WSClient:
        client = WSClient.connect(*target, **options)
        clients.append(client)
        return client

    return connect, clients


@pytest.fixture
def connect_ws(ws_echo):
    """``connect_ws(**options) -> WSClient`` handshaken with ``ws_echo``; closed at teardown."""
    connect, clients = _client_factory(ws_echo)
    yield connect
    for client in clients:
        client.close()


OFFER = "permessage-deflate; client_max_window_bits"


@pytest.fixture
def connect_deflate(ws_echo_deflate):
    """Like ``connect_ws``, offering permessage-deflate; skips if the server declines it."""
    connect, clients = _client_factory(ws_echo_deflate)

    def connect_with_offer(**options) -> WSClient:
        client = connect(extensions=OFFER, **options)
        if client.deflate is None:
            pytest.skip("the server did not negotiate permessage-deflate")
        return client

    yield connect_with_offer
    for client in clients:
        client.close()


HYPOTHESIS = dict(deadline=None, derandomize=True,
                  suppress_health_check=[HealthCheck.function_scoped_fixture,
                                         HealthCheck.too_slow])


def utf8_of_size(n: int) -> bytes:
    """Valid UTF-8 of exactly ``n`` bytes, with 1- to 4-byte code points.

    >>> [len(utf8_of_size(n)) for n in (0, 1, 5, 126)]
    [0, 1, 5, 126]
    """
    unit = "aκ€😀".encode()  # 1 + 2 + 3 + 4 bytes
    text = (unit * (n // len(unit) + 1))[:n]
    while True:
        try:
            text.decode("utf-8")
            return text
        except UnicodeDecodeError as exc:  # cut inside a code point: pad with ASCII
            text = text[:exc.start] + b"a" * (n - exc.start)


def payload_of(opcode: int, size: int) -> bytes:
    return utf8_of_size(size) if opcode == OP_TEXT else random.Random(size).randbytes(size)


def echo_ok(client: WSClient, opcode: int = OP_TEXT, payload: bytes = b"still here"):
    client.send_frame(opcode, payload)
    assert client.read_message() == Message(opcode, payload)


def send_in_background(client: WSClient, data: bytes) -> threading.Thread:
    """Send ``data`` on a thread (the server may stop reading it): the test reads meanwhile."""
    thread = threading.Thread(target=client.send_quietly, args=(data,), daemon=True)
    thread.start()
    return thread


# -- the helpers themselves -----------------------------------------------------------------

def test_raw_client_frames_round_trip_through_the_reference_parser():
    from websockets.frames import Frame as WSFrame
    from websockets.streams import StreamReader

    for opcode, payload in [(OP_TEXT, b""), (OP_BINARY, b"x" * 126), (OP_BINARY, b"y" * 65536),
                            (OP_PING, b"p"), (OP_CONT, b"z" * 70000)]:
        reader = StreamReader()
        reader.feed_data(frame_bytes(opcode, payload, fin=opcode != OP_CONT))
        parser = WSFrame.parse(reader.read_exact, mask=True)
        try:
            next(parser)
        except StopIteration as done:
            frame = done.value
        assert (frame.opcode.value, frame.data, frame.fin) == (opcode, payload, opcode != OP_CONT)


def test_accept_key_is_rfc_6455s_example():
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_the_bomb_inflates_to_what_it_claims():
    bomb = deflate_zeros(3)
    assert len(bomb) < 10_000
    assert zlib.decompressobj(-15).decompress(bomb + DEFLATE_TAIL) == bytes(3 * MiB)


# -- 1 framing ------------------------------------------------------------------------------

SIZES = [0, 125, 126, 65535, 65536]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY], ids=["text", "binary"])
def test_framing_message_sent_whole_is_echoed(connect_ws, opcode, size):
    client = connect_ws()
    payload = payload_of(opcode, size)
    client.send_frame(opcode, payload)
    assert client.read_message() == Message(opcode, payload)


@pytest.mark.parametrize("size", [0, 125, 126])
@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY], ids=["text", "binary"])
def test_framing_message_sent_byte_by_byte_is_echoed(connect_ws, opcode, size):
    client = connect_ws()
    payload = payload_of(opcode, size)
    client.send_frame(opcode, payload, chunks=1)
    assert client.read_message() == Message(opcode, payload)


@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY], ids=["text", "binary"])
def test_framing_16_mib_message_is_echoed(connect_ws, opcode):
    client = connect_ws()
    payload = utf8_of_size(MAX_MESSAGE) if opcode == OP_TEXT else os.urandom(MAX_MESSAGE)
    client.send_frame(opcode, payload)
    assert client.read_message(BIG_TIMEOUT) == Message(opcode, payload)


@settings(max_examples=40, **HYPOTHESIS)
@given(data=st.data(), opcode=st.sampled_from([OP_TEXT, OP_BINARY]),
       size=st.one_of(st.sampled_from(SIZES), st.integers(0, 300)))
def test_framing_message_in_random_chunks_is_echoed(ws_echo, data, opcode, size):
    payload = payload_of(opcode, size)
    wire = frame_bytes(opcode, payload)
    cuts = data.draw(st.lists(st.integers(1, max(1, len(wire) // 3)), max_size=20))
    with WSClient.connect(*ws_echo) as client:
        client.send(wire, chunks=cuts)
        assert client.read_message() == Message(opcode, payload)


# -- 2 pings and pongs ----------------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 125])
def test_ping_gets_a_pong_with_the_same_payload(connect_ws, size):
    client = connect_ws()
    payload = os.urandom(size)
    client.send_frame(OP_PING, payload)
    assert client.read_frame() == (True, 0, OP_PONG, payload)
    echo_ok(client)


@pytest.mark.parametrize("opcode", [OP_PING, OP_PONG, OP_CLOSE], ids=["ping", "pong", "close"])
def test_control_frame_over_125_bytes_is_1002(connect_ws, opcode):
    client = connect_ws()
    payload = close_payload(1000, b"r" * 124) if opcode == OP_CLOSE else b"p" * 126
    client.send_frame(opcode, payload)
    client.expect_close(1002, reply=opcode != OP_CLOSE, allow_data=False)


def test_unsolicited_pong_is_ignored(connect_ws):
    client = connect_ws()
    client.send_frame(OP_PONG, b"unsolicited")
    client.send_frame(OP_PONG, b"")
    echo_ok(client)  # read_message fails on any pong or close before the echo


def test_ten_pings_get_ten_pongs_in_order(connect_ws):
    client = connect_ws()
    payloads = [f"ping {i}".encode() for i in range(10)]
    client.send(b"".join(frame_bytes(OP_PING, p) for p in payloads))
    assert [client.read_frame() for _ in payloads] == [(True, 0, OP_PONG, p) for p in payloads]
    echo_ok(client)


def test_ping_sent_byte_by_byte_gets_its_pong(connect_ws):
    client = connect_ws()
    client.send_frame(OP_PING, b"slowly, byte by byte", chunks=1)
    assert client.read_frame() == (True, 0, OP_PONG, b"slowly, byte by byte")


# -- 3 reserved bits ------------------------------------------------------------------------

@pytest.mark.parametrize("rsv", range(1, 8), ids=lambda r: f"rsv{r:03b}")
@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY, OP_PING], ids=["text", "binary", "ping"])
def test_reserved_bits_without_an_extension_are_1002(connect_ws, opcode, rsv):
    client = connect_ws()
    echo_ok(client)
    client.send(frame_bytes(opcode, b"reserved", rsv=rsv) + frame_bytes(OP_PING, b"after"))
    client.expect_close(1002, allow_data=False)  # no echo, no pong after the bad frame


# -- 4 opcodes ------------------------------------------------------------------------------

@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 11, 12, 13, 14, 15])
@pytest.mark.parametrize("payload", [b"", b"reserved opcode"], ids=["empty", "payload"])
def test_reserved_opcode_is_1002(connect_ws, opcode, payload):
    client = connect_ws()
    echo_ok(client)
    client.send(frame_bytes(opcode, payload) + frame_bytes(OP_PING, b"after"))
    client.expect_close(1002, allow_data=False)


# -- 5 fragmentation ------------------------------------------------------------------------

def fragments(opcode: int, pieces, **options) -> bytes:
    """One message as frames: ``opcode`` then continuations, FIN on the last."""
    pieces = list(pieces) or [b""]
    return b"".join(frame_bytes(opcode if i == 0 else OP_CONT, piece,
                                fin=i == len(pieces) - 1, **options)
                    for i, piece in enumerate(pieces))


def cut(payload: bytes, positions) -> list[bytes]:
    points = [0, *sorted(positions), len(payload)]
    return [payload[a:b] for a, b in zip(points, points[1:])]


@pytest.mark.parametrize("pieces", [
    [b"one"], [b"two ", b"pieces"], [b"", b"empty first"], [b"empty last", b""],
    [b"", b"", b""], [b"x"] * 50, [b"", b"a", b"", b"b", b""],
], ids=["1", "2", "empty-first", "empty-last", "all-empty", "50", "mixed"])
@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY], ids=["text", "binary"])
def test_fragmented_message_is_echoed_as_one(connect_ws, opcode, pieces):
    client = connect_ws()
    client.send(fragments(opcode, pieces))
    assert client.read_message() == Message(opcode, b"".join(pieces))


@settings(max_examples=40, **HYPOTHESIS)
@given(data=st.data(), opcode=st.sampled_from([OP_TEXT, OP_BINARY]))
def test_fragmented_message_in_random_pieces_is_echoed(ws_echo, data, opcode):
    if opcode == OP_TEXT:
        payload = data.draw(st.text(max_size=400)).encode()
    else:
        payload = data.draw(st.binary(max_size=2000))
    positions = data.draw(st.lists(st.integers(0, len(payload)), max_size=12))
    with WSClient.connect(*ws_echo) as client:
        client.send(fragments(opcode, cut(payload, positions)))
        assert client.read_message() == Message(opcode, payload)


@pytest.mark.parametrize("control", [OP_PING, OP_PONG], ids=["ping", "pong"])
def test_control_frame_between_fragments_is_handled_at_once(connect_ws, control):
    client = connect_ws()
    client.send_frame(OP_TEXT, b"first, ", fin=False)
    client.send_frame(control, b"between")
    if control == OP_PING:  # answered before the message is complete
        assert client.read_frame() == (True, 0, OP_PONG, b"between")
    client.send_frame(OP_CONT, b"second, ", fin=False)
    client.send_frame(OP_CONT, b"last", fin=True)
    assert client.read_message() == Message(OP_TEXT, b"first, second, last")


@pytest.mark.parametrize("fin", [True, False], ids=["fin", "no-fin"])
@pytest.mark.parametrize("after", [b"", frame_bytes(OP_TEXT, b"done")],
                         ids=["at-start", "after-a-message"])
def test_continuation_with_nothing_to_continue_is_1002(connect_ws, fin, after):
    client = connect_ws()
    client.send(after + frame_bytes(OP_CONT, b"orphan", fin=fin))
    client.expect_close(1002)


@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY], ids=["text", "binary"])
def test_new_message_inside_a_fragmented_one_is_1002(connect_ws, opcode):
    client = connect_ws()
    client.send(frame_bytes(OP_BINARY, b"started", fin=False) + frame_bytes(opcode, b"new"))
    client.expect_close(1002, allow_data=False)


@pytest.mark.parametrize("opcode", [OP_PING, OP_PONG, OP_CLOSE], ids=["ping", "pong", "close"])
def test_fragmented_control_frame_is_1002(connect_ws, opcode):
    client = connect_ws()
    first = close_payload(1000) if opcode == OP_CLOSE else b"frag"
    client.send(frame_bytes(opcode, first, fin=False) + frame_bytes(OP_CONT, b"ment"))
    client.expect_close(1002, reply=opcode != OP_CLOSE, allow_data=False)


# -- 6 UTF-8 --------------------------------------------------------------------------------

VALID_TEXT = "Hello-µ@ßöäüàá-UTF-8!! κόσμε 😀 𝄞 \U0010ffff \ufffd \ue000".encode()
BOUNDARY_CODE_POINTS = ["\x00", "\x7f", "\x80", "\u07ff", "\u0800", "\ud7ff", "\ue000",
                        "\ufffd", "\uffff", "\U00010000", "\U0010ffff"]


def test_utf8_valid_text_split_at_every_byte_is_echoed(connect_ws):
    client = connect_ws()
    for at in range(len(VALID_TEXT) + 1):
        client.send(fragments(OP_TEXT, cut(VALID_TEXT, [at])))
        assert client.read_message() == Message(OP_TEXT, VALID_TEXT), at
    client.send(fragments(OP_TEXT, [bytes([b]) for b in VALID_TEXT]))
    assert client.read_message() == Message(OP_TEXT, VALID_TEXT)


def test_utf8_boundary_code_points_are_echoed(connect_ws):
    client = connect_ws()
    for char in BOUNDARY_CODE_POINTS:
        echo_ok(client, OP_TEXT, char.encode())


INVALID_UTF8 = {
    "lone-continuation": b"\x80",
    "invalid-byte-fe": b"\xfe",
    "invalid-byte-ff": b"\xff",
    "overlong-slash-2": b"\xc0\xaf",
    "overlong-slash-3": b"\xe0\x80\xaf",
    "overlong-slash-4": b"\xf0\x80\x80\xaf",
    "overlong-max-2": b"\xc1\xbf",
    "surrogate-d800": b"\xed\xa0\x80",
    "surrogate-dfff": b"\xed\xbf\xbf",
    "surrogate-pair": b"\xed\xa0\x80\xed\xb0\x80",
    "above-10ffff": b"\xf4\x90\x80\x80",
    "f5-lead": b"\xf5\x80\x80\x80",
    "5-byte-form": b"\xf8\x88\x80\x80\x80",
    "missing-continuation": b"\xce\x41",
    "truncated-2-at-end": b"\xce",
    "truncated-3-at-end": b"\xe2\x82",
    "truncated-4-at-end": b"\xf0\x9f\x98",
}


@pytest.mark.parametrize("bad", INVALID_UTF8.values(), ids=INVALID_UTF8.keys())
@pytest.mark.parametrize("how", ["one-frame", "byte-fragments"])
def test_utf8_invalid_text_is_1007(connect_ws, bad, how):
    client = connect_ws()
    payload = b"valid prefix \xce\xba " + bad
    if how == "one-frame":
        client.send_frame(OP_TEXT, payload)
    else:
        client.send_quietly(fragments(OP_TEXT, [bytes([b]) for b in payload]))
    client.expect_close(1007, allow_data=False)


FAIL_FAST = ["invalid-byte-ff", "overlong-slash-2", "surrogate-d800", "above-10ffff",
             "missing-continuation"]


@pytest.mark.parametrize("name", FAIL_FAST)
def test_utf8_invalid_first_fragment_fails_before_the_rest_is_sent(connect_ws, name):
    client = connect_ws()
    client.send_frame(OP_TEXT, b"a long message starts \xce\xba " + INVALID_UTF8[name] + b" ...",
                      fin=False)
    client.expect_close(1007, allow_data=False)  # the rest (below) is never needed
    client.send_quietly(frame_bytes(OP_CONT, b"x" * 65536, fin=True))


@settings(max_examples=60, **HYPOTHESIS)
@given(data=st.data())
def test_utf8_random_bytes_echoed_or_1007(ws_echo, data):
    alphabet = st.sampled_from([0x41, 0x7f, 0x80, 0xbf, 0xc0, 0xc2, 0xce, 0xdf, 0xe0, 0xed,
                                0xef, 0xf0, 0xf4, 0xf5, 0xff, 0xa0, 0x90, 0x8f])
    payload = bytes(data.draw(st.lists(alphabet, max_size=12)))
    pieces = cut(payload, data.draw(st.lists(st.integers(0, len(payload)), max_size=4)))
    with WSClient.connect(*ws_echo) as client:
        client.send_quietly(fragments(OP_TEXT, pieces))
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError:
            client.expect_close(1007, allow_data=False)
        else:
            assert client.read_message() == Message(OP_TEXT, payload)


# -- 7 close --------------------------------------------------------------------------------

def test_close_1000_is_answered_with_1000_then_the_server_closes_tcp(connect_ws):
    client = connect_ws()
    client.send_close(1000)
    frame = client.expect_close(1000, reply=False, allow_data=False)  # also checks EOF
    assert frame.fin and frame.rsv == 0


def test_close_without_payload_is_answered(connect_ws):
    client = connect_ws()
    client.send_close(None)
    frame = client.expect_close(reply=False, allow_data=False)
    assert frame.payload == b"" or frame.code == 1000


# RFC 6455 §7.4.1 defines 1000-1003 and 1007-1011 for use; 1004 is reserved, 1005, 1006 and 1015
# must never be sent. IANA's registry adds 1012 (Service Restart), 1013 (Try Again Later) and
# 1014 (Bad Gateway): registered codes a peer may send, so they are valid here; 1016-2999 are
# unassigned (invalid until registered). 3000-3999 are IANA's, 4000-4999 private: valid.
VALID_CLOSE_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
                     3000, 3999, 4000, 4999]
INVALID_CLOSE_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]


@pytest.mark.parametrize("code", VALID_CLOSE_CODES)
def test_close_with_a_valid_code_is_echoed(connect_ws, code):
    client = connect_ws()
    client.send_close(code)
    client.expect_close(code, reply=False, allow_data=False)


@pytest.mark.parametrize("code", INVALID_CLOSE_CODES)
def test_close_with_an_invalid_code_is_1002(connect_ws, code):
    client = connect_ws()
    client.send_close(code)
    client.expect_close(1002, reply=False, allow_data=False)


def test_close_with_a_1_byte_payload_is_1002(connect_ws):
    client = connect_ws()
    client.send_frame(OP_CLOSE, b"\x03")
    client.expect_close(1002, reply=False, allow_data=False)


def test_close_reason_of_invalid_utf8_is_1007(connect_ws):
    client = connect_ws()
    client.send_close(1000, b"bad \xed\xa0\x80 reason")
    client.expect_close(1007, reply=False, allow_data=False)


def test_close_payload_of_125_bytes_is_echoed(connect_ws):
    client = connect_ws()
    payload = close_payload(1000, utf8_of_size(123))
    client.send_frame(OP_CLOSE, payload)
    assert client.expect_close(1000, reply=False, allow_data=False).payload == payload


def test_close_then_data_is_ignored(connect_ws):
    client = connect_ws()
    client.send(frame_bytes(OP_CLOSE, close_payload(1000)) + frame_bytes(OP_TEXT, b"after")
                + frame_bytes(OP_PING, b"after"))
    client.expect_close(1000, reply=False, allow_data=False)  # no echo, no pong, then EOF


def test_close_between_fragments_is_a_normal_close(connect_ws):
    client = connect_ws()
    client.send(frame_bytes(OP_TEXT, b"unfinished", fin=False) + frame_bytes(
        OP_CLOSE, close_payload(1000)))
    # RFC 6455 §5.4: control frames may come between fragments, so this is no protocol error:
    # the unfinished message is dropped and the close answered as any other
    client.expect_close(1000, reply=False, allow_data=False)


# -- 9 limits -------------------------------------------------------------------------------

def test_limit_one_frame_over_16_mib_is_1009(connect_ws):
    client = connect_ws()
    sender = send_in_background(client, frame_bytes(OP_BINARY, bytes(MAX_MESSAGE + 1)))
    client.expect_close(1009, timeout=BIG_TIMEOUT, allow_data=False)
    sender.join(BIG_TIMEOUT)


def test_limit_fragments_over_16_mib_are_1009(connect_ws):
    client = connect_ws()
    pieces = [bytes(MiB)] * 16 + [b"\x00"]
    sender = send_in_background(client, fragments(OP_BINARY, pieces))
    client.expect_close(1009, timeout=BIG_TIMEOUT, allow_data=False)
    sender.join(BIG_TIMEOUT)


@pytest.mark.parametrize("length", [MAX_MESSAGE + 1, 1 << 62, (1 << 63) - 1],
                         ids=["16MiB+1", "2^62", "2^63-1"])
def test_limit_header_alone_claiming_too_much_is_1009(connect_ws, length):
    client = connect_ws()
    client.send_frame(OP_BINARY, b"", length=length)  # the header and mask key, no body
    client.expect_close(1009, allow_data=False)


def test_limit_payload_length_with_the_high_bit_set_is_refused(connect_ws):
    client = connect_ws()
    client.send_frame(OP_BINARY, b"", length=1 << 63)  # RFC 6455 §5.2: the MSB MUST be 0
    client.expect_close((1002, 1009), allow_data=False)


# -- 10 masking -----------------------------------------------------------------------------

@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY, OP_PING, OP_CLOSE],
                         ids=["text", "binary", "ping", "close"])
def test_unmasked_client_frame_is_1002(connect_ws, opcode):
    client = connect_ws()
    payload = close_payload(1000) if opcode == OP_CLOSE else b"unmasked"
    client.send_frame(opcode, payload, mask=False)
    client.expect_close(1002, reply=opcode != OP_CLOSE, allow_data=False)


def test_zero_mask_key_is_valid(connect_ws):
    client = connect_ws()
    client.send_frame(OP_TEXT, b"zero key", mask_key=b"\x00\x00\x00\x00")
    assert client.read_message() == Message(OP_TEXT, b"zero key")


# -- 12/13 permessage-deflate ---------------------------------------------------------------

def test_deflate_negotiated_parameters_are_well_formed(connect_deflate):
    client = connect_deflate()
    known = {"server_no_context_takeover", "client_no_context_takeover",
             "server_max_window_bits", "client_max_window_bits"}
    assert set(client.deflate) <= known
    for name in ("server_max_window_bits", "client_max_window_bits"):
        if client.deflate.get(name):
            assert 8 <= int(client.deflate[name]) <= 15


def test_deflate_not_offered_means_not_negotiated(ws_echo_deflate):
    with WSClient.connect(*ws_echo_deflate) as client:
        assert client.deflate is None
        client.send_frame(OP_TEXT, deflate_message(b"compressed"), rsv=RSV1)
        client.expect_close(1002, allow_data=False)


@pytest.mark.parametrize("size", [0, 1, 1000, 65536, 300_000])
@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY], ids=["text", "binary"])
def test_deflate_compressed_message_is_echoed(connect_deflate, opcode, size):
    client = connect_deflate()
    payload = payload_of(opcode, size) if size != 300_000 else utf8_of_size(size)
    client.send_frame(opcode, client.compress(payload), rsv=RSV1)
    assert client.read_message(BIG_TIMEOUT) == Message(opcode, payload)


def test_deflate_many_messages_on_one_connection(connect_deflate):
    client = connect_deflate()  # the server may keep its compression context between messages
    for i in range(20):
        payload = f"message {i} ".encode() * (i + 1)
        compressed = i % 2 == 0
        client.send_frame(OP_TEXT, client.compress(payload) if compressed else payload,
                          rsv=RSV1 if compressed else 0)
        assert client.read_message() == Message(OP_TEXT, payload)


def test_deflate_fragmented_compressed_message_is_echoed(connect_deflate):
    client = connect_deflate()
    payload = b"fragmented and compressed " * 200
    compressed = client.compress(payload)
    pieces = cut(compressed, [1, len(compressed) // 2])
    client.send(frame_bytes(OP_TEXT, pieces[0], fin=False, rsv=RSV1)
                + frame_bytes(OP_CONT, pieces[1], fin=False)
                + frame_bytes(OP_CONT, pieces[2], fin=True))
    assert client.read_message() == Message(OP_TEXT, payload)


@pytest.mark.parametrize("case", ["rsv1-continuation", "rsv1-ping", "rsv2-text", "rsv3-text"])
def test_deflate_bits_it_does_not_define_are_1002(connect_deflate, case):
    client = connect_deflate()
    compressed = client.compress(b"abc" * 100)
    wire = {
        "rsv1-continuation": frame_bytes(OP_TEXT, compressed[:5], fin=False, rsv=RSV1)
        + frame_bytes(OP_CONT, compressed[5:], rsv=RSV1),
        "rsv1-ping": frame_bytes(OP_PING, b"ping", rsv=RSV1),
        "rsv2-text": frame_bytes(OP_TEXT, compressed, rsv=RSV1 | RSV2),
        "rsv3-text": frame_bytes(OP_TEXT, b"abc", rsv=RSV3),
    }[case]
    client.send(wire)
    client.expect_close(1002, allow_data=False)


def test_deflate_corrupt_data_fails_the_connection(connect_deflate):
    client = connect_deflate()
    client.send_frame(OP_BINARY, b"\xff\xff\xff\xff not deflate", rsv=RSV1)
    client.expect_close((1002, 1007), allow_data=False)  # RFC 7692 §8 names no code


def peak_rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/self/status")


def reset_peak_rss():
    """Reset this process's peak RSS (Linux 4.0+); the servers under test run in-process."""
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        pass


@pytest.mark.parametrize("mebibytes", [17, 1024], ids=["17MiB", "1GiB"])
def test_deflate_bomb_is_1009_without_inflating_it_all(connect_deflate, mebibytes):
    """The peak RSS measured is this process's: the servers under test run in it (the
    reference on a thread, clos_web through the ``hello`` fixture)."""
    client = connect_deflate()
    bomb = deflate_zeros(mebibytes)  # 17 MiB: ~17 KiB on the wire; 1 GiB: ~1 MiB
    reset_peak_rss()
    before = peak_rss_kib()
    sender = send_in_background(client, frame_bytes(OP_BINARY, bomb, rsv=RSV1))
    client.expect_close(1009, timeout=BIG_TIMEOUT, allow_data=False)
    sender.join(BIG_TIMEOUT)
    grown_mib = (peak_rss_kib() - before) / 1024
    assert grown_mib < 200, f"peak RSS grew by {grown_mib:.0f} MiB on a {mebibytes} MiB bomb"


# -- the opening handshake ------------------------------------------------------------------

def test_handshake_succeeds_with_the_right_accept_key(ws_echo):
    host, port, path = ws_echo
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    status, headers, _ = http_exchange(host, port, handshake_request(host, port, path, key=key))
    assert status == 101
    assert headers["sec-websocket-accept"] == ["s3pPLMBiTxaQ9kYGzzhZRbK+xOo="]
    assert header_tokens(headers, "upgrade") == ["websocket"]
    assert "upgrade" in header_tokens(headers, "connection")
    assert "sec-websocket-extensions" not in headers  # none was offered


@pytest.mark.parametrize("options", [
    dict(upgrade="WebSocket", connection="keep-alive, Upgrade"),
    dict(connection="upgrade"),
    dict(headers=[("Origin", "http://elsewhere.example")]),  # hello.py allows any origin
    dict(headers=[("Sec-WebSocket-Protocol", "chat")]),  # no subprotocol chosen: still a 101
], ids=["case-and-lists", "lower-case", "any-origin", "unknown-subprotocol"])
def test_handshake_variants_that_are_valid(ws_echo, options):
    host, port, path = ws_echo
    key = new_key()
    status, headers, _ = http_exchange(
        host, port, handshake_request(host, port, path, key=key, **options))
    assert status == 101
    assert headers["sec-websocket-accept"] == [accept_key(key)]
    assert "sec-websocket-protocol" not in headers


@pytest.mark.parametrize("options", [
    dict(method="POST"),
    dict(key=None),
    dict(key="not base64!"),
    dict(key="AAAAAAAAAAAAAAAAAAAA"),  # 15 bytes, not 16
    dict(upgrade=None),
    dict(upgrade="h2c"),
    dict(connection=None),
    dict(connection="keep-alive"),
], ids=["post", "no-key", "key-not-base64", "key-15-bytes", "no-upgrade", "upgrade-h2c",
        "no-connection", "connection-keep-alive"])
def test_handshake_rejected_with_400(ws_echo, options):
    host, port, path = ws_echo
    options = {"key": new_key(), **options}
    status, headers, _ = http_exchange(host, port, handshake_request(host, port, path,
                                                                     **options))
    if options.get("method") == "POST":
        assert status in (400, 405)  # "an appropriate error code (such as 400)": 405 is one
    else:
        assert status == 400


@pytest.mark.parametrize("version", [None, "8", "14"], ids=["no-version", "v8", "v14"])
def test_handshake_version_is_426_naming_13(ws_echo, version):
    host, port, path = ws_echo
    status, headers, _ = http_exchange(
        host, port, handshake_request(host, port, path, key=new_key(), version=version))
    assert status == 426
    assert "13" in header_tokens(headers, "sec-websocket-version")


# -- robustness -----------------------------------------------------------------------------

def random_session(target, seed: int, barrier: threading.Barrier):
    """One connection doing a random mix of echoes, fragments, pings and an ending."""
    rng = random.Random(seed)
    with WSClient.connect(*target, timeout=15) as client:
        barrier.wait(30)  # all connections open at once
        for _ in range(rng.randint(1, 6)):
            action = rng.choice(["text", "binary", "fragments", "ping"])
            if action == "ping":
                payload = rng.randbytes(rng.randint(0, 125))
                client.send_frame(OP_PING, payload, chunks=rng.choice([None, 3]))
                assert client.read_frame(15) == (True, 0, OP_PONG, payload)
                continue
            opcode = OP_TEXT if action == "text" else OP_BINARY
            payload = payload_of(opcode, rng.randint(0, 3000))
            if action == "fragments":
                wire = fragments(opcode, cut(payload, [rng.randint(0, len(payload))
                                                       for _ in range(rng.randint(0, 5))]))
            else:
                wire = frame_bytes(opcode, payload)
            client.send(wire, chunks=rng.choice([None, None, 100, 1000]))
            assert client.read_message(15) == Message(opcode, payload)
        ending = rng.choice(["close", "abort", "protocol-error"])
        if ending == "close":
            client.send_close(1000)
            client.expect_close(1000, timeout=15, reply=False)
        elif ending == "protocol-error":
            client.send_frame(5, b"reserved opcode")
            client.expect_close(1002, timeout=15)
    return ending


def test_robustness_200_concurrent_connections_then_a_fresh_one_echoes(ws_echo):
    n = 200
    barrier = threading.Barrier(n)
    with ThreadPoolExecutor(max_workers=n) as pool:
        endings = list(pool.map(lambda seed: random_session(ws_echo, seed, barrier), range(n)))
    assert {"close", "abort", "protocol-error"} <= set(endings)
    with WSClient.connect(*ws_echo) as client:
        echo_ok(client)


def test_robustness_garbage_on_one_connection_does_not_disturb_another(ws_echo):
    host, port, path = ws_echo
    with WSClient.connect(*ws_echo) as steady:
        wire = frame_bytes(OP_BINARY, b"half now, half later")
        steady.send(wire[:9])  # a frame left half sent while the others misbehave

        with WSClient.connect(*ws_echo) as noisy:  # garbage after the handshake
            noisy.send_quietly(b"\xff\x80" + os.urandom(4096))  # RSV, opcode 15, length 0
            noisy.expect_close(1002, allow_data=False)

        with open_socket(host, port) as raw:  # garbage instead of a handshake
            raw.sendall(b"\x16\x03\x01\x02\x00" + os.urandom(512) + b"\r\n\r\n")
            try:
                head, _ = read_head(raw)
                assert 400 <= int(head.split(b" ")[1]) < 500, head
            except (EOFError, ConnectionResetError):
                pass  # closing without a response is acceptable for non-HTTP bytes

        for seed in range(5):  # random bytes then an abrupt close
            with WSClient.connect(*ws_echo) as rude:
                rude.send_quietly(random.Random(seed).randbytes(2000))

        steady.send(wire[9:])
        assert steady.read_message() == Message(OP_BINARY, b"half now, half later")
        echo_ok(steady)
