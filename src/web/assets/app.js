// The dashboard page: reads the access token from the URL fragment (never
// from or into a URL it requests), sends it as a Bearer header, trades it
// once for an HttpOnly cookie for its own live stream (Server-Sent Events),
// and renders the status, a stream's detail, the restart timeline and the
// event feed. Untrusted text (stream names, log lines) only ever goes in
// through textContent.
"use strict";

const state = {
  token: null,
  status: null,
  eventsMark: null,
  events: [],
  selected: null,
  source: null,
  hours: 6,
};

function readToken() {
  const hash = new URLSearchParams(location.hash.replace(/^#/, ""));
  const fromHash = hash.get("token");
  if (fromHash) {
    sessionStorage.setItem("mw-token", fromHash);
    // Out of the address bar and the history, so it is not shared by accident.
    history.replaceState(null, "", location.pathname + location.search);
  }
  return fromHash || sessionStorage.getItem("mw-token");
}

async function api(path, options = {}) {
  const headers = Object.assign({ Authorization: "Bearer " + state.token }, options.headers || {});
  const response = await fetch(path, Object.assign({}, options, { headers, credentials: "same-origin" }));
  let body = null;
  const text = await response.text();
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = { error: text }; }
  if (response.status === 401 || response.status === 403) {
    showTokenForm(body && body.error ? body.error : "the token was refused");
  }
  return { ok: response.ok, status: response.status, body };
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function duration(secs) {
  if (secs === null || secs === undefined) return "–";
  if (secs < 60) return secs + "s";
  if (secs < 3600) return Math.floor(secs / 60) + "m " + (secs % 60) + "s";
  if (secs < 86400) return Math.floor(secs / 3600) + "h " + Math.floor((secs % 3600) / 60) + "m";
  return Math.floor(secs / 86400) + "d " + Math.floor((secs % 86400) / 3600) + "h";
}

function clock(ms) {
  const d = new Date(ms);
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

const HEALTH_WORDS = {
  healthy: "healthy", not_ready: "not ready", unhealthy: "unhealthy", complete: "complete",
  gave_up: "gave up", waiting: "waiting", paused: "paused", stopped: "stopped",
  not_started: "not started", starting: "starting",
};

function tasksText(t) {
  let s = (t.completed + t.cancelled) + "/" + t.total + " done";
  if (t.in_progress) s += ", " + t.in_progress + " in progress";
  if (t.blocked) s += ", " + t.blocked + " blocked";
  return s;
}

function lastExit(id) {
  const e = state.events.find((e) => e.stream === id && e.exit);
  return e ? e.exit : null;
}

// Which verbs make sense in a state; the server decides in the end.
function verbsFor(s) {
  const held = s.state === "paused" || s.state === "stopped";
  return {
    restart: s.state !== "paused" && s.state !== "completed",
    pause: s.state !== "paused" && s.state !== "completed",
    resume: held,
    reset: ["gave_up", "backoff", "unhealthy"].includes(s.state) || s.restarts > 0,
    stop: s.state !== "stopped" && s.state !== "completed",
  };
}

function actionButtons(s) {
  const box = el("div", { class: "actions" });
  const allowed = verbsFor(s);
  for (const verb of ["restart", "pause", "resume", "reset", "stop"]) {
    const b = el("button", { type: "button", text: verb, "data-verb": verb, "data-stream": s.id });
    b.disabled = !allowed[verb];
    box.append(b);
  }
  return box;
}

function renderStatus(report) {
  state.status = report;
  const err = document.getElementById("status-error");
  if (report.error) {
    err.textContent = "Status unavailable: " + report.error;
    err.hidden = false;
    return;
  }
  err.hidden = true;
  document.getElementById("project").textContent = report.project_root;
  const d = report.daemon;
  const daemon = document.getElementById("daemon");
  daemon.dataset.health = d.health;
  daemon.textContent = d.running
    ? "daemon: " + d.health + " (PID " + d.pid + (d.heartbeat_age_secs !== null ? ", heartbeat " + d.heartbeat_age_secs + "s ago" : "") + ")"
    : "daemon: not running";
  const init = report.initiative;
  document.getElementById("initiative").textContent = init ? "— " + init.name + " (" + init.status + ")" : "— no active initiative";
  const body = document.querySelector("#streams tbody");
  const rows = report.streams.map((s) => {
    const idCell = el("td", { "data-label": "Stream" },
      el("span", { class: "stream-id", text: s.id }),
      s.name && s.name !== s.id ? el("span", { class: "stream-name", text: s.name }) : null);
    const healthCell = el("td", { "data-label": "Health" },
      el("span", { class: "badge", "data-health": s.health, text: HEALTH_WORDS[s.health] || s.health }),
      s.reason && s.health !== "healthy" && s.health !== "complete" ? el("span", { class: "reason", text: s.reason }) : null,
      s.next_restart_ms ? el("span", { class: "reason", text: "next restart " + clock(s.next_restart_ms) }) : null);
    const row = el("tr", { "data-stream": s.id, "data-health": s.health, "data-state": s.state },
      idCell,
      healthCell,
      el("td", { class: "num pid", "data-label": "PID", text: s.pid === null ? "–" : String(s.pid) }),
      el("td", { class: "num", "data-label": "Uptime", text: duration(s.uptime_secs) }),
      el("td", { class: "num restarts", "data-label": "Restarts", text: String(s.restarts_total) }),
      el("td", { "data-label": "Tasks", text: tasksText(s.tasks) }),
      el("td", { class: "last-exit", "data-label": "Last exit", "data-empty": lastExit(s.id) ? null : "", text: lastExit(s.id) || "–" }),
      el("td", { "data-label": "Actions" }, actionButtons(s)));
    if (s.id === state.selected) row.classList.add("selected");
    return row;
  });
  body.replaceChildren(...rows);
  document.getElementById("no-streams").hidden = report.streams.length > 0;
}

function renderBreaker(untilMs) {
  const open = untilMs && untilMs > Date.now();
  document.getElementById("breaker").hidden = !open;
  if (open) {
    document.getElementById("breaker-text").textContent =
      "The restart breaker is open until " + clock(untilMs) + ": every restart is held.";
  }
}

function showResult(ok, text) {
  const box = document.getElementById("result");
  box.hidden = false;
  box.dataset.ok = String(ok);
  box.textContent = text;
}

async function runVerb(button) {
  const verb = button.dataset.verb;
  const stream = button.dataset.stream;
  // Stopping a worker asks once more: the button turns into a confirmation.
  if (verb === "stop" && !button.classList.contains("confirm")) {
    button.classList.add("confirm");
    button.textContent = "confirm stop";
    setTimeout(() => { if (button.isConnected) { button.classList.remove("confirm"); button.textContent = "stop"; } }, 6000);
    return;
  }
  button.disabled = true;
  const path = verb === "breaker-reset" ? "/api/breaker/reset" : "/api/streams/" + encodeURIComponent(stream) + "/" + verb;
  showResult(true, (stream ? verb + " " + stream : verb) + "…");
  const r = await api(path, { method: "POST" });
  const text = r.body && (r.body.message || r.body.error) || ("HTTP " + r.status);
  showResult(r.ok, text);
  button.disabled = false;
  refreshEvents();
  if (state.selected) openDetail(state.selected);
}

async function openDetail(id) {
  state.selected = id;
  for (const row of document.querySelectorAll("#streams tbody tr")) {
    row.classList.toggle("selected", row.dataset.stream === id);
  }
  const r = await api("/api/streams/" + encodeURIComponent(id));
  const section = document.getElementById("detail");
  if (!r.ok) { showResult(false, (r.body && r.body.error) || "no detail"); return; }
  const d = r.body;
  const s = d.stream || {};
  section.hidden = false;
  section.dataset.stream = id;
  document.getElementById("detail-name").textContent = id;
  const facts = [
    ["State", s.state], ["Health", s.health], ["Reason", s.reason], ["PID", s.pid],
    ["Restarts", s.restarts_total !== undefined ? s.restarts_total + " (budget used " + s.restarts + ")" : null],
    ["Last restart", s.last_restart_ms ? clock(s.last_restart_ms) + " — " + (s.last_restart_reason || "") : null],
    ["Depends on", s.dependencies && s.dependencies.length ? s.dependencies.join(", ") : null],
    ["tc stream", s.tc_id],
    ["Worktree", s.worktree],
    ["Workers seen", s.workers && s.workers.length ? s.workers.join(", ") : null],
  ].filter(([, v]) => v !== null && v !== undefined && v !== "");
  document.getElementById("detail-facts").replaceChildren(
    ...facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: String(v) })]));
  const probes = s.probes || [];
  document.querySelector("#detail-probes tbody").replaceChildren(...probes.map((p) =>
    el("tr", {}, el("td", { text: p.probe }),
      el("td", { text: p.ok === null ? "not run" : p.ok ? "ok" : "FAILED", class: p.ok === false ? "bad" : null }),
      el("td", { text: p.detail }), el("td", { class: "num", text: String(p.consecutive_failures) }))));
  document.getElementById("detail-probes").hidden = probes.length === 0;
  document.getElementById("detail-no-probes").hidden = probes.length > 0;
  document.getElementById("detail-log-file").textContent = d.log_file;
  const log = document.getElementById("detail-log");
  log.textContent = d.log_lines.length ? d.log_lines.join("\n") : "(no log yet)";
  log.scrollTop = log.scrollHeight;
  const attempts = document.getElementById("detail-attempts");
  attempts.replaceChildren(...(d.attempts.length ? d.attempts.map((a) => {
    const rec = a.record || {};
    const summary = "attempt " + a.n + (rec.action ? " — " + rec.action : "") + (rec.reason ? ": " + rec.reason : "");
    return el("details", { class: "attempt" }, el("summary", { text: summary }),
      el("pre", { text: JSON.stringify(rec, null, 2) }));
  }) : [el("p", { class: "muted", text: "No restart attempts recorded." })]));
}

function renderEvents(events) {
  state.events = events;
  const list = document.getElementById("events");
  list.replaceChildren(...events.slice(0, 150).map((e) => {
    const what = e.event + (e.from || e.to ? " " + (e.from || "?") + " → " + (e.to || "?") : "");
    return el("li", { "data-event": e.event, "data-stream": e.stream || "" },
      el("span", { class: "when", text: clock(e.ts_ms) }),
      e.stream ? el("span", { class: "stream-id", text: e.stream }) : null,
      el("span", { class: "what", text: what }),
      e.reason ? el("span", { class: "muted", text: e.reason }) : null,
      e.exit ? el("span", { class: "muted", text: e.exit }) : null,
      e.by ? el("span", { class: "muted", text: "by " + e.by }) : null,
      e.via ? el("span", { class: "via", text: "via " + e.via }) : null);
  }));
  // The table's "last exit" column comes from the events.
  for (const row of document.querySelectorAll("#streams tbody tr")) {
    const cell = row.querySelector(".last-exit");
    if (!cell) continue;
    const exit = lastExit(row.dataset.stream);
    cell.textContent = exit || "–";
    cell.toggleAttribute("data-empty", !exit);
  }
}

function renderTimeline(t) {
  const ids = state.status && !state.status.error ? state.status.streams.map((s) => s.id) : [];
  for (const id of Object.keys(t.streams)) if (!ids.includes(id)) ids.push(id);
  const labelW = 150, width = 1000, lane = 26, top = 8, axis = 22;
  const height = top + Math.max(ids.length, 1) * lane + axis;
  const span = Math.max(t.to_ms - t.from_ms, 1);
  const x = (ms) => labelW + ((ms - t.from_ms) / span) * (width - labelW - 10);
  const root = svg("svg", { viewBox: "0 0 " + width + " " + height, role: "img", "aria-label": "restarts and deaths per stream" });
  const hours = Math.round(span / 3600000);
  const step = hours <= 1 ? 900000 : hours <= 6 ? 3600000 : 4 * 3600000;
  for (let ms = t.to_ms; ms >= t.from_ms; ms -= step) {
    root.append(svg("line", { class: "grid", x1: x(ms), x2: x(ms), y1: top, y2: height - axis }));
    const label = svg("text", { x: x(ms), y: height - 6, "text-anchor": ms === t.to_ms ? "end" : "middle" });
    const minutes = Math.round((t.to_ms - ms) / 60000);
    label.textContent = ms === t.to_ms ? "now" : minutes % 60 === 0 ? "-" + minutes / 60 + "h" : "-" + minutes + "m";
    root.append(label);
  }
  ids.forEach((id, i) => {
    const y = top + i * lane + lane / 2;
    const name = svg("text", { class: "label", x: 4, y: y + 4, "data-stream": id });
    name.textContent = id.length > 20 ? id.slice(0, 19) + "…" : id;
    root.append(name, svg("line", { class: "lane", x1: labelW, x2: width - 10, y1: y, y2: y }));
    for (const m of t.streams[id] || []) {
      const cx = x(m.ts_ms);
      let mark;
      if (m.kind === "death") {
        mark = svg("path", { d: `M${cx - 5},${y - 5}L${cx + 5},${y + 5}M${cx - 5},${y + 5}L${cx + 5},${y - 5}` });
      } else if (m.kind === "restart") {
        mark = svg("circle", { cx, cy: y, r: 5 });
      } else if (m.kind === "gave_up") {
        mark = svg("rect", { x: cx - 6, y: y - 6, width: 12, height: 12 });
      } else {
        mark = svg("path", { d: `M${cx - 6},${y + 5}L${cx + 6},${y + 5}L${cx},${y - 6}Z` });
      }
      mark.setAttribute("class", "mark " + m.kind);
      mark.setAttribute("data-stream", id);
      const title = svg("title");
      title.textContent = id + ": " + m.kind.replace("_", " ") + " at " + clock(m.ts_ms) + (m.reason ? " — " + m.reason : "");
      mark.append(title);
      root.append(mark);
    }
  });
  document.getElementById("timeline").replaceChildren(root);
}

async function refreshEvents() {
  const [events, timeline] = await Promise.all([
    api("/api/events?limit=200"),
    api("/api/timeline?hours=" + state.hours),
  ]);
  if (events.ok) renderEvents(events.body);
  if (timeline.ok) renderTimeline(timeline.body);
}

function setConnection(live) {
  const c = document.getElementById("connection");
  c.dataset.state = live ? "live" : "offline";
  c.textContent = live ? "live" : "reconnecting…";
}

async function openLive() {
  if (state.source) state.source.close();
  const traded = await api("/api/session", { method: "POST" });
  if (!traded.ok) { setConnection(false); setTimeout(openLive, 3000); return; }
  const source = new EventSource("/api/live");
  state.source = source;
  source.addEventListener("open", () => setConnection(true));
  source.addEventListener("update", (message) => {
    setConnection(true);
    const doc = JSON.parse(message.data);
    renderStatus(doc.status);
    renderBreaker(doc.breaker_until_ms);
    if (doc.events_mark !== state.eventsMark) {
      state.eventsMark = doc.events_mark;
      refreshEvents();
    }
  });
  source.addEventListener("error", () => {
    setConnection(false);
    // A refused stream (server restarted, session gone) is closed for good:
    // trade the token again.
    if (source.readyState === EventSource.CLOSED) setTimeout(openLive, 2000);
  });
}

function showTokenForm(message) {
  document.getElementById("need-token").hidden = false;
  document.getElementById("app").hidden = true;
  const err = document.getElementById("token-error");
  err.hidden = !message;
  err.textContent = message || "";
  if (state.source) { state.source.close(); state.source = null; }
}

async function start() {
  document.getElementById("need-token").hidden = true;
  document.getElementById("app").hidden = false;
  const r = await api("/api/status");
  if (!r.ok) return;
  renderStatus(r.body);
  await refreshEvents();
  openLive();
}

document.addEventListener("click", (e) => {
  const button = e.target.closest("button[data-verb]");
  if (button) { e.stopPropagation(); runVerb(button); return; }
  const row = e.target.closest("#streams tbody tr");
  if (row) openDetail(row.dataset.stream);
});
document.getElementById("detail-close").addEventListener("click", () => {
  state.selected = null;
  document.getElementById("detail").hidden = true;
  for (const row of document.querySelectorAll("#streams tbody tr")) row.classList.remove("selected");
});
document.getElementById("timeline-hours").addEventListener("change", (e) => {
  state.hours = Number(e.target.value);
  refreshEvents();
});
document.getElementById("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const value = document.getElementById("token-input").value.trim();
  if (!value) return;
  state.token = value;
  sessionStorage.setItem("mw-token", value);
  start();
});

state.token = readToken();
if (state.token) start(); else showTokenForm(null);
