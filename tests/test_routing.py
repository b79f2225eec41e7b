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
