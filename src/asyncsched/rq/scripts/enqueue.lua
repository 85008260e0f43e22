-- Enqueue a batch of jobs atomically, as rq.Queue.enqueue / enqueue_at would (rq 2.12 / 3.0).
-- ARGV: prefix, lifecycle stream, maxlen, njobs, then three arguments per job:
--   packed text: fields joined by the byte 0x1e:
--     id, queue, mode ('queued' | 'scheduled'), score (run-at epoch s),
--     unique ('1': skip if the id exists, '0': replace it, 'n': a freshly generated id), ttl ('' | s),
--     at_front ('1'|'0'), npairs, <field, value>*npairs, nlife, <field, value>*nlife
--   data (binary, the hash's 'data' field), meta (binary, '' for none)
-- Returns one integer per job: 1 written, 0 skipped (unique and the job already exists).
local p, stream, maxlen = ARGV[1], ARGV[2], ARGV[3]
local njobs = tonumber(ARGV[4])
local out = {}

local function split(packed)
  local fields, n = {}, 0
  for field in string.gmatch(packed .. '\030', '([^\030]*)\030') do
    n = n + 1
    fields[n] = field
  end
  return fields
end
local registered = {}

for j = 1, njobs do
  local f = split(ARGV[2 + 3 * j])
  local data, meta = ARGV[3 + 3 * j], ARGV[4 + 3 * j]
  local id, q, mode, score, unique, ttl, front = f[1], f[2], f[3], f[4], f[5], f[6], f[7]
  local npairs = tonumber(f[8])
  local nlife_at = 9 + 2 * npairs
  local nlife = tonumber(f[nlife_at])
  local jk = p .. ':job:' .. id
  if unique == '1' and redis.call('EXISTS', jk) == 1 then
    out[j] = 0
  else
    if unique == '0' then redis.call('DEL', jk) end
    local fields = {'data', data}
    if meta ~= '' then fields[3] = 'meta'; fields[4] = meta end
    for k = 9, nlife_at - 1 do fields[#fields + 1] = f[k] end
    redis.call('HSET', jk, unpack(fields))
    if ttl ~= '' then redis.call('EXPIRE', jk, ttl) end
    if not registered[q] then
      redis.call('SADD', p .. ':queues', p .. ':queue:' .. q)
      registered[q] = true
    end
    if mode == 'scheduled' then
      redis.call('ZADD', p .. ':scheduled:' .. q, score, id)
    elseif front == '1' then
      redis.call('LPUSH', p .. ':queue:' .. q, id)
    else
      redis.call('RPUSH', p .. ':queue:' .. q, id)
    end
    if nlife > 0 then
      local life = {}
      for k = nlife_at + 1, nlife_at + 2 * nlife do life[#life + 1] = f[k] end
      redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', unpack(life))
    end
    out[j] = 1
  end
end
return out
