"""The demo in real browsers: two headless Chromium contexts (two players, two sessions) at one
table. A plays a card and B sees it within a second; B reloads and still sees the table as it
is; A's hand never reaches B's page. It runs both ways: over the table's WebSocket (events
down, moves up) and over the fallback, an SSE stream and POSTed moves. Screenshots of both views
are saved to ``artifacts/`` (git-ignored) for a human to look at."""

from __future__ import annotations

import os
import pathlib
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.tabletop.app import tabletop  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason=f"{CHROMIUM} is absent (Debian package chromium)"),
]


def choose_name(page, name: str) -> None:
    page.fill("#name-input", name)
    page.click("#name-form button")
    page.wait_for_selector(f"#me:has-text('{name}')")


def hand_faces(page) -> list:
    return page.eval_on_selector_all("#hand .card", "cards => cards.map(c => c.title)")


@pytest.mark.parametrize("transport", ["ws", "sse"])
def test_two_players_in_two_browsers_share_one_table(serve, transport):
    sync_api = pytest.importorskip("playwright.sync_api")
    tt = tabletop(retry=0.5)
    server = serve(tt.app)
    ARTIFACTS.mkdir(exist_ok=True)
    started = time.monotonic()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            size = {"width": 1100, "height": 760}

            def new_page():
                context = browser.new_context(viewport=size)  # its own cookies and session
                if transport == "sse":  # the fallback, as where a proxy refuses upgrades
                    context.add_init_script("localStorage.setItem('tabletop.transport', 'sse')")
                page = context.new_page()
                page.set_default_timeout(8_000)
                return page

            a, b = new_page(), new_page()
            answers = []  # every API answer B's page got (streams aside)
            b.on("response", lambda r: answers.append(r.text())
                 if "/api/" in r.url and "/events" not in r.url else None)
            posts, sockets = [], []  # B's POSTs and WebSockets
            b.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
            b.on("websocket", lambda ws: sockets.append(ws.url))

            # B waits in the lobby; A opens a table, which appears in B's lobby by itself
            b.goto(server.url + "/")
            choose_name(b, "Bob")
            b.wait_for_selector("#live-lobby.on")
            a.goto(server.url + "/")
            choose_name(a, "Ada")
            a.fill("#new-table input[name=name]", "Browser night")
            a.select_option("#new-table select[name=seats]", "2")
            a.click("#new-table button[type=submit]")
            a.wait_for_url("**/t/*")
            table_id = a.url.rsplit("/", 1)[1]
            a.wait_for_selector("#live-table.on")
            b.wait_for_selector(f"li[data-table='{table_id}']:has-text('Browser night')")

            # B joins by seat
            b.click(f"li[data-table='{table_id}'] a")
            b.wait_for_selector("#live-table.on")
            b.click("#seats button[data-seat='2']")
            b.wait_for_selector("#seats .seat.mine:has-text('Bob')")
            a.wait_for_selector("#seats .seat:has-text('Bob')")

            # presence: both players show as online; a visitor who only watches is counted,
            # and leaves the count when the page closes
            a.wait_for_selector("#online:has-text('online: Ada, Bob')")
            c = new_page()
            c.goto(f"{server.url}/t/{table_id}")
            c.wait_for_selector("#live-table.on")
            a.wait_for_selector("#online:has-text('1 watching')")
            c.wait_for_selector("#online:has-text('online: Ada, Bob')")
            c.close()
            a.wait_for_selector("#online:has-text('0 watching')")

            # A draws three cards: tap the deck, press Draw
            a.click("#felt .stack .card")
            for n in (1, 2, 3):
                a.click("#stack-bar button[data-act=draw]")
                a.wait_for_function(f"document.querySelectorAll('#hand .card').length === {n}")
            faces = hand_faces(a)
            assert len(set(faces)) == 3
            b.wait_for_selector("#seats .seat:has-text('Ada') .count:has-text('3')")

            # A plays a card face up by dragging it onto the felt; B sees it within a second
            played = faces[0]
            card = a.locator(f"#hand .card[title='{played}']").bounding_box()
            felt = a.locator("#felt").bounding_box()
            a.mouse.move(card["x"] + card["width"] / 2, card["y"] + card["height"] / 2)
            a.mouse.down()
            a.mouse.move(felt["x"] + felt["width"] * 0.3, felt["y"] + felt["height"] * 0.4,
                         steps=8)
            t0 = time.monotonic()
            a.mouse.up()
            b.wait_for_selector(f"#felt .card[title='{played}']", timeout=1_000)
            seen_after = time.monotonic() - t0
            assert seen_after < 1.0
            a.wait_for_function("document.querySelectorAll('#hand .card').length === 2")
            b.wait_for_selector("#seats .seat:has-text('Ada') .count:has-text('2')")

            # B reloads and still sees the table as it is, and A plays another while B is away
            received = b.evaluate("window.tabletopEvents")
            b.reload()
            b.wait_for_selector("#live-table.on")
            b.wait_for_selector(f"#felt .card[title='{played}']")
            b.wait_for_selector("#seats .seat.mine:has-text('Bob')")
            b.wait_for_selector("#seats .seat:has-text('Ada') .count:has-text('2')")
            assert b.locator("#felt .stack").count() == 2  # the deck and the played card
            a.click(f"#hand .card[title='{faces[1]}']")
            a.check("#face-down")
            a.click("#play-selected")
            b.wait_for_function("document.querySelectorAll('#felt .stack').length === 3")
            b.wait_for_selector("#seats .seat:has-text('Ada') .count:has-text('1')")
            assert b.locator(f"#felt .card[title='{faces[1]}']").count() == 0  # face down

            # B chats, A reads it
            b.fill("#chat-input", "nice card, Ada")
            b.press("#chat-input", "Enter")
            a.wait_for_selector("#log li.chat:has-text('nice card, Ada')")

            # A's hand never reached B's page: not in its DOM, not in any event it received
            hidden = faces[1:]
            html = b.content()
            received = "\n".join(received + b.evaluate("window.tabletopEvents"))
            answered = "\n".join(answers)
            assert played in received and played in answered and played in html
            for face in hidden:
                assert face not in html and face not in received and face not in answered
            assert hand_faces(b) == []
            assert hand_faces(a) == [faces[2]]

            # B's moves (join, chat) went up the socket, or were POSTed on the fallback
            moves = [u for u in posts if u.rsplit("/", 1)[-1] in ("join", "chat")]
            if transport == "ws":
                assert any(u.endswith(f"/api/tables/{table_id}/ws?lastEventId=")
                           or f"/api/tables/{table_id}/ws?" in u for u in sockets)
                assert moves == []
            else:
                assert sockets == [] and len(moves) == 2

            a.screenshot(path=str(ARTIFACTS / f"tabletop-player-a-{transport}.png"))
            b.screenshot(path=str(ARTIFACTS / f"tabletop-player-b-{transport}.png"))
        finally:
            browser.close()
    assert time.monotonic() - started < 30
