"""Task functions of the spec's "complete workflow" test: importable by the worker, sync as in the spec."""

from __future__ import annotations

from typing import Any

from asyncsched.sync import EventBus


def process_pending_emails_task(batch_size: int = 10) -> dict[str, Any]:
    """The spec's email task: does its work, then publishes an event from the worker thread."""
    event_bus = EventBus()
    event_bus.publish(
        event_type="email.batch_processed",
        source_agent="email-agent",
        payload={"batch_size": batch_size},
    )
    return {"status": "success", "processed": batch_size}
