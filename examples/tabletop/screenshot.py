"""Take the README's screenshot of the demo: ``python -m examples.tabletop.screenshot [OUT.png]``.

Starts the app on a free port, seats three players through the HTTP API (draws, plays, dice,
chat), then photographs the first player's page in headless Chromium (Debian's ``chromium``,
driven by Playwright). Writes ``docs/tabletop.png`` by default; ``--phone`` shoots a
phone-sized view instead.
"""

import argparse
import http.cookiejar
import json
import pathlib
import urllib.parse
import urllib.request

import clos_web

from .app import tabletop

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


class Client:
    """A player talking to the API with their own cookie jar (their session)."""

    def __init__(self, base: str, name: str):
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.player = self.call("POST", "/api/me", name=name)["player"]

    def call(self, method: str, path: str, **params):
        """The JSON answer of ``method path`` with form ``params``."""
        data = urllib.parse.urlencode(params).encode() if params else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Accept": "application/json"})
        with self.opener.open(req, timeout=5) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def cookie(self) -> dict:
        """The session cookie, for a browser context."""
        c = next(iter(self.jar))
        return {"name": c.name, "value": c.value, "url": self.base}


def set_scene(base: str) -> tuple:
    """Open a table with three players and a few moves made; return (table id, first player)."""
    ada, bob, cleo = Client(base, "Ada"), Client(base, "Bob"), Client(base, "Cleo")
    table = ada.call("POST", "/api/tables", name="Friday night", seats=4)["table"]["id"]
    path = f"/api/tables/{table}"
    bob.call("POST", path + "/join", seat=2)
    cleo.call("POST", path + "/join", seat=3)
    deck = ada.call("GET", path)["table"]["stacks"][0]["id"]
    for _ in range(5):
        for player in (ada, bob, cleo):
            player.call("POST", path + "/draw", stack=deck)
    spots = [(0.2, 0.3), (0.33, 0.32), (0.66, 0.3), (0.8, 0.32)]
    for player, (x, y) in zip((bob, cleo, bob, cleo), spots):
        card = player.call("GET", path)["you"]["hand"][0]["id"]
        player.call("POST", path + "/play", card=card, x=x, y=y, face="up")
    card = ada.call("GET", path)["you"]["hand"][0]["id"]
    ada.call("POST", path + "/play", card=card, x=0.28, y=0.68, face="down")
    ada.call("POST", path + "/move", stack=deck, x=0.52, y=0.5)
    ada.call("POST", path + "/chat", text="Welcome! Aces high tonight.")
    bob.call("POST", path + "/chat", text="Deal me in!")
    cleo.call("POST", path + "/roll", dice=2)
    bob.call("POST", path + "/chat", text="Nice roll, Cleo")
    return table, ada


def shoot(out: pathlib.Path, phone: bool = False) -> pathlib.Path:
    """Write the screenshot to ``out``; return it."""
    from playwright.sync_api import sync_playwright

    tt = tabletop()
    server = clos_web.start(tt.app, 0)
    try:
        table, ada = set_scene(server.url)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                size = {"width": 390, "height": 844} if phone else {"width": 1120, "height": 700}
                context = browser.new_context(viewport=size, device_scale_factor=1)
                context.add_cookies([ada.cookie()])
                page = context.new_page()
                page.set_default_timeout(10_000)
                page.goto(f"{server.url}/t/{table}")
                page.wait_for_selector("#hand .card")
                page.wait_for_selector("#live-table.on")
                page.wait_for_timeout(400)  # let the pop-in animations finish
                out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(out), full_page=phone)
            finally:
                browser.close()
    finally:
        server.stop(2)
    return out


def main(argv=None) -> None:
    """Command line: the output path (docs/tabletop.png) and ``--phone``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default=str(ROOT / "docs" / "tabletop.png"))
    parser.add_argument("--phone", action="store_true")
    args = parser.parse_args(argv)
    path = shoot(pathlib.Path(args.out), args.phone)
    print(f"{path} ({path.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
