-- Release the scheduler locks this worker holds. ARGV: prefix, holder, nqueues, <queue>*nqueues
local p, holder = ARGV[1], ARGV[2]
for k = 1, tonumber(ARGV[3]) do
  local lk = key_scheduler_lock(p, ARGV[3 + k])
  if redis.call('TYPE', lk).ok == 'string' and redis.call('GET', lk) == holder then redis.call('DEL', lk) end
end
return 1
