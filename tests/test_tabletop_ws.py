"""The demo's table socket over a real connection (the `websockets` client): events come down
it, moves go up it and are answered by the same handlers as the POST API (same checks, same
session, same CSRF rule)."""

from __future__ import annotations

import json

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from test_tabletop_http import Player, deck_id, server, table, tt  # noqa: F401 (fixtures)


def open_socket(server, player, table_id, last_id="", origin=None):
    cookie = "; ".join(f"{c.name}={c.value}" for c in player.jar)
    origin = origin or f"http://127.0.0.1:{server.port}"
    return ws_connect(f"ws://127.0.0.1:{server.port}/api/tables/{table_id}/ws"
                      f"?lastEventId={last_id}", origin=origin,
                      additional_headers={"Cookie": cookie}, open_timeout=5)


_held: dict = {}  # socket -> events read while waiting for a reply


def next_event(ws, kind=None):
    held = _held.setdefault(ws, [])
    while True:
        msg = held.pop(0) if held else json.loads(ws.recv(timeout=5))
        if "rid" in msg:
            continue
        if kind is None or msg["event"] == kind:
            return msg


def reply(ws, rid):
    held = _held.setdefault(ws, [])
    while True:
        msg = json.loads(ws.recv(timeout=5))
        if "rid" in msg and msg["rid"] == rid:
            return msg
        if "rid" not in msg:
            held.append(msg)


def test_moves_go_up_the_socket_and_everyone_sees_them(server, table):
    table_id, ada, bob = table
    deck = deck_id(ada, table_id)
    with open_socket(server, ada, table_id) as a, open_socket(server, bob, table_id) as b:
        assert next_event(a, "presence") and next_event(b, "presence")
        a.send(json.dumps({"rid": 1, "op": "draw", "params": {"stack": deck}}))
        answer = reply(a, 1)
        assert answer["status"] == 200 and answer["body"]["ok"] is True
        hand = next_event(a, "hand")
        assert len(json.loads(hand["data"])["cards"]) == 1  # Ada's own hand: only hers
        change = next_event(b, "change")
        assert "Ada draws" in json.loads(change["data"])["note"]
        b.send(json.dumps({"rid": 7, "op": "chat", "params": {"text": "hello Ada"}}))
        assert reply(b, 7)["status"] == 200
        assert json.loads(next_event(a, "chat")["data"])["text"] == "hello Ada"


def test_bad_and_refused_moves_are_answered_not_fatal(server, table):
    table_id, ada, bob = table
    watcher = Player(server, "Cy")  # not seated
    deck = deck_id(ada, table_id)
    with open_socket(server, watcher, table_id) as w:
        w.send("not json")
        assert reply(w, None)["status"] == 400
        w.send(json.dumps({"rid": 2, "op": "delete_everything"}))
        assert reply(w, 2)["status"] == 400
        w.send(json.dumps({"rid": 3, "op": "draw", "params": {"stack": deck}}))
        refused = reply(w, 3)
        assert 400 <= refused["status"] < 500 and refused["body"]["error"]
        w.send(json.dumps({"rid": 4, "op": "chat", "params": {"text": ""}}))
        assert reply(w, 4)["status"] == 400  # the Length(1, ...) rule of the POST handler
        w.send(json.dumps({"rid": 5, "op": "chat", "params": {"text": "still here"}}))
        assert reply(w, 5)["status"] in (200, 403)  # the socket is still open and answering


def test_another_site_cannot_open_the_table_socket(server, table):
    table_id, ada, _ = table
    with pytest.raises(InvalidStatus) as refused:
        open_socket(server, ada, table_id, origin="http://evil.example")
    assert refused.value.response.status_code == 403
