"""Tests of the sans-I/O HTTP/1.1 server connection (``clos_web.http.connection``).

No sockets and no sleeps: bytes go in with ``receive_data``, the clock is a plain float passed
as ``now``, and what comes out (requests, head bytes, deadlines, states) is checked as data.
The driver below does what ``clos_web.http.server.process`` and ``_answered`` do for the loop:
``next_request``, then ``interim``, then an answer, then ``response_done``.
"""

from __future__ import annotations

import string

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clos_web.http import (
    BadRequest,
    Buffer,
    HTTPConnection,
    HTTPError,
    Limits,
    PayloadTooLarge,
    Request,
    RequestTimeout,
    Response,
    State,
    StreamingError,
    header_block,
)

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                      HealthCheck.data_too_large])
INF = float("inf")
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

GET = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
GET_A = b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n"
GET_CLOSE = b"GET /bye HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
HEAD = b"HEAD /h HTTP/1.1\r\nHost: t\r\n\r\n"
GET_10 = b"GET /old HTTP/1.0\r\n\r\n"
GET_10_KEEP = b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
POST_HEAD = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\n"
POST = POST_HEAD + b"hello"
POST_CHUNKED = (b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
EXPECT_HEAD = (b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
               b"Expect: 100-continue\r\n\r\n")


# --------------------------------------------------------------------------------------------
# Helpers


def connection(**limits) -> HTTPConnection:
    """A fresh connection with ``Limits(**limits)``."""
    return HTTPConnection(Limits(**limits))


def busy_with(data: bytes, now: float = 0.0, **limits) -> tuple[HTTPConnection, Request]:
    """A connection that has received ``data`` and handed out its first request (BUSY)."""
    http = connection(**limits)
    http.receive_data(data)
    request = http.next_request(now)
    assert request is not None and http.state is State.BUSY
    return http, request


def serve_all(http: HTTPConnection, pieces, now: float = 0.0, body: bytes = b"ok"):
    """Feed ``pieces`` one at a time and answer every request as the server's loop does.

    Returns ``(requests, interims)``: the requests in the order they came out and every
    non-empty ``interim()``. Bounded: more requests than bytes means the connection spins.
    """
    requests, interims = [], []
    bound = sum(len(p) for p in pieces) + 2
    for piece in pieces:
        http.receive_data(piece)
        while http.wants_input:
            request = http.next_request(now)
            interim = http.interim()
            if interim:
                interims.append(interim)
            if request is None:
                break
            requests.append(request)
            assert len(requests) <= bound, "next_request keeps returning requests"
            http.encode(Response(body))
            http.response_done(now)
    return requests, interims


def one_request(data: bytes) -> Request:
    """``data`` parsed on its own connection (the reference for split tests)."""
    return busy_with(data)[1]


def header_lines(head: bytes) -> list[bytes]:
    """The field lines of a response head (status line and blank line left out)."""
    assert head.endswith(b"\r\n\r\n"), head
    return head[:-4].split(b"\r\n")[1:]


def fields_named(head: bytes, name: bytes) -> list[bytes]:
    """The values of the fields called ``name`` (case-insensitive) in ``head``."""
    out = []
    for line in header_lines(head):
        field, _, value = line.partition(b":")
        if field.strip().lower() == name.lower():
            out.append(value.strip())
    return out


def h11_read(method: bytes, data: bytes) -> list:
    """What an h11 client that sent ``method /`` makes of response bytes ``data``."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method=method, target="/", headers=[("Host", "t")]))
    client.send(h11.EndOfMessage())
    client.receive_data(data)
    events = []
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA or event is h11.PAUSED:
            return events
        events.append(event)
        if type(event) is h11.EndOfMessage:
            return events


# --------------------------------------------------------------------------------------------
# States and deadlines


def test_a_fresh_connection_is_idle_with_no_deadline():
    http = connection()
    assert http.state is State.IDLE
    assert http.deadline == INF
    assert http.wants_input
    assert http.next_request(now=0.0) is None
    assert http.state is State.IDLE
    assert http.timed_out(now=1e9) is False


def test_first_bytes_start_the_header_deadline():
    http = connection(header_timeout=10.0)
    http.receive_data(b"GET / HT")
    assert http.state is State.IDLE  # receive_data only buffers
    assert http.next_request(now=5.0) is None
    assert http.state is State.HEAD
    assert http.deadline == 15.0


def test_more_head_bytes_do_not_move_the_header_deadline():
    # a slowloris client sending a byte now and then must not keep its head alive for ever
    http = connection(header_timeout=10.0)
    for i, byte in enumerate(b"GET / HTTP/1.1\r\nHost: t\r\n"):
        http.receive_data(bytes([byte]))
        assert http.next_request(now=float(i) / 10) is None
        assert http.state is State.HEAD
        assert http.deadline == 10.0


def test_a_parsed_head_with_a_body_pending_is_body_state_with_the_body_deadline():
    http = connection(header_timeout=10.0, body_timeout=30.0)
    http.receive_data(POST_HEAD[:10])
    http.next_request(now=1.0)
    assert (http.state, http.deadline) == (State.HEAD, 11.0)
    http.receive_data(POST_HEAD[10:] + b"he")
    assert http.next_request(now=4.0) is None
    assert (http.state, http.deadline) == (State.BODY, 34.0)
    http.receive_data(b"l")
    assert http.next_request(now=20.0) is None
    assert (http.state, http.deadline) == (State.BODY, 34.0)  # body bytes do not extend it


def test_head_and_part_of_the_body_at_once_go_straight_to_body():
    http = connection(body_timeout=30.0)
    http.receive_data(POST[:-2])
    assert http.next_request(now=2.0) is None
    assert (http.state, http.deadline) == (State.BODY, 32.0)


def test_a_complete_request_is_busy_with_no_deadline():
    http = connection()
    http.receive_data(POST[:-1])
    http.next_request(now=1.0)
    http.receive_data(POST[-1:])
    request = http.next_request(now=2.0)
    assert (request.method, request.path, request.body) == ("POST", "/echo", b"hello")
    assert http.state is State.BUSY
    assert http.request is request
    assert http.deadline == INF
    assert not http.wants_input


def test_response_done_goes_idle_with_the_keepalive_deadline():
    http, _ = busy_with(GET, keepalive_timeout=60.0)
    http.encode(Response(b"x"))
    http.response_done(now=7.0)
    assert http.state is State.IDLE
    assert http.request is None
    assert http.deadline == 67.0
    assert http.wants_input


def test_response_done_outside_busy_changes_nothing():
    http = connection()
    http.response_done(now=3.0)
    assert (http.state, http.deadline) == (State.IDLE, INF)
    http.receive_data(b"GET")
    http.next_request(now=1.0)
    http.response_done(now=3.0)
    assert (http.state, http.deadline) == (State.HEAD, 11.0)


@pytest.mark.parametrize("data", [
    GET_10,                                                            # HTTP/1.0 default
    GET_CLOSE,                                                         # asked by the request
    b"GET / HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, CLOSE\r\n\r\n",  # a token, any case
    b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",         # close wins
], ids=["http10", "connection-close", "close-token", "http10-close-wins"])
def test_requests_that_close_end_closing(data):
    http, request = busy_with(data)
    assert request.keep_alive is False
    assert http.keep_alive is False
    head = http.head(200, length=0)
    assert fields_named(head, b"connection") == [b"close"]
    http.response_done(now=5.0)
    assert http.state is State.CLOSING
    assert http.deadline == 65.0  # a client that does not read its answer is closed
    assert not http.wants_input
    assert http.next_request(now=6.0) is None


def test_a_responses_connection_close_through_head_closes():
    http, _ = busy_with(GET + GET_A)
    head = http.head(200, header_block([("X-A", "1"), ("Connection", "close")]), length=0)
    assert http.keep_alive is False
    assert fields_named(head, b"connection") == [b"close"]  # written once, by the writer
    assert fields_named(head, b"x-a") == [b"1"]
    http.response_done(now=1.0)
    assert http.state is State.CLOSING
    assert http.next_request(now=1.0) is None  # the pipelined request is never answered


def test_a_responses_connection_close_through_encode_closes():
    http, _ = busy_with(GET + GET_A)
    data = http.encode(Response(b"bye", headers=[("Connection", "close")]))
    assert http.keep_alive is False
    head, _, body = data.partition(b"\r\n\r\n")
    assert body == b"bye"
    assert fields_named(head + b"\r\n\r\n", b"connection") == [b"close"]
    http.response_done(now=1.0)
    assert http.state is State.CLOSING
    assert http.next_request(now=1.0) is None


def test_a_cached_response_with_connection_close_closes_every_time():
    response = Response(b"bye", headers=[("Connection", "close")])
    for _ in range(2):  # the second encode uses the fields cached on the response
        http, _ = busy_with(GET)
        http.encode(response)
        assert http.keep_alive is False


CONNECTION_TOKENS = st.sampled_from(["close", "keep-alive", "upgrade", "x-custom", "te"])


@settings(max_examples=100, **SETTINGS)
@given(st.lists(CONNECTION_TOKENS, min_size=1, max_size=4), st.data())
def test_a_responses_connection_field_closes_iff_it_says_close(tokens, data):
    tokens = [data.draw(st.sampled_from([t, t.upper(), t.title()])) for t in tokens]
    value = ", ".join(tokens)
    closes = any(t.lower() == "close" for t in tokens)
    block = header_block([("X-Before", "1"), ("Connection", value), ("X-After", "2")])

    http, _ = busy_with(GET)
    head = http.head(200, block, length=0)
    assert http.keep_alive is (not closes)
    assert fields_named(head, b"connection") == ([b"close"] if closes else [])
    assert fields_named(head, b"x-before") == [b"1"] and fields_named(head, b"x-after") == [b"2"]

    http, _ = busy_with(GET)
    wire = http.encode(Response(b"", headers=[("Connection", value)]))
    assert http.keep_alive is (not closes)
    assert fields_named(wire, b"connection") == ([b"close"] if closes else [])


def test_a_responses_connection_keep_alive_does_not_keep_a_closing_request_open():
    http, _ = busy_with(GET_10)
    head = http.head(200, header_block([("Connection", "keep-alive")]), length=0)
    assert fields_named(head, b"connection") == [b"close"]
    http.response_done(now=0.0)
    assert http.state is State.CLOSING


def test_a_body_with_no_length_and_not_chunked_closes():
    http, _ = busy_with(GET)
    head = http.head(200)
    assert http.keep_alive is False
    assert fields_named(head, b"content-length") == []
    assert fields_named(head, b"transfer-encoding") == []
    assert fields_named(head, b"connection") == [b"close"]
    http.response_done(now=0.0)
    assert http.state is State.CLOSING


@pytest.mark.parametrize("status", [204, 304])
def test_a_status_without_a_body_needs_no_length_to_keep_alive(status):
    http, _ = busy_with(GET)
    head = http.head(status)
    assert http.keep_alive is True
    assert fields_named(head, b"connection") == []
    http.response_done(now=0.0)
    assert http.state is State.IDLE


def test_chunked_keeps_an_http11_connection_alive():
    http, _ = busy_with(GET)
    head = http.head(200, chunked=True)
    assert fields_named(head, b"transfer-encoding") == [b"chunked"]
    assert http.keep_alive is True
    http.response_done(now=0.0)
    assert http.state is State.IDLE


def test_drain_while_answering_makes_this_answer_the_last():
    http, _ = busy_with(GET + GET_A)
    http.drain()
    head = http.head(200, length=0)
    assert fields_named(head, b"connection") == [b"close"]
    http.response_done(now=2.0)
    assert http.state is State.CLOSING
    assert http.next_request(now=2.0) is None


def test_drain_while_idle_makes_the_next_request_the_last():
    http = connection()
    http.drain()
    assert http.state is State.IDLE
    http.receive_data(GET)
    request = http.next_request(now=0.0)
    assert request.keep_alive is True  # the request asked for more; the server says no
    assert http.keep_alive is False
    assert http.end_of_head(200) == b"Connection: close\r\n\r\n"
    http.response_done(now=0.0)
    assert http.state is State.CLOSING


def test_drain_after_the_head_is_written_still_closes_after_the_answer():
    http, _ = busy_with(GET)
    head = http.head(200, length=0)
    assert fields_named(head, b"connection") == []
    http.drain()
    http.response_done(now=0.0)
    assert http.state is State.CLOSING


# -- timed_out in every state ----------------------------------------------------------------


def test_timed_out_in_idle_closes_quietly_at_the_deadline():
    http, _ = busy_with(GET, keepalive_timeout=60.0)
    http.head(204)
    http.response_done(now=10.0)
    assert http.timed_out(now=69.999) is False
    assert http.timed_out(now=70.0) is True
    assert http.state is State.IDLE


@pytest.mark.parametrize("pieces, state, deadline", [
    ([b"GET / HTTP/1.1\r\n"], State.HEAD, 10.0),
    ([POST_HEAD + b"he"], State.BODY, 30.0),
    ([POST_HEAD[:8], POST_HEAD[8:]], State.BODY, 30.0),
])
def test_timed_out_in_head_or_body_is_a_408_and_closing(pieces, state, deadline):
    http = connection(header_timeout=10.0, body_timeout=30.0)
    for piece in pieces:
        http.receive_data(piece)
        assert http.next_request(now=0.0) is None
    assert (http.state, http.deadline) == (state, deadline)
    assert http.timed_out(now=deadline - 0.001) is False
    assert http.state is state
    error = http.timed_out(now=deadline)
    assert isinstance(error, RequestTimeout) and isinstance(error, HTTPError)
    assert error.status == 408
    assert http.state is State.CLOSING
    assert http.keep_alive is False
    assert http.request is None
    # the 408 goes out through the one head writer, closing
    wire = http.encode(Response(f"{error.status} {error.reason}\n", status=error.status))
    assert wire.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert fields_named(wire.partition(b"\r\n\r\n")[0] + b"\r\n\r\n", b"connection") == [b"close"]
    left = bytes(http.buf.data)
    http.receive_data(GET)  # too late: discarded
    assert bytes(http.buf.data) == left
    assert http.next_request(now=deadline) is None


def test_a_408_connection_still_has_a_deadline_for_a_client_that_does_not_read():
    http = connection(header_timeout=10.0, keepalive_timeout=60.0)
    http.receive_data(b"GET / HTTP/1.1\r\n")
    http.next_request(now=0.0)
    assert isinstance(http.timed_out(now=10.0), RequestTimeout)
    assert http.state is State.CLOSING
    # as after a refused request or a closing answer: CLOSING is closed when its time is up
    assert http.deadline < INF
    assert http.timed_out(now=10.0 + 60.0) is True


def test_timed_out_while_busy_is_nothing_however_long_the_answer_takes():
    http, _ = busy_with(GET)
    assert http.deadline == INF
    assert http.timed_out(now=1e12) is False
    assert http.state is State.BUSY


def test_timed_out_when_closing_closes_quietly_after_the_deadline():
    http, _ = busy_with(GET_CLOSE, keepalive_timeout=60.0)
    http.head(204)
    http.response_done(now=1.0)
    assert http.state is State.CLOSING
    assert http.timed_out(now=60.9) is False
    assert http.timed_out(now=61.0) is True


def test_timed_out_after_a_refused_request_closes_quietly():
    http = connection(keepalive_timeout=60.0)
    http.receive_data(b"\x16\x03\x01\x02\x00")  # a TLS ClientHello
    with pytest.raises(BadRequest):
        http.next_request(now=3.0)
    assert (http.state, http.deadline) == (State.CLOSING, 63.0)
    assert http.timed_out(now=62.0) is False
    assert http.timed_out(now=63.0) is True


def test_timed_out_on_a_stream_or_a_switched_connection_is_nothing():
    http, _ = busy_with(GET, stream_idle_timeout=5.0)
    http.start_stream(object(), now=0.0)
    assert http.timed_out(now=100.0) is False  # the server asks the stream (stream_idle)
    assert http.state is State.STREAM
    http, _ = busy_with(GET)
    http.switch()
    assert http.timed_out(now=1e12) is False
    assert http.state is State.SWITCHED


def test_a_stray_empty_line_between_requests_leaves_the_connection_idle():
    # RFC 9112 2.2: empty lines before a request line are ignored; nothing of a request has
    # arrived, so the idle keep-alive deadline (a quiet close) stands, not a 408
    http, _ = busy_with(POST, keepalive_timeout=60.0, header_timeout=10.0)
    http.head(204)
    http.response_done(now=0.0)
    http.receive_data(b"\r\n")
    assert http.next_request(now=1.0) is None
    assert http.buf.data == bytearray()
    assert (http.state, http.deadline) == (State.IDLE, 60.0)
    assert http.timed_out(now=11.0) is False


# --------------------------------------------------------------------------------------------
# Pipelining


def test_pipelined_requests_come_out_one_at_a_time_in_order():
    http = connection()
    http.receive_data(GET_A + POST + POST_CHUNKED)
    first = http.next_request(now=0.0)
    assert first.path == "/a"
    assert http.next_request(now=0.0) is None  # BUSY: answered in order
    assert http.next_request(now=0.0) is None
    http.head(204)
    http.response_done(now=1.0)
    second = http.next_request(now=1.0)
    assert (second.path, second.body) == ("/echo", b"hello")
    assert http.next_request(now=1.0) is None
    http.encode(Response(b"hello"))
    http.response_done(now=2.0)
    third = http.next_request(now=2.0)
    assert (third.path, third.body, third.chunked) == ("/c", b"abcde", True)
    http.head(200, chunked=True)
    http.response_done(now=3.0)
    assert http.next_request(now=3.0) is None
    assert (http.state, http.deadline) == (State.IDLE, 63.0)
    assert http.buf.data == bytearray()


def test_input_arriving_while_busy_is_kept_for_the_next_request():
    http, _ = busy_with(GET)
    http.receive_data(GET_A[:9])
    assert http.next_request(now=0.0) is None
    http.receive_data(GET_A[9:])
    http.head(204)
    http.response_done(now=1.0)
    assert http.next_request(now=1.0).path == "/a"


def test_a_pipelined_partial_head_after_an_answer_starts_its_header_deadline():
    http, _ = busy_with(GET + GET_A[:5], header_timeout=10.0)
    http.head(204)
    http.response_done(now=4.0)
    assert (http.state, http.deadline) == (State.IDLE, 64.0)
    assert http.next_request(now=4.0) is None
    assert (http.state, http.deadline) == (State.HEAD, 14.0)


def test_a_bad_request_behind_a_good_one_is_refused_in_its_turn():
    http = connection()
    http.receive_data(GET + b"GET / HTTP/1.1\r\n\r\n")  # the second has no Host
    assert http.next_request(now=0.0).path == "/"
    assert http.next_request(now=0.0) is None
    http.head(204)
    http.response_done(now=0.0)
    with pytest.raises(BadRequest):
        http.next_request(now=0.0)
    assert http.state is State.CLOSING


PIPELINE = GET_A + POST + HEAD + POST_CHUNKED + GET_CLOSE


def test_pipeline_split_at_every_byte_gives_the_same_requests():
    reference, _ = serve_all(connection(), [PIPELINE])
    assert [r.path for r in reference] == ["/a", "/echo", "/h", "/c", "/bye"]
    for i in range(len(PIPELINE) + 1):
        got, _ = serve_all(connection(), [PIPELINE[:i], PIPELINE[i:]])
        assert got == reference, i


def test_pipeline_byte_at_a_time_gives_the_same_requests():
    reference, _ = serve_all(connection(), [PIPELINE])
    http = connection()
    got, _ = serve_all(http, [PIPELINE[i:i + 1] for i in range(len(PIPELINE))])
    assert got == reference
    assert http.state is State.CLOSING  # the last one asked to close


TOKEN_CHARS = string.ascii_lowercase + string.digits + "-._~"


@st.composite
def wire_requests(draw):
    """``(bytes, expected (method, target, version, body, keep_alive))`` of a valid request."""
    method = draw(st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"]))
    target = "/" + draw(st.text(TOKEN_CHARS, max_size=8))
    if draw(st.booleans()):
        target += "?" + draw(st.text(TOKEN_CHARS + "=&", max_size=8))
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0"]))
    tokens = draw(st.lists(st.sampled_from(["close", "keep-alive", "Keep-Alive", "upgrade"]),
                           max_size=2, unique=True))
    lines = [f"{method} {target} {version}"]
    if version == "HTTP/1.1" or draw(st.booleans()):
        lines.append("Host: t")
    if tokens:
        lines.append("Connection: " + ", ".join(tokens))
    lowered = [t.lower() for t in tokens]
    if version == "HTTP/1.1":
        keep_alive = "close" not in lowered
    else:
        keep_alive = "keep-alive" in lowered and "close" not in lowered
    body = b""
    framing = b""
    if method in ("POST", "PUT"):
        body = draw(st.binary(max_size=24))
        if version == "HTTP/1.1" and draw(st.booleans()):
            lines.append("Transfer-Encoding: chunked")
            cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=3)))
            edges = [0, *cuts, len(body)]
            pieces = [body[a:b] for a, b in zip(edges, edges[1:]) if b > a]
            framing = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
        else:
            lines.append(f"Content-Length: {len(body)}")
            framing = body
        if version == "HTTP/1.1" and draw(st.booleans()):
            lines.append("Expect: 100-continue")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + framing
    return data, (method, target, version, body, keep_alive)


@st.composite
def split(draw, data: bytes):
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:])]


@settings(max_examples=150, **SETTINGS)
@given(st.lists(wire_requests(), min_size=1, max_size=4), st.data())
def test_pipelines_split_anyhow_give_the_requests_in_order_up_to_the_first_close(reqs, data):
    stream = b"".join(d for d, _ in reqs)
    expected = []
    for _, model in reqs:
        expected.append(model)
        if not model[-1]:
            break  # a request that closes is the last one answered
    pieces = data.draw(split(stream))
    http = connection()
    got, interims = serve_all(http, pieces)
    assert [(r.method, r.target, r.version, r.body, r.keep_alive) for r in got] == expected
    assert set(interims) <= {CONTINUE}
    assert len(interims) <= sum(r.expect_continue for r in got)
    assert http.state is (State.IDLE if expected[-1][-1] else State.CLOSING)
    # the same bytes at once give the same requests
    assert serve_all(connection(), [stream])[0] == got


# --------------------------------------------------------------------------------------------
# Expect: 100-continue


def test_100_continue_once_after_the_head_only():
    http = connection()
    http.receive_data(EXPECT_HEAD[:-3])
    assert http.next_request(now=0.0) is None
    assert http.interim() == b""  # the head is not complete yet
    http.receive_data(EXPECT_HEAD[-3:])
    assert http.next_request(now=0.0) is None
    assert http.state is State.BODY
    assert http.interim() == CONTINUE
    assert http.interim() == b""  # once
    http.receive_data(b"hel")
    assert http.next_request(now=0.0) is None
    assert http.interim() == b""
    http.receive_data(b"lo")
    request = http.next_request(now=0.0)
    assert (request.body, request.expect_continue) == (b"hello", True)
    assert http.interim() == b""


def test_100_continue_is_not_sent_when_the_body_came_with_the_head():
    http = connection()
    http.receive_data(EXPECT_HEAD + b"hello")
    assert http.next_request(now=0.0).body == b"hello"
    assert http.interim() == b""


def test_100_continue_for_a_chunked_body():
    http = connection()
    http.receive_data(b"PUT /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                      b"Expect: 100-continue\r\n\r\n")
    assert http.next_request(now=0.0) is None
    assert http.interim() == CONTINUE
    http.receive_data(b"2\r\nhi\r\n0\r\n\r\n")
    assert http.next_request(now=0.0).body == b"hi"


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n\r\n",               # no body
    b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nExpect: 100-continue\r\n\r\n",
    b"POST / HTTP/1.0\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",     # HTTP/1.0
    POST_HEAD,                                                                   # not asked
], ids=["no-body", "empty-body", "http10", "no-expect"])
def test_no_100_continue_where_it_was_not_asked_or_not_allowed(data):
    http = connection()
    http.receive_data(data)
    http.next_request(now=0.0)
    assert http.interim() == b""


def test_100_continue_at_every_split_of_head_and_body():
    data = EXPECT_HEAD + b"hello"
    for i in range(len(data) + 1):
        got, interims = serve_all(connection(), [data[:i], data[i:]])
        assert [r.body for r in got] == [b"hello"]
        # only when the first piece holds the whole head and not the whole body
        wanted = [CONTINUE] if len(EXPECT_HEAD) <= i < len(data) else []
        assert interims == wanted, i


def test_a_body_limit_refusing_from_the_head_sends_no_100_and_closes():
    class NotYours(HTTPError):
        status = 403

    seen = []

    def body_limit(request):
        seen.append(request)
        raise NotYours(reason="uploads are closed")

    limits = Limits()
    http = HTTPConnection(limits, Buffer(limits=limits, body_limit=body_limit))
    http.receive_data(EXPECT_HEAD)
    with pytest.raises(NotYours) as caught:
        http.next_request(now=2.0)
    assert caught.value.request is seen[0]
    assert (caught.value.request.method, caught.value.request.path) == ("POST", "/up")
    assert http.interim() == b""
    assert http.state is State.CLOSING
    assert http.keep_alive is False
    assert http.deadline == 62.0


def test_a_body_limit_is_asked_once_per_request_with_a_body_only():
    asked = []

    def body_limit(request):
        asked.append(request.path)
        return 3

    limits = Limits()
    http = HTTPConnection(limits, Buffer(limits=limits, body_limit=body_limit))
    small_post = b"POST /s HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi"
    got, _ = serve_all(http, [GET_A + small_post])
    assert [r.path for r in got] == ["/a", "/s"]
    assert asked == ["/s"]
    http.receive_data(EXPECT_HEAD)
    with pytest.raises(PayloadTooLarge):
        http.next_request(now=0.0)
    assert http.interim() == b""
    assert http.state is State.CLOSING


# --------------------------------------------------------------------------------------------
# Bad input


BAD_INPUT = [
    (b"GET / HTTP/1.1\r\n\r\n", 400),                                          # no Host
    (b"\x16\x03\x01\x02\x00\x01\x00", 400),                                    # TLS
    (b"GET / HTTP/1.1\nHost: t\n\n", 400),                                     # bare LF
    (b"GET /" + b"a" * 200 + b" HTTP/1.1\r\n", 414),                           # request line
    (b"GET / HTTP/1.1\r\nHost: t\r\nX: " + b"a" * 300 + b"\r\n", 431),          # fields
    (b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505),                               # version
    (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", 501),  # coding
    (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n", 400),                              # smuggling
    (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n", 413),      # body
    (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
]
SMALL = dict(max_request_line=100, max_header_bytes=200, max_body=1000)


@pytest.mark.parametrize("data, status", BAD_INPUT, ids=[str(s) + "-" + str(i)
                                                         for i, (_, s) in enumerate(BAD_INPUT)])
@pytest.mark.parametrize("after", [b"", GET], ids=["alone", "behind-a-good-one"])
def test_bad_input_is_an_http_error_and_closing_and_later_input_is_discarded(data, status,
                                                                             after):
    http = connection(keepalive_timeout=60.0, **SMALL)
    if after:
        http.receive_data(after)
        http.next_request(now=0.0)
        http.head(204)
        http.response_done(now=0.0)
    http.receive_data(data)
    with pytest.raises(HTTPError) as caught:
        http.next_request(now=1.0)
    assert caught.value.status == status
    assert http.state is State.CLOSING
    assert http.keep_alive is False
    assert http.deadline == 61.0
    assert not http.wants_input
    left = bytes(http.buf.data)
    http.receive_data(GET * 3)
    assert bytes(http.buf.data) == left  # discarded
    assert http.next_request(now=2.0) is None
    assert http.interim() == b""


@settings(max_examples=100, **SETTINGS)
@given(st.sampled_from(BAD_INPUT), st.data())
def test_bad_input_split_anyhow_is_the_same_error(case, data):
    bad, status = case
    pieces = data.draw(split(bad))
    http = connection(**SMALL)
    with pytest.raises(HTTPError) as caught:
        serve_all(http, pieces)
    assert caught.value.status == status
    assert http.state is State.CLOSING


def test_a_stream_discards_input():
    http, _ = busy_with(GET)
    http.start_stream("sub", now=0.0)
    http.receive_data(GET * 10)
    assert http.buf.data == bytearray()
    assert http.next_request(now=0.0) is None


def test_a_switched_connection_keeps_its_input_for_the_new_protocol():
    http, _ = busy_with(GET + b"\x81\x05frame")  # bytes behind the upgrade request
    http.head(101, header_block([("Upgrade", "websocket"), ("Connection", "Upgrade")]))
    http.switch()
    assert (http.state, http.deadline) == (State.SWITCHED, INF)
    http.receive_data(b"more")
    assert bytes(http.buf.data) == b"\x81\x05framemore"
    assert http.next_request(now=0.0) is None


# --------------------------------------------------------------------------------------------
# HEAD and HTTP/1.0


def test_head_request_gets_its_content_length_and_no_body():
    http, request = busy_with(HEAD)
    assert http.head_only
    head = http.head(200, length=5)
    assert fields_named(head, b"content-length") == [b"5"]
    assert head.endswith(b"\r\n\r\n")
    wire = http.encode(Response(b"hello", content_type="text/plain"))
    assert wire.endswith(b"\r\n\r\n") and b"hello" not in wire
    assert fields_named(wire, b"content-length") == [b"5"]
    events = h11_read(b"HEAD", wire)
    assert [type(e) for e in events] == [h11.Response, h11.EndOfMessage]
    assert dict(events[0].headers)[b"content-length"] == b"5"
    http.response_done(now=0.0)
    assert http.state is State.IDLE


def test_get_gets_the_body_a_head_request_does_not():
    http, _ = busy_with(GET)
    assert not http.head_only
    wire = http.encode(Response(b"hello"))
    events = h11_read(b"GET", wire)
    assert [type(e) for e in events] == [h11.Response, h11.Data, h11.EndOfMessage]
    assert events[1].data == b"hello"


def test_end_of_head_for_head_and_http10():
    http, _ = busy_with(GET)
    assert http.end_of_head(200) == b"\r\n"
    http, _ = busy_with(GET_10_KEEP)
    assert http.http10
    assert http.end_of_head(200) == b"Connection: keep-alive\r\n\r\n"
    http, _ = busy_with(GET_10)
    assert http.end_of_head(200) == b"Connection: close\r\n\r\n"


def test_http10_keep_alive_when_asked_is_written_back():
    http, request = busy_with(GET_10_KEEP)
    assert request.keep_alive is True and http.keep_alive is True
    head = http.head(200, length=2)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert fields_named(head, b"connection") == [b"keep-alive"]
    http.response_done(now=0.0)
    assert http.state is State.IDLE
    http.receive_data(GET_10_KEEP)
    http.next_request(now=0.0)
    wire = http.encode(Response(b"ok"))
    assert fields_named(wire.partition(b"\r\n\r\n")[0] + b"\r\n\r\n",
                        b"connection") == [b"keep-alive"]
    http.response_done(now=0.0)
    assert http.state is State.IDLE


def test_chunked_on_http10_becomes_close_delimited():
    http, _ = busy_with(GET_10_KEEP)
    head = http.head(200, header_block([("Content-Type", "text/event-stream")]), chunked=True)
    assert fields_named(head, b"transfer-encoding") == []
    assert fields_named(head, b"content-length") == []
    assert fields_named(head, b"connection") == [b"close"]
    assert http.keep_alive is False
    http.response_done(now=0.0)
    assert http.state is State.CLOSING


def test_http10_without_keep_alive_is_told_close():
    http, _ = busy_with(GET_10)
    assert http.http10
    wire = http.encode(Response(b"x"))
    assert fields_named(wire.partition(b"\r\n\r\n")[0] + b"\r\n\r\n",
                        b"connection") == [b"close"]


# --------------------------------------------------------------------------------------------
# Streams, interim responses and bookkeeping


def test_writing_a_response_to_a_stream_is_a_streaming_error():
    http, _ = busy_with(GET)
    http.head(200, chunked=True)
    http.start_stream("sub", now=0.0)
    with pytest.raises(StreamingError):
        http.head(200, length=0)
    with pytest.raises(StreamingError):
        http.end_of_head(200)
    with pytest.raises(StreamingError):
        http.encode(Response(b"x"))
    assert http.state is State.STREAM


def test_start_stream_takes_the_idle_deadline_from_the_limits():
    http, _ = busy_with(GET, stream_idle_timeout=45.0)
    stream = object()
    http.start_stream(stream, now=10.0)
    assert http.state is State.STREAM
    assert http.stream is stream
    assert http.deadline == 55.0
    assert http.keep_alive is False
    assert http.request is None
    http.response_done(now=11.0)  # a stream is not a finished answer
    assert (http.state, http.deadline) == (State.STREAM, 55.0)


def test_start_stream_without_an_idle_limit_has_no_deadline():
    http, _ = busy_with(GET)
    assert http.limits.stream_idle_timeout is None
    http.start_stream(object(), now=10.0)
    assert http.deadline == INF


def test_a_101_keeps_the_fields_it_is_given():
    http, _ = busy_with(b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\n"
                        b"Upgrade: websocket\r\n\r\n")
    block = header_block([("Upgrade", "websocket"), ("Connection", "Upgrade"),
                          ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")])
    head = http.head(101, block)
    assert head == b"HTTP/1.1 101 Switching Protocols\r\n" + block + b"\r\n"
    assert http.keep_alive is True  # an interim response decides nothing about the connection
    assert http.response_started is False
    http.switch()
    assert http.state is State.SWITCHED


def test_a_100_through_head_is_the_status_line_alone():
    http, _ = busy_with(GET)
    assert http.head(100) == CONTINUE


def test_status_and_response_started_bookkeeping():
    http = connection()
    assert (http.status, http.response_started) == (0, False)
    http.receive_data(GET + GET_A + GET + HEAD)

    http.next_request(now=0.0)
    assert (http.status, http.response_started) == (0, False)
    http.head(100)
    assert (http.status, http.response_started) == (0, False)  # interim: not the answer
    http.head(404, length=0)
    assert (http.status, http.response_started) == (404, True)
    http.response_done(now=0.0)

    http.next_request(now=0.0)
    assert http.response_started is False  # a new request, no answer yet
    assert http.status == 404  # the last head written, until the next one
    http.encode(Response(b"", status=201))
    assert (http.status, http.response_started) == (201, True)
    http.response_done(now=0.0)

    http.next_request(now=0.0)
    assert http.response_started is False
    http.end_of_head(200)
    assert (http.status, http.response_started) == (200, True)
    http.response_done(now=0.0)

    http.next_request(now=0.0)
    assert http.head_only and http.response_started is False
    http.head(304)
    assert (http.status, http.response_started) == (304, True)


def test_repr_is_short_whatever_the_request_holds():
    http = connection()
    http.receive_data(b"GET /" + b"x" * 5000 + b" HTTP/1.1\r\nHost: t\r\n\r\n")
    http.next_request(now=0.0)
    text = repr(http)
    assert text.startswith("<HTTPConnection BUSY request=")
    assert len(text) < 150
