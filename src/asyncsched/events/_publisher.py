"""Publishing: one atomic ``publish.lua`` call per event, one round trip.

Transports (keys in :mod:`asyncsched._keys`):

* **Live** — Redis pub/sub. A targeted event goes to ``<ns>:events:agent:<target>``, a broadcast to
  ``<ns>:events:broadcast``. A bus listens on the broadcast channel plus the channel of every agent it
  serves (its own ``agent_name`` and every agent that subscribed through it). Fire-and-forget: whoever is
  listening now receives it.
* **Durable** (opt-in per subscription, ``durable=True``) — Redis Streams: one stream per target agent and
  one broadcast stream, one consumer group per agent (see :mod:`._durable`). Publishing appends to the
  stream only once it exists (the first durable subscriber of that agent creates it), so nothing is kept
  for agents nobody subscribed durably.
* **Audit** (``persist=True``) — the envelope is also appended to the event log stream, which the store's
  Recorder writes to the ``EventMessage`` table.

All three happen in one atomic script call per event (``publish.lua``): one round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import Any

import redis.asyncio as aioredis

from .. import _keys
from .._boundary import check_event_text
from .._redis.cluster import is_cluster
from .._redis.connection import Line
from .._redis.scripts import ScriptRegistry
from ..config import Settings
from ._envelope import Event

__all__ = ["Publisher"]

PUBLISH_LUA = resources.files(__package__).joinpath("publish.lua").read_text()


class Publisher:
    """Sends events for one bus on ``redis``: the keys and arguments of ``publish.lua``, the script call
    (on a :class:`~asyncsched._redis.connection.Line` of its own when given, for one publish at a time)
    and the reload of the script when the server forgot it.

    ``persist``: also append each event to the event log stream. From ``settings``: the key prefix, the
    streams' approximate bound and the envelope's size limit (checked before anything is sent).
    """

    def __init__(
        self, redis: aioredis.Redis, settings: Settings, *, persist: bool, line: Line | None
    ) -> None:
        prefix, maxlen, max_payload_bytes = (
            settings.key_prefix,
            settings.event_stream_maxlen,
            settings.max_payload_bytes,
        )
        self.redis = redis
        self.scripts = ScriptRegistry(redis, {"publish": PUBLISH_LUA})
        self.line = line
        self._line_busy = False
        self._prefix = prefix
        self._persist = persist
        self._maxlen = str(maxlen).encode()  # encoded once, not per publish
        self._max_payload_bytes = max_payload_bytes
        self._broadcast_channel = _keys.broadcast_event_channel(prefix)
        self._cluster = is_cluster(redis)  # the bus's streams then share one hash slot
        self._broadcast_stream = _keys.broadcast_event_stream(prefix, cluster=self._cluster)

    async def publish(self, event: Event) -> None:
        """Send one event (one round trip)."""
        keys, args = self.call(event)
        line = self.line
        if line is not None and not self._line_busy:  # others publishing meanwhile use the pool
            self._line_busy = True
            try:
                (reply,) = await line.execute(self.scripts.command("publish", args, keys))
            finally:
                self._line_busy = False
            await self.scripts.settle("publish", reply, args, keys)  # NOSCRIPT: reloaded, sent again
            return
        await self.scripts.run("publish", args, keys)

    async def publish_many(self, events: Sequence[Event]) -> None:
        """Send already-built events in one pipelined round trip (all are serialized first)."""
        calls = [self.call(event) for event in events]
        if calls:
            await self.scripts.run_many("publish", calls)

    def call(self, event: Event) -> tuple[list[str], list[Any]]:
        """The script's keys and arguments for ``event`` (refused here when the envelope is too large)."""
        envelope = event.to_json()
        check_event_text(event.payload, envelope, self._max_payload_bytes)
        target = event.target_agent
        if target is None:
            keys = [self._broadcast_stream]
            args: list[Any] = [self._broadcast_channel, envelope, self._maxlen]
        else:
            keys = [_keys.agent_event_stream(self._prefix, target, cluster=self._cluster)]
            args = [_keys.agent_event_channel(self._prefix, target), envelope, self._maxlen]
        if self._persist:
            keys.append(_keys.event_log_stream(self._prefix, cluster=self._cluster))
            for item in event.log_fields().items():
                args.extend(item)
        return keys, args

    async def aclose(self) -> None:
        """Close the line of its own, if any (the client belongs to the bus)."""
        line, self.line = self.line, None
        if line is not None:
            await line.aclose()
