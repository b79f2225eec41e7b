// Tabletop: the page. Plain JavaScript, no build step, no framework.
//
// State comes from GET /api/tables/<id> ({table, you, last_id}); then a WebSocket on
// /api/tables/<id>/ws?lastEventId=<last_id> brings every move made since, in order, and
// carries this player's moves up ({rid, op, params} -> {rid, status, body}). Where the socket
// cannot open (a proxy that refuses upgrades), or with ?transport=sse in the address (or
// localStorage "tabletop.transport" = "sse"), an
// EventSource on /api/tables/<id>/events brings the events and moves are POSTed instead.
// Events carry what changed (stacks, seats, a note; or the player's own hand), so the page
// never reloads to update. On a `reset` event (the server's history could not cover a gap)
// the page fetches the state again; events that arrive meanwhile are kept and replayed.
"use strict";

const $ = (sel) => document.querySelector(sel);
const MAX_LOG = 120;

// -- talking to the server -----------------------------------------------------------------

async function api(method, path, params) {
  const viaSocket = method === "POST" ? moveOverSocket(path, params) : null;
  if (viaSocket) {
    const reply = await viaSocket;
    if (reply.status >= 400) {
      const err = new Error((reply.body && reply.body.error) || `error ${reply.status}`);
      err.status = reply.status;
      throw err;
    }
    return reply.body;
  }
  const init = { method, headers: { Accept: "application/json" } };
  if (params) {
    init.body = new URLSearchParams(params);
  }
  const resp = await fetch(path, init);
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
  if (!resp.ok) {
    const why = (data && (data.reason || data.error)) || text.replace(/^\d+ /, "").trim() || resp.statusText;
    const err = new Error(data && data.parameter ? `${data.parameter}: ${why}` : why);
    err.status = resp.status;
    throw err;
  }
  return data;
}

let toastTimer = null;
function toast(message, kind) {
  const el = $("#toast");
  el.textContent = message;
  el.className = "toast" + (kind ? " " + kind : "");
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, 3200);
}

async function act(method, path, params) {
  try {
    return await api(method, path, params);
  } catch (err) {
    toast(err.message);
    return null;
  }
}

function seqOf(id) {
  const n = Number(String(id || "").split("-").pop());
  return Number.isFinite(n) ? n : 0;
}

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

// -- who am I ------------------------------------------------------------------------------

const me = { player: null };

function showMe() {
  const form = $("#name-form");
  const chip = $("#me");
  if (me.player) {
    chip.textContent = me.player.name;
    chip.title = "click to change your name";
    chip.hidden = false;
    form.hidden = true;
  } else {
    chip.hidden = true;
    form.hidden = false;
  }
}

function setupName(onChange) {
  $("#name-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const name = $("#name-input").value;
    const data = await act("POST", "/api/me", { name });
    if (data) {
      me.player = data.player;
      showMe();
      onChange && onChange();
    }
  });
  $("#me").addEventListener("click", () => {
    $("#name-input").value = me.player ? me.player.name : "";
    $("#name-form").hidden = false;
    $("#me").hidden = true;
    $("#name-input").focus();
  });
}

// -- the lobby -----------------------------------------------------------------------------

function lobby() {
  $("#lobby-view").hidden = false;
  const tables = new Map();
  const list = $("#table-list");

  function render() {
    list.replaceChildren();
    for (const t of tables.values()) {
      const li = el("li", "table-item");
      li.dataset.table = t.id;
      const info = el("div", "info");
      info.append(el("div", "title", t.name),
                  el("div", "who", t.players.length ? t.players.join(", ") : "nobody seated"));
      const pill = el("span", "pill" + (t.full ? " full" : ""),
                      t.full ? "full" : `${t.taken}/${t.seats} seated`);
      const go = el("a", "btn small" + (t.full ? "" : " primary"), t.full ? "Watch" : "Join");
      go.href = `/t/${t.id}`;
      li.append(info, pill, go);
      list.append(li);
    }
    $("#no-tables").hidden = tables.size > 0;
  }

  async function load() {
    const data = await act("GET", "/api/tables");
    if (!data) return null;
    tables.clear();
    for (const t of data.tables) tables.set(t.id, t);
    render();
    return data.last_id;
  }

  load().then((lastId) => {
    const source = new EventSource(`/api/lobby/events?lastEventId=${encodeURIComponent(lastId || "")}`);
    source.onopen = () => $("#live-lobby").classList.add("on");
    source.onerror = () => $("#live-lobby").classList.remove("on");
    source.addEventListener("table", (e) => { const t = JSON.parse(e.data); tables.set(t.id, t); render(); });
    source.addEventListener("closed", (e) => { tables.delete(JSON.parse(e.data).id); render(); });
    source.addEventListener("reset", () => load());
  });

  const form = $("#new-table");
  form.addEventListener("change", () => {
    $("#custom-cards").hidden = form.deck.value !== "custom";
  });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!me.player) {
      toast("Choose a name first (top right).");
      $("#name-input").focus();
      return;
    }
    const params = { name: form.name.value, seats: form.seats.value, deck: form.deck.value };
    if (form.deck.value === "custom") params.cards = form.cards.value;
    const data = await act("POST", "/api/tables", params);
    if (data) location.href = `/t/${data.table.id}`;
  });
}

// -- a table -------------------------------------------------------------------------------

const view = {
  id: null,
  table: null,        // {id, name, seats, stacks (by id), chat}
  you: null,          // {id, name, seat, hand} or null
  seq: 0,             // the last event applied
  lastId: null,       // its id, to resume a stream
  loading: false,
  pending: [],        // events that arrived while loading
  source: null,       // the EventSource or WebSocket the events come from
  socket: null,       // the open WebSocket moves go up (null: moves are POSTed)
  transport: (new URLSearchParams(location.search).get("transport")
              || localStorage.getItem("tabletop.transport")) === "sse" ? "sse" : "ws",
  selectedStack: null,
  selectedCard: null,
  closed: false,
};
window.tabletopEvents = [];  // what this page received (bounded): tests read it

function seated() { return !!(view.you && view.you.seat); }

async function loadTable() {
  view.loading = true;
  let data;
  try {
    data = await api("GET", `/api/tables/${view.id}`);
  } catch (err) {
    view.loading = false;
    if (err.status === 404) return tableGone("This table is closed or does not exist.");
    toast(err.message);
    return;
  }
  const stacks = new Map();
  for (const s of data.table.stacks) stacks.set(s.id, s);
  view.table = { ...data.table, stacks };
  view.you = data.you;
  view.seq = seqOf(data.last_id);
  view.lastId = data.last_id;
  $("#table-name").textContent = data.table.name;
  document.title = `${data.table.name} · Tabletop`;
  $("#log").replaceChildren();
  for (const entry of data.table.log) logLine(entry.kind, entry);
  const lastRoll = data.table.log.filter((entry) => entry.kind === "dice").pop();
  $("#dice-show").textContent = lastRoll ? lastRoll.values.map(die).join("") : "";
  view.loading = false;
  const pending = view.pending;
  view.pending = [];
  for (const e of pending) handle(e);
  renderAll();
}

// -- the table's socket: events down, moves up --------------------------------------------

let nextRid = 1;
const awaiting = new Map();  // rid -> {resolve, reject, socket}

function moveOverSocket(path, params) {
  const m = path.match(/^\/api\/tables\/[^/]+\/(\w+)$/);
  const socket = view.socket;
  if (!m || !socket || socket.readyState !== WebSocket.OPEN) return null;
  const rid = nextRid++;
  return new Promise((resolve, reject) => {
    awaiting.set(rid, { resolve, reject, socket });
    socket.send(JSON.stringify({ rid, op: m[1], params: params || {} }));
  });
}

function retire(old) {
  // a socket being replaced still answers the moves sent on it, then closes
  if (!old) return;
  if (typeof WebSocket !== "undefined" && old instanceof WebSocket) {
    const mine = () => [...awaiting.values()].some((w) => w.socket === old);
    if (!mine()) { old.close(1000); return; }
    const check = setInterval(() => { if (!mine()) { clearInterval(check); old.close(1000); } }, 50);
    setTimeout(() => { clearInterval(check); old.close(1000); }, 5000);
  } else {
    old.close();
  }
}

function connectSocket() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const url = `${scheme}://${location.host}/api/tables/${view.id}/ws?lastEventId=${encodeURIComponent(view.lastId || "")}`;
  const socket = new WebSocket(url);
  view.source = socket;
  view.socket = null;
  view.present = new Map();
  let opened = false;
  socket.onopen = () => {
    opened = true;
    if (view.source === socket) view.socket = socket;
    $("#live-table").classList.add("on");
  };
  socket.onmessage = (m) => {
    const msg = JSON.parse(m.data);
    if (msg.rid !== undefined) {
      const w = awaiting.get(msg.rid);
      if (w) { awaiting.delete(msg.rid); w.resolve(msg); }
      return;
    }
    if (view.source !== socket) return;
    onEvent(msg.event, msg.id, msg.data);
  };
  socket.onclose = () => {
    for (const [rid, w] of awaiting) {
      if (w.socket === socket) { awaiting.delete(rid); w.reject(new Error("connection lost; try again")); }
    }
    if (view.source !== socket || view.closed) return;
    view.socket = null;
    $("#live-table").classList.remove("on");
    if (!opened) view.transport = "sse";  // it never opened: the SSE stream and POSTs instead
    setTimeout(() => { if (view.source === socket) connect(); }, opened ? 1500 : 0);
  };
}

function onEvent(type, id, data) {
  if (type === "presence") {
    for (const [client, info] of Object.entries(JSON.parse(data))) view.present.set(client, info);
    renderPresence();
  } else if (type === "join" || type === "leave") {
    const { client, info } = JSON.parse(data);
    if (type === "join") view.present.set(client, info); else view.present.delete(client);
    renderPresence();
  } else {
    handle({ type, id, data });
  }
}

function connect() {
  const old = view.source;
  view.source = null;
  view.socket = null;
  retire(old);
  if (view.transport === "ws" && typeof WebSocket !== "undefined") return connectSocket();
  const url = `/api/tables/${view.id}/events?lastEventId=${encodeURIComponent(view.lastId || "")}`;
  const source = new EventSource(url);
  view.source = source;
  source.onopen = () => $("#live-table").classList.add("on");
  source.onerror = () => {
    $("#live-table").classList.remove("on");
    if (source.readyState === EventSource.CLOSED && !view.closed) {
      setTimeout(() => { if (view.source === source) connect(); }, 1500);
    }
  };
  // presence: who is online here (a snapshot on each connection, then joins and leaves)
  view.present = new Map();
  for (const type of ["change", "hand", "dice", "chat", "closed", "reset", "presence", "join", "leave"]) {
    source.addEventListener(type, (e) => {
      if (view.source !== source) return;
      onEvent(type, e.lastEventId, e.data);
    });
  }
}

function renderPresence() {
  const players = new Map();  // one name per player, however many tabs they have open
  let watching = 0;
  for (const info of view.present.values()) {
    if (info.seated) players.set(info.player, info.name);
    else watching += 1;
  }
  const names = [...players.values()].sort();
  $("#online").textContent = (names.length ? `online: ${names.join(", ")}` : "nobody seated online")
    + ` · ${watching} watching`;
}

function handle(e) {
  window.tabletopEvents.push(e.type + " " + e.data);
  if (window.tabletopEvents.length > 300) window.tabletopEvents.shift();
  if (e.type === "reset") {
    if (!view.loading) loadTable();
    return;
  }
  if (view.loading) { view.pending.push(e); return; }
  const seq = seqOf(e.id);
  if (seq && seq <= view.seq) return;  // already in the state we hold
  if (seq) { view.seq = seq; view.lastId = e.id; }
  const data = JSON.parse(e.data);
  if (e.type === "change") {
    for (const s of data.stacks) view.table.stacks.set(s.id, s);
    for (const id of data.removed) view.table.stacks.delete(id);
    view.table.seats = data.seats;
    if (view.you) {
      const mine = data.seats.find((s) => s.player === view.you.id);
      const seat = mine ? mine.seat : null;
      if (seat !== view.you.seat) {
        view.you.seat = seat;
        if (!seat) view.you.hand = [];
        connect();  // join or leave the hand channel: resume from lastId
      }
    }
    logLine("note", data);
    renderAll();
  } else if (e.type === "hand") {
    if (view.you) view.you.hand = data.cards;
    renderHand();
  } else if (e.type === "dice") {
    logLine("dice", data);
    const show = $("#dice-show");
    show.textContent = data.values.map(die).join("");
    show.classList.remove("rolled"); void show.offsetWidth; show.classList.add("rolled");
  } else if (e.type === "chat") {
    logLine("chat", data);
  } else if (e.type === "closed") {
    tableGone("The table has closed.");
  }
}

function tableGone(message) {
  view.closed = true;
  if (view.source) view.source.close();
  toast(message + " Back to the lobby…", "info");
  setTimeout(() => { location.href = "/"; }, 1800);
}

function die(n) { return n >= 1 && n <= 6 ? String.fromCodePoint(0x267f + n) : `[${n}]`; }

function logLine(kind, data) {
  const log = $("#log");
  const li = el("li", kind);
  if (kind === "chat") {
    li.append(el("b", "", data.name + ": "), document.createTextNode(data.text));
  } else if (kind === "dice") {
    li.textContent = `${data.name} rolled ${data.values.map(die).join(" ")}  ${data.values.join(" + ")}` +
      (data.values.length > 1 ? ` = ${data.values.reduce((a, b) => a + b, 0)}` : "");
  } else {
    li.textContent = data.note;
  }
  log.append(li);
  while (log.children.length > MAX_LOG) log.firstChild.remove();
  log.scrollTop = log.scrollHeight;
}

// -- drawing -------------------------------------------------------------------------------

function cardNode(card) {
  const node = el("div", "card");
  node.dataset.card = card.id;
  if (!card.up && !card.mine) {
    node.classList.add("down");
    return node;
  }
  if (!card.suit) {
    node.classList.add("custom");
    node.append(el("span", "label", card.face));
  } else {
    const rank = card.face.slice(0, -1);
    if (card.suit === "♥" || card.suit === "♦") node.classList.add("red");
    const corner = el("span", "corner");
    corner.append(rank, document.createElement("br"), card.suit);
    const br = corner.cloneNode(true);
    br.classList.add("br");
    node.append(corner, el("span", "pip", card.suit), br);
  }
  node.title = card.face;
  return node;
}

function depthShadow(n) {
  const layers = Math.min(n - 1, 6);
  const parts = [];
  for (let i = 1; i <= layers; i++) {
    parts.push(`${i * 1.5}px ${i * 1.5}px 0 ${i % 2 ? "#d8d2c4" : "#b9b2a2"}`);
  }
  parts.push(`${layers * 1.5 + 2}px ${layers * 1.5 + 3}px 6px rgba(0,0,0,.45)`);
  return parts.join(", ");
}

const stackNodes = new Map();

function renderStacks() {
  const felt = $("#felt");
  const seen = new Set();
  for (const s of view.table.stacks.values()) {
    seen.add(s.id);
    let node = stackNodes.get(s.id);
    const top = s.cards[s.cards.length - 1];
    const key = `${top.id}:${top.up}:${s.cards.length}`;
    if (!node) {
      node = el("div", "stack");
      node.dataset.stack = s.id;
      felt.append(node);
      stackNodes.set(s.id, node);
    }
    node.style.left = `${s.x * 100}%`;
    node.style.top = `${s.y * 100}%`;
    node.style.zIndex = s.z;
    if (node.dataset.key !== key) {
      const fresh = node.dataset.key !== undefined;
      node.dataset.key = key;
      node.replaceChildren();
      const card = cardNode(top);
      card.style.boxShadow = depthShadow(s.cards.length);
      if (fresh) card.classList.add("fresh");
      node.append(card);
      if (s.cards.length > 1) {
        const badge = el("span", "badge", String(s.cards.length));
        badge.title = "drag to move the whole stack";
        node.append(badge);
      }
    }
    node.classList.toggle("selected", view.selectedStack === s.id);
  }
  for (const [id, node] of stackNodes) {
    if (!seen.has(id)) { node.remove(); stackNodes.delete(id); }
  }
  if (view.selectedStack && !view.table.stacks.has(view.selectedStack)) view.selectedStack = null;
  $("#stack-bar").hidden = !(view.selectedStack && seated());
}

function renderSeats() {
  const ul = $("#seats");
  ul.replaceChildren();
  for (const s of view.table.seats) {
    const mine = view.you && s.player === view.you.id;
    const li = el("li", "seat" + (mine ? " mine" : "") + (s.player ? "" : " empty"));
    li.append(el("span", "num", `#${s.seat}`));
    if (s.player) {
      li.append(el("span", "name", s.name + (mine ? " (you)" : "")),
                el("span", "count", String(s.cards)));
    } else {
      li.append(el("span", "name", "free"));
      const sit = el("button", "btn small", seated() ? "Move here" : "Sit");
      sit.dataset.seat = s.seat;
      sit.addEventListener("click", () => sitAt(s.seat));
      li.append(sit);
    }
    ul.append(li);
  }
  $("#leave").hidden = !seated();
  $("#watching").hidden = seated();
}

function renderHand() {
  const hand = $("#hand");
  hand.replaceChildren();
  const cards = (view.you && view.you.hand) || [];
  for (const c of cards) {
    const node = cardNode({ ...c, mine: true });
    if (view.selectedCard === c.id) node.classList.add("selected");
    hand.append(node);
  }
  if (view.selectedCard && !cards.some((c) => c.id === view.selectedCard)) view.selectedCard = null;
  $("#hand-count").textContent = cards.length ? `(${cards.length})` : "";
  $("#play-selected").hidden = !view.selectedCard;
  $("#hand-hint").textContent = !me.player ? "Choose a name (top right), then take a seat to play."
    : !seated() ? "You are watching. Take a free seat to play."
    : cards.length ? "Drag a card onto the table, or tap it and press Play."
    : "Drag the top card of a stack here, or tap a stack and press Draw.";
}

function renderAll() {
  if (!view.table) return;
  renderSeats();
  renderStacks();
  renderHand();
}

// -- moves ---------------------------------------------------------------------------------

function tablePath(action) { return `/api/tables/${view.id}/${action}`; }

async function sitAt(seat) {
  if (!me.player) {
    toast("Choose a name first (top right).");
    $("#name-input").focus();
    return;
  }
  await act("POST", tablePath("join"), { seat });
}

function feltPoint(clientX, clientY) {
  const r = $("#felt").getBoundingClientRect();
  const x = Math.min(0.96, Math.max(0.04, (clientX - r.left) / r.width));
  const y = Math.min(0.93, Math.max(0.07, (clientY - r.top) / r.height));
  return { x: x.toFixed(4), y: y.toFixed(4) };
}

function inside(node, clientX, clientY) {
  const r = node.getBoundingClientRect();
  return clientX >= r.left && clientX <= r.right && clientY >= r.top && clientY <= r.bottom;
}

function stackAt(clientX, clientY, except) {
  for (const node of document.elementsFromPoint(clientX, clientY)) {
    const st = node.closest && node.closest(".stack");
    if (st && Number(st.dataset.stack) !== except) return Number(st.dataset.stack);
  }
  return null;
}

// A drag: press, move past a few pixels, release. What it means is decided on release:
// from a stack onto the felt (move), onto another stack (stack on stack), onto the hand (draw);
// from the hand onto the felt or a stack (play).
function startDrag(e, source, what) {
  if (e.button !== undefined && e.button !== 0) return;
  const startX = e.clientX, startY = e.clientY;
  const rect = source.getBoundingClientRect();
  const grab = { dx: startX - rect.left - rect.width / 2, dy: startY - rect.top - rect.height / 2 };
  let ghost = null;
  let lastTarget = null;
  const pointer = e.pointerId;

  function targetAt(x, y) {
    if (what.kind === "stack" && inside($("#hand-area"), x, y) && what.top) return { hand: true };
    const onto = stackAt(x, y, what.kind === "stack" ? what.id : null);
    if (onto !== null) return { onto };
    if (inside($("#felt"), x, y)) return { felt: true };
    return null;
  }

  function mark(target) {
    if (lastTarget && lastTarget.onto != null) stackNodes.get(lastTarget.onto)?.classList.remove("drop-target");
    $("#hand-area").classList.toggle("drop-ok", !!(target && target.hand));
    if (target && target.onto != null) stackNodes.get(target.onto)?.classList.add("drop-target");
    lastTarget = target;
  }

  function move(ev) {
    if (ev.pointerId !== pointer) return;
    if (!ghost) {
      if (Math.hypot(ev.clientX - startX, ev.clientY - startY) < 6) return;
      ghost = (what.node || source).cloneNode(true);
      ghost.classList.add("drag-ghost");
      ghost.classList.remove("selected", "fresh");
      document.body.append(ghost);
      (what.dim || source).classList.add("dragging-src");
    }
    ghost.style.left = `${ev.clientX - grab.dx - rect.width / 2}px`;
    ghost.style.top = `${ev.clientY - grab.dy - rect.height / 2}px`;
    mark(targetAt(ev.clientX, ev.clientY));
  }

  function stop() {
    window.removeEventListener("pointermove", move);
    window.removeEventListener("pointerup", up);
    window.removeEventListener("pointercancel", cancel);
  }

  function up(ev) {
    if (ev.pointerId !== pointer) return;
    stop();
    if (!ghost) { what.click && what.click(); return; }
    const target = targetAt(ev.clientX, ev.clientY);
    mark(null);
    ghost.remove();
    (what.dim || source).classList.remove("dragging-src");
    if (target) what.drop(target, feltPoint(ev.clientX - grab.dx, ev.clientY - grab.dy));
  }

  function cancel(ev) {
    if (ev.pointerId !== pointer) return;
    stop();
    mark(null);
    if (ghost) { ghost.remove(); (what.dim || source).classList.remove("dragging-src"); }
  }

  window.addEventListener("pointermove", move);
  window.addEventListener("pointerup", up);
  window.addEventListener("pointercancel", cancel);
  e.preventDefault();
}

// Where a tapped card goes: the spot of a grid farthest from every stack on the felt.
function freeSpot() {
  let best = { x: 0.5, y: 0.75 }, bestDist = -1;
  for (let i = 0; i < 7; i++) {
    for (let j = 0; j < 4; j++) {
      const x = 0.14 + i * 0.12, y = 0.2 + j * 0.2;
      let d = Infinity;
      for (const s of view.table.stacks.values()) d = Math.min(d, Math.hypot(s.x - x, (s.y - y) * 0.7));
      if (d > bestDist) { best = { x, y }; bestDist = d; }
    }
  }
  return { x: best.x.toFixed(4), y: best.y.toFixed(4) };
}

function setupTableInput() {
  const felt = $("#felt");
  felt.addEventListener("pointerdown", (e) => {
    const stackNode = e.target.closest(".stack");
    if (!stackNode) {
      if (!e.target.closest(".stack-bar")) { view.selectedStack = null; renderStacks(); }
      return;
    }
    const id = Number(stackNode.dataset.stack);
    const whole = !!e.target.closest(".badge");
    const select = () => { view.selectedStack = view.selectedStack === id ? null : id; renderStacks(); };
    if (!seated()) { select(); return; }
    const target = e.target.closest(".card, .badge");
    if (!target) return;
    startDrag(e, target, {
      kind: "stack", id, top: !whole,
      node: whole ? stackNode : target, dim: stackNode,
      click: select,
      drop(where, at) {
        if (where.hand) return act("POST", tablePath("draw"), { stack: id });
        const params = { stack: id, x: at.x, y: at.y, top: whole ? "false" : "true" };
        if (where.onto != null) params.onto = where.onto;
        return act("POST", tablePath("move"), params);
      },
    });
  });

  $("#stack-bar").addEventListener("click", (e) => {
    const btn = e.target.closest("button");
    if (!btn || !view.selectedStack) return;
    const stack = view.selectedStack;
    const act_ = btn.dataset.act;
    if (act_ === "draw") act("POST", tablePath("draw"), { stack });
    if (act_ === "flip") act("POST", tablePath("flip"), { stack });
    if (act_ === "flipall") act("POST", tablePath("flip"), { stack, whole: "true" });
    if (act_ === "shuffle") act("POST", tablePath("shuffle"), { stack });
  });

  $("#hand").addEventListener("pointerdown", (e) => {
    const cardNode_ = e.target.closest(".card");
    if (!cardNode_) return;
    const id = Number(cardNode_.dataset.card);
    startDrag(e, cardNode_, {
      kind: "hand", id,
      click() { view.selectedCard = view.selectedCard === id ? null : id; renderHand(); },
      drop(where, at) {
        const params = { card: id, x: at.x, y: at.y, face: $("#face-down").checked ? "down" : "up" };
        if (where.onto != null) params.onto = where.onto;
        return act("POST", tablePath("play"), params);
      },
    });
  });

  $("#play-selected").addEventListener("click", () => {
    if (!view.selectedCard) return;
    const { x, y } = freeSpot();
    act("POST", tablePath("play"), { card: view.selectedCard, x, y,
                                     face: $("#face-down").checked ? "down" : "up" });
    view.selectedCard = null;
  });

  $("#leave").addEventListener("click", () => act("POST", tablePath("leave")));
  $("#roll").addEventListener("click", () => {
    if (!seated()) { toast("Take a seat to roll the dice."); return; }
    act("POST", tablePath("roll"), { dice: $("#dice-count").value, sides: 6 });
  });
  $("#chat-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const input = $("#chat-input");
    if (!input.value.trim()) return;
    if (!me.player) { toast("Choose a name first (top right)."); return; }
    if (await act("POST", tablePath("chat"), { text: input.value })) input.value = "";
  });
}

async function table(id) {
  view.id = id;
  $("#table-view").hidden = false;
  setupTableInput();
  await loadTable();
  if (!view.closed) connect();
}

// -- start ---------------------------------------------------------------------------------

async function main() {
  const who = await act("GET", "/api/me");
  me.player = who && who.player;
  showMe();
  const match = location.pathname.match(/^\/t\/([A-Za-z0-9_-]+)$/);
  if (match) {
    setupName(async () => { await loadTable(); connect(); });
    await table(match[1]);
  } else {
    setupName(null);
    lobby();
  }
}

main();
