"""The one stream consumer (asyncsched._streams): groups, NOGROUP recovery, pending first, claims, backoff."""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis.asyncio as aioredis

from asyncsched._streams import Backoff, StreamGroup, consume, is_nogroup

pytestmark = pytest.mark.cluster  # the bus suite runs on a Redis Cluster too


def test_backoff_doubles_to_its_cap_and_starts_over_after_a_success() -> None:
    backoff = Backoff(first=0.1, cap=0.5)
    assert [backoff.failed() for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    backoff.reset()
    assert backoff.failed() == 0.1


async def test_group_reads_pending_first_and_claims_idle_entries(redis: aioredis.Redis) -> None:
    one = StreamGroup(redis, ["s"], "g", "one", start="0")
    await one.ensure()
    await one.ensure()  # an existing group is kept
    await redis.xadd("s", {"n": "1"})
    await redis.xadd("s", {"n": "2"})
    first = await one.read_new(1)
    assert [e[1] for e in first[0][1]] == [{b"n": b"1"}]
    again = await one.read_pending(one.cursors(), 10)  # delivered, not acknowledged: read again first
    assert [e[0] for e in again[0][1]] == [e[0] for e in first[0][1]]
    two = StreamGroup(redis, ["s"], "g", "two")
    taken = await two.autoclaim("s", 0, 10)
    assert [e[0] for e in taken[1]] == [e[0] for e in first[0][1]]
    await two.ack({"s": [taken[1][0][0]]})
    assert (await redis.xpending("s", "g"))["pending"] == 0


async def test_a_vanished_group_is_recreated_and_the_loop_goes_on(
    redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    group = StreamGroup(redis, ["s"], "g", "c", start="$")
    await group.ensure()
    await redis.delete("s")  # Redis lost its data
    await redis.xadd("s", {"n": "after"})  # written since: unread
    got: list[bytes] = []
    stop = asyncio.Event()

    async def step() -> None:
        reply = await group.read_new(10)
        for _, entries in reply or []:
            got.extend(fields[b"n"] for _, fields in entries)
        if got:
            stop.set()

    with caplog.at_level(logging.WARNING):
        await asyncio.wait_for(
            consume(
                step,
                stopping=stop.is_set,
                on_nogroup=lambda: group.ensure(lost=True),
                what="test reader",
                log=logging.getLogger("test"),
            ),
            10,
        )
    assert got == [b"after"]  # recreated at 0: what the stream holds now is read
    assert "test reader: its consumer group vanished" in caplog.text


async def test_nogroup_is_told_apart(redis: aioredis.Redis) -> None:
    group = StreamGroup(redis, ["nothing-here"], "g", "c")
    with pytest.raises(Exception) as caught:
        await group.read_new(1)
    assert is_nogroup(caught.value)
    assert not is_nogroup(RuntimeError("NOGROUP"))
