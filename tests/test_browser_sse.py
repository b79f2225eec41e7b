"""A real browser's EventSource against clos_web: headless Chromium (Debian's ``chromium``)
driven by Playwright. It receives published events, and when the server ends the stream it
reconnects by itself with Last-Event-ID and receives exactly what it missed."""

from __future__ import annotations

import os

import pytest

from clos_web import Channels, EventStream, NotFound, Response

from conftest import wait_for

CHROMIUM = "/usr/bin/chromium"

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason=f"{CHROMIUM} is absent (Debian package chromium)")

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>sse</title>
<script>
  window.received = [];
  window.opens = 0;
  window.errors = 0;
  const source = new EventSource("/sub/browser");
  source.onopen = () => { window.opens += 1; };
  source.onerror = () => { window.errors += 1; };
  source.onmessage = (e) => { window.received.push([e.lastEventId, e.data]); };
  source.addEventListener("reset", (e) => { window.received.push(["reset", e.data]); });
</script>
"""


class BrowserApp:
    def __init__(self, registry):
        self.registry = registry
        self.last_ids = []  # the Last-Event-ID of each stream request, in order

    def body_limit(self, request, default):
        return default

    def handle(self, request, conn):
        if request.path == "/":
            return Response(PAGE, content_type="text/html")
        if request.path == "/sub/browser":
            self.last_ids.append(request.header("last-event-id"))
            return EventStream(["browser"], registry=self.registry)
        raise NotFound()


def test_chromium_event_source_receives_events_and_resumes_after_the_server_closes(serve):
    sync_api = pytest.importorskip("playwright.sync_api")
    registry = Channels(retry=0.8, retry_jitter=0.2)
    app = BrowserApp(registry)
    server = serve(app)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page()
            page.set_default_timeout(15_000)
            page.goto(server.url + "/")
            page.wait_for_function("window.opens === 1")
            wait_for(lambda: registry.subscriber_count("browser") == 1)
            ids = [registry.publish("browser", "one"), registry.publish("browser", "two\nlines")]
            page.wait_for_function("window.received.length === 2")
            assert page.evaluate("window.received") == [[ids[0], "one"], [ids[1], "two\nlines"]]

            # the server ends the stream; while the browser is away two events are published
            registry.disconnect("browser")
            wait_for(lambda: registry.subscriber_count("browser") == 0)
            ids += [registry.publish("browser", "three"), registry.publish("browser", "four")]
            assert page.evaluate("window.received.length") == 2  # not there yet: it is away

            # it comes back by itself, says where it was, and gets exactly what it missed
            page.wait_for_function("window.opens === 2 && window.received.length === 4")
            wait_for(lambda: registry.subscriber_count("browser") == 1)
            ids.append(registry.publish("browser", "five"))
            page.wait_for_function("window.received.length === 5")
            assert page.evaluate("window.received") == [
                [ids[0], "one"], [ids[1], "two\nlines"], [ids[2], "three"], [ids[3], "four"],
                [ids[4], "five"]]
            assert app.last_ids == [None, ids[1]]
        finally:
            browser.close()
