-- Cancel one job as rq.job.Job.cancel does (status canceled, out of its queue/registries, into
-- <p>:canceled:<q>); a running job also loses its execution and its worker is sent RQ's stop-job command.
-- KEYS: the job, lifecycle stream. ARGV: prefix, id, now (int s), maxlen, now_ts (RQ's timestamp text)
-- Returns -1 no such job, 0 already finished/failed/cancelled, 1 cancelled before running, 2 was running.
--#include ratelimit
--#include life
local p, id, now, maxlen, now_ts = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local jk, stream = KEYS[1], KEYS[2]
local h = redis.call('HMGET', jk, 'status', 'origin', 'worker_name', 'asyncsched_attempt', 'asyncsched_agent',
  'asyncsched_task', 'asyncsched_function_path', 'asyncsched_scheduled_task', 'description', 'rate_limit_key')
local status = h[1]
if not status then return -1 end
if status == 'finished' or status == 'failed' or status == 'stopped' or status == 'canceled' then return 0 end
local q = h[2] or 'default'
redis.call('HSET', jk, 'status', 'canceled')
redis.call('LREM', key_queue(p, q), 1, id)
redis.call('LREM', key_intermediate(p, q), 1, id)
redis.call('ZREM', key_registry(p, 'scheduled', q), id)
redis.call('ZREM', key_registry(p, 'deferred', q), id)
local rc = 1
if status == 'started' then
  rc = 2
  local ek = key_executions(p, id)
  for _, ex in ipairs(redis.call('ZRANGE', ek, 0, -1)) do
    local member = id .. ':' .. ex
    redis.call('ZREM', key_registry(p, 'wip', q), member)
    redis.call('DEL', key_execution(p, member))
    if h[3] then redis.call('SREM', key_worker_executions(p, h[3]), member) end
  end
  redis.call('DEL', ek)
  if h[3] then
    redis.call('PUBLISH', key_pubsub(p, h[3]), '{"command": "stop-job", "job_id": "' .. id .. '"}')
  end
end
redis.call('ZADD', key_registry(p, 'canceled', q), now, id)
if h[10] then  -- RQ's RateLimitRegistry.cancel: out of the waiting line; the slot of a job that was not
  -- running is released now, a running one's when its worker records the end (finish.lua)
  redis.call('ZREM', key_rl(p, h[10], 'rate_limited'), id)
  if status ~= 'started' then rl_release(p, h[10], id, tonumber(now), now_ts) end
end
local life = life_job({'kind', 'cancelled', 'job_id', id, 'queue', q, 'attempt', h[4] or '1', 'ended_at', now},
  h[5], h[6], h[7], h[8], h[9])
if h[3] then life[#life + 1] = 'worker'; life[#life + 1] = h[3] end
redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', unpack(life_pack(life)))
return rc
