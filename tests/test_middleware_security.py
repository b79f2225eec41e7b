"""Security middleware with safe defaults: ``cors`` refuses credentials for any origin, and
``csrf_guard`` refuses unsafe requests a browser marks as cross-site. Over real sockets, plus a
property test over arbitrary ``Origin`` values."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from clos_web import App, HTTPError, Request, cors, csrf_guard

from conftest import request

# --------------------------------------------------------------------------------------------
# cors


def test_cors_refuses_any_origin_with_credentials_and_says_what_to_do():
    with pytest.raises(ValueError) as info:
        cors(origins=["*"], credentials=True)
    message = str(info.value)
    assert "credentials" in message and "list the origins" in message
    with pytest.raises(ValueError):
        cors(credentials=True)  # the default origins are "*"
    cors(origins=["*"])  # without credentials "*" stays allowed


@pytest.mark.parametrize("origin", ["https://a.example/", "a.example", "https://a.example/x",
                                    "null", "ftp://a.example", ""])
def test_cors_refuses_origins_that_can_never_match_or_must_not_be_trusted(origin):
    with pytest.raises(ValueError):
        cors(origins=[origin], credentials=True)


def _get(path: str, origin: str | None = None, method: str = "GET", extra: str = "") -> bytes:
    line = f"Origin: {origin}\r\n" if origin is not None else ""
    return f"{method} {path} HTTP/1.1\r\nHost: t\r\n{line}{extra}\r\n".encode()


def test_cors_with_credentials_answers_listed_origins_only_over_a_socket(serve):
    app = App()
    app.use(cors(origins=["https://a.example", "http://localhost:3000"], credentials=True))
    app.get("/me")(lambda: {"me": "ada"})
    server = serve(app)
    for origin in ("https://a.example", "http://localhost:3000"):
        status, headers, _ = request(server, _get("/me", origin))
        assert status == 200
        assert headers["access-control-allow-origin"] == origin
        assert headers["access-control-allow-credentials"] == "true"
        assert headers["vary"] == "Origin"
    for origin in ("https://evil.example", "https://a.example.evil.example", "null",
                   "https://A.example:443"):
        status, headers, _ = request(server, _get("/me", origin))
        assert status == 200
        assert "access-control-allow-origin" not in headers
        assert "access-control-allow-credentials" not in headers
    status, headers, _ = request(server, _get("/me", "https://evil.example", "OPTIONS",
                                              "Access-Control-Request-Method: POST\r\n"))
    assert "access-control-allow-origin" not in headers
    status, headers, _ = request(server, _get("/me", "https://a.example", "OPTIONS",
                                              "Access-Control-Request-Method: POST\r\n"))
    assert status == 204 and headers["access-control-allow-origin"] == "https://a.example"


# --------------------------------------------------------------------------------------------
# csrf_guard over a socket


@pytest.fixture
def guarded(serve):
    app = App()
    app.use(csrf_guard(trusted_origins=["https://partner.example"], exempt=["/hooks/"]))
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        app.route(method, "/x")(lambda: "done")
    app.post("/hooks/github")(lambda: "hooked")
    app.post("/hooksX")(lambda: "not exempt")
    return serve(app)


def _send(server, method: str, path: str = "/x", host: str | None = "own", **fields):
    host = f"127.0.0.1:{server.port}" if host == "own" else host
    lines = [f"{method} {path} HTTP/1.{0 if host is None else 1}"]  # 1.1 requires Host
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in fields.items()]
    lines.append("Content-Length: 0")
    status, _, body = request(server, ("\r\n".join(lines) + "\r\n\r\n").encode(),
                              head_only=method == "HEAD")
    return status, body


def test_requests_without_browser_headers_pass(guarded):
    # curl, server-to-server: no Sec-Fetch-Site, no Origin: nothing a browser sent cross-site
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        assert _send(guarded, method) == (200, b"done")


def test_sec_fetch_site_decides_when_present(guarded):
    assert _send(guarded, "POST", Sec_Fetch_Site="same-origin") == (200, b"done")
    assert _send(guarded, "POST", Sec_Fetch_Site="none") == (200, b"done")  # typed URL, bookmark
    for value in ("cross-site", "same-site", "bogus"):
        status, body = _send(guarded, "POST", Sec_Fetch_Site=value)
        assert status == 403, value
        assert b"cross-site" in body
    # a site of ours on another origin: Sec-Fetch-Site wins over a matching-looking Origin
    status, _ = _send(guarded, "DELETE", Sec_Fetch_Site="cross-site",
                      Origin=f"http://127.0.0.1:{guarded.port}")
    assert status == 403


def test_same_site_may_be_allowed(serve):
    app = App()
    app.use(csrf_guard(allow_same_site=True))
    app.post("/x")(lambda: "done")
    server = serve(app)
    assert _send(server, "POST", Sec_Fetch_Site="same-site") == (200, b"done")
    assert _send(server, "POST", Sec_Fetch_Site="cross-site")[0] == 403


def test_origin_is_checked_when_sec_fetch_site_is_absent(guarded):
    port = guarded.port
    for own in (f"http://127.0.0.1:{port}", f"https://127.0.0.1:{port}",
                f"HTTP://127.0.0.1:{port}"):
        assert _send(guarded, "POST", Origin=own) == (200, b"done"), own
    assert _send(guarded, "POST", host=f"LOCALHOST:{port}",
                 Origin=f"http://localhost:{port}") == (200, b"done")
    for foreign in ("https://evil.example", f"http://127.0.0.1:{port + 1}", "http://127.0.0.1",
                    f"http://127.0.0.1:{port}.evil.example", f"http://evil@127.0.0.1:{port}",
                    f"http://127.0.0.1:{port}/", "null", "", "garbage",
                    "https://partner.example.evil"):
        status, body = _send(guarded, "POST", Origin=foreign)
        assert status == 403, foreign
        assert b"origin" in body
    # no Host to compare with: only a trusted origin passes
    assert _send(guarded, "PUT", host=None, Origin=f"http://127.0.0.1:{port}")[0] == 403


def test_trusted_origins_and_exempt_paths_pass(guarded):
    assert _send(guarded, "POST", Origin="https://partner.example") == (200, b"done")
    assert _send(guarded, "POST", Origin="https://partner.example",
                 Sec_Fetch_Site="cross-site") == (200, b"done")
    assert _send(guarded, "POST", "/hooks/github", Origin="https://evil.example",
                 Sec_Fetch_Site="cross-site") == (200, b"hooked")
    assert _send(guarded, "POST", "/hooksX", Origin="https://evil.example")[0] == 403


def test_safe_methods_always_pass(guarded):
    for method in ("GET", "HEAD"):
        status, _ = _send(guarded, method, Origin="https://evil.example",
                          Sec_Fetch_Site="cross-site")
        assert status == 200, method
    status, _ = _send(guarded, "OPTIONS", Origin="null", Sec_Fetch_Site="cross-site")
    assert status == 204


def test_csrf_guard_checks_its_configuration():
    for bad in ("https://partner.example/", "partner.example", "null", "https://*.example"):
        with pytest.raises(ValueError):
            csrf_guard(trusted_origins=[bad])
    with pytest.raises(ValueError):
        csrf_guard(exempt=["hooks"])


# --------------------------------------------------------------------------------------------
# property: an Origin that is neither ours nor trusted never passes, and nothing is a 500

_GUARD = csrf_guard(trusted_origins=["https://partner.example"])


def _call(origin: str, host: str = "app.example:8080"):
    req = Request("POST", "/x", headers={"host": host, "origin": origin}, path="/x")
    return _GUARD(req, lambda r: "done")


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.text(max_size=60),
    st.builds(lambda scheme, host, port: f"{scheme}://{host}{port}",
              st.sampled_from(["http", "https", "ftp", "HTTP", "javascript"]),
              st.sampled_from(["app.example", "APP.example", "partner.example", "evil.example",
                               "app.example.evil", "127.0.0.1", "[::1]", "app.example:8080@x"]),
              st.sampled_from(["", ":8080", ":80", ":443", ":08080", ":8080/", ":8080?"]))))
def test_any_origin_that_is_not_ours_or_trusted_is_refused(origin):
    allowed = origin.lower() in {"http://app.example:8080", "https://app.example:8080",
                                 "https://partner.example"}
    try:
        assert _call(origin) == "done"
        assert allowed, origin
    except HTTPError as err:
        assert err.status == 403 and not allowed, origin
