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
--#include types
local p, holder, now, now_ts, lock_ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local stream, maxlen, limit, nq = KEYS[1], ARGV[6], ARGV[7], tonumber(ARGV[8])
local promoted, earliest = 0, -1
local skipped = {}
local function skip(id, why) skipped[#skipped + 1] = id; skipped[#skipped + 1] = why end
local stream_bad = wrong_type(stream, 'stream')
if stream_bad then skip('', stream_bad) end
for k = 1, nq do
  local q = ARGV[8 + k]
  local lk, sk, qk = KEYS[3 * k - 1], KEYS[3 * k], KEYS[3 * k + 1]
  local bad = wrong_type(lk, 'string') or wrong_type(sk, 'zset') or wrong_type(qk, 'list')
  if bad then skip('', bad) end
  local cur = nil
  if not bad then cur = redis.call('GET', lk) end
  local mine = false
  if bad then
    mine = false
  elseif not cur then
    redis.call('SET', lk, holder, 'EX', lock_ttl)
    mine = true
  elseif cur == holder then
    redis.call('EXPIRE', lk, lock_ttl)
    mine = true
  end
  if mine then
    -- candidates: every score up to the next whole second (those of it may be due to the millisecond)
    local horizon = math.floor(now) + 1
    local due = redis.call('ZRANGEBYSCORE', sk, '-inf', horizon, 'WITHSCORES', 'LIMIT', 0, limit)
    for c = 1, #due, 2 do
      local id, score = due[c], tonumber(due[c + 1])
      local jk = key_job(p, id)
      local jbad = wrong_type(jk, 'hash')
      local at_ms = score * 1000
      local ms = nil
      if not jbad then ms = tonumber(redis.call('HGET', jk, 'asyncsched_run_at')) end
      if ms and math.ceil(ms / 1000) == score then at_ms = ms end
      if jbad then
        redis.call('ZREM', sk, id)
        skip(id, jbad)
      elseif at_ms > now * 1000 then
        if earliest == -1 or at_ms < earliest then earliest = at_ms end
      else
        redis.call('ZREM', sk, id)
        if redis.call('EXISTS', jk) == 1 then
          redis.call('HSET', jk, 'status', 'queued', 'enqueued_at', now_ts)
          redis.call('HDEL', jk, 'asyncsched_run_at')
          if redis.call('HGET', jk, 'enqueue_at_front_on_retry') == '1' then
            redis.call('LPUSH', qk, id)
          else
            redis.call('RPUSH', qk, id)
          end
          local h = redis.call('HMGET', jk, 'asyncsched_attempt', 'asyncsched_agent', 'asyncsched_task',
            'asyncsched_function_path', 'asyncsched_scheduled_task', 'description')
          local life = {'kind', 'queued', 'job_id', id, 'queue', q, 'attempt', h[1] or '1',
            'enqueued_at', ARGV[3]}
          if h[2] then life[#life + 1] = 'agent_name'; life[#life + 1] = h[2] end
          if h[3] then life[#life + 1] = 'task_name'; life[#life + 1] = h[3] end
          if h[4] then life[#life + 1] = 'function'; life[#life + 1] = h[4]
          elseif h[6] then life[#life + 1] = 'function'; life[#life + 1] = (string.match(h[6], '^[^(]+') or h[6]) end
          if h[5] then life[#life + 1] = 'scheduled_task_id'; life[#life + 1] = h[5] end
          if not stream_bad then redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', unpack(life)) end
          promoted = promoted + 1
        end
      end
    end
    -- beyond the horizon: a run-at lies within the second before its score; wake then and look closer
    local later = redis.call('ZRANGEBYSCORE', sk, '(' .. horizon, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
    if later[2] then
      local s = (math.floor(tonumber(later[2])) - 1) * 1000
      if earliest == -1 or s < earliest then earliest = s end
    end
  end
end
return {promoted, earliest, unpack(skipped)}
