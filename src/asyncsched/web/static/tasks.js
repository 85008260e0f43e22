// asyncsched dashboard, scheduled tasks: the create / edit form and deletion.
// The server validates, exactly as the API does for any client (POST /tasks, PATCH /tasks/{id}): each 422
// error is shown next to the field it names (aria-invalid + aria-describedby), a name clash (409) next to
// the name, anything else in the form's alert list. Uses the helpers of app.js (api, el, headers, say, BASE,
// scheduleRefresh). Data is written with textContent only.
"use strict";

const TASK_TEXT_FIELDS = ["name", "agent_name", "description", "type", "schedule", "timezone", "function", "queue"];
const TASK_JSON_FIELDS = { args: "[]", kwargs: "{}" };
let editing = null; // the task being edited; null while creating one

function taskForm() {
  return document.getElementById("task-form");
}

function clearTaskErrors() {
  const form = taskForm();
  for (const span of form.querySelectorAll(".field-error")) span.textContent = "";
  for (const control of form.querySelectorAll("[aria-invalid]")) control.removeAttribute("aria-invalid");
  document.getElementById("task-errors").replaceChildren();
}

function fieldError(name, message) {
  // Shown next to the field when the form has it (and it is visible); false otherwise.
  const span = document.getElementById("task-error-" + name);
  const control = taskForm().elements[name];
  if (!span || !control || span.closest(".field").hidden) return false;
  span.textContent = span.textContent ? span.textContent + "; " + message : message;
  control.setAttribute("aria-invalid", "true");
  return true;
}

function formError(message) {
  document.getElementById("task-errors").appendChild(el("li", message));
}

function shown(value) {
  return value === null || value === undefined ? "" : String(value);
}

function openTaskForm(task) {
  editing = task || null;
  const form = taskForm();
  form.reset();
  clearTaskErrors();
  form.querySelector('.field[data-field="agent_name"]').hidden = Boolean(editing); // an agent's task stays its own
  for (const name of TASK_TEXT_FIELDS) form.elements[name].value = editing ? shown(editing[name]) : "";
  if (!editing) form.elements.type.value = "interval";
  for (const [name, empty] of Object.entries(TASK_JSON_FIELDS)) {
    form.elements[name].value = editing ? JSON.stringify(editing[name] || JSON.parse(empty)) : empty;
  }
  form.elements.enabled.checked = editing ? Boolean(editing.enabled) : true;
  form.elements.overlap.value = overlapOf(editing);
  document.getElementById("task-title").textContent = editing ? "Edit task " + editing.name : "New task";
  document.getElementById("task-save").textContent = editing ? "Save" : "Create";
  document.getElementById("task-dialog").showModal();
  form.elements.name.focus();
}

function overlapOf(task) {
  // A task's overlap policy: stored in its options only when it is not the default (skip).
  return (task && (task.options || {}).overlap) || "skip";
}

function editTask(task) {
  openTaskForm(task);
}

function taskBody() {
  // The request body: every filled field for a new task, only what changed for an edit (PATCH).
  // Invalid JSON is reported next to its field here; every other check is the server's.
  const form = taskForm();
  const body = {};
  let ok = true;
  for (const name of TASK_TEXT_FIELDS) {
    if (editing && name === "agent_name") continue;
    const value = form.elements[name].value.trim();
    if (editing) {
      if (value !== shown(editing[name])) body[name] = value === "" && name === "description" ? null : value;
    } else if (value !== "") {
      body[name] = value;
    }
  }
  for (const [name, empty] of Object.entries(TASK_JSON_FIELDS)) {
    const text = form.elements[name].value.trim() || empty;
    let value;
    try {
      value = JSON.parse(text);
    } catch (err) {
      fieldError(name, "invalid JSON: " + err.message);
      ok = false;
      continue;
    }
    const before = editing ? JSON.stringify(editing[name] || JSON.parse(empty)) : empty;
    if (JSON.stringify(value) !== before) body[name] = value;
  }
  const overlap = form.elements.overlap.value;
  if (overlap !== overlapOf(editing)) body.overlap = overlap;
  const enabled = form.elements.enabled.checked;
  if (!editing ? !enabled : enabled !== Boolean(editing.enabled)) body.enabled = enabled;
  return ok ? body : null;
}

function showServerErrors(status, body) {
  if (status === 422 && Array.isArray(body.detail)) {
    for (const d of body.detail) {
      const loc = (d.loc || []).slice(1); // ["body", field, ...]
      const where = loc.length > 1 ? loc.slice(1).join(".") + ": " : "";
      if (!(loc.length && fieldError(String(loc[0]), where + d.msg))) {
        formError((loc.length ? loc.join(".") + ": " : "") + d.msg);
      }
    }
  } else if (status === 409) {
    const text = typeof body.detail === "string" ? body.detail : "a task of that name exists";
    if (!fieldError("name", text)) formError(text);
  } else {
    formError(status + ": " + (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)));
  }
  const invalid = taskForm().querySelector('[aria-invalid="true"]');
  if (invalid) invalid.focus();
}

async function saveTask(event) {
  event.preventDefault();
  clearTaskErrors();
  const body = taskBody();
  if (body === null) {
    taskForm().querySelector('[aria-invalid="true"]').focus();
    return;
  }
  if (editing && !Object.keys(body).length) {
    document.getElementById("task-dialog").close();
    return;
  }
  const path = editing ? "/tasks/" + encodeURIComponent(editing.id) : "/tasks";
  const response = await fetch(BASE + path, {
    method: editing ? "PATCH" : "POST",
    headers: headers({ "content-type": "application/json" }),
    body: JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    showServerErrors(response.status, answer);
    return;
  }
  document.getElementById("task-dialog").close();
  say("task " + answer.name + (editing ? " saved" : " created"));
  scheduleRefresh(0);
}

async function deleteTask(task) {
  if (!window.confirm("Delete task " + task.name + " of agent " + task.agent_name + "? This cannot be undone.")) return;
  await api("/tasks/" + encodeURIComponent(task.id), { method: "DELETE" });
  say("task " + task.name + " deleted");
  scheduleRefresh(0);
}

document.getElementById("task-new").addEventListener("click", () => openTaskForm(null));
document.getElementById("task-form").addEventListener("submit", (event) => saveTask(event).catch((err) => formError(err.message)));
document.getElementById("task-cancel").addEventListener("click", () => document.getElementById("task-dialog").close());
