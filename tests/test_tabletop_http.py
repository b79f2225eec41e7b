"""The card table over real sockets: sessions, typed parameters and their errors, channels,
privacy of hands, resume after a dropped stream, static pages, and ``python -m
examples.tabletop``."""

from __future__ import annotations

import http.cookiejar
import json
import os
import pathlib
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.tabletop.app import tabletop  # noqa: E402

from conftest import request as raw_request, wait_for  # noqa: E402


class Player:
    """One browser's worth of state: a cookie jar (the session) and JSON calls."""

    def __init__(self, server, name: str | None = None):
        self.url = server.url
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.id = None
        if name is not None:
            status, body = self.call("POST", "/api/me", name=name)
            assert status == 200, body
            self.id = body["player"]["id"]

    def call(self, method: str, path: str, *, json_body=None, headers=(), **params):
        """``(status, JSON body)``; errors are answers too. ``json_body`` (any JSON-able value)
        is sent as ``application/json`` instead of the form ``params``; ``headers`` adds
        fields (``Origin``...)."""
        fields = {"Accept": "application/json", **dict(headers)}
        if json_body is not None:
            data = json.dumps(json_body).encode()  # ASCII: "\ud800" stays an escape
            fields["Content-Type"] = "application/json"
        else:
            data = urllib.parse.urlencode(params).encode() if params else None
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=fields)
        try:
            with self.opener.open(req, timeout=5) as resp:
                body = resp.read()
                return resp.status, strict_json(body) if body else None
        except urllib.error.HTTPError as err:
            body = err.read()
            try:
                return err.code, strict_json(body)
            except ValueError:
                return err.code, {"text": body.decode("utf-8", "replace")}

    def ok(self, method: str, path: str, **params):
        status, body = self.call(method, path, **params)
        assert 200 <= status < 300, (status, body)
        return body

    def stream(self, path: str, last_id: str | None = None):
        """An open SSE stream (a file-like response)."""
        headers = {"Last-Event-ID": last_id} if last_id else {}
        req = urllib.request.Request(self.url + path, headers=headers)
        return self.opener.open(req, timeout=5)


def _no_constants(name: str):
    raise ValueError(f"{name} is not JSON a browser parses")


def strict_json(data: bytes):
    """``data`` parsed as browsers' ``JSON.parse`` would: UTF-8, no ``NaN``/``Infinity``."""
    return json.loads(data.decode("utf-8"), parse_constant=_no_constants)


PRESENCE = ("presence", "join", "leave")  # who is at the table: read_presence reads them


def read_event(stream, presence: bool = False) -> dict:
    """One SSE event as a dict of its fields (comments skipped; presence events too, unless
    ``presence``)."""
    fields = {}
    while True:
        line = stream.readline().decode("utf-8").rstrip("\n")
        if line == "":
            if "data" in fields and (presence or fields.get("event") not in PRESENCE):
                return fields
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        fields[name] = value[1:] if value.startswith(" ") else value


def events_until(stream, predicate, limit: int = 50) -> list:
    """Read events until one satisfies ``predicate``; return them all."""
    seen = []
    for _ in range(limit):
        seen.append(read_event(stream))
        if predicate(seen[-1]):
            return seen
    raise AssertionError(f"no matching event in {seen}")


@pytest.fixture
def tt():
    return tabletop(retry=0.5)


@pytest.fixture
def server(serve, tt):
    return serve(tt.app)


@pytest.fixture
def table(server):
    """A two-seat table opened by Ada (seat 1); Bob sits at seat 2. ``(id, ada, bob)``."""
    ada, bob = Player(server, "Ada"), Player(server, "Bob")
    table_id = ada.ok("POST", "/api/tables", name="Friday", seats=2)["table"]["id"]
    bob.ok("POST", f"/api/tables/{table_id}/join", seat=2)
    return table_id, ada, bob


def deck_id(player, table_id) -> int:
    return player.ok("GET", f"/api/tables/{table_id}")["table"]["stacks"][0]["id"]


def test_a_name_is_needed_to_open_a_table_and_names_are_checked(server):
    guest = Player(server)
    assert guest.ok("GET", "/api/me") == {"player": None}
    assert guest.call("POST", "/api/tables", name="x") == (
        401, {"error": "choose a name first", "status": 401})
    assert guest.call("POST", "/api/me", name="   ")[0] == 400
    status, body = guest.call("POST", "/api/me", name="x" * 201)
    assert status == 400 and body["parameter"] == "name"
    me = guest.ok("POST", "/api/me", name="  Ada  ")["player"]
    assert me["name"] == "Ada" and guest.ok("GET", "/api/me") == {"player": me}
    again = guest.ok("POST", "/api/me", name="Ada L.")["player"]
    assert again == {"id": me["id"], "name": "Ada L."}  # same player, new name


def test_opening_joining_and_closing_tables_is_pushed_to_the_lobby(server):
    ada, bob = Player(server, "Ada"), Player(server, "Bob")
    listing = ada.ok("GET", "/api/tables")
    assert listing["tables"] == []
    lobby = bob.stream("/api/lobby/events", listing["last_id"])
    status, body = ada.call("POST", "/api/tables", name="Friday", seats=2)
    assert status == 201
    table_id = body["table"]["id"]
    event = read_event(lobby)
    assert event["event"] == "table"
    assert json.loads(event["data"]) == {"id": table_id, "name": "Friday", "seats": 2, "taken": 1,
                                         "players": ["Ada"], "full": False}
    bob.ok("POST", f"/api/tables/{table_id}/join", seat=2)
    assert json.loads(read_event(lobby)["data"])["full"] is True
    bob.ok("POST", f"/api/tables/{table_id}/leave")
    assert json.loads(read_event(lobby)["data"])["players"] == ["Ada"]
    ada.ok("POST", f"/api/tables/{table_id}/leave")  # the last player leaves: the table closes
    events = events_until(lobby, lambda e: e.get("event") == "closed")
    assert json.loads(events[-1]["data"]) == {"id": table_id}
    assert ada.call("GET", f"/api/tables/{table_id}")[0] == 404
    assert ada.ok("GET", "/api/tables")["tables"] == []
    lobby.close()


def test_bad_moves_get_clear_errors(server, table):
    table_id, ada, bob = table
    cleo = Player(server, "Cleo")
    path = f"/api/tables/{table_id}"
    assert cleo.call("POST", path + "/join", seat=1) == (
        409, {"error": "this table is full", "status": 409})
    assert cleo.call("POST", path + "/draw", stack=deck_id(ada, table_id)) == (
        403, {"error": "take a seat first: spectators can only watch", "status": 403})
    ada.ok("POST", path + "/draw", stack=deck_id(ada, table_id))
    card = ada.ok("GET", path)["you"]["hand"][0]["id"]
    # moving a card that is not yours: the HandCard parameter type refuses it
    assert bob.call("POST", path + "/play", card=card, x=0.5, y=0.5) == (
        403, {"error": f"card {card} is not in your hand", "status": 403})
    assert ada.call("POST", path + "/draw", stack=999) == (
        404, {"error": "no stack 999 on this table", "status": 404})
    status, body = ada.call("POST", path + "/play", card=card, x=1.5, y=0.5)
    assert (status, body["parameter"], body["reason"]) == (400, "x", "1.5 is above 1.0")
    status, body = ada.call("POST", path + "/play", card="ace", x=0.5, y=0.5)
    assert (status, body["parameter"]) == (400, "card")
    status, body = ada.call("POST", path + "/play", card=card, face="sideways")
    assert (status, body["parameter"]) == (400, "face")
    status, body = ada.call("POST", path + "/join", seat=9)
    assert (status, body["parameter"], body["reason"]) == (400, "seat", "9 is above 8")
    assert ada.call("GET", "/api/tables/nosuchtable")[0] == 404
    # curl and friends get the same refusals as text
    status, _, text = raw_request(server, f"GET /api/tables/nosuch HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert (status, text) == (404, b"404 no open table 'nosuch'\n")


def test_every_move_reaches_everyone_at_the_table_and_hands_stay_private(server, table):
    table_id, ada, bob = table
    cleo = Player(server)  # a spectator without even a name
    path = f"/api/tables/{table_id}"
    streams = {}
    for who in (ada, bob, cleo):
        state = who.ok("GET", path)
        streams[who] = who.stream(path + "/events", state["last_id"])
    deck = deck_id(ada, table_id)
    for _ in range(3):
        ada.ok("POST", path + "/draw", stack=deck)
    hand = ada.ok("GET", path)["you"]["hand"]
    assert len(hand) == 3 and bob.ok("GET", path)["you"]["hand"] == []
    assert cleo.ok("GET", path)["you"] is None
    played = hand[0]
    answer = ada.ok("POST", path + "/play", card=played["id"], x=0.25, y=0.75, face="up")

    for who in (ada, bob, cleo):
        seen = events_until(streams[who], lambda e: e.get("id") == answer["id"])
        if who is ada:
            seen.append(read_event(streams[who]))  # her hand follows the public change
        changes = [json.loads(e["data"]) for e in seen if e.get("event") == "change"]
        assert len(changes) == 4
        assert changes[-1]["note"] == f"Ada plays {played['face']}"
        (stack,) = changes[-1]["stacks"]
        (card,) = stack["cards"]  # a card leaving a hand gets a new id
        assert card == {"id": card["id"], "up": True, "face": played["face"],
                        "suit": played["suit"]}
        assert card["id"] != played["id"]
        assert changes[-1]["seats"][0] == {"seat": 1, "player": ada.id, "name": "Ada", "cards": 2}
        hands = [json.loads(e["data"]) for e in seen if e.get("event") == "hand"]
        text = json.dumps(seen, ensure_ascii=False)
        if who is ada:
            assert [len(h["cards"]) for h in hands] == [1, 2, 3, 2]
        else:
            assert hands == []
            for card in hand[1:]:
                assert card["face"] not in text  # never A's hand on anyone else's stream
    # A's own hand channel, alone, is A's only
    with ada.stream(f"{path}/hands/{ada.id}/events") as mine:
        assert mine.status == 200
    for who in (bob, cleo):
        with pytest.raises(urllib.error.HTTPError) as info:
            who.stream(f"{path}/hands/{ada.id}/events")
        assert info.value.code == 403
    for s in streams.values():
        s.close()


def test_a_dropped_stream_resumes_with_exactly_the_missed_moves(server, table, tt):
    table_id, ada, bob = table
    path = f"/api/tables/{table_id}"
    state = bob.ok("GET", path)
    stream = bob.stream(path + "/events", state["last_id"])
    deck = deck_id(ada, table_id)
    first = ada.ok("POST", path + "/flip", stack=deck)
    assert read_event(stream)["id"] == first["id"]
    stream.close()
    wait_for(lambda: tt.channels.subscriber_count(f"table-{table_id}") == 0)
    missed = [ada.ok("POST", path + "/shuffle", stack=deck),
              ada.ok("POST", path + "/roll", dice=3),
              ada.ok("POST", path + "/chat", text="where did Bob go?")]
    stream = bob.stream(path + "/events", first["id"])  # as EventSource reconnects
    got = [read_event(stream) for _ in missed]
    assert [e["id"] for e in got] == [m["id"] for m in missed]
    assert [e["event"] for e in got] == ["change", "dice", "chat"]
    assert json.loads(got[1]["data"])["values"] == missed[1]["values"]
    assert json.loads(got[2]["data"])["text"] == "where did Bob go?"
    stream.close()
    # an id the server cannot place (another life) gets a reset: the page refetches the state
    stream = bob.stream(path + "/events", "from-another-life-7")
    assert read_event(stream)["event"] == "reset"
    stream.close()
    state = bob.ok("GET", path)
    assert state["table"]["log"][-1] == {**state["table"]["log"][-1], "kind": "chat",
                                         "text": "where did Bob go?"}


def test_moves_on_the_table(server, table):
    table_id, ada, bob = table
    path = f"/api/tables/{table_id}"
    deck = deck_id(ada, table_id)
    ada.ok("POST", path + "/move", stack=deck, x=0.1, y=0.2)
    bob.ok("POST", path + "/move", stack=deck, x=0.8, y=0.8, top="true")
    stacks = ada.ok("GET", path)["table"]["stacks"]
    assert [(s["x"], s["y"], len(s["cards"])) for s in stacks] == [(0.1, 0.2, 51), (0.8, 0.8, 1)]
    single = stacks[1]["id"]
    bob.ok("POST", path + "/flip", stack=single)
    assert ada.ok("GET", path)["table"]["stacks"][1]["cards"][0]["up"] is True
    ada.ok("POST", path + "/move", stack=single, onto=deck)
    stacks = ada.ok("GET", path)["table"]["stacks"]
    assert len(stacks) == 1 and len(stacks[0]["cards"]) == 52
    ada.ok("POST", path + "/flip", stack=deck, whole="true")
    assert ada.ok("GET", path)["table"]["stacks"][0]["cards"][-1]["up"] is True
    bob.ok("POST", path + "/draw", stack=deck)
    card = bob.ok("GET", path)["you"]["hand"][0]
    bob.ok("POST", path + "/play", card=card["id"], onto=deck, face="down")
    top = ada.ok("GET", path)["table"]["stacks"][0]["cards"][-1]
    assert top == {"id": top["id"], "up": False} and top["id"] != card["id"]


def test_custom_decks_and_seat_limits_when_opening(server):
    ada = Player(server, "Ada")
    body = ada.ok("POST", "/api/tables", name="Quest", seats=3, deck="custom",
                  cards="Dragon, Knight\nCastle")
    state = ada.ok("GET", f"/api/tables/{body['table']['id']}")
    assert len(state["table"]["stacks"][0]["cards"]) == 3 and state["you"]["seat"] == 1
    status, err = ada.call("POST", "/api/tables", name="Quest", seats=12)
    assert (status, err["parameter"]) == (400, "seats")
    status, err = ada.call("POST", "/api/tables", name="Quest", deck="custom", cards=" ,")
    assert (status, err["error"]) == (400, "a custom deck needs at least one card")


def test_the_pages_are_static_files(server):
    status, headers, body = raw_request(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'<script src="/static/app.js"' in body
    status, _, same = raw_request(server, b"GET /t/abc123 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, same) == (200, body)
    for name, ctype in (("app.js", "javascript"), ("style.css", "text/css")):
        status, headers, _ = raw_request(server, f"GET /static/{name} HTTP/1.1\r\nHost: x\r\n\r\n"
                                         .encode())
        assert status == 200 and ctype in headers["content-type"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_python_dash_m_examples_tabletop_serves_the_demo():
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "examples.tabletop", "--port", str(port)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert f"http://localhost:{port}/" in proc.stdout.readline().decode()

        def up():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/tables", timeout=2) as r:
                    return json.loads(r.read())["tables"] == []
            except OSError:
                return False

        wait_for(up, timeout=10, interval=0.05)
    finally:
        proc.terminate()
        proc.wait(5)
        proc.stdout.close()


def test_a_table_stream_says_who_is_there(server, table, tt):
    """Presence: a stream starts with who is at the table, then hears who comes and goes,
    seated players by name, watchers counted; the registry knows it too."""
    table_id, ada, bob = table
    path = f"/api/tables/{table_id}"
    first = ada.stream(path + "/events")
    snapshot = read_event(first, presence=True)
    assert snapshot["event"] == "presence"
    (info,) = json.loads(snapshot["data"]).values()
    assert info == {"name": "Ada", "player": ada.id, "seated": True}
    watcher = Player(server)
    watching = watcher.stream(path + "/events")
    joins = []
    while not joins or json.loads(joins[-1]["data"])["info"]["player"] is not None:
        event = read_event(first, presence=True)
        if event["event"] == "join":  # Ada's own join comes first, then the watcher's
            joins.append(event)
    assert json.loads(joins[-1]["data"])["info"] == {"name": None, "player": None,
                                                     "seated": False}
    present = tt.channels.presence(f"table-{table_id}")
    assert sorted(i["seated"] for i in present.values()) == [False, True]
    watching.close()
    left = read_event(first, presence=True)
    while left["event"] != "leave":
        left = read_event(first, presence=True)
    assert json.loads(left["data"])["info"]["seated"] is False
    first.close()
