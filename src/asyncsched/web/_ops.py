"""Operators' endpoints: edit a task, requeue/cancel a job, list a queue's jobs, act on failed jobs,
pause/resume/empty a queue.

The handlers are a base class of :class:`~asyncsched.web._handlers.Handlers`; their
operations and schemas join the table of :mod:`asyncsched.web._spec`, so the OpenAPI document, validation
and routing cover them like every other operation.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from .._json import JSONObject
from ..exceptions import Conflict, JobError, JobNotFound
from ._base import HandlerBase
from ._serialize import job_to_dict, task_to_dict
from ._validation import FieldError, ValidationFailed, error

__all__ = ["JOB_STATES", "OperatorHandlers", "ops_schemas"]

JOB_STATES = ["queued", "running", "success", "failed", "cancelled", "scheduled", "deferred"]


def _task_update_schema(create: dict[str, Any]) -> dict[str, Any]:
    """``TaskCreate`` without required fields and without ``agent_name`` (a task keeps its agent)."""
    props = {k: v for k, v in create["properties"].items() if k != "agent_name"}
    return {
        "type": "object",
        "additionalProperties": False,
        "description": "Fields to change; absent fields keep their value, `null` resets an optional one.",
        "properties": props,
    }


def ops_schemas(create: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The schemas of this module's operations (``create``: the ``TaskCreate`` schema)."""
    return {
        "TaskUpdate": _task_update_schema(create),
        "JobPage": {
            "type": "object",
            "properties": {
                "items": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}},
                "total": {"type": "integer"},
                "offset": {"type": "integer"},
                "limit": {"type": "integer"},
            },
        },
        "QueueState": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "paused": {"type": "boolean"},
                "changed": {"type": "boolean", "description": "False when it already was in that state."},
            },
        },
        "BulkResult": {
            "type": "object",
            "properties": {
                "queue": {"type": "string"},
                "count": {"type": "integer", "description": "Jobs requeued or deleted."},
                "job_ids": {"type": "array", "items": {"type": "string"}},
            },
        },
    }


class OperatorHandlers(HandlerBase):
    """The operators' endpoints, a base of ``Handlers`` (the checks they share: :class:`HandlerBase`)."""

    # -- tasks ---------------------------------------------------------------------------------------------

    async def update_task(self, request: Request, params: dict[str, Any], body: dict[str, Any]) -> JSONObject:
        """PATCH /tasks/{task_id}: change some fields, validated as a create is; 409 on a name clash."""
        from ..scheduler._rename import check_rename

        if not body:
            raise ValidationFailed([error(("body",), "give at least one field to change", "missing")])
        task = await self._task(params)
        scheduler = await self.services.scheduler()
        merged: dict[str, Any] = {
            "type": getattr(task.type, "value", task.type),
            "schedule": task.schedule,
            "timezone": task.timezone or "UTC",
            **{k: body[k] for k in ("type", "schedule", "timezone") if body.get(k) is not None},
        }
        start = body.get("start") or (task.options or {}).get("start")
        if isinstance(start, str):
            merged["start"] = start
        errors: list[FieldError] = []
        if {"type", "schedule", "timezone", "start"} & body.keys():
            errors = self._validate_schedule(merged)
        if errors:
            raise ValidationFailed(errors)
        if "function" in body:
            await self._check_function(body["function"])
        self._check_retry(body)
        await check_rename(scheduler, task, body.get("name"))
        # Validated again by the scheduler exactly as a YAML task; TaskDefinitionError is answered 422.
        stored = await scheduler.update_task(task.id, agent_name=task.agent_name, **body)
        return task_to_dict(stored)

    # -- jobs ----------------------------------------------------------------------------------------------

    async def requeue_job(self, request: Request, params: dict[str, Any], body: None) -> JSONObject:
        """POST /jobs/{job_id}/requeue: a failed, stopped or cancelled job back on its queue (new attempt)."""
        queue = await self.services.queue()
        try:
            await queue.requeue(params["job_id"])
        except JobNotFound:
            raise
        except JobError as exc:
            raise Conflict(str(exc)) from None
        return {"job_id": params["job_id"], "status": "queued"}

    async def cancel_job(self, request: Request, params: dict[str, Any], body: None) -> JSONObject:
        """POST /jobs/{job_id}/cancel: a queued/scheduled job never runs; a running one is stopped."""
        queue = await self.services.queue()
        if not await queue.cancel(params["job_id"]):
            raise Conflict(f"job {params['job_id']!r} already ended")
        return {"job_id": params["job_id"], "status": "cancelled"}

    # -- queues --------------------------------------------------------------------------------------------

    async def list_queue_jobs(self, request: Request, params: dict[str, Any], body: None) -> JSONObject:
        """GET /queues/{queue}/jobs: one page of a queue's jobs (of one state, or all)."""
        from ..queue import JobStatus

        queue = await self.services.queue()
        name, status = params["queue"], params.get("status")
        state = JobStatus(status) if status else None
        jobs = await queue.list_jobs(name, state, params["offset"], params["limit"])
        total = await queue.count_jobs(name, state)
        return {
            "items": [job_to_dict(j) for j in jobs],
            "total": total,
            "offset": params["offset"],
            "limit": params["limit"],
        }

    async def _set_paused(self, params: dict[str, Any], paused: bool) -> JSONObject:
        queue = await self.services.queue()
        name = params["queue"]
        changed = await (queue.pause(name) if paused else queue.resume(name))
        return {"name": name, "paused": paused, "changed": changed}

    async def pause_queue(self, request: Request, params: dict[str, Any], body: None) -> JSONObject:
        """POST /queues/{queue}/pause: asyncsched workers claim nothing from it until resumed."""
        return await self._set_paused(params, True)

    async def resume_queue(self, request: Request, params: dict[str, Any], body: None) -> JSONObject:
        """POST /queues/{queue}/resume."""
        return await self._set_paused(params, False)

    async def requeue_failed(self, request: Request, params: dict[str, Any], body: None) -> JSONObject:
        """POST /queues/{queue}/failed/requeue: every failed job of the queue back on it."""
        queue = await self.services.queue()
        ids = await queue.requeue_failed(params["queue"])
        return {"queue": params["queue"], "count": len(ids), "job_ids": ids}

    async def delete_failed(self, request: Request, params: dict[str, Any], body: None) -> JSONObject:
        """DELETE /queues/{queue}/failed: delete every failed job of the queue."""
        queue = await self.services.queue()
        return {"queue": params["queue"], "count": await queue.delete_failed(params["queue"]), "job_ids": []}

    async def empty_queue(self, request: Request, params: dict[str, Any], body: None) -> JSONObject:
        """DELETE /queues/{queue}/jobs: delete every queued (waiting) job of the queue, as ``rq empty``."""
        queue = await self.services.queue()
        return {"queue": params["queue"], "count": await queue.empty(params["queue"]), "job_ids": []}
