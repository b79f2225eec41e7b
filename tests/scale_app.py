"""The app ``tests/test_scale_out.py`` serves with N workers sharing a Redis broker.

    python -m clos_web tests.scale_app:app --workers 2 --redis URL --port P --pid-file F

(cwd = the repository root.) ``--redis`` sets ``CLOS_WEB_REDIS`` before this module is
imported, so ``registry`` below stores its events in Redis and every worker delivers them.

- ``GET /pid``: this worker's pid, as text (which process a connection reached)
- ``GET /plaintext``: ``Hello, World!`` (a request that never touches Redis)
- ``GET /sub/NAME``: an SSE stream of channel NAME (honours ``Last-Event-ID``)
- ``POST /pub/NAME``: publishes the body (UTF-8) on NAME; ``202`` with the event id once Redis
  stored it, ``503`` when it could not be stored
- ``GET /board?user=U``: a page where each user's moves and who is on the page show live
  (``GET /room/NAME?user=U``: an SSE stream present on NAME with ``{"user": U}``; ``POST
  /move/NAME``: publish a move); the browser test opens it on two processes
"""

from __future__ import annotations

import os

from clos_web import Accepted, App, BadRequest, Channels, EventStream, Message, Response, channel

app = App()
registry = Channels(heartbeat=1.0, presence_events=True)

HELLO = Response(b"Hello, World!", content_type="text/plain")


@app.get("/pid")
def pid():
    """This worker's pid."""
    return str(os.getpid())


@app.get("/plaintext")
def plaintext():
    return HELLO


@app.get("/sub/{name}")
@channel(registry)
def sub(name: str):
    """An SSE stream of channel ``name``."""
    return [name]


@app.post("/pub/{name}")
def pub(request, name: str):
    """Publish the body on ``name``: 202 with the event id once stored, 503 if it cannot be."""
    try:
        data = request.body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(reason="the event data must be UTF-8") from None
    return Accepted(registry.publish(name, data))


BOARD = """<!doctype html>
<meta charset="utf-8"><title>board</title>
<ul id="who"></ul><ol id="moves"></ol>
<form id="f"><input id="text" name="text"><button>move</button></form>
<script>
const user = new URLSearchParams(location.search).get("user");
const present = new Map();
function who() {
  document.getElementById("who").innerHTML = "";
  for (const name of [...new Set([...present.values()].map((i) => i.user))].sort()) {
    const li = document.createElement("li"); li.textContent = name;
    document.getElementById("who").append(li);
  }
}
const source = new EventSource(`/room/board?user=${encodeURIComponent(user)}`);
source.onopen = () => document.body.dataset.live = "yes";
source.addEventListener("presence", (e) => {
  present.clear();
  for (const [c, i] of Object.entries(JSON.parse(e.data))) present.set(c, i);
  who();
});
source.addEventListener("join", (e) => {
  const j = JSON.parse(e.data); present.set(j.client, j.info); who();
});
source.addEventListener("leave", (e) => { present.delete(JSON.parse(e.data).client); who(); });
source.addEventListener("move", (e) => {
  const li = document.createElement("li"); li.textContent = e.data;
  document.getElementById("moves").append(li);
});
document.getElementById("f").addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = document.getElementById("text").value;
  await fetch("/move/board", {method: "POST", body: `${user}: ${text}`});
});
</script>
"""


@app.get("/board")
def board():
    return Response(BOARD, content_type="text/html")


@app.get("/room/{name}")
def room(name: str, user: str):
    return EventStream([name], registry=registry, presence={"user": user})


@app.post("/move/{name}")
def move(request, name: str):
    return Accepted(registry.publish(name, Message(request.body.decode("utf-8"), "move")))
