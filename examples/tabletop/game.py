"""The card table's rules as plain data: no sockets, no HTTP, testable on their own.

A :class:`Game` owns the open :class:`Table` objects (a bounded number of them). A table has
seats (each a :class:`Seat` with a player and a private hand) and stacks of cards lying on the
felt (:class:`Stack`, at a position given as fractions of the table's width and height). Every
rule is a method that changes the table and returns a :class:`Change`: the stacks it touched, the
stacks it removed, the seats and a one-line note. The web layer publishes that change; the rules
never know who listens.

What others may see is decided here too: :meth:`Card.public` hides a face-down card's face, and a
:class:`Seat` shows only how many cards its hand holds (:meth:`Seat.public`). Card ids are
random (``secrets``) and a card gets a new one whenever it enters or leaves a hand and when its
stack is shuffled, so nobody can follow a face-down card by its id through a hand or a shuffle.

A move that the web layer cannot announce is undone: :meth:`Table.memento` records what any move
may change and :meth:`Table.restore` puts it back.

A refused move raises :class:`GameError`, an ``HTTPError`` carrying the status it implies (403
not your card, 404 no such stack, 409 the seat is taken, the table is full...).
"""

from __future__ import annotations

import random
import secrets
import time
from collections import deque

import attrs

from clos_web import HTTPError

SUITS = ("♠", "♥", "♦", "♣")
RANKS = ("A", "2", "3", "4", "5", "6", "7", "8", "9", "10", "J", "Q", "K")

MAX_SEATS = 8
MAX_CUSTOM_CARDS = 108
MAX_LABEL = 24
MAX_LOG = 60
MAX_CHAT_TEXT = 200
MAX_NAME = 24
MAX_TABLE_NAME = 40
MAX_DICE = 6
CARD_ID_BITS = 53  # card ids stay exact in JavaScript numbers (below 2**53)


class GameError(HTTPError):
    """A move the rules refuse; ``status`` says why (403, 404, 409...), ``reason`` says it in
    words a player understands.

    >>> str(GameError(409, "seat 2 is taken"))
    '409 seat 2 is taken'
    """


# --------------------------------------------------------------------------------------------
# Data


@attrs.define(slots=True, eq=False)
class Player:
    """Who a session is: a short public ``id`` (not the session token) and a display name."""

    id: str
    name: str

    @classmethod
    def new(cls, name: str) -> "Player":
        """A player with a fresh random id."""
        return cls(secrets.token_urlsafe(6), clean_name(name, MAX_NAME))


@attrs.define(slots=True, eq=False)
class Card:
    """One card: ``id`` a random number unique on its table (renewed as the card enters or
    leaves a hand), ``face`` what is printed on it (``"10♥"`` or a custom label), ``suit`` its
    suit (empty for a custom card), ``up`` whether it lies face up."""

    id: int
    face: str
    suit: str = ""
    up: bool = False

    def public(self) -> dict:
        """What everybody may see: the face only when it is up."""
        if self.up:
            return {"id": self.id, "up": True, "face": self.face, "suit": self.suit}
        return {"id": self.id, "up": False}

    def private(self) -> dict:
        """What the card's holder sees: everything."""
        return {"id": self.id, "up": self.up, "face": self.face, "suit": self.suit}


@attrs.define(slots=True, eq=False)
class Stack:
    """Cards lying together on the felt, the last one on top; ``x``, ``y`` are the centre as
    fractions (0..1) of the table's width and height, ``z`` orders overlapping stacks."""

    id: int
    x: float
    y: float
    cards: list = attrs.field(factory=list)
    z: int = 0

    def public(self) -> dict:
        """The stack as everybody sees it."""
        return {"id": self.id, "x": round(self.x, 4), "y": round(self.y, 4), "z": self.z,
                "cards": [c.public() for c in self.cards]}


@attrs.define(slots=True, eq=False)
class Seat:
    """A place at the table, numbered from 1: its player (or None) and that player's private
    hand."""

    number: int
    player: Player | None = None
    hand: list = attrs.field(factory=list)

    def public(self) -> dict:
        """Who sits here and how many cards they hold, never which."""
        return {"seat": self.number,
                "player": None if self.player is None else self.player.id,
                "name": None if self.player is None else self.player.name,
                "cards": len(self.hand)}


@attrs.define(slots=True, eq=False)
class Change:
    """What a move changed: stacks to (re)draw, stack ids to remove, the seats (always all: a
    few bytes) when ``seats_changed``, and a note for the table's log. ``hands`` lists the
    seats whose private hand changed (their owners get the new hand)."""

    table: "Table"
    note: str
    stacks: list = attrs.field(factory=list)
    removed: list = attrs.field(factory=list)
    hands: list = attrs.field(factory=list)
    seats_changed: bool = False

    def public(self) -> dict:
        """The change as the table's channel carries it."""
        return {"table": self.table.id, "note": self.note,
                "stacks": [s.public() for s in self.stacks], "removed": list(self.removed),
                "seats": [s.public() for s in self.table.seats]}


@attrs.define(slots=True, eq=False)
class Roll:
    """Dice rolled by ``name``: their ``values`` (each 1..``sides``)."""

    table: "Table"
    name: str
    values: list
    sides: int

    def public(self) -> dict:
        return {"table": self.table.id, "name": self.name, "values": list(self.values),
                "sides": self.sides, "note": f"{self.name} rolled {' '.join(map(str, self.values))}"
                f" (d{self.sides})"}


@attrs.define(slots=True, eq=False)
class ChatLine:
    """One line of the table's chat."""

    name: str
    text: str
    at: float

    def public(self) -> dict:
        return {"name": self.name, "text": self.text, "at": round(self.at, 3)}


def clean_text(text: str, limit: int, what: str = "a chat line") -> str:
    """``text`` with runs of white space and of characters that do not print (controls, lone
    surrogates, bidirectional overrides) made one space, trimmed; refused (400) when empty or
    longer than ``limit``. What is left can always be encoded (UTF-8, JSON, an SSE line).

    >>> clean_text("hi\\u202e there\\ud800", 200)
    'hi there'
    """
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    if not text:
        raise GameError(400, f"{what} cannot be empty")
    if len(text) > limit:
        raise GameError(400, f"{what} has at most {limit} characters")
    return text


def clean_name(text: str, limit: int) -> str:
    """A name cleaned by :func:`clean_text`.

    >>> clean_name("  Ada \\n Lovelace ", 24)
    'Ada Lovelace'
    """
    return clean_text(text, limit, "a name")


def standard_deck() -> list:
    """The 52 faces of a standard deck as ``(face, suit)``."""
    return [(rank + suit, suit) for suit in SUITS for rank in RANKS]


def custom_deck(text: str) -> list:
    """A custom deck from one label a line (or comma separated): ``(label, "")`` each.

    >>> custom_deck("Sun, Moon\\nStar")
    [('Sun', ''), ('Moon', ''), ('Star', '')]
    """
    labels = [" ".join(part.split()) for line in text.splitlines() for part in line.split(",")]
    labels = [label for label in labels if label]
    if not labels:
        raise GameError(400, "a custom deck needs at least one card")
    if len(labels) > MAX_CUSTOM_CARDS:
        raise GameError(400, f"a custom deck has at most {MAX_CUSTOM_CARDS} cards")
    for label in labels:
        if len(label) > MAX_LABEL or not label.isprintable():
            raise GameError(400, f"a card label has at most {MAX_LABEL} printable characters")
    return [(label, "") for label in labels]


def _clamp(v: float) -> float:
    return min(1.0, max(0.0, float(v)))


# --------------------------------------------------------------------------------------------
# A table and its rules


@attrs.define(slots=True, eq=False)
class Memento:
    """What a move of a :class:`Table` may change, recorded by :meth:`Table.memento` so that
    :meth:`Table.restore` can undo it: the table's counters and log, its stacks (which, where,
    which cards), its seats (who, which cards) and every card's id and side."""

    counters: tuple
    log: list
    stacks: dict
    places: list
    seats: list
    cards: list


@attrs.define(slots=True, eq=False)
class Table:
    """An open table: ``seats``, the ``stacks`` on the felt (by id), and ``log``: the last
    notes, dice rolls and chat lines (as the page shows them, newest last). ``opener`` is the
    id of the player who opened it.

    >>> t = Table.new("t1", "Friday", 2, standard_deck(), rng=random.Random(1))
    >>> t.join(Player("p1", "Ada"), 1).note
    'Ada sits at seat 1'
    >>> deck = next(iter(t.stacks.values()))
    >>> t.draw(t.seats[0].player, deck).note
    'Ada draws a card'
    >>> len(t.seats[0].hand), len(deck.cards)
    (1, 51)
    """

    id: str
    name: str
    seats: list
    stacks: dict = attrs.field(factory=dict)
    log: deque = attrs.field(factory=lambda: deque(maxlen=MAX_LOG))
    rng: random.Random = attrs.field(factory=random.SystemRandom, repr=False)
    next_id: int = 1
    top_z: int = 0
    touched: float = attrs.field(factory=time.monotonic)
    opener: str | None = None

    @classmethod
    def new(cls, table_id: str, name: str, seats: int, faces: list,
            rng: random.Random | None = None, opener: str | None = None) -> "Table":
        """A table with ``seats`` empty seats and the shuffled deck ``faces`` face down in the
        middle."""
        if not 2 <= seats <= MAX_SEATS:
            raise GameError(400, f"a table has 2 to {MAX_SEATS} seats")
        table = cls(table_id, clean_name(name, MAX_TABLE_NAME),
                    [Seat(n) for n in range(1, seats + 1)], rng=rng or random.SystemRandom(),
                    opener=opener)
        faces = list(faces)
        table.rng.shuffle(faces)
        deck = table._new_stack(0.5, 0.45)
        deck.cards = [Card(0, face, suit) for face, suit in faces]
        table._renumber(deck.cards)
        return table

    # -- reading -------------------------------------------------------------------------

    def public(self) -> dict:
        """The whole table as everybody sees it."""
        return {"id": self.id, "name": self.name,
                "seats": [s.public() for s in self.seats],
                "stacks": [s.public() for s in sorted(self.stacks.values(), key=_z)],
                "log": list(self.log)}

    def summary(self) -> dict:
        """What the lobby shows."""
        taken = sum(1 for s in self.seats if s.player is not None)
        return {"id": self.id, "name": self.name, "seats": len(self.seats), "taken": taken,
                "players": [s.player.name for s in self.seats if s.player is not None],
                "full": taken == len(self.seats)}

    def seat_of(self, player: Player | None) -> Seat | None:
        """The seat ``player`` holds at this table, or None."""
        if player is None:
            return None
        for seat in self.seats:
            if seat.player is not None and seat.player.id == player.id:
                return seat
        return None

    def seated(self, player: Player | None) -> Seat:
        """The seat of ``player``, or 403: spectators watch, they do not move cards."""
        seat = self.seat_of(player)
        if seat is None:
            raise GameError(403, "take a seat first: spectators can only watch")
        return seat

    def stack(self, stack_id: int) -> Stack:
        """The stack ``stack_id`` on this table, or 404."""
        stack = self.stacks.get(stack_id)
        if stack is None:
            raise GameError(404, f"no stack {stack_id} on this table")
        return stack

    def hand(self, player: Player | None) -> list:
        """``player``'s hand as they see it (empty when not seated)."""
        seat = self.seat_of(player)
        return [] if seat is None else [c.private() for c in seat.hand]

    def hand_card(self, player: Player | None, card_id: int) -> Card:
        """The card ``card_id`` in ``player``'s hand, or 403 (it is not theirs to move)."""
        seat = self.seated(player)
        for card in seat.hand:
            if card.id == card_id:
                return card
        raise GameError(403, f"card {card_id} is not in your hand")

    def cards(self) -> list:
        """Every card of the table: on the felt and in the hands."""
        out = [card for stack in self.stacks.values() for card in stack.cards]
        for seat in self.seats:
            out.extend(seat.hand)
        return out

    # -- undoing a move ------------------------------------------------------------------

    def memento(self) -> Memento:
        """Record what a move may change (a few small lists: one entry per stack, seat and
        card), for :meth:`restore`."""
        stacks = self.stacks
        return Memento((self.next_id, self.top_z, self.touched), list(self.log), dict(stacks),
                       [(s, s.x, s.y, s.z, list(s.cards)) for s in stacks.values()],
                       [(seat, seat.player, list(seat.hand)) for seat in self.seats],
                       [(card, card.id, card.up) for card in self.cards()])

    def restore(self, memento: Memento) -> None:
        """Put the table back as it was when ``memento`` was taken (the same objects, so a
        card or stack bound before stays the one on the table)."""
        self.next_id, self.top_z, self.touched = memento.counters
        self.log.clear()
        self.log.extend(memento.log)
        self.stacks.clear()
        self.stacks.update(memento.stacks)
        for stack, x, y, z, cards in memento.places:
            stack.x, stack.y, stack.z, stack.cards[:] = x, y, z, cards
        for seat, player, hand in memento.seats:
            seat.player, seat.hand[:] = player, hand
        for card, card_id, up in memento.cards:
            card.id, card.up = card_id, up

    # -- helpers -------------------------------------------------------------------------

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def _renumber(self, cards) -> None:
        """Give ``cards`` fresh random ids, unique on the table and unrelated to any id they
        had: nobody can link a card before and after (a hand, a shuffle)."""
        changing = {id(card) for card in cards}
        taken = {c.id for c in self.cards() if id(c) not in changing}
        for card in cards:
            card_id = 0
            while card_id == 0 or card_id in taken:
                card_id = secrets.randbits(CARD_ID_BITS)
            taken.add(card_id)
            card.id = card_id

    def _lift(self, stack: Stack) -> None:
        self.top_z += 1
        stack.z = self.top_z

    def _new_stack(self, x: float, y: float) -> Stack:
        stack = Stack(self._new_id(), _clamp(x), _clamp(y))
        self._lift(stack)
        self.stacks[stack.id] = stack
        return stack

    def _change(self, note: str, stacks=(), removed=(), hands=(), seats=False) -> Change:
        self.touched = time.monotonic()
        self.log.append({"kind": "note", "note": note})
        alive = [s for s in stacks if s.cards and s.id in self.stacks]
        gone = list(removed)
        for s in stacks:
            if not s.cards and self.stacks.pop(s.id, None) is not None:
                gone.append(s.id)
        return Change(self, note, alive, gone, list(hands), seats)

    # -- seats ---------------------------------------------------------------------------

    def join(self, player: Player, number: int) -> Change:
        """Seat ``player`` at seat ``number`` (from 1). A player holds one seat: joining another
        moves them, hand and all."""
        if not 1 <= number <= len(self.seats):
            raise GameError(400, f"seats are numbered 1 to {len(self.seats)}")
        seat = self.seats[number - 1]
        current = self.seat_of(player)
        if current is seat:
            return self._change(f"{player.name} stays at seat {number}", seats=True)
        if current is None and all(s.player is not None for s in self.seats):
            raise GameError(409, "this table is full")
        if seat.player is not None:
            raise GameError(409, f"seat {number} is taken by {seat.player.name}")
        if current is not None:
            seat.hand, current.hand = current.hand, []
            current.player = None
        seat.player = player
        return self._change(f"{player.name} sits at seat {number}", hands=[player],
                            seats=True)

    def leave(self, player: Player) -> Change:
        """Stand ``player`` up; their hand goes back to the felt, face down, as one stack."""
        seat = self.seated(player)
        cards, seat.hand, seat.player = seat.hand, [], None
        stacks = []
        if cards:
            pile = self._new_stack(0.5, 0.8)
            for card in cards:
                card.up = False
            pile.cards = cards
            self._renumber(cards)
            stacks.append(pile)
        return self._change(f"{player.name} leaves the table", stacks, hands=[player],
                            seats=True)

    def is_empty(self) -> bool:
        """No one is seated."""
        return all(s.player is None for s in self.seats)

    # -- cards ---------------------------------------------------------------------------

    def draw(self, player: Player, stack: Stack) -> Change:
        """The top card of ``stack`` goes to ``player``'s hand (with a new id)."""
        seat = self.seated(player)
        card = stack.cards.pop()
        seat.hand.append(card)
        self._renumber([card])
        return self._change(f"{player.name} draws a card", [stack], hands=[player], seats=True)

    def play(self, player: Player, card: Card, x: float, y: float, up: bool,
             onto: Stack | None = None) -> Change:
        """Put ``card`` from ``player``'s hand on the felt at ``x, y`` (or on top of ``onto``),
        face up or down, with a new id."""
        seat = self.seated(player)
        if card not in seat.hand:
            raise GameError(403, f"card {card.id} is not in your hand")
        seat.hand.remove(card)
        card.up = up
        self._renumber([card])
        target = onto if onto is not None else self._new_stack(x, y)
        target.cards.append(card)
        self._lift(target)
        what = card.face if up else "a card face down"
        return self._change(f"{player.name} plays {what}", [target], hands=[player], seats=True)

    def move(self, player: Player, stack: Stack, x: float, y: float, top_only: bool = False,
             onto: Stack | None = None) -> Change:
        """Move ``stack`` (or only its top card, ``top_only``) to ``x, y``, or onto another
        stack."""
        self.seated(player)
        if onto is stack:
            raise GameError(400, "a stack cannot go onto itself")
        if onto is not None:
            moving = [stack.cards.pop()] if top_only else stack.cards[:]
            if not top_only:
                stack.cards.clear()
            onto.cards.extend(moving)
            self._lift(onto)
            what = "a card" if len(moving) == 1 else f"{len(moving)} cards"
            return self._change(f"{player.name} puts {what} on a stack", [stack, onto])
        if top_only and len(stack.cards) > 1:
            card = stack.cards.pop()
            target = self._new_stack(x, y)
            target.cards.append(card)
            return self._change(f"{player.name} moves a card", [stack, target])
        stack.x, stack.y = _clamp(x), _clamp(y)
        self._lift(stack)
        what = "a card" if len(stack.cards) == 1 else "a stack"
        return self._change(f"{player.name} moves {what}", [stack])

    def flip(self, player: Player, stack: Stack, whole: bool = False) -> Change:
        """Turn over the top card, or the whole stack (its order reversed, as a hand would)."""
        self.seated(player)
        if whole:
            stack.cards.reverse()
            for card in stack.cards:
                card.up = not card.up
        else:
            stack.cards[-1].up = not stack.cards[-1].up
        self._lift(stack)
        top = stack.cards[-1]
        shown = top.face if top.up else "face down"
        what = "the stack" if whole else "a card"
        return self._change(f"{player.name} flips {what}: {shown}", [stack])

    def shuffle(self, player: Player, stack: Stack) -> Change:
        """Shuffle ``stack`` face down; its cards get new ids (no one can follow a card)."""
        self.seated(player)
        self.rng.shuffle(stack.cards)
        for card in stack.cards:
            card.up = False
        self._renumber(stack.cards)
        self._lift(stack)
        return self._change(f"{player.name} shuffles {len(stack.cards)} cards", [stack])

    # -- dice and chat -------------------------------------------------------------------

    def roll(self, player: Player, dice: int = 2, sides: int = 6) -> Roll:
        """Roll ``dice`` dice of ``sides`` sides."""
        self.seated(player)
        if not 1 <= dice <= MAX_DICE or not 2 <= sides <= 100:
            raise GameError(400, f"roll 1 to {MAX_DICE} dice of 2 to 100 sides")
        self.touched = time.monotonic()
        roll = Roll(self, player.name, [self.rng.randint(1, sides) for _ in range(dice)], sides)
        self.log.append({"kind": "dice", **roll.public()})
        return roll

    def say(self, player: Player, text: str) -> ChatLine:
        """Add a chat line (spectators may talk too; cleaned by :func:`clean_text`); the chat
        keeps the last lines only."""
        line = ChatLine(player.name, clean_text(text, MAX_CHAT_TEXT), time.time())
        self.log.append({"kind": "chat", **line.public()})
        self.touched = time.monotonic()
        return line


def _z(stack: Stack) -> int:
    return stack.z


# --------------------------------------------------------------------------------------------
# The game: every open table, bounded


@attrs.define(slots=True, eq=False)
class Game:
    """The open tables, at most ``max_tables`` (then a new table is refused, 503), and at most
    ``max_tables_per_player`` opened by one player (then 429: one player cannot fill the room).
    :meth:`close_idle` closes the tables nobody touched for ``idle_close`` seconds; the web
    layer calls it before opening one, so it can tell the lobby.

    >>> game = Game()
    >>> table = game.open("Friday", 4, standard_deck())
    >>> game.table(table.id) is table
    True
    """

    max_tables: int = 50
    idle_close: float = 3600.0
    max_tables_per_player: int = 3
    tables: dict = attrs.field(factory=dict)
    rng: random.Random = attrs.field(factory=random.SystemRandom, repr=False)

    def open(self, name: str, seats: int, faces: list, opener: Player | None = None) -> Table:
        """Open a new table (by ``opener``, who may have a few open at once); returns it."""
        if opener is not None:
            mine = sum(1 for t in self.tables.values() if t.opener == opener.id)
            if mine >= self.max_tables_per_player:
                raise GameError(429, f"you have {mine} open tables: close one before opening "
                                     f"another (a table closes when its last player leaves)")
        if len(self.tables) >= self.max_tables:
            raise GameError(503, "the room is full: too many open tables, try later")
        table_id = secrets.token_hex(4)
        while table_id in self.tables:
            table_id = secrets.token_hex(4)
        table = Table.new(table_id, name, seats, faces, rng=self.rng,
                          opener=None if opener is None else opener.id)
        self.tables[table_id] = table
        return table

    def table(self, table_id: str) -> Table:
        """The open table ``table_id``, or 404."""
        table = self.tables.get(table_id)
        if table is None:
            raise GameError(404, f"no open table {table_id[:40]!r}")
        return table

    def close(self, table: Table) -> None:
        """Close ``table``."""
        self.tables.pop(table.id, None)

    def close_idle(self, now: float | None = None) -> list:
        """Close the tables nobody touched for ``idle_close`` seconds; return them."""
        now = time.monotonic() if now is None else now
        idle = [t for t in self.tables.values() if now - t.touched > self.idle_close]
        for table in idle:
            self.close(table)
        return idle

    def summaries(self) -> list:
        """Every open table as the lobby lists it."""
        return [t.summary() for t in self.tables.values()]
