-- Renew the leases of a worker's running executions the way RQ's maintain_heartbeats does (wip score,
-- execution hash, executions zset, job last_heartbeat) and the worker registration.
-- ARGV: prefix, worker, now (int s), now_ts, now (float), lease, worker_ttl, n, <id, exec, queue>*n
-- Returns: {worker_key_existed (0|1), <ids of jobs whose hash says another state (cancelled, reaped)>...}
-- A job hash of another type (a foreign writer's SET) counts as another state; registries of another
-- type are left alone: one bad key never fails the heartbeat of the worker's other jobs.
--#include types
local p, w, now, now_ts, nowf = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local lease, wttl, n = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local wkey = key_worker(p, w)
local wbad = wrong_type(wkey, 'hash')
local out = {redis.call('EXISTS', wkey)}
if wbad then out[1] = 0 end
for k = 0, n - 1 do
  local id, ex, q = ARGV[9 + 3 * k], ARGV[10 + 3 * k], ARGV[11 + 3 * k]
  local jk = key_job(p, id)
  local cur = {'wrong type', nil}
  if not wrong_type(jk, 'hash') then cur = redis.call('HMGET', jk, 'status', 'worker_name') end
  local member = id .. ':' .. ex
  if cur[1] == 'started' and cur[2] == w then
    local wk, xk, ek = key_registry(p, 'wip', q), key_execution(p, member), key_executions(p, id)
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
  redis.call('EXPIRE', key_worker_executions(p, w), lease + 60)  -- EXPIRE takes a key of any type
end
return out
