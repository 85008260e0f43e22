"""The sync facade: the spec's calls from sync task functions in threads and from plain sync code."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from asyncsched import SerializationError
from asyncsched.config import Settings, set_settings
from asyncsched.events import Event
from asyncsched.events import EventBus as AsyncEventBus
from asyncsched.sync import EventBus

from .workflow_tasks import process_pending_emails_task  # the spec's task, verbatim but for the import

pytestmark = pytest.mark.cluster  # the sync bus runs on a Redis Cluster too


@pytest.fixture
def process_settings(redis_url: str) -> Iterator[Settings]:
    """Process-wide settings, so ``EventBus()`` with no arguments works as in the spec."""
    settings = Settings(redis_url=redis_url)
    set_settings(settings)
    yield settings
    set_settings(None)


async def test_publish_from_a_worker_thread_while_an_event_loop_runs(process_settings: Settings) -> None:
    async with AsyncEventBus(agent_name="support-bot") as listener:
        result = await asyncio.to_thread(process_pending_emails_task, 25)  # as a worker runs sync tasks
        event = await listener.listen(timeout=15)
    assert result == {"status": "success", "processed": 25}
    assert event is not None
    assert (event.event_type, event.source_agent, event.payload) == (
        "email.batch_processed",
        "email-agent",
        {"batch_size": 25},
    )


def test_publish_subscribe_and_listen_from_plain_sync_code(process_settings: Settings) -> None:
    received: list[Event] = []
    done = threading.Event()

    def handle_event(event: Event) -> None:  # the spec's callback
        received.append(event)
        done.set()

    with EventBus() as event_bus:
        sub = event_bus.subscribe(
            agent_name="support-bot", event_type="task.completed", callback=handle_event
        )
        process_pending_emails_task(3)  # broadcast, from another EventBus()
        EventBus().publish(
            event_type="task.completed",
            source_agent="email-agent",
            payload={"task_id": "123", "status": "success"},
        )
        # The spec's loop: listen() returns what the bus received, callbacks or not.
        seen = []
        for _ in range(30):
            event = event_bus.listen(timeout=1.0)
            if event:
                seen.append(event.event_type)
                if len(seen) == 2:
                    break
        assert seen == ["email.batch_processed", "task.completed"]
        assert done.wait(15)
        assert event_bus.listen(timeout=0) is None
        sub.unsubscribe()  # from a thread that is not the bus's loop
    assert [e.payload for e in received] == [{"task_id": "123", "status": "success"}]


async def test_sync_facade_async_callbacks_run_on_the_portal(process_settings: Settings) -> None:
    loop_threads: list[str] = []
    arrived = threading.Event()

    async def on_event(event: Event) -> None:
        loop_threads.append(threading.current_thread().name)
        arrived.set()

    def scenario() -> None:
        with EventBus(agent_name="b") as bus:
            bus.subscribe("b", "x.*", on_event)
            bus.publish("x.y", "a", target_agent="b")
            assert arrived.wait(15)
            assert next(bus.events(idle_timeout=15)).event_type == "x.y"

    await asyncio.to_thread(scenario)
    assert loop_threads == ["asyncsched-portal"]


def test_many_threads_publish_through_one_shared_connection(process_settings: Settings) -> None:
    with EventBus(agent_name="sink") as listener:
        listener.listen(timeout=0)  # start listening before anyone publishes

        def publish(i: int) -> str:
            return EventBus().publish("load.item", f"thread-{i % 4}", {"i": i}, target_agent="sink").id

        with ThreadPoolExecutor(8) as pool:
            sent = set(pool.map(publish, range(80)))
        got = set()
        while len(got) < 80:
            event = listener.listen(timeout=15)
            assert event is not None
            got.add(event.id)
    assert got == sent
    from asyncsched.events._sync import _shared

    assert len(_shared) == 1


def test_sync_errors_are_the_async_errors(process_settings: Settings) -> None:
    with pytest.raises(SerializationError, match="JSON"):
        EventBus().publish("x.y", "a", {"obj": object()})
    with pytest.raises(ValueError, match="agent_name"):
        EventBus(agent_name="two words")
    with pytest.raises(TypeError, match="URL"):
        EventBus(object())  # type: ignore[arg-type]


def test_event_log_setting_makes_every_bus_persist(redis_url: str) -> None:
    from asyncsched._keys import event_log_stream
    from asyncsched._redis import is_cluster

    settings = Settings(redis_url=redis_url, event_log=True)
    assert Settings.from_env({"ASYNCSCHED_EVENT_LOG": "true"}).event_log is True
    assert AsyncEventBus(settings=settings).persist is True
    assert AsyncEventBus(settings=settings, persist=False).persist is False
    event = EventBus(settings=settings).publish("email.sent", "email-agent")

    async def logged() -> list[Any]:
        async with AsyncEventBus(settings=settings) as bus:
            stream = event_log_stream(settings.key_prefix, cluster=is_cluster(bus.redis))
            return list(await bus.redis.xrange(stream))

    entries = asyncio.run(logged())
    assert [fields[b"id"].decode() for _, fields in entries] == [event.id]
