"""Every reader survives every message (DESIGN.md §9 "Readers never die").

Whoever can write to Redis can publish anything on the bus's channels and append anything to its streams.
A valid-JSON message with an integer ``event_type`` (or JSON nested 100,000 deep) used to kill the reader
task of every subscribing process; the same entry in a durable stream killed the consumer and stayed
pending. Here every poison shape goes through every reader (pub/sub readers of agent and monitor buses,
durable consumers, the worker's command channel, the lifecycle publisher, the recorder, ``asyncsched
run``), then a good message must still arrive, the reader must not have been restarted (it did not crash),
and each bad one must have been logged (rate-limited) and, for durable streams, dead-lettered.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from asyncsched import _keys
from asyncsched._lifecycle import Lifecycle, LifecycleRecord
from asyncsched.config import Settings
from asyncsched.events import Event, EventBus, LifecyclePublisher, MalformedEvent
from asyncsched.events._poison import BURST, _reset_windows, list_dead_letters, replay_dead_letter
from asyncsched.queue import TaskQueue
from asyncsched.worker import Worker
from tests.chaos.procs import Proc
from tests.events.conftest import Collector
from tests.servers import free_port
from tests.waiting import eventually


def _envelope(**changes: Any) -> bytes:
    good = Event.create("probe.ok", "src").to_dict()
    good.update(changes)
    return json.dumps(good).encode()


DEEP = b'{"id": "x", "event_type": "a", "source_agent": "s", "target_agent": null, "payload": ' + (
    b"[" * 100_000 + b"]" * 100_000 + b', "created_at": "2026-01-01T00:00:00+00:00"}'
)

POISON: dict[str, bytes] = {
    "integer event_type": _envelope(event_type=1),
    "list event_type": _envelope(event_type=["a"]),
    "wildcard event_type": _envelope(event_type="task.*"),
    "integer source_agent": _envelope(source_agent=7),
    "dict target_agent": _envelope(target_agent={"a": 1}),
    "integer id": _envelope(id=5),
    "payload list": _envelope(payload=[1, 2]),
    "payload deeper than the limit": _envelope(payload=json.loads('{"a":' * 80 + "1" + "}" * 80)),
    "created_at number": _envelope(created_at=12),
    "created_at garbage": _envelope(created_at="yesterday"),
    "created_at overflowing": _envelope(created_at="0001-01-01T00:00:00+14:00"),
    "NaN": _envelope().replace(b'"payload": {}', b'"payload": {"x": NaN}'),
    "lone surrogate": _envelope().replace(b'"payload": {}', b'"payload": {"x": "\\ud800"}'),
    "invalid UTF-8": b'{"id": "\xff\xfe"}',
    "missing fields": b'{"event_type": "a"}',
    "nested 100,000 deep": DEEP,
    "bare nesting": b"[" * 100_000,
    "too large": _envelope(payload={"x": "y" * 2_000_000}),
    "not JSON": b"{not json",
    "JSON null": b"null",
    "JSON list": b"[]",
    "empty": b"",
    "huge integer": b'{"id": ' + b"9" * 5000 + b"}",
}


@pytest.fixture(autouse=True)
def _fresh_rate_limits() -> None:
    _reset_windows()


def test_every_poison_shape_is_a_malformed_event() -> None:
    accepted = []
    for name, data in POISON.items():
        try:
            Event.from_json(data)
        except MalformedEvent:
            continue
        accepted.append(name)
    assert accepted == []


async def test_pubsub_readers_survive_every_poison_message(
    redis_url: str, redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    settings_ = Settings(redis_url=redis_url)
    sync_got, async_got = Collector(), Collector()
    async with (
        EventBus(settings=settings_, agent_name="victim") as bus,
        EventBus(settings=settings_, agent_name="*") as monitor,
    ):
        await bus.subscribe("victim", "*", sync_got.sync_cb)
        await bus.subscribe("victim", "*", async_got.async_cb)
        stream = monitor.events()
        await monitor.listen(timeout=0)
        channels = [_keys.broadcast_event_channel("rq"), _keys.agent_event_channel("rq", "victim")]
        with caplog.at_level(logging.ERROR, logger="asyncsched.events"):
            for channel in channels:
                for data in POISON.values():
                    await redis.publish(channel, data)
            good = await bus.publish("probe.ok", "src", {"n": 1}, target_agent="victim")
            await sync_got.wait(1)
            await async_got.wait(1)
            seen = await asyncio.wait_for(anext(stream), 15)
        assert [e.id for e in sync_got.events] == [good.id]
        assert [e.id for e in async_got.events] == [good.id]
        assert seen.id == good.id
        for reader in (bus._reader, monitor._reader):
            assert reader is not None
            assert reader.running
            assert reader.restarts == 0  # it never crashed
    lines = [r.getMessage() for r in caplog.records if "skipping a malformed event" in r.getMessage()]
    assert lines  # each bad message is logged...
    assert len(lines) <= 4 * BURST  # ...rate-limited per channel (2 buses x 2 channels)
    broadcast = _keys.broadcast_event_channel("rq")
    assert any(broadcast in line and "invalid event_type 1" in line for line in lines)


async def test_a_flood_of_poison_is_logged_a_few_times_then_summarised(
    redis_url: str, redis: aioredis.Redis, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from asyncsched.events import _poison

    settings_ = Settings(redis_url=redis_url)
    with caplog.at_level(logging.ERROR, logger="asyncsched.events"):
        async with EventBus(settings=settings_, agent_name="victim") as bus:
            for _ in range(300):
                await redis.publish(_keys.broadcast_event_channel("rq"), POISON["integer event_type"])
            good = await bus.publish("probe.ok", "src")
            assert (await bus.listen(15)) == good
            monkeypatch.setattr(_poison, "WINDOW", 0.0)  # the window is over: the next one summarises
            await redis.publish(_keys.broadcast_event_channel("rq"), b"null")
            assert (await bus.publish("probe.ok", "src")) == await bus.listen(15)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("skipping a malformed event" in m for m in messages) == BURST + 1
    assert any(f"{300 - BURST} more malformed message(s)" in m for m in messages)


async def test_a_raising_callback_never_stops_the_reader(bus_settings: Settings) -> None:
    got = Collector()
    calls = 0

    async def flaky(event: Event) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        await got.async_cb(event)

    async with EventBus(settings=bus_settings, agent_name="a") as bus:
        await bus.subscribe("a", "*", flaky)
        await bus.publish("x.y", "src")
        second = await bus.publish("x.y", "src")
        await got.wait(1)
        assert got.events == [second]
        assert bus._reader is not None
        assert bus._reader.restarts == 0


@pytest.fixture
def bus_settings(redis_url: str) -> Settings:
    return Settings(redis_url=redis_url)


async def test_durable_consumer_dead_letters_poison_and_goes_on(
    bus_settings: Settings, redis: aioredis.Redis
) -> None:
    got = Collector()
    stream = _keys.agent_event_stream("rq", "billing")
    async with EventBus(settings=bus_settings) as bus:
        sub = await bus.subscribe("billing", "*", got.async_cb, durable=True)
        assert sub.active
        for data in POISON.values():
            await redis.xadd(stream, {"e": data})
        await redis.xadd(stream, {"not-e": "x"})
        await redis.xadd(_keys.broadcast_event_stream("rq"), {"e": POISON["integer event_type"]})
        good = await bus.publish("probe.ok", "src", target_agent="billing")
        await got.wait(1)
        assert got.events == [good]
        consumer = bus._durable["billing"]
        assert consumer._reader.restarts == 0

        async def all_dead_lettered() -> bool:
            return len(await list_dead_letters(redis, "rq", count=1000)) == len(POISON) + 2

        await eventually(all_dead_lettered, 30, "every poison entry in the dead-letter stream")
    letters = await list_dead_letters(redis, "rq", count=1000)
    assert {letter.group for letter in letters} == {"billing"}
    assert all(letter.reason.startswith("malformed") for letter in letters)
    assert any("event_type" in letter.reason for letter in letters)
    for key in (stream, _keys.broadcast_event_stream("rq")):
        assert (await redis.xpending(key, "billing"))["pending"] == 0


async def test_a_durable_callback_is_retried_then_dead_lettered_and_can_be_replayed(
    bus_settings: Settings, redis: aioredis.Redis
) -> None:
    attempts: list[str] = []
    got = Collector()
    failing = True

    async def handler(event: Event) -> None:
        attempts.append(event.id)
        if failing:
            raise RuntimeError("downstream is down")
        await got.async_cb(event)

    async with EventBus(settings=bus_settings, durable_retries=2) as bus:
        await bus.subscribe("billing", "*", handler, durable=True)
        sent = await bus.publish("invoice.created", "crm", target_agent="billing")
        letters = await eventually(lambda: list_dead_letters(redis, "rq"), 30, "the dead letter")
        assert attempts == [sent.id] * 3  # 1 + 2 retries, then the dead-letter stream
        assert "downstream is down" in letters[0].reason
        failing = False
        after = await bus.publish("invoice.paid", "crm", target_agent="billing")
        await got.wait(1)
        assert [e.id for e in got.events] == [after.id]  # the consumer went on
        await replay_dead_letter(redis, "rq", letters[0].id)
        await got.wait(2)
        assert got.events[1].id == sent.id
    assert await list_dead_letters(redis, "rq") == []


async def test_dead_letters_cli_lists_replays_and_deletes(real_redis_url: str, tmp_path: Path) -> None:
    settings_ = Settings(redis_url=real_redis_url)
    stream = _keys.agent_event_stream("rq", "billing")
    async with EventBus(settings=settings_) as bus:
        await bus.subscribe("billing", "never.*", lambda e: None, durable=True)
        await bus.redis.xadd(stream, {"e": POISON["integer event_type"]})
        await eventually(lambda: list_dead_letters(bus.redis, "rq"), 30, "the dead letter")
    base = ["--redis-url", real_redis_url, "events", "dead-letters"]
    listed = Proc([*base, "--json"], tmp_path / "list.log")
    assert await asyncio.to_thread(listed.wait, 60) == 0
    rows = [json.loads(line) for line in listed.log().splitlines() if line.startswith("{")]
    listed.stop()
    assert len(rows) == 1
    assert rows[0]["group"] == "billing"
    assert "event_type" in rows[0]["reason"]
    replay = Proc([*base, "--replay", rows[0]["id"]], tmp_path / "replay.log")
    assert await asyncio.to_thread(replay.wait, 60) == 1  # a poison message is never put back
    assert "not put back" in replay.log() or "invalid" in replay.log()
    replay.stop()
    delete = Proc([*base, "--delete", rows[0]["id"]], tmp_path / "delete.log")
    assert await asyncio.to_thread(delete.wait, 60) == 0
    delete.stop()
    redis = aioredis.Redis.from_url(real_redis_url)
    try:
        assert await list_dead_letters(redis, "rq") == []
    finally:
        await redis.aclose()


async def test_worker_command_channel_survives_garbage(redis_url: str, redis: aioredis.Redis) -> None:
    settings_ = Settings(redis_url=redis_url)
    async with Worker(redis=redis_url, settings=settings_, heartbeat_interval=0.2, lease=5) as worker:
        task = asyncio.create_task(worker.run())
        channel = f"rq:pubsub:{worker.name}"
        await eventually(
            lambda: _subscribers(redis, channel), 15, "the worker to listen on its command channel"
        )
        supervisors = list(worker._background)
        garbage = [*POISON.values(), b'{"command": 1}', b'{"command": "stop-job", "job_id": {"a": 1}}']
        garbage += [b'{"command": "stop-execution", "execution_id": [1]}', b'{"command": "reboot"}']
        for data in garbage:
            await redis.publish(channel, data)
        await redis.publish(channel, json.dumps({"command": "shutdown"}))
        await asyncio.wait_for(task, 30)  # the shutdown after the garbage was obeyed
        assert supervisors
        assert all(s.restarts == 0 for s in supervisors)


async def _subscribers(redis: aioredis.Redis, channel: str) -> bool:
    counts = await redis.pubsub_numsub(channel)
    return bool(counts and counts[0][1])


PACKED_POISON: list[dict[str, Any]] = [
    {"L": "k\x1fsuccess\x1fj"},  # an odd number of parts
    {"L": ""},
    {"L": b"k\x1fstarted\x1fj\x1f\xff\xfe\x1fq\x1fq"},  # a tag that is not UTF-8
    {"L": "k\x1fbogus\x1fj\x1fp4\x1fq\x1fq"},
    {"L": "zz\x1fyy"},  # no kind, no job id
    {"L": "k\x1fsuccess\x1fj\x1fp5\x1fq\x1fq\x1fs\x1fnan\x1fd\x1f1e400\x1fa\x1f-1"},
    {"L": "k\x1fstarted\x1fj\x1fp6\x1fq\x1fq", "L2": "x", "attempt": "many"},
]
"""Packed lifecycle records (``asyncsched._lifecycle.pack``) that no producer writes."""


async def test_lifecycle_publisher_skips_poison_records(
    bus_settings: Settings, redis: aioredis.Redis
) -> None:
    stream = _keys.lifecycle_stream("rq")
    async with (
        EventBus(settings=bus_settings, agent_name="*") as watcher,
        LifecyclePublisher(settings=bus_settings) as publisher,
        TaskQueue(settings=bus_settings) as queue,
    ):
        poison: list[dict[str, Any]] = [
            {"kind": "bogus", "job_id": "j", "queue": "q"},
            {"kind": "success", "job_id": "j", "queue": "q", "started_at": "1e308", "ended_at": "1e308"},
            {"kind": "success", "job_id": "j", "queue": "q", "started_at": "nan", "ended_at": "1"},
            {"kind": "started", "job_id": "j", "queue": "q", "attempt": "x"},
            {"kind": "started", "queue": "q"},
            {
                "kind": "queued",
                "job_id": "j",
                "queue": "q",
                "error": "\ud800".encode("utf-8", "surrogatepass"),
            },
            *PACKED_POISON,
        ]
        for fields in poison:
            await redis.xadd(stream, fields)
        job_id = await queue.enqueue("tests.hostile.hostilejobs:mark", args=["/dev/null"])
        while True:
            event = await watcher.listen(15)
            assert event is not None, "no task.queued after the poison"
            if event.event_type == "task.queued" and event.payload["job_id"] == job_id:
                break
        assert publisher._task is not None
        assert not publisher._task.done()


async def test_recorder_skips_poison_history_entries(
    redis_url: str, database_url: str, redis: aioredis.Redis
) -> None:
    from asyncsched.store import Database, ExecutionRepository, Recorder

    settings_ = Settings(redis_url=redis_url, database_url=database_url)
    stream = _keys.lifecycle_stream("rq")
    deep = "[" * 5000 + "]" * 5000
    now = time.time()  # (old times would be pruned by the retention at once)
    poison = [
        LifecycleRecord(Lifecycle.SUCCESS, "p1", "q", started_at=1e308, ended_at=1e308).encode(),
        {
            **LifecycleRecord(Lifecycle.SUCCESS, "p2", "q", started_at=1.0, ended_at=2.0).encode(),
            "result": deep,
        },
        {"kind": "started", "job_id": "p3", "queue": "q", "attempt": "1e400"},
        *PACKED_POISON,
    ]
    async with Database(settings=settings_) as db:
        await db.migrate()
        async with Recorder(redis, db=db, settings=settings_, flush_interval=0.05) as recorder:
            for fields in poison:
                await redis.xadd(stream, fields)
            good = LifecycleRecord(Lifecycle.SUCCESS, "good", "q", started_at=now, ended_at=now + 1)
            await redis.xadd(stream, good.encode())
            repo = ExecutionRepository(db)
            await eventually(lambda: _recorded(repo, "good"), 30, "the good record")
            assert recorder._task is not None
            assert not recorder._task.done()


async def _recorded(repo: Any, job_id: str) -> bool:
    try:
        return bool(await repo.get(job_id))
    except LookupError:
        return False


@pytest.mark.slow
async def test_run_live_log_goes_on_after_poison(real_redis_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = {
        "ASYNCSCHED_ALLOWED_FUNCTIONS": "tests.hostile",
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/run.db",
    }
    args = ["--redis-url", real_redis_url, "--log-level", "INFO", "run", "--port", str(port)]
    run = Proc(args, tmp_path / "run.log", env=env)
    try:
        await eventually(lambda: "dashboard http" in run.log(), 60, "the server to start")
        redis = aioredis.Redis.from_url(real_redis_url)
        try:
            for data in POISON.values():
                await redis.publish(_keys.broadcast_event_channel("rq"), data)
        finally:
            await redis.aclose()
        marks = tmp_path / "marks"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/api/scheduler", timeout=30) as client:
            body = {"function": "tests.hostile.hostilejobs:mark", "args": [str(marks)]}
            job = (await client.post("/jobs", json=body)).json()["job_id"]
            await eventually(
                lambda: f"success {'tests.hostile.hostilejobs:mark'}" in run.log(), 30, "the log"
            )
            assert job in run.log()
        assert "Task exception was never retrieved" not in run.log()
        assert "skipping a malformed event" in run.log()
        assert run.alive()
        run.signal(signal.SIGINT)
        assert await asyncio.to_thread(run.wait, 60) == 0
    finally:
        run.stop()


# ---------------------------------------------------------------------------------------------- hypothesis

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
_FIELD = st.one_of(_JSON, st.text(max_size=30), st.sampled_from(["a.b", "agent", "2026-01-01T00:00:00"]))
_ENVELOPE = st.fixed_dictionaries(
    {},
    optional={
        "id": _FIELD,
        "event_type": _FIELD,
        "source_agent": _FIELD,
        "target_agent": _FIELD,
        "payload": _JSON,
        "created_at": _FIELD,
    },
)


@settings(max_examples=300, deadline=None)
@given(envelope=_ENVELOPE)
@example(  # an id that needs escaping: it was written into the JSON unescaped
    envelope={
        "id": '"',
        "event_type": "a",
        "source_agent": "b",
        "target_agent": None,
        "payload": {},
        "created_at": "2026-01-01T00:00:00+00:00",
    }
)
def test_any_envelope_decodes_or_is_refused_as_malformed(envelope: dict[str, Any]) -> None:
    data = json.dumps(envelope).encode()
    try:
        event = Event.from_json(data)
    except MalformedEvent:
        return
    assert Event.from_json(event.to_json()) == event  # what a reader accepts, it can publish again


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(envelopes=st.lists(_ENVELOPE | st.binary(max_size=50).map(lambda b: {"raw": b.hex()}), max_size=5))
def test_any_message_on_the_bus_leaves_the_reader_alive(envelopes: list[dict[str, Any]]) -> None:
    async def scenario() -> None:
        settings_ = Settings(redis_url="memory://hostile-readers")
        async with EventBus(settings=settings_, agent_name="victim") as bus:
            got = Collector()
            await bus.subscribe("victim", "*", got.sync_cb)
            for envelope in envelopes:
                await bus.redis.publish(_keys.broadcast_event_channel("rq"), json.dumps(envelope))
            good = await bus.publish("probe.ok", "src")
            async with asyncio.timeout(15):
                while good not in got.events:
                    await got.wait(len(got.events) + 1)
            assert bus._reader is not None
            assert bus._reader.restarts == 0

    asyncio.run(scenario())


async def test_scheduler_change_feed_survives_garbage(
    redis_url: str, database_url: str, redis: aioredis.Redis
) -> None:
    """The change feed only wakes the scheduler (the version counter is the truth): garbage on its channel
    wakes it too, and changes made afterwards are still picked up."""
    from asyncsched.scheduler import TaskScheduler
    from tests.scheduler.conftest import FUNCTION, RecordingQueue, create_tables

    await create_tables(database_url)
    settings_ = Settings(redis_url=redis_url, database_url=database_url, agent="test-agent")
    queue = RecordingQueue()
    async with (
        TaskScheduler(settings=settings_, queue=queue, fire=True) as firer,
        TaskScheduler(settings=settings_, queue=queue) as api,
    ):
        await eventually(firer._listener_ready.is_set, 30, "the change feed")
        for data in POISON.values():
            await redis.publish(firer.index.channel, data)
        await api.register_task(name="t", type="cron", schedule="* * * * * *", function=FUNCTION)
        assert firer._listener_ready.is_set()  # no message (invalid UTF-8 included) interrupts the feed
        await eventually(lambda: len(queue.calls) >= 1, 30, "the new task to fire")
        assert firer._listener_ready.is_set()
        assert firer._runner is not None
        assert firer._runner.running
        assert firer._runner.restarts == 0  # the firing loop never crashed
