-- Let parked jobs go when their flow limit has room again (lib_limits.lua): the keys whose next rate
-- start is due, and with tidy = '1' every key in use (holders that no longer run are forgotten, waiting
-- jobs filled in, and a key with nothing running, started or waiting is dropped).
-- KEYS: <ns>:limit-due, <ns>:limit-keys (asyncsched.rq._calls.LimitsCall); a limit's own keys, its parked
--       jobs' and their queues' come from lib_keys.lua (named by the data read)
-- ARGV: prefix, now (float s), now_ts (RQ text), tidy ('1' | '0')
-- Returns {jobs put back, earliest remaining due time (epoch s, text) or '-1'}
--#include limits
local p, now, now_ts, tidy = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4] == '1'
local dk = KEYS[1]
local moved = 0
for _, key in ipairs(redis.call('ZRANGEBYSCORE', dk, '-inf', now, 'LIMIT', 0, 1000)) do
  redis.call('ZREM', dk, key)
  moved = moved + lim_fill(p, key, now, now_ts)
end
if tidy then
  local kk = KEYS[2]
  for _, key in ipairs(redis.call('SMEMBERS', kk)) do
    local hk, ak = key_limit(p, key), key_limit(p, key, 'active')
    local sk, wk = key_limit(p, key, 'starts'), key_limit(p, key, 'waiting')
    lim_clean_active(p, ak)
    redis.call('ZREMRANGEBYSCORE', sk, '-inf',
      now - (tonumber(redis.call('HGET', hk, 'period') or '') or 0))
    moved = moved + lim_fill(p, key, now, now_ts)
    if redis.call('ZCARD', ak) == 0 and redis.call('ZCARD', wk) == 0 and redis.call('ZCARD', sk) == 0 then
      redis.call('SREM', kk, key)
      redis.call('ZREM', dk, key)
      redis.call('DEL', hk, ak, sk, wk)
    end
  end
end
local first = redis.call('ZRANGE', dk, 0, 0, 'WITHSCORES')
return {moved, first[2] or '-1'}
