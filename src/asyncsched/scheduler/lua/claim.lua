-- Claim one due tick of one task: the only way a tick becomes a run (exactly once across replicas), and the
-- overlap decision taken in the same step (so replicas agree on it too).
-- KEYS[1] next-fire ZSET, KEYS[2] pending ZSET, KEYS[3] fired STREAM, KEYS[4] signature HASH,
-- KEYS[5] last-run HASH, KEYS[6] held HASH, KEYS[7] lifecycle STREAM
-- ARGV[1] task id, ARGV[2] the tick (ms) the caller saw, ARGV[3] the next tick (ms) or '' when none,
-- ARGV[4] lease deadline (ms) of the runs to enqueue, ARGV[5] stream MAXLEN,
-- ARGV[6] the schedule signature the caller planned with ('' = do not check; '-' = drop the task from the
-- index, signature included: it was deleted or disabled), ARGV[7] overlap policy skip|queue|allow,
-- ARGV[8] the key prefix (the previous run's job hash, read from KEYS[5], is key_job of lib_keys.lua,
-- included first), ARGV[9] now (epoch s), ARGV[10] lifecycle MAXLEN,
-- ARGV[11] queue, ARGV[12] agent, ARGV[13] task name, ARGV[14] function,
-- ARGV[15..] pairs: tick (ms) to run, its job id. The ticks of one claim (several only with misfire 'all',
-- which asks for each of them) are judged together against the run before them.
-- Returns {1, decision per tick ('run', 'hold': enqueue once the previous run ended, 'skip': recorded as
-- skipped)} if this caller owns the ticks (the index still held ARGV[2] and now holds ARGV[3]),
-- {0} if another replica moved the entry first, {-1} if the caller's copy of the schedule is stale.

-- Is the previous run (run or held) still under way? Claimed but not enqueued yet (a lease), or its RQ job
-- hash says queued, started, scheduled (delayed or waiting for a retry) or deferred (a held run).
-- Returns busy, held (a run waits already), the previous run's job id and its state.
local function previous_run(task)
  local last = redis.call('HGET', KEYS[5], task)
  if not last then return false, false, '', '' end
  local tick, id = string.match(last, '^(%S+) (.+)$')
  if not tick then return false, false, '', '' end
  if redis.call('ZSCORE', KEYS[2], task .. ':' .. tick) then
    return true, redis.call('HEXISTS', KEYS[6], task .. ':' .. tick) == 1, id, 'not enqueued yet'
  end
  local st = redis.call('HGET', key_job(ARGV[8], id), 'status')
  if st == 'queued' or st == 'started' or st == 'scheduled' or st == 'deferred' then
    return true, st == 'deferred', id, st
  end
  return false, false, id, ''
end

local task = ARGV[1]
local current = redis.call('ZSCORE', KEYS[1], task)
if not current or tonumber(current) ~= tonumber(ARGV[2]) then
  return {0}
end
if ARGV[6] == '-' then
  redis.call('ZREM', KEYS[1], task)
  redis.call('HDEL', KEYS[4], task)
  redis.call('HDEL', KEYS[5], task)
  return {1}
end
if ARGV[6] ~= '' and redis.call('HGET', KEYS[4], task) ~= ARGV[6] then
  return {-1}
end
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[1], task)
else
  redis.call('ZADD', KEYS[1], ARGV[3], task)
end
local policy = ARGV[7]
local busy, held, prev, state = false, false, '', ''
if policy ~= 'allow' then busy, held, prev, state = previous_run(task) end
local out = {1}
local n = (#ARGV - 14) / 2
for i = 1, n do
  local tick, id = ARGV[13 + 2 * i], ARGV[14 + 2 * i]
  local decision = 'run'
  if busy then
    if policy == 'queue' and not held and i == n then decision = 'hold' else decision = 'skip' end
  end
  if decision == 'skip' then
    local why = 'skipped: the previous run ' .. prev .. ' is still ' .. state .. ' (overlap: ' .. policy .. ')'
    if policy == 'queue' then
      why = 'skipped: a run already waits for the previous run ' .. prev .. ' (overlap: queue holds one)'
    end
    local life = {'kind', 'skipped', 'job_id', id, 'queue', ARGV[11], 'attempt', '1', 'enqueued_at', ARGV[9],
      'ended_at', ARGV[9], 'agent_name', ARGV[12], 'task_name', ARGV[13], 'scheduled_task_id', task,
      'error', why}
    if ARGV[14] ~= '' then life[#life + 1] = 'function'; life[#life + 1] = ARGV[14] end
    redis.call('XADD', KEYS[7], 'MAXLEN', '~', ARGV[10], '*', unpack(life_pack(life)))
  else
    redis.call('ZADD', KEYS[2], ARGV[4], task .. ':' .. tick)
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'task', task, 'tick', tick)
    redis.call('HSET', KEYS[5], task, tick .. ' ' .. id)
    if decision == 'hold' then redis.call('HSET', KEYS[6], task .. ':' .. tick, prev) end
  end
  out[#out + 1] = decision
end
return out
