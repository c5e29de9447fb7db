// The live fleet page: /v1/status polled every second, records from /v1/uavs and /v1/missions,
// kept current by the /v1/changes stream (read with fetch, so the token travels in a header).
// The token is kept in sessionStorage: for this tab only.
"use strict";

const COLORS = { idle: "#2a9d8f", in_mission: "#7b3fe4", charging: "#e9c46a", maintenance: "#e76f51", offline: "#8d99ae" };
const MISSION_ORDER = ["pending", "assigned", "active", "completed", "aborted", "failed"];
const state = { uavs: new Map(), missions: new Map(), index: 0, selected: null, leaders: [], stream: null };
const $ = (id) => document.getElementById(id);

function token() { return sessionStorage.getItem("controlplane-token") || ""; }

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...(options.headers || {}), Authorization: `Bearer ${token()}`, "Content-Type": "application/json" } });
  const body = response.headers.get("Content-Type")?.includes("json") ? await response.json() : null;
  if (!response.ok) throw new Error(body?.error ? `${body.error.field}: ${body.error.reason}` : `HTTP ${response.status}`);
  return body;
}

function connected(text, ok) { const el = $("connection"); el.textContent = text; el.className = ok ? "" : "error"; }

// --- replicas ---------------------------------------------------------------------------------
async function pollStatus() {
  try {
    const status = await api("/v1/status");
    const body = $("replicas").tBodies[0];
    body.replaceChildren();
    for (const r of status.replicas) {
      const row = body.insertRow();
      row.dataset.replica = r.replica ?? "";
      if (r.error) { row.className = "down"; row.insertCell().textContent = r.address || r.replica || "?"; row.insertCell().textContent = "unreachable"; row.insertCell().colSpan = 4; continue; }
      if (r.role === "leader") row.className = "leader";
      for (const value of [r.name ? `${r.name} (${r.replica})` : r.replica, r.role, r.term, r.commit, r.applied, r.commit - r.applied]) row.insertCell().textContent = value;
    }
    const last = state.leaders[state.leaders.length - 1];
    if (status.leader != null && (!last || last.leader !== status.leader)) {
      state.leaders.push({ leader: status.leader, term: Math.max(...status.replicas.map((r) => r.term || 0)), since: new Date() });
      const item = document.createElement("li");
      item.textContent = `replica ${status.leader} (term ${state.leaders.at(-1).term}) since ${state.leaders.at(-1).since.toLocaleTimeString()}`;
      item.dataset.leader = status.leader;
      $("leaders").append(item);
    }
    $("replicas").dataset.leader = status.leader ?? "";
    connected(`connected: leader ${status.leader ?? "being elected"}`, true);
  } catch (error) {
    connected(`status: ${error.message}`, false);
  }
}

// --- records and the change stream ------------------------------------------------------------
async function loadAll() {
  const [uavs, missions, counters] = await Promise.all([api("/v1/uavs"), api("/v1/missions"), api("/v1/status")]);
  state.uavs = new Map(uavs.map((u) => [u.id, u]));
  state.missions = new Map(missions.map((m) => [m.id, m]));
  state.index = Math.max(0, ...counters.replicas.map((r) => r.applied || 0));
  render();
}

let refreshTimer = null;
function refreshUavsSoon() { // telemetry moves many UAVs at once: one reload a second at most
  if (refreshTimer) return;
  refreshTimer = setTimeout(async () => { refreshTimer = null; try { state.uavs = new Map((await api("/v1/uavs")).map((u) => [u.id, u])); render(); } catch (e) { /* next event */ } }, 1000);
}

function applyEvent(kind, data) {
  if (kind === "reset") { loadAll(); return; }
  if (kind === "telemetry") { refreshUavsSoon(); return; }
  const change = JSON.parse(data);
  const table = kind === "uav" ? state.uavs : kind === "mission" ? state.missions : null;
  if (!table) return;
  if (change.record === null) table.delete(change.id); else table.set(change.id, change.record);
  state.index = Math.max(state.index, change.index || 0);
  render();
}

async function follow() {
  while (token()) {
    try {
      const response = await fetch(`/v1/changes?from_index=${state.index}&duration=300`, { headers: { Authorization: `Bearer ${token()}` } });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end); buffer = buffer.slice(end + 2);
          let kind = "message", data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("event: ")) kind = line.slice(7);
            else if (line.startsWith("data: ")) data += line.slice(6);
            else if (line.startsWith("id: ")) state.index = Math.max(state.index, Number(line.slice(4)));
          }
          if (data || kind === "reset") applyEvent(kind, data || "{}");
        }
      }
    } catch (error) {
      await new Promise((resolve) => setTimeout(resolve, 1000)); // a station went away: reconnect
    }
  }
}

// --- drawing ----------------------------------------------------------------------------------
function svg(tag, attrs, parent) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  parent.append(el);
  return el;
}

function renderMap() {
  const map = $("map");
  map.replaceChildren();
  const selected = state.uavs.get(state.selected);
  const route = selected?.mission ? state.missions.get(selected.mission)?.waypoints || [] : [];
  const points = [...[...state.uavs.values()].map((u) => [u.lat, u.lon]), ...route.map((w) => [w[0], w[1]])];
  if (!points.length) { $("map-caption").textContent = "no UAVs yet"; return; }
  let [minLat, maxLat, minLon, maxLon] = [Math.min(...points.map((p) => p[0])), Math.max(...points.map((p) => p[0])), Math.min(...points.map((p) => p[1])), Math.max(...points.map((p) => p[1]))];
  const pad = Math.max(0.01, (maxLat - minLat) * 0.1, (maxLon - minLon) * 0.1);
  [minLat, maxLat, minLon, maxLon] = [minLat - pad, maxLat + pad, minLon - pad, maxLon + pad];
  const x = (lon) => ((lon - minLon) / (maxLon - minLon)) * 800;
  const y = (lat) => 500 - ((lat - minLat) / (maxLat - minLat)) * 500;
  const step = Math.pow(10, Math.floor(Math.log10(Math.max(maxLat - minLat, maxLon - minLon) / 4)));
  for (let lon = Math.ceil(minLon / step) * step; lon <= maxLon; lon += step) {
    svg("line", { x1: x(lon), x2: x(lon), y1: 0, y2: 500, class: "grid" }, map);
    svg("text", { x: x(lon) + 2, y: 496, class: "grid-label" }, map).textContent = lon.toFixed(3);
  }
  for (let lat = Math.ceil(minLat / step) * step; lat <= maxLat; lat += step) {
    svg("line", { x1: 0, x2: 800, y1: y(lat), y2: y(lat), class: "grid" }, map);
    svg("text", { x: 2, y: y(lat) - 2, class: "grid-label" }, map).textContent = lat.toFixed(3);
  }
  if (route.length) {
    svg("polyline", { points: [[selected.lat, selected.lon], ...route].map((w) => `${x(w[1])},${y(w[0])}`).join(" "), class: "route" }, map);
    for (const w of route) svg("circle", { cx: x(w[1]), cy: y(w[0]), r: 4, class: "waypoint" }, map);
  }
  for (const u of state.uavs.values()) {
    const dot = svg("circle", { cx: x(u.lon), cy: y(u.lat), r: 7, fill: COLORS[u.status] || "#444", class: `uav${u.id === state.selected ? " selected" : ""}`, "data-uav": u.id }, map);
    svg("title", {}, dot).textContent = `${u.id}: ${u.status}, battery ${Math.round(u.battery)}%${u.mission ? `, mission ${u.mission}` : ""}`;
    dot.addEventListener("click", () => { state.selected = u.id; render(); });
  }
  $("map-caption").textContent = `${state.uavs.size} UAVs${selected ? `; selected ${selected.id}` : ""}`;
}

function renderMissions() {
  const box = $("missions");
  box.replaceChildren();
  for (const status of MISSION_ORDER) {
    const missions = [...state.missions.values()].filter((m) => m.status === status);
    if (!missions.length) continue;
    const group = document.createElement("div");
    group.className = "missions-group";
    group.innerHTML = `<h3>${status} (${missions.length})</h3>`;
    for (const m of missions) {
      const row = document.createElement("div");
      row.className = "mission";
      row.dataset.mission = m.id;
      row.dataset.status = m.status;
      row.textContent = `${m.id}${m.uav ? ` → ${m.uav}` : ""}`;
      if (["pending", "assigned", "active"].includes(m.status)) {
        const abort = document.createElement("button");
        abort.className = "abort"; abort.textContent = "abort";
        abort.addEventListener("click", () => api(`/v1/missions/${encodeURIComponent(m.id)}`, { method: "PATCH", body: JSON.stringify({ status: "aborted", expected_version: m.version }) }).catch((e) => { $("mission-message").textContent = e.message; }));
        row.append(abort);
      }
      group.append(row);
    }
    box.append(group);
  }
}

function render() { renderMap(); renderMissions(); }

function legend() {
  $("legend").replaceChildren(...Object.entries(COLORS).map(([status, color]) => {
    const span = document.createElement("span");
    span.innerHTML = `<span class="swatch" style="background:${color}"></span>${status}`;
    return span;
  }));
}

// --- forms ------------------------------------------------------------------------------------
$("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  sessionStorage.setItem("controlplane-token", $("token").value);
  $("token").value = "";
  await start();
});

$("submit-mission").addEventListener("submit", async (event) => {
  event.preventDefault();
  const message = $("mission-message");
  try {
    const waypoints = $("mission-waypoints").value.split(";").map((w) => w.split(",").map(Number)).map(([lat, lon, alt]) => ({ lat, lon, alt }));
    await api("/v1/missions", { method: "POST", body: JSON.stringify({ mission: $("mission-id").value, waypoints }) });
    message.textContent = `submitted ${$("mission-id").value}`; message.className = "muted";
  } catch (error) {
    message.textContent = error.message; message.className = "error";
  }
});

let started = false;
async function start() {
  if (!token()) return;
  try { await loadAll(); } catch (error) { connected(error.message, false); return; }
  if (!started) { started = true; setInterval(pollStatus, 1000); follow(); }
  pollStatus();
}

legend();
start();
