"""The API's handlers: each takes the validated query/path values and body and returns JSON data.

Plumbing (auth, validation, error mapping, metrics) lives in :mod:`asyncsched.web._router`; handlers raise
the library's own exceptions (``TaskNotFound``, ``DuplicateTask``, ``FunctionNotAllowed``...) and
:class:`~asyncsched.web._validation.ValidationFailed`, which the router turns into status codes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from .._json import JSONObject
from ..exceptions import (
    Conflict,
    InvalidJob,
    JobNotFound,
    TaskDefinitionError,
)
from ..queue import RateLimit, Repeat
from ._base import one_view, page_view, prefix_of, problems_to_errors
from ._bulk import create_tasks
from ._live import matches
from ._ops import OperatorHandlers
from ._rqscheduler import list_rq_scheduler_jobs as _rq_scheduler_jobs
from ._security import API_SOURCE
from ._serialize import (
    ApiJSON,
    event_view,
    execution_to_dict,
    job_to_dict,
    plain,
    task_to_dict,
    worker_to_dict,
)
from ._validation import FieldError, ValidationFailed, error, parse_datetime

__all__ = ["Handlers"]

log = logging.getLogger("asyncsched.web")

KEEPALIVE = 15.0
"""Seconds between SSE comments that keep proxies from closing an idle stream."""

TERMINAL = {"success", "failed", "cancelled", "skipped"}


class Handlers(OperatorHandlers):
    """Endpoint bodies bound to one :class:`Services` (the shared checks: :class:`HandlerBase`)."""

    async def list_rq_scheduler_jobs(
        self, request: Request, params: dict[str, Any], body: None
    ) -> JSONObject:
        """GET /rq-scheduler/jobs (web/_rqscheduler.py), paged like every list (``total``: the readable
        jobs, which the pages cover)."""
        data = await _rq_scheduler_jobs(self, request, params, body)
        return {**data, **page_view(list(data["items"]), dict, params)}

    # -- tasks -------------------------------------------------------------------------------------

    async def create_task(self, request: Request, params: dict[str, Any], body: dict[str, Any]) -> Response:
        settings = self.services.settings
        errors = self._validate_schedule(body)
        if errors:
            raise ValidationFailed(errors)
        await self._check_function(body["function"])
        self._check_retry(body)
        scheduler = await self.services.scheduler()
        agent = body.get("agent_name") or settings.agent
        definition = {k: v for k, v in body.items() if k != "agent_name" and v is not None}
        try:
            # Validated again by the scheduler exactly as a YAML task (including that the function imports);
            # create_only: of concurrent creates of one name, the table's unique constraint lets one win.
            stored = await scheduler.register_task(
                agent_name=agent, source=API_SOURCE, create_only=True, **definition
            )
        except TaskDefinitionError as exc:
            raise ValidationFailed(problems_to_errors(exc, None)) from None
        data = task_to_dict(stored)
        return ApiJSON(
            data, status_code=201, headers={"location": f"{prefix_of(request, '/tasks')}/tasks/{data['id']}"}
        )

    async def create_tasks(self, request: Request, params: dict[str, Any], body: dict[str, Any]) -> Response:
        """POST /tasks/bulk (web/_bulk.py): every item checked as ``create_task`` checks one."""
        agent = self.services.settings.agent
        scheduler = await self.services.scheduler()
        data = await create_tasks(
            body["tasks"], agent, self._validate_schedule, self._check_function, scheduler, problems_to_errors
        )
        return ApiJSON(data, status_code=201)

    async def list_tasks(self, request: Request, params: dict[str, Any], body: None) -> JSONObject:
        tasks = await self.services.tasks()
        page = await tasks.list_for_display(
            agent_name=params.get("agent_name"),
            enabled=params.get("enabled"),
            offset=params["offset"],
            limit=params["limit"],
        )
        return page_view(page, task_to_dict, params)

    async def get_task(self, request: Request, params: dict[str, Any], body: None) -> JSONObject:
        return await one_view(self._task(params), task_to_dict, params["task_id"])

    async def delete_task(self, request: Request, params: dict[str, Any], body: None) -> Response:
        scheduler = await self.services.scheduler()  # works on any row, readable or not
        await scheduler.unregister_task(params["task_id"], agent_name=params.get("agent_name"))
        return Response(status_code=204)

    async def enable_task(self, request: Request, params: dict[str, Any], body: None) -> JSONObject:
        return await self._set_enabled(params, True)

    async def disable_task(self, request: Request, params: dict[str, Any], body: None) -> JSONObject:
        return await self._set_enabled(params, False)

    async def _set_enabled(self, params: dict[str, Any], enabled: bool) -> JSONObject:
        scheduler = await self.services.scheduler()
        if enabled:
            task = await self._runnable(params)
            await scheduler.enable(task.id, agent_name=task.agent_name)
        else:  # disabling works on any row, readable or not
            task = await scheduler.disable(params["task_id"], agent_name=params.get("agent_name"))
        return await one_view(scheduler.get_task(task.id, agent_name=task.agent_name), task_to_dict, task.id)

    async def run_task(self, request: Request, params: dict[str, Any], body: None) -> Response:
        task = await self._runnable(params)
        scheduler = await self.services.scheduler()
        job_id = await scheduler.run_now(task)
        return ApiJSON({"job_id": job_id, "status": "queued", "task_id": task.id}, status_code=202)

    # -- executions --------------------------------------------------------------------------------

    async def list_executions(self, request: Request, params: dict[str, Any], body: None) -> JSONObject:
        repo = await self.services.executions()
        filters = ("agent_name", "status", "task_id", "task_name", "job_id", "queue", "since", "until")
        page = await repo.list_for_display(
            offset=params["offset"], limit=params["limit"], **{name: params.get(name) for name in filters}
        )
        return page_view(page, execution_to_dict, params)

    async def get_execution(self, request: Request, params: dict[str, Any], body: None) -> JSONObject:
        repo = await self.services.executions()
        return await one_view(repo.get(params["execution_id"]), execution_to_dict, params["execution_id"])

    async def cancel_execution(self, request: Request, params: dict[str, Any], body: None) -> JSONObject:
        key = params["execution_id"]
        repo = await self.services.executions()
        queue = await self.services.queue()
        try:
            execution = await repo.get(key)
            job_id, status = execution.job_id, execution.status
        except LookupError:
            # Not recorded yet (the recorder batches): the job itself may exist in Redis.
            record = await queue.job(key)
            job_id, status = record.id, str(getattr(record.status, "value", record.status))
        if status in TERMINAL:
            raise Conflict(f"execution {key!r} already ended ({status})")
        if not await queue.cancel(job_id):
            raise Conflict(f"job {job_id!r} could not be cancelled (it already ended)")
        return {"job_id": job_id, "status": "cancelled"}

    # -- jobs, queues, workers ---------------------------------------------------------------------

    async def enqueue_job(self, request: Request, params: dict[str, Any], body: dict[str, Any]) -> Response:
        errors: list[FieldError] = []
        at = None
        if body.get("at") is not None:
            at = parse_datetime(body["at"])
        if at is not None and body.get("delay") is not None:
            errors.append(error(("body", "delay"), "give either 'at' or 'delay', not both"))
        errors += [
            error(("body", name), f"'{name}' cannot be combined with 'at' or 'delay'")
            for name in ("depends_on", "rate_limit")
            if body.get(name) and (at is not None or body.get("delay"))
        ]
        if errors:
            raise ValidationFailed(errors)
        await self._check_function(body["function"])
        queue = await self.services.queue()
        options: dict[str, Any] = {
            "args": list(body.get("args", [])),
            "kwargs": dict(body.get("kwargs", {})),
            "queue": body.get("queue"),
            "agent_name": body.get("agent_name"),
            "task_name": body.get("task_name"),
            "function_path": body["function"],
            "description": body.get("description"),
            "timeout": body.get("timeout"),
        }
        if body.get("retry"):
            options["retry"] = self._check_retry(body)
        if body.get("depends_on"):  # RQ's dependencies (rq-compat.md)
            options["depends_on"] = list(body["depends_on"])
            options["allow_dependency_failures"] = bool(body.get("allow_dependency_failures", False))
        if body.get("repeat"):
            options["repeat"] = Repeat(body["repeat"]["times"], body["repeat"].get("interval", 0))
        if body.get("rate_limit"):
            options["rate_limit"] = RateLimit(body["rate_limit"]["key"], body["rate_limit"]["concurrency"])
        limit = body.get("limit") or {}  # flow limit (docs/flow-control.md)
        if limit and body.get("rate_limit") and limit.get("rate"):
            raise ValidationFailed(
                [error(("body", "limit", "rate"), "give RQ's rate_limit or limit.rate, not both")]
            )
        for name, option in (("rate", "rate_limit"), ("max_concurrency", "max_concurrency")):
            if limit.get(name) is not None:
                options[option] = limit[name]
        if limit.get("concurrency_key") is not None:
            options["concurrency_key"] = limit["concurrency_key"]
        if at is not None:
            options["at"] = at
        elif body.get("delay"):
            options["delay"] = timedelta(seconds=body["delay"])
        try:
            job_id = await queue.enqueue(body["function"], **options)
        except InvalidJob as exc:
            if not limit:
                raise
            raise ValidationFailed([error(("body", "limit"), str(exc))]) from None
        status = "scheduled" if (at is not None and at > datetime.now(UTC)) or body.get("delay") else "queued"
        if body.get("depends_on") or body.get("rate_limit"):  # waiting for a parent or a slot: "deferred"
            status = str(await queue.status(job_id))
        return ApiJSON({"job_id": job_id, "status": status}, status_code=202)

    async def get_job(self, request: Request, params: dict[str, Any], body: None) -> JSONObject:
        queue = await self.services.queue()
        try:
            return job_to_dict(await queue.job(params["job_id"]))
        except JobNotFound:
            raise
        except LookupError as exc:
            raise JobNotFound(str(exc)) from None

    async def list_queues(self, request: Request, params: dict[str, Any], body: None) -> JSONObject:
        queue = await self.services.queue()
        counts = await queue.queue_counts()
        paused = await queue.paused(list(counts))
        rows = [{"name": name, "counts": c, "paused": name in paused} for name, c in sorted(counts.items())]
        view = lambda row: {"name": row["name"], "counts": dict(row["counts"]), "paused": row["paused"]}  # noqa: E731
        return page_view(rows, view, params)

    async def list_limits(self, request: Request, params: dict[str, Any], body: None) -> JSONObject:
        queue = await self.services.queue()
        return page_view(await queue.limits_usage(), lambda usage: usage.as_dict(), params)

    async def list_workers(self, request: Request, params: dict[str, Any], body: None) -> JSONObject:
        queue = await self.services.queue()
        workers = sorted(await queue.workers(), key=lambda w: str(getattr(w, "name", "")))
        return page_view(workers, worker_to_dict, params)

    # -- events ------------------------------------------------------------------------------------

    async def list_events(self, request: Request, params: dict[str, Any], body: None) -> JSONObject:
        repo = await self.services.events()
        filters = ("event_type", "agent", "source_agent", "target_agent", "since", "until")
        page = await repo.list_for_display(
            offset=params["offset"], limit=params["limit"], **{name: params.get(name) for name in filters}
        )
        view = event_view(self.services.settings.max_payload_bytes)
        return {**page_view(page, view, params), "source": "database"}

    async def stream_events(self, request: Request, params: dict[str, Any], body: None) -> Response:
        feed = await self.services.live()
        event_type, agent = params.get("event_type"), params.get("agent")
        last_id = request.headers.get("last-event-id")
        replay_n: int = params["replay"]

        async def stream() -> AsyncIterator[str]:
            async with feed.subscribe() as queue:
                yield "retry: 3000\n\n"
                backlog = feed.recent(last_id) if last_id else feed.recent()[-replay_n:] if replay_n else []
                for item in backlog:
                    if matches(item, event_type, agent):
                        yield _sse(item)
                while True:
                    try:
                        item = await asyncio.wait_for(queue.get(), KEEPALIVE)
                    except TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    if matches(item, event_type, agent):
                        yield _sse(item)

        headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


def _sse(item: dict[str, Any]) -> str:
    data = json.dumps(plain(item), default=str, ensure_ascii=False)
    return f"id: {item['id']}\nevent: message\ndata: {data}\n\n"
