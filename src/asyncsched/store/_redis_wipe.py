"""Noticing that Redis lost its data: a master's ``run_id`` changed (it restarted) and the marker key the
Recorder set in it is gone (it came back empty, or was flushed).

On a single Redis that is one ``run_id`` and one marker, ``<ns>:marker``. On a Redis Cluster each master is
watched on its own: its ``run_id`` (``INFO`` sent to that node) and a marker in a slot it serves,
``<ns>:marker:{<n>}`` with the smallest ``<n>`` whose slot is one of its slots (so a replica promoted in its
place has the same marker). A master seen for the first time after the first pass (a replica promoted by a
failover) is checked the same way. A master with no slot holds no data and has no marker.

:class:`RedisWipes` answers which masters lost their data since the last pass; the Recorder's duties
(:mod:`asyncsched.store._recorder_watch`) report them and start the reconciler over.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import ResponseError
from sqlalchemy import func, select

from .. import _keys
from .._redis.cluster import is_cluster
from ..rq.keys import RQKeys
from ._database import Database
from ._reconcile import OPEN_STATUSES
from .models import TaskExecution

__all__ = ["RedisWipes", "Wipe", "open_by_queue"]

log = logging.getLogger("asyncsched.store.recorder")

_SEARCH = 1 << 17
"""Marker tags tried for one master (about 16,384 / masters are needed; a master with no slot has none)."""


@dataclass(frozen=True)
class Wipe:
    """One master that lost its data: ``node`` (``host:port``; ``None`` on a single Redis), its ``run_id``
    before and now."""

    node: str | None
    previous: str
    run_id: str


class RedisWipes:
    """The ``run_id`` and the marker of every master of ``redis`` (see the module docstring)."""

    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.redis, self.prefix = redis, prefix
        self.cluster = is_cluster(redis)
        self.no_info = False
        """The server has no ``INFO`` (``memory://``: an in-process Redis cannot restart behind our back)."""
        self._run_ids: dict[str, str] = {}  # master ("" on a single Redis) -> run_id seen last
        self._markers: dict[str, str | None] = {}  # master -> its marker key (cluster), None: no slot
        self._started = False  # a first pass over every master completed

    async def check(self, first: bool = False) -> list[Wipe]:
        """One pass over every master: the wipes found (each reported once: the marker is set again);
        a restart that kept the data is logged here. ``first`` (the Recorder starts): every marker is set
        again, and the masters it sees for the first time are only learnt."""
        if self.no_info:
            return []
        if first:
            self._started = False
        found: list[Wipe] = []
        for name, node in await self._masters():
            try:
                run_id = await self._run_id(node)
            except ResponseError as exc:
                if "unknown command" not in str(exc).lower():
                    raise
                self.no_info = True
                return []
            marker = self._marker(name)
            if marker is None:
                continue  # no slot: no data to lose
            previous = self._run_ids.get(name)
            restarted = previous is not None and previous != run_id
            if restarted or (previous is None and self._started):  # or a new master (failover)
                if await self.redis.exists(marker):
                    self._kept(name, previous, run_id)
                else:
                    found.append(Wipe(name or None, previous or "", run_id))
            elif previous == run_id and not first:
                continue
            await self.redis.set(marker, run_id)  # (again at start: a flush before is not taken for a wipe)
            self._run_ids[name] = run_id  # only now: a pass that failed before is done again
        self._started = True
        return found

    async def _masters(self) -> list[tuple[str, Any]]:
        if not self.cluster:
            return [("", None)]
        client = cast(Any, self.redis)
        if client._initialize:  # the slots are known before the first command
            await client.initialize()
        masters = [(str(node.name), node) for node in client.get_primaries()]
        current = {name for name, _ in masters}
        for gone in set(self._run_ids) - current:  # demoted by a failover: its successor is watched
            self._run_ids.pop(gone)
            self._markers.pop(gone, None)
        return masters

    async def _run_id(self, node: Any) -> str:
        if node is None:
            info = await self.redis.info("server")
        else:
            info = await cast(Any, self.redis).info("server", target_nodes=node)
            if isinstance(info, Mapping) and node.name in info:
                info = info[node.name]
        return str(info.get("run_id", ""))

    def _marker(self, name: str) -> str | None:
        """The marker key of master ``name`` (in one of its slots), ``None`` for a master with no slot."""
        if not self.cluster:
            return _keys.redis_marker(self.prefix)
        client = cast(Any, self.redis)
        known = self._markers.get(name, "")
        if known is None or (known and client.get_node_from_key(known).name == name):
            return known  # (a master found without a slot is searched again once the masters change)
        self._search(client)
        return self._markers.get(name)

    def _search(self, client: Any) -> None:
        """A marker for every master: the smallest tag whose slot is one of its slots (one pass for all;
        a master with no slot would take the whole search: its answer, none, is kept)."""
        names = {str(node.name) for node in client.get_primaries()}
        found: dict[str, str] = {}
        for n in range(_SEARCH):
            key = _keys.redis_marker(self.prefix, n)
            owner = str(client.get_node_from_key(key).name)
            if owner in names and owner not in found:
                found[owner] = key
                if len(found) == len(names):
                    break
        self._markers = {name: found.get(name) for name in names}

    def _kept(self, name: str, previous: str | None, run_id: str) -> None:
        if previous is None:
            log.warning("Redis Cluster: %s is a master now (failover) and holds its slots' data", name)
        else:
            where = f"Redis Cluster master {name}" if name else "Redis"
            log.warning("%s restarted (run_id %s -> %s) and kept its data", where, previous[:8], run_id[:8])

    def held_by(self, node: str, queues: Mapping[str, Mapping[str, int]]) -> tuple[list[str], list[str]]:
        """On a cluster: which of ``queues`` (name -> open executions by status) live on master ``node``,
        and which of asyncsched's components keep keys there (what its wipe lost beside the jobs)."""
        client = cast(Any, self.redis)
        keys = RQKeys(self.prefix, cluster=True)
        mine = [q for q in sorted(queues) if client.get_node_from_key(keys.queue(q)).name == node]
        components = {
            "the scheduler's index (rebuilt from SQL)": _keys.sched_next(self.prefix, cluster=True),
            "the event bus's durable streams and dead letters": _keys.dead_letter_stream(
                self.prefix, cluster=True
            ),
            f"the set of queues ({keys.queues})": keys.queues,
            f"the set of workers ({keys.workers})": keys.workers,
        }
        held = [what for what, key in components.items() if client.get_node_from_key(key).name == node]
        return mine, held


async def open_by_queue(db: Database) -> dict[str, dict[str, int]]:
    """Open executions in the history (scheduled, deferred, queued, running), by queue and status."""
    t = TaskExecution
    query = (
        select(t.queue, t.status, func.count()).where(t.status.in_(OPEN_STATUSES)).group_by(t.queue, t.status)
    )
    out: dict[str, dict[str, int]] = {}
    async with db.session() as session:
        for queue, status, n in (await session.execute(query)).all():
            out.setdefault(str(queue), {})[str(status)] = int(n)
    return out
