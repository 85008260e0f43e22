-- Empty one queue as rq's Queue.empty does: every job id popped from the list, its hash deleted (with its
-- dependents set and, ours, its results stream); then the list itself. Pops at most ARGV[3] ids per call.
-- ARGV: prefix, queue, batch
-- Returns the number of jobs removed by this call (call again until 0).
local p, q, batch = ARGV[1], ARGV[2], tonumber(ARGV[3])
local qk = p .. ':queue:' .. q
local ids = redis.call('LPOP', qk, batch)
if not ids then return 0 end
for _, id in ipairs(ids) do
  redis.call('DEL', p .. ':job:' .. id, p .. ':job:' .. id .. ':dependents', p .. ':results:' .. id)
end
return #ids
