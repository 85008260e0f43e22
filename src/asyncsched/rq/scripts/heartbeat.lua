-- Renew the leases of a worker's running executions the way RQ's maintain_heartbeats does (wip score,
-- execution hash, executions zset, job last_heartbeat) and the worker registration.
-- ARGV: prefix, worker, now (int s), now_ts, now (float), lease, worker_ttl, n, <id, exec, queue>*n
-- Returns: {worker_key_existed (0|1), <ids of jobs whose hash says another state (cancelled, reaped)>...}
local p, w, now, now_ts, nowf = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local lease, wttl, n = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local wkey = p .. ':worker:' .. w
local out = {redis.call('EXISTS', wkey)}
for k = 0, n - 1 do
  local id, ex, q = ARGV[9 + 3 * k], ARGV[10 + 3 * k], ARGV[11 + 3 * k]
  local jk = p .. ':job:' .. id
  local cur = redis.call('HMGET', jk, 'status', 'worker_name')
  local member = id .. ':' .. ex
  if cur[1] == 'started' and cur[2] == w then
    redis.call('ZADD', p .. ':wip:' .. q, now + lease, member)
    local xk = p .. ':execution:' .. member
    redis.call('HSET', xk, 'last_heartbeat', nowf)
    redis.call('EXPIRE', xk, lease)
    redis.call('ZADD', p .. ':executions:' .. id, now + lease + 60, ex)
    redis.call('EXPIRE', p .. ':executions:' .. id, lease + 60)
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
  redis.call('EXPIRE', wkey .. ':executions', lease + 60)
end
return out
