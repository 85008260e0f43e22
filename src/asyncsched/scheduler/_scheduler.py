"""``TaskScheduler``: the API over scheduled tasks (SQL) and the firing loop (Redis index -> queue).

Writes go to SQL first (the source of truth), then to the Redis index, then a change notice is published so
every replica reloads within a second. Firing: the earliest due ticks are read from the index, each is
claimed with one Lua script (compare-and-advance of the task's entry) and enqueued with the job id
``sched-<task id>-<tick epoch seconds>`` and ``unique=True``, so a tick runs once whoever claims it, even
after a crash between claim and enqueue (the claim leaves a lease that another replica takes over).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from types import TracebackType
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from .. import _tracing
from .._misuse import async_api
from .._protocols import RunQueue
from .._redis import create_redis
from .._supervise import Supervised
from ..config import Settings, get_settings
from ..exceptions import BrokenTask, DuplicateTask, InvalidValue
from ..store.models import ScheduledTask
from ._bulk import any_stored, detached, first_clash, index_new, insert_new, prepare_new
from ._definition import build_task, overlap_of, policy_of, task_trigger
from ._index import DROP, Overlap, ScheduleIndex, from_ms, signature, to_ms
from ._misfire import plan
from ._rows import (
    TaskKey,
    copy_task,
    find_key,
    find_task,
    load_checked,
    readable_tasks,
    row_problems,
    upsert_tasks,
    utc,
)
from ._triggers import Trigger
from ._yaml import load_tasks

__all__ = ["Firing", "TaskScheduler"]

log = logging.getLogger("asyncsched.scheduler")

LEASE = timedelta(seconds=60)
"""How long a claimed tick may stay un-enqueued before another replica takes it over."""
MAX_IDLE = 5.0
_REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)
"""An idle scheduler wakes at the next tick, on a change notice, or after this many seconds at most."""
FLUSH_INTERVAL = 1.0
"""last_run_at / next_run_at reach SQL in batches this often."""


class _Database(Protocol):
    @property
    def engine(self) -> AsyncEngine: ...

    def session(self) -> Any: ...


@dataclass(frozen=True)
class Firing:
    """One run the scheduler handed to the queue."""

    task_id: str
    task_name: str
    agent_name: str
    tick: datetime
    job_id: str


def job_id_for(task_id: str, tick: datetime) -> str:
    """The job id of one tick of one task: the same on every replica, so the queue dedupes it."""
    return f"sched-{task_id}-{int(tick.timestamp())}"


class TaskScheduler:
    """Scheduled tasks: register and edit them (any process), and fire them (``fire=True`` or :meth:`run`).

    ::

        async with TaskScheduler() as scheduler:
            for task in await scheduler.load_tasks_from_yaml("tasks.yaml", agent_name="email-agent"):
                await scheduler.register_task(task)
            await scheduler.run()  # fire until cancelled (any number of replicas may do this)

    ``db`` is any object with ``.engine`` and ``.session()`` (``asyncsched.store.Database``); without it an
    engine is made from ``settings.database_url`` and migrated on first use (with ``db`` given, its
    tables must exist: ``asyncsched db upgrade``, :func:`asyncsched.init_db` or ``Database.migrate``).
    ``queue`` is the ``TaskQueue`` runs go to (default: one on ``redis``).
    Methods also work without ``async with``; resources open on first use and close in :meth:`aclose`.
    """

    def __init__(
        self,
        redis: str | aioredis.Redis | None = None,
        *,
        settings: Settings | None = None,
        db: _Database | None = None,
        queue: RunQueue | None = None,
        fire: bool = False,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        _tracing.configure(self.settings)
        self._redis_arg = redis
        self._db = db
        self._queue: RunQueue | None = queue
        self._fire = fire
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self._redis: aioredis.Redis | None = None
        self._own_redis = False
        self._engine: AsyncEngine | None = None
        self._sessions: Any = None
        self._index: ScheduleIndex | None = None
        self._cache: dict[str, tuple[ScheduledTask, Trigger | None]] = {}
        self._changed = asyncio.Event()
        self._version = -1
        self._sql_updates: dict[str, tuple[datetime | None, datetime | None]] = {}
        # Next tick of each task as this replica last planned it (with the schedule's signature): SQL lags
        # behind by up to FLUSH_INTERVAL (more during a database outage), so an index rebuilt after a Redis
        # restart starts from whichever is later and never fires a tick a second time.
        self._planned: dict[str, tuple[str, datetime | None]] = {}
        self._redis_down = False
        self._sql_down = False
        self._runner: Supervised | None = None
        self._open_lock = asyncio.Lock()
        self._opened = False
        self._listener_ready = asyncio.Event()
        self.metrics: Any = None  # an asyncsched._metrics.ProcessMetrics observing each tick fired here

    # ------------------------------------------------------------------ lifetime
    async def __aenter__(self) -> TaskScheduler:
        await self._open()
        if self._fire:  # supervised: a crash is logged and the loop restarted with backoff
            self._runner = Supervised("asyncsched-scheduler", self.run).start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _open(self) -> None:
        async with self._open_lock:
            if self._opened:
                return
            if isinstance(self._redis_arg, aioredis.Redis):
                self._redis = self._redis_arg
            else:
                self._redis = create_redis(self._redis_arg or self.settings.redis_url)
                self._own_redis = True
            if self._db is not None:
                self._engine = self._db.engine
                self._sessions = self._db.session
            else:
                # Our own handle on the configured database, created or migrated on first use as by every
                # entry point (any dialect; concurrent first uses are serialised by the store).
                from ..store import Database

                owned = Database(settings=self.settings, auto_migrate=True)
                await owned.__aenter__()
                self._owned_db = owned
                self._engine = owned.engine
                self._sessions = owned.session
            self._index = ScheduleIndex(self._redis, self.settings.key_prefix)
            self._opened = True

    async def aclose(self) -> None:
        """Stop firing, write pending run times to SQL, close what this scheduler opened."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.stop()
        if not self._opened:
            return
        with contextlib.suppress(Exception):
            await self._flush()
        if self._queue_owned and self._queue is not None:
            with contextlib.suppress(Exception):
                await self._queue.__aexit__(None, None, None)
            self._queue = None
        if self._owned_db is not None:
            await self._owned_db.aclose()
            self._owned_db = None
        if self._own_redis and self._redis is not None:
            await self._redis.aclose()
        self._opened = False

    _queue_owned = False
    _owned_db: Any = None

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[AsyncSession]:
        await self._open()
        async with self._sessions() as session:
            yield session

    @property
    def index(self) -> ScheduleIndex:
        assert self._index is not None, "scheduler not opened"
        return self._index

    # ------------------------------------------------------------------ definitions
    @async_api("TaskScheduler")
    async def load_tasks_from_yaml(
        self, path: str | os.PathLike[str], agent_name: str | None = None, *, check_import: bool = True
    ) -> list[ScheduledTask]:
        """Parse and validate a ``tasks.yaml`` file; the tasks come back unsaved (see :meth:`register_task`).

        Raises :class:`~asyncsched.exceptions.TaskDefinitionError` with every problem of the file (file, line,
        task, field); a file with any problem yields nothing.
        """
        return await asyncio.to_thread(
            load_tasks, path, agent_name or self.settings.agent, check_import=check_import
        )

    @async_api("TaskScheduler")
    async def register_task(
        self, task: ScheduledTask | None = None, /, *, create_only: bool = False, **definition: Any
    ) -> ScheduledTask:
        """Create or update (by agent and name) one task; returns the stored task.

        Pass a :class:`ScheduledTask` (e.g. from :meth:`load_tasks_from_yaml`), or keyword fields as in
        YAML plus ``agent_name`` and optionally ``trigger=`` (an APScheduler 3 trigger or one of ours).
        Registering the same definition again changes nothing; a changed schedule re-plans from now.
        ``create_only=True`` raises :class:`DuplicateTask` instead of updating an existing task (of
        concurrent creates of one name exactly one wins, by the table's unique constraint).
        """
        if task is None:
            definition.setdefault("agent_name", self.settings.agent)
            task = await asyncio.to_thread(partial(build_task, **definition))  # imports user code
        elif definition:
            raise TypeError("pass either a ScheduledTask or keyword fields, not both")
        stored = await self.register_tasks([task], create_only=create_only)
        return stored[0]

    async def register_tasks(
        self, tasks: Sequence[ScheduledTask], *, prune_source: str | None = None, create_only: bool = False
    ) -> list[ScheduledTask]:
        """Create or update every task in one transaction (all or nothing).

        With ``prune_source``, tasks of the same agents whose ``source`` is that file and which are no longer
        in ``tasks`` are deleted (a task removed from a YAML file disappears on the next load).
        """
        for _attempt in range(3):
            try:
                async with self._session() as session, session.begin():
                    stored, removed = await upsert_tasks(
                        session, tasks, prune_source, self.clock(), create_only=create_only
                    )
                break
            except IntegrityError as exc:  # another process inserted the same (agent, name): update it
                if create_only:
                    names = ", ".join(f"{t.agent_name}/{t.name}" for t in tasks)
                    raise DuplicateTask(f"a task with this agent and name already exists ({names})") from None
                error = exc
        else:
            raise DuplicateTask(f"cannot store the task(s): {str(error.orig).splitlines()[0]}") from None
        for task_id in removed:
            await self.index.drop(task_id)
            self._cache.pop(task_id, None)
        for task in stored:
            await self._sync_index(task)
        await self.index.notify()
        return stored

    async def add_tasks(self, tasks: Sequence[ScheduledTask]) -> list[str]:
        """Create many new tasks in one transaction (all or nothing); returns their ids, in order.

        The bulk path of :meth:`register_task`: each task is validated as a single add (build them with
        :func:`build_task`); a name given twice or already stored raises :class:`DuplicateTask` and nothing is
        stored. Rows go in with multi-row INSERTs and the Redis index with pipelined writes, both in chunks
        (100,000 schedules in seconds, see ``docs/performance.md``).
        """
        return [row["id"] for row in await self._add_new(tasks)]

    async def _add_new(self, tasks: Sequence[ScheduledTask]) -> list[dict[str, Any]]:
        rows = prepare_new(tasks, self.clock())
        try:
            async with self._session() as session, session.begin():
                await insert_new(session, rows)
        except IntegrityError as exc:  # a stored name (or a concurrent add of one): name it
            async with self._session() as session:
                clash = await first_clash(session, rows)
            raise clash or DuplicateTask(f"cannot store the tasks: {str(exc.orig).splitlines()[0]}") from None
        await index_new(self.index, rows)
        await self.index.notify()
        return rows

    @async_api("TaskScheduler")
    async def register_file(
        self, path: str | os.PathLike[str], agent_name: str | None = None, *, prune: bool = True
    ) -> list[ScheduledTask]:
        """Load, validate and register every task of a YAML file in one transaction (nothing on any error).

        With ``prune`` (default) tasks previously loaded from this file but no longer in it are deleted.
        """
        tasks = await self.load_tasks_from_yaml(path, agent_name)
        source = tasks[0].source if tasks else os.path.abspath(path)  # noqa: ASYNC240 - no I/O
        if tasks and not any(t.id for t in tasks):
            async with self._session() as session:
                first_load = not await any_stored(session, tasks, source)
            if first_load:  # nothing to update or prune: the bulk path (a concurrent load: the row path)
                with contextlib.suppress(DuplicateTask):
                    return detached(await self._add_new(tasks))
        return await self.register_tasks(tasks, prune_source=source if prune else None)

    async def _sync_index(self, task: ScheduledTask) -> None:
        """Align the Redis index with one stored task (keeps progress if its schedule is unchanged)."""
        if not task.enabled or task.next_run_at is None:
            await self.index.drop(task.id)
            return
        await self.index.sync(task.id, signature(task), to_ms(utc(task.next_run_at)))

    @async_api("TaskScheduler")
    async def get_task(self, id_or_name: str, agent_name: str | None = None) -> ScheduledTask:
        """One task by id, or by name (within ``agent_name`` when given). Raises :class:`TaskNotFound`."""
        async with self._session() as session:
            return copy_task(await find_task(session, id_or_name, agent_name))

    @async_api("TaskScheduler")
    async def list_tasks(self, agent_name: str | None = None) -> list[ScheduledTask]:
        """Every task (of one agent), ordered by agent and name."""
        query = select(ScheduledTask).order_by(ScheduledTask.agent_name, ScheduledTask.name)
        if agent_name is not None:
            query = query.where(ScheduledTask.agent_name == agent_name)
        async with self._session() as session:
            return [copy_task(t) for t in (await session.execute(query)).scalars()]

    async def update_task(
        self, id_or_name: str, agent_name: str | None = None, **changes: Any
    ) -> ScheduledTask:
        """Change fields of a task, validated like YAML (``schedule``, ``enabled``, ``kwargs``...)."""
        async with self._session() as session:
            current = copy_task(await find_task(session, id_or_name, agent_name))
        definition: dict[str, Any] = {
            "name": current.name,
            "description": current.description,
            "enabled": current.enabled,
            "type": current.type,
            "schedule": current.schedule,
            "timezone": current.timezone,
            "function": current.function,
            "args": current.args,
            "kwargs": current.kwargs,
            "queue": current.queue,
            **(current.options or {}),
        }
        if "options" in changes:
            definition.update(changes.pop("options") or {})
        definition.update(changes)
        check_import = "function" in changes
        build = partial(build_task, agent_name=current.agent_name, check_import=check_import, **definition)
        task = await asyncio.to_thread(build)
        task.id = current.id
        task.source = current.source
        return (await self.register_tasks([task]))[0]

    async def enable(self, id_or_name: str, agent_name: str | None = None) -> ScheduledTask:
        """Enable a task; it fires from its next tick after now."""
        return await self._set_enabled(id_or_name, agent_name, True)

    async def disable(self, id_or_name: str, agent_name: str | None = None) -> ScheduledTask:
        """Disable a task; no replica fires it until it is enabled again."""
        return await self._set_enabled(id_or_name, agent_name, False)

    async def _set_enabled(self, id_or_name: str, agent_name: str | None, enabled: bool) -> ScheduledTask:
        if enabled:
            checked = await self.checked_task(id_or_name, agent_name)
            async with self._session() as session, session.begin():
                row = await find_task(session, checked.id, None)
                if not row.enabled:
                    row.enabled = True
                    row.next_run_at = task_trigger(row).next_after(self.clock())
                task = copy_task(row)
        else:  # whatever the other columns hold: only the key and two plain columns are touched
            key = await self._key(id_or_name, agent_name)
            async with self._session() as session, session.begin():
                await session.execute(
                    update(ScheduledTask)
                    .where(ScheduledTask.id == key.id, ScheduledTask.enabled.is_(True))
                    .values(enabled=False, next_run_at=None)
                )
            task = await self._readable_or_stub(TaskKey(key.id, key.agent_name, key.name, False))
        await self._sync_index(task)
        await self.index.notify(task.id)
        return task

    async def _key(self, id_or_name: str, agent_name: str | None) -> TaskKey:
        async with self._session() as session:
            return await find_key(session, id_or_name, agent_name)

    async def _readable_or_stub(self, key: TaskKey) -> ScheduledTask:
        """The whole task of ``key``, or only its key columns when the row cannot be read."""
        try:
            return await load_checked(self._session, key)
        except BrokenTask:
            return key.stub()

    async def checked_task(self, id_or_name: str, agent_name: str | None = None) -> ScheduledTask:
        """A task that can be enabled or run as stored; :class:`BrokenTask` naming each field otherwise
        (a column that cannot be read, a schedule that no longer parses...). :class:`TaskNotFound`."""
        task = await load_checked(self._session, await self._key(id_or_name, agent_name))
        problems = row_problems(task)
        if problems:
            raise BrokenTask(problems)
        return task

    @async_api("TaskScheduler")
    async def unregister_task(self, id_or_name: str, agent_name: str | None = None) -> ScheduledTask:
        """Delete a task (by id or name); returns what was deleted (only its id, agent, name and enabled
        flag when the row could not be read). Raises :class:`TaskNotFound`. Works on any row."""
        key = await self._key(id_or_name, agent_name)
        task = await self._readable_or_stub(key)
        async with self._session() as session, session.begin():
            await session.execute(delete(ScheduledTask).where(ScheduledTask.id == key.id))
        await self.index.drop(task.id)
        self._cache.pop(task.id, None)
        await self.index.notify(task.id)
        return task

    async def next_runs(
        self, task: ScheduledTask | Trigger | str, n: int = 5, *, after: datetime | None = None
    ) -> list[datetime]:
        """The next ``n`` fire times (UTC) of a task (object, id or name) or trigger after ``after``."""
        if isinstance(task, str):
            task = await self.get_task(task)
        trigger = task if isinstance(task, Trigger) else task_trigger(task)
        return trigger.next_runs(n, after or self.clock())

    async def run_now(self, id_or_name: str | ScheduledTask, agent_name: str | None = None) -> str:
        """Enqueue one run of a task immediately, outside its schedule; returns the job id.
        :class:`BrokenTask` (naming the field) when the stored task cannot run as it is."""
        if isinstance(id_or_name, ScheduledTask):
            task = id_or_name
            problems = row_problems(task)
            if problems:
                raise BrokenTask(problems)
        else:
            task = await self.checked_task(id_or_name, agent_name)
        return await self._enqueue(task, f"sched-{task.id}-run-{uuid.uuid4().hex[:16]}", None)

    # ------------------------------------------------------------------ firing
    async def _reload(self) -> None:
        """Refresh the cache of every task from SQL (a row that cannot be read or fired is logged and left
        out: it never stops the others)."""
        cache: dict[str, tuple[ScheduledTask, Trigger | None]] = {}
        for row in await readable_tasks(self._session):
            trigger: Trigger | None = None
            reasons = [str(p) for p in row_problems(row)]
            try:
                trigger = None if reasons else task_trigger(row)
            except Exception as exc:
                reasons.append(str(exc))
            if reasons:
                log.error("task %s/%s cannot be fired: %s", row.agent_name, row.name, "; ".join(reasons))
            cache[row.id] = (row, trigger)
        self._cache = cache

    async def rebuild_index(self) -> None:
        """Make the Redis index match SQL (at start; after a Redis restart nothing is lost)."""
        await self._reload()
        now = self.clock()
        for task, trigger in self._cache.values():
            if not task.enabled or trigger is None:
                await self.index.drop(task.id)
                continue
            nxt = task.next_run_at
            planned = self._planned.get(task.id)
            if (
                planned is not None
                and planned[0] == signature(task)
                and (planned[1] is None or nxt is None or utc(planned[1]) > utc(nxt))
            ):
                nxt = planned[1]
            if nxt is None and task.last_run_at is None and planned is None:
                nxt = trigger.next_after(now)
            if nxt is None:
                await self.index.drop(task.id)
            else:
                await self.index.sync(task.id, signature(task), to_ms(utc(nxt)))
        for task_id in await self.index.indexed_ids() - set(self._cache):
            await self.index.drop(task_id)

    async def run_pending(self, now: datetime | None = None) -> list[Firing]:
        """Claim and enqueue everything due at ``now`` (default: the clock); returns what was fired here."""
        await self._open()
        now = now or self.clock()
        now_ms = to_ms(now)
        fired: list[Firing] = []
        reloaded = False
        for task_id, tick_ms in await self.index.due(now_ms):
            fired.extend(await self._fire_due(task_id, tick_ms, now, reloaded))
            reloaded = reloaded or task_id not in self._cache
        fired.extend(await self._recover(now))
        return fired

    async def _fire_due(self, task_id: str, tick_ms: int, now: datetime, reloaded: bool) -> list[Firing]:
        now_ms = to_ms(now)
        for attempt in range(2):
            entry = self._cache.get(task_id)
            if (entry is None or not entry[0].enabled) and not reloaded:
                await self._reload()
                reloaded = True
                entry = self._cache.get(task_id)
            if entry is None or not entry[0].enabled or entry[1] is None:
                # deleted or disabled: drop it from the index (unless it moved meanwhile)
                await self.index.claim(task_id, tick_ms, None, [], now_ms, sig=DROP)
                return []
            task = entry[0]
            ticks, nxt = plan(task, entry[1], from_ms(tick_ms), now)
            lease = to_ms(now + LEASE)
            ticks_ms = [to_ms(t) for t in ticks]
            nxt_ms = None if nxt is None else to_ms(nxt)
            ids = [job_id_for(task_id, t) for t in ticks]
            claim = await self.index.claim(
                task_id,
                tick_ms,
                nxt_ms,
                ticks_ms,
                lease,
                signature(task),
                job_ids=ids,
                overlap=self._overlap(task),
            )
            claimed = claim.code
            if claimed == -1 and attempt == 0:  # our copy of the schedule is older than the index: reload
                await self._reload()
                reloaded = True
                continue
            if claimed == -1:  # SQL itself disagrees with the index (a row edited behind our back)
                log.warning(
                    "task %s/%s changed in SQL without notice; re-planned from now",
                    task.agent_name,
                    task.name,
                )
                await self.index.sync(task_id, signature(task), None if nxt is None else to_ms(nxt))
                return []
            if claimed == 0:
                return []  # another replica claimed it
            if len(ticks) != 1 or ticks[0] != from_ms(tick_ms):
                log.warning(
                    "task %s/%s due since %s: running %d tick(s) (misfire policy %s)",
                    task.agent_name,
                    task.name,
                    from_ms(tick_ms).isoformat(),
                    len(ticks),
                    policy_of(task).value,
                )
            fired = await self._fire_claimed(task, ticks, claim.decisions)
            self._sql_updates[task_id] = (ticks[-1] if ticks else task.last_run_at, nxt)
            self._planned[task_id] = (signature(task), nxt)
            return fired
        return []

    async def _fire_claimed(
        self, task: ScheduledTask, ticks: Sequence[datetime], decisions: Sequence[str]
    ) -> list[Firing]:
        """Enqueue the claimed ticks the claim decided to run or hold; log the skipped ones."""
        fired: list[Firing] = []
        for tick, decision in zip(ticks, decisions, strict=True):
            if decision == "skip":
                log.info(
                    "task %s/%s: tick %s skipped, its previous run is still under way (overlap: %s)",
                    *(task.agent_name, task.name, tick.isoformat(), overlap_of(task)),
                )
                continue
            firing = await self._fire_tick(task, tick, held=decision == "hold")
            if firing is not None:
                fired.append(firing)
        return fired

    def _overlap(self, task: ScheduledTask) -> Overlap:
        return Overlap(
            overlap_of(task),
            task.queue,
            task.agent_name,
            task.name,
            task.function,
            self.clock().timestamp(),
            self.settings.lifecycle_maxlen,
        )

    async def _fire_tick(self, task: ScheduledTask, tick: datetime, *, held: bool = False) -> Firing | None:
        job_id = job_id_for(task.id, tick)
        try:
            after = await self.index.held_after(task.id, to_ms(tick)) if held else None
            if _tracing.tracer is None:
                await self._enqueue(task, job_id, tick, after=after)
            else:  # the tick's span: its enqueue (and the run) join the tick's trace
                with _tracing.tick_span(task.agent_name, task.name, tick):
                    await self._enqueue(task, job_id, tick, after=after)
        except InvalidValue as exc:  # the task's own arguments are refused: retrying cannot help
            log.error(
                "task %s/%s: tick %s not enqueued: %s", task.agent_name, task.name, tick.isoformat(), exc
            )
            await self.index.done(task.id, to_ms(tick))
            return None
        except Exception:
            log.exception("enqueue of %s failed; another attempt follows when its lease expires", job_id)
            return None
        await self.index.done(task.id, to_ms(tick))
        if self.metrics is not None:
            self.metrics.observe_tick(tick, self.clock().timestamp())
        log.info("fired %s/%s tick %s as %s", task.agent_name, task.name, tick.isoformat(), job_id)
        return Firing(task.id, task.name, task.agent_name, tick, job_id)

    async def _recover(self, now: datetime) -> list[Firing]:
        """Enqueue claimed ticks whose claimer died before enqueueing (idempotent: the job id is unique)."""
        fired: list[Firing] = []
        now_ms = to_ms(now)
        for task_id, tick_ms in await self.index.expired_leases(now_ms):
            if not await self.index.relet(task_id, tick_ms, now_ms, to_ms(now + LEASE)):
                continue
            entry = self._cache.get(task_id)
            if entry is None:
                await self._reload()
                entry = self._cache.get(task_id)
            if entry is None:
                await self.index.done(task_id, tick_ms)
                continue
            held = overlap_of(entry[0]) == "queue"  # held_after says whether this run waits
            firing = await self._fire_tick(entry[0], from_ms(tick_ms), held=held)
            if firing is not None:
                fired.append(firing)
        return fired

    async def _enqueue(
        self, task: ScheduledTask, job_id: str, tick: datetime | None, *, after: str | None = None
    ) -> str:
        """The one seam between scheduler and queue: enqueue one run of ``task`` as ``job_id`` (unique);
        ``after``: a held run (``overlap: queue``) waits, deferred, until that job ended (finished or not)."""
        queue = await self._get_queue()
        options = task.options or {}
        retry: Any = None
        if options.get("retry"):
            max_retries, interval = options["retry"]["max"], options["retry"].get("interval", 0)
            retry = max_retries
            if interval or set(options["retry"]) - {"max", "interval"}:  # fixed waits, or backoff / on
                from ..queue import Retry  # type: ignore[import-not-found,unused-ignore]

                retry = Retry.from_dict(options["retry"])
        jitter = float(options.get("jitter") or 0) if after is None else 0.0
        limit = options.get("limit") or {}  # flow limit (docs/flow-control.md)
        waits: dict[str, Any] = {}
        if after is not None:
            waits = {"depends_on": after, "allow_dependency_failures": True}
        result: str = await queue.enqueue(
            task.function,
            rate_limit=limit.get("rate"),
            max_concurrency=limit.get("max_concurrency"),
            concurrency_key=limit.get("concurrency_key"),
            function_path=task.function,
            job_id=job_id,
            unique=True,
            agent_name=task.agent_name,
            task_name=task.name,
            scheduled_task_id=task.id,
            args=tuple(task.args or ()),
            kwargs=dict(task.kwargs or {}),
            queue=task.queue,
            timeout=options.get("timeout"),
            retry=retry,
            delay=random.uniform(0, jitter) if jitter and tick is not None else None,
            description=f"{task.agent_name}/{task.name}"
            + (f" @ {tick.isoformat()}" if tick else " (run now)"),
            **waits,
        )
        return result

    async def _get_queue(self) -> RunQueue:
        if self._queue is None:
            await self._open()
            from ..queue import TaskQueue  # type: ignore[import-not-found,unused-ignore]

            queue = TaskQueue(self._redis, settings=self.settings)
            await queue.__aenter__()
            self._queue = queue
            self._queue_owned = True
        return self._queue

    async def _flush(self) -> None:
        """Write batched last_run_at / next_run_at to SQL (never bumps ``updated_at``)."""
        updates, self._sql_updates = self._sql_updates, {}
        if not updates:
            return
        try:
            async with self._session() as session, session.begin():
                for task_id, (last, nxt) in updates.items():
                    query = update(ScheduledTask).where(ScheduledTask.id == task_id)
                    if last is not None:  # replicas flush out of order: never move last_run_at backwards
                        query = query.where(
                            or_(ScheduledTask.last_run_at.is_(None), ScheduledTask.last_run_at <= last)
                        )
                    await session.execute(
                        query.values(last_run_at=last, next_run_at=nxt, updated_at=ScheduledTask.updated_at)
                    )
        except Exception:
            for task_id, value in updates.items():  # keep them for the next flush
                self._sql_updates.setdefault(task_id, value)
            raise

    async def _listen(self) -> None:
        """Set ``_changed`` on every change notice (pub/sub); resubscribe after a lost connection."""
        assert self._redis is not None
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self.index.channel)
                self._listener_ready.set()
                self._changed.set()  # anything may have changed while we were not listening
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=MAX_IDLE)
                    if message is not None:
                        self._changed.set()
            except Exception as exc:  # connection lost: the version counter covers the gap
                _raise_if_cancelling()
                if self._listener_ready.is_set():
                    log.warning("change feed interrupted (%s); resubscribing", exc)
                else:
                    log.debug("change feed still unavailable (%s)", exc)
                self._listener_ready.clear()
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            try:
                await self._flush()
            except Exception as exc:
                _raise_if_cancelling()
                if not self._sql_down:  # one line per outage; the run times stay in memory meanwhile
                    log.warning(
                        "writing run times to SQL failed (%s: %s); firing goes on, retrying every %g s",
                        type(exc).__name__,
                        str(exc).splitlines()[0] if str(exc) else "",
                        FLUSH_INTERVAL,
                    )
                self._sql_down = True
            else:
                if self._sql_down:
                    self._sql_down = False
                    log.info("run times written to SQL again")

    async def run(self) -> None:
        """Fire due ticks until cancelled. Sleeps until the next tick or a change notice; never busy-polls."""
        await self._open()
        # Each helper runs under a supervisor: one that crashes is logged and restarted with backoff, while
        # the firing loop goes on (it used to take the whole loop down with it).
        helpers = [
            Supervised("asyncsched-scheduler-listen", self._listen).start(),
            Supervised("asyncsched-scheduler-flush", self._flusher).start(),
        ]
        if self.settings.rq_scheduler:  # rq-scheduler's jobs too (docs/scheduler.md, "rq-scheduler's jobs")
            from ._rqscheduler import RQSchedulerBridge

            bridge = RQSchedulerBridge(self._redis, self.settings, clock=self.clock)  # type: ignore[arg-type]
            helpers.append(Supervised("asyncsched-scheduler-rq-scheduler", bridge.run).start())
        try:
            async with asyncio.timeout(30):
                await self._listener_ready.wait()
            self._changed.clear()
            await self.rebuild_index()
            self._version = await self.index.version()
            log.info("scheduler running: %d task(s)", len(self._cache))
            while True:
                _raise_if_cancelling()  # a cancel swallowed by a library below us still stops the loop
                try:
                    if await self._index_lost():
                        log.warning(
                            "schedule index missing from Redis (restarted or flushed); rebuilt from SQL"
                        )
                        await self.rebuild_index()
                    await self.run_pending()
                    if self._redis_down:
                        self._redis_down = False
                        log.info("Redis answers again; firing resumed")
                    await self._wait()
                except Exception as exc:  # Redis or SQL unavailable: nothing is lost, the index waits for us
                    _raise_if_cancelling()
                    if isinstance(exc, _REDIS_DOWN):
                        if not self._redis_down:  # one line per outage, not a traceback a second
                            log.warning("Redis unavailable (%s); firing paused, retrying every 1 s", exc)
                        self._redis_down = True
                    else:
                        log.exception("firing pass failed; retrying in 1 s")
                    await asyncio.sleep(1.0)
        finally:
            await asyncio.gather(*(helper.stop() for helper in helpers))

    async def _index_lost(self) -> bool:
        """Whether Redis lost the index (restart without persistence, FLUSHALL) while SQL has live tasks."""
        if not any(task.enabled and trigger is not None for task, trigger in self._cache.values()):
            return False
        assert self._redis is not None
        return not await self._redis.exists(self.index.sig_key)

    async def _wait(self) -> None:
        earliest = await self.index.earliest()
        timeout = MAX_IDLE
        if earliest is not None:
            timeout = min(MAX_IDLE, max(0.0, (earliest - to_ms(self.clock())) / 1000))
        if timeout > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):  # unlike 3.11's wait_for, never swallows a cancel
                    await self._changed.wait()
        version = await self.index.version()
        if self._changed.is_set() or version != self._version:
            self._changed.clear()
            self._version = version
            await self._reload()


def _raise_if_cancelling() -> None:
    """Re-raise a cancellation that something below us turned into another exception or swallowed."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
