"""Scheduled tasks: cron and interval triggers, ``tasks.yaml`` loading, and a replica-safe firing loop.

* :class:`TaskScheduler` — register/edit/list tasks (SQL is the source of truth) and fire them into the
  queue; any number of replicas share one Redis and fire each tick exactly once.
* :func:`parse_schedule` — validate a schedule, get a :class:`Trigger` (``next_after``, ``describe``).
* :func:`load_tasks` / :func:`validate_file` — the YAML format, every problem with file, line, task, field.

See ``docs/scheduler.md`` for the YAML reference, the DST rule and the misfire policies.
"""

from ._definition import FIELDS, MisfirePolicy, build_task, check_function, task_trigger
from ._scheduler import Firing, TaskScheduler, job_id_for
from ._triggers import (
    CronTrigger,
    DateTrigger,
    IntervalTrigger,
    Trigger,
    format_interval,
    parse_interval,
    parse_schedule,
)
from ._yaml import load_tasks, validate_file

__all__ = [
    "FIELDS",
    "CronTrigger",
    "DateTrigger",
    "Firing",
    "IntervalTrigger",
    "MisfirePolicy",
    "TaskScheduler",
    "Trigger",
    "build_task",
    "check_function",
    "format_interval",
    "job_id_for",
    "load_tasks",
    "parse_interval",
    "parse_schedule",
    "task_trigger",
    "validate_file",
]
