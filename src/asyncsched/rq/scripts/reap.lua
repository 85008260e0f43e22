-- Orphan recovery: executions in <p>:wip:<q> whose lease expired (their worker died) are re-queued or
-- failed. Each entry is claimed by ZREM first, so two reapers (or RQ's own cleanup) never both act on it.
-- Jobs with RQ retries left are retried as RQ's StartedJobRegistry.cleanup does.
-- Also sweeps <p>:queue:<q>:intermediate (a worker that died between BLMOVE and its claim): an id still
-- queued there a minute after it was first seen (RQ's first_seen key) goes back to its queue; it never ran.
-- And returns the ids left in a dead worker's claiming list (<p>:asyncsched:claiming:<worker>, its BLMOVE
-- target, normally emptied by the claim pipelined behind the BLMOVE) to the head of their queue.
-- ARGV: prefix, now (int s), now_ts, policy ('requeue'|'fail'), stream, maxlen, exc_string (b64 zlib),
--       error text, nqueues, <queue>*nqueues
-- Returns a flat list: <id, action ('requeued'|'failed'|'unstuck'|'unclaimed')>*
--#include ratelimit
local p, now, now_ts, policy, stream, maxlen = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local exc, err, nq = ARGV[7], ARGV[8], tonumber(ARGV[9])
local out = {}
local registry = p .. ':asyncsched:claiming'
local claiming = redis.call('HGETALL', registry)
for k = 1, #claiming, 2 do
  local w, q = claiming[k], claiming[k + 1]
  local wk = p .. ':worker:' .. w
  if redis.call('EXISTS', wk) == 0 or redis.call('HEXISTS', wk, 'death') == 1 then
    local lk = registry .. ':' .. w
    while true do
      local id = redis.call('LMOVE', lk, p .. ':queue:' .. q, 'RIGHT', 'LEFT')
      if not id then break end
      out[#out + 1] = id; out[#out + 1] = 'unclaimed'
    end
    redis.call('HDEL', registry, w)
  end
end
for k = 1, nq do
  local q = ARGV[9 + k]
  local ik = p .. ':queue:' .. q .. ':intermediate'
  for _, id in ipairs(redis.call('LRANGE', ik, 0, -1)) do
    local st = redis.call('HGET', p .. ':job:' .. id, 'status')
    if st ~= 'queued' then
      redis.call('LREM', ik, 1, id)
    else
      local fk = ik .. ':first_seen:' .. id
      local seen = redis.call('GET', fk)
      if not seen then
        redis.call('SET', fk, now, 'EX', 86400)
      elseif now - tonumber(seen) > 60 then
        redis.call('LREM', ik, 1, id)
        redis.call('DEL', fk)
        redis.call('RPUSH', p .. ':queue:' .. q, id)
        out[#out + 1] = id; out[#out + 1] = 'unstuck'
      end
    end
  end
  local wk = p .. ':wip:' .. q
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', wk, 0, now)) do
    if redis.call('ZREM', wk, member) == 1 then
      local sep = string.find(member, ':', 1, true)
      local id, ex = member, ''
      if sep then id = string.sub(member, 1, sep - 1); ex = string.sub(member, sep + 1) end
      local jk = p .. ':job:' .. id
      redis.call('DEL', p .. ':execution:' .. member)
      redis.call('ZREM', p .. ':executions:' .. id, ex)
      local h = redis.call('HMGET', jk, 'status', 'worker_name', 'retries_left', 'failure_ttl', 'asyncsched_attempt',
        'asyncsched_agent', 'asyncsched_task', 'asyncsched_function_path', 'asyncsched_scheduled_task', 'description',
        'rate_limit_key')
      if h[2] then redis.call('SREM', p .. ':worker:' .. h[2] .. ':executions', member) end
      if h[1] == 'started' then
        local attempt = h[5] or '1'
        local retries = tonumber(h[3] or '0') or 0
        local kind
        if policy == 'requeue' or retries > 0 then
          if retries > 0 and policy ~= 'requeue' then redis.call('HSET', jk, 'retries_left', retries - 1) end
          redis.call('HSET', jk, 'status', 'queued', 'enqueued_at', now_ts, 'ended_at', now_ts,
            'asyncsched_attempt', tostring(tonumber(attempt) + 1))
          redis.call('RPUSH', p .. ':queue:' .. q, id)
          kind = 'retry'
          out[#out + 1] = id; out[#out + 1] = 'requeued'
        else
          local ttl = tonumber(h[4] or '') or 31536000
          redis.call('HSET', jk, 'status', 'failed', 'ended_at', now_ts)
          redis.call('ZADD', p .. ':failed:' .. q, now + ttl, id)
          redis.call('XADD', p .. ':results:' .. id, 'MAXLEN', '~', 10, '*', 'type', '2', 'worker_name', '',
            'exc_string', exc)
          if ttl > 0 then redis.call('EXPIRE', jk, ttl) end
          kind = 'failed'
          out[#out + 1] = id; out[#out + 1] = 'failed'
          if h[11] then rl_release(p, h[11], id, now, now_ts) end
        end
        local life = {'kind', kind, 'job_id', id, 'queue', q, 'attempt', attempt, 'ended_at', now, 'error', err}
        if h[2] then life[#life + 1] = 'worker'; life[#life + 1] = h[2] end
        if h[6] then life[#life + 1] = 'agent_name'; life[#life + 1] = h[6] end
        if h[7] then life[#life + 1] = 'task_name'; life[#life + 1] = h[7] end
        if h[8] then life[#life + 1] = 'function'; life[#life + 1] = h[8]
        elseif h[10] then life[#life + 1] = 'function'; life[#life + 1] = (string.match(h[10], '^[^(]+') or h[10]) end
        if h[9] then life[#life + 1] = 'scheduled_task_id'; life[#life + 1] = h[9] end
        redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', unpack(life))
      end
    end
  end
end
-- RQ's RateLimitRegistry.cleanup: free slots held by jobs that are neither queued nor started (and have no
-- live execution), fill free slots, and forget a key with nobody holding or waiting
for _, key in ipairs(redis.call('SMEMBERS', p .. ':rl-keys')) do
  local base = p .. ':rl:' .. key
  for _, id in ipairs(redis.call('ZRANGE', base .. ':allowed', 0, -1)) do
    local st = redis.call('HGET', p .. ':job:' .. id, 'status')
    if st ~= 'queued' and st ~= 'started' and redis.call('ZCOUNT', p .. ':executions:' .. id, '(' .. now, '+inf') == 0 then
      redis.call('ZREM', base .. ':allowed', id)
    end
  end
  rl_fill(p, key, now, now_ts)
  if redis.call('ZCARD', base .. ':allowed') == 0 and redis.call('ZCARD', base .. ':rate_limited') == 0 then
    redis.call('SREM', p .. ':rl-keys', key)
    redis.call('DEL', base, base .. ':allowed', base .. ':rate_limited')
  end
end
return out
