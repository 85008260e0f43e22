"""The wire layer: one key module, one script registry (one NOSCRIPT path), typed script calls, the job
hash's field names (issue 19)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import redis.asyncio as aioredis

from asyncsched import _keys
from asyncsched._redis import create_redis
from asyncsched._redis.connection import Line
from asyncsched._redis.scripts import Reply, ScriptRegistry, as_bytes, as_int, as_list, as_text
from asyncsched.exceptions import RedisRefused
from asyncsched.queue import TaskQueue
from asyncsched.rq import keys as rq_keys
from asyncsched.rq import slots
from asyncsched.rq._calls import (
    CancelCall,
    DeleteFailedCall,
    EmptyCall,
    EnqueueCall,
    ProgressCall,
    RequeueCall,
)
from asyncsched.rq._scripts import SCRIPT_NAMES, source
from asyncsched.rq.jobhash import JOB_FIELDS, JobField, JobHash
from asyncsched.rq.keys import RQKeys

SCRIPTS = Path(rq_keys.__file__).parent / "scripts"
_ECHO = "return {KEYS[1] or '', ARGV[1] or ''}"


def test_asyncsched_keys_are_the_key_modules_own() -> None:
    for name in rq_keys.__all__:
        assert getattr(_keys, name) is getattr(rq_keys, name), name
    k = RQKeys("p")
    assert k.dependents("j") == "p:job:j:dependents"
    assert k.dependencies("j") == "p:job::j:dependencies"  # RQ's own spelling, two colons
    one = [k.job("j"), k.execution("j", "e"), k.executions("j"), k.results("j"), k.dependents("j")]
    assert k.execution_keys([("j", "e", "q")]) == one  # built at once for finish.lua
    assert rq_keys.limit_key("p", "k", "active") == "p:asyncsched:limit:k:active"


def test_scripts_spell_keys_only_in_lib_keys() -> None:
    """Outside lib_keys.lua no script of the package (the wire format's, the scheduler's, the Recorder's,
    the event bus's) concatenates the prefix with a key name, or a job id with a job key's prefix."""
    spelled = re.compile(
        r"\bp \.\. '|\.\. ':(job|queue|worker|wip|results|execution|rl|asyncsched)|ARGV\[\d+\] \.\. id"
    )
    package = SCRIPTS.parents[1]
    assert len(list(package.rglob("*.lua"))) > len(list(SCRIPTS.glob("*.lua")))
    for path in sorted(package.rglob("*.lua")):
        if path.name == "lib_keys.lua":
            continue
        code = [ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("--")]
        bad = [ln for ln in code if spelled.search(ln)]
        assert not bad, f"{path.name} builds keys itself: {bad}"


def test_every_script_gets_lib_keys_first() -> None:
    text = source("claim")
    assert text.startswith((SCRIPTS / "lib_keys.lua").read_text())
    for name in SCRIPT_NAMES:
        assert "--#include" not in source(name)


async def test_lib_keys_builds_what_rq_keys_builds(redis: aioredis.Redis) -> None:
    lua = (
        (SCRIPTS / "lib_keys.lua").read_text()
        + """
local p = ARGV[1]
return {key_job(p, 'j'), key_dependents(p, 'j'), key_dependencies(p, 'j'), key_results(p, 'j'),
  key_executions(p, 'j'), key_execution(p, 'j:e'), key_queues(p), key_queue(p, 'q'), key_intermediate(p, 'q'),
  key_registry(p, 'wip', 'q'), key_registry(p, 'failed', 'q'), key_worker(p, 'w'),
  key_worker_executions(p, 'w'), key_pubsub(p, 'w'), key_scheduler_lock(p, 'q'), key_suspended(p),
  key_rl(p, 'k'), key_rl(p, 'k', 'allowed'), key_rl_keys(p), key_paused(p, 'q'), key_wake(p, 'q'),
  key_quarantine(p, 'q'), key_claiming_registry(p), key_claiming(p, 'w'), key_rate_limit_waits(p),
  key_limit(p, 'k'), key_limit(p, 'k', 'waiting'), key_limit_keys(p), key_limit_due(p), key_limit_seq(p),
  key_template(p, 'q'), key_result_scratch(p, 'q')}
"""
    )
    got = [b.decode() for b in await redis.eval(lua, 0, "pfx")]
    k, p = RQKeys("pfx"), "pfx"
    assert got == [
        k.job("j"), k.dependents("j"), k.dependencies("j"), k.results("j"), k.executions("j"),
        k.execution("j", "e"), k.queues, k.queue("q"), k.intermediate("q"), k.wip("q"), k.failed("q"),
        k.worker("w"), k.worker_executions("w"), k.pubsub("w"), k.scheduler_lock("q"), k.suspended,
        k.rate_limit("k"), k.rate_limit("k", "allowed"), k.rate_limit_keys, rq_keys.paused_queue(p, "q"),
        rq_keys.scheduled_wake(p, "q"), rq_keys.quarantine(p, "q"), rq_keys.claiming_registry(p),
        rq_keys.claiming_list(p, "w"), rq_keys.rate_limit_waits(p), rq_keys.limit_key(p, "k"),
        rq_keys.limit_key(p, "k", "waiting"), rq_keys.limit_keys(p), rq_keys.limit_due(p),
        rq_keys.limit_seq(p), rq_keys.enqueue_template(p, "q"), slots.result_scratch(p, "q"),
    ]  # fmt: skip


def test_typed_calls_put_keys_in_keys() -> None:
    k = RQKeys("p")
    cancel = CancelCall(k, "S", "j", 5, 100, "ts")
    assert (cancel.SCRIPT, cancel.to_keys(), cancel.to_args()) == (
        "cancel",
        ["p:job:j", "S"],
        ["p", "j", 5, 100, "ts"],
    )
    requeue = RequeueCall(k, "S", "j", 5, "ts", 100)
    assert requeue.to_keys() == ["p:job:j", "S", "p:queues"]
    assert requeue.to_args() == ["p", "j", 5, "ts", 100]
    assert EmptyCall(k, "q", 10).to_keys() == ["p:queue:q"]
    assert DeleteFailedCall(k, "q", 10).to_keys() == ["p:failed:q"]
    assert ProgressCall(k, "j", "w", None, b"m").to_args() == ["w", "", "0", b"m"]
    enqueue = EnqueueCall(k, "S", 100, ["seg"])
    assert enqueue.to_keys() == ["S", "p:queues"]
    assert enqueue.to_args() == ["p", 100, "seg"]


async def test_registry_reloads_a_forgotten_script_on_every_path(real_redis_url: str) -> None:
    client = create_redis(real_redis_url)
    registry = ScriptRegistry(client, {"echo": _ECHO})
    line = Line(client)
    try:
        for attempt in range(2):  # first call: never loaded; then: loaded, flushed, reloaded
            await client.script_flush()
            assert await registry.run("echo", ["a"], ["k"]) == [b"k", b"a"]
            await client.script_flush()
            assert await registry.run_on(line, "echo", ["b"], ["k"]) == [b"k", b"b"]
            await client.script_flush()
            assert await registry.run_many("echo", [(["k1"], ["c"]), (["k2"], ["d"])]) == [
                [b"k1", b"c"],
                [b"k2", b"d"],
            ]
            await client.script_flush()
            (reply,) = await line.execute(registry.command("echo", ["e"], ["k"]))
            assert await registry.settle("echo", reply, ["e"], ["k"]) == [b"k", b"e"], attempt
        with pytest.raises(Exception, match="boom"):
            await ScriptRegistry(client, {"bad": "return redis.error_reply('boom')"}).run("bad", [])
    finally:
        await line.aclose()
        await client.aclose()


@dataclass(frozen=True)
class _Length:
    """A typed call of ``_ECHO``, read by its own ``parse``: the length of the echoed argument."""

    SCRIPT: ClassVar[str] = "echo"
    arg: str

    def to_keys(self) -> list[Any]:
        return ["k"]

    def to_args(self) -> list[Any]:
        return [self.arg]

    @staticmethod
    def parse(reply: Reply) -> int:
        return len(as_bytes(as_list(reply)[1]))


@dataclass(frozen=True)
class _Count:
    SCRIPT: ClassVar[str] = "count"
    parse = staticmethod(as_int)

    def to_keys(self) -> list[Any]:
        return []

    def to_args(self) -> list[Any]:
        return []


async def test_typed_calls_return_what_their_parse_reads(real_redis_url: str) -> None:
    client = create_redis(real_redis_url)
    registry = ScriptRegistry(client, {"echo": _ECHO})
    line = Line(client)
    try:
        assert await registry.call(_Length("abc")) == 3
        assert await registry.call(_Length("abcd"), line) == 4
        assert await registry.call_many([_Length("a"), _Length("ab")]) == [1, 2]
        with pytest.raises(RedisRefused, match="expected an integer"):  # a shape the call never reads
            await ScriptRegistry(client, {"count": "return 'x'"}).call(_Count())
    finally:
        await line.aclose()
        await client.aclose()


def test_replies_are_narrowed_or_refused() -> None:
    assert as_int(3) == 3
    assert as_bytes(b"x") == b"x"
    assert as_text(b"\xc3\xa9") == "\u00e9"
    assert as_list([1, b"a", None]) == [1, b"a", None]
    for helper, wrong, expected in [
        (as_int, b"1", "an integer"),
        (as_bytes, 1, "a string"),
        (as_text, None, "a string"),
        (as_list, b"x", "an array"),
    ]:
        with pytest.raises(
            RedisRefused, match=f"unexpected reply from a Redis script: .*expected {expected}"
        ):
            helper(wrong)


async def test_queue_scripts_survive_a_script_flush(real_redis_url: str) -> None:
    async with TaskQueue(real_redis_url) as queue:
        await queue.redis.script_flush()
        job_id = await queue.enqueue("tests.jobs:add", args=(1, 2))
        await queue.redis.script_flush()
        assert await queue.cancel(job_id) is True
        await queue.redis.script_flush()
        await queue.requeue(job_id)
        await queue.redis.script_flush()
        assert await queue.empty("default") == 1


def test_job_fields_name_every_field_once() -> None:
    assert len(set(JOB_FIELDS)) == len(JOB_FIELDS) == len(JobField)
    h = JobHash({b"asyncsched_attempt": b"3", b"timeout": b"x", b"origin": b"q"})
    assert (h.attempt, h.integer(JobField.TIMEOUT), h.text(JobField.ORIGIN)) == (3, None, "q")
    assert JobHash({}).attempt == 1


def test_enqueue_options_are_enqueues_keyword_arguments() -> None:
    """``EnqueueOptions`` (what ``enqueue`` and ``enqueue_many`` prepare jobs from) has exactly
    ``TaskQueue.enqueue``'s arguments, with the same defaults."""
    import dataclasses
    import inspect

    from asyncsched.queue._enqueue import ENQUEUE_OPTIONS, EnqueueOptions

    params = dict(inspect.signature(TaskQueue.enqueue).parameters)
    params.pop("self")
    assert set(params) == ENQUEUE_OPTIONS
    defaults = {f.name: f.default for f in dataclasses.fields(EnqueueOptions)}
    assert {name: p.default for name, p in params.items()} == defaults
    assert list(params) == [f.name for f in dataclasses.fields(EnqueueOptions)]  # enqueue's call: in order


async def test_enqueue_passes_each_argument_to_its_own_option(monkeypatch: pytest.MonkeyPatch) -> None:
    """``enqueue`` builds its :class:`EnqueueOptions` positionally (the fast way): every argument lands in
    the field of its name (two swapped in that call would fail here)."""
    from asyncsched.queue._enqueue import ENQUEUE_OPTIONS, Preparer

    seen = []

    class Stop(Exception):
        pass

    def prepare(self: Preparer, now: object, options: object) -> None:
        seen.append(options)
        raise Stop

    monkeypatch.setattr(Preparer, "prepare", prepare)
    given = {name: object() for name in ENQUEUE_OPTIONS}
    q = TaskQueue("memory://enqueue-args")
    rest = {name: value for name, value in given.items() if name != "func"}
    with pytest.raises(Stop):
        await q.enqueue(given["func"], **rest)
    await q.aclose()
    (options,) = seen
    assert {name: getattr(options, name) for name in given} == given


def test_our_job_fields_are_spelled_only_by_the_codec() -> None:
    """No Python module but ``rq/jobhash.py`` spells one of asyncsched's job-hash fields (they go through
    ``JobField``); the Lua scripts spell them too, as RQ's own fields are spelled by RQ."""
    ours = {f.value for f in JobField if f.value.startswith("asyncsched_")}
    src = Path(rq_keys.__file__).parents[1]
    found = [
        f"{path.relative_to(src)}: {literal}"
        for path in sorted(src.rglob("*.py"))
        if path.name != "jobhash.py"
        for literal in re.findall(r"""["'](asyncsched_\w+)["']""", path.read_text())
        if literal in ours
    ]
    assert found == []
