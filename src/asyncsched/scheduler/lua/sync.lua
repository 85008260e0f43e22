-- Put one task into the next-fire index as SQL describes it, unless the index already follows that schedule.
-- KEYS[1] next-fire ZSET, KEYS[2] signature HASH
-- ARGV[1] task id, ARGV[2] signature, ARGV[3] next tick (ms) or '' to drop the task (disabled, deleted)
-- A task whose signature is unchanged keeps its index entry (or its absence: a one-shot that already fired),
-- so a restart or a re-registration never moves a schedule backwards nor fires a tick twice.
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 0
end
if redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
