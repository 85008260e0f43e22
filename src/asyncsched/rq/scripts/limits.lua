-- Let parked jobs go when their flow limit has room again (lib_limits.lua): the keys whose next rate
-- start is due, and with tidy = '1' every key in use (holders that no longer run are forgotten, waiting
-- jobs filled in, and a key with nothing running, started or waiting is dropped).
-- ARGV: prefix, now (float s), now_ts (RQ text), tidy ('1' | '0')
-- Returns {jobs put back, earliest remaining due time (epoch s, text) or '-1'}
--#include limits
local p, now, now_ts, tidy = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4] == '1'
local dk = p .. ':asyncsched:limit-due'
local moved = 0
for _, key in ipairs(redis.call('ZRANGEBYSCORE', dk, '-inf', now, 'LIMIT', 0, 1000)) do
  redis.call('ZREM', dk, key)
  moved = moved + lim_fill(p, key, now, now_ts)
end
if tidy then
  local kk = p .. ':asyncsched:limit-keys'
  for _, key in ipairs(redis.call('SMEMBERS', kk)) do
    local base = p .. ':asyncsched:limit:' .. key
    lim_clean_active(p, base .. ':active')
    redis.call('ZREMRANGEBYSCORE', base .. ':starts', '-inf',
      now - (tonumber(redis.call('HGET', base, 'period') or '') or 0))
    moved = moved + lim_fill(p, key, now, now_ts)
    if redis.call('ZCARD', base .. ':active') == 0 and redis.call('ZCARD', base .. ':waiting') == 0
        and redis.call('ZCARD', base .. ':starts') == 0 then
      redis.call('SREM', kk, key)
      redis.call('ZREM', dk, key)
      redis.call('DEL', base, base .. ':active', base .. ':starts', base .. ':waiting')
    end
  end
end
local first = redis.call('ZRANGE', dk, 0, 0, 'WITHSCORES')
return {moved, first[2] or '-1'}
