"""rq-scheduler's jobs in the CLI: listed by ``asyncsched tasks list``, turned into tasks by
``asyncsched tasks import --from-rq-scheduler``.

The import writes a ``tasks.yaml`` file (``--dry-run`` prints it instead) and registers it, as
``asyncsched scheduler --tasks FILE`` would. rq-scheduler's jobs stay in its set unless ``--remove`` is
given; while they stay, the imported tasks are written ``enabled: false`` so nothing runs twice. With
``--remove`` everything happens under rq-scheduler's lock (no firer, ours or ``rqscheduler``, is mid-pass):
read, write, register, then remove exactly the jobs imported, each only if it did not move meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from .._redis.scripts import ScriptRegistry
from ..config import Settings
from ..exceptions import ConfigurationError
from ..rq.jobhash import JobField
from ._common import Subcommands

__all__ = ["add_parser", "handle_import", "print_listing"]

_RESERVED = {"interval", "repeat", "cron_string", "use_local_timezone"}
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
_REMOVE = (
    "local s = redis.call('ZSCORE', KEYS[1], ARGV[1]) "
    "if s and tonumber(s) == tonumber(ARGV[2]) then return redis.call('ZREM', KEYS[1], ARGV[1]) end return 0"
)


def add_parser(tasks_sub: Subcommands) -> None:
    parser = tasks_sub.add_parser(
        "import", help="turn rq-scheduler's jobs into scheduled tasks (a tasks.yaml file, registered)"
    )
    parser.add_argument("--from-rq-scheduler", action="store_true", required=True, help="the source")
    parser.add_argument("-o", "--output", default="tasks-rq-scheduler.yaml", metavar="FILE")
    parser.add_argument("--dry-run", action="store_true", help="print the YAML; change nothing")
    parser.add_argument("--remove", action="store_true", help="remove the imported jobs from rq-scheduler")
    parser.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    parser.add_argument("--agent", help="agent of the tasks (env ASYNCSCHED_AGENT)")
    parser.add_argument("--timezone", help="zone of cron strings (default: this machine's, as rqscheduler)")
    parser.add_argument("--no-import", action="store_true", help="do not import the task functions")


def handle_import(args: argparse.Namespace, settings: Settings) -> int:
    if not args.dry_run and Path(args.output).exists() and not args.force:
        raise ConfigurationError(
            f"{args.output} exists; pass --force to overwrite it, or -o to write elsewhere"
        )
    return asyncio.run(_import(args, settings))


# ---------------------------------------------------------------------------------------------- listing
async def print_listing(settings: Settings) -> int:
    """Print rq-scheduler's jobs (if any) under the tasks table; returns how many there are."""
    from .._redis import create_redis
    from ..scheduler._rqscheduler import list_rq_scheduler_jobs

    redis = create_redis(settings.redis_url)
    try:
        jobs = await list_rq_scheduler_jobs(
            redis, settings.key_prefix, accept_pickle=settings.accept_pickle, limit=10_000
        )
    except Exception as exc:
        print(f"\nrq-scheduler's jobs: not read (Redis unavailable: {type(exc).__name__}: {exc})")
        return 0
    finally:
        await redis.aclose()
    if not jobs:
        return 0
    rows = [("RQ-SCHEDULER JOB", "KIND", "SCHEDULE", "QUEUE", "NEXT RUN", "FUNCTION")]
    for job in jobs:
        schedule = (f"every {job.interval} s" if job.kind == "interval" else job.cron_string or "once") + (
            f", {job.repeat} run(s) left" if job.repeat is not None else ""
        )
        when = job.next_run_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        what = f"NOT FIRED: {job.problem}" if job.problem else job.function or job.description or "?"
        rows.append((job.id, job.kind, schedule, job.queue or "-", when, what))
    print(f"\nrq-scheduler's jobs ({len(jobs)}; fired by asyncsched's scheduler too):")
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return len(jobs)


# ---------------------------------------------------------------------------------------------- mapping
def local_zone_name() -> str | None:
    """The IANA name of this machine's local zone (rq-scheduler reads cron strings in it), if known."""
    tz = os.environ.get("TZ", "").lstrip(":")
    if tz:
        try:
            ZoneInfo(tz)
            return tz
        except Exception:
            return None
    link = os.path.realpath("/etc/localtime")
    if "zoneinfo/" in link:
        return link.split("zoneinfo/", 1)[1]
    return "UTC" if datetime.now().astimezone().utcoffset() == timedelta(0) else None


def _function(func: str, check_import: bool) -> str:
    """RQ's ``module.attr`` as ``module:attr``, resolved by the one function rule (``docs/security.md``)."""
    from ..queue._functions import reference_for

    return reference_for(func, check_import=check_import)


def _cron(cron: str) -> str:
    """crontab's dialect as ours, or ValueError saying what does not carry over."""
    parts = cron.split()
    if cron.startswith("@"):
        return cron
    if len(parts) in (6, 7):
        if parts[-1] != "*":
            raise ValueError(
                f"cron_string {cron!r} restricts the year, which asyncsched's cron has no field for"
            )
        parts = parts[:-1]
        if len(parts) == 6:  # seconds first -> ours: seconds last
            parts = [*parts[1:], parts[0]]
    if len(parts) not in (5, 6):
        raise ValueError(f"cron_string {cron!r} has {len(cron.split())} fields")
    if parts[2] not in ("*", "?") and parts[4] not in ("*", "?"):
        raise ValueError(
            f"cron_string {cron!r} restricts both day and weekday: rq-scheduler requires both to match, "
            "asyncsched's cron (like Vixie cron) either"
        )
    return " ".join(parts)


def to_definition(
    job: Any, *, zone: str | None, enabled: bool, check_import: bool
) -> tuple[dict[str, Any], list[str]]:
    """One job as a tasks.yaml entry plus comments (what does not carry over); ValueError if it cannot be."""
    if job.problem:
        raise ValueError(job.problem)
    if not job.function or job.args is None or job.kwargs is None:
        raise ValueError(f"its function and arguments cannot be read ({job.data_problem})")
    try:
        json.dumps([job.args, job.kwargs], allow_nan=False)
    except (TypeError, ValueError):
        raise ValueError("its arguments are not plain JSON/YAML data") from None
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", job.id).lstrip(".-")[:200] or "rq-scheduler-job"
    out: dict[str, Any] = {"name": name, "description": job.description, "enabled": enabled}
    notes = [f"rq-scheduler job {job.id}, next run {job.next_run_at.isoformat()}"]
    if job.kind == "interval":
        from ..scheduler import format_interval

        out.update(type="interval", schedule=format_interval(timedelta(seconds=job.interval)))
        out["start"] = job.next_run_at.isoformat()  # keeps the phase: the next run stays where it was
    elif job.kind == "cron":
        if zone is None:
            raise ValueError(
                "the local time zone is unknown (rq-scheduler reads cron in it): pass --timezone"
            )
        out.update(type="cron", schedule=_cron(job.cron_string), timezone=zone)
    else:
        out.update(type="date", schedule=job.next_run_at.isoformat())
    if job.repeat is not None:
        notes.append(f"repeat: {job.repeat} run(s) left - NOT carried over, the task repeats until disabled")
    out.update(function=_function(job.function, check_import), args=list(job.args), kwargs=dict(job.kwargs))
    out["queue"] = job.queue
    timeout = job.fields.get(JobField.TIMEOUT)
    if timeout and timeout.decode().lstrip("-").isdigit() and int(timeout) > 0:
        out["timeout"] = int(timeout)
    extra = sorted(set(job.meta) - _RESERVED)
    if extra:
        notes.append(f"meta keys {', '.join(extra)} - not carried over")
    notes.extend(
        f"{field}={job.fields[field].decode()} - not carried over"
        for field in (JobField.RESULT_TTL, JobField.TTL, JobField.FAILURE_TTL, JobField.RETRIES_LEFT)
        if job.fields.get(field) not in (None, b"")
    )
    return out, notes


def render(entries: list[tuple[dict[str, Any], list[str]]], removed: bool) -> str:
    head = [
        f"# Imported from rq-scheduler by `asyncsched tasks import`, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        "# rq-scheduler's jobs were removed from its set: these tasks replace them."
        if removed
        else "# rq-scheduler's jobs are still in its set (and fire): these tasks stay disabled until you\n"
        "# re-run the import with --remove (or cancel the jobs and enable the tasks).",
        "tasks:",
    ]
    import yaml  # here: imported at the top, it cost every CLI process (a worker too) ~3.5 MB of memory

    body: list[str] = []
    for definition, notes in entries:
        body.extend(f"  # {note}" for note in notes)
        text = yaml.safe_dump([definition], sort_keys=False, allow_unicode=True, width=1000)
        body.extend("  " + line for line in text.rstrip("\n").splitlines())
    return "\n".join(head + body) + "\n"


# ---------------------------------------------------------------------------------------------- import
async def _take_lock(redis: Any, key: str, token: str, wait: float = 30.0) -> None:
    deadline = time.monotonic() + wait
    while not await redis.set(key, token, ex=60, nx=True):
        if time.monotonic() > deadline:
            raise ConfigurationError(
                f"{key} stayed taken for {wait:g} s (an rqscheduler or asyncsched scheduler mid-pass, or a "
                "dead one: its lock expires by itself); nothing was changed, try again"
            )
        await asyncio.sleep(0.1)


async def _remove(redis: Any, key: str, jobs: list[Any]) -> list[Any]:
    """Remove each job from rq-scheduler's set if it is still at the time it was read; the removed ones."""
    scripts = ScriptRegistry(redis, {"remove": _REMOVE})
    return [job for job in jobs if await scripts.run("remove", [job.id, repr(job.score)], [key])]


async def _register(path: Path, agent: str, settings: Settings, redis: Any, check_import: bool) -> int:
    from ..scheduler import TaskScheduler
    from ..store import Database

    async with Database(settings=settings) as db, TaskScheduler(redis, settings=settings, db=db) as scheduler:
        await db.check()
        tasks = await scheduler.load_tasks_from_yaml(path, agent, check_import=check_import)
        source = tasks[0].source if tasks else None
        return len(await scheduler.register_tasks(tasks, prune_source=source))


def _entries(jobs: list[Any], args: argparse.Namespace, zone: str | None) -> tuple[list[Any], list[Any]]:
    entries, imported, names = [], [], set()
    for job in jobs:
        try:
            definition, notes = to_definition(
                job, zone=zone, enabled=args.remove, check_import=not args.no_import
            )
        except ValueError as exc:
            print(f"asyncsched: rq-scheduler job {job.id} is not imported: {exc}", file=sys.stderr)
            continue
        base, n = definition["name"], 1
        while definition["name"] in names:
            n += 1
            definition["name"] = f"{base[:190]}-{n}"
        names.add(definition["name"])
        entries.append((definition, notes))
        imported.append(job)
    return entries, imported


async def _import(args: argparse.Namespace, settings: Settings) -> int:
    from .._redis import check_redis, create_redis
    from ..rq.keys import RQKeys
    from ..scheduler._rqscheduler import list_rq_scheduler_jobs

    if args.timezone:
        try:
            ZoneInfo(args.timezone)
        except Exception:
            raise ConfigurationError(f"--timezone {args.timezone!r} is not an IANA time zone") from None
    zone = args.timezone or local_zone_name()
    path = Path(args.output)
    keys = RQKeys(settings.key_prefix)
    redis = create_redis(settings.redis_url)
    token = f"asyncsched-import:{os.getpid()}:{time.time():.6f}"
    locked = False
    try:
        await check_redis(redis, settings.redis_url)
        if args.remove and not args.dry_run:
            await _take_lock(redis, keys.rq_scheduler_lock, token)
            locked = True
        jobs = await list_rq_scheduler_jobs(
            redis, settings.key_prefix, accept_pickle=settings.accept_pickle, limit=100_000
        )
        entries, imported = _entries(jobs, args, zone)
        failed = len(jobs) - len(imported)
        if not entries:
            print("no rq-scheduler job to import" + (f" ({failed} could not be)" if failed else ""))
            return 1 if failed else 0
        text = render(entries, removed=args.remove)
        if args.dry_run:
            print(text, end="")
            return 1 if failed else 0
        removed: list[Any] = []
        if args.remove:  # out of rq-scheduler's set first (under its lock), put back if registering fails
            removed = await _remove(redis, keys.rq_scheduler_jobs, imported)
            await redis.eval(_RELEASE, 1, keys.rq_scheduler_lock, token)
            locked = False
        await asyncio.to_thread(path.write_text, text, encoding="utf-8")
        try:
            count = await _register(path, args.agent or settings.agent, settings, redis, not args.no_import)
        except BaseException:
            await asyncio.to_thread(path.unlink, missing_ok=True)
            if removed:
                await redis.zadd(keys.rq_scheduler_jobs, {j.id: j.score for j in removed}, nx=True)
            raise
    finally:
        if locked:
            await redis.eval(_RELEASE, 1, keys.rq_scheduler_lock, token)
        await redis.aclose()
    print(f"wrote {path} and registered {count} task(s) for agent {args.agent or settings.agent}")
    if args.remove:
        print(f"removed {len(removed)} job(s) from rq-scheduler's set (their job hashes are kept)")
    else:
        print("the tasks are disabled while rq-scheduler's jobs stay; re-run with --remove to switch over")
    return 1 if failed else 0
