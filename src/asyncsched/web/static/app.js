// asyncsched dashboard: plain JS over the JSON API, no build step.
// Data is written with textContent only (never innerHTML), so task names or payloads cannot inject markup.
"use strict";

const BASE = document.querySelector('meta[name="asyncsched-base"]').content;
const TOKEN_REQUIRED = document.querySelector('meta[name="asyncsched-token-required"]').content === "true";
const POLL_MS = 5000;
const MAX_EVENTS = 100;
let token = sessionStorage.getItem("asyncsched-token") || "";
let refreshTimer = null;
let refreshing = false;
let refreshAgain = false;
const EXTRA_LOADERS = []; // loaders of static/ops.js (failed jobs), run by every refresh
const HISTORY_PAGE = 25;
let historyOffset = 0;
let historyTotal = 0;
let historyCapped = false; // more rows than were counted: historyTotal is a lower bound

function headers(extra) {
  const h = Object.assign({ accept: "application/json" }, extra || {});
  if (token) h.authorization = "Bearer " + token;
  return h;
}

function say(text) {
  document.getElementById("message").textContent = text;
}

async function api(path, options) {
  const opts = Object.assign({}, options || {});
  opts.headers = headers(opts.headers);
  const response = await fetch(BASE + path, opts);
  if (response.status === 401) {
    document.getElementById("token-form").hidden = false;
    throw new Error("the API needs a token");
  }
  if (response.status === 204) return null;
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    throw new Error(response.status + ": " + detail);
  }
  return body;
}

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) tr.appendChild(cell instanceof Node ? cell : el("td", cell));
  return tr;
}

function td(child, cls) {
  const cell = el("td", undefined, cls);
  if (child instanceof Node) cell.appendChild(child);
  else if (child !== undefined && child !== null) cell.textContent = String(child);
  return cell;
}

function jobCell(id) {
  // Job ids of scheduled runs are long (sched-<task>-<tick>): one line, cut with an ellipsis, full on hover.
  // The id is a button opening the job's details (static/ops.js).
  const cell = td(undefined, "mono job");
  const open = el("button", id, "link");
  open.type = "button";
  open.dataset.job = id || "";
  open.setAttribute("aria-label", "details of job " + id);
  open.addEventListener("click", () => openJob(id));
  cell.appendChild(open);
  cell.title = id || "";
  return cell;
}

function fill(tableId, rows) {
  const body = document.querySelector("#" + tableId + " tbody");
  body.replaceChildren(...rows);
}

function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  if (isNaN(date)) return iso;
  const secs = Math.round((date.getTime() - Date.now()) / 1000);
  const abs = Math.abs(secs);
  const span = abs < 90 ? abs + "s" : abs < 5400 ? Math.round(abs / 60) + "m" : Math.round(abs / 3600) + "h";
  const rel = abs === 0 ? "now" : secs > 0 ? "in " + span : span + " ago";
  return date.toLocaleTimeString() + " (" + rel + ")";
}

function status(text) {
  return el("span", text, "status " + (text || ""));
}

function button(label, action, aria) {
  const b = el("button", label);
  b.type = "button";
  b.dataset.action = label;
  if (aria) b.setAttribute("aria-label", aria);
  b.addEventListener("click", async () => {
    b.disabled = true;
    try {
      await action();
      scheduleRefresh(0);
    } catch (err) {
      say(err.message);
    } finally {
      b.disabled = false;
    }
  });
  return b;
}

async function loadHealth() {
  const pill = document.getElementById("health");
  try {
    const response = await fetch(BASE + "/health", { headers: headers() });
    const body = await response.json();
    pill.textContent = body.status === "ok" ? "healthy" : "redis " + body.redis + ", database " + body.database;
    pill.className = "pill " + (body.status === "ok" ? "ok" : "bad");
  } catch (err) {
    pill.textContent = "unreachable";
    pill.className = "pill bad";
  }
}

async function loadQueues() {
  const data = await api("/queues?limit=500");
  fill("queues", data.items.map((q) => {
    const counts = Object.entries(q.counts).filter(([, n]) => n > 0).map(([s, n]) => s + " " + n).join(", ");
    const path = "/queues/" + encodeURIComponent(q.name);
    const action = q.paused
      ? button("resume", () => api(path + "/resume", { method: "POST" }))
      : button("pause", () => api(path + "/pause", { method: "POST" }));
    action.setAttribute("aria-label", (q.paused ? "resume queue " : "pause queue ") + q.name);
    const name = td(q.name, "mono");
    if (q.paused) name.appendChild(el("span", "paused", "pill bad"));
    const tr = row([name, td(counts || "empty"), td(action)]);
    tr.dataset.queue = q.name;
    tr.dataset.paused = String(Boolean(q.paused));
    return tr;
  }));
}

async function loadWorkers() {
  const data = await api("/workers?limit=500");
  fill("workers", data.items.map((w) =>
    row([td(w.name, "mono"), td(w.state || ""), td((w.queues || []).join(", ")), td(when(w.last_heartbeat))])));
}

async function loadLimits() {
  // rate limits and concurrency caps in use (GET /limits): flow limits and RQ 3's RateLimit
  const data = await api("/limits?limit=500");
  fill("limits", data.items.map((l) => {
    const tr = row([
      td(l.key, "mono"), td(l.kind), td(l.max_concurrency === null ? "-" : String(l.max_concurrency)),
      td(l.rate === null ? "-" : l.rate + " / " + l.period + " s"), td(String(l.running)),
      td(l.rate === null ? "-" : String(l.started)), td(String(l.waiting)),
    ]);
    tr.dataset.limit = l.key;
    return tr;
  }));
}

function rqSchedulerRow(j) {
  // rq-scheduler's schedules, fired by asyncsched's scheduler too (GET /rq-scheduler/jobs); not editable here
  const every = j.kind === "interval" ? "interval " + j.interval + " s" : j.kind === "cron" ? "cron " + j.cron_string : "once";
  const left = j.repeat === null || j.repeat === undefined ? "" : ", " + j.repeat + " left";
  const tr = row([
    td(j.id, "mono"), td("rq-scheduler"), td(every + left, "mono"), td(j.function || "", "mono"),
    td(j.problem ? "not fired: " + j.problem : "rq-scheduler"), td(when(j.next_run_at)), td(when(j.last_run_at)), td(),
  ]);
  tr.dataset.source = "rq-scheduler";
  tr.dataset.name = j.id;
  return tr;
}

async function loadTasks() {
  const [data, rq] = await Promise.all([api("/tasks?limit=500"), api("/rq-scheduler/jobs").catch(() => ({ items: [] }))]);
  fill("tasks", data.items.map((t) => {
    const path = "/tasks/" + encodeURIComponent(t.id);
    const actions = td();
    actions.appendChild(button("run now", () => api(path + "/run", { method: "POST" })));
    actions.appendChild(t.enabled
      ? button("disable", () => api(path + "/disable", { method: "POST" }))
      : button("enable", () => api(path + "/enable", { method: "POST" })));
    const edit = el("button", "edit");
    edit.type = "button";
    edit.dataset.action = "edit";
    edit.addEventListener("click", () => editTask(t));
    edit.setAttribute("aria-label", "edit task " + t.name);
    actions.appendChild(edit);
    const overlap = " · overlap " + ((t.options || {}).overlap || "skip");  // a busy tick: skip, queue, allow
    const remove = el("button", "delete", "danger");
    remove.type = "button";
    remove.dataset.action = "delete";
    remove.setAttribute("aria-label", "delete task " + t.name);
    remove.addEventListener("click", () => deleteTask(t).catch((err) => say(err.message)));
    actions.appendChild(remove);
    const tr = row([
      td(t.name), td(t.agent_name), td(t.type + " " + t.schedule + overlap, "mono"), td(t.function, "mono"),
      td(t.enabled ? "yes" : "no"), td(when(t.next_run_at)), td(when(t.last_run_at)), actions,
    ]);
    tr.dataset.name = t.name;
    tr.dataset.enabled = String(t.enabled);
    return tr;
  }).concat(rq.items.map(rqSchedulerRow)));
}

function historyQuery() {
  // The filter form's values as query parameters (datetime-local is the browser's local time).
  const params = new URLSearchParams({ limit: String(HISTORY_PAGE), offset: String(historyOffset) });
  const form = document.getElementById("history-filters");
  for (const name of ["status", "agent_name", "task_id"]) {
    const value = form.elements[name].value.trim();
    if (value) params.set(name, value);
  }
  for (const name of ["since", "until"]) {
    const value = form.elements[name].value;
    if (value) params.set(name, new Date(value).toISOString());
  }
  return params.toString();
}

async function loadExecutions() {
  const data = await api("/executions?" + historyQuery());
  historyTotal = data.total || 0;
  historyCapped = Boolean(data.total_capped);
  const last = Math.min(historyOffset + data.items.length, historyTotal);
  // A large history is counted up to 10,000 rows ("of 10000+"); past that, up to the page's end.
  const of = historyTotal + (historyCapped ? "+" : "");
  document.getElementById("history-range").textContent =
    historyTotal ? (historyOffset + 1) + "–" + last + " of " + of : "no executions";
  document.getElementById("history-prev").disabled = historyOffset === 0;
  document.getElementById("history-next").disabled = !historyCapped && last >= historyTotal;
  fill("executions", data.items.map((e) => {
    const duration = e.duration === null || e.duration === undefined ? "" : e.duration.toFixed(3) + " s";
    const tr = row([
      td(e.task_name || e.function || ""), jobCell(e.job_id), td(status(e.status)),
      td(when(e.enqueued_at)), td(duration), td(e.worker_name || ""), td(e.error || "", "error-text"),
    ]);
    tr.dataset.jobId = e.job_id;
    tr.dataset.status = e.status;
    tr.dataset.task = e.task_name || "";
    return tr;
  }));
}

async function refresh() {
  if (refreshing) {
    refreshAgain = true;
    return;
  }
  refreshing = true;
  try {
    const loaders = [loadHealth(), loadQueues(), loadWorkers(), loadLimits(), loadTasks(), loadExecutions()];
    const results = await Promise.allSettled(loaders.concat(EXTRA_LOADERS.map((load) => load())));
    const failed = results.filter((r) => r.status === "rejected").map((r) => r.reason.message);
    say(failed.length ? failed[0] : "updated " + new Date().toLocaleTimeString());
    document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
  } finally {
    refreshing = false;
    if (refreshAgain) {
      refreshAgain = false;
      scheduleRefresh(200);
    }
  }
}

function scheduleRefresh(delay) {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refresh, delay);
}

function showEvent(event) {
  const list = document.getElementById("events");
  const item = el("li");
  item.dataset.type = event.event_type || "";
  item.appendChild(el("span", when(event.created_at), "when"));
  item.appendChild(el("span", event.event_type, "type"));
  item.appendChild(el("span", event.source_agent + (event.target_agent ? " → " + event.target_agent : ""), "muted"));
  const payload = JSON.stringify(event.payload || {});
  item.appendChild(el("div", payload.length > 200 ? payload.slice(0, 200) + "…" : payload, "mono"));
  list.prepend(item);
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
  if ((event.event_type || "").startsWith("task.")) scheduleRefresh(300);
}

// Live events over Server-Sent Events, read with fetch so the bearer token travels in a header (an
// EventSource cannot send one, and a token in the URL would end up in access logs).
async function stream() {
  const state = document.getElementById("live-state");
  let lastId = "";
  let first = true;
  for (;;) {
    try {
      const extra = lastId ? { "last-event-id": lastId } : {};
      const response = await fetch(BASE + "/events/stream" + (first ? "?replay=50" : ""), {
        headers: headers(Object.assign({ accept: "text/event-stream" }, extra)),
      });
      if (!response.ok) throw new Error("stream answered " + response.status);
      first = false;
      state.textContent = "live";
      state.className = "pill ok";
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          let data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("data:")) data += line.slice(5).trim();
            else if (line.startsWith("id:")) lastId = line.slice(3).trim();
          }
          if (data) showEvent(JSON.parse(data));
        }
      }
    } catch (err) {
      say(err.message);
    }
    state.textContent = "live: reconnecting";
    state.className = "pill bad";
    await new Promise((resolve) => setTimeout(resolve, 3000));
  }
}

document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  token = document.getElementById("token").value;
  sessionStorage.setItem("asyncsched-token", token);
  document.getElementById("token-form").hidden = true;
  refresh();
});

document.getElementById("history-filters").addEventListener("submit", (event) => {
  event.preventDefault();
  historyOffset = 0;
  scheduleRefresh(0);
});
document.getElementById("history-prev").addEventListener("click", () => {
  historyOffset = Math.max(0, historyOffset - HISTORY_PAGE);
  scheduleRefresh(0);
});
document.getElementById("history-next").addEventListener("click", () => {
  if (historyCapped || historyOffset + HISTORY_PAGE < historyTotal) historyOffset += HISTORY_PAGE;
  scheduleRefresh(0);
});

if (TOKEN_REQUIRED && !token) document.getElementById("token-form").hidden = false;
refresh();
setInterval(refresh, POLL_MS);
stream();
