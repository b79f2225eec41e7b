"""The routing trie as pure data: no sockets."""

from __future__ import annotations

import pytest

from clos_web import App, HTTPError, MethodNotAllowed, NotFound
from clos_web.web.routing import Route, Router, split_path, split_pattern


def _router(*specs):
    router = Router()
    for method, path in specs:
        router.add(Route(method, path, handler=None))
    return router


def test_literal_segments_beat_variables_whatever_the_order_of_declaration():
    router = _router(("GET", "/table/{table_id}"), ("GET", "/table/new"))
    assert router.lookup("GET", "/table/new").route.path == "/table/new"
    match = router.lookup("GET", "/table/42")
    assert (match.route.path, match.values) == ("/table/{table_id}", ("42",))


def test_variables_capture_decoded_segments_in_order():
    router = _router(("GET", "/table/{table_id}/card/{card_id}"))
    match = router.lookup("GET", "/table/a%20b/card/7")
    assert match.values == ("a b", "7")
    assert match.route.var_names == ("table_id", "card_id")


def test_a_better_branch_without_the_method_falls_back_to_the_next():
    router = _router(("GET", "/t/new"), ("POST", "/t/{id}"))
    assert router.lookup("POST", "/t/new").route.path == "/t/{id}"


def test_rest_variable_takes_the_remaining_segments_but_never_an_encoded_slash():
    router = _router(("GET", "/files/{*path}"))
    assert router.lookup("GET", "/files/a/b/c.txt").values == ("a/b/c.txt",)
    assert router.lookup("GET", "/files/").values == ("",)
    with pytest.raises(NotFound):
        router.lookup("GET", "/files/a%2Fb")
    with pytest.raises(HTTPError) as err:  # /files alone: the rest needs a segment
        router.lookup("GET", "/files")
    assert err.value.status == 308


def test_a_rest_variable_must_come_last_and_names_are_unique():
    with pytest.raises(ValueError):
        split_pattern("/a/{*rest}/b")
    with pytest.raises(ValueError):
        split_pattern("/a/{x}/{x}")
    with pytest.raises(ValueError):
        split_pattern("a/b")


def test_404_when_no_path_and_405_with_allow_when_other_methods():
    router = _router(("GET", "/a"), ("POST", "/a"), ("DELETE", "/b/{x}"))
    with pytest.raises(NotFound):
        router.lookup("GET", "/nowhere")
    with pytest.raises(MethodNotAllowed) as err:
        router.lookup("PUT", "/a")
    assert dict(err.value.headers)["Allow"] == "GET, HEAD, POST"
    with pytest.raises(MethodNotAllowed) as err:
        router.lookup("GET", "/b/1")
    assert dict(err.value.headers)["Allow"] == "DELETE"


def test_head_is_routed_to_get():
    router = _router(("GET", "/a"), ("GET", "/v/{x}"))
    assert router.lookup("HEAD", "/a").route.method == "GET"
    assert router.lookup("HEAD", "/v/1").route.method == "GET"


def test_trailing_slash_is_significant_and_get_is_redirected_to_the_other_form():
    router = _router(("GET", "/dir/"), ("GET", "/file"), ("POST", "/form"))
    assert router.lookup("GET", "/dir/").route.path == "/dir/"
    with pytest.raises(HTTPError) as err:
        router.lookup("GET", "/dir")
    assert err.value.status == 308 and dict(err.value.headers)["Location"] == "/dir/"
    with pytest.raises(HTTPError) as err:
        router.lookup("GET", "/file/")
    assert err.value.status == 308 and dict(err.value.headers)["Location"] == "/file"
    with pytest.raises(NotFound):
        router.lookup("POST", "/form/")


def test_mounted_apps_answer_under_their_prefix_and_own_routes_win():
    api = App()
    api.get("/users/{uid}")(lambda uid: uid)
    api.get("/")(lambda: "api root")
    api.get("/status")(lambda: "api status")
    root = App()
    root.get("/api/status")(lambda: "root status")
    root.mount("/api", api)
    match = root.router.lookup("GET", "/api/users/9")
    assert match.route.app is api and match.values == ("9",) and match.mounts == (api,)
    assert root.router.lookup("GET", "/api/").route.app is api
    assert root.router.lookup("GET", "/api/status").route.app is root
    with pytest.raises(NotFound):
        root.router.lookup("GET", "/api/nothing")


def test_replacing_a_route_keeps_one_route():
    router = _router(("GET", "/a"))
    router.add(Route("GET", "/a", handler="second"))
    assert router.lookup("GET", "/a").route.handler == "second"
    assert len(router.routes()) == 1


def test_split_path_decodes_each_segment_and_refuses_bad_utf8():
    assert split_path("/a%2Fb/c") == ["a/b", "c"]
    assert split_path("/") == [""]
    with pytest.raises(HTTPError) as err:
        split_path("/%ff")
    assert err.value.status == 400


def test_lookups_leave_no_trace_of_client_paths():
    router = _router(("GET", "/t/{x}"), ("GET", "/static/{*p}"))
    before = repr(router)
    for i in range(200):
        for path in (f"/t/{i}", f"/u{i}", f"/static/{i}/x"):
            try:
                router.lookup("GET", path)
            except HTTPError:
                pass
    assert repr(router) == before


# -- the greedy descent gives exactly the walk's answer ---------------------------------------

from types import SimpleNamespace  # noqa: E402
from unittest import mock  # noqa: E402

from hypothesis import given, settings, strategies as st  # noqa: E402

_LITERALS = ("a", "b", "", "a/b", "x y")        # route literals, as decoded text
_SEGMENTS = ("a", "b", "", "c", "a%2Fb", "%2F", "x%20y", "%61")  # request segments, encoded
_METHODS = ("GET", "POST", "HEAD")


@st.composite
def _patterns(draw):
    """A route pattern: literals and variables, maybe a rest variable last."""
    parts = []
    for i in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            parts.append(draw(st.sampled_from(_LITERALS[:3])))  # a literal has no '/'
        else:
            parts.append(f"{{v{i}}}")
    if draw(st.integers(0, 3)) == 0:
        parts.append("{*rest}")
    return "/" + "/".join(parts)


@st.composite
def _routers(draw, depth=0):
    router = Router()
    for _ in range(draw(st.integers(0, 8))):
        router.add(Route(draw(st.sampled_from(_METHODS)), draw(_patterns()), handler=None))
    if depth < 1:
        for _ in range(draw(st.integers(0, 2))):
            prefix = "/" + "/".join(draw(st.lists(st.sampled_from(("a", "b")), min_size=1,
                                                  max_size=2)))
            router.mount(prefix, SimpleNamespace(router=draw(_routers(depth=depth + 1))))
    return router


def _outcome(router, method, path):
    """What a lookup answers: the match (route by identity, values, mounts) or the error."""
    try:
        match = router.lookup(method, path, "q=1")
    except HTTPError as err:
        return ("error", type(err), err.status, err.headers)
    return ("match", id(match.route), match.values, tuple(map(id, match.mounts)))


@settings(max_examples=500, deadline=None)
@given(router=_routers(), method=st.sampled_from(_METHODS + ("PUT",)),
       segments=st.lists(st.sampled_from(_SEGMENTS), min_size=1, max_size=4))
def test_the_greedy_descent_answers_exactly_what_the_full_walk_answers(router, method,
                                                                       segments):
    path = "/" + "/".join(segments)
    segs = split_path(path)
    slashes = [("%2f" in s.lower()) for s in path[1:].split("/")] if "%" in path else None
    quick = router._descend(method, segs)
    if quick is not None:  # when it answers, it is the walk's first match, the same values
        full = router._find(method, segs, slashes)
        assert (quick.route, quick.values, quick.mounts) == (full.route, full.values,
                                                             full.mounts)
    answer = _outcome(router, method, path)
    with mock.patch.object(Router, "_descend", lambda self, method, segs: None):
        assert answer == _outcome(router, method, path)  # the walk alone


def test_the_greedy_descent_answers_a_path_with_variables_and_defers_otherwise():
    router = _router(("GET", "/sub/{name}"), ("GET", "/sub/{name}/x"), ("GET", "/t/new"),
                     ("POST", "/t/{id}"), ("GET", "/f/{*rest}"))
    match = router._descend("HEAD", ["sub", "room"])
    assert (match.route.path, match.values) == ("/sub/{name}", ("room",))
    assert router._descend("GET", ["sub", "a", "x"]).values == ("a",)
    assert router._descend("POST", ["t", "new"]) is None  # /t/new is GET only: the walk
    assert router.lookup("POST", "/t/new").route.path == "/t/{id}"
    assert router._descend("GET", ["f", "a"]) is None             # a rest route: the walk
    assert router.lookup("GET", "/f/a").values == ("a",)
