"""What RQ's per-job state alone costs Redis: the floor under any worker that keeps it.

Enqueues N no-op jobs (``TaskQueue.enqueue_many``, as ``redis_cost.py``) on a fresh redis-server, then
drains them three ways on fresh servers, each measured by ``INFO cpu`` (user + sys) per job:

- ``floor``: a bare Lua script, 50 jobs a call, doing only the writes that RQ's state needs and our worker
  makes (the claim: pop, ``HGETALL`` of the job returned to the caller, status ``HSET``, ``PERSIST``,
  execution hash and its TTL, executions zset and its TTL; the finish: the state check ``HMGET``, the
  outcome ``HSET``, the results stream entry through a scratch stream with its TTL, the job's TTL, the
  execution dropped; registries and the worker's sets once a batch), and nothing else: no lifecycle
  record, no flow limits, retries, callbacks or dependents, no checks of key types. The least Redis CPU a
  job can cost with RQ's full state kept, however the scripts are written;
- ``floor+life``: the same with one lifecycle stream entry a job at its claim and one at its finish
  (asyncsched's history records, as packed as they are today);
- ``floor+life/call``: the same records, all of a call's in one stream entry (one ``XADD`` a call: what
  batching the records would save at best);
- ``asyncsched``: our burst worker (``python -m asyncsched.worker --burst``), as ``redis_cost.py``;
- ``rq`` (with ``--rq``): RQ's own worker (``rq worker --burst -w rq.worker.SimpleWorker``), for scale.

    python benchmarks/rq_state_floor.py [--n 20000] [--rounds 3] [--rq]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time

import redis

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [os.path.join(ROOT, "src"), ROOT, HERE]

from redis_cost import _cpu, _enqueue  # noqa: E402
from tests.servers import redis_server  # noqa: E402

# ARGV: worker, now (s), now_ts (RQ text), lease, result ttl, life ('0' none, '1' an entry a record, '2' one
# entry a call), n. KEYS: none (a bench).
CLAIM = r"""
local w, now_s, now_ts, lease, n = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[7])
local life, life1 = ARGV[6] ~= '0', ARGV[6] == '2' and {'XADD', 'rq:asyncsched:lifecycle', '*'}
local exec_ttl = tostring(tonumber(lease) + 60)
local ids = redis.call('LPOP', 'rq:queue:default', n)
if not ids then return {} end
local out, wip, wset = {}, {'ZADD', 'rq:wip:default'}, {'SADD', 'rq:worker:' .. w .. ':executions'}
for k, id in ipairs(ids) do
  local jk = 'rq:job:' .. id
  local h = redis.call('HGETALL', jk)
  local ex = string.format('%032x', k)
  redis.call('HSET', jk, 'status', 'started', 'started_at', now_ts, 'worker_name', w,
    'last_heartbeat', now_ts)
  redis.call('PERSIST', jk)
  local ek, xk = 'rq:executions:' .. id, 'rq:execution:' .. id .. ':' .. ex
  redis.call('ZADD', ek, now_s, ex)
  redis.call('HSET', xk, 'id', ex, 'job_id', id, 'created_at', now_s, 'last_heartbeat', now_s,
    'worker_name', w)
  redis.call('EXPIRE', xk, lease)
  redis.call('EXPIRE', ek, exec_ttl)
  wip[#wip + 1] = now_s; wip[#wip + 1] = id .. ':' .. ex
  wset[#wset + 1] = id .. ':' .. ex
  local rec = life and 'k\31started\31j\31' .. id .. '\31q\31default\31w\31' .. w .. '\31s\31' .. now_s ..
    '\31a\0311\31f\31tasks.noop'
  if rec and not life1 then redis.call('XADD', 'rq:asyncsched:lifecycle', '*', 'L', rec)
  elseif rec then life1[#life1 + 1] = 'L'; life1[#life1 + 1] = rec end
  out[#out + 1] = id; out[#out + 1] = ex; out[#out + 1] = h
end
redis.call(unpack(wip))
redis.call(unpack(wset))
if life1 then redis.call(unpack(life1)) end
return out
"""

# ARGV as CLAIM's, then id, exec pairs.
FINISH = r"""
local w, now_s, now_ts, rttl = ARGV[1], ARGV[2], ARGV[3], ARGV[5]
local life, life1 = ARGV[6] ~= '0', ARGV[6] == '2' and {'XADD', 'rq:asyncsched:lifecycle', '*'}
local sk = 'rq:asyncsched:result-scratch:default'
local gone, wip, reg = {'DEL'}, {'ZREM', 'rq:wip:default'}, {'ZADD', 'rq:finished:default'}
local wset = {'SREM', 'rq:worker:' .. w .. ':executions'}
local ttl_set = false
for k = 8, #ARGV, 2 do
  local id, ex = ARGV[k], ARGV[k + 1]
  local jk = 'rq:job:' .. id
  local cur = redis.call('HMGET', jk, 'status', 'worker_name')
  if cur[1] == 'started' and cur[2] == w then
    redis.call('HSET', jk, 'status', 'finished', 'ended_at', now_ts, 'last_heartbeat', now_ts)
    redis.call('XADD', sk, 'MAXLEN', '~', '10', '*', 'type', '1', 'worker_name', w, 'execution_id', ex,
      'execution_started_at', now_s, 'execution_ended_at', now_s)
    if not ttl_set then redis.call('EXPIRE', sk, rttl); ttl_set = true end
    redis.call('COPY', sk, 'rq:results:' .. id)
    redis.call('XTRIM', sk, 'MAXLEN', '0')
    redis.call('EXPIRE', jk, rttl)
    reg[#reg + 1] = now_s; reg[#reg + 1] = id
    local rec = life and 'k\31finished\31j\31' .. id .. '\31q\31default\31w\31' .. w .. '\31s\31' .. now_s ..
      '\31d\31' .. now_s .. '\31a\0311\31f\31tasks.noop'
    if rec and not life1 then redis.call('XADD', 'rq:asyncsched:lifecycle', '*', 'L', rec)
    elseif rec then life1[#life1 + 1] = 'L'; life1[#life1 + 1] = rec end
  end
  redis.call('ZREM', 'rq:executions:' .. id, ex)
  gone[#gone + 1] = 'rq:execution:' .. id .. ':' .. ex
  wip[#wip + 1] = id .. ':' .. ex
  wset[#wset + 1] = id .. ':' .. ex
end
redis.call('DEL', sk)
redis.call(unpack(gone)); redis.call(unpack(wip)); redis.call(unpack(wset))
if #reg > 2 then redis.call(unpack(reg)) end
if life1 and #life1 > 3 then redis.call(unpack(life1)) end
return 1
"""


def _bare(url: str, life: str) -> None:
    """Drain the queue with the bare scripts, 50 jobs a call (claim, then finish, like a burst worker)."""
    r = redis.Redis.from_url(url)
    claim, finish = r.register_script(CLAIM), r.register_script(FINISH)
    while True:
        now = time.time()
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
        head = ["w1", f"{now:.6f}", ts, "180", "500", life]
        got = claim(args=[*head, 50])
        if not got:
            break
        pairs: list[bytes] = []
        for k in range(0, len(got), 3):
            pairs += [got[k], got[k + 1]]
        finish(args=[*head, 0, *pairs])
    r.close()


def _ours(url: str) -> None:
    path = os.pathsep.join([HERE, os.path.join(ROOT, "src")])
    env = {**os.environ, "PYTHONPATH": path, "BENCH_LOG": os.devnull}
    cmd = [sys.executable, "-m", "asyncsched.worker", "--redis-url", url, "--no-scheduler", "--burst"]
    null = subprocess.DEVNULL
    subprocess.run(cmd, env=env, cwd=HERE, stdout=null, stderr=null, check=True)


def _rq(url: str) -> None:
    env = {**os.environ, "PYTHONPATH": HERE, "BENCH_LOG": os.devnull}
    cmd = [sys.executable, "-m", "rq.cli", "worker", "--burst", "--url", url, "-w", "rq.worker.SimpleWorker",
           "-S", "rq.serializers.JSONSerializer", "--logging_level", "WARNING", "default"]  # fmt: skip
    subprocess.run(cmd, env=env, cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)


def one(how: str, n: int) -> float:
    """Redis CPU (µs) a job of the drain ``how`` (floor, floor+life, asyncsched, rq)."""
    with redis_server() as srv:
        r = redis.Redis.from_url(srv.url)
        asyncio.run(_enqueue(srv.url, n))
        c0 = _cpu(r)
        if how == "asyncsched":
            _ours(srv.url)
        elif how == "rq":
            _rq(srv.url)
        else:
            _bare(srv.url, life={"floor": "0", "floor+life": "1", "floor+life/call": "2"}[how])
        c1 = _cpu(r)
        left, done = r.llen("rq:queue:default"), r.zcard("rq:finished:default")
        r.close()
    assert left == 0, f"{how}: {left} jobs left"
    assert done == n, f"{how}: {done} of {n} jobs finished"
    return (c1 - c0) / n * 1e6


def main() -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rq", action="store_true", help="also drain with RQ's own worker (SimpleWorker)")
    opts = parser.parse_args()
    hows = ["floor", "floor+life", "floor+life/call", "asyncsched"] + (["rq"] if opts.rq else [])
    got: dict[str, list[float]] = {h: [] for h in hows}
    for _ in range(opts.rounds):  # interleaved, so load changes hit every drain alike
        for how in hows:
            got[how].append(one(how, opts.n))
    for how in hows:
        runs = ", ".join(f"{v:.1f}" for v in got[how])
        print(f"{how:12} Redis CPU a job: median {statistics.median(got[how]):.1f} µs ({runs})")


if __name__ == "__main__":
    main()
