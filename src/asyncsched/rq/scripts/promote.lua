-- Move due jobs from <p>:scheduled:<q> to their queue, as RQ's scheduler does, for each queue whose
-- <p>:scheduler-lock:<q> this worker holds or can take (so RQ's scheduler and ours never both promote).
-- A job is due at its score (RQ: integer epoch seconds), or at its asyncsched_run_at (epoch ms, set by our
-- enqueue, whose score is that time rounded up) when the two agree: never before the time asked for.
-- KEYS: lifecycle stream, then three per queue: <p>:scheduler-lock:<q>, <p>:scheduled:<q>, <p>:queue:<q>
--   (asyncsched.rq._calls.PromoteCall); a job's key comes from lib_keys.lua
-- ARGV: prefix, holder, now (epoch s, fractional), now_ts, lock_ttl, maxlen, limit, nqueues, <queue>*nqueues
-- Returns {promoted count, earliest remaining run-at (epoch ms, rounded up) or -1, <skipped: id ('' a key),
--   why>*}: a key of the wrong type (a foreign writer's) is skipped and reported, never fails the promotion
--   of the others; a job key of another type leaves the scheduled registry.
--#include ratelimit
--#include types
--#include life

-- The call (`a` below): its arguments, and what the reply gathers (promoted, earliest, skipped)
local function read_call()
  return {p = ARGV[1], holder = ARGV[2], now = tonumber(ARGV[3]), now_text = ARGV[3], now_ts = ARGV[4],
    lock_ttl = ARGV[5], stream = KEYS[1], maxlen = ARGV[6], limit = ARGV[7], nq = tonumber(ARGV[8]),
    stream_bad = wrong_type(KEYS[1], 'stream'), promoted = 0, earliest = -1, skipped = {}}
end

local function skip(a, id, why) a.skipped[#a.skipped + 1] = id; a.skipped[#a.skipped + 1] = why end

local function earlier(a, ms) if a.earliest == -1 or ms < a.earliest then a.earliest = ms end end

-- Take or renew the queue's scheduler lock: whether this holder promotes the queue, and why one of the
-- queue's keys is of the wrong type (then it does not)
local function take_lock(a, lk, sk, qk)
  local bad = wrong_type(lk, 'string') or wrong_type(sk, 'zset') or wrong_type(qk, 'list')
  if bad then return false, bad end
  local cur = redis.call('GET', lk)
  if not cur then
    redis.call('SET', lk, a.holder, 'EX', a.lock_ttl)
    return true, nil
  elseif cur == a.holder then
    redis.call('EXPIRE', lk, a.lock_ttl)
    return true, nil
  end
  return false, nil
end

-- The 'queued' lifecycle record of a promoted job (none when the stream is of the wrong type)
local function record_queued(a, jk, id, q)
  local h = redis.call('HMGET', jk, 'asyncsched_attempt', 'asyncsched_agent', 'asyncsched_task',
    'asyncsched_function_path', 'asyncsched_scheduled_task', 'description')
  local life = life_job({'kind', 'queued', 'job_id', id, 'queue', q, 'attempt', h[1] or '1',
    'enqueued_at', a.now_text}, h[2], h[3], h[4], h[5], h[6])
  if not a.stream_bad then redis.call('XADD', a.stream, 'MAXLEN', '~', a.maxlen, '*', unpack(life_pack(life))) end
end

-- A due job leaves the scheduled registry for its queue q (through RQ's admission when it has an RQ rate
-- limit), unless its hash is gone
local function promote_job(a, q, sk, id, jk)
  redis.call('ZREM', sk, id)
  if redis.call('EXISTS', jk) ~= 1 then return end
  redis.call('HSET', jk, 'status', 'queued', 'enqueued_at', a.now_ts)
  redis.call('HDEL', jk, 'asyncsched_run_at')
  local rl_bad = rl_push(a.p, q, id, redis.call('HGET', jk, 'enqueue_at_front_on_retry') == '1', a.now, a.now_ts)
  if rl_bad then skip(a, id, 'its rate limit: ' .. rl_bad .. ' (queued without it)') end
  record_queued(a, jk, id, q)
  a.promoted = a.promoted + 1
end

-- Promote the due jobs of queue q (its lock is this holder's); note when the next one is due
local function promote_queue(a, q, sk)
  -- candidates: every score up to the next whole second (those of it may be due to the millisecond)
  local horizon = math.floor(a.now) + 1
  local due = redis.call('ZRANGEBYSCORE', sk, '-inf', horizon, 'WITHSCORES', 'LIMIT', 0, a.limit)
  for c = 1, #due, 2 do
    local id, score = due[c], tonumber(due[c + 1])
    local jk = key_job(a.p, id)
    local jbad = wrong_type(jk, 'hash')
    local at_ms = score * 1000
    local ms = nil
    if not jbad then ms = tonumber(redis.call('HGET', jk, 'asyncsched_run_at')) end
    if ms and math.ceil(ms / 1000) == score then at_ms = ms end
    if jbad then
      redis.call('ZREM', sk, id)
      skip(a, id, jbad)
    elseif at_ms > a.now * 1000 then
      earlier(a, at_ms)
    else
      promote_job(a, q, sk, id, jk)
    end
  end
  -- beyond the horizon: a run-at lies within the second before its score; wake then and look closer
  local later = redis.call('ZRANGEBYSCORE', sk, '(' .. horizon, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if later[2] then earlier(a, (math.floor(tonumber(later[2])) - 1) * 1000) end
end

local a = read_call()
if a.stream_bad then skip(a, '', a.stream_bad) end
for k = 1, a.nq do
  local mine, bad = take_lock(a, KEYS[3 * k - 1], KEYS[3 * k], KEYS[3 * k + 1])
  if bad then skip(a, '', bad) end
  if mine then promote_queue(a, ARGV[8 + k], KEYS[3 * k]) end
end
return {a.promoted, a.earliest, unpack(a.skipped)}
