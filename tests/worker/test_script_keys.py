"""Every key a script touches is passed to it in ``KEYS`` (built by ``rq/keys.py``) or derived from what it
reads by ``rq/scripts/lib_keys.lua`` (issue 19; what Redis Cluster needs, issue 20).

The scripts are run instrumented on a real redis-server: each Redis command a script sends is checked
against its ``KEYS`` and the keys ``lib_keys.lua``'s functions built in that call; any other key (one built by
concatenation, or found in data and used as is) is recorded in ``__undeclared`` and fails the test. The
scenario drives every worker script: claim (plain, flow-limited and rate-limited jobs), finish (results,
dependents, retries, repeats), heartbeat, reap (an orphan, a dead worker's claiming list), promote, limits
and release_locks; then the queue's scripts.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from asyncsched.config import Settings
from asyncsched.queue import JobStatus, RateLimit, Retry, TaskQueue
from asyncsched.rq import _scripts
from asyncsched.rq import keys as rq_keys
from asyncsched.rq._calls import HeartbeatCall
from asyncsched.rq.keys import RQKeys
from asyncsched.testing import run_burst
from asyncsched.worker import Worker
from tests import jobs

SCRIPTS = Path(rq_keys.__file__).parent / "scripts"
WORKER_SCRIPTS = ("claim", "finish", "heartbeat", "reap", "promote", "release_locks", "limits")

# lib_keys.lua's functions each script may call (itself or through the libraries it includes): the keys it
# derives from data (docs/architecture.md, "Wire format"). Anything known before the call is in KEYS.
DERIVED = {
    "claim": {"key_job", "key_executions", "key_execution", "key_queue", "key_limit", "key_limit_keys",
              "key_limit_due", "key_limit_seq", "key_rl", "key_rl_keys", "key_rate_limit_waits"},
    "finish": {"key_job", "key_dependencies", "key_registry", "key_queue", "key_rl", "key_rl_keys",
               "key_rate_limit_waits", "key_limit", "key_limit_keys", "key_limit_due", "key_limit_seq",
               "key_result_scratch"},
    "heartbeat": set(),
    "reap": {"key_job", "key_executions", "key_execution", "key_results", "key_worker",
             "key_worker_executions", "key_claiming", "key_queue", "key_quarantine", "key_first_seen",
             "key_rl", "key_rl_keys", "key_rate_limit_waits"},
    # RQ 3's RateLimit admission (lib_ratelimit.rl_push) names the job's limit keys and its queue itself
    "promote": {"key_job", "key_queue", "key_rl", "key_rl_keys", "key_rate_limit_waits"},
    "release_locks": set(),
    "limits": {"key_job", "key_queue", "key_limit", "key_limit_due", "key_limit_keys", "key_limit_seq"},
}  # fmt: skip

# Redis commands whose every argument is a key, or whose first two are; others: the first (TIME: none)
_CHECK = """
local __known = {}
for _, k in ipairs(KEYS) do __known[k] = true end
local __ALL = {DEL = true, EXISTS = true, UNLINK = true, MGET = true, TOUCH = true}
local __TWO = {LMOVE = true, RPOPLPUSH = true, SMOVE = true, COPY = true}
local function __check(cmd, ...)
  local args, c = {...}, string.upper(cmd)
  local n = 1
  if c == 'TIME' then n = 0 elseif __ALL[c] then n = #args elseif __TWO[c] then n = 2 end
  for i = 1, n do
    if not __known[args[i]] then
      redis.call('RPUSH', '__undeclared', c .. ' ' .. tostring(args[i]))
      error('key neither in KEYS nor built by lib_keys.lua: ' .. tostring(args[i]))
    end
  end
end
local function __call(cmd, ...) __check(cmd, ...); return redis.call(cmd, ...) end
local function __pcall(cmd, ...) __check(cmd, ...); return redis.pcall(cmd, ...) end
"""


def instrumented(name: str) -> str:
    """``source(name)`` with every key a command names checked (see the module's docstring)."""
    return instrument(_scripts.source(name))


def instrument(text: str) -> str:
    """A script's text (``lib_keys.lua`` first) with every key a command names checked."""
    lib = (SCRIPTS / "lib_keys.lua").read_text()
    assert text.startswith(lib)
    body = text[len(lib) :].replace("redis.call(", "__call(").replace("redis.pcall(", "__pcall(")
    wraps = "".join(
        f"local __{f} = {f}\n{f} = function(...) local k = __{f}(...); __known[k] = true; return k end\n"
        for f in re.findall(r"^local function (key_\w+)", lib, re.MULTILINE)
    )
    return lib + _CHECK + wraps + body


@pytest.fixture
def checked_scripts(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _scripts.SCRIPT_NAMES:
        monkeypatch.setitem(_scripts._SOURCES, name, instrumented(name))


def test_worker_scripts_derive_only_the_keys_they_read() -> None:
    """The lib_keys.lua functions each worker script reaches (directly or through its libraries) are
    those of the keys it can only know from data; the rest come in KEYS."""
    lib = (SCRIPTS / "lib_keys.lua").read_text()
    for name in WORKER_SCRIPTS:
        body = _scripts.source(name)[len(lib) :]
        used = set(re.findall(r"\b(key_\w+)\(", body))
        assert used == DERIVED[name], name


async def _undeclared(redis: aioredis.Redis) -> list[str]:
    return [x.decode() for x in await redis.lrange("__undeclared", 0, -1)]


async def test_the_check_catches_a_key_built_outside_lib_keys(real_redis_url: str) -> None:
    lib = (SCRIPTS / "lib_keys.lua").read_text()
    body = "redis.call('SET', key_job(ARGV[1], 'a'), 1)\nredis.call('EXISTS', KEYS[1], ARGV[1] .. ':job:b')\n"
    redis = aioredis.Redis.from_url(real_redis_url)
    try:
        with pytest.raises(ResponseError, match=r"neither in KEYS nor built by lib_keys\.lua: rq:job:b"):
            await redis.eval(instrument(lib + body), 1, "rq:queues", "rq")
        assert await _undeclared(redis) == ["EXISTS rq:job:b"]  # key_job's and the KEYS one passed
    finally:
        await redis.aclose()


async def _orphans(url: str, settings: Settings, redis: aioredis.Redis) -> str:
    """A dead worker's claiming list holding a job of ``other``; a job of ``other`` claimed, renewed once
    and then left with a lapsed lease. Returns the id in the claiming list."""
    k = RQKeys("rq")
    async with TaskQueue(url, settings=settings) as q:
        unclaimed = await q.enqueue(jobs.add, args=(8, 8), queue="other")
        await q.enqueue(jobs.add, args=(9, 9), queue="other", retry=1)
    await redis.hset(rq_keys.claiming_registry("rq"), "gone", "other")
    await redis.lmove(k.queue("other"), rq_keys.claiming_list("rq", "gone"), "LEFT", "RIGHT")
    async with Worker(["other"], redis=url, settings=settings, name="w2") as w2:
        reply = await w2._scripts.call(w2.claimer.call(1, [], ""))
        job_id, exec_id = reply[0].decode(), reply[1].decode()
        now = int(time.time())
        running = [(job_id, exec_id, "other")]
        beat = HeartbeatCall(k, "w2", now, "ts", str(now), 30, 90, running)
        assert await w2._scripts.call(beat) == [1]
        await redis.zadd(k.wip("other"), {f"{job_id}:{exec_id}": 1})  # its lease lapsed
    return unclaimed


async def test_scripts_touch_only_keys_passed_or_derived(checked_scripts: None, real_redis_url: str) -> None:
    url = real_redis_url
    settings = Settings(redis_url=url)
    redis = aioredis.Redis.from_url(url)
    try:
        async with TaskQueue(url, settings=settings) as q:
            parent = await q.enqueue(jobs.add, args=(1, 2))
            child = await q.enqueue(jobs.add, args=(2, 2), depends_on=parent)
            failing = await q.enqueue(jobs.fail, retry=Retry(max=1))
            later = await q.enqueue(jobs.add, args=(3, 3), delay=0.01)
            rated = [await q.enqueue(jobs.add, args=(4, i), rate_limit="lim:1/s") for i in range(2)]
            capped = await q.enqueue(jobs.add, args=(6, 6), max_concurrency=1, concurrency_key="c")
            slot = await q.enqueue(jobs.add, args=(7, 7), rate_limit=RateLimit("rq3", 1))
        unclaimed = await _orphans(url, settings, redis)
        async with Worker(["default", "other"], redis=url, settings=settings, burst=True) as w3:
            await w3.reap()  # (the worker reaps once as it starts, too)
            await asyncio.wait_for(w3.run(), 60)
            await w3.promoter.promote_once()
        await run_burst(["default", "other"], redis=url, settings=settings)
        assert await _undeclared(redis) == []
        async with TaskQueue(url, settings=settings) as q:
            done = [parent, child, later, *rated, capped, slot, unclaimed]
            assert [await q.status(j) for j in done] == [JobStatus.SUCCESS] * len(done)
            assert await q.status(failing) == JobStatus.FAILED
            # the queue's scripts, too
            job = await q.enqueue(jobs.add, args=(1, 1))
            await q.enqueue_many([{"func": jobs.add, "args": (i, i)} for i in range(10)])  # a template run
            assert await q.cancel(job)
            await q.requeue(job)
            await q.empty("default")
            await q.delete_failed("default")
        assert await _undeclared(redis) == []
    finally:
        await redis.aclose()
