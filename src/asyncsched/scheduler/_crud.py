"""Task definitions of :class:`TaskScheduler`: register (one, many, a file, the bulk path), read, edit,
enable, disable, delete, run now. SQL first (the source of truth), then the Redis index, then a change
notice so every replica reloads."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Sequence
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from .._misuse import async_api
from ..exceptions import BrokenTask, DuplicateTask
from ..store.models import ScheduledTask
from ._base import SchedulerBase
from ._bulk import any_stored, detached, first_clash, index_new, insert_new, prepare_new
from ._definition import build_task, task_trigger
from ._index import signature, to_ms
from ._rows import (
    TaskKey,
    copy_task,
    find_key,
    find_task,
    load_checked,
    row_problems,
    upsert_tasks,
    utc,
)
from ._triggers import Trigger
from ._yaml import load_tasks

__all__ = ["TaskCrud"]


class TaskCrud(SchedulerBase):
    """The definition half of :class:`TaskScheduler` (any process may call these; none fires)."""

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
            self._cache.pop(task_id)
        for task in stored:
            await self._sync_index(task)
        changed = [task.id for task in stored] + list(removed)
        await self.index.notify(changed[0] if len(changed) == 1 else None)  # one task: replicas reload it
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
        self._cache.pop(task.id)
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
