// asyncsched dashboard, scheduled tasks: the create / edit form and deletion.
// The server validates, exactly as the API does for any client (POST /tasks, PATCH /tasks/{id}): each 422
// error is shown next to the field it names (aria-invalid + aria-describedby), a name clash (409) next to
// the name, anything else in the form's alert list. Uses the helpers of app.js (api, el, headers, say, BASE,
// scheduleRefresh). Data is written with textContent only.
"use strict";

const TASK_TEXT_FIELDS = ["name", "agent_name", "description", "type", "schedule", "timezone", "function", "queue"];
const TASK_JSON_FIELDS = { args: "[]", kwargs: "{}" };
let editing = null; // the task being edited; null while creating one

// The form's fields, built once from this table: [name, label, control, attributes]. A select lists its
// options as [value, text]; every field has an error span (task-error-<name>) that describes its control.
const TASK_FIELDS = [
  ["name", "name", "input", { required: "", maxlength: "200" }],
  ["agent_name", "agent", "input", { placeholder: "the server's agent" }],
  ["description", "description", "input", {}],
  ["type", "type", "select", { options: [["interval"], ["cron"], ["date"]] }],
  ["schedule", "schedule", "input", { required: "", placeholder: "5 minutes, 0 9 * * *, or an ISO time" }],
  ["timezone", "time zone", "input", { placeholder: "UTC" }],
  ["function", "function", "input", { required: "", class: "mono", placeholder: "package.module:function" }],
  ["overlap", "overlap", "select", {
    options: [
      ["skip", "skip: a tick while the last run is busy is skipped"],
      ["queue", "queue: it runs once the last run ends"],
      ["allow", "allow: runs overlap"],
    ],
  }],
  ["args", "args (JSON array)", "textarea", { rows: "1", class: "mono" }],
  ["kwargs", "kwargs (JSON object)", "textarea", { rows: "2", class: "mono" }],
  ["queue", "queue", "input", { placeholder: "default" }],
  ["enabled", "enabled", "checkbox", { checked: "" }],
];

function taskField([name, label, control, attributes]) {
  const field = el("div", undefined, "field");
  field.dataset.field = name;
  const input = document.createElement(control === "checkbox" ? "input" : control);
  if (control === "checkbox") input.type = "checkbox";
  if (control === "input") input.setAttribute("autocomplete", "off");
  input.name = name;
  input.id = "task-" + name;
  input.setAttribute("aria-describedby", "task-error-" + name);
  for (const [key, value] of Object.entries(attributes)) {
    if (key !== "options") input.setAttribute(key, value);
  }
  for (const [value, text] of attributes.options || []) {
    const option = el("option", text || value);
    option.value = value;
    input.appendChild(option);
  }
  const caption = el("label");
  if (control === "checkbox") {
    caption.append(input, " " + label);
    field.append(caption);
  } else {
    caption.textContent = label;
    caption.htmlFor = input.id;
    field.append(caption, input);
  }
  const error = el("span", undefined, "field-error");
  error.id = "task-error-" + name;
  field.append(error);
  return field;
}

document.getElementById("task-errors").before(...TASK_FIELDS.map(taskField));

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
