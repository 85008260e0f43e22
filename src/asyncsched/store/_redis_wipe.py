"""Noticing that Redis lost its data: a master's ``run_id`` changed (it restarted) and the marker key the
Recorder set in it is gone (it came back empty, or was flushed).

On a single Redis that is one ``run_id`` and one marker, ``<ns>:marker``. On a Redis Cluster each master is
watched on its own, and each node is asked directly (never through the client's slot table, which redis-py
patches one slot per ``MOVED``: just after a failover it names the promoted replica as the owner of the one
slot that was redirected, not of all of its slots):

* which masters there are and their slots: each node's own word (the ``myself`` line of its
  ``CLUSTER NODES``); of two nodes that claim a slot, the one with the newer configuration epoch (a demoted
  master that has not heard of its successor yet, or came back from a restart with an old configuration,
  is not taken for a master);
* its ``run_id`` (``INFO`` sent to that node);
* its marker, ``<ns>:marker:{<n>}`` with the smallest ``<n>`` whose slot is one of its slots, set in it.

A master that restarted, or is seen for the first time after the first pass (a replica promoted by a
failover), holds its data if it holds any marker this watch set before in a slot it serves now: a promoted
replica holds its old master's marker (same slots); a master that came back empty holds none. One in whose
slots no marker was ever set is only learnt. A master with no slot holds no data and has no marker. A node
that cannot be asked (down, or it answers with a redirection while its slots move) is asked again at the next
pass.

:class:`RedisWipes` answers which masters lost their data since the last pass; the Recorder's duties
(:mod:`asyncsched.store._recorder_watch`) report them and start the reconciler over.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import AskError, ConnectionError, MovedError, ResponseError, TimeoutError, TryAgainError
from sqlalchemy import func, select

from .. import _keys
from .._redis.cluster import is_cluster
from ..rq.keys import RQKeys
from ._database import Database
from ._reconcile import OPEN_STATUSES
from .models import TaskExecution

__all__ = ["RedisWipes", "Wipe", "open_by_queue"]

log = logging.getLogger("asyncsched.store.recorder")

_SEARCH = 1 << 20
"""Marker tags tried for one master (about 16,384 / its slots are needed)."""

_NOT_NOW = (ConnectionError, TimeoutError, MovedError, AskError, TryAgainError)
"""A cluster node cannot be asked now: it is asked again at the next pass."""


@dataclass(frozen=True)
class Wipe:
    """One master that lost its data: ``node`` (``host:port``; ``None`` on a single Redis), its ``run_id``
    before and now."""

    node: str | None
    previous: str
    run_id: str


@dataclass(frozen=True)
class _Master:
    """A master to check: ``name`` (``host:port``, ``""`` on a single Redis), its cluster ``node`` and the
    slots it serves (``None`` on a single Redis) with its configuration ``epoch``, by its own word."""

    name: str
    node: Any = None
    slots: frozenset[int] | None = None
    epoch: int = 0
    ranges: tuple[tuple[int, int], ...] = ()


class RedisWipes:
    """The ``run_id`` and the marker of every master of ``redis`` (see the module docstring)."""

    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.redis, self.prefix = redis, prefix
        self.cluster = is_cluster(redis)
        self.no_info = False
        """The server has no ``INFO`` (``memory://``: an in-process Redis cannot restart behind our back)."""
        self._run_ids: dict[str, str] = {}  # master ("" on a single Redis) -> run_id seen last
        self._marked: dict[str, str] = {}  # master -> the marker set in it last
        self._markers: set[str] = set()  # every marker set (looked for after a restart)
        self._slots: dict[str, frozenset[int]] = {}  # cluster master -> its slots at the last pass
        self._tags: dict[frozenset[int], str | None] = {}  # slots -> the marker of a master serving them
        self._missed: set[str] = set()  # masters that could not be asked (said once)
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
        for master in await self._masters():
            try:
                wipe = await self._check(master, first)
            except _NOT_NOW as exc:
                if not self.cluster:
                    raise
                self._miss(master.name, exc)
                continue
            except ResponseError as exc:
                if "unknown command" not in str(exc).lower():
                    raise
                self.no_info = True
                return []
            self._missed.discard(master.name)
            if wipe is not None:
                found.append(wipe)
        self._started = True
        return found

    async def _check(self, master: _Master, first: bool) -> Wipe | None:
        """One master: its wipe, if it lost its data; its marker set again after a restart, at the first
        pass, or when its slots (and so its marker) changed."""
        name = master.name
        run_id = await self._run_id(master)
        marker = self._marker(master)
        if marker is None:
            return None  # no slot: no data to lose
        previous = self._run_ids.get(name)
        wipe = None
        if (previous is not None and previous != run_id) or (previous is None and self._started):
            held = await self._holds(master)  # restarted, or a new master (failover)
            if held is False:
                wipe = Wipe(name or None, previous or "", run_id)
            else:
                self._kept(name, previous, run_id, held)
        elif previous == run_id and not first and self._marked.get(name) == marker:
            return None
        await self._set(master, marker, run_id)  # (at start too: a flush before is no wipe)
        self._markers.add(marker)
        self._marked[name], self._run_ids[name] = marker, run_id  # only now: a failed pass is done again
        if master.slots is not None:
            self._slots[name] = master.slots
        return wipe

    async def _masters(self) -> list[_Master]:
        """Every master serving slots, each by its own word (see the module docstring)."""
        if not self.cluster:
            return [_Master("")]
        client = cast(Any, self.redis)
        if client._initialize:  # the nodes are known before the first command
            await client.initialize()
        said: dict[str, _Master | None] = {}
        for node in client.get_nodes():
            name = str(node.name)
            try:
                said[name] = myself(name, node, await self._ask(node, "CLUSTER", "NODES"))
            except _NOT_NOW as exc:
                self._miss(name, exc)
        masters = serving([m for m in said.values() if m is not None])
        current = {m.name for m in masters}
        for gone in [name for name in said if name not in current]:  # a replica (demoted) now: not watched
            for known in (self._run_ids, self._marked, self._slots):
                known.pop(gone, None)
        return masters

    async def _run_id(self, master: _Master) -> str:
        if master.node is None:
            info = await self.redis.info("server")
        else:
            info = await self._ask(master.node, "INFO", "server")
        if not isinstance(info, Mapping):
            raise TypeError(f"INFO answered {type(info).__name__}, not a mapping: cannot read the run_id")
        return str(info.get("run_id", ""))

    async def _exists(self, master: _Master, key: str) -> bool:
        """Whether ``master`` itself holds ``key`` (a redirection is an error: its slots are moving)."""
        if master.node is None:
            return bool(await self.redis.exists(key))
        return bool(await self._ask(master.node, "EXISTS", key))

    async def _set(self, master: _Master, key: str, value: str) -> None:
        if master.node is None:
            await self.redis.set(key, value)
        else:
            await self._ask(master.node, "SET", key, value)

    async def _ask(self, node: Any, *args: Any) -> Any:
        """``args`` sent to cluster ``node`` itself (a redirection is an error: its slots are moving)."""
        try:
            return await node.execute_command(*args)
        finally:
            if cast(Any, self.redis).get_node(node_name=node.name) is not node:
                await node.disconnect()  # the client dropped it meanwhile (refreshed): nobody else closes it

    def _marker(self, master: _Master) -> str | None:
        """The marker key of ``master`` (in one of its slots), ``None`` for a master with no slot."""
        if master.slots is None:
            return _keys.redis_marker(self.prefix)
        if master.slots not in self._tags:
            if len(self._tags) > 64:  # slots that moved long ago
                self._tags.clear()
            self._tags[master.slots] = self._search(master.slots)
        return self._tags[master.slots]

    def _search(self, slots: frozenset[int]) -> str | None:
        """The smallest marker tag whose slot is one of ``slots``."""
        client = cast(Any, self.redis)
        for n in range(_SEARCH if slots else 0):
            key = _keys.redis_marker(self.prefix, n)
            if client.keyslot(key) in slots:
                return key
        return None

    async def _holds(self, master: _Master) -> bool | None:
        """Whether ``master`` holds one of the markers set before in the slots it serves now (``None``:
        none was set there, nothing to judge by)."""
        client = cast(Any, self.redis)
        mine = [m for m in self._markers if master.slots is None or client.keyslot(m) in master.slots]
        for marker in sorted(mine):
            if await self._exists(master, marker):
                return True
        return False if mine else None

    def _kept(self, name: str, previous: str | None, run_id: str, held: bool | None) -> None:
        if held is None:
            log.info("Redis Cluster: %s is a master of slots never marked before: watched from now on", name)
        elif previous is None:
            log.warning("Redis Cluster: %s is a master now (failover) and holds its slots' data", name)
        else:
            where = f"Redis Cluster master {name}" if name else "Redis"
            log.warning("%s restarted (run_id %s -> %s) and kept its data", where, previous[:8], run_id[:8])

    def _miss(self, name: str, exc: Exception) -> None:
        if name in self._run_ids and name not in self._missed:
            log.warning(
                "Redis Cluster: master %s cannot be checked for a wipe now (%s: %s); asked at every pass",
                name,
                type(exc).__name__,
                exc,
            )
        self._missed.add(name)

    def held_by(self, node: str, queues: Mapping[str, Mapping[str, int]]) -> tuple[list[str], list[str]]:
        """On a cluster: which of ``queues`` (name -> open executions by status) live on master ``node``,
        and which of asyncsched's components keep keys there (what its wipe lost beside the jobs)."""
        client = cast(Any, self.redis)
        slots = self._slots.get(node, frozenset())

        def there(key: str) -> bool:
            return bool(client.keyslot(key) in slots)

        keys = RQKeys(self.prefix, cluster=True)
        mine = [q for q in sorted(queues) if there(keys.queue(q))]
        components = {
            "the scheduler's index (rebuilt from SQL)": _keys.sched_next(self.prefix, cluster=True),
            "the event bus's durable streams and dead letters": _keys.dead_letter_stream(
                self.prefix, cluster=True
            ),
            f"the set of queues ({keys.queues})": keys.queues,
            f"the set of workers ({keys.workers})": keys.workers,
        }
        held = [what for what, key in components.items() if there(key)]
        return mine, held


def myself(name: str, node: Any, nodes: Any) -> _Master | None:
    """What a cluster node says of itself in its ``CLUSTER NODES`` answer ``nodes``: a master of slots, or
    ``None`` (a replica, or a master without slots)."""
    text = nodes.decode() if isinstance(nodes, bytes) else nodes
    if not isinstance(text, str):
        raise TypeError(f"CLUSTER NODES answered {type(nodes).__name__}, not its text")
    for line in text.splitlines():
        fields = line.split()
        flags = fields[2].split(",") if len(fields) > 7 else []
        if "myself" not in flags:
            continue
        if "master" not in flags or len(fields) < 9:
            return None
        ranges, slots = _slots(tuple(fields[8:]))
        return _Master(name, node, slots, int(fields[6]), ranges) if slots else None
    raise ValueError(f"CLUSTER NODES of {name} has no line for the node itself: {text[:200]!r}")


@functools.lru_cache(maxsize=64)
def _slots(parts: tuple[str, ...]) -> tuple[tuple[tuple[int, int], ...], frozenset[int]]:
    """The slot ranges of a ``CLUSTER NODES`` line (its fields from the ninth) and the slots they hold
    (made once: the same at every pass while the slots stay)."""
    ranges = []
    for part in parts:
        if not part.startswith("["):  # "[slot->-node]": a slot migrating, still served here
            start, _, end = part.partition("-")
            ranges.append((int(start), int(end or start)))
    return tuple(ranges), frozenset(n for start, end in ranges for n in range(start, end + 1))


def serving(masters: list[_Master]) -> list[_Master]:
    """The ``masters`` that serve their slots: of two that claim a slot, the one with the newer configuration
    epoch (the other was demoted, and does not know it yet)."""
    return [
        m for m in masters if not any(o.epoch > m.epoch and _overlap(o.ranges, m.ranges) for o in masters)
    ]


def _overlap(a: tuple[tuple[int, int], ...], b: tuple[tuple[int, int], ...]) -> bool:
    return any(a0 <= b1 and b0 <= a1 for a0, a1 in a for b0, b1 in b)


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
