// asyncsched dashboard, operators' part: failed jobs (requeue / delete, one or all), a job's details
// (arguments, result, traceback, attempts, timeline) with requeue / cancel. The task form is static/tasks.js.
// Uses the helpers of app.js (api, el, td, row, fill, when, status, say, button, scheduleRefresh, EXTRA_LOADERS).
// Data is written with textContent only. Destructive actions ask for confirmation first.
"use strict";

const FAILED_PAGE = 20;
let failedOffset = 0;
let failedTotal = 0;
let currentJob = null;

function actionButton(label, aria, action) {
  return button(label, action, aria); // app.js's button, with an accessible name
}

function failedQueue() {
  return document.getElementById("failed-queue").value || "default";
}

async function loadFailed() {
  const select = document.getElementById("failed-queue");
  const queues = (await api("/queues")).items.map((q) => q.name);
  const chosen = select.value || (queues.includes("default") ? "default" : queues[0] || "default");
  if ([...select.options].map((o) => o.value).join() !== queues.join()) {
    select.replaceChildren(...queues.map((name) => el("option", name)));
  }
  select.value = chosen;
  const q = encodeURIComponent(chosen);
  const data = await api("/queues/" + q + "/jobs?status=failed&limit=" + FAILED_PAGE + "&offset=" + failedOffset);
  failedTotal = data.total || 0;
  const last = Math.min(failedOffset + data.items.length, failedTotal);
  document.getElementById("failed-range").textContent =
    failedTotal ? (failedOffset + 1) + "–" + last + " of " + failedTotal : "no failed jobs";
  document.getElementById("failed-prev").disabled = failedOffset === 0;
  document.getElementById("failed-next").disabled = last >= failedTotal;
  fill("failed", data.items.map((j) => {
    const path = "/jobs/" + encodeURIComponent(j.id);
    const actions = td();
    actions.appendChild(actionButton("requeue", "requeue job " + j.id, () => api(path + "/requeue", { method: "POST" })));
    const tr = row([jobCell(j.id), td(j.function, "mono"), td(j.attempt), td(when(j.ended_at)),
                    td(j.error || "", "error-text"), actions]);
    tr.dataset.jobId = j.id;
    return tr;
  }));
}

async function bulk(method, suffix, question) {
  const queue = failedQueue();
  if (!window.confirm(question.replace("{n}", String(failedTotal)).replace("{q}", queue))) return;
  const result = await api("/queues/" + encodeURIComponent(queue) + suffix, { method });
  say(result.count + " job(s) " + (method === "POST" ? "requeued" : "deleted") + " in " + queue);
  failedOffset = 0;
  scheduleRefresh(0);
}

// -- a job's details ---------------------------------------------------------------------------------

function field(list, name, value) {
  list.appendChild(el("dt", name));
  const dd = el("dd", typeof value === "string" ? value : JSON.stringify(value), "mono");
  dd.dataset.field = name;
  list.appendChild(dd);
}

async function openJob(id) {
  const dialog = document.getElementById("job-dialog");
  document.getElementById("job-message").textContent = "";
  let job = null;
  try {
    job = await api("/jobs/" + encodeURIComponent(id));
  } catch (err) {
    if (!err.message.startsWith("404")) {
      say(err.message);
      return;
    }
  }
  // Every attempt recorded in the history (one row per attempt), oldest first.
  const history = await api("/executions?limit=100&job_id=" + encodeURIComponent(id)).catch(() => ({ items: [] }));
  const attempts = (history.items || []).slice().sort((a, b) => a.attempt - b.attempt);
  if (job === null) {
    // Gone from Redis (its result_ttl / failure_ttl passed): what the history recorded of its last attempt.
    if (!attempts.length) {
      say("job " + id + " not found");
      return;
    }
    job = jobFromHistory(attempts[attempts.length - 1]);
  }
  currentJob = job;
  document.getElementById("job-title").textContent = "Job " + job.id;
  const fields = document.getElementById("job-fields");
  fields.replaceChildren();
  field(fields, "function", job.function);
  field(fields, "status", job.status);
  field(fields, "queue", job.queue);
  field(fields, "attempt", String(job.attempt) + (job.retries_left ? " (" + job.retries_left + " retries left)" : ""));
  if (job.expired) {
    field(fields, "arguments", "(the job has expired from Redis: shown from the history)");
  } else {
    field(fields, "args", job.args);
    field(fields, "kwargs", job.kwargs);
  }
  if (job.task_name) field(fields, "task", (job.agent_name || "") + " / " + job.task_name);
  if (job.worker_name) field(fields, "worker", job.worker_name);
  if (job.result !== null && job.result !== undefined) field(fields, "result", job.result);
  if (job.error) field(fields, "error", job.error);
  if (job.progress !== null && job.progress !== undefined) {
    field(fields, "progress", typeof job.progress === "number" ? (job.progress * 100).toFixed(1) + " %" : job.progress);
  }
  const timeline = document.getElementById("job-timeline");
  const steps = [["created", job.created_at], ["enqueued", job.enqueued_at], ["started", job.started_at],
                 ["ended", job.ended_at]];
  for (const a of attempts) {
    const took = a.duration === null || a.duration === undefined ? "" : " after " + a.duration.toFixed(3) + " s";
    const item = "attempt " + a.attempt + ": " + a.status + took + (a.error ? " (" + a.error + ")" : "");
    steps.push([item, a.ended_at || a.started_at || a.enqueued_at]);
  }
  timeline.replaceChildren(...steps.filter(([, t]) => t).map(([name, t]) => {
    const li = el("li", name + ": " + when(t));
    if (name.startsWith("attempt ")) li.dataset.attempt = name.split(" ")[1].replace(":", "");
    return li;
  }));
  document.getElementById("job-traceback").textContent = job.traceback || "(none)";
  document.getElementById("job-requeue").disabled = job.expired || !["failed", "cancelled"].includes(job.status);
  document.getElementById("job-cancel").disabled =
    job.expired || !["queued", "running", "scheduled", "deferred"].includes(job.status);
  dialog.dataset.jobId = job.id;
  dialog.dataset.status = job.status;
  if (!dialog.open) dialog.showModal();
}

function jobFromHistory(e) {
  return {
    id: e.job_id, function: e.function, status: e.status, queue: e.queue, attempt: e.attempt,
    agent_name: e.agent_name, task_name: e.task_name, worker_name: e.worker_name, result: e.result,
    error: e.error, traceback: e.traceback, enqueued_at: e.enqueued_at, started_at: e.started_at,
    ended_at: e.ended_at, expired: true,
  };
}

async function jobAction(action, question) {
  if (!currentJob || !window.confirm(question + " job " + currentJob.id + "?")) return;
  const message = document.getElementById("job-message");
  try {
    await api("/jobs/" + encodeURIComponent(currentJob.id) + "/" + action, { method: "POST" });
    const done = action === "requeue" ? "requeued" : "cancelled";
    scheduleRefresh(0);
    await openJob(currentJob.id); // the job as it is now (clears the message)
    message.textContent = done;
  } catch (err) {
    message.textContent = err.message;
  }
}

// -- wiring ------------------------------------------------------------------------------------------

document.getElementById("failed-queue").addEventListener("change", () => { failedOffset = 0; scheduleRefresh(0); });
document.getElementById("failed-prev").addEventListener("click", () => {
  failedOffset = Math.max(0, failedOffset - FAILED_PAGE);
  scheduleRefresh(0);
});
document.getElementById("failed-next").addEventListener("click", () => {
  if (failedOffset + FAILED_PAGE < failedTotal) failedOffset += FAILED_PAGE;
  scheduleRefresh(0);
});
document.getElementById("failed-requeue-all").addEventListener("click", () =>
  bulk("POST", "/failed/requeue", "Requeue all {n} failed job(s) of queue {q}?").catch((err) => say(err.message)));
document.getElementById("failed-delete-all").addEventListener("click", () =>
  bulk("DELETE", "/failed", "Delete all {n} failed job(s) of queue {q}? This cannot be undone.").catch((err) => say(err.message)));
document.getElementById("job-requeue").addEventListener("click", () => jobAction("requeue", "Requeue"));
document.getElementById("job-cancel").addEventListener("click", () => jobAction("cancel", "Cancel"));
document.getElementById("job-close").addEventListener("click", () => document.getElementById("job-dialog").close());

EXTRA_LOADERS.push(loadFailed);
scheduleRefresh(0);
