-- Claim one due tick of one task: the only way a tick becomes a run (exactly once across replicas).
-- KEYS[1] next-fire ZSET, KEYS[2] pending ZSET, KEYS[3] fired STREAM, KEYS[4] signature HASH
-- ARGV[1] task id, ARGV[2] the tick (ms) the caller saw, ARGV[3] the next tick (ms) or '' when none,
-- ARGV[4] lease deadline (ms) of the runs to enqueue, ARGV[5] stream MAXLEN,
-- ARGV[6] the schedule signature the caller planned with ('' = do not check; '-' = drop the task from the
-- index, signature included: it was deleted or disabled), ARGV[7..] ticks (ms) to run
-- Returns 1 if this caller owns the runs (the index still held ARGV[2] and now holds ARGV[3]),
-- 0 if another replica moved the entry first, -1 if the caller's copy of the schedule is stale.
local current = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not current or tonumber(current) ~= tonumber(ARGV[2]) then
  return 0
end
if ARGV[6] == '-' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[4], ARGV[1])
  return 1
end
if ARGV[6] ~= '' and redis.call('HGET', KEYS[4], ARGV[1]) ~= ARGV[6] then
  return -1
end
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
end
for i = 7, #ARGV do
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1] .. ':' .. ARGV[i])
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'task', ARGV[1], 'tick', ARGV[i])
end
return 1
