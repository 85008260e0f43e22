-- Empty one queue as rq's Queue.empty does: every job id popped from the list, its hash deleted (with its
-- dependents set and, ours, its results stream); then the list itself. Pops at most ARGV[2] ids per call.
-- KEYS: the queue. ARGV: prefix, batch
-- Returns the number of jobs removed by this call (call again until 0).
local p, batch = ARGV[1], tonumber(ARGV[2])
local qk = KEYS[1]
local ids = redis.call('LPOP', qk, batch)
if not ids then return 0 end
for _, id in ipairs(ids) do
  redis.call('DEL', key_job(p, id), key_dependents(p, id), key_results(p, id))
end
return #ids
