"""The live feed: one subscription to the event bus fanned out to every SSE client and the dashboard.

However many browsers watch, the process holds one bus subscription. Each client gets a bounded queue
(the oldest events are dropped for a client too slow to read), and the last :data:`RECENT` events are
kept so a page that just opened, or a client reconnecting with ``Last-Event-ID``, sees what it missed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fnmatch
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..events import Event

__all__ = ["RECENT", "LiveFeed", "event_to_dict"]

log = logging.getLogger("asyncsched.web")

RECENT = 200
"""Events kept for replay."""

CLIENT_QUEUE = 1000
"""Events buffered per client before its oldest are dropped."""


def _iso(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def event_to_dict(event: object) -> dict[str, Any]:
    """The JSON view of a bus ``Event``, an ``EventMessage`` row or an already-plain mapping."""
    if isinstance(event, dict):
        get: Callable[[str], Any] = event.get
    else:

        def get(name: str) -> Any:
            return getattr(event, name, None)

    return {
        "id": str(get("id") or ""),
        "event_type": get("event_type"),
        "source_agent": get("source_agent"),
        "target_agent": get("target_agent"),
        "payload": get("payload") or {},
        "created_at": _iso(get("created_at")),
    }


def matches(event: dict[str, Any], event_type: str | None, agent: str | None) -> bool:
    """Whether ``event`` passes an SSE client's filters (type pattern; agent as source or target)."""
    if event_type and not fnmatch.fnmatchcase(str(event.get("event_type") or ""), event_type):
        return False
    return not agent or agent in (event.get("source_agent"), event.get("target_agent"))


class LiveFeed:
    """Fan-out of live events. :meth:`push` feeds it; :meth:`subscribe` reads it."""

    def __init__(self, recent: int = RECENT) -> None:
        self._recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=recent)
        self._clients: set[asyncio.Queue[dict[str, Any]]] = set()
        self.received = 0

    def push(self, event: Event | Mapping[str, object]) -> None:
        """Deliver one event (a bus ``Event`` or a mapping) to every client. Never blocks."""
        data = event_to_dict(event)
        self.received += 1
        self._recent.append(data)
        for queue in self._clients:
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(data)

    def recent(self, after_id: str | None = None) -> list[dict[str, Any]]:
        """Kept events, oldest first; only those after ``after_id`` when it is still kept."""
        items = list(self._recent)
        if after_id:
            for index, item in enumerate(items):
                if item["id"] == after_id:
                    return items[index + 1 :]
        return items

    @property
    def clients(self) -> int:
        """Connected subscribers."""
        return len(self._clients)

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        """A queue receiving every event pushed while the context is open."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=CLIENT_QUEUE)
        self._clients.add(queue)
        try:
            yield queue
        finally:
            self._clients.discard(queue)
