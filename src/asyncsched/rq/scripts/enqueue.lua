-- Enqueue a batch of jobs atomically, as rq.Queue.enqueue / enqueue_at would (rq 2.12 / 3.0).
-- ARGV: prefix, lifecycle stream, maxlen, njobs, then per job:
--   id, queue, mode ('queued' | 'scheduled'), score (run-at epoch s), unique ('1'|'0'), ttl ('' | s),
--   at_front ('1'|'0'), npairs, <field, value>*npairs, nlife, <field, value>*nlife
-- Returns one integer per job: 1 written, 0 skipped (unique and the job already exists).
local p, stream, maxlen = ARGV[1], ARGV[2], ARGV[3]
local njobs = tonumber(ARGV[4])
local i = 5
local out = {}
for j = 1, njobs do
  local id, q, mode, score, unique, ttl, front = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3], ARGV[i+4], ARGV[i+5], ARGV[i+6]
  local npairs = tonumber(ARGV[i+7])
  local pairs_start = i + 8
  local nlife_at = pairs_start + 2 * npairs
  local nlife = tonumber(ARGV[nlife_at])
  local life_start = nlife_at + 1
  i = life_start + 2 * nlife
  local jk = p .. ':job:' .. id
  if unique == '1' and redis.call('EXISTS', jk) == 1 then
    out[j] = 0
  else
    redis.call('DEL', jk)
    local fields = {}
    for k = pairs_start, nlife_at - 1 do fields[#fields + 1] = ARGV[k] end
    redis.call('HSET', jk, unpack(fields))
    if ttl ~= '' then redis.call('EXPIRE', jk, ttl) end
    redis.call('SADD', p .. ':queues', p .. ':queue:' .. q)
    if mode == 'scheduled' then
      redis.call('ZADD', p .. ':scheduled:' .. q, score, id)
    elseif front == '1' then
      redis.call('LPUSH', p .. ':queue:' .. q, id)
    else
      redis.call('RPUSH', p .. ':queue:' .. q, id)
    end
    if nlife > 0 then
      local life = {}
      for k = life_start, life_start + 2 * nlife - 1 do life[#life + 1] = ARGV[k] end
      redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', unpack(life))
    end
    out[j] = 1
  end
end
return out
