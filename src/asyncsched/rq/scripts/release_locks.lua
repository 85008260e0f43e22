-- Release the scheduler locks this worker holds.
-- KEYS: <p>:scheduler-lock:<q> of each of its queues (asyncsched.rq._calls.ReleaseLocksCall). ARGV: holder
local holder = ARGV[1]
for _, lk in ipairs(KEYS) do
  if redis.call('TYPE', lk).ok == 'string' and redis.call('GET', lk) == holder then redis.call('DEL', lk) end
end
return 1
