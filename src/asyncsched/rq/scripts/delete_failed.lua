-- Delete failed jobs of one queue as rq's FailedJobRegistry.remove(job, delete_job=True) does: out of the
-- registry, the hash and its results/executions deleted. An entry whose job is no longer failed (requeued
-- meanwhile) only leaves the registry; its job is kept. Takes at most ARGV[2] entries per call.
-- A registry entry whose job key is of another type (a foreign writer's) only leaves the registry.
-- KEYS: the queue's failed registry. ARGV: prefix, batch
-- Returns {entries taken, jobs deleted} (call again until entries taken is 0).
local p, batch = ARGV[1], tonumber(ARGV[2])
local fk = KEYS[1]
local ids = redis.call('ZRANGE', fk, 0, batch - 1)
local deleted = 0
for _, id in ipairs(ids) do
  redis.call('ZREM', fk, id)
  local jk = key_job(p, id)
  local t = redis.call('TYPE', jk).ok
  local status = nil
  if t == 'hash' then status = redis.call('HGET', jk, 'status') end
  if t ~= 'hash' and t ~= 'none' then
    status = 'foreign'  -- not ours to delete: out of the registry only
  elseif status == 'failed' or status == 'stopped' or not status then
    redis.call('DEL', jk, key_dependents(p, id), key_results(p, id), key_executions(p, id))
    if status then deleted = deleted + 1 end
  end
end
return {#ids, deleted}
