"""``GET /rq-scheduler/jobs``: rq-scheduler's schedules, which asyncsched's scheduler fires too.

They are not tasks (no id of ours, not editable here): ``asyncsched tasks import --from-rq-scheduler``
turns them into tasks. Each item carries ``source: "rq-scheduler"`` and, when asyncsched cannot fire it,
the reason in ``problem``. ``rqscheduler_instances`` names live ``rqscheduler`` processes on the same Redis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from ..rq.keys import RQKeys

if TYPE_CHECKING:
    from ._base import HandlerBase

__all__ = ["RQ_SCHEDULER_SCHEMAS", "list_rq_scheduler_jobs"]

_dt = {"type": ["string", "null"], "format": "date-time"}
_opt_str = {"type": ["string", "null"]}
_opt_int = {"type": ["integer", "null"]}

RQ_SCHEDULER_SCHEMAS: dict[str, dict[str, Any]] = {
    "RQSchedulerJob": {
        "type": "object",
        "properties": {
            "id": {"type": "string", "description": "The RQ job id (also its execution history's job_id)."},
            "source": {"type": "string", "enum": ["rq-scheduler"]},
            "kind": {"type": "string", "enum": ["interval", "cron", "once"]},
            "function": _opt_str,
            "description": _opt_str,
            "args": {"type": ["array", "null"]},
            "kwargs": {"type": ["object", "null"]},
            "queue": _opt_str,
            "interval": {**_opt_int, "description": "Seconds between runs."},
            "repeat": {**_opt_int, "description": "Runs left (null: forever)."},
            "cron_string": _opt_str,
            "use_local_timezone": {"type": "boolean"},
            "next_run_at": _dt,
            "status": _opt_str,
            "last_run_at": _dt,
            "problem": {**_opt_str, "description": "Why asyncsched does not fire it (null: it does)."},
        },
    },
    "RQSchedulerJobList": {
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/RQSchedulerJob"}},
            "total": {"type": "integer"},
            "rqscheduler_instances": {"type": "array", "items": {"type": "string"}},
        },
    },
}


async def list_rq_scheduler_jobs(
    handlers: HandlerBase, request: Request, params: dict[str, Any], body: None
) -> dict[str, Any]:
    """The handler (bound as ``Handlers.list_rq_scheduler_jobs``)."""
    from ..scheduler._rqscheduler import list_rq_scheduler_jobs as read_jobs
    from ..scheduler._rqscheduler import live_rqschedulers

    settings = handlers.services.settings
    redis = await handlers.services.redis()
    jobs = await read_jobs(redis, settings.key_prefix, accept_pickle=settings.accept_pickle)
    return {
        "items": [job.to_dict() for job in jobs],
        "total": await redis.zcard(RQKeys(settings.key_prefix).rq_scheduler_jobs),
        "rqscheduler_instances": await live_rqschedulers(redis, settings.key_prefix),
    }
