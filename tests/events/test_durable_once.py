"""A durable event is handled once per agent while its consumers live (issue 14.3).

Two live durable subscribers of one agent used to handle the same events: each read up to 100 entries but
renewed only the one it was handling, so the other XAUTOCLAIMed the rest (23 of 150 events handled twice
with a 0.2 s handler and claim_idle 10 s). Now a consumer announces itself with an alive key and only the
entries of consumers whose key is gone are taken over. Handled events are counted outside the system.
"""

from __future__ import annotations

import asyncio
import collections

import pytest

from asyncsched.config import Settings
from asyncsched.events import Event, EventBus
from tests.waiting import eventually

EVENTS = 150


@pytest.mark.slow
@pytest.mark.parametrize("claim_idle", [1.0, 10.0])
async def test_two_live_subscribers_of_one_agent_handle_each_event_exactly_once(
    real_redis_url: str, claim_idle: float
) -> None:
    settings = Settings(redis_url=real_redis_url)
    handled: collections.Counter[str] = collections.Counter()
    by: dict[str, set[str]] = {"one": set(), "two": set()}

    def handler(name: str):  # type: ignore[no-untyped-def]
        async def handle(event: Event) -> None:
            handled[event.id] += 1
            by[name].add(event.id)
            await asyncio.sleep(0.2)

        return handle

    async with (
        EventBus(settings=settings, claim_idle=claim_idle, consumer="one") as one,
        EventBus(settings=settings, claim_idle=claim_idle, consumer="two") as two,
        EventBus(settings=settings) as publisher,
    ):
        await one.subscribe("billing", "*", handler("one"), durable=True)
        await two.subscribe("billing", "*", handler("two"), durable=True)
        sent = await publisher.publish_many(
            [Event.create("invoice.created", "crm", {"i": i}, target_agent="billing") for i in range(EVENTS)]
        )
        await eventually(lambda: len(handled) == EVENTS, 120, "every event handled")
        # run on past claim_idle: a late takeover would show as a second handling now
        await asyncio.sleep(claim_idle + 1)
    assert set(handled) == {e.id for e in sent}
    twice = [event_id for event_id, n in handled.items() if n > 1]
    assert twice == [], f"{len(twice)} of {EVENTS} events handled more than once"
    assert by["one"]  # both consumers shared the work
    assert by["two"]
