// The fieldlink dashboard: polls the read API and draws the fleet, one device's charts and the
// service's counters. Plain JavaScript, no build step, no library; every time is epoch ms.
"use strict";

const POLL_MS = 2000;
const CHART_POLL_MS = 5000;
const state = { selected: null, token: localStorage.getItem("fieldlink-read-token") || "", lastChart: 0 };

const $ = (selector) => document.querySelector(selector);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}

async function api(path) {
  const headers = state.token ? { Authorization: `Bearer ${state.token}` } : {};
  const response = await fetch(path, { headers });
  if (response.status === 401) {
    $("#token-box").hidden = false;
    throw new Error("a read token is needed");
  }
  if (!response.ok && response.status !== 503) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

function ago(ms) {
  if (ms == null) return "never";
  const s = Math.max(0, (Date.now() - ms) / 1000);
  if (s < 90) return `${s.toFixed(0)} s ago`;
  if (s < 5400) return `${(s / 60).toFixed(0)} min ago`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h ago`;
  return new Date(ms).toISOString().slice(0, 16).replace("T", " ");
}

function num(value, unit = "") {
  if (value == null) return "—";
  return Number(value).toLocaleString("en") + unit;
}

function statusOf(device) {
  if (device.status !== "active") return "revoked";
  if (!device.report) return "unknown";
  return device.report.online ? "online" : "offline";
}

function renderFleet(devices) {
  const body = $("#fleet tbody");
  $("#fleet-empty").hidden = devices.length > 0;
  if (!state.selected && devices.length) {
    const first = devices.find((d) => d.last_seen_ms != null) || devices[0];
    state.selected = first.id;
  }
  const rows = devices.map((d) => {
    const report = d.report || { counters: {}, health: {} };
    const counters = report.counters || {};
    const health = report.health || {};
    const status = statusOf(d);
    const last = el("td", { title: d.last_seen_ms ? new Date(d.last_seen_ms).toISOString() : "" }, ago(d.last_seen_ms));
    last.setAttribute("data-ms", d.last_seen_ms ?? "");
    const row = el(
      "tr",
      { "data-device": d.id, class: d.id === state.selected ? "selected" : "" },
      el("td", {}, d.id),
      el("td", {}, el("span", { class: `pill ${status}` }, status)),
      last,
      el("td", {}, health.fw ?? "—"),
      el("td", { class: "num" }, num(counters.queued)),
      el("td", { class: "num" }, num(counters.dropped)),
      el("td", { class: "num" }, num(counters.reconnects)),
      el("td", { class: "num" }, num(health.rssi_dbm, " dBm")),
      el("td", { class: "num" }, health.heap_free != null ? num(Math.round(health.heap_free / 1024), " KB") : "—"),
      el("td", { class: "error" }, report.error ?? ""),
    );
    row.addEventListener("click", () => {
      state.selected = d.id;
      state.lastChart = 0;
      refresh();
    });
    return row;
  });
  body.replaceChildren(...rows);
}

function card(label, value, hint = "") {
  return el("div", { class: "card", title: hint }, el("b", {}, value), el("span", {}, label));
}

function renderService(service) {
  const h = service.health;
  const pill = $("#service-state");
  pill.textContent = h.status === "ok" ? "ingesting" : h.problems.join("; ");
  pill.className = `pill ${h.status}`;
  const c = h.counters;
  const spool = h.spool;
  const cards = [
    card("devices online", `${service.devices_online} / ${service.devices_active}`),
    card("messages in", num((c.received || 0) + (c.status_received || 0))),
    card("points stored", num(c.stored_points || 0)),
    card("rejected", num(c.rejected || 0)),
    card("write latency (mean)", service.write_latency.mean_ms != null ? `${service.write_latency.mean_ms.toFixed(1)} ms` : "—"),
    card("write latency (p99 ≤)", service.write_latency.p99_ms != null ? `${service.write_latency.p99_ms} ms` : "—"),
    card("queue", num(service.queue_messages), "received, not yet taken"),
    card("unacknowledged", num(service.unacked_messages), "read, not yet acknowledged to the broker"),
    card("MQTT", h.mqtt_connected ? "connected" : "down"),
  ];
  if (spool && spool.enabled) {
    cards.push(card("spool", `${num(spool.records)} rec · ${num(Math.round((spool.bytes || 0) / 1024), " KB")}`));
    cards.push(card("InfluxDB", spool.influx_outage ? "outage" : "writing"));
  }
  if (h.workers) {
    const running = h.workers.filter((w) => w.state === "running").length;
    cards.push(card("workers running", `${running} / ${h.workers.length}`));
  }
  $("#service").replaceChildren(...cards);
  const reasons = Object.entries(service.rejections).filter(([, n]) => n > 0);
  $("#rejections tbody").replaceChildren(
    ...(reasons.length
      ? reasons.map(([reason, n]) => el("tr", {}, el("td", {}, reason), el("td", { class: "num" }, num(n))))
      : [el("tr", {}, el("td", { class: "muted" }, "none"))]),
  );
}

function chart(sensor, points, since, until) {
  const width = 600;
  const height = 160;
  const pad = { left: 48, right: 8, top: 8, bottom: 18 };
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("data-sensor", sensor);
  svg.setAttribute("data-points", String(points.length));
  const values = points.map((p) => p[1]);
  let low = Math.min(...values);
  let high = Math.max(...values);
  if (!(high > low)) {
    low -= 1;
    high += 1;
  }
  const x = (t) => pad.left + ((t - since) / (until - since)) * (width - pad.left - pad.right);
  const y = (v) => height - pad.bottom - ((v - low) / (high - low)) * (height - pad.top - pad.bottom);
  const ns = "http://www.w3.org/2000/svg";
  const add = (tag, attrs, text) => {
    const node = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text != null) node.textContent = text;
    svg.append(node);
  };
  add("line", { class: "axis", x1: pad.left, y1: height - pad.bottom, x2: width - pad.right, y2: height - pad.bottom });
  add("line", { class: "axis", x1: pad.left, y1: pad.top, x2: pad.left, y2: height - pad.bottom });
  add("text", { x: 2, y: pad.top + 8 }, high.toPrecision(4));
  add("text", { x: 2, y: height - pad.bottom }, low.toPrecision(4));
  add("text", { x: pad.left, y: height - 4 }, new Date(since).toISOString().slice(11, 19));
  add("text", { x: width - pad.right - 44, y: height - 4 }, new Date(until).toISOString().slice(11, 19));
  if (points.length) {
    const d = points.map((p, i) => `${i ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
    add("path", { class: "line", d });
    if (points.length <= 120) {
      for (const p of points) add("circle", { class: "dot", cx: x(p[0]).toFixed(1), cy: y(p[1]).toFixed(1), r: 2 });
    }
  }
  const last = points.length ? points[points.length - 1][1] : null;
  return el("div", { class: "chart" }, el("h4", {}, `${sensor}  `, el("span", { class: "muted" }, last != null ? `now ${last.toPrecision(5)}` : "no data")), svg);
}

async function refreshCharts() {
  const device = state.selected;
  $("#chart-device").textContent = device || "—";
  if (!device) return;
  const range = $("#range").value;
  const points = Math.min(600, Math.max(60, Math.round(range / 5)));
  const series = await api(`/api/devices/${encodeURIComponent(device)}/series?range_s=${range}&points=${points}`);
  if (series.detail) {
    $("#charts").replaceChildren(el("p", { class: "muted" }, series.detail));
    return;
  }
  const sensors = Object.entries(series.sensors);
  $("#charts").replaceChildren(
    ...(sensors.length
      ? sensors.map(([sensor, pts]) => chart(sensor, pts, series.since_ms, series.until_ms))
      : [el("p", { class: "muted" }, "no readings in this range")]),
  );
}

async function refresh() {
  try {
    const [devices, service] = await Promise.all([api("/api/devices"), api("/api/service")]);
    $("#token-box").hidden = true;
    renderFleet(devices);
    renderService(service);
    if (Date.now() - state.lastChart >= CHART_POLL_MS) {
      state.lastChart = Date.now();
      await refreshCharts();
    }
    $("#updated").textContent = `updated ${new Date().toISOString().slice(11, 19)} UTC`;
  } catch (error) {
    $("#updated").textContent = `not updated: ${error.message}`;
  }
}

$("#range").addEventListener("change", () => {
  state.lastChart = 0;
  refresh();
});
$("#token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.token = $("#token").value.trim();
  localStorage.setItem("fieldlink-read-token", state.token);
  refresh();
});
refresh();
setInterval(refresh, POLL_MS);
