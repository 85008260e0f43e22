"""The API as data: every operation, its parameters, body and response schemas (:mod:`._schemas`), and the
OpenAPI document.

Request bodies and query parameters are validated against exactly these schemas
(:mod:`asyncsched.web._validation`), so the published document and the server cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .._version import __version__
from ..scheduler._fields import name_schema
from ._ops import JOB_STATES
from ._schemas import PRINTABLE, SCHEMAS, STATUSES

__all__ = ["LINKS", "OPERATIONS", "SCHEMAS", "Operation", "openapi_document"]

_name = name_schema()


def _q(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _path(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": PRINTABLE},
        "description": description,
    }


_agent_q = _q("agent_name", _name, "Only this agent's items.")
_agent_alias_q = _q("agent", {**_name, "x-alias-of": "agent_name"}, "Same as `agent_name` (older name).")
_agents = (_agent_q, _agent_alias_q)
_printable = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": PRINTABLE}
_offset_q = _q("offset", {"type": "integer", "minimum": 0, "maximum": 1000000, "default": 0})
_limit_q = _q("limit", {"type": "integer", "minimum": 1, "maximum": 500, "default": 50})
_task_id = _path("task_id", "Task id, or its name (with `agent` to pick the agent).")
_execution_id = _path("execution_id", "Execution id or job id.")
_queue_path = {**_path("queue", "Queue name."), "schema": _name}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


@dataclass(frozen=True)
class Operation:
    """One HTTP operation: what the router serves and what the OpenAPI document says about it."""

    name: str
    method: str
    path: str
    summary: str
    tag: str
    params: tuple[dict[str, Any], ...] = ()
    body: str | None = None
    response: str | None = None
    status: int = 200
    errors: tuple[int, ...] = ()
    auth: bool = True
    content_type: str = "application/json"
    extra: Mapping[str, Any] = field(default_factory=dict)


_paging = (_offset_q, _limit_q)


def _window(verb: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``since``/``until`` time-window parameters of a listing (``verb``: "Enqueued", "Created")."""
    when = {"type": "string", "format": "date-time"}
    return _q("since", when, f"{verb} at or after."), _q("until", when, f"{verb} before.")


_event_filters = (  # the listing's and the live stream's
    _q("event_type", _printable, "Exact type or a wildcard pattern such as `task.*`."),
    _q("agent", _name, "Source or target agent."),
)


_task_ref = (_task_id, *_agents)

OPERATIONS: tuple[Operation, ...] = (
    # The spec's nine endpoints.
    Operation("create_task", "POST", "/tasks", "Create a scheduled task", "tasks",
              body="TaskCreate", response="Task", status=201, errors=(403, 409, 413, 422)),
    Operation("create_tasks", "POST", "/tasks/bulk", "Create many scheduled tasks (all or nothing)", "tasks",
              body="TaskCreateBulk", response="TaskBulkCreated", status=201, errors=(403, 409, 413, 422)),
    Operation("list_tasks", "GET", "/tasks", "List scheduled tasks", "tasks",
              params=(*_agents, _q("enabled", {"type": "boolean"}, "Only enabled (or disabled) tasks."),
                      *_paging), response="TaskList", errors=(422,)),
    Operation("get_task", "GET", "/tasks/{task_id}", "Get a scheduled task", "tasks",
              params=_task_ref, response="Task", errors=(404, 422)),
    Operation("delete_task", "DELETE", "/tasks/{task_id}", "Delete a scheduled task", "tasks",
              params=_task_ref, status=204, errors=(404, 422)),
    Operation("enable_task", "POST", "/tasks/{task_id}/enable", "Enable a scheduled task", "tasks",
              params=_task_ref, response="Task", errors=(404, 409, 422)),
    Operation("disable_task", "POST", "/tasks/{task_id}/disable", "Disable a scheduled task", "tasks",
              params=_task_ref, response="Task", errors=(404, 422)),
    Operation("list_executions", "GET", "/executions", "List task executions", "executions",
              params=(
                  *_agents,
                  _q("status", {"type": "string", "enum": STATUSES}),
                  _q("task_id", _printable, "The scheduled task's id."),
                  _q("task_name", _printable, "The recorded task name (also of ad-hoc jobs)."),
                  _q("job_id", _printable),
                  _q("queue", _name),
                  *_window("Enqueued"),
                  *_paging,
              ), response="ExecutionPage", errors=(422,)),
    Operation("get_execution", "GET", "/executions/{execution_id}", "Get an execution", "executions",
              params=(_execution_id,), response="Execution", errors=(404, 422)),
    Operation("cancel_execution", "POST", "/executions/{execution_id}/cancel", "Cancel an execution",
              "executions", params=(_execution_id,), response="JobAccepted", errors=(404, 409, 422)),
    # Operators' additions.
    Operation("run_task", "POST", "/tasks/{task_id}/run", "Run a scheduled task now", "tasks",
              params=_task_ref, response="JobAccepted", status=202, errors=(404, 409, 422)),
    Operation("list_rq_scheduler_jobs", "GET", "/rq-scheduler/jobs",
              "rq-scheduler's schedules (asyncsched's scheduler fires them too)", "tasks",
              params=_paging, response="RQSchedulerJobList", errors=(422,)),
    Operation("enqueue_job", "POST", "/jobs", "Enqueue an allow-listed function", "jobs",
              body="JobCreate", response="JobAccepted", status=202, errors=(403, 413, 422)),
    Operation("get_job", "GET", "/jobs/{job_id}", "Get a job's live state from Redis", "jobs",
              params=(_path("job_id", "Job id."),), response="Job", errors=(404, 422)),
    Operation("list_queues", "GET", "/queues", "Queues with job counts per state", "operations",
              params=_paging, response="QueueList", errors=(422,)),
    Operation("list_workers", "GET", "/workers", "Workers with their heartbeats", "operations",
              params=_paging, response="WorkerList", errors=(422,)),
    Operation("list_limits", "GET", "/limits", "Rate limits and concurrency caps in use, with their usage",
              "operations", params=_paging, response="LimitList", errors=(422,)),
    Operation("list_events", "GET", "/events", "Recent events", "events",
              params=(
                  *_event_filters,
                  _q("source_agent", _name),
                  _q("target_agent", _name),
                  *_window("Created"),
                  *_paging,
              ), response="EventPage", errors=(422,)),
    Operation("stream_events", "GET", "/events/stream", "Live events (Server-Sent Events)", "events",
              params=(
                  *_event_filters,
                  _q("replay", {"type": "integer", "minimum": 0, "maximum": 200, "default": 0},
                     "Send this many of the most recent events first."),
              ), content_type="text/event-stream", errors=(422,)),
    Operation("health", "GET", "/health", "Redis and database reachable", "operations",
              response="Health", errors=(422, 503), auth=False),
    Operation("metrics", "GET", "/metrics", "Prometheus metrics", "operations",
              content_type="text/plain", errors=(422,)),
    # Operators' actions (web/_ops.py).
    Operation("update_task", "PATCH", "/tasks/{task_id}", "Change some fields of a scheduled task", "tasks",
              params=(_task_id, _agent_q), body="TaskUpdate", response="Task",
              errors=(403, 404, 409, 413, 422)),
    Operation("requeue_job", "POST", "/jobs/{job_id}/requeue", "Requeue a failed or cancelled job", "jobs",
              params=(_path("job_id", "Job id."),), response="JobAccepted", errors=(404, 409)),
    Operation("cancel_job", "POST", "/jobs/{job_id}/cancel", "Cancel a job", "jobs",
              params=(_path("job_id", "Job id."),), response="JobAccepted", errors=(404, 409)),
    Operation("list_queue_jobs", "GET", "/queues/{queue}/jobs", "A queue's jobs, one page", "operations",
              params=(_queue_path, _q("status", {"type": "string", "enum": JOB_STATES}), _offset_q, _limit_q),
              response="JobPage", errors=(422,)),
    Operation("empty_queue", "DELETE", "/queues/{queue}/jobs", "Delete a queue's waiting jobs", "operations",
              params=(_queue_path,), response="BulkResult", errors=(422,)),
    Operation("pause_queue", "POST", "/queues/{queue}/pause", "Pause a queue (workers take none)",
              "operations", params=(_queue_path,), response="QueueState", errors=(422,)),
    Operation("resume_queue", "POST", "/queues/{queue}/resume", "Resume a paused queue", "operations",
              params=(_queue_path,), response="QueueState", errors=(422,)),
    Operation("requeue_failed", "POST", "/queues/{queue}/failed/requeue", "Requeue every failed job",
              "operations", params=(_queue_path,), response="BulkResult", errors=(422,)),
    Operation("delete_failed", "DELETE", "/queues/{queue}/failed", "Delete every failed job", "operations",
              params=(_queue_path,), response="BulkResult", errors=(422,)),
    Operation("openapi", "GET", "/openapi.json", "This document", "meta", auth=False, errors=(422,)),
    Operation("dashboard", "GET", "/dashboard", "The dashboard page", "meta", auth=False,
              content_type="text/html", errors=(422,)),
)  # fmt: skip


def _link(operation: str, **parameters: str) -> dict[str, Any]:
    return {"operationId": operation, "parameters": parameters}


_TASK_LINKS = {
    name: _link(name, task_id="$response.body#/id")
    for name in ("get_task", "delete_task", "enable_task", "disable_task", "run_task")
}
_JOB_LINKS = {
    "get_job": _link("get_job", job_id="$response.body#/job_id"),
    "get_execution": _link("get_execution", execution_id="$response.body#/job_id"),
    "cancel_execution": _link("cancel_execution", execution_id="$response.body#/job_id"),
}
LINKS: dict[str, dict[str, dict[str, Any]]] = {
    "create_task": _TASK_LINKS,
    "enable_task": _TASK_LINKS,
    "disable_task": _TASK_LINKS,
    "enqueue_job": _JOB_LINKS,
    "run_task": _JOB_LINKS,
}
"""OpenAPI links of each operation's success answer: which later calls take ids from it (clients and
stateful testers such as schemathesis follow them)."""

_ERROR_TEXT = {
    400: "Host not served without a token (DNS rebinding protection; see ASYNCSCHED_ALLOWED_HOSTS)",
    401: "Missing or wrong bearer token",
    403: "Function not on the allow-list",
    404: "Not found",
    409: "Conflict (duplicate task name, the job is not in a state that allows this, or the stored task "
    "cannot run as it is)",
    413: "Request body larger than the limit (decided from Content-Length when given)",
    422: "Invalid request; `detail` lists each offending field",
    503: "A backend (Redis, database, component) is unavailable",
}


def openapi_document(root_path: str = "", *, secured: bool = False) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the router (paths relative to where it is mounted).

    ``secured``: a bearer token is configured, so the document declares it and the 401 answers.
    """
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        item: dict[str, Any] = {
            "operationId": op.name,
            "summary": op.summary,
            "tags": [op.tag],
            "parameters": [dict(p) for p in op.params],
            "responses": {},
        }
        if op.body:
            item["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _ref(op.body)}},
            }
        ok: dict[str, Any] = {"description": "OK"}
        if op.status != 204:
            schema: dict[str, Any] = _ref(op.response) if op.response else {"type": "string"}
            if op.content_type == "application/json" and not op.response:
                schema = {"type": "object"}
            ok["content"] = {op.content_type: {"schema": schema}}
        if op.name in LINKS:
            ok["links"] = LINKS[op.name]
        item["responses"][str(op.status)] = ok
        # 400: an unknown Host with no token (DNS rebinding protection); 401: a token is set.
        codes = set(op.errors) | (({401} if op.auth else set()) if secured else {400}) | {503}
        for code in sorted(codes):
            name = "ValidationError" if code == 422 else "Error"
            item["responses"][str(code)] = {
                "description": _ERROR_TEXT[code],
                "content": {"application/json": {"schema": _ref(name)}},
            }
        if secured and not op.auth:
            item["security"] = []
        paths.setdefault(op.path, {})[op.method.lower()] = item
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "asyncsched scheduler API",
            "version": __version__,
            "description": "Scheduled tasks, executions, jobs, queues, workers and events of asyncsched.",
        },
        "paths": paths,
        "components": {"schemas": SCHEMAS},
    }
    if secured:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{"bearer": []}]
    if root_path:
        doc["servers"] = [{"url": root_path}]
    return doc
