-- Take over a claimed run whose lease expired (its claimer died before enqueueing it).
-- KEYS[1] pending ZSET; ARGV[1] member '<task>:<tick ms>', ARGV[2] now (ms), ARGV[3] new lease deadline (ms)
local deadline = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not deadline or tonumber(deadline) > tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
