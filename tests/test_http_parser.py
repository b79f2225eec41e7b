"""Tests of the sans-I/O HTTP/1.1 request parser (``clos_web.http``).

Property tests generate valid requests together with the :class:`Request` they must parse to,
then check that any way of splitting the bytes gives the same requests, that h11 agrees, and
that garbage and mutated input only ever raise :class:`HTTPError` with a 4xx/5xx status.
Example tests pin every refusal to its status code.
"""

from __future__ import annotations

import contextlib
import signal
import string
import time

import attrs
import h11
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from clos_web.http import (
    BadRequest,
    Buffer,
    HTTPError,
    Limits,
    Request,
    parse,
)

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                      HealthCheck.data_too_large])

# --------------------------------------------------------------------------------------------
# Feeding helpers


@contextlib.contextmanager
def time_limit(seconds: float):
    """Fail (instead of hanging forever) if the block runs longer than ``seconds``."""

    def on_alarm(signum, frame):
        raise TimeoutError(f"parser did not finish within {seconds} s (hang?)")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def feed(pieces, limits: Limits | None = None, buf: Buffer | None = None):
    """Feed ``pieces`` one by one, parsing every complete request; ``(requests, buffer)``.

    The loop is bounded: each call to ``parse`` that returns a request must have consumed bytes,
    so more calls than bytes means the parser is spinning.
    """
    if buf is None:
        buf = Buffer(limits=limits if limits is not None else Limits())
    total = sum(len(p) for p in pieces)
    requests = []
    for piece in pieces:
        buf.data += piece
        for _ in range(total + 2):
            request = parse(buf)
            if request is None:
                break
            assert isinstance(request, Request)
            requests.append(request)
        else:
            raise AssertionError("parse(buf) keeps returning requests: not consuming input")
    return requests, buf


def outcome(pieces, limits: Limits | None = None):
    """``(requests parsed before stopping, HTTPError raised or None)``; nothing else escapes."""
    buf = Buffer(limits=limits if limits is not None else Limits())
    requests = []
    total = sum(len(p) for p in pieces)
    try:
        for piece in pieces:
            buf.data += piece
            for _ in range(total + 2):
                request = parse(buf)
                if request is None:
                    break
                requests.append(request)
            else:
                raise AssertionError("parse(buf) keeps returning requests")
    except HTTPError as exc:
        assert isinstance(exc.status, int) and 400 <= exc.status <= 599, exc
        assert isinstance(exc.reason, str) and exc.reason
        return requests, exc
    return requests, None


def bytewise(data: bytes):
    return [data[i:i + 1] for i in range(len(data))]


def split_at(data: bytes, cuts) -> list:
    cuts = sorted(set(c for c in cuts if 0 < c < len(data)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


def status(data: bytes, limits: Limits | None = None, pieces=None):
    """Status of the HTTPError raised while feeding ``data`` (whole, or as ``pieces``)."""
    try:
        feed(pieces if pieces is not None else [data], limits)
    except HTTPError as exc:
        return exc.status
    return None


def refused(data: bytes, expected: int, limits: Limits | None = None):
    """``data`` is refused with ``expected``, whole and byte-at-a-time."""
    assert status(data, limits) == expected, "whole"
    assert status(data, limits, bytewise(data)) == expected, "byte at a time"


def one(data: bytes, limits: Limits | None = None) -> Request:
    requests, buf = feed([data], limits)
    assert len(requests) == 1 and not buf.data and buf.pending is None
    return requests[0]


# --------------------------------------------------------------------------------------------
# Strategies: valid requests together with the Request they must parse to

TCHAR = "!#$%&'*+-.^_`|~" + string.digits + string.ascii_letters
FIELD_VCHAR = list(range(0x21, 0x7F)) + list(range(0x80, 0x100))
PCHAR = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@"
# Names the generator adds deliberately (or never, for h11's sake), not at random.
RESERVED = {"host", "content-length", "transfer-encoding", "connection", "expect", "cookie",
            "upgrade", "te", "trailer"}

tokens = st.text(TCHAR, min_size=1, max_size=10)
methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]) | tokens
field_names = tokens.filter(lambda n: n.lower() not in RESERVED)
ows = st.text(" \t", max_size=3).map(str.encode)
ws = st.text(" \t", min_size=1, max_size=3).map(str.encode)
words = st.lists(st.sampled_from(FIELD_VCHAR), min_size=1, max_size=8).map(bytes)
segments = st.text(PCHAR, max_size=8) | st.just("%2F")


@st.composite
def field_values(draw) -> bytes:
    """field-value: words of VCHAR / obs-text with inner runs of SP / HTAB (maybe empty)."""
    if draw(st.integers(0, 9)) == 0:
        return b""
    value = draw(words)
    for sep, word in draw(st.lists(st.tuples(ws, words), max_size=3)):
        value += sep + word
    return value


@st.composite
def targets(draw):
    path = "/" + "/".join(draw(st.lists(segments, max_size=4)))
    query = draw(st.none() | st.text(PCHAR + "/?", max_size=12))
    target = path if query is None else f"{path}?{query}"
    return target, path, query or ""


def case_variant(draw, name: str) -> str:
    return "".join(c.upper() if draw(st.booleans()) else c.lower() for c in name)


def field_line(name: str, value: bytes, lead: bytes, trail: bytes) -> bytes:
    return name.encode("latin-1") + b":" + lead + value + trail + b"\r\n"


@attrs.frozen
class Generated:
    wire: bytes
    expected: Request


@st.composite
def valid_requests(draw, h11_safe: bool = False, allow_10: bool = True):
    """A valid request's bytes and the Request it must parse to.

    ``h11_safe`` leaves out what is valid but h11 refuses (BWS before a chunk extension).
    """
    version = "HTTP/1.0" if allow_10 and draw(st.integers(0, 5)) == 0 else "HTTP/1.1"
    method = draw(methods)
    target, path, query = draw(targets())

    # (name, value, wire line) for every field; positions shuffled below.
    fields = []

    def add(name: str, value: bytes):
        line = field_line(name, value, draw(ows), draw(ows))
        fields.append((name, value.decode("latin-1"), line))

    host = draw(st.text(string.ascii_lowercase + string.digits + ".-", min_size=1, max_size=12)
                | st.just("[::1]:8080") | st.just(""))
    add(case_variant(draw, "host"), host.encode())
    for _ in range(draw(st.integers(0, 8))):
        add(draw(field_names), draw(field_values()))

    framing = draw(st.sampled_from(["none", "length", "chunked"] if version == "HTTP/1.1"
                                   else ["none", "length"]))
    body = b""
    body_wire = b""
    content_length = None
    if framing == "length":
        body = draw(st.binary(max_size=64))
        content_length = len(body)
        digits = "0" * draw(st.integers(0, 2)) + str(len(body))
        add(case_variant(draw, "content-length"), digits.encode())
        body_wire = body
    elif framing == "chunked":
        add(case_variant(draw, "transfer-encoding"), case_variant(draw, "chunked").encode())
        exts = [b"", b";a=b", b";ext", b';name="quoted value"', b";a=1;b=2", b" "]
        if not h11_safe:
            exts += [b" ;x=y", b"\t;x"]
        parts = []
        for chunk in draw(st.lists(st.binary(min_size=1, max_size=40), max_size=5)):
            size = "0" * draw(st.integers(0, 3)) + format(len(chunk), draw(st.sampled_from("xX")))
            parts.append(size.encode() + draw(st.sampled_from(exts)) + b"\r\n" + chunk + b"\r\n")
            body += chunk
        parts.append(b"0" * draw(st.integers(1, 3)) + draw(st.sampled_from(exts)) + b"\r\n")
        for _ in range(draw(st.integers(0, 2))):
            parts.append(field_line(draw(field_names), draw(field_values()), draw(ows),
                                    draw(ows)))
        parts.append(b"\r\n")
        body_wire = b"".join(parts)

    connection = draw(st.sampled_from([None, "close", "keep-alive", "Keep-Alive", "Close",
                                       "foo, close", "keep-alive, foo"]))
    if connection is not None:
        add(case_variant(draw, "connection"), connection.encode())
    expect = draw(st.sampled_from([None, None, "100-continue", "100-Continue"]))
    if expect is not None:
        add("Expect", expect.encode())

    order = draw(st.permutations(range(len(fields))))
    fields = [fields[i] for i in order]

    raw = [(name, value) for name, value, _ in fields]
    headers = {}
    for name, value in raw:
        lname = name.lower()
        headers[lname] = headers[lname] + ", " + value if lname in headers else value
    tokens_ = [t.strip().lower() for t in (connection or "").split(",")]
    if version == "HTTP/1.1":
        keep_alive = "close" not in tokens_
    else:
        keep_alive = "keep-alive" in tokens_ and "close" not in tokens_
    has_body = framing == "chunked" or bool(content_length)
    expected = Request(
        method=method, target=target, version=version, headers=headers, raw_headers=raw,
        body=body, keep_alive=keep_alive, path=path, query=query,
        expect_continue=expect is not None and has_body and version == "HTTP/1.1",
        content_length=content_length, chunked=framing == "chunked",
    )
    head = f"{method} {target} {version}\r\n".encode() + b"".join(f[2] for f in fields) + b"\r\n"
    return Generated(head + body_wire, expected)


@st.composite
def pipelines(draw, max_requests: int = 3):
    """1..max_requests valid requests back to back, sometimes with empty lines between."""
    gens = draw(st.lists(valid_requests(), min_size=1, max_size=max_requests))
    wire = b""
    for gen in gens:
        wire += b"\r\n" * draw(st.sampled_from([0, 0, 0, 1, 2])) + gen.wire
    return wire, [g.expected for g in gens]


# --------------------------------------------------------------------------------------------
# 1-2. Generated valid requests parse to the model, however the bytes are split


@settings(max_examples=200, **SETTINGS)
@given(valid_requests())
def test_valid_request_parses_to_model(gen):
    assert parse(gen.wire) == gen.expected
    request = one(gen.wire)
    assert request == gen.expected


@settings(max_examples=80, **SETTINGS)
@given(pipelines())
def test_pipeline_every_split_point(pipeline):
    wire, expected = pipeline
    whole, buf = feed([wire])
    assert whole == expected
    assert not buf.data and buf.pending is None and not buf.continue_needed
    points = range(len(wire) + 1)
    if len(wire) > 200:  # keep the run time bounded: every point near the edges, a stride between
        points = sorted({*range(60), *range(len(wire) - 60, len(wire) + 1),
                         *range(0, len(wire), len(wire) // 60)})
    for i in points:
        requests, buf = feed([wire[:i], wire[i:]])
        assert requests == expected, f"split at {i}"
        assert not buf.data and buf.pending is None and not buf.continue_needed


@settings(max_examples=100, **SETTINGS)
@given(pipelines(), st.data())
def test_pipeline_many_pieces(pipeline, data):
    wire, expected = pipeline
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=40))
    requests, buf = feed(split_at(wire, cuts))
    assert requests == expected
    assert not buf.data and buf.pending is None and not buf.continue_needed


@settings(max_examples=60, **SETTINGS)
@given(pipelines())
def test_pipeline_byte_at_a_time(pipeline):
    wire, expected = pipeline
    requests, buf = feed(bytewise(wire))
    assert requests == expected
    assert not buf.data and buf.pending is None and not buf.continue_needed


@settings(max_examples=60, **SETTINGS)
@given(valid_requests())
def test_continue_needed_only_while_body_missing(gen):
    """Byte at a time: continue_needed is True exactly between head and the body's end."""
    wire, expected = gen.wire, gen.expected
    head_end = wire.index(b"\r\n\r\n") + 4
    buf = Buffer()
    for i in range(len(wire)):
        buf.data += wire[i:i + 1]
        request = parse(buf)
        if i + 1 < len(wire):
            assert request is None
            assert buf.continue_needed == (expected.expect_continue and i + 1 >= head_end)
        else:
            assert request == expected
            assert not buf.continue_needed


# --------------------------------------------------------------------------------------------
# 3. h11 agrees


def h11_parse(wire: bytes):
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(wire)
    event = conn.next_event()
    assert isinstance(event, h11.Request), event
    body = b""
    while True:
        nxt = conn.next_event()
        if isinstance(nxt, h11.Data):
            body += bytes(nxt.data)
        elif isinstance(nxt, h11.EndOfMessage):
            return event, body
        else:
            raise AssertionError(f"h11 gave {nxt!r}")


@settings(max_examples=200, **SETTINGS)
@given(valid_requests(h11_safe=True))
def test_agrees_with_h11(gen):
    ours = parse(gen.wire)
    theirs, body = h11_parse(gen.wire)
    assert ours.method == theirs.method.decode("latin-1")
    assert ours.target == theirs.target.decode("latin-1")
    assert ours.version == "HTTP/" + theirs.http_version.decode()
    mine = [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in ours.raw_headers]
    # h11 lower-cases the Transfer-Encoding value
    mine = [(n, v.lower() if n == b"transfer-encoding" else v) for n, v in mine]
    assert mine == list(theirs.headers)
    assert ours.body == body


# --------------------------------------------------------------------------------------------
# 4. Garbage and mutations: only HTTPError, never a hang, and the split does not matter


def pieces_strategy(data_strategy):
    @st.composite
    def strat(draw):
        data = draw(data_strategy)
        cuts = draw(st.lists(st.integers(0, len(data)), max_size=12))
        return data, split_at(data, cuts)
    return strat()


SPECIAL = [b"\r", b"\n", b"\x00", b" ", b"\t", b"\r\n", b":", b"\r\n\r\n", b"\x7f", b"\xff"]


@st.composite
def mutated_requests(draw):
    wire = bytearray(draw(pipelines(max_requests=2))[0])
    for _ in range(draw(st.integers(1, 5))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "special", "special"]))
        pos = draw(st.integers(0, len(wire)))
        if op == "flip" and pos < len(wire):
            wire[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            wire[pos:pos] = draw(st.binary(min_size=1, max_size=3))
        elif op == "delete":
            del wire[pos:pos + draw(st.integers(1, 3))]
        else:
            wire[pos:pos] = draw(st.sampled_from(SPECIAL))
    return bytes(wire)


PREFIXES = [b"", b"GET / HTTP/1.1\r\n", b"GET / HTTP/1.1\r\nHost: a\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"]
garbage = st.builds(lambda p, b: p + b, st.sampled_from(PREFIXES), st.binary(max_size=200))


def check_robust(data: bytes, pieces: list):
    with time_limit(5):
        whole = outcome([data])
        split = outcome(pieces)
        small = outcome(pieces, Limits(max_request_line=16, max_header_bytes=32, max_body=8))
    del small  # only must not crash or hang
    # However the input is split, the same requests come out, and it is refused or not alike.
    assert split[0] == whole[0]
    assert (split[1] is None) == (whole[1] is None), (split[1], whole[1])


@settings(max_examples=400, **SETTINGS)
@given(pieces_strategy(garbage))
def test_garbage_only_http_errors(case):
    check_robust(*case)


@settings(max_examples=150, **SETTINGS)
@given(pieces_strategy(mutated_requests()))
def test_mutations_only_http_errors(case):
    check_robust(*case)


@settings(max_examples=60, **SETTINGS)
@given(mutated_requests())
def test_mutations_byte_at_a_time(data):
    check_robust(data, bytewise(data))


def test_parse_bytes_incomplete_is_bad_request():
    with pytest.raises(BadRequest) as info:
        parse(b"GET / HTTP/1.1\r\nHost: a\r\n")
    assert info.value.status == 400
    with pytest.raises(BadRequest):
        parse(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nabc")
    with pytest.raises(BadRequest):
        parse(b"")


# --------------------------------------------------------------------------------------------
# 5. Refusals, each with its status

GET = b"GET / HTTP/1.1\r\nHost: a\r\n"


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nX: y\r\n\r\n",
], ids=["no-fields", "other-field"])
def test_missing_host_in_11(data):
    refused(data, 400)


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\nhOST: b\r\n\r\n",
    b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
], ids=["same", "case", "http10"])
def test_repeated_host(data):
    refused(data, 400)


@pytest.mark.parametrize("line", [b"X : y", b"X\t: y", b"Host : a"])
def test_whitespace_before_colon(line):
    refused(GET + line + b"\r\n\r\n", 400)


@pytest.mark.parametrize("data", [
    GET + b"X: y\r\n z\r\n\r\n",
    GET + b"X: y\r\n\tz\r\n\r\n",
    b"GET / HTTP/1.1\r\n Host: a\r\n\r\n",
], ids=["sp", "htab", "first-line"])
def test_obs_fold(data):
    refused(data, 400)


@pytest.mark.parametrize("value", [b"abc", b"-1", b"1.5", b"+5", b"", b"0x5", b"5 5", b"\xb2"])
def test_invalid_content_length(value):
    refused(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: " + value + b"\r\n\r\n12345", 400)


@pytest.mark.parametrize("fields", [
    b"Content-Length: 5\r\nContent-Length: 6\r\n",
    b"Content-Length: 5, 6\r\n",
    b"Content-Length: 5,\r\n",
])
def test_conflicting_content_length(fields):
    refused(b"POST / HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n123456", 400)


@pytest.mark.parametrize("fields", [
    b"Content-Length: 5\r\nContent-Length: 5\r\n",
    b"Content-Length: 5, 5\r\n",
    b"Content-Length: 5,5\r\nContent-Length:  5 \r\n",
])
def test_identical_content_lengths_accepted(fields):
    data = b"POST / HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n12345"
    for pieces in ([data], bytewise(data)):
        (request,), buf = feed(pieces)
        assert request.body == b"12345" and request.content_length == 5
        assert not buf.data


@pytest.mark.parametrize("fields", [
    b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
])
def test_content_length_with_transfer_encoding(fields):
    refused(b"POST / HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n3\r\nabc\r\n0\r\n\r\n", 400)


@pytest.mark.parametrize("coding", [b"gzip", b"chunked, gzip", b"gzip, chunked", b"identity",
                                    b"deflate,chunked"])
def test_unimplemented_transfer_coding(coding):
    refused(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: " + coding
            + b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 501)


def test_transfer_coding_split_over_fields():
    data = (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    refused(data, 501)


def test_chunked_coding_is_case_insensitive():
    request = one(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:  ChUnKeD \r\n\r\n"
                  b"3\r\nabc\r\n0\r\n\r\n")
    assert request.chunked and request.body == b"abc"


LINE_LIMITS = Limits(max_request_line=100)


def test_request_line_at_limit_accepted():
    line = b"GET /" + b"a" * (100 - len(b"GET / HTTP/1.1")) + b" HTTP/1.1"
    assert len(line) == 100
    data = line + b"\r\nHost: a\r\n\r\n"
    assert one(data, LINE_LIMITS).target == line[4:-9].decode()
    requests, _ = feed(bytewise(data), LINE_LIMITS)
    assert len(requests) == 1


def test_request_line_over_limit_whole_head():
    line = b"GET /" + b"a" * 100 + b" HTTP/1.1"
    refused(line + b"\r\nHost: a\r\n\r\n", 414, LINE_LIMITS)


@pytest.mark.parametrize("size", [103, 200, 5000])
def test_request_line_over_limit_before_crlf(size):
    """Only a long line, no CRLF yet: refused without waiting for the rest."""
    data = b"GET /" + b"a" * (size - 5)
    assert status(data, LINE_LIMITS) == 414
    assert status(data, LINE_LIMITS, bytewise(data)) == 414


def test_request_line_over_limit_after_empty_lines():
    """Empty lines before the request line are ignored, so they do not hide a huge line."""
    data = b"\r\n" + b"GET /" + b"a" * 1000
    assert status(data, LINE_LIMITS) == 414
    assert status(data, LINE_LIMITS, bytewise(data)) == 414


HEADER_LIMITS = Limits(max_header_bytes=200)


def test_header_fields_at_limit_accepted():
    fields = GET[len(b"GET / HTTP/1.1\r\n"):] + b"X: " + b"v" * 200
    fields = fields[:200 - 4 - 2] + b"\r\n"
    assert len(fields) == 200 - 4
    data = b"GET / HTTP/1.1\r\n" + fields + b"\r\n"
    assert one(data, HEADER_LIMITS).headers["x"].startswith("v")
    requests, _ = feed(bytewise(data), HEADER_LIMITS)
    assert len(requests) == 1


def test_header_fields_over_limit_whole_head():
    data = GET + b"X: " + b"v" * 200 + b"\r\n\r\n"
    refused(data, 431, HEADER_LIMITS)
    data = GET + b"X: y\r\n" * 40 + b"\r\n"
    refused(data, 431, HEADER_LIMITS)


@pytest.mark.parametrize("fields", [b"X: " + b"v" * 300, b"X: y\r\n" * 60],
                         ids=["one-long-field", "many-fields"])
def test_header_fields_over_limit_before_blank_line(fields):
    """No blank line yet, but the fields are already over the limit: refused now."""
    data = GET + fields
    assert status(data, HEADER_LIMITS) == 431
    assert status(data, HEADER_LIMITS, bytewise(data)) == 431


def test_header_limit_not_charged_for_leading_empty_lines():
    """A head within both limits is accepted whole; it must be accepted however it arrives.

    The empty line in front is ignored (RFC 9112 2.2), so it must not make the incremental
    check mistake the request line for header fields.
    """
    limits = Limits(max_request_line=1000, max_header_bytes=100)
    data = b"\r\n" + b"GET /" + b"a" * 150 + b" HTTP/1.1\r\nHost: a\r\n\r\n"
    assert one(data, limits).path == "/" + "a" * 150
    requests, buf = feed(bytewise(data), limits)
    assert [r.path for r in requests] == ["/" + "a" * 150]


def test_content_length_over_max_body_without_body():
    limits = Limits(max_body=100)
    head = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n"
    refused(head, 413, limits)  # decided from the head alone
    assert status(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
                  limits) == 413
    request = one(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n" + b"x" * 100,
                  limits)
    assert request.body == b"x" * 100


def test_body_limit_per_route():
    buf = Buffer(limits=Limits(max_body=1000))
    buf.body_limit = lambda request: 10 if request.path == "/small" else 1000
    buf.data += b"POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: 50\r\n\r\n" + b"x" * 50
    assert parse(buf).body == b"x" * 50
    buf.data += b"POST /small HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n"
    with pytest.raises(HTTPError) as info:
        parse(buf)
    assert info.value.status == 413


def test_chunked_body_over_max_body():
    limits = Limits(max_body=100)
    head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    refused(head + b"32\r\n" + b"x" * 50 + b"\r\n33\r\n" + b"y" * 51 + b"\r\n0\r\n\r\n", 413,
            limits)
    refused(head + b"65\r\n", 413, limits)  # one chunk over: refused from its size line
    refused(head + b"ffffffffffffffff\r\n", 413, limits)
    request = one(head + b"32\r\n" + b"x" * 50 + b"\r\n32\r\n" + b"y" * 50 + b"\r\n0\r\n\r\n",
                  limits)
    assert len(request.body) == 100


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/3.1", b"HTTP/1.2", b"HTTP/0.9"])
def test_unsupported_version(version):
    refused(b"GET / " + version + b"\r\nHost: a\r\n\r\n", 505)


@pytest.mark.parametrize("line", [
    b"GET /", b"GET  / HTTP/1.1", b"GET / HTTP/1.1 extra", b"GET / http/1.1", b"GET / HTTP/1",
    b"GET / HTTP/1.1 ", b" GET / HTTP/1.1", b"GET\t/ HTTP/1.1", b"G(T / HTTP/1.1",
    b"GET /\x7f HTTP/1.1", b"GET /\xe9 HTTP/1.1", b"GET / HTTP/11", b"", b"GET",
])
def test_malformed_request_line(line):
    refused(line + b"\r\nHost: a\r\n\r\n", 400)


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\nHost: a\n\n",
    b"GET / HTTP/1.1\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\n\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n\n",
    b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
])
def test_bare_lf(data):
    refused(data, 400)


@pytest.mark.parametrize("value", [b"a\x00b", b"a\rb", b"\x00", b"a\x01b", b"a\x7fb", b"a\rb\r"])
def test_bad_byte_in_field_value(value):
    refused(GET + b"X: " + value + b"\r\n\r\n", 400)


@pytest.mark.parametrize("name", [b"X(y)", b"", b"X\x00", b"\xe9", b"X/Y"])
def test_bad_field_name(name):
    refused(GET + name + b": v\r\n\r\n", 400)


def test_field_without_colon():
    refused(GET + b"NoColonHere\r\n\r\n", 400)


CHUNKED = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize("body", [
    b"zz\r\nabc\r\n0\r\n\r\n",
    b"\r\nabc\r\n0\r\n\r\n",
    b"-3\r\nabc\r\n0\r\n\r\n",
    b"0x3\r\nabc\r\n0\r\n\r\n",
    b"3\nabc\r\n0\r\n\r\n",
    b"11111111111111111\r\n",  # 17 hex digits
], ids=["zz", "empty", "negative", "0x", "bare-lf", "too-many-digits"])
def test_bad_chunk_size(body):
    refused(CHUNKED + body, 400)


@pytest.mark.parametrize("body", [
    b"3\r\nabcd\r\n0\r\n\r\n",
    b"3\r\nabc0\r\n\r\n",
    b"3\r\nabc\n0\r\n\r\n",
    b"3\r\nabcXY",
])
def test_chunk_data_not_followed_by_crlf(body):
    refused(CHUNKED + body, 400)


def test_bad_trailer_field():
    refused(CHUNKED + b"3\r\nabc\r\n0\r\nBad Name: v\r\n\r\n", 400)
    refused(CHUNKED + b"3\r\nabc\r\n0\r\nX: a\x00b\r\n\r\n", 400)


def test_transfer_encoding_in_http10():
    refused(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400)


@pytest.mark.parametrize("target", [b"*", b"h:80", b"example.com", b"ftp://h/p"])
def test_bad_target_forms_for_get(target):
    refused(b"GET " + target + b" HTTP/1.1\r\nHost: a\r\n\r\n", 400)


# --------------------------------------------------------------------------------------------
# 5. What is accepted


def test_http10_without_host():
    request = one(b"GET /x?y HTTP/1.0\r\n\r\n")
    assert request == Request("GET", "/x?y", "HTTP/1.0", {}, [], b"", False, "/x", "y")


@pytest.mark.parametrize("version, connection, keep_alive", [
    ("HTTP/1.1", None, True),
    ("HTTP/1.1", "close", False),
    ("HTTP/1.1", "Close", False),
    ("HTTP/1.1", "keep-alive", True),
    ("HTTP/1.1", "upgrade, close", False),
    ("HTTP/1.1", "closed", True),
    ("HTTP/1.0", None, False),
    ("HTTP/1.0", "keep-alive", True),
    ("HTTP/1.0", "Keep-Alive", True),
    ("HTTP/1.0", "foo,  keep-alive ", True),
    ("HTTP/1.0", "close", False),
    ("HTTP/1.0", "keep-alive, close", False),
])
def test_keep_alive(version, connection, keep_alive):
    data = f"GET / {version}\r\nHost: a\r\n".encode()
    if connection is not None:
        data += f"Connection: {connection}\r\n".encode()
    assert one(data + b"\r\n").keep_alive is keep_alive


def test_keep_alive_from_repeated_connection_fields():
    data = GET + b"Connection: keep-alive\r\nConnection: close\r\n\r\n"
    assert one(data).keep_alive is False


@pytest.mark.parametrize("prefix", [b"\r\n", b"\r\n\r\n", b"\r\n" * 5])
def test_leading_empty_lines_ignored(prefix):
    data = prefix + GET + b"\r\n"
    assert one(data) == one(GET + b"\r\n")
    assert feed(bytewise(data))[0] == [one(GET + b"\r\n")]


def test_empty_lines_between_pipelined_requests():
    post = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi"
    data = post + b"\r\n" + GET + b"\r\n" + b"\r\n\r\n" + GET + b"\r\n"
    for pieces in ([data], bytewise(data)):
        requests, buf = feed(pieces)
        assert [r.method for r in requests] == ["POST", "GET", "GET"]
        assert not buf.data


def test_only_empty_lines_is_nothing_yet():
    requests, buf = feed([b"\r\n\r\n\r\n"])
    assert requests == [] and not buf.data


@pytest.mark.parametrize("target, path, query", [
    ("http://h/p?q", "/p", "q"),
    ("http://h/p", "/p", ""),
    ("HTTP://H:8080/a/b?x=1&y", "/a/b", "x=1&y"),
    ("https://h/", "/", ""),
    ("http://h", "/", ""),
    ("http://h?q", "/", "q"),
    ("http://user@h:1/p?a?b", "/p", "a?b"),
])
def test_absolute_form(target, path, query):
    request = one(f"GET {target} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
    assert (request.target, request.path, request.query) == (target, path, query)


def test_asterisk_and_authority_forms():
    request = one(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n")
    assert request.path == "*"
    request = one(b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n")
    assert request.path == "h:443"


def test_origin_form_path_and_query():
    request = one(b"GET /a%20b/c?x=1&y=%2F?z HTTP/1.1\r\nHost: h\r\n\r\n")
    assert (request.path, request.query) == ("/a%20b/c", "x=1&y=%2F?z")
    request = one(b"GET /? HTTP/1.1\r\nHost: h\r\n\r\n")
    assert (request.path, request.query) == ("/", "")


def test_chunk_extensions_and_trailers_ignored():
    data = (CHUNKED + b"3;a=b\r\nabc\r\n"
            b"4 ; name=\"quoted ; value\"\r\ndefg\r\n"
            b"A;x\r\n0123456789\r\n"
            b"0;last=1\r\nX-Checksum: abc\r\nOther:  v v \r\n\r\n")
    for pieces in ([data], bytewise(data)):
        (request,), buf = feed(pieces)
        assert request.body == b"abcdefg0123456789"
        assert request.chunked and request.content_length is None
        assert "x-checksum" not in request.headers
        assert not buf.data


def test_chunked_empty_body():
    request = one(CHUNKED + b"0\r\n\r\n")
    assert request.body == b"" and request.chunked


def test_repeated_fields_joined_and_raw_kept():
    request = one(GET + b"Accept: a\r\nX: 1\r\naccept:\t b \r\nEmpty:\r\n\r\n")
    assert request.headers["accept"] == "a, b"
    assert request.headers["empty"] == ""
    assert request.raw_headers == [("Host", "a"), ("Accept", "a"), ("X", "1"),
                                   ("accept", "b"), ("Empty", "")]
    assert request.header("ACCEPT") == "a, b"


def test_obs_text_in_field_value():
    request = one(GET + b"X: caf\xe9 \xff\r\n\r\n")
    assert request.headers["x"] == "caf\xe9 \xff"


EXPECT_HEAD = (b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
               b"Content-Length: 5\r\n\r\n")


def test_expect_continue_waits_for_body():
    buf = Buffer()
    buf.data += EXPECT_HEAD
    assert parse(buf) is None
    assert buf.continue_needed is True
    assert buf.pending is not None and buf.pending.expect_continue
    buf.data += b"12"
    assert parse(buf) is None and buf.continue_needed
    buf.data += b"345"
    request = parse(buf)
    assert request.expect_continue and request.body == b"12345"
    assert buf.continue_needed is False and buf.pending is None


def test_expect_continue_chunked():
    buf = Buffer()
    buf.data += (b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n3\r\nab")
    assert parse(buf) is None and buf.continue_needed
    buf.data += b"c\r\n0\r\n\r\n"
    request = parse(buf)
    assert request.expect_continue and request.body == b"abc" and not buf.continue_needed


def test_expect_continue_with_body_already_there():
    buf = Buffer()
    buf.data += EXPECT_HEAD + b"12345"
    request = parse(buf)
    assert request.expect_continue and not buf.continue_needed


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
    b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nExpect: something-else\r\nContent-Length: 5\r\n\r\n",
], ids=["no-body", "zero-length", "http10", "other-expectation"])
def test_no_continue_needed(data):
    buf = Buffer()
    buf.data += data
    request = parse(buf)
    if request is None:  # body still missing
        assert buf.pending is not None and not buf.pending.expect_continue
    else:
        assert not request.expect_continue
    assert buf.continue_needed is False


def test_content_length_zero_and_leading_zeros():
    request = one(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
    assert request.content_length == 0 and request.body == b""
    request = one(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 003\r\n\r\nabc")
    assert request.content_length == 3 and request.body == b"abc"


# --------------------------------------------------------------------------------------------
# Split invariance of limits on long lines (whole vs byte at a time)


def test_long_chunk_extension_split_invariant():
    """A chunk-size line is accepted or refused the same whether it arrives whole or not."""
    data = CHUNKED + b"3;" + b"x" * 5000 + b"\r\nabc\r\n0\r\n\r\n"
    whole = outcome([data])
    split = outcome(bytewise(data))
    assert (whole[1] is None) == (split[1] is None), (whole, split)
    if whole[1] is not None:
        assert whole[1].status == split[1].status


# --------------------------------------------------------------------------------------------
# 6. Performance guard: byte-at-a-time head is linear (the search position is remembered)


def test_byte_at_a_time_head_is_linear():
    fields = b"".join(b"X-Field-%05d: %s\r\n" % (i, b"v" * 40) for i in range(1100))
    data = GET + fields + b"\r\n"
    assert 60 * 1024 <= len(data) < Limits().max_header_bytes
    buf = Buffer()
    previous = 0
    advanced = 0
    start = time.perf_counter()
    with time_limit(20):
        for i in range(len(data) - 1):
            buf.data += data[i:i + 1]
            assert parse(buf) is None
            n = len(buf.data)
            assert buf.scanned >= previous
            assert buf.scanned >= n - 8, "the parser does not remember where it stopped"
            advanced += buf.scanned > previous
            previous = buf.scanned
        buf.data += data[-1:]
        request = parse(buf)
    elapsed = time.perf_counter() - start
    assert request is not None and len(request.raw_headers) == 1101
    assert advanced > len(data) // 2
    assert elapsed < 5, f"{elapsed:.1f} s for {len(data)} bytes"
