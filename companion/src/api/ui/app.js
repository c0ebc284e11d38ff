// companion's web page: the containers of this host and, for one container, its processes,
// kept current by the service's event stream (GET api/v2/events). Plain DOM and SVG, no
// library: the page must stay smooth with a thousand containers, so rows are built once and
// only their changed cells are written.
"use strict";

const TOKEN_KEY = "companion-token";
const MAX_LIVE = 200;

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  host: null,
  routes: new Set(), // documented API paths (from openapi.json): optional features
  view: null, // "list" | "one"
  ref: null, // the container path shown by the "one" view
  containers: [],
  cpu: new Map(), // path -> CPU % per sample, oldest first
  lastSeq: 0,
  listSort: { key: "cpu", desc: true },
  procSort: { key: "cpu", desc: true },
  rows: new Map(), // path -> row cells
  shown: [], // the containers listed, filtered and sorted
  spacerAbove: null,
  spacerBelow: null,
  stream: null, // AbortController of the event stream
  busy: false, // a refresh is running
  again: false, // a sample arrived during it
  pollTimer: null,
};

const $ = (id) => document.getElementById(id);

// ---- HTTP -----------------------------------------------------------------------------------

class Unauthorized extends Error {}

function headers() {
  return state.token ? { Authorization: "Bearer " + state.token } : {};
}

async function api(path) {
  const response = await fetch(path, { headers: headers(), cache: "no-store" });
  if (response.status === 401) throw new Unauthorized();
  if (!response.ok) throw new Error(`${path}: ${response.status} ${await response.text()}`);
  return response.json();
}

function encodeRef(path) {
  return encodeURIComponent(path);
}

// ---- formatting -----------------------------------------------------------------------------

function bytes(n) {
  if (n == null) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let u = 0;
  while (n >= 1024 && u < units.length - 1) { n /= 1024; u++; }
  return (u === 0 ? n.toFixed(0) : n.toFixed(n >= 100 ? 0 : 1)) + " " + units[u];
}

function pct(n) {
  return n == null || !isFinite(n) ? "—" : n.toFixed(1) + " %";
}

function short(text, max) {
  return text.length > max ? text.slice(0, max - 1) + "…" : text;
}

function displayName(c) {
  if (c.name) return c.name;
  if (c.id) return c.id.length > 12 && /^[0-9a-f]+$/.test(c.id) ? c.id.slice(0, 12) : c.id;
  return c.path;
}

function imageOrPod(c) {
  const parts = [];
  if (c.image) parts.push(c.image);
  if (c.pod) parts.push((c.namespace ? c.namespace + "/" : "") + c.pod);
  else if (c.pod_uid) parts.push("pod " + c.pod_uid.slice(0, 8));
  if (!parts.length && c.runtime) parts.push(c.runtime);
  return parts.join(" · ");
}

function memoryLimit(c) {
  if (c.memory_limit_bytes != null) return c.memory_limit_bytes;
  const m = c.limits && (c.limits.memory_bytes ?? c.limits.memory_max_bytes ?? c.limits.memory);
  return typeof m === "number" ? m : null;
}

// Throttling as a share of periods when the service reports periods, else its time.
function throttled(c) {
  const t = c.throttling;
  if (!t || typeof t !== "object") return null;
  if (typeof t.throttled_percent === "number") return t.throttled_percent;
  const periods = t.periods ?? t.nr_periods ?? t.periods_total;
  const hit = t.throttled_periods ?? t.nr_throttled ?? t.throttled_periods_total;
  if (periods > 0 && hit != null) return (100 * hit) / periods;
  return null;
}

function throttledText(c) {
  const share = throttled(c);
  if (share != null) return pct(share);
  const t = c.throttling;
  const secs = t && (t.throttled_seconds ?? t.throttled_seconds_total ?? t.throttled_usec / 1e6);
  return typeof secs === "number" && isFinite(secs) ? secs.toFixed(1) + " s" : "—";
}

function oomKills(c) {
  return typeof c.oom_kills_total === "number" ? c.oom_kills_total : null;
}

function fmtValue(key, v) {
  if (v == null) return "—";
  if (typeof v === "number") {
    if (/bytes/.test(key)) return bytes(v);
    if (/percent|ratio|avg/.test(key)) return v.toFixed(2) + (/percent|avg/.test(key) ? " %" : "");
    if (/seconds/.test(key)) return v.toFixed(2) + " s";
    if (/usec/.test(key)) return (v / 1e6).toFixed(2) + " s";
    return String(v);
  }
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

function clockTime(date) {
  return date.toLocaleTimeString([], { hour12: false });
}

// ---- sparklines -----------------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";

function sparkline(big) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", big ? "spark big" : "spark");
  svg.setAttribute("viewBox", big ? "0 0 600 60" : "0 0 120 22");
  svg.setAttribute("preserveAspectRatio", "none");
  fillSpark(svg);
  return svg;
}

function fillSpark(svg) {
  if (svg.querySelector(".line")) return;
  const area = document.createElementNS(SVG, "path");
  area.setAttribute("class", "area");
  const line = document.createElementNS(SVG, "path");
  line.setAttribute("class", "line");
  svg.append(area, line);
}

// Draws values (percent of a core, null for gaps) scaled so that one core (or the highest
// value, when more than one core was used) nearly fills the height.
function drawSpark(svg, values, capacity) {
  fillSpark(svg);
  const [, , w, h] = svg.getAttribute("viewBox").split(" ").map(Number);
  const n = Math.max(capacity || values.length, 2);
  let top = 100;
  for (const v of values) if (v != null && v > top) top = v;
  top *= 1.15; // headroom: a busy line stays visible under the top edge
  const x = (i) => ((i + n - values.length) * w) / (n - 1);
  const y = (v) => h - 1 - (Math.min(v, top) / top) * (h - 2);
  let line = "", area = "", open = false, first = 0;
  values.forEach((v, i) => {
    if (v == null) {
      if (open) area += `L${x(i - 1).toFixed(1)},${h}L${x(first).toFixed(1)},${h}Z`;
      open = false;
      return;
    }
    const p = `${x(i).toFixed(1)},${y(v).toFixed(1)}`;
    if (!open) { line += "M" + p; area += "M" + p; first = i; open = true; }
    else { line += "L" + p; area += "L" + p; }
  });
  if (open) area += `L${x(values.length - 1).toFixed(1)},${h}L${x(first).toFixed(1)},${h}Z`;
  const [areaEl, lineEl] = svg.querySelectorAll("path");
  if (lineEl.getAttribute("d") !== line) {
    lineEl.setAttribute("d", line);
    areaEl.setAttribute("d", area);
  }
}

// ---- the containers ------------------------------------------------------------------------

const listKeys = {
  name: (c) => displayName(c).toLowerCase(),
  image: (c) => imageOrPod(c).toLowerCase(),
  processes: (c) => c.processes,
  cpu: (c) => c.cpu_percent,
  memory: (c) => c.rss_bytes,
  throttled: (c) => throttled(c) ?? -1,
  oom: (c) => oomKills(c) ?? -1,
};

function makeRow(c) {
  const tr = document.createElement("tr");
  tr.dataset.path = c.path;
  const td = () => tr.appendChild(document.createElement("td"));
  const name = td();
  name.className = "name";
  const link = document.createElement("a");
  link.href = "#/c/" + encodeRef(c.path);
  const sub = document.createElement("span");
  sub.className = "sub";
  name.append(link, sub);
  const image = td();
  const procs = td();
  procs.className = "num";
  const cpuCell = td();
  const cpuBox = document.createElement("div");
  cpuBox.className = "cpu";
  const spark = sparkline(false);
  const now = document.createElement("b");
  cpuBox.append(spark, now);
  cpuCell.append(cpuBox);
  const mem = td();
  mem.className = "num";
  const memText = document.createElement("span");
  const bar = document.createElement("span");
  bar.className = "mem";
  const fill = document.createElement("i");
  bar.append(fill);
  mem.append(memText, bar);
  const thr = td();
  thr.className = "num";
  const oom = td();
  oom.className = "num";
  return { tr, link, sub, image, procs, spark, now, memText, bar, fill, thr, oom, last: {} };
}

function set(row, key, el, text) {
  if (row.last[key] !== text) {
    el.textContent = text;
    row.last[key] = text;
  }
}

function updateRow(row, c) {
  const name = displayName(c);
  set(row, "name", row.link, name);
  set(row, "sub", row.sub, name === c.path ? "" : c.path);
  set(row, "image", row.image, imageOrPod(c));
  set(row, "procs", row.procs, String(c.processes));
  set(row, "now", row.now, pct(c.cpu_percent));
  drawSpark(row.spark, state.cpu.get(c.path) || [], state.host && state.host.history_capacity);
  const limit = memoryLimit(c);
  set(row, "mem", row.memText, limit ? `${bytes(c.rss_bytes)} / ${bytes(limit)}` : bytes(c.rss_bytes));
  const share = limit ? Math.min(100, (100 * c.rss_bytes) / limit) : null;
  row.bar.hidden = share == null;
  if (share != null) {
    row.fill.style.width = share.toFixed(1) + "%";
    row.fill.className = share > 90 ? "high" : "";
  }
  set(row, "thr", row.thr, throttledText(c));
  const kills = oomKills(c);
  set(row, "oom", row.oom, kills == null ? "—" : String(kills));
}

// The list is virtual: only the rows on screen (and a margin) are in the document, between
// two spacers of the height of the rows above and below, so a sample or a scroll costs the
// rows on screen, not a thousand. Rows have a fixed height (app.css) for this.
const ROW_HEIGHT = 44;
const MARGIN_ROWS = 10;

function renderList() {
  const filter = $("filter").value.trim().toLowerCase();
  const present = new Set(state.containers.map((c) => c.path));
  for (const path of state.rows.keys()) if (!present.has(path)) state.rows.delete(path);
  const { key, desc } = state.listSort;
  const value = listKeys[key];
  const shown = state.containers.filter((c) => {
    if (!filter) return true;
    const text = [displayName(c), c.path, c.id, c.image, c.pod, c.namespace, c.pod_uid, c.container]
      .filter(Boolean).join(" ").toLowerCase();
    return text.includes(filter);
  });
  shown.sort((a, b) => {
    const x = value(a), y = value(b);
    const order = x < y ? -1 : x > y ? 1 : a.path < b.path ? -1 : 1;
    return desc ? -order : order;
  });
  state.shown = shown;
  $("count").textContent =
    shown.length === state.containers.length
      ? `${state.containers.length} containers`
      : `${shown.length} of ${state.containers.length} containers`;
  markSorted($("containers"), state.listSort);
  drawWindow(true);
}

// Puts the rows of the visible window in the table; `fresh`: the data changed, rewrite them.
function drawWindow(fresh) {
  const shown = state.shown || [];
  const table = $("containers");
  const tbody = table.tBodies[0];
  const top = table.getBoundingClientRect().top + window.scrollY + table.tHead.offsetHeight;
  const first = Math.max(0, Math.floor((window.scrollY - top) / ROW_HEIGHT) - MARGIN_ROWS);
  const count = Math.ceil(window.innerHeight / ROW_HEIGHT) + 2 * MARGIN_ROWS;
  const last = Math.min(shown.length, first + count);
  const rows = [];
  for (let i = first; i < last; i++) {
    const c = shown[i];
    let row = state.rows.get(c.path);
    if (!row) {
      row = makeRow(c);
      state.rows.set(c.path, row);
      fresh = true;
    }
    if (fresh || row.data !== c) updateRow(row, c);
    row.data = c;
    rows.push(row.tr);
  }
  const above = spacer(state.spacerAbove, first * ROW_HEIGHT);
  const below = spacer(state.spacerBelow, (shown.length - last) * ROW_HEIGHT);
  state.spacerAbove = above;
  state.spacerBelow = below;
  const order = [above, ...rows, below];
  const current = tbody.children;
  if (order.length !== current.length || order.some((el, i) => el !== current[i]))
    tbody.replaceChildren(...order);
  state.window = [first, last];
}

function spacer(existing, height) {
  const tr = existing || document.createElement("tr");
  if (!existing) {
    tr.className = "spacer";
    tr.append(document.createElement("td"));
    tr.firstChild.colSpan = 7;
  }
  tr.style.height = height + "px";
  tr.hidden = height === 0;
  return tr;
}

let scrollQueued = false;
window.addEventListener(
  "scroll",
  () => {
    if (scrollQueued || state.view !== "list") return;
    scrollQueued = true;
    requestAnimationFrame(() => {
      scrollQueued = false;
      drawWindow(false);
    });
  },
  { passive: true },
);

function markSorted(table, sort) {
  for (const th of table.querySelectorAll("th[data-key]")) {
    th.classList.toggle("sorted", th.dataset.key === sort.key);
    th.classList.toggle("desc", th.dataset.key === sort.key && sort.desc);
    th.classList.toggle("asc", th.dataset.key === sort.key && !sort.desc);
  }
}

async function loadCpuHistory() {
  const all = await api("api/v2/history");
  state.cpu = new Map(all.containers.map((c) => [c.path, c.cpu_percent]));
}

function appendCpu(containers) {
  const capacity = (state.host && state.host.history_capacity) || 60;
  const seen = new Set();
  for (const c of containers) {
    seen.add(c.path);
    const values = state.cpu.get(c.path) || [];
    values.push(c.cpu_percent);
    if (values.length > capacity) values.splice(0, values.length - capacity);
    state.cpu.set(c.path, values);
  }
  for (const path of state.cpu.keys()) if (!seen.has(path)) state.cpu.delete(path);
}

async function refreshList(seq) {
  // A missed sample (or the first) reloads the whole history; otherwise one value is added.
  const gap = seq == null || state.lastSeq === 0 || seq !== state.lastSeq + 1;
  if (gap) await loadCpuHistory();
  const containers = await api("api/v2/containers");
  if (!gap) appendCpu(containers);
  if (seq != null) state.lastSeq = seq;
  state.containers = containers;
  if (state.view === "list") renderList();
}

// ---- one container --------------------------------------------------------------------------

const procKeys = {
  pid: (p) => p.stat.pid,
  uid: (p) => p.status.RealUid,
  cpu: (p) => p.relativecpuusage,
  mem: (p) => p.status.VmRSS,
  rss: (p) => p.status.VmRSS,
  vsz: (p) => p.status.VmSize,
  time: (p) => p.stat.utime + p.stat.stime,
};

function psState(s) {
  let text = s.state;
  if (s.nice < 0) text += "<";
  else if (s.nice > 0) text += "N";
  if (s.session === s.pid) text += "s";
  if (s.num_threads > 1) text += "l";
  if (s.tpgid === s.pgrp && s.tpgid > 0) text += "+";
  return text;
}

function psStart(starttime) {
  const host = state.host;
  const started = new Date((host.boot_time_seconds + starttime / host.clock_ticks_per_second) * 1000);
  if (Date.now() - started.getTime() < 86400e3) return clockTime(started).slice(0, 5);
  return started.toLocaleDateString([], { month: "short", day: "2-digit" });
}

function psTime(p) {
  const secs = Math.floor((p.stat.utime + p.stat.stime) / state.host.clock_ticks_per_second);
  return `${Math.floor(secs / 60)}:${String(secs % 60).padStart(2, "0")}`;
}

function command(p) {
  if (p.cmdline) return p.cmdline.replace(/\n/g, "\\n");
  return "[" + p.stat.comm.replace(/^\(|\)$/g, "") + "]";
}

function renderFacts(c) {
  const facts = [
    ["id", c.id],
    ["image", c.image],
    ["pod", c.pod ? (c.namespace ? c.namespace + "/" : "") + c.pod : c.pod_uid],
    ["runtime", c.runtime],
    ["path", c.path],
    ["processes", String(c.processes)],
    ["CPU now", pct(c.cpu_percent)],
    ["CPU total", c.cpu_seconds_total != null ? c.cpu_seconds_total.toFixed(1) + " s" : null],
    ["memory", bytes(c.rss_bytes) + (memoryLimit(c) ? " of " + bytes(memoryLimit(c)) : " (no limit)")],
    ["throttled", c.throttling ? throttledText(c) : null],
    ["OOM kills", oomKills(c) != null ? String(oomKills(c)) : null],
    ["exits", typeof c.exits_total === "number" ? String(c.exits_total) : null],
  ].filter(([, v]) => v != null && v !== "");
  const dl = $("one-facts");
  dl.replaceChildren(
    ...facts.map(([k, v]) => {
      const div = document.createElement("div");
      if (k === "id" || k === "path") div.className = "wide";
      const dt = document.createElement("dt");
      dt.textContent = k;
      const dd = document.createElement("dd");
      dd.textContent = v;
      div.append(dt, dd);
      return div;
    }),
  );
  // Limits, throttling and pressure, as the service reports them (when it does).
  const details = $("one-details");
  const blocks = [];
  for (const [key, title] of [["limits", "Limits"], ["throttling", "Throttling"], ["pressure", "Pressure"]]) {
    const value = c[key];
    if (!value || typeof value !== "object") continue;
    const section = document.createElement("section");
    const h = document.createElement("h3");
    h.textContent = title;
    const inner = document.createElement("dl");
    inner.className = "facts";
    for (const [k, v] of flatten(value)) {
      const div = document.createElement("div");
      const dt = document.createElement("dt");
      dt.textContent = k.replace(/_/g, " ");
      const dd = document.createElement("dd");
      dd.textContent = fmtValue(k, v);
      div.append(dt, dd);
      inner.append(div);
    }
    section.append(h, inner);
    blocks.push(section);
  }
  details.replaceChildren(...blocks);
}

function flatten(object, prefix = "") {
  const out = [];
  for (const [k, v] of Object.entries(object)) {
    const key = prefix ? prefix + "." + k : k;
    if (v && typeof v === "object" && !Array.isArray(v)) out.push(...flatten(v, key));
    else out.push([key, v]);
  }
  return out;
}

function renderProcesses(c, processes, series) {
  const capacity = series.times.length;
  const byProcess = new Map(series.processes.map((p) => [p.pid + ":" + p.starttime, p.cpu_percent]));
  const { key, desc } = state.procSort;
  const value = procKeys[key];
  processes.sort((a, b) => {
    const x = value(a), y = value(b);
    const order = x < y ? -1 : x > y ? 1 : a.stat.pid - b.stat.pid;
    return desc ? -order : order;
  });
  const memory = memoryLimit(c) || state.host.memory_total_bytes;
  const rows = processes.map((p) => {
    const tr = document.createElement("tr");
    tr.dataset.pid = p.stat.pid;
    const cells = [
      [String(p.stat.pid), "num"],
      [String(p.status.RealUid), "num"],
      [p.relativecpuusage.toFixed(1), "num cpu-share"],
      null,
      [((100 * p.status.VmRSS * 1024) / memory).toFixed(1), "num"],
      [bytes(p.status.VmRSS * 1024), "num"],
      [bytes(p.status.VmSize * 1024), "num"],
      [psState(p.stat), ""],
      [psStart(p.stat.starttime), ""],
      [psTime(p), "num"],
      [command(p), "cmd"],
    ];
    for (const cell of cells) {
      const td = document.createElement("td");
      if (cell) {
        td.textContent = cell[0];
        td.className = cell[1];
      } else {
        const svg = sparkline(false);
        drawSpark(svg, byProcess.get(p.stat.pid + ":" + p.stat.starttime) || [], capacity);
        td.append(svg);
      }
      tr.append(td);
    }
    return tr;
  });
  $("processes").querySelector("tbody").replaceChildren(...rows);
  markSorted($("processes"), state.procSort);
}

function renderExits(answer) {
  const list = Array.isArray(answer) ? answer : answer.exits || [];
  const table = $("exits");
  $("exits-section").hidden = false;
  const wanted = ["time", "pid", "command", "code", "signal", "oom"];
  const pick = (e, k) =>
    k === "time" ? e.time ?? e.at ?? e.exited_at
    : k === "command" ? e.command ?? e.cmdline ?? e.comm
    : k === "code" ? e.code ?? e.exit_code
    : k === "oom" ? (e.oom ?? e.oom_killed ? "OOM kill" : "")
    : e[k];
  const head = document.createElement("tr");
  for (const k of wanted) {
    const th = document.createElement("th");
    th.textContent = k;
    head.append(th);
  }
  table.tHead.replaceChildren(head);
  const rows = list.slice(-50).reverse().map((e) => {
    const tr = document.createElement("tr");
    for (const k of wanted) {
      const td = document.createElement("td");
      let v = pick(e, k);
      if (k === "time" && v) v = clockTime(new Date(v));
      td.textContent = v == null || v === "" ? (k === "oom" ? "" : "—") : String(v);
      if (k === "command") td.className = "cmd";
      tr.append(td);
    }
    return tr;
  });
  table.tBodies[0].replaceChildren(...rows);
}

async function refreshOne() {
  const path = state.ref;
  const ref = encodeRef(path);
  const v1path = "api/v1.0/" + path.replace(/^\//, "").split("/").map(encodeURIComponent).join("/");
  const [c, snapshots, series] = await Promise.all([
    api("api/v2/containers/" + ref),
    api(v1path + "/processes?interval=1"),
    api("api/v2/containers/" + ref + "/history"),
  ]);
  if (state.view !== "one" || state.ref !== path) return;
  $("one-name").textContent = displayName(c);
  $("crumb").textContent = "› " + displayName(c);
  renderFacts(c);
  drawSpark($("one-cpu"), series.cpu_percent, series.times.length);
  const processes = snapshots.length ? snapshots[snapshots.length - 1].processes : [];
  renderProcesses(c, processes, series);
  const exits = exitsRoute();
  if (exits) renderExits(await api(exits.replace("{id}", ref)));
}

function exitsRoute() {
  for (const r of ["/api/v2/containers/{id}/exits", "/api/v2/containers/{ref}/exits"])
    if (state.routes.has(r)) return r.slice(1).replace("{ref}", "{id}");
  return null;
}

function addLive(kind, e) {
  if (state.view !== "one" || e.container !== state.ref) return;
  $("live-empty").hidden = true;
  const li = document.createElement("li");
  li.className = kind;
  let text = `${clockTime(new Date(e.time))} ${kind.padEnd(4)} ${String(e.pid).padStart(7)}`;
  if (kind !== "exec" && (e.code != null || e.signal != null))
    text += e.signal != null ? ` signal ${e.signal}` : ` code ${e.code}`;
  if (e.oom) text += " OOM";
  if (e.command) text += "  " + short(e.command, 120);
  li.textContent = text;
  const list = $("live");
  list.prepend(li);
  while (list.children.length > MAX_LIVE) list.lastChild.remove();
}

// ---- the event stream -----------------------------------------------------------------------

function status(text, live) {
  const el = $("status");
  el.textContent = text;
  el.className = "status " + (live ? "live" : "down");
}

// EventSource cannot send an Authorization header: the stream is read with fetch and parsed
// here (the text/event-stream format: blocks separated by a blank line).
async function openStream() {
  if (state.stream) state.stream.abort();
  const controller = new AbortController();
  state.stream = controller;
  const query = state.view === "one" ? "?container=" + encodeURIComponent(state.ref) : "";
  let response;
  try {
    response = await fetch("api/v2/events" + query, { headers: headers(), signal: controller.signal });
  } catch (err) {
    return streamLost(controller, "event stream unreachable");
  }
  if (response.status === 401) return showLogin();
  if (!response.ok || !response.body) {
    // A service without the stream (or refusing one now): poll instead.
    return poll(controller);
  }
  status("live", true);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        dispatch(block);
      }
    }
  } catch (err) {
    if (controller.signal.aborted) return;
  }
  streamLost(controller, "event stream ended; reconnecting");
}

function streamLost(controller, why) {
  if (state.stream !== controller || controller.signal.aborted) return;
  status(why, false);
  setTimeout(() => {
    if (state.stream === controller) openStream();
  }, 2000);
}

function poll(controller) {
  status("polling", true);
  const period = Math.max(500, ((state.host && state.host.sample_period_seconds) || 1) * 1000);
  const tick = () => {
    if (state.stream !== controller) return;
    onSample(null);
    setTimeout(tick, period);
  };
  setTimeout(tick, period);
}

function dispatch(block) {
  let kind = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") kind = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return;
  const event = JSON.parse(data.join("\n"));
  if (kind === "sample") onSample(event.seq);
  else if (kind === "exec" || kind === "exit" || kind === "oom") addLive(kind, event);
  else if (kind === "dropped") status("too slow: reconnecting", false);
}

async function onSample(seq) {
  if (state.busy) {
    state.again = true;
    return;
  }
  state.busy = true;
  try {
    if (state.view === "list") await refreshList(seq);
    else if (state.view === "one") await refreshOne();
  } catch (err) {
    if (err instanceof Unauthorized) showLogin();
    else status(String(err.message || err), false);
  } finally {
    state.busy = false;
  }
  if (state.again) {
    state.again = false;
    onSample(null);
  }
}

// ---- views and start-up ---------------------------------------------------------------------

function show(id) {
  for (const section of ["login", "list-view", "one-view"]) $(section).hidden = section !== id;
}

function showLogin(message) {
  if (state.stream) state.stream.abort();
  state.stream = null;
  show("login");
  status("token required", false);
  $("login-error").textContent = message || (state.token ? "The token was refused." : "");
  $("token").focus();
}

async function route() {
  const hash = location.hash;
  if (hash.startsWith("#/c/")) {
    state.view = "one";
    state.ref = decodeURIComponent(hash.slice(4));
    $("live").replaceChildren();
    $("live-empty").hidden = false;
    $("exits-section").hidden = true;
    $("one-name").textContent = state.ref;
    show("one-view");
  } else {
    state.view = "list";
    state.ref = null;
    state.lastSeq = 0;
    $("crumb").textContent = "";
    show("list-view");
  }
  openStream();
  await onSample(null);
}

async function start() {
  try {
    state.host = await api("api/v2/host");
  } catch (err) {
    if (err instanceof Unauthorized) return showLogin();
    status("unreachable: " + (err.message || err), false);
    setTimeout(start, 3000);
    return;
  }
  try {
    const doc = await api("openapi.json");
    state.routes = new Set(Object.keys(doc.paths || {}));
  } catch (err) {
    state.routes = new Set();
  }
  await route();
}

function sortOn(table, sort, render) {
  table.querySelector("thead").addEventListener("click", (e) => {
    const th = e.target.closest("th[data-key]");
    if (!th) return;
    if (sort.key === th.dataset.key) sort.desc = !sort.desc;
    else {
      sort.key = th.dataset.key;
      sort.desc = !["name", "image", "pid", "uid"].includes(sort.key);
    }
    render();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.token = $("token").value.trim();
    sessionStorage.setItem(TOKEN_KEY, state.token);
    $("login-error").textContent = "";
    start();
  });
  $("filter").addEventListener("input", () => renderList());
  sortOn($("containers"), state.listSort, renderList);
  sortOn($("processes"), state.procSort, () => onSample(null));
  window.addEventListener("hashchange", () => {
    if (state.host) route();
  });
  start();
});
