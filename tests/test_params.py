"""Typed parameters as data: parse_param methods, restrictions, binding through App.handle."""

from __future__ import annotations

import enum
import json
from typing import Annotated, Literal

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clos_web import (
    App, HTTPError, Length, ParamError, Pattern, Range, Request, Session, UploadedFile,
    parse_param,
)
from clos_web.http import parse
from clos_web.web.params import parse_multipart, parse_query

from conftest import bound_outcome


def get(app, target, **headers):
    head = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    return app.handle(parse(f"GET {target} HTTP/1.1\r\nHost: t\r\n{head}\r\n".encode()))


def post(app, target, body: bytes, ctype: str):
    return app.handle(parse(b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Type: %s\r\n"
                            b"Content-Length: %d\r\n\r\n%s" % (target.encode(), ctype.encode(),
                                                               len(body), body)))


def error(fn, *args, **kw) -> ParamError:
    with pytest.raises(ParamError) as err:
        fn(*args, **kw)
    return err.value


@pytest.mark.parametrize("raw", ["12abc", "", " 12", "1_000", "١٢", "0x10", "1.0", "+"])
def test_int_is_strict(raw):
    with pytest.raises(ValueError):
        parse_param(int, raw, {})


def test_scalars():
    assert parse_param(int, "-12", {}) == -12 and parse_param(int, "+3", {}) == 3
    assert parse_param(float, "2.5e3", {}) == 2500.0
    for bad in ("nan", "inf", "1e99999", "1,5"):
        with pytest.raises(ValueError):
            parse_param(float, bad, {})
    assert parse_param(bool, "on", {}) is True and parse_param(bool, "0", {}) is False
    assert parse_param(bytes, "é", {}) == "é".encode()
    with pytest.raises(ValueError):
        parse_param(int, True, {})  # JSON true is not an integer
    assert parse_param(int, 7, {}) == 7  # JSON number


class Suit(enum.Enum):
    HEARTS = "hearts"
    SPADES = "spades"


def test_binding_converts_by_annotation_and_names_the_bad_parameter():
    app = App()

    @app.get("/f")
    def f(n: int, x: float, flag: bool, suit: Suit, size: Literal["s", "m"], ids: list[int],
          note: str | None, page: int = 1):
        return {"n": n, "x": x, "flag": flag, "suit": suit.value, "size": size, "ids": ids,
                "note": note, "page": page}

    good = "/f?n=3&x=1.5&flag=yes&suit=spades&size=m&ids=1&ids=2"
    assert get(app, good) == {"n": 3, "x": 1.5, "flag": True, "suit": "spades", "size": "m",
                              "ids": [1, 2], "note": None, "page": 1}
    assert get(app, good + "&page=4&note=hi")["page"] == 4
    err = error(get, app, good.replace("n=3", "n=3x"))
    assert err.param == "n" and "not an integer" in err.why and err.status == 400
    assert error(get, app, good.replace("size=m", "size=xl")).param == "size"
    assert error(get, app, good.replace("suit=spades", "suit=clubs")).param == "suit"
    assert error(get, app, good.replace("&ids=2", "&ids=b")).param == "ids"
    err = error(get, app, "/f?x=1")
    assert err.param == "n" and err.why == "missing"


def test_restrictions_next_to_the_type():
    app = App()

    @app.get("/r")
    def r(n: Annotated[int, Range(1, 128)], name: Annotated[str, Length(1, 5), Pattern("[a-z]+")],
          tags: Annotated[list[str], Length(max=2)] = ()):
        return [n, name, list(tags)]

    assert get(app, "/r?n=128&name=abc") == [128, "abc", []]
    assert "above 128" in error(get, app, "/r?n=129&name=abc").why
    assert "below 1" in error(get, app, "/r?n=0&name=abc").why
    assert error(get, app, "/r?n=1&name=abcdef").param == "name"
    assert "does not match" in error(get, app, "/r?n=1&name=ABC").why
    assert error(get, app, "/r?n=1&name=a&tags=1&tags=2&tags=3").param == "tags"


def test_path_variables_are_typed_by_the_handler():
    app = App()

    @app.get("/table/{table_id}/card/{card_id}")
    def card(table_id: str, card_id: int):
        return [table_id, card_id]

    assert get(app, "/table/green/card/7") == ["green", 7]
    assert error(get, app, "/table/green/card/seven").param == "card_id"
    with pytest.raises(TypeError):
        app.get("/x/{missing}")(lambda: None)


@attrs.define
class Move:
    card: int
    x: float
    y: float = 0.0


def test_json_body_form_body_and_attrs_classes():
    app = App()

    @app.post("/move")
    def move(move: Move, table: str = "main"):
        return [table, move]

    body = json.dumps({"card": 3, "x": 1.5}).encode()
    table, m = post(app, "/move", body, "application/json")
    assert table == "main" and m == Move(3, 1.5)
    nested = json.dumps({"move": {"card": 1, "x": 2}, "table": "t1"}).encode()
    assert post(app, "/move", nested, "application/json") == ["t1", Move(1, 2.0)]
    err = error(post, app, "/move", b'{"card": "three", "x": 1}', "application/json")
    assert err.param == "move" and "Move.card" in err.why
    with pytest.raises(HTTPError) as bad:
        post(app, "/move", b"{not json", "application/json")
    assert bad.value.status == 400

    @app.post("/sum")
    def total(a: int, b: int):
        return a + b

    assert post(app, "/sum", b"a=1&b=2", "application/x-www-form-urlencoded") == 3
    assert post(app, "/sum?a=10", b"b=5", "application/x-www-form-urlencoded") == 15


def test_multipart_with_file_upload():
    app = App()

    @app.post("/up")
    def up(title: str, file: UploadedFile, raw: bytes):
        return [title, file.filename, file.content_type, file.data, raw]

    body = (b"--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nhello\r\n"
            b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\n"
            b"Content-Type: application/x-thing\r\n\r\n\x00\x01\r\n\x02\r\n"
            b"--XyZ\r\nContent-Disposition: form-data; name=\"raw\"; filename=\"b\"\r\n\r\nRR\r\n"
            b"--XyZ--\r\n")
    assert post(app, "/up", body, "multipart/form-data; boundary=XyZ") == [
        "hello", "a.bin", "application/x-thing", b"\x00\x01\r\n\x02", b"RR"]
    assert parse_multipart(b"--B--\r\n", "; boundary=B") == {}


def test_the_request_is_an_explicit_parameter():
    app = App()
    app.get("/a")(lambda request: request.path)
    app.get("/b")(lambda req=None: req)

    @app.get("/c")
    def c(r: Request, q: str):
        return [r.method, q]

    assert get(app, "/a") == "/a"
    assert get(app, "/b") is None and get(app, "/b?req=hi") == "hi"  # an ordinary parameter
    assert get(app, "/c?q=1") == ["GET", "1"]


class Table:
    def __init__(self, name):
        self.name, self.cards = name, {1: "ace", 2: "king"}


class CardOn:
    """``CardOn[Table]``: a card looked up on the table bound before it."""

    def __class_getitem__(cls, owner):
        return type(f"CardOn[{owner.__name__}]", (CardOn,), {"owner": owner})


CardOnTable = CardOn[Table]
TABLES = {"green": Table("green")}


@parse_param.dispatch
def parse_param_table(kind: type[Table], raw: str, bound):
    if raw not in TABLES:
        raise HTTPError(404, f"no table {raw}")
    return TABLES[raw]


@parse_param.dispatch
def parse_param_card_on(kind: type[CardOn], raw: str, bound):
    table = next(v for v in bound.values() if isinstance(v, kind.owner))
    number = parse_param(int, raw, bound)
    if number not in table.cards:
        raise ValueError(f"no card {number} on {table.name}")
    return table.cards[number]


def test_a_type_may_depend_on_a_parameter_bound_before_it():
    app = App()

    @app.get("/t/{table}/c/{card}")
    def show(table: Table, card: CardOnTable):
        return [table.name, card]

    assert get(app, "/t/green/c/2") == ["green", "king"]
    assert "no card 9" in error(get, app, "/t/green/c/9").why
    with pytest.raises(HTTPError) as err:
        get(app, "/t/blue/c/1")
    assert err.value.status == 404


def test_sessions_are_created_only_when_asked_for():
    app = App()
    app.get("/plain")(lambda: "x")

    @app.get("/count")
    def count(session: Session):
        session["n"] = session.get("n", 0) + 1
        return str(session["n"])

    @app.get("/peek")
    def peek(session: Session | None):
        return "none" if session is None else str(session["n"])

    get(app, "/plain")
    assert get(app, "/peek") == "none" and len(app.sessions) == 0
    response = get(app, "/count")
    cookie = dict(response.headers)["Set-Cookie"].split(";")[0]
    assert len(app.sessions) == 1 and len(cookie.split("=")[1]) >= 22
    assert get(app, "/count", cookie=cookie) == "2"
    assert get(app, "/peek", cookie=cookie) == "2"


def test_parse_query_fast_path_agrees_with_parse_qs():
    from clos_web import parse_params

    for q in ("a=1&b=2&a=3", "a&b=", "x=%20y&z=+", "k==v", "&&a=1&"):
        assert parse_query(q) == {k: v for k, v in parse_params(q).items()} or "%" in q


class Even(int):
    """An HTTP type of the tests' own: an even integer (a user's method, not a stock one)."""


@parse_param.dispatch
def parse_param_even(kind: type[Even], raw: str, bound):
    n = parse_param(int, raw, bound)
    if n % 2:
        raise ValueError(f"{n} is odd")
    return Even(n)


def _query_app():
    app = App()

    @app.get("/is")
    def ints_and_strs(a: int, b: str, *, k: int):
        return ["is", a, b, k]

    @app.get("/mixed")
    def mixed(x: float, y: bool, e: Even, s: Suit, n: int = 5):
        return ["mixed", x, y, e, s.value, n]

    @app.get("/dep")
    def dependent(table: Table, card: CardOnTable):
        return ["dep", table.name, card]

    @app.get("/one")
    def one(e: Even):
        return ["one", e]

    @app.get("/two")
    def two(a: int, b: int):
        return ["two", a, b]

    return app


_QUERY_PARTS = st.sampled_from(["a", "b", "k", "x", "=", "&", "%20", "%3D", "+", "-", "1",
                                "09", "1.5", "on", "spades", "green", "é", " ", "a=", "&b=x"])
_VALUES = st.sampled_from(["", "0", "1", "-2", "+3", "09", "1.5", "1e3", "nan", "on", "no",
                           "spades", "green", "2", "9", "x=y", "é", " ", "%41", "+", "12abc",
                           "9" * 101, "-", "٣"])
_NAMES = {"/is": ["a", "b", "k"], "/mixed": ["x", "y", "e", "s", "n"], "/dep": ["table", "card"],
          "/one": ["e"], "/two": ["a", "b"]}


@st.composite
def _queries(draw, path):
    """Mostly the handler's own names in order (the plan's shape) with odd values; sometimes
    reordered, repeated or dropped names; sometimes arbitrary text."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.lists(_QUERY_PARTS, max_size=14).map("".join))
    names = list(_NAMES[path])
    if draw(st.booleans()):
        names = draw(st.permutations(names + draw(st.lists(st.sampled_from(names),
                                                           max_size=2))))[:draw(
            st.integers(0, len(names) + 2))]
    return "&".join(f"{name}={draw(_VALUES)}" for name in names)


@settings(max_examples=400, deadline=None)
@given(data=st.data(), path=st.sampled_from(sorted(_NAMES)))
def test_the_compiled_query_plan_agrees_with_the_general_binding(data, path):
    """compile_handler's fast path (one regex, then parse_param per value) gives what the
    general binder gives, value or 400, for any query."""
    query = data.draw(_queries(path))
    app = _query_app()
    route = app.router.exact[path]["GET"]
    request = Request("GET", f"{path}?{query}", path=path, query=query)
    assert bound_outcome(route.invoke, request, ()) == bound_outcome(route.invoke.general,
                                                                       request, ())


def test_the_query_plan_serves_plain_queries_and_defers_the_rest():
    app = _query_app()
    route = app.router.exact["/is"]["GET"]
    assert get(app, "/is?a=-12&b=x=y&k=3") == ["is", -12, "x=y", 3]
    assert route.invoke.general  # the query-only fast path serves this route
    assert get(app, "/is?b=z&a=1&k=2") == ["is", 1, "z", 2]  # another order: general path
    assert get(app, "/is?a=1&b=%41+&k=2") == ["is", 1, "A ", 2]  # escapes: general path
    assert error(get, app, "/is?a=+1&b=x&k=1").why == "not an integer: ' 1'"  # + is a space
    assert get(app, "/mixed?x=1.5&y=on&e=4&s=spades&n=1") == ["mixed", 1.5, True, 4, "spades", 1]
    assert error(get, app, "/mixed?x=1&y=1&e=3&s=spades&n=1").why == "3 is odd"
    assert get(app, "/dep?table=green&card=2") == ["dep", "green", "king"]  # bound in order
