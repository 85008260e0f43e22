-- Put a failed, stopped or cancelled job back on its queue as a new attempt (rq's FailedJobRegistry.requeue).
-- KEYS: the job, lifecycle stream, <p>:queues. ARGV: prefix, id, now (int s), now_ts, maxlen
-- Returns -1 no such job, 0 not failed/stopped/cancelled, 1 requeued.
--#include ratelimit
--#include life
local p, id, now, now_ts, maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local jk, stream, queues_key = KEYS[1], KEYS[2], KEYS[3]
local h = redis.call('HMGET', jk, 'status', 'origin', 'asyncsched_attempt', 'asyncsched_agent', 'asyncsched_task',
  'asyncsched_function_path', 'asyncsched_scheduled_task', 'description')
if not h[1] then return -1 end
if h[1] ~= 'failed' and h[1] ~= 'stopped' and h[1] ~= 'canceled' then return 0 end
local q = h[2] or 'default'
local attempt = tostring((tonumber(h[3]) or 1) + 1)
redis.call('ZREM', key_registry(p, 'failed', q), id)
redis.call('ZREM', key_registry(p, 'canceled', q), id)
redis.call('HSET', jk, 'status', 'queued', 'enqueued_at', now_ts, 'started_at', '', 'ended_at', '',
  'asyncsched_attempt', attempt)
redis.call('PERSIST', jk)
redis.call('SADD', queues_key, key_queue(p, q))
-- a RateLimit job goes through RQ's admission, as RQ's requeue; RQ's keys of its limit refused: said, loudly
local rl_bad = rl_push(p, q, id, false, tonumber(now), now_ts)
local life = life_job({'kind', 'queued', 'job_id', id, 'queue', q, 'attempt', attempt, 'enqueued_at', now},
  h[4], h[5], h[6], h[7], h[8])
redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', unpack(life_pack(life)))
if rl_bad then return redis.error_reply('requeued without its rate limit: ' .. rl_bad) end
return 1
