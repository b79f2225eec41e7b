"""The card table under attack and failure, over real sockets: cross-site requests, publishes
that fail (a move is applied and announced, or neither), tables per player, card ids that cannot
be followed through a hand, and hostile input that must never break a table for the others."""

from __future__ import annotations

import json
import pathlib
import sys

import attrs
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from clos_web import Channels, HTTPError  # noqa: E402
from examples.tabletop.app import tabletop  # noqa: E402

from conftest import wait_for  # noqa: E402
from test_tabletop_http import Player, events_until, strict_json  # noqa: E402


@attrs.define(slots=True, eq=False)
class Refusing(Channels):
    """A registry whose broker refuses channels named with ``refuse`` (a prefix): it will not
    create them (as at ``max_channels``) and a publish on them raises 503. With ``down`` only
    the publish fails (the channel exists; the broker dies at the last moment)."""

    refuse: str = "\0"
    down: bool = False

    def channel(self, name: str):
        if name.startswith(self.refuse) and not self.down:
            raise HTTPError(503, "the broker refuses this channel")
        return Channels.channel(self, name)

    def publish(self, name: str, message, event=None):
        if name.startswith(self.refuse):
            raise HTTPError(503, "the broker is down")
        return Channels.publish(self, name, message, event)


@pytest.fixture
def tt():
    return tabletop(channels=Refusing(history=500, max_age=1800.0, retry=0.5))


@pytest.fixture
def server(serve, tt):
    return serve(tt.app)


@pytest.fixture
def table(server):
    """A three-seat table: Ada (seat 1, two cards in hand, one played face up at the side)
    and Bob (seat 2). ``(id, ada, bob)``."""
    ada, bob = Player(server, "Ada"), Player(server, "Bob")
    table_id = ada.ok("POST", "/api/tables", name="Friday", seats=3)["table"]["id"]
    bob.ok("POST", f"/api/tables/{table_id}/join", seat=2)
    path = f"/api/tables/{table_id}"
    deck = ada.ok("GET", path)["table"]["stacks"][0]["id"]
    for _ in range(3):
        ada.ok("POST", path + "/draw", stack=deck)
    card = ada.ok("GET", path)["you"]["hand"][0]["id"]
    ada.ok("POST", path + "/play", card=card, x=0.2, y=0.2, face="up")
    return table_id, ada, bob


def snapshot(tt, table_id, ada, bob) -> dict:
    """Everything a move could change, as the players and the lobby see it."""
    path = f"/api/tables/{table_id}"
    return {"bob": bob.ok("GET", path), "ada": ada.ok("GET", path)["you"],
            "lobby": ada.ok("GET", "/api/tables")["tables"],
            "table_events": len(tt.channels.events(f"table-{table_id}")),
            "lobby_events": len(tt.channels.events("lobby"))}


# --------------------------------------------------------------------------------------------
# CSRF: on by default in the demo


def test_the_demo_refuses_cross_site_requests_that_change_anything(server, table):
    table_id, ada, bob = table
    path = f"/api/tables/{table_id}"
    before = ada.ok("GET", path)
    deck = before["table"]["stacks"][0]["id"]
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Origin": "null"}):
        status, body = ada.call("POST", path + "/draw", stack=deck, headers=headers)
        assert status == 403 and "cross-" in body["text"], (headers, body)
        assert ada.call("POST", "/api/me", name="Mallory", headers=headers)[0] == 403
        assert ada.call("POST", "/api/tables", name="spam", headers=headers)[0] == 403
    assert ada.ok("GET", path) == before
    own = server.url.replace("localhost", "127.0.0.1")
    ada.ok("POST", path + "/flip", stack=deck, headers={"Origin": own})
    ada.ok("POST", path + "/flip", stack=deck, headers={"Sec-Fetch-Site": "same-origin"})


# --------------------------------------------------------------------------------------------
# A move and its announcement: both or neither


def _moves(table_id, ada, bob, cleo):
    """``name -> (who, path, params)`` for every handler that changes a table."""
    path = f"/api/tables/{table_id}"
    state = ada.ok("GET", path)
    deck, side = (s["id"] for s in state["table"]["stacks"])
    card = state["you"]["hand"][0]["id"]
    return {
        "draw": (ada, path + "/draw", {"stack": deck}),
        "play": (ada, path + "/play", {"card": card, "x": 0.7, "y": 0.7, "face": "down"}),
        "play onto": (ada, path + "/play", {"card": card, "onto": deck}),
        "move": (bob, path + "/move", {"stack": deck, "x": 0.9, "y": 0.9}),
        "move top": (bob, path + "/move", {"stack": deck, "x": 0.9, "y": 0.9, "top": "true"}),
        "move onto": (bob, path + "/move", {"stack": side, "onto": deck}),
        "flip": (bob, path + "/flip", {"stack": deck}),
        "flip whole": (bob, path + "/flip", {"stack": deck, "whole": "true"}),
        "shuffle": (bob, path + "/shuffle", {"stack": deck}),
        "roll": (bob, path + "/roll", {"dice": 3}),
        "chat": (cleo, path + "/chat", {"text": "hello"}),
        "join": (cleo, path + "/join", {"seat": 3}),
        "change seat": (bob, path + "/join", {"seat": 3}),
        "leave": (ada, path + "/leave", {}),
    }


MOVES = [
    "draw", "play", "play onto", "move", "move top", "move onto", "flip", "flip whole",
    "shuffle", "roll", "chat", "join", "change seat", "leave"]


# which channels each move announces on, besides the table's
_HANDS_AND_LOBBY = {"draw", "play", "play onto", "join", "change seat", "leave"}
ANNOUNCED_ON = {"table-": set(MOVES), "hand-": _HANDS_AND_LOBBY, "lobby": _HANDS_AND_LOBBY}


@pytest.mark.parametrize("refused", ["table-", "hand-", "lobby", "table- publish"])
@pytest.mark.parametrize("name", MOVES)
def test_a_move_whose_announcement_fails_changes_nothing(server, tt, table, name, refused):
    table_id, ada, bob = table
    cleo = Player(server, "Cleo")
    who, path, params = _moves(table_id, ada, bob, cleo)[name]
    before = snapshot(tt, table_id, ada, bob)
    refused, _, down = refused.partition(" ")
    tt.channels.refuse, tt.channels.down = refused, bool(down)
    status, body = who.call("POST", path, **params)
    tt.channels.refuse, tt.channels.down = "\0", False
    after = snapshot(tt, table_id, ada, bob)
    if name not in ANNOUNCED_ON[refused]:  # this move says nothing on the refused channel
        assert 200 <= status < 300 and after != before, body
        return
    assert status == 503, body
    assert after == before
    # and the same move works once the broker is back
    assert 200 <= who.call("POST", path, **params)[0] < 300


def test_a_hand_channel_the_registry_cannot_create_refuses_the_join(server, tt, table):
    table_id, ada, bob = table
    cleo = Player(server, "Cleo")
    # every channel has a live subscriber, so none can make room: the registry is really full
    streams = [ada.stream(f"/api/tables/{table_id}/events"),
               bob.stream(f"/api/tables/{table_id}/events"), cleo.stream("/api/lobby/events")]
    try:
        wait_for(lambda: all(tt.channels.subscriber_count(name)
                             for name in tt.channels.names()))
        before = snapshot(tt, table_id, ada, bob)
        tt.channels.max_channels = len(tt.channels)  # full: Cleo's hand channel cannot exist
        status, body = cleo.call("POST", f"/api/tables/{table_id}/join", seat=3)
        assert status == 503, body
        assert snapshot(tt, table_id, ada, bob) == before
        tt.channels.max_channels = 100
        cleo.ok("POST", f"/api/tables/{table_id}/join", seat=3)
    finally:
        for stream in streams:
            stream.close()


def test_opening_and_closing_tables_are_announced_or_not_done(server, tt):
    ada = Player(server, "Ada")
    tt.channels.refuse = "lobby"
    status, _ = ada.call("POST", "/api/tables", name="Quiet", seats=2)
    assert status == 503 and ada.ok("GET", "/api/tables")["tables"] == []
    assert tt.game.tables == {}
    tt.channels.refuse = "\0"
    table_id = ada.ok("POST", "/api/tables", name="Loud", seats=2)["table"]["id"]
    # the last player leaves: the table closes, and that must be told too
    for refused in ("table-", "lobby"):
        tt.channels.refuse = refused
        status, _ = ada.call("POST", f"/api/tables/{table_id}/leave")
        assert status == 503
        tt.channels.refuse = "\0"
        state = ada.ok("GET", f"/api/tables/{table_id}")
        assert state["you"]["seat"] == 1
        assert [t["id"] for t in ada.ok("GET", "/api/tables")["tables"]] == [table_id]
    lobby = ada.stream("/api/lobby/events", ada.ok("GET", "/api/tables")["last_id"])
    ada.ok("POST", f"/api/tables/{table_id}/leave")
    events = events_until(lobby, lambda e: e.get("event") == "closed")
    assert json.loads(events[-1]["data"]) == {"id": table_id}
    lobby.close()


# --------------------------------------------------------------------------------------------
# Tables per player


def test_a_player_may_keep_only_a_few_tables_open(server, tt):
    ada, bob = Player(server, "Ada"), Player(server, "Bob")
    limit = tt.game.max_tables_per_player
    assert 1 <= limit <= 5
    opened = [ada.ok("POST", "/api/tables", name=f"t{n}", seats=2)["table"]["id"]
              for n in range(limit)]
    status, body = ada.call("POST", "/api/tables", name="one more", seats=2)
    assert status == 429 and f"{limit} open tables" in body["error"], body
    assert len(ada.ok("GET", "/api/tables")["tables"]) == limit
    bob.ok("POST", "/api/tables", name="Bob's", seats=2)  # a limit per player, not for all
    ada.ok("POST", f"/api/tables/{opened[0]}/leave")  # closes it (nobody left)
    ada.ok("POST", "/api/tables", name="one more", seats=2)


# --------------------------------------------------------------------------------------------
# Card ids: a card that passes through a hand cannot be followed


def test_a_card_gets_new_ids_entering_and_leaving_a_hand(server, tt, table):
    table_id, ada, bob = table
    path = f"/api/tables/{table_id}"
    state = bob.ok("GET", path)
    watch = bob.stream(path + "/events", state["last_id"])
    side = state["table"]["stacks"][1]
    (seen,) = side["cards"]  # face up: everybody knows this card
    assert seen["up"] is True
    ada.ok("POST", path + "/draw", stack=side["id"])  # it goes into Ada's hand
    hand = ada.ok("GET", path)["you"]["hand"]
    in_hand = next(c for c in hand if c["face"] == seen["face"])
    assert in_hand["id"] != seen["id"]
    answer = ada.ok("POST", path + "/play", card=in_hand["id"], x=0.6, y=0.6, face="down")
    public = events_until(watch, lambda e: e.get("id") == answer["id"])
    watch.close()
    (played,) = json.loads(public[-1]["data"])["stacks"]
    (down,) = played["cards"]
    assert down == {"id": down["id"], "up": False}
    assert down["id"] not in (seen["id"], in_hand["id"])
    text = "".join(e["data"] for e in public[1:])  # after the draw: nothing links the ids
    assert str(seen["id"]) not in text and str(in_hand["id"]) not in text
    # ids are unique on the table, and not a counter one could extrapolate
    table_now = bob.ok("GET", path)["table"]
    ids = [c["id"] for s in table_now["stacks"] for c in s["cards"]]
    ids += [c["id"] for c in ada.ok("GET", path)["you"]["hand"]]
    assert len(ids) == len(set(ids)) == 52
    assert all(0 < i < 2 ** 53 for i in ids)  # exact in JavaScript numbers
    assert sum(1 for a, b in zip(sorted(ids), sorted(ids)[1:]) if b - a == 1) < 3


# --------------------------------------------------------------------------------------------
# Hostile input never breaks a table for the others

LONE = "\ud800"
ODD = ["\u202eevil", "a\u0000b", "\x1b[31mred", "\u2028\u2029", "\ufeff", "e\u0301" * 30,
       "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "👩\u200d👩\u200d👧", "\ud83d", LONE + "x", "x" * 5000, "", " ", "\r\n\r\n",
       "<script>alert(1)</script>", "\udfff\ud800", "nan"]


def _hostile_requests(table_id, deck, card):
    path = f"/api/tables/{table_id}"
    numbers = ["nan", "inf", "-inf", "1e999", "-0", "١", "0x10", "9" * 400, LONE, "",
               "1.5", "-1", "2" * 20]
    for value in ODD:
        for where in ("json", "form"):
            yield "/api/me", {"name": value}, where
            yield "/api/tables", {"name": value}, where
            yield "/api/tables", {"name": "ok", "deck": "custom", "cards": value}, where
            yield "/api/tables", {"name": "ok", "deck": "custom",
                                  "cards": ",".join([value[:20] or "c"] * 120)}, where
            yield path + "/chat", {"text": value}, where
    for value in numbers:
        for where in ("json", "form"):
            yield path + "/join", {"seat": value}, where
            yield path + "/draw", {"stack": value}, where
            yield path + "/play", {"card": value, "x": value, "y": value}, where
            yield path + "/play", {"card": card, "x": value, "y": "0.5"}, where
            yield path + "/move", {"stack": deck, "x": value, "y": value}, where
            yield path + "/move", {"stack": deck, "onto": value}, where
            yield path + "/flip", {"stack": value, "whole": value}, where
            yield path + "/roll", {"dice": value, "sides": value}, where
            yield "/api/tables", {"name": "ok", "seats": value}, where
    for where in ("json",):
        for odd_json in ([1, 2], {"text": ["a"]}, {"text": {"a": 1}}, {"text": 1e308},
                         {"text": None}, {"seat": True}, {"x": 1e400}):
            for endpoint in ("/chat", "/join", "/play", "/move", "/roll"):
                yield path + endpoint, odd_json, "raw-json"


def test_hostile_values_never_break_a_table_for_the_others(server, tt, table):
    table_id, ada, bob = table
    path = f"/api/tables/{table_id}"
    cleo = Player(server, "Cleo")  # a spectator who sends everything
    state = ada.ok("GET", path)
    deck = state["table"]["stacks"][0]["id"]
    card = state["you"]["hand"][0]["id"]
    tt.game.max_tables_per_player = 10_000  # the hostile opens must not stop at the limit
    tt.game.max_tables = 10_000
    problems = []
    for endpoint, params, where in _hostile_requests(table_id, deck, card):
        for sender in (ada, cleo):
            if where == "form":
                try:
                    status, body = sender.call("POST", endpoint, **params)
                except UnicodeEncodeError:  # urllib cannot send a lone surrogate as a form
                    continue
            else:
                status, body = sender.call("POST", endpoint, json_body=params)
            if status >= 500:
                problems.append((endpoint, params if len(str(params)) < 200 else "long",
                                 where, status, body))
    assert not problems, problems[:10]
    for who in (bob, ada, Player(server)):  # the table still renders, as strict JSON
        state = who.ok("GET", path)
        assert state["table"]["id"] == table_id
        for stack in state["table"]["stacks"]:
            assert 0 <= stack["x"] <= 1 and 0 <= stack["y"] <= 1
    listing = bob.ok("GET", "/api/tables")
    for summary in listing["tables"]:
        bob.ok("GET", f"/api/tables/{summary['id']}")
    # every event a page would receive parses too
    for name in (f"table-{table_id}", "lobby"):
        for event in tt.channels.events(name):
            strict_json(event.data.encode("utf-8"))
