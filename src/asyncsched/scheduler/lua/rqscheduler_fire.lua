-- Fire one rq-scheduler job as rq_scheduler.Scheduler.enqueue_job (0.14) does, in one atomic step: only
-- while holding rq-scheduler's lock with our token, only if the job is still at the score we read (so a job
-- fires once whoever else fires it), only if its status and meta are still what we planned from.
-- KEYS: 1 scheduled_jobs ZSET, 2 scheduler_lock, 3 job hash, 4 queue list, 5 queues SET, 6 lifecycle STREAM
-- ARGV: 1 job id, 2 score read, 3 lock token, 4 lock ttl (s), 5 mode fire|skip|gone, 6 next score ('' drops
--   the job from the set), 7 status read, 8 meta read, 9 new meta ('' keeps it), 10 enqueued_at (RQ text),
--   11 now (epoch s), 12 queue name, 13 stream maxlen, 14 agent, 15 task name, 16 function, 17 timeout,
--   18 enqueued_at read
-- Returns 1 enqueued, 2 rescheduled without enqueueing, 3 dropped (hash gone), 0 the score moved (fired by
-- someone else), -1 the lock is not ours, -2 the job changed since it was read (read it again)
local zk, lock, jk = KEYS[1], KEYS[2], KEYS[3]
local id = ARGV[1]
if redis.call('GET', lock) ~= ARGV[3] then return -1 end
local cur = redis.call('ZSCORE', zk, id)
if not cur or tonumber(cur) ~= tonumber(ARGV[2]) then return 0 end
redis.call('EXPIRE', lock, ARGV[4])
local mode = ARGV[5]
if mode == 'gone' then
  if redis.call('EXISTS', jk) == 1 then return -2 end
  redis.call('ZREM', zk, id)
  return 3
end
if redis.call('EXISTS', jk) == 0 then return -2 end
local h = redis.call('HMGET', jk, 'status', 'meta', 'asyncsched_attempt', 'ttl', 'enqueued_at')
if (h[1] or '') ~= ARGV[7] or (h[2] or '') ~= ARGV[8] or (h[5] or '') ~= ARGV[18] then return -2 end
if ARGV[6] == '' then redis.call('ZREM', zk, id) else redis.call('ZADD', zk, ARGV[6], id) end
if mode == 'skip' then return 2 end
local attempt = tonumber(h[3])
if not attempt then
  if h[1] == 'scheduled' then attempt = 0 else attempt = 1 end
end
attempt = tostring(attempt + 1)
redis.call('HSET', jk, 'status', 'queued', 'enqueued_at', ARGV[10], 'asyncsched_attempt', attempt,
  'asyncsched_agent', ARGV[14], 'asyncsched_task', ARGV[15])
if ARGV[9] ~= '' then redis.call('HSET', jk, 'meta', ARGV[9]) end
redis.call('HSETNX', jk, 'timeout', ARGV[17])
local ttl = tonumber(h[4])
if ttl and ttl > 0 then redis.call('EXPIRE', jk, ttl) end
redis.call('SADD', KEYS[5], KEYS[4])
redis.call('RPUSH', KEYS[4], id)
local life = {'kind', 'queued', 'job_id', id, 'queue', ARGV[12], 'attempt', attempt, 'enqueued_at', ARGV[11],
  'agent_name', ARGV[14], 'task_name', ARGV[15]}
if ARGV[16] ~= '' then life[#life + 1] = 'function'; life[#life + 1] = ARGV[16] end
redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[13], '*', unpack(life_pack(life)))
return 1
