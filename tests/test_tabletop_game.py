"""The card table's rules (examples/tabletop/game.py), without sockets: seats, cards, privacy,
bounds."""

from __future__ import annotations

import json
import pathlib
import random
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.tabletop.game import (  # noqa: E402
    MAX_LOG, Game, GameError, Player, Table, clean_name, custom_deck, standard_deck,
)

ADA, BOB, CLEO = Player("a1", "Ada"), Player("b2", "Bob"), Player("c3", "Cleo")


def new_table(seats=2, faces=None) -> Table:
    return Table.new("t1", "Friday", seats, faces or standard_deck(), rng=random.Random(7))


def deck_of(table: Table):
    return next(iter(table.stacks.values()))


def refused(status: int, fn, *args):
    with pytest.raises(GameError) as info:
        fn(*args)
    assert info.value.status == status, info.value.reason
    return info.value.reason


def test_a_new_table_has_empty_seats_and_the_whole_deck_face_down_and_shuffled():
    table = new_table(4)
    assert [s.number for s in table.seats] == [1, 2, 3, 4]
    deck = deck_of(table)
    assert len(deck.cards) == 52 and not any(c.up for c in deck.cards)
    assert len({c.id for c in deck.cards}) == 52
    assert sorted(c.face for c in deck.cards) == sorted(f for f, _ in standard_deck())
    assert [c.face for c in deck.cards] != [f for f, _ in standard_deck()]
    assert deck.public()["cards"][0] == {"id": deck.cards[0].id, "up": False}


def test_joining_a_taken_seat_or_a_full_table_is_refused_with_409():
    table = new_table(2)
    assert table.join(ADA, 1).note == "Ada sits at seat 1"
    assert "taken by Ada" in refused(409, table.join, BOB, 1)
    table.join(BOB, 2)
    assert refused(409, table.join, CLEO, 1) == "this table is full"
    assert refused(400, table.join, CLEO, 3) == "seats are numbered 1 to 2"
    assert table.summary()["full"] is True


def test_a_player_holds_one_seat_and_moving_takes_the_hand_along():
    table = new_table(3)
    table.join(ADA, 1)
    table.draw(ADA, deck_of(table))
    table.join(ADA, 3)
    assert table.seats[0].player is None and table.seats[2].player is ADA
    assert len(table.seats[2].hand) == 1 and table.seats[0].hand == []


def test_spectators_cannot_move_cards():
    table = new_table()
    assert "spectators" in refused(403, table.draw, ADA, deck_of(table))
    assert "spectators" in refused(403, table.flip, ADA, deck_of(table))
    assert "spectators" in refused(403, table.roll, ADA)


def test_drawing_moves_the_top_card_to_the_hand_and_an_empty_stack_disappears():
    table = new_table(faces=custom_deck("Sun, Moon"))
    table.join(ADA, 1)
    deck = deck_of(table)
    top = deck.cards[-1]
    change = table.draw(ADA, deck)
    assert table.seats[0].hand == [top] and change.hands == [ADA]
    assert change.public()["seats"][0]["cards"] == 1
    change = table.draw(ADA, deck)
    assert change.removed == [deck.id] and change.stacks == [] and table.stacks == {}


def test_playing_a_card_that_is_not_yours_is_refused_with_403():
    table = new_table()
    table.join(ADA, 1)
    table.join(BOB, 2)
    table.draw(ADA, deck_of(table))
    card = table.seats[0].hand[0]
    assert refused(403, table.play, BOB, card, 0.5, 0.5, True) == \
        f"card {card.id} is not in your hand"
    assert refused(403, table.hand_card, BOB, card.id) == f"card {card.id} is not in your hand"
    assert table.hand_card(ADA, card.id) is card


def test_a_card_played_face_down_shows_no_face_to_anyone():
    table = new_table(faces=custom_deck("Secret, Public"))
    table.join(ADA, 1)
    deck = deck_of(table)
    table.draw(ADA, deck)
    table.draw(ADA, deck)
    down, up = table.seats[0].hand
    change = table.play(ADA, down, 0.2, 0.3, False)
    assert change.note == "Ada plays a card face down"
    change = table.play(ADA, up, 0.7, 0.3, True)
    text = json.dumps(table.public()) + json.dumps(change.public())
    assert up.face in text and down.face not in text


def test_a_hand_is_private_the_public_view_shows_only_its_size():
    table = new_table(faces=custom_deck(",".join(f"card{i}" for i in range(10))))
    table.join(ADA, 1)
    for _ in range(4):
        change = table.draw(ADA, deck_of(table))
    faces = [c.face for c in table.seats[0].hand]
    public = json.dumps(table.public()) + json.dumps(change.public())
    assert not any(face in public for face in faces)
    assert table.public()["seats"][0]["cards"] == 4
    assert [c["face"] for c in table.hand(ADA)] == faces
    assert table.hand(BOB) == []


def test_moving_a_stack_its_top_card_or_onto_another_stack():
    table = new_table()
    table.join(ADA, 1)
    deck = deck_of(table)
    table.move(ADA, deck, 0.1, 0.9)
    assert (deck.x, deck.y) == (0.1, 0.9)
    change = table.move(ADA, deck, 0.6, 0.2, top_only=True)
    single = change.stacks[1]
    assert len(single.cards) == 1 and len(deck.cards) == 51 and (single.x, single.y) == (0.6, 0.2)
    assert single.z > deck.z
    change = table.move(ADA, single, 0, 0, onto=deck)
    assert len(deck.cards) == 52 and change.removed == [single.id]
    assert refused(400, table.move, ADA, deck, 0, 0, False, deck)
    table.move(ADA, deck, 7, -3)
    assert (deck.x, deck.y) == (1.0, 0.0)  # clamped to the felt


def test_flipping_the_top_card_or_the_whole_stack():
    table = new_table(faces=custom_deck("A, B, C"))
    table.join(ADA, 1)
    deck = deck_of(table)
    order = [c.face for c in deck.cards]
    change = table.flip(ADA, deck)
    assert deck.cards[-1].up and change.note == f"Ada flips a card: {order[-1]}"
    table.flip(ADA, deck, whole=True)
    assert [c.face for c in deck.cards] == order[::-1]
    assert [c.up for c in deck.cards] == [False, True, True]


def test_shuffling_turns_cards_down_and_renumbers_them():
    table = new_table()
    table.join(ADA, 1)
    deck = deck_of(table)
    table.flip(ADA, deck)
    before = {c.id for c in deck.cards}
    table.shuffle(ADA, deck)
    assert not any(c.up for c in deck.cards)
    assert not before & {c.id for c in deck.cards}
    assert len(deck.cards) == 52


def test_leaving_returns_the_hand_face_down_to_the_table():
    table = new_table()
    table.join(ADA, 1)
    deck = deck_of(table)
    for _ in range(3):
        table.draw(ADA, deck)
    table.seats[0].hand[0].up = True
    change = table.leave(ADA)
    (pile,) = change.stacks
    assert len(pile.cards) == 3 and not any(c.up for c in pile.cards)
    assert table.is_empty() and change.hands == [ADA] and table.hand(ADA) == []
    assert refused(403, table.leave, ADA)


def test_dice_and_chat_are_bounded():
    table = new_table()
    table.join(ADA, 1)
    roll = table.roll(ADA, 3, 6)
    assert len(roll.values) == 3 and all(1 <= v <= 6 for v in roll.values)
    refused(400, table.roll, ADA, 7, 6)
    refused(400, table.roll, ADA, 1, 1)
    assert table.say(BOB, "  hello \n there ").text == "hello there"  # spectators may talk
    refused(400, table.say, BOB, "   ")
    refused(400, table.say, BOB, "x" * 201)
    for i in range(MAX_LOG + 10):
        table.say(ADA, f"line {i}")
    log = table.public()["log"]
    assert len(log) == MAX_LOG and log[-1] == {**log[-1], "kind": "chat", "text": f"line {MAX_LOG + 9}"}


def test_names_and_custom_decks_are_checked():
    assert clean_name("  Ada\x00 \t Lovelace ", 24) == "Ada Lovelace"
    refused(400, clean_name, " \n ", 24)
    refused(400, clean_name, "x" * 25, 24)
    assert custom_deck("Dragon\nKnight, Castle,,") == [("Dragon", ""), ("Knight", ""),
                                                      ("Castle", "")]
    refused(400, custom_deck, " , \n")
    refused(400, custom_deck, ",".join(["c"] * 109))
    refused(400, custom_deck, "x" * 25)
    refused(400, Table.new, "t", "name", 9, standard_deck())
    refused(400, Table.new, "t", "", 2, standard_deck())


def test_the_game_caps_open_tables_and_closes_idle_ones():
    game = Game(max_tables=2, idle_close=60)
    first = game.open("one", 2, standard_deck())
    game.open("two", 2, standard_deck())
    assert refused(503, game.open, "three", 2, standard_deck()).startswith("the room is full")
    assert game.close_idle(first.touched + 30) == []
    first.touched -= 100
    assert game.close_idle() == [first]
    assert game.open("three", 2, standard_deck()).name == "three"
    assert refused(404, game.table, first.id)
    assert sorted(s["name"] for s in game.summaries()) == ["three", "two"]


def test_a_player_may_open_only_a_few_tables():
    game = Game(max_tables_per_player=2)
    first = game.open("one", 2, standard_deck(), opener=ADA)
    game.open("two", 2, standard_deck(), opener=ADA)
    assert refused(429, game.open, "three", 2, standard_deck(), ADA) == \
        "you have 2 open tables: close one before opening another (a table closes when its " \
        "last player leaves)"
    game.open("Bob's", 2, standard_deck(), opener=BOB)
    game.close(first)
    assert game.open("three", 2, standard_deck(), opener=ADA).opener == ADA.id


def test_cards_get_fresh_random_ids_entering_and_leaving_a_hand():
    table = new_table()
    table.join(ADA, 1)
    deck = deck_of(table)
    ids = [c.id for c in deck.cards]
    assert sum(1 for a, b in zip(sorted(ids), sorted(ids)[1:]) if b - a == 1) < 3  # no counter
    card = deck.cards[-1]
    on_felt = card.id
    table.draw(ADA, deck)
    in_hand = card.id
    table.play(ADA, card, 0.3, 0.3, False)
    back = card.id
    assert len({on_felt, in_hand, back}) == 3
    for _ in range(3):
        table.draw(ADA, deck)
    held = {c.id for c in table.seats[0].hand}
    table.leave(ADA)
    (pile,) = [s for s in table.stacks.values() if s is not deck and len(s.cards) == 3]
    assert not held & {c.id for c in pile.cards}
    every = [c.id for c in table.cards()]
    assert len(every) == len(set(every)) == 52 and all(0 < i < 2 ** 53 for i in every)


def _view(table: Table) -> str:
    hands = [[c.private() for c in s.hand] for s in table.seats]
    return json.dumps([table.public(), hands, [(c.id, c.up) for c in table.cards()],
                       table.next_id, table.top_z], sort_keys=True)


def test_a_memento_undoes_every_kind_of_move():
    table = new_table(3)
    table.join(ADA, 1)
    table.join(BOB, 2)
    deck = deck_of(table)
    for _ in range(3):
        table.draw(ADA, deck)
    side = table.move(BOB, deck, 0.2, 0.2, top_only=True).stacks[1]
    moves = [
        lambda: table.draw(ADA, deck),
        lambda: table.play(ADA, table.seats[0].hand[0], 0.7, 0.7, True),
        lambda: table.play(ADA, table.seats[0].hand[0], 0, 0, False, onto=side),
        lambda: table.move(BOB, deck, 0.9, 0.1),
        lambda: table.move(BOB, deck, 0.9, 0.1, top_only=True),
        lambda: table.move(BOB, side, 0, 0, onto=deck),
        lambda: table.move(BOB, deck, 0, 0, onto=side),
        lambda: table.flip(BOB, deck),
        lambda: table.flip(BOB, deck, whole=True),
        lambda: table.shuffle(BOB, deck),
        lambda: table.roll(BOB, 2, 6),
        lambda: table.say(CLEO, "hello"),
        lambda: table.join(CLEO, 3),
        lambda: table.join(ADA, 3),
        lambda: table.leave(ADA),
    ]
    for n, move in enumerate(moves):
        before, memento = _view(table), table.memento()
        move()
        assert _view(table) != before, n
        table.restore(memento)
        assert _view(table) == before, n
    assert table.seats[0].hand[0] in table.seats[0].hand and deck_of(table) is deck


def test_chat_text_is_cleaned_like_names():
    table = new_table()
    line = table.say(ADA, "hi\u202e \x1b[31m there\ud800")
    assert line.text == "hi [31m there"
    line.public()["text"].encode("utf-8")  # always encodable
    assert refused(400, table.say, ADA, "\ud800\ud83d") == "a chat line cannot be empty"
