"""rq-scheduler's jobs, read and planned as ``rq_scheduler.Scheduler.enqueue_job`` (0.14) plans them.

A job of rq-scheduler is an RQ job hash (``<p>:job:<id>``, status ``scheduled``) plus a member of the ZSET
``<p>:scheduler:scheduled_jobs`` scored by its next run (integer epoch seconds). Its ``meta`` says what
happens after a run: ``interval`` (seconds; next = time of the run + interval) and/or ``repeat`` (runs left),
or ``cron_string`` (+ ``use_local_timezone``); neither is a one-shot (removed once run).

``meta`` and ``data`` are pickled by RQ's default serializer. They are read here with a pickle loader that
refuses every global (:func:`plain_loads`): plain data (numbers, text, lists, dicts...) loads, nothing can
execute. Jobs whose meta holds anything else are read with ``pickle`` only when pickle is accepted
(``ASYNCSCHED_ACCEPT_PICKLE``), otherwise they are listed with the reason and left to ``rqscheduler``.

Cron strings are evaluated as rq-scheduler 0.14 (with ``crontab`` >= 1.0) does: on the wall clock of the
*process's local time zone* (``TZ``), whatever ``use_local_timezone`` says (that flag only changes the zone
the computed datetime is expressed in, not the instant): ``crontab``'s dialect (``[sec] min hour day month
weekday [year]``, day and weekday both required when both are restricted) is mapped onto ``croniter``.
"""

from __future__ import annotations

import calendar
import contextlib
import io
import json
import pickle
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any

from croniter import croniter

from ..rq import codec
from ..rq.jobhash import JobField
from ..rq.serializers import Format, detect

__all__ = ["FIRE", "REMOVE", "SKIP", "Plan", "RQSchedulerJob", "cron_next", "plain_loads", "plan"]

FIRE, SKIP, REMOVE = "fire", "skip", "gone"
"""Plan modes: enqueue and reschedule; reschedule only (previous run still queued/started); drop."""

AGENT = "rq-scheduler"
"""Agent name the runs of rq-scheduler's jobs carry in the execution history and events."""


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"it holds a {module}.{name} (only plain data is read without pickle)")


def plain_loads(payload: bytes) -> Any:
    """Unpickle ``payload`` if it is plain data (no class, function or other global); safe on any input."""
    return _PlainUnpickler(io.BytesIO(payload)).load()


def _loads(payload: bytes, accept_pickle: bool) -> tuple[Any, Format]:
    fmt = detect(payload)
    if fmt == Format.JSON:
        return json.loads(payload), fmt
    try:
        return plain_loads(payload), fmt
    except Exception as exc:
        if not accept_pickle:
            raise ValueError(
                f"{exc}; set ASYNCSCHED_ACCEPT_PICKLE=true if its producers are trusted"
            ) from None
    return pickle.loads(payload), fmt


def _dumps(value: Any, fmt: Format) -> bytes:
    if fmt == Format.JSON:
        return json.dumps(value).encode()
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode(errors="replace")


@dataclass(frozen=True)
class RQSchedulerJob:
    """One entry of rq-scheduler's set, with what its hash says (``problem`` says why it cannot be fired)."""

    id: str
    score: float
    exists: bool = True
    status: str | None = None
    queue: str | None = None
    description: str | None = None
    function: str | None = None
    args: tuple[Any, ...] | None = None
    kwargs: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    meta_raw: bytes | None = None
    meta_format: Format = Format.PICKLE
    fields: Mapping[str, bytes] = field(default_factory=dict)
    problem: str | None = None
    data_problem: str | None = None
    """Why ``args``/``kwargs`` could not be read (they only matter for display and import)."""

    @property
    def next_run_at(self) -> datetime:
        return datetime.fromtimestamp(self.score, UTC)

    @property
    def interval(self) -> int | None:
        value = self.meta.get("interval")
        return int(value) if value else None

    @property
    def repeat(self) -> int | None:
        value = self.meta.get("repeat")
        return None if value is None else int(value)

    @property
    def cron_string(self) -> str | None:
        value = self.meta.get("cron_string")
        return str(value) if value else None

    @property
    def enqueued_for_this_tick(self) -> bool:
        """Whether a run was enqueued at or after the time this entry is due (so this tick has run)."""
        enqueued = codec.parse_ts(self.fields.get(JobField.ENQUEUED_AT))
        return enqueued is not None and enqueued.timestamp() >= self.score

    @property
    def kind(self) -> str:
        """``interval``, ``cron`` or ``once`` (the order rq-scheduler tests them in)."""
        return "interval" if self.interval else "cron" if self.cron_string else "once"

    @classmethod
    def from_hash(
        cls, job_id: str, score: float, raw: Mapping[bytes, bytes], *, accept_pickle: bool
    ) -> RQSchedulerJob:
        if not raw:
            return cls(job_id, score, exists=False, problem="job hash missing (rq-scheduler drops it)")
        fields = codec.text_hash(raw)
        values: dict[str, Any] = {
            "status": _text(fields.get(JobField.STATUS)),
            "queue": _text(fields.get(JobField.ORIGIN)) or None,
            "description": _text(fields.get(JobField.DESCRIPTION)),
            "fields": fields,
        }
        problems: list[str] = []
        meta_raw = fields.get(JobField.META)
        if meta_raw:
            try:
                meta, fmt = _loads(meta_raw, accept_pickle)
                if not isinstance(meta, dict):
                    raise ValueError(f"meta is a {type(meta).__name__}, not a mapping")
                values.update(meta=meta, meta_raw=meta_raw, meta_format=fmt)
            except Exception as exc:
                problems.append(f"meta unreadable: {exc}")
        try:
            payload = fields.get(JobField.DATA) or b""
            with contextlib.suppress(zlib.error):  # RQ reads uncompressed data too
                payload = zlib.decompress(payload)
            value, _fmt = _loads(payload, accept_pickle)
            func, _instance, args, kwargs = value
            values.update(function=str(func), args=tuple(args), kwargs=dict(kwargs))
        except Exception as exc:  # only for display and import: the worker reads data itself
            desc = values["description"] or ""
            values.update(function=desc.split("(", 1)[0] or None, data_problem=str(exc) or type(exc).__name__)
        if not values["queue"]:
            problems.append("job has no origin (queue)")
        if fields.get(JobField.DEPENDENCY_IDS) or fields.get(JobField.DEPENDENCY_ID):
            problems.append("job has dependencies (depends_on), which asyncsched does not fire")
        job = cls(job_id, score, problem="; ".join(problems) or None, **values)
        if job.problem is None and job.cron_string:
            try:
                cron_next(job.cron_string, datetime.now(UTC))
            except ValueError as exc:
                return cls(job_id, score, problem=str(exc), **values)
        return job

    def to_dict(self) -> dict[str, Any]:
        """The API's and CLI's view of the job (``source`` marks it as rq-scheduler's)."""
        return {
            "id": self.id,
            "source": "rq-scheduler",
            "kind": self.kind,
            "function": self.function,
            "description": self.description,
            "args": list(self.args) if self.args is not None else None,
            "kwargs": self.kwargs,
            "queue": self.queue,
            "interval": self.interval,
            "repeat": self.repeat,
            "cron_string": self.cron_string,
            "use_local_timezone": bool(self.meta.get("use_local_timezone")),
            "next_run_at": self.next_run_at,
            "status": self.status,
            "last_run_at": codec.parse_ts(self.fields.get(JobField.ENDED_AT)),
            "problem": self.problem,
        }


def _croniter_form(cron_string: str) -> tuple[str, bool]:
    """``crontab``'s ``[sec] min hour day month weekday [year]`` as croniter arguments."""
    aliases = {
        "@yearly": "0 0 1 1 *",
        "@annually": "0 0 1 1 *",
        "@monthly": "0 0 1 * *",
        "@weekly": "0 0 * * 0",
        "@daily": "0 0 * * *",
        "@hourly": "0 * * * *",
    }
    parts = aliases.get(cron_string, cron_string).split()
    if len(parts) == 5:
        return " ".join(parts), False
    if len(parts) == 6:  # crontab: minute ... weekday year
        return " ".join(["0", *parts]), True
    if len(parts) == 7:  # crontab: second minute ... weekday year
        return " ".join(parts), True
    raise ValueError(f"cron_string {cron_string!r} has {len(parts)} fields; rq-scheduler takes 5 to 7")


def cron_next(cron_string: str, now: datetime, zone: tzinfo | None = None) -> int:
    """The next run (epoch s) after ``now``, as ``rq_scheduler.utils.get_next_scheduled_time`` computes it.

    ``zone`` is the wall clock the string is read on; ``None`` is the process's local time (as rq-scheduler).
    """
    expr, seconds_first = _croniter_form(cron_string)
    wall = now.astimezone(zone).replace(tzinfo=None, microsecond=0)
    try:
        it = croniter(expr, wall, day_or=False, second_at_beginning=seconds_first)
        nxt: datetime = it.get_next(datetime)
    except Exception as exc:
        raise ValueError(f"cron_string {cron_string!r} is invalid: {exc}") from None
    aware = nxt.replace(tzinfo=zone) if zone is not None else nxt.astimezone(UTC)  # naive = local, as RQ
    return calendar.timegm(aware.utctimetuple())


@dataclass(frozen=True)
class Plan:
    mode: str
    next_score: int | None
    new_meta: bytes | None


def plan(job: RQSchedulerJob, now: datetime, zone: tzinfo | None = None) -> Plan:
    """What ``Scheduler.enqueue_job`` would do with ``job`` at ``now``: repeat countdown, next run.

    Two differences: while the job's previous run is still ``queued`` or ``started``, this run is skipped
    (rescheduled without enqueueing and without counting down ``repeat``): re-pushing a job id whose run is
    pending would run one job hash twice at once. And a run already enqueued for this tick (``enqueued_at``
    at or after the due time: ``rqscheduler`` stopped between pushing the job and moving it in its set) is
    skipped the same way, whatever its status now: rqscheduler counted ``repeat`` down before it pushed.
    """
    if not job.exists:
        return Plan(REMOVE, None, None)
    meta = dict(job.meta)
    repeat, interval, cron = meta.get("repeat"), meta.get("interval"), meta.get("cron_string")
    busy = job.status in ("queued", "started") or job.enqueued_for_this_tick
    if repeat and not busy:
        meta["repeat"] = int(repeat) - 1
    now_s = calendar.timegm(now.astimezone(UTC).utctimetuple())
    nxt: int | None = None
    if interval:
        if repeat is None or meta["repeat"] != 0:
            nxt = now_s + int(interval)
    elif cron and (repeat is None or meta["repeat"] != 0):
        nxt = cron_next(str(cron), now, zone)
    new_meta = None if meta == job.meta else _dumps(meta, job.meta_format)
    return Plan(SKIP if busy else FIRE, nxt, new_meta)
