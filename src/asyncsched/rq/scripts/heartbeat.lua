-- Renew the leases of a worker's running executions the way RQ's maintain_heartbeats does (wip score,
-- execution hash, executions zset, job last_heartbeat) and the worker registration.
-- KEYS: <p>:worker:<w>, <p>:worker:<w>:executions, then four per running execution: <p>:job:<id>,
--       <p>:wip:<queue>, <p>:execution:<id>:<exec>, <p>:executions:<id> (asyncsched.rq._calls.HeartbeatCall)
-- ARGV: worker, now (int s), now_ts, now (float), lease, worker_ttl, n, <id, exec>*n
-- Returns: {worker_key_existed (0|1), <ids of jobs whose hash says another state (cancelled, reaped)>...}
-- A job hash of another type (a foreign writer's SET) counts as another state; registries of another
-- type are left alone: one bad key never fails the heartbeat of the worker's other jobs.
--#include types
local w, now, now_ts, nowf = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local lease, wttl, n = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local wkey = KEYS[1]
local wbad = wrong_type(wkey, 'hash')
local out = {redis.call('EXISTS', wkey)}
if wbad then out[1] = 0 end
for k = 0, n - 1 do
  local id, ex = ARGV[8 + 2 * k], ARGV[9 + 2 * k]
  local jk, wk, xk, ek = KEYS[3 + 4 * k], KEYS[4 + 4 * k], KEYS[5 + 4 * k], KEYS[6 + 4 * k]
  local cur = {'wrong type', nil}
  if not wrong_type(jk, 'hash') then cur = redis.call('HMGET', jk, 'status', 'worker_name') end
  local member = id .. ':' .. ex
  if cur[1] == 'started' and cur[2] == w then
    if not wrong_type(wk, 'zset') then redis.call('ZADD', wk, now + lease, member) end
    if not wrong_type(xk, 'hash') then
      redis.call('HSET', xk, 'last_heartbeat', nowf)
      redis.call('EXPIRE', xk, lease)
    end
    if not wrong_type(ek, 'zset') then
      redis.call('ZADD', ek, now + lease + 60, ex)
      redis.call('EXPIRE', ek, lease + 60)
    end
    redis.call('HSET', jk, 'last_heartbeat', now_ts)
  elseif cur[1] then
    out[#out + 1] = id
  end
  -- a vanished hash (Redis lost its data, or the job was deleted) is not a stop: the job runs on and
  -- finish.lua records its outcome from what the worker knows
end
if out[1] == 1 then
  redis.call('HSET', wkey, 'last_heartbeat', now_ts)
  redis.call('EXPIRE', wkey, wttl)
  redis.call('EXPIRE', KEYS[2], lease + 60)  -- EXPIRE takes a key of any type
end
return out
