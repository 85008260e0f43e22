"""The lifecycle record's packed format: what producers write (Python and Lua agree) and what readers take
(the packed format and the one-field-per-field format written before it)."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from asyncsched._lifecycle import PACKED, SEP, Lifecycle, LifecycleRecord, pack, unpack
from asyncsched.rq._scripts import with_life

FULL = LifecycleRecord(
    Lifecycle.FAILED, "job-1", "default", attempt=2, agent_name="bot", task_name="nightly",
    function="m:f", scheduled_task_id="s1", worker="w1", enqueued_at=1.5, started_at=2.25,
    ended_at=3.125, error="ValueError: x", traceback="Traceback\nValueError: x", result="[1]",
)  # fmt: skip


def test_a_record_is_one_packed_field_and_its_free_text() -> None:
    fields = FULL.encode()
    assert list(fields) == [PACKED, "result", "error", "traceback"]
    parts = fields[PACKED].split(SEP)
    assert dict(zip(parts[::2], parts[1::2], strict=True)) == {
        "k": "failed", "j": "job-1", "q": "default", "a": "2", "g": "bot", "t": "nightly", "f": "m:f",
        "c": "s1", "w": "w1", "e": "1.5", "s": "2.25", "d": "3.125",
    }  # fmt: skip
    assert LifecycleRecord.decode(fields) == FULL
    raw = {k.encode(): v.encode() for k, v in fields.items()}  # as redis-py returns it
    assert LifecycleRecord.decode(raw) == FULL


def test_a_value_holding_the_separator_gets_a_field_of_its_own() -> None:
    odd = LifecycleRecord(Lifecycle.STARTED, "job-2", f"q{SEP}x", worker=f"w{SEP}", started_at=1.0)
    fields = odd.encode()
    assert fields["queue"] == f"q{SEP}x"
    assert fields["worker"] == f"w{SEP}"
    assert "q" + SEP not in fields[PACKED].split(SEP)
    assert LifecycleRecord.decode(fields) == odd


def test_records_written_before_the_packed_format_are_read() -> None:
    old = {
        b"kind": b"success", b"job_id": b"job-3", b"queue": b"default", b"attempt": b"1",
        b"started_at": b"1.5", b"ended_at": b"2.5", b"result": b"3",
    }  # fmt: skip
    record = LifecycleRecord.decode(old)
    assert (record.kind, record.job_id, record.started_at, record.result) == ("success", "job-3", 1.5, "3")
    assert unpack(old) == {k.decode(): v.decode() for k, v in old.items()}


def test_a_packed_field_with_an_odd_number_of_parts_is_refused() -> None:
    with pytest.raises(ValueError, match="odd number"):
        unpack({PACKED: f"k{SEP}queued{SEP}j"})


async def test_lua_packs_a_record_as_python_does(redis: aioredis.Redis) -> None:
    """``life_pack`` (lib_life.lua, every script's cold paths) and ``pack`` write the same fields."""
    life = [
        "kind", "failed", "job_id", "j1", "queue", f"a{SEP}b", "worker", "w", "ended_at", "1.5",
        "error", "E: x", "function", "m:f", "traceback", f"tb{SEP}",
    ]  # fmt: skip
    script = with_life("return life_pack(ARGV)")
    reply = await redis.eval(script, 0, *life)  # type: ignore[misc]
    expected = pack(zip(life[::2], life[1::2], strict=True))
    assert [v.decode() for v in reply] == expected
    assert expected[:2] == [PACKED, SEP.join(["k", "failed", "j", "j1", "w", "w", "d", "1.5", "f", "m:f"])]
    ok = with_life("local r = {} for i, v in ipairs(ARGV) do r[i] = life_ok[v] and 1 or 0 end return r")
    assert await redis.eval(ok, 0, "a", f"b{SEP}", "a", f"b{SEP}") == [1, 0, 1, 0]  # type: ignore[misc]
