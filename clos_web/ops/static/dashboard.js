// clos_web's live dashboard: one EventSource, one snapshot a second, charts drawn on <canvas>.
// No dependencies: this file, dashboard.css and index.html are the whole page.
"use strict";

(function () {
  const WINDOW = 300;            // seconds kept and drawn (5 minutes, a point a second)
  // one point a second: {t, rps, pub, del, p50, p99, lag99, lagMax, open, streams, ws, rss}
  const points = [];
  let previous = null;           // the last snapshot, for rates
  const COLORS = ["#4fc3f7", "#ffb74d", "#e57373"];

  const $ = (id) => document.getElementById(id);
  const text = (id, value) => { $(id).textContent = value; };

  function fmtRate(x) {
    if (!isFinite(x)) return "–";
    if (x >= 1e6) return (x / 1e6).toFixed(2) + " M";
    if (x >= 1e4) return (x / 1e3).toFixed(1) + " k";
    return x >= 100 ? x.toFixed(0) : x.toFixed(1);
  }
  function fmtSeconds(s) {
    if (!isFinite(s)) return "–";
    if (s >= 1) return s.toFixed(2) + " s";
    if (s >= 1e-3) return (s * 1e3).toFixed(s >= 0.1 ? 0 : 1) + " ms";
    return (s * 1e6).toFixed(0) + " µs";
  }
  // an answer written in the turn that read its request counts 0 s: say so, not "0 µs"
  function fmtLatency(s) { return s === 0 ? "same turn" : fmtSeconds(s); }
  function fmtBytes(n) {
    if (n >= 1 << 30) return (n / (1 << 30)).toFixed(2) + " GiB";
    if (n >= 1 << 20) return (n / (1 << 20)).toFixed(1) + " MiB";
    return (n / 1024).toFixed(0) + " KiB";
  }
  function rate(now, before, dt) {
    const d = now - before;
    return d >= 0 && dt > 0 ? d / dt : 0;   // a restart (totals went down) is no negative rate
  }

  function onSnapshot(s) {
    let r = {rps: 0, pub: 0, del: 0};
    const channelRates = [];
    if (previous && s.time > previous.time && s.pid === previous.pid) {
      const dt = s.time - previous.time;
      r = {
        rps: rate(s.requests_total, previous.requests_total, dt),
        pub: rate(s.events_published_total, previous.events_published_total, dt),
        del: rate(s.events_delivered_total, previous.events_delivered_total, dt),
      };
      const before = new Map(previous.top_channels.map((c) => [c.name, c.events_total]));
      for (const c of s.top_channels) {
        if (before.has(c.name)) {
          channelRates.push([c.name, rate(c.events_total, before.get(c.name), dt)]);
        }
      }
    }
    previous = s;
    const c = s.connections, lat = s.latency_seconds, lag = s.loop_lag_seconds;
    points.push({t: s.time, rps: r.rps, pub: r.pub, del: r.del, p50: lat.p50 * 1e3,
                 p99: lat.p99 * 1e3, lag99: lag.p99 * 1e3, lagMax: lag.max * 1e3,
                 open: c.open, streams: c.streams, ws: c.websocket, rss: s.rss_bytes / 1048576});
    while (points.length && points[0].t < s.time - WINDOW) points.shift();

    const worker = s.worker === null || s.worker === undefined ? "" : " · worker " + s.worker;
    text("who", "pid " + s.pid + worker
         + " · " + new Date(s.time * 1000).toLocaleTimeString());
    text("connections", String(c.open));
    text("connections-detail", c.streams + " streams · " + c.websocket + " websocket");
    text("rps", fmtRate(r.rps));
    text("requests-total", s.requests_total.toLocaleString() + " in all");
    text("eps", fmtRate(r.pub));
    text("events-detail", fmtRate(r.del) + " delivered/s · "
         + s.slow_consumers_closed_total + " slow closed");
    text("latency", fmtLatency(lat.p50) + " / " + fmtLatency(lat.p99));
    text("lag", fmtSeconds(lag.p99));
    text("lag-detail", "p50 " + fmtSeconds(lag.p50) + " · max " + fmtSeconds(lag.max));
    text("rss", fmtBytes(s.rss_bytes));
    text("gc-detail", s.gc_pauses_total + " gc pauses · "
         + fmtBytes(s.bytes_sent_total) + " sent");
    const sub = s.subscribers;
    text("subscribers", s.channels + " channels · subscribers: " + sub.sse + " sse, " + sub.poll
         + " poll, " + sub.websocket + " websocket");

    table("top-subscribers", s.top_channels.slice().sort((a, b) => b.subscribers - a.subscribers)
          .slice(0, 10).map((ch) => [ch.name, String(ch.subscribers)]));
    table("top-events", channelRates.sort((a, b) => b[1] - a[1]).slice(0, 10)
          .map(([name, x]) => [name, fmtRate(x)]));
    drawAll();
  }

  function table(id, rows) {
    const body = $(id);
    body.replaceChildren(...rows.map(([name, value]) => {
      const tr = document.createElement("tr");
      const a = document.createElement("td"), b = document.createElement("td");
      a.className = "name";
      a.textContent = name;           // channel names are data: text, never markup
      b.textContent = value;
      tr.append(a, b);
      return tr;
    }));
  }

  function draw(id, keys, colors = COLORS) {
    const canvas = $(id);
    const ratio = window.devicePixelRatio || 1;
    const w = canvas.clientWidth, h = canvas.clientHeight;
    if (canvas.width !== Math.round(w * ratio) || canvas.height !== Math.round(h * ratio)) {
      canvas.width = Math.round(w * ratio);
      canvas.height = Math.round(h * ratio);
    }
    const g = canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, w, h);
    canvas.dataset.points = String(points.length);
    if (!points.length) return;
    let top = 0;
    for (const p of points) for (const k of keys) top = Math.max(top, p[k]);
    top = top > 0 ? top * 1.15 : 1;
    // the x axis spans what there is (at least 10 s), up to the window: a fresh page fills
    const end = points[points.length - 1].t, left = 4, right = w - 4, pad = 14;
    const span = Math.min(WINDOW, Math.max(10, end - points[0].t));
    const x = (t) => right - (end - t) / span * (right - left);
    const y = (v) => h - 4 - v / top * (h - 4 - pad);
    g.strokeStyle = "#263241";
    g.lineWidth = 1;
    g.beginPath();
    g.moveTo(left, h - 4.5);
    g.lineTo(right, h - 4.5);
    g.stroke();
    g.fillStyle = "#7b8794";
    g.font = "11px system-ui, sans-serif";
    g.fillText("max " + fmtRate(top / 1.15), left, 11);
    const label = "last "
      + (span >= 120 ? Math.round(span / 60) + " min" : Math.round(span) + " s");
    g.fillText(label, right - g.measureText(label).width, 11);
    keys.forEach((k, i) => {
      g.strokeStyle = colors[i];
      g.lineWidth = 1.5;
      g.beginPath();
      points.forEach((p, j) => (j ? g.lineTo(x(p.t), y(p[k])) : g.moveTo(x(p.t), y(p[k]))));
      g.stroke();
    });
  }

  function drawAll() {
    draw("chart-rps", ["rps"]);
    draw("chart-eps", ["pub", "del"]);
    draw("chart-latency", ["p50", "p99"]);
    draw("chart-lag", ["lag99", "lagMax"], [COLORS[1], COLORS[2]]);
    draw("chart-connections", ["open", "streams", "ws"]);
    draw("chart-rss", ["rss"]);
  }

  function connect() {
    const status = $("status");
    const source = new EventSource("stream" + location.search);
    source.onopen = () => { status.textContent = "live"; status.className = "status on"; };
    source.onmessage = (e) => onSnapshot(JSON.parse(e.data));
    source.onerror = () => {
      const closed = source.readyState === EventSource.CLOSED;
      status.textContent = closed ? "refused (token?)" : "reconnecting…";
      status.className = "status off";
    };
  }

  window.closDashboard = {points: points, latest: () => previous};
  window.addEventListener("resize", drawAll);
  document.addEventListener("DOMContentLoaded", connect);
})();
