"""The event bus: agents publish events to one agent or to all, and react to them.

* :class:`EventBus` — ``publish``, ``subscribe`` (sync or async callbacks, wildcard types, live or durable),
  ``listen`` and ``events``. Live delivery on Redis pub/sub; durable delivery on Redis Streams with one
  consumer group per agent; optional audit log to the ``EventMessage`` table.
* :class:`Event` — the JSON envelope (``id, event_type, source_agent, target_agent, payload,
  created_at``: the attribute names of the SQL model ``asyncsched.EventMessage``, so callbacks written
  for either work with both).
* :class:`LifecyclePublisher` — turns the job lifecycle feed into ``task.*`` events;
  :func:`publish_system_event` / :func:`system_events` publish ``system.startup`` / ``system.shutdown``.

The sync facade is :class:`asyncsched.sync.EventBus`. See ``docs/events.md``.
"""

from __future__ import annotations

from ._bus import Callback, EventBus, Subscription
from ._envelope import Event, MalformedEvent, validate_agent_name, validate_event_type
from ._lifecycle import LifecyclePublisher, lifecycle_event, publish_system_event, system_events
from ._lifecycle_lanes import PublisherLanes, open_publisher
from ._stream import EventStream

__all__ = [
    "Callback",
    "Event",
    "EventBus",
    "EventStream",
    "LifecyclePublisher",
    "MalformedEvent",
    "PublisherLanes",
    "Subscription",
    "lifecycle_event",
    "open_publisher",
    "publish_system_event",
    "system_events",
    "validate_agent_name",
    "validate_event_type",
]
