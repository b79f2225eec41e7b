"""Every step of the protocol runs through its generic function while serving: a method added
from outside the package (here, this test module) runs on real requests over real sockets.
No fast path goes around a generic."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request

import attrs
import pytest

import clos_web
from clos_web import (
    App, Channels, Connection, Event, HTTPError, Request, Response, Server, buffer_input,
    call_next_method, channel, encode_event, error_response, handle_request, parse,
    parse_param, process_ready, publish, respond, send_response, write,
)
from clos_web.http import Buffer, HTTPConnection, StreamingError
from clos_web.loop import EVENT_READ, EVENT_WRITE, data_received
from clos_web.push import Channel, SSEBatch, Subscription

from conftest import Reader, connect, load_example, request, wait_for


@pytest.fixture
def methods():
    """Register methods for the test; every one is removed afterwards."""
    added = []

    def add(gf, qualifier="dispatch"):
        def register(fn):
            getattr(gf, qualifier)(fn)
            added.append((gf, fn))
            return fn

        return register

    yield add
    for gf, fn in reversed(added):
        gf.remove_method(fn)


GET = b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture
def app():
    app = App()

    @app.get("/hello")
    def hello():
        return Response("hi", content_type="text/plain")

    return app


def test_buffer_input_parse_and_data_received_are_called_for_every_request(serve, app, methods):
    seen = []

    @methods(buffer_input, "around")
    def count_reads(conn: Connection):
        n = call_next_method()
        seen.append(("read", n))
        return n

    @methods(parse, "before")
    def count_parses(source: Buffer):
        seen.append(("parse", len(source.data)))

    @methods(data_received, "after")
    def count_deliveries(protocol: HTTPConnection, conn: Connection):
        seen.append(("delivered", type(protocol).__name__))

    server = serve(app)
    assert request(server, GET)[2] == b"hi"
    assert ("read", len(GET)) in seen
    assert ("parse", len(GET)) in seen
    # the after method runs once the answer is flushed: the client may read it first
    wait_for(lambda: ("delivered", "HTTPConnection") in seen)


def test_a_buffer_class_of_ones_own_parses_its_own_way(serve, app, methods):
    """``parse`` dispatches on the buffer: a server whose connections use a Buffer subclass
    gets that class's method (here: a PROXY protocol v1 line before the request)."""

    @attrs.define(slots=False, eq=False)
    class ProxiedBuffer(Buffer):
        client: str | None = None

    @methods(parse)
    def parse_proxied(source: ProxiedBuffer):
        data = source.data
        if data.startswith(b"PROXY "):
            end = data.find(b"\r\n")
            if end < 0:
                return None
            source.client = data[:end].split(b" ")[2].decode()
            del data[:end + 2]
        return call_next_method()

    @methods(clos_web.loop.connection_made, "after")
    def use_proxied_buffers(server: Server, conn: Connection):
        if server.app is app:
            http = conn.protocol
            http.buf = conn.buf = ProxiedBuffer(limits=http.limits,
                                                body_limit=http.buf.body_limit)

    @app.get("/who")
    def who(request: Request):
        return "?"

    @methods(respond, "around")
    def answer_who(app_: App, request: Request, conn):
        if request.path == "/who" and conn is not None:
            return PlainTextWho(conn.buf.client)
        return call_next_method()

    server = serve(app)
    status, _, body = request(server, b"PROXY TCP4 203.0.113.9 10.0.0.1 5555 80\r\n"
                                      b"GET /who HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, body) == (200, b"203.0.113.9")


class PlainTextWho(str):
    pass


@write.dispatch
def write_who(obj: PlainTextWho, conn: Connection):
    send_response(Response(str(obj), content_type="text/plain"), conn)


def test_handle_request_and_respond_take_qualified_methods(serve, app, methods):
    class Teapot(App):
        pass

    pot = Teapot()
    pot.get("/tea")(lambda: "tea")
    log = []

    @methods(handle_request, "before")
    def refuse_coffee(conn: Connection, request: Request):
        if request.path == "/coffee":
            raise HTTPError(418, "I'm a teapot")

    @methods(respond, "after")
    def audit_teapot(app_: Teapot, request: Request, conn):
        log.append(request.target)

    server = serve(pot)
    assert request(server, b"GET /coffee HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 418
    assert request(server, b"GET /tea HTTP/1.1\r\nHost: x\r\n\r\n")[2] == b"tea"
    assert log == ["/tea"]  # the 418 was refused before the app; a plain App is not audited
    other = serve(app)
    assert request(other, GET)[2] == b"hi" and log == ["/tea"]


def test_write_and_error_response_take_methods_for_every_answer(serve, app, methods):
    statuses = []

    @methods(write, "before")
    def see_responses(obj: Response, conn: Connection):
        statuses.append(obj.status)

    class Gone(HTTPError):
        status = 410

    @methods(error_response)
    def error_response_gone(error: Gone, conn: Connection):
        write(Response("moved to the archive", status=410), conn)

    @app.get("/old")
    def old():
        raise Gone()

    server = serve(app)
    assert request(server, GET)[2] == b"hi"
    assert request(server, b"GET /old HTTP/1.1\r\nHost: x\r\n\r\n")[::2] == (
        410, b"moved to the archive")
    assert statuses == [200, 410]


@attrs.define
class Move:
    card: str


def test_publish_encode_event_and_the_event_write_run_for_every_published_event(
        serve, methods):
    hello = load_example("hello")
    audit, written = [], []

    @methods(publish, "around")
    def audit_publish(channel_: Channel, message: object):
        event_id = call_next_method()
        audit.append((channel_.name, event_id))
        return event_id

    @methods(encode_event)
    def encode_event_move(message: Move):
        return "move", message.card

    @methods(write, "around")
    def see_sse_events(event: Event, batch: SSEBatch):  # the fan-out: one write per transport
        written.append((event.id, len(batch)))
        return call_next_method()

    server = serve(hello.app)
    with connect(server) as sock:
        sock.sendall(b"GET /sub/table HTTP/1.1\r\nHost: x\r\n\r\n")
        reader = Reader(sock)
        assert reader.read_head()[0] == 200
        wait_for(lambda: hello.channels.subscriber_count("table") == 1)
        status, _, body = request(server, b"POST /pub/table HTTP/1.1\r\nHost: x\r\n"
                                          b"Content-Length: 5\r\n\r\nhello")
        assert status == 202
        first = body.decode()
        second = hello.channels.publish("table", Move("Q\u2660"))
        while b"Q\xe2\x99\xa0" not in reader.data:
            assert reader._fill()
        assert b"event: move\ndata: Q\xe2\x99\xa0" in reader.data
    assert [a for a in audit if a[0] == "table"] == [("table", first), ("table", second)]
    assert written == [(first, 1), (second, 1)]


@attrs.define
class Card:
    rank: str


def test_parse_param_methods_from_outside_the_package_bind_parameters(serve, app, methods):
    @methods(parse_param)
    def parse_param_card(kind: type[Card], raw: str, bound):
        if raw not in ("A", "K", "Q", "J"):
            raise ValueError("not a face card")
        return Card(raw)

    @app.get("/card")
    def card(c: Card):
        return f"card {c.rank}"

    server = serve(app)
    assert request(server, b"GET /card?c=K HTTP/1.1\r\nHost: x\r\n\r\n")[2] == b"card K"
    assert request(server, b"GET /card?c=7 HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 400


@attrs.define(eq=False)
class Pinger:
    """An object of our own in the selector, waiting to write."""

    sock: socket.socket
    calls: list = attrs.field(factory=list)
    done: threading.Event = attrs.field(factory=threading.Event)


@process_ready.dispatch
def process_ready_pinger(ready: Pinger, server: Server, events):
    ready.calls.append(events)
    if events & EVENT_WRITE:
        ready.sock.send(b"ping")
        server.modify(ready.sock, ready, EVENT_READ)  # then wait for the answer
    elif events & EVENT_READ:
        ready.calls.append(ready.sock.recv(100))
        server.unregister(ready.sock)
        ready.done.set()


def test_process_ready_is_called_for_write_readiness_of_an_object_of_ones_own(serve, app):
    server = serve(app)
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    pinger = Pinger(ours)
    server.call_soon_threadsafe(server.register, ours, pinger, EVENT_WRITE)
    theirs.settimeout(5)
    assert theirs.recv(100) == b"ping"
    theirs.sendall(b"pong")
    assert pinger.done.wait(5)
    assert pinger.calls == [EVENT_WRITE, EVENT_READ, b"pong"]
    ours.close()
    theirs.close()


def test_an_event_a_handler_returns_is_answered_as_json(serve):
    registry = Channels()
    app = App()

    @app.get("/last")
    def last():
        registry.publish("news", "it happened")
        return registry.events("news")[-1]

    server = serve(app)
    status, headers, body = request(server, b"GET /last HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200 and headers["content-type"] == "application/json"
    assert b'"data":"it happened"' in body and b'"event":"message"' in body


def test_write_on_a_live_stream_sends_an_event_to_that_subscriber_and_never_stalls(serve):
    registry = Channels()
    app = App()
    app.get("/sub")(channel(registry)(lambda: "room"))
    server = serve(app)
    with connect(server) as sock:
        sock.sendall(b"GET /sub HTTP/1.1\r\nHost: x\r\n\r\n")
        reader = Reader(sock)
        assert reader.read_head()[0] == 200
        wait_for(lambda: registry.subscriber_count("room") == 1)
        (conn,) = [c for c in server.conns if c.protocol.stream is not None]
        registry.publish("other", "just for you")
        private = registry.events("other")[-1]
        outcome = []

        def on_loop():
            write(private, conn)                   # to this one subscriber
            try:
                write("<p>a page</p>", conn)       # a response on a stream: refused, clearly
            except StreamingError as exc:
                outcome.append(str(exc))

        server.call_soon_threadsafe(on_loop)
        while b"just for you" not in reader.data:
            assert reader._fill()
        wait_for(lambda: outcome)
        assert "stream" in outcome[0]
        registry.publish("room", "still streaming")   # the stream goes on
        while b"still streaming" not in reader.data:
            assert reader._fill()


def test_a_response_with_connection_close_closes_the_connection(serve):
    app = App()

    @app.get("/bye")
    def bye():
        return Response("bye", headers=[("Connection", "close")])

    server = serve(app)
    with connect(server) as sock:
        sock.sendall(b"GET /bye HTTP/1.1\r\nHost: x\r\n\r\nGET /bye HTTP/1.1\r\nHost: x\r\n\r\n")
        reader = Reader(sock)
        status, headers, body = reader.read_response()
        assert (status, body, headers["connection"]) == (200, b"bye", "close")
        assert reader.closed()  # the pipelined second request was not answered


def test_reprs_of_the_serving_objects_stay_short(serve, app):
    server = serve(app)
    with connect(server) as sock:
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 30000)
        wait_for(lambda: any(len(c.buf.data) > 20000 for c in server.conns))
        (conn,) = server.conns
        for obj in (server, conn, conn.protocol, conn.buf, Channels()):
            assert len(repr(obj)) < 300, repr(obj)[:500]
