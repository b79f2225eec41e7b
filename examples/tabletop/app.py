"""The card table on the web: handlers with typed parameters, channels, static pages.

Built only on ``clos_web``'s public API. :func:`tabletop` returns a :class:`Tabletop`: the
:class:`~examples.tabletop.game.Game`, its :class:`~clos_web.Channels` and the
:class:`~clos_web.App` serving them.

Channels (one registry, so one ``Last-Event-ID`` places a client in all of them):

- ``lobby``: ``table`` (a table's summary: opened, a seat taken or freed) and ``closed``.
- ``table-<id>``: ``change`` (the stacks a move touched, the seats, a note), ``dice``,
  ``chat``, ``closed``: everything public at that table.
- ``hand-<id>-<player>``: ``hand``, the player's own cards; only a stream whose session *is*
  that seated player joins it.

Types of parameters, each a ``parse_param`` method (the chapter's ``define-http-type``):
``TableOf[game]`` (a table id, bound to the open :class:`Table`), ``StackOn`` (a stack id on
the table bound before it) and ``HandCard`` (a card id in the caller's hand at that table: the
session is bound before it). A bad one answers 400/403/404 naming the parameter or the rule.

A change and its announcement agree: :meth:`Tabletop.commit` makes a change and publishes the
events announcing it, or undoes the change when they cannot be published (503 to the caller).
Unsafe requests from other sites are refused (:func:`~clos_web.csrf_guard`'s check, 403, in a
``before`` method on ``respond`` for :class:`TabletopApp`), so no other page can make a visitor
move, chat or open tables.

Page state without loss: ``GET /api/tables/<id>`` answers the public table, the caller's hand
and ``last_id``, the event id the state is current to; the page then streams
``/api/tables/<id>/events?lastEventId=<last_id>`` and gets exactly the moves made since. A
``reset`` event (history could not cover a gap) makes it fetch the state again.
"""

import json
import logging
import pathlib
from typing import Annotated, Literal
from urllib.parse import urlencode

import attrs

from clos_web import (
    App, Channels, Connection, EventStream, Length, MemorySessions, Message, Range, Request,
    Response, Session, StaticFiles, channel, csrf_guard, encode_event, error_response,
    parse_param, respond, write,
)
from clos_web.http import HTTPError
from clos_web.push import LOCAL, request_last_id
from clos_web.ws import Text, WebSocket, receive

from .game import (
    MAX_CHAT_TEXT, MAX_DICE, MAX_SEATS, MAX_TABLE_NAME, Change, ChatLine, Game,
    GameError, Player, Roll, Table, custom_deck, standard_deck,
)

STATIC = pathlib.Path(__file__).resolve().parent / "static"
log = logging.getLogger("tabletop")

# --------------------------------------------------------------------------------------------
# Parameter types


class TableOf:
    """``TableOf[game]``: a table id in the request, bound to that open :class:`Table` of
    ``game`` (404 if there is none). Made per game, so two apps never share tables."""

    game: Game | None = None

    def __class_getitem__(cls, game: Game):
        return type("TableOf[Game]", (cls,), {"game": game})


class StackOn:
    """A stack id, looked up on the :class:`Table` bound before it (404 if not there)."""


class HandCard:
    """A card id, looked up in the caller's hand at the :class:`Table` bound before it; the
    ``Session`` parameter must come before it too. A card that is not yours is a 403."""


def _earlier(bound: dict, cls):
    """The parameter of class ``cls`` bound before this one (the ordering rule)."""
    for value in bound.values():
        if isinstance(value, cls):
            return value
    raise TypeError(f"a parameter of type {cls.__name__} must come first in the handler")


@parse_param.dispatch
def parse_param_table_of_str(kind: type[TableOf], raw: str, bound):
    return kind.game.table(raw)


@parse_param.dispatch
def parse_param_stack_on_str_int(kind: type[StackOn], raw: str | int, bound):
    table = _earlier(bound, Table)
    return table.stack(parse_param(int, raw, bound))


@parse_param.dispatch
def parse_param_hand_card_str_int(kind: type[HandCard], raw: str | int, bound):
    table = _earlier(bound, Table)
    session = next((v for v in bound.values() if isinstance(v, Session)), None)
    return table.hand_card(player_of(session), parse_param(int, raw, bound))


# --------------------------------------------------------------------------------------------
# Wire forms: what each published object looks like on a stream


def _json(value) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@attrs.define(slots=True, eq=False)
class Hand:
    """A player's hand, for their own channel only."""

    table: str
    cards: list


@attrs.define(slots=True, eq=False)
class Closed:
    """A table has closed."""

    table: str
    note: str = "the table is closed"


@encode_event.dispatch
def encode_event_change(message: Change):
    return "change", _json(message.public())


@encode_event.dispatch
def encode_event_roll(message: Roll):
    return "dice", _json(message.public())


@encode_event.dispatch
def encode_event_chat_line(message: ChatLine):
    return "chat", _json(message.public())


@encode_event.dispatch
def encode_event_hand(message: Hand):
    return "hand", _json({"table": message.table, "cards": message.cards})


@encode_event.dispatch
def encode_event_closed(message: Closed):
    return "closed", _json({"table": message.table, "note": message.note})


# --------------------------------------------------------------------------------------------
# Refusals: JSON for the page, text for curl


def _wants_json(request: Request | None) -> bool:
    return request is not None and "json" in request.headers.get("accept", "")


@error_response.dispatch
def error_response_game_error(error: GameError, conn: Connection):
    if _wants_json(conn.protocol.request):
        body = _json({"error": error.reason, "status": error.status})
        write(Response(body, status=error.status, content_type="application/json"), conn)
    else:
        write(Response(f"{error.status} {error.reason}\n", status=error.status,
                       content_type="text/plain"), conn)


# --------------------------------------------------------------------------------------------
# Who is asking


def player_of(session: Session | None) -> Player | None:
    """The :class:`Player` a session has chosen to be, or None."""
    if session is None:
        return None
    me = session.get("player")
    return None if me is None else Player(me["id"], me["name"])


def me(session: Session | None) -> Player:
    """The session's player, or 401: choose a name first."""
    player = player_of(session)
    if player is None:
        raise GameError(401, "choose a name first")
    return player


# --------------------------------------------------------------------------------------------
# The app


@attrs.define(slots=True, eq=False)
class Tabletop:
    """The demo: the ``game`` (tables), the ``channels`` (lobby, tables, hands), the ``app``.

    Every change goes through :meth:`commit`: the change is made and announced, or neither.
    """

    game: Game
    channels: Channels
    app: App

    # -- changing and announcing ---------------------------------------------------------

    def commit(self, table: Table | None, act):
        """Make a change and publish the events announcing it, or do neither; return
        ``(result, event ids)``.

        ``act()`` changes ``table`` (or opens and closes tables) and returns ``(result,
        [(channel, message), ...])``. Before anything is published every message is encoded
        and every channel made to exist: when that fails (text that cannot be sent, the
        registry refusing a new channel: 503) or the first publish fails, the table and the
        set of open tables are put back as they were and the error goes to the client. The
        first event is the one announcing the change (the table's); once it is out, the
        change stands, and a later publish that fails anyway is logged.
        """
        memento = None if table is None else table.memento()
        tables = dict(self.game.tables)
        try:
            result, messages = act()
            ready = [self._ready(name, message) for name, message in messages]
            ids = [self.channels.publish(*ready[0])] if ready else []
        except BaseException:
            if memento is not None:
                table.restore(memento)
            self.game.tables.clear()
            self.game.tables.update(tables)
            raise
        for name, data, event in ready[1:]:
            try:
                ids.append(self.channels.publish(name, data, event))
            except Exception:
                log.exception("publishing on %s failed after the change was announced", name)
        return result, ids

    def _ready(self, name: str, message) -> tuple:
        """``message`` encoded for channel ``name``, which now exists: ``(name, data, event)``
        to publish as is. Raises when either cannot be."""
        event, data = encode_event(message)
        try:
            data.encode("utf-8")
        except UnicodeEncodeError:
            raise GameError(400, "this text cannot be sent: it is not valid Unicode") from None
        self.channels.channel(name)
        return name, data, event

    def announce(self, change: Change) -> list:
        """The messages announcing ``change``: the change to the table, each changed hand to
        its owner, the table's summary to the lobby when seats changed."""
        table = change.table
        out = [(f"table-{table.id}", change)]
        out += [(hand_channel(table, player), Hand(table.id, table.hand(player)))
                for player in change.hands]
        if change.seats_changed:
            out.append(("lobby", self.summary(table)))
        return out

    def move(self, table: Table, act) -> dict:
        """Commit ``act()``, a rule of ``table`` returning a :class:`Change`; answer the move's
        result (the event id and the note)."""
        def act_and_announce():
            change = act()
            return change, self.announce(change)

        change, ids = self.commit(table, act_and_announce)
        return {"ok": True, "id": ids[0], "note": change.note}

    def summary(self, table: Table) -> Message:
        """How ``table`` looks in the lobby now."""
        return Message(table.summary(), "table")

    def close_idle(self) -> None:
        """Close the tables nobody touched for a while, telling their players and the lobby."""
        def close_them():
            return None, [m for table in self.game.close_idle() for m in self.close(table)]

        self.commit(None, close_them)

    def close(self, table: Table) -> list:
        """Close ``table``; return the messages telling its players and the lobby."""
        self.game.close(table)
        return [(f"table-{table.id}", Closed(table.id)),
                ("lobby", Message({"id": table.id}, "closed"))]

    def state(self, table: Table, player: Player | None) -> dict:
        """The table as ``player`` may see it, and the event id it is current to."""
        seat = table.seat_of(player)
        return {"table": table.public(), "last_id": self.channels.last_id,
                "you": None if player is None else {
                    "id": player.id, "name": player.name,
                    "seat": None if seat is None else seat.number,
                    "hand": table.hand(player)}}


def hand_channel(table: Table, player: Player) -> str:
    """The name of ``player``'s private channel at ``table``."""
    return f"hand-{table.id}-{player.id}"


class TabletopApp(App):
    """The demo's app: an :class:`~clos_web.App` whose requests go through the methods below
    (CLOS's before methods: checks that run before the primary method answers)."""


_GUARD = csrf_guard()


@respond.before
def tabletop_refuses_cross_site(app: TabletopApp, request: Request, conn):
    """No other site may make a player move, chat or open tables (403)."""
    _GUARD.check(request)


MOVES = frozenset(["join", "leave", "draw", "play", "move", "flip", "shuffle", "roll", "chat"])


@attrs.define(slots=True, eq=False, repr=False)
class TableSocket(WebSocket):
    """A client's WebSocket at one table: the table's events come down it (as
    ``/api/tables/<id>/events`` sends them), and the player's moves go up it. A move is a
    text message ``{"rid": N, "op": "move", "params": {...}}``; the answer is ``{"rid": N,
    "status": S, "body": ...}``, made by the very handler of ``POST /api/tables/<id>/<op>``
    (the same parameters, checks, session and CSRF rule: the upgrade request's cookies and
    ``Origin`` go with it)."""

    app: App
    table_id: str
    upgrade: Request


@receive.dispatch
def table_socket_move(ws: TableSocket, message: Text):
    rid = None
    try:
        msg = json.loads(message.data)
        rid = msg.get("rid")
        op, params = msg["op"], msg.get("params") or {}
        if op not in MOVES or not isinstance(params, dict):
            raise ValueError(op)
        body = urlencode({str(k): str(v) for k, v in params.items()}).encode()
    except (ValueError, KeyError, TypeError, AttributeError):
        ws.send(_json({"rid": rid, "status": 400, "body": {"error": "not a move"}}))
        return
    headers = {name: value for name, value in ws.upgrade.headers.items()
               if name in ("cookie", "host", "origin", "user-agent")}
    headers.update({"content-type": "application/x-www-form-urlencoded",
                    "accept": "application/json", "content-length": str(len(body))})
    path = f"/api/tables/{ws.table_id}/{op}"
    request = Request("POST", path, headers=headers, body=body, path=path)
    try:
        result = ws.app.handle(request, None)
        status, answer = 200, result
        if isinstance(result, Response):
            status, answer = result.status, json.loads(result.body or b"null")
    except HTTPError as err:
        status, answer = err.status, {"error": err.reason, "status": err.status}
    ws.send(_json({"rid": rid, "status": status, "body": answer}))


def tabletop(game: Game | None = None, *, history: int = 500, max_age: float = 1800.0,
             retry: float = 1.0, channels: Channels | None = None) -> Tabletop:
    """Build the demo: a new :class:`Game` (or ``game``), its channels (a new registry, or
    ``channels``) and its routes."""
    game = game if game is not None else Game()
    app = TabletopApp(sessions=MemorySessions(idle_timeout=24 * 3600, max_sessions=10_000))
    registry = channels if channels is not None else Channels(
        history=history, max_age=max_age, heartbeat=15.0, retry=retry, retry_jitter=1.0,
        max_channels=20_000, presence_events=True,
        # the game and the sessions live in this process's memory, so its channels do too
        # (one registry-wide id places a client in all of them): one process, whatever
        # CLOS_WEB_REDIS says
        broker=LOCAL)
    tt = Tabletop(game, registry, app)
    files = StaticFiles(STATIC)
    TableP = TableOf[game]

    # -- pages -----------------------------------------------------------------------------

    @app.get("/")
    def index(request: Request):
        return files.respond("index.html", request)

    @app.get("/t/{table_id}")
    def table_page(request: Request, table_id: str):
        return files.respond("index.html", request)

    app.static("/static", STATIC)

    # -- who am I --------------------------------------------------------------------------

    @app.get("/api/me")
    def whoami(session: Session | None):
        player = player_of(session)
        return {"player": None if player is None else {"id": player.id, "name": player.name}}

    @app.post("/api/me")
    def choose_name(session: Session, name: Annotated[str, Length(1, 200)]):
        old = player_of(session)
        player = Player.new(name)
        if old is not None:
            player.id = old.id
        session["player"] = {"id": player.id, "name": player.name}
        return {"player": session["player"]}

    # -- the lobby -------------------------------------------------------------------------

    @app.get("/api/tables")
    def list_tables():
        return {"tables": game.summaries(), "last_id": registry.last_id}

    @app.get("/api/lobby/events")
    @channel(registry)
    def lobby_events():
        return "lobby"

    @app.post("/api/tables")
    def open_table(session: Session, name: Annotated[str, Length(1, MAX_TABLE_NAME * 2)],
                   seats: Annotated[int, Range(2, MAX_SEATS)] = 4,
                   deck: Literal["standard", "custom"] = "standard",
                   cards: Annotated[str, Length(0, 4000)] = ""):
        player = me(session)
        faces = standard_deck() if deck == "standard" else custom_deck(cards)
        tt.close_idle()

        def open_and_sit():
            table = game.open(name, seats, faces, opener=player)
            table.join(player, 1)
            return table, [("lobby", tt.summary(table))]

        table, _ = tt.commit(None, open_and_sit)
        return Response(_json({"table": table.summary()}), status=201,
                        content_type="application/json",
                        headers=[("Location", f"/t/{table.id}")])

    # -- a table: state and streams --------------------------------------------------------

    @app.get("/api/tables/{table}")
    def show_table(table: TableP, session: Session | None):
        return tt.state(table, player_of(session))

    def table_streams(table: Table, session: Session | None) -> tuple:
        """The channels a client at ``table`` reads (its hand too if seated), and what its
        presence there says."""
        names = [f"table-{table.id}"]
        player = player_of(session)
        seat = table.seat_of(player)
        if seat is not None:
            names.append(hand_channel(table, player))
        info = {"name": player.name if player is not None else None,
                "player": player.id if player is not None else None, "seated": seat is not None}
        return names, info

    @app.get("/api/tables/{table}/events")
    @channel(registry)
    def table_events(table: TableP, session: Session | None):
        """The table's public moves, and the caller's own hand if they hold a seat. The
        stream is present at the table (who is online, who watches): a ``presence`` snapshot,
        then ``join`` and ``leave`` events."""
        names, info = table_streams(table, session)
        return EventStream(names, registry=registry, presence=info)

    @app.websocket("/api/tables/{table}/ws")
    def table_socket(request: Request, table: TableP, session: Session | None):
        """The same as ``/events`` over one WebSocket, and moves go up it too: see
        :class:`TableSocket`. Same-origin only (the page's own)."""
        names, info = table_streams(table, session)
        ws = TableSocket(app, table.id, request)
        ws.subscribe(names, request_last_id(request), registry=registry, presence=info)
        return ws

    @app.get("/api/tables/{table}/hands/{player_id}/events")
    @channel(registry)
    def hand_events(table: TableP, player_id: str, session: Session | None):
        """One player's hand alone: only that player's session may read it (else 403)."""
        player = player_of(session)
        if player is None or player.id != player_id or table.seat_of(player) is None:
            return False
        return hand_channel(table, player)

    # -- seats -----------------------------------------------------------------------------

    @app.post("/api/tables/{table}/join")
    def join(table: TableP, session: Session, seat: Annotated[int, Range(1, MAX_SEATS)]):
        player = me(session)
        return tt.move(table, lambda: table.join(player, seat))

    @app.post("/api/tables/{table}/leave")
    def leave(table: TableP, session: Session):
        """Leave the seat; the last player to leave closes the table."""
        player = me(session)

        def leave_and_close():
            change = table.leave(player)
            messages = tt.announce(change)
            if table.is_empty():
                messages += tt.close(table)
            return change, messages

        change, ids = tt.commit(table, leave_and_close)
        return {"ok": True, "id": ids[0], "note": change.note}

    # -- cards -----------------------------------------------------------------------------

    Fraction = Annotated[float, Range(0.0, 1.0)]

    @app.post("/api/tables/{table}/draw")
    def draw(table: TableP, session: Session, stack: StackOn):
        player = me(session)
        return tt.move(table, lambda: table.draw(player, stack))

    @app.post("/api/tables/{table}/play")
    def play(table: TableP, session: Session, card: HandCard, x: Fraction = 0.5,
             y: Fraction = 0.5, face: Literal["up", "down"] = "up",
             onto: StackOn | None = None):
        player = me(session)
        return tt.move(table, lambda: table.play(player, card, x, y, face == "up", onto))

    @app.post("/api/tables/{table}/move")
    def move(table: TableP, session: Session, stack: StackOn, x: Fraction = 0.5,
             y: Fraction = 0.5, top: bool = False, onto: StackOn | None = None):
        player = me(session)
        return tt.move(table, lambda: table.move(player, stack, x, y, top, onto))

    @app.post("/api/tables/{table}/flip")
    def flip(table: TableP, session: Session, stack: StackOn, whole: bool = False):
        player = me(session)
        return tt.move(table, lambda: table.flip(player, stack, whole))

    @app.post("/api/tables/{table}/shuffle")
    def shuffle(table: TableP, session: Session, stack: StackOn):
        player = me(session)
        return tt.move(table, lambda: table.shuffle(player, stack))

    # -- dice and chat ---------------------------------------------------------------------

    @app.post("/api/tables/{table}/roll")
    def roll(table: TableP, session: Session, dice: Annotated[int, Range(1, MAX_DICE)] = 2,
             sides: Annotated[int, Range(2, 100)] = 6):
        player = me(session)

        def roll_dice():
            result = table.roll(player, dice, sides)
            return result, [(f"table-{table.id}", result)]

        result, ids = tt.commit(table, roll_dice)
        return {"ok": True, "id": ids[0], "values": result.values}

    @app.post("/api/tables/{table}/chat")
    def say(table: TableP, session: Session,
            text: Annotated[str, Length(1, MAX_CHAT_TEXT * 2)]):
        player = me(session)

        def chat():
            line = table.say(player, text)
            return line, [(f"table-{table.id}", line)]

        return {"ok": True, "id": tt.commit(table, chat)[1][0]}

    return tt
