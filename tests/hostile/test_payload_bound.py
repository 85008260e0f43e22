"""One bound for event sizes (issue 13, gap 2): ``ASYNCSCHED_MAX_PAYLOAD_BYTES``, checked in one place.

Publishing, pub/sub readers and durable consumers all take the bound from the setting (there used to be a
second, fixed 1 MiB bound in the envelope's reader, so a raised setting let events out that no reader would
take). A message over the bound that a foreign producer put on the wire is skipped with a log (pub/sub) or
dead-lettered (durable) with the same message naming the setting, and the reader goes on.
"""

from __future__ import annotations

import json
import logging

import pytest
import redis.asyncio as aioredis

from asyncsched import _keys
from asyncsched.config import Settings
from asyncsched.events import Event, EventBus, MalformedEvent
from asyncsched.events._poison import _reset_windows, list_dead_letters
from asyncsched.exceptions import InvalidValue
from tests.events.conftest import Collector

LIMIT = "more than the limit of {} bytes (ASYNCSCHED_MAX_PAYLOAD_BYTES)"


@pytest.fixture(autouse=True)
def _fresh_rate_limits() -> None:
    _reset_windows()


def _wire(size: int, event_type: str = "probe.big") -> bytes:
    envelope = Event.create(event_type, "foreign").to_dict()
    envelope["payload"] = {"blob": "x" * size}
    return json.dumps(envelope).encode()


async def test_a_raised_setting_is_honoured_by_publisher_and_readers(redis_url: str) -> None:
    settings = Settings(redis_url=redis_url, max_payload_bytes=3_000_000)
    got, durable = Collector(), Collector()
    async with EventBus(settings=settings, agent_name="a") as bus:
        await bus.subscribe("a", "probe.*", got.async_cb)
        await bus.subscribe("a", "probe.*", durable.async_cb, durable=True)
        big = await bus.publish("probe.big", "src", {"blob": "x" * 2_000_000}, target_agent="a")
        await got.wait(1)
        await durable.wait(1)
    assert got.events == [big]
    assert durable.events == [big]
    assert Event.from_json(big.to_json(), max_bytes=3_000_000) == big


async def test_one_bound_one_message_for_publish_and_readers(
    redis_url: str, redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(redis_url=redis_url, max_payload_bytes=1000)
    got, durable = Collector(), Collector()
    with caplog.at_level(logging.ERROR, logger="asyncsched.events"):
        async with EventBus(settings=settings, agent_name="a") as bus:
            await bus.subscribe("a", "probe.*", got.async_cb)
            await bus.subscribe("a", "probe.*", durable.async_cb, durable=True)
            with pytest.raises(InvalidValue) as refused:
                await bus.publish("probe.big", "src", {"blob": "x" * 2000})
            assert LIMIT.format(1000) in str(refused.value)
            # a foreign producer writes what publish refuses, on the channel and in the durable stream
            await redis.publish(_keys.agent_event_channel("rq", "a"), _wire(2000))
            await redis.xadd(_keys.agent_event_stream("rq", "a"), {"e": _wire(2000)})
            good = await bus.publish("probe.ok", "src", target_agent="a")
            await got.wait(1)
            await durable.wait(1)
            assert got.events == [good]
            assert durable.events == [good]
            assert bus._reader is not None
            assert bus._reader.restarts == 0
            letters = await list_dead_letters(bus.redis, "rq")
    assert len(letters) == 1
    assert LIMIT.format(1000) in letters[0].reason
    skipped = [r.getMessage() for r in caplog.records if "skipping a malformed event" in r.getMessage()]
    assert len(skipped) == 1
    assert LIMIT.format(1000) in skipped[0]


def test_from_json_takes_the_setting_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from asyncsched import config

    monkeypatch.setenv("ASYNCSCHED_MAX_PAYLOAD_BYTES", "500")
    config.set_settings(None)
    try:
        with pytest.raises(MalformedEvent, match=r"more than the limit of 500 bytes"):
            Event.from_json(_wire(600))
        monkeypatch.delenv("ASYNCSCHED_MAX_PAYLOAD_BYTES")
        config.set_settings(None)
        assert Event.from_json(_wire(600)).payload == {"blob": "x" * 600}
    finally:
        config.set_settings(None)
