/* The live dashboard: one WebSocket to /api/v1/stream (the admin session authenticates it),
   subscribed to "audit" (with the filter form's values) and "metrics". Nothing is polled; on
   a lost connection it reconnects with backoff. Frames are documented in docs/stream.md. */
"use strict";
(function () {
  var TAIL_ROWS = 200;
  var tail = document.getElementById("tail");
  var workers = document.getElementById("workers");
  var state = document.getElementById("connection");
  var form = document.getElementById("filters");
  var counters = {
    blocked: document.getElementById("blocked"),
    alerted: document.getElementById("alerted"),
    honeytokens: document.getElementById("honeytokens"),
  };
  var seen = new Set();
  var charts = {
    qps: new LineChart(document.getElementById("chart-qps"), [{ label: "qps", color: "#0969da" }]),
    blocks: new LineChart(document.getElementById("chart-blocks"), [{ label: "blocks", color: "#cf222e" }]),
    latency: new LineChart(document.getElementById("chart-latency"), [
      { label: "p50", color: "#1a7f37" }, { label: "p99", color: "#9a6700" },
    ]),
  };
  var socket = null, delay = 500;

  function filters() {
    var out = {};
    new FormData(form).forEach(function (value, key) { if (value) out[key] = value; });
    return out;
  }

  function setState(text, cls) {
    state.textContent = text;
    state.className = "state state-" + cls;
  }

  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + "/api/v1/stream", ["sqlproxy"]);
    socket.onopen = function () {
      delay = 500;
      setState("live", "live");
      send({ type: "subscribe", stream: "audit", filters: filters() });
      send({ type: "subscribe", stream: "metrics" });
    };
    socket.onmessage = function (message) {
      var frame = JSON.parse(message.data);
      var handler = handlers[frame.type];
      if (handler) handler(frame);
    };
    socket.onclose = function (event) {
      if (event.code === 4401 || event.code === 4403) {
        setState("not allowed (" + event.code + "): log in again", "closed");
        return;
      }
      setState("reconnecting…", "connecting");
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 10000);
    };
  }

  function send(frame) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(frame));
  }

  function cell(row, text, cls) {
    var td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "" : String(text);
    if (cls) td.className = cls;
    row.appendChild(td);
    return td;
  }

  function bump(element, by) {
    element.textContent = String((parseInt(element.textContent, 10) || 0) + by);
  }

  var handlers = {
    "audit.event": function (frame) {
      var e = frame.event;
      if (seen.has(e.event_id)) return; // delivery is at least once
      seen.add(e.event_id);
      var row = document.createElement("tr");
      row.className = "decision-" + e.decision;
      row.dataset.eventId = e.event_id;
      cell(row, new Date(e.time * 1000).toLocaleTimeString());
      cell(row, e.decision, "decision");
      cell(row, e.database);
      cell(row, e.user);
      cell(row, e.client);
      cell(row, e.rule || "");
      var sql = cell(row, e.normalized, "sql");
      if (e.message) sql.title = e.message;
      tail.insertBefore(row, tail.firstChild);
      while (tail.children.length > TAIL_ROWS) tail.removeChild(tail.lastChild);
      if (e.decision === "deny") bump(counters.blocked, 1);
      if (e.decision === "alert") bump(counters.alerted, 1);
      if ((e.rule || "").indexOf("honeytoken") === 0) bump(counters.honeytokens, 1);
      countFingerprint(e);
    },
    "metrics.snapshot": function (frame) {
      var fleet = frame.fleet, tenant = frame.tenant;
      if (fleet) {
        charts.qps.push([fleet.qps]);
        charts.blocks.push([fleet.blocks_per_s]);
        charts.latency.push([fleet.p50_ms, fleet.p99_ms]);
      } else {
        document.getElementById("qps-caption").textContent = "audited statements / s (your tenants)";
        document.getElementById("latency-caption").textContent = "latency p50 / p99 (ms, fleet: superusers)";
        charts.qps.push([tenant.events_per_s]);
        charts.blocks.push([tenant.blocks_per_s]);
        charts.latency.push([null, null]);
      }
      renderWorkers(frame.workers);
    },
    "subscribed": function () {},
    "unsubscribed": function () {},
    "error": function (frame) {
      setState(frame.message, frame.code === "bad_frame" ? "live" : "closed");
    },
  };

  function renderWorkers(list) {
    workers.textContent = "";
    if (!list.length) {
      var empty = document.createElement("tr");
      cell(empty, "no worker has reported yet").colSpan = 5;
      workers.appendChild(empty);
      return;
    }
    list.forEach(function (w) {
      var row = document.createElement("tr");
      row.dataset.worker = w.worker;
      cell(row, w.worker);
      cell(row, w.alive ? "up" : "down", w.alive ? "up" : "down");
      cell(row, w.config_version === null ? "standalone" : "v" + w.config_version + (w.current ? "" : " (behind)"),
           w.current ? "" : "behind");
      cell(row, w.qps === null ? "–" : w.qps.toFixed(1));
      cell(row, w.p99_ms === null ? "–" : w.p99_ms.toFixed(2));
      workers.appendChild(row);
    });
  }

  var fingerprints = document.getElementById("fingerprints");
  function countFingerprint(e) {
    if (!e.fingerprint) return;
    var row = fingerprints.querySelector('tr[data-fingerprint="' + CSS.escape(e.fingerprint) + '"]');
    if (!row) {
      row = document.createElement("tr");
      row.dataset.fingerprint = e.fingerprint;
      cell(row, e.normalized.slice(0, 80), "sql").title = e.normalized;
      cell(row, "0", "count");
      cell(row, "0", "denied");
      fingerprints.appendChild(row);
    }
    bump(row.querySelector(".count"), 1);
    if (e.decision === "deny") bump(row.querySelector(".denied"), 1);
    var rows = Array.prototype.slice.call(fingerprints.children);
    rows.sort(function (a, b) {
      return parseInt(b.querySelector(".count").textContent, 10) - parseInt(a.querySelector(".count").textContent, 10);
    });
    rows.slice(0, 10).forEach(function (r) { fingerprints.appendChild(r); });
    rows.slice(10).forEach(function (r) { r.remove(); });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    tail.textContent = "";
    send({ type: "subscribe", stream: "audit", filters: filters() });
  });

  connect();
})();
