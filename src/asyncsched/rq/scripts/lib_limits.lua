-- asyncsched's flow limits (docs/flow-control.md), shared by the scripts that include this file.
-- A job's limits are its hash field asyncsched_limits: one line per limit key, "key\tmax\trate\tperiod"
-- (max: concurrency cap or ''; rate: starts per period or ''; period in seconds). Per key K:
--   <p>:asyncsched:limit:<K>          HASH  max, rate, period (the last job's; shown by info and the API)
--   <p>:asyncsched:limit:<K>:active   ZSET  ids of running jobs (and of parked ones let go, until they
--                                           start) -> time (the concurrency cap)
--   <p>:asyncsched:limit:<K>:starts   ZSET  executions started in the last period (and 'r:<id>' of parked
--                                           jobs let go, until they start) -> time (the rate)
--   <p>:asyncsched:limit:<K>:waiting  ZSET  ids parked by the claim script -> arrival order
--   <p>:asyncsched:limit-keys         SET   the keys in use;  <p>:asyncsched:limit-due  ZSET  K -> when a
--                                           start frees for K's waiting jobs (rate limits only)
-- A parked job is out of its queue with RQ 3's status 'rate_limited'; lim_fill puts it back at the front.
local function lim_parse(spec)
  local out = {}
  for line in string.gmatch(spec, '[^\n]+') do
    local k, mx, rate, period = string.match(line, '^(.-)\t(%d*)\t(%d*)\t([%d.]*)$')
    if k then out[#out + 1] = {k, tonumber(mx), tonumber(rate), tonumber(period)} end
  end
  return out
end

-- Redis' clock (epoch s): every start, reservation and window of a rate is measured on it, so callers whose
-- clocks differ (workers on other hosts, a worker stalled between reading its clock and its script) agree
local function lim_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

-- Forget the holders that neither run nor were let go to run (cancelled, deleted, failed by a reaper...)
local function lim_clean_active(p, ak)
  for _, id in ipairs(redis.call('ZRANGE', ak, 0, -1)) do
    local st = redis.call('HGET', key_job(p, id), 'status')
    if st ~= 'started' and st ~= 'queued' then redis.call('ZREM', ak, id) end
  end
end

-- How many more jobs of a key may start now (nil: no bound), and when the next start frees by rate
local function lim_room(p, key, mx, rate, period, now, id)
  local room, due = nil, nil
  if mx then
    local ak = key_limit(p, key, 'active')
    if id and redis.call('ZSCORE', ak, id) then
      room = 1  -- holds its slot already (reaped and requeued, not yet cleaned)
    else
      local held = redis.call('ZCARD', ak)
      if held >= mx then
        lim_clean_active(p, ak)
        held = redis.call('ZCARD', ak)
      end
      room = mx - held
    end
  end
  if rate and period then
    local sk = key_limit(p, key, 'starts')
    redis.call('ZREMRANGEBYSCORE', sk, '-inf', now - period)
    local left = rate - redis.call('ZCARD', sk)
    if id and left <= 0 and redis.call('ZSCORE', sk, 'r:' .. id) then left = 1 end  -- let go with a start
    if left <= 0 then
      local first = redis.call('ZRANGE', sk, 0, 0, 'WITHSCORES')
      due = tonumber(first[2]) + period
    end
    if room == nil or left < room then room = left end
  end
  return room, due
end

local function lim_due(p, key, due)
  local dk = key_limit_due(p)
  local cur = tonumber(redis.call('ZSCORE', dk, key) or '')
  if not cur or due < cur then redis.call('ZADD', dk, due, key) end
end

-- Check a job's limits before it starts: true, or false after parking it in the waiting line of the first
-- key that is full (and the time a start frees for it, when that key is limited by its rate).
local function lim_check(p, id, limits, now)
  for _, l in ipairs(limits) do
    local room, due = lim_room(p, l[1], l[2], l[3], l[4], now, id)
    if room and room <= 0 then
      redis.call('SADD', key_limit_keys(p), l[1])
      redis.call('HSET', key_limit(p, l[1]), 'max', l[2] or '', 'rate', l[3] or '', 'period', l[4] or '')
      redis.call('ZADD', key_limit(p, l[1], 'waiting'), redis.call('INCR', key_limit_seq(p)), id)
      redis.call('HSET', key_job(p, id), 'status', 'rate_limited')
      if due then lim_due(p, l[1], due) end
      return false, due
    end
  end
  return true, nil
end

-- The job starts (execution ex): it takes a slot and a start of each of its keys
local function lim_take(p, id, ex, limits, now)
  for _, l in ipairs(limits) do
    redis.call('SADD', key_limit_keys(p), l[1])
    redis.call('HSET', key_limit(p, l[1]), 'max', l[2] or '', 'rate', l[3] or '', 'period', l[4] or '')
    if l[2] then redis.call('ZADD', key_limit(p, l[1], 'active'), now, id) end
    if l[3] and l[4] then
      redis.call('ZREM', key_limit(p, l[1], 'starts'), 'r:' .. id)  -- its reserved start becomes this one
      redis.call('ZADD', key_limit(p, l[1], 'starts'), now, ex)
      redis.call('PEXPIRE', key_limit(p, l[1], 'starts'), math.ceil(l[4] * 1000) + 1000)
    end
  end
end

-- Put back at the front of their queues as many waiting jobs of a key as may start now (oldest first);
-- if some still wait for a start to free by rate, index the key by that time. Returns how many moved.
local function lim_fill(p, key, now, now_ts)
  local wk = key_limit(p, key, 'waiting')
  if redis.call('ZCARD', wk) == 0 then return 0 end
  now = lim_now()  -- not the caller's clock: a job let go early by a clock ahead would start too soon
  local c = redis.call('HMGET', key_limit(p, key), 'max', 'rate', 'period')
  local rate, period = tonumber(c[2] or ''), tonumber(c[3] or '')
  local room, due = lim_room(p, key, tonumber(c[1] or ''), rate, period, now, nil)
  local moved = 0
  if room == nil or room > 0 then
    local popped = redis.call('ZPOPMIN', wk, room or 1000)
    for k = #popped - 1, 1, -2 do  -- newest first, each to the front: the oldest ends up first
      local id = popped[k]
      local jk = key_job(p, id)
      local f = redis.call('HMGET', jk, 'origin', 'status')
      if f[1] and f[2] == 'rate_limited' then
        redis.call('HSET', jk, 'status', 'queued', 'enqueued_at', now_ts)
        redis.call('LPUSH', key_queue(p, f[1]), id)
        moved = moved + 1
        -- it keeps the room it was let go for until it starts (so the next fill does not count it twice)
        if tonumber(c[1] or '') then redis.call('ZADD', key_limit(p, key, 'active'), now, id) end
        if rate and period then redis.call('ZADD', key_limit(p, key, 'starts'), now, 'r:' .. id) end
      end
    end
  end
  if rate and period and redis.call('ZCARD', wk) > 0 then
    -- some still wait: the jobs let go now take the free starts, so the next one frees when the oldest
    -- start of the window leaves it (an early guess is harmless: that fill computes the exact time)
    if not due then
      local first = redis.call('ZRANGE', key_limit(p, key, 'starts'), 0, 0, 'WITHSCORES')
      due = (tonumber(first[2] or '') or now) + period
    end
    lim_due(p, key, due)
  end
  return moved
end

-- A job left its slot (its outcome was recorded, or it was cancelled): unless it runs again (claimed by
-- another worker after a reap), free its slot and let waiting jobs of each key go.
local function lim_release(p, spec, id, now, now_ts)
  local status = redis.call('HGET', key_job(p, id), 'status')
  if status == 'started' then return end
  for _, l in ipairs(lim_parse(spec)) do
    if l[2] then redis.call('ZREM', key_limit(p, l[1], 'active'), id) end
    lim_fill(p, l[1], now, now_ts)
  end
end
