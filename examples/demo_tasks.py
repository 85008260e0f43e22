"""Task functions used by ``examples/tasks.yaml`` (the README's main command runs them)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

log = logging.getLogger("examples.demo_tasks")


async def heartbeat(note: str = "alive") -> dict[str, str]:
    """An async task: runs on the worker's event loop."""
    await asyncio.sleep(0.01)
    return {"note": note, "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}


def process_pending_emails_task(batch_size: int = 10) -> dict[str, object]:
    """The spec's sync task: runs in a worker thread and publishes an event through the sync facade."""
    from asyncsched.sync import EventBus

    log.info("processing %d pending emails", batch_size)
    EventBus().publish(
        event_type="email.batch_processed", source_agent="email-agent", payload={"batch_size": batch_size}
    )
    return {"status": "success", "processed": batch_size}


def generate_report_task() -> str:
    """A cron task."""
    return f"report generated at {dt.datetime.now(dt.UTC):%H:%M:%S}"
