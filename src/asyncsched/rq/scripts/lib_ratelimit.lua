-- RQ 3's concurrency rate limits (rq/rate_limit.py), shared by the scripts that include this file:
-- <p>:rl:<key> {concurrency}, <p>:rl:<key>:allowed (ids holding a slot, zset by time),
-- <p>:rl:<key>:rate_limited (ids waiting, zset by time), <p>:rl-keys (set of keys).
-- Fill free slots with waiting jobs, oldest first (RQ's ACQUIRE_AND_ENQUEUE_SCRIPT): each is added to
-- allowed, pushed onto its queue (front if enqueue_at_front) and marked queued. Returns the promoted ids.
local function rl_fill(p, key, now, now_ts)
  local ak, wk = key_rl(p, key, 'allowed'), key_rl(p, key, 'rate_limited')
  local concurrency = tonumber(redis.call('HGET', key_rl(p, key), 'concurrency') or '0') or 0
  local promoted = {}
  while concurrency > 0 and redis.call('ZCARD', ak) < concurrency do
    local r = redis.call('ZPOPMIN', wk)
    if #r == 0 then break end
    local id = r[1]
    local jk = key_job(p, id)
    local f = redis.call('HMGET', jk, 'origin', 'status', 'enqueue_at_front')
    if f[1] and f[2] == 'rate_limited' then
      redis.call('ZADD', ak, now, id)
      if f[3] == '1' then
        redis.call('LPUSH', key_queue(p, f[1]), id)
      else
        redis.call('RPUSH', key_queue(p, f[1]), id)
      end
      redis.call('HSET', jk, 'status', 'queued', 'enqueued_at', now_ts)
      promoted[#promoted + 1] = id
    end
  end
  return promoted
end

-- A job with a rate limit left its slot (finished, failed, stopped, cancelled, deleted, scheduled for a
-- retry): unless it is queued or started again, release the slot and fill free slots (RQ's release_slot).
local function rl_release(p, key, id, now, now_ts)
  local status = redis.call('HGET', key_job(p, id), 'status')
  if status == 'queued' or status == 'started' then return end
  redis.call('ZREM', key_rl(p, key, 'allowed'), id)
  rl_fill(p, key, now, now_ts)
end

-- Count a job that has to wait for a slot, per queue (asyncsched_rate_limit_waits_total{queue}, read from
-- <p>:asyncsched:rate-limit-waits by the metrics exporters: asyncsched/_keys.py rate_limit_waits). Every
-- way a job comes to wait for a rate limit calls this once per wait.
local function rl_count_wait(p, id)
  local origin = redis.call('HGET', key_job(p, id), 'origin') or '?'
  redis.call('HINCRBY', key_rate_limit_waits(p), origin, 1)
end

-- Put a job with a rate limit in line for a slot (RQ's _enqueue_rate_limited_job), then fill free slots.
local function rl_wait(p, key, concurrency, id, now, now_ts)
  redis.call('SADD', key_rl_keys(p), key)
  redis.call('HSET', key_rl(p, key), 'concurrency', concurrency)
  redis.call('HSET', key_job(p, id), 'status', 'rate_limited')
  redis.call('ZADD', key_rl(p, key, 'rate_limited'), now, id)
  local promoted = rl_fill(p, key, now, now_ts)
  if redis.call('ZSCORE', key_rl(p, key, 'rate_limited'), id) then rl_count_wait(p, id) end
  return promoted
end

-- The claim of a job with an RQ 3 RateLimit (claim.lua): RQ's own keys decide, as for RQ's workers. A job
-- admitted by RQ's enqueue or promotion (in allowed) holds its slot and starts. One that reached its queue
-- without a slot (a producer or a requeue that skipped RQ's admission) takes a free slot, or waits in RQ's
-- line (status rate_limited) until a holder's release (RQ's release_slot, or ours) puts it back.
local function rl_take_or_wait(p, key, concurrency, id, now, now_ts)
  local ak = key_rl(p, key, 'allowed')
  local c = tonumber(concurrency)
  if not c or redis.call('ZSCORE', ak, id) then return nil end  -- no bound (RQ reads none either), or held
  if redis.call('ZCARD', ak) < c then
    redis.call('SADD', key_rl_keys(p), key)
    redis.call('HSET', key_rl(p, key), 'concurrency', concurrency)
    redis.call('ZADD', ak, now, id)
    return nil
  end
  rl_wait(p, key, concurrency, id, now, now_ts)
  return 'wait'
end

-- rl_take_or_wait, where a key of the wrong type (a foreign writer's) is the job's fault, not the claim's:
-- nil (start it), 'wait', or the error text (WRONGTYPE; any other refusal fails the whole script)
local function rl_claim(p, key, concurrency, id, now, now_ts)
  local ok, r = pcall(rl_take_or_wait, p, key, concurrency, id, now, now_ts)
  if ok then return r end
  local text = type(r) == 'table' and r.err or tostring(r)
  if not string.find(text, 'WRONGTYPE', 1, true) then error(r) end
  return 'rate limit ' .. key .. ': ' .. text
end

-- Put a job back on its queue q (at the front if front), or, when it has an RQ 3 RateLimit, through RQ's
-- admission as RQ's scheduler and requeue do (_enqueue_rate_limited_job): it takes a free slot and is
-- pushed, or waits in RQ's line, where RQ's workers cannot take it beside the slots' holders. Should RQ's
-- keys of its limit have the wrong type (a foreign writer's), it is pushed as if it had none and the error
-- text returned (any other refusal fails the script); nil otherwise.
local function rl_push(p, q, id, front, now, now_ts)
  local f = redis.call('HMGET', key_job(p, id), 'rate_limit_key', 'rate_limit_concurrency')
  local why = nil
  if f[1] and tonumber(f[2]) then
    local ok, e = pcall(rl_wait, p, f[1], f[2], id, now, now_ts)
    if ok then return nil end
    why = type(e) == 'table' and e.err or tostring(e)
    if not string.find(why, 'WRONGTYPE', 1, true) then error(e) end
    redis.call('HSET', key_job(p, id), 'status', 'queued')
  end
  if front then
    redis.call('LPUSH', key_queue(p, q), id)
  else
    redis.call('RPUSH', key_queue(p, q), id)
  end
  return why
end
