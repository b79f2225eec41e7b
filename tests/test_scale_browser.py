"""Two Chromium pages on two clos_web processes sharing one Redis (as two workers or two
machines behind a load balancer would be): each sees the other's moves and presence, live."""

from __future__ import annotations

import pathlib
import signal
import subprocess

import pytest

from conftest import ROOT, wait_for
from redis_server import redis_server  # noqa: F401  (the fixture)
from test_cli import PY, env, free_port, serving

CHROMIUM = "/usr/bin/chromium"


def _process(port: int, redis_url: str, tmp_path: pathlib.Path):
    err = open(tmp_path / f"err-{port}", "wb")
    proc = subprocess.Popen([PY, "-m", "clos_web", "tests.scale_app:app", "--redis", redis_url,
                             "--port", str(port)], cwd=ROOT, env=env(), stdout=err, stderr=err,
                            stdin=subprocess.DEVNULL)
    err.close()
    return proc


def test_two_pages_on_two_processes_see_each_others_moves_and_presence(redis_server,  # noqa: F811
                                                                        tmp_path):
    if not pathlib.Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    ports = [free_port(), free_port()]
    procs = [_process(port, redis_server.url, tmp_path) for port in ports]
    try:
        for port in ports:
            wait_for(serving(port, b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n"), timeout=20,
                     interval=0.05)
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                      "--disable-component-update", "--disable-sync", "--no-first-run"])
            try:
                ada = browser.new_context().new_page()
                bob = browser.new_context().new_page()
                for page in (ada, bob):
                    page.set_default_timeout(8_000)
                ada.goto(f"http://127.0.0.1:{ports[0]}/board?user=ada")
                ada.wait_for_selector("body[data-live=yes]")
                bob.goto(f"http://127.0.0.1:{ports[1]}/board?user=bob")
                bob.wait_for_selector("body[data-live=yes]")
                for page in (ada, bob):  # both see both, whichever process they reached
                    page.wait_for_function(
                        "[...document.querySelectorAll('#who li')].map(l => l.textContent)"
                        ".join() === 'ada,bob'")
                ada.fill("#text", "e2-e4")
                ada.press("#text", "Enter")
                bob.wait_for_selector("#moves li:has-text('ada: e2-e4')")
                bob.fill("#text", "e7-e5")
                bob.press("#text", "Enter")
                ada.wait_for_selector("#moves li:has-text('bob: e7-e5')")
                assert ada.locator("#moves li").all_text_contents() == [
                    "ada: e2-e4", "bob: e7-e5"]
                bob.close()  # bob leaves: ada's page sees it
                ada.wait_for_function(
                    "[...document.querySelectorAll('#who li')].map(l => l.textContent)"
                    ".join() === 'ada'")
            finally:
                browser.close()
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
