-- Orphan recovery: executions in <p>:wip:<q> whose lease expired (their worker died) are re-queued or
-- failed. Each entry is claimed by ZREM first, so two reapers (or RQ's own cleanup) never both act on it.
-- Jobs with RQ retries left are retried as RQ's StartedJobRegistry.cleanup does.
-- Also sweeps <p>:queue:<q>:intermediate (a worker that died between BLMOVE and its claim): an id still
-- queued there a minute after it was first seen (RQ's first_seen key) goes back to its queue; it never ran.
-- And returns the ids left in a dead worker's claiming list (<p>:asyncsched:claiming:<worker>, its BLMOVE
-- target, normally emptied by the claim pipelined behind the BLMOVE) to the head of their queue.
-- KEYS: lifecycle stream, <ns>:claiming, <p>:rl-keys, then four per queue: <p>:queue:<q>,
--       <p>:queue:<q>:intermediate, <p>:wip:<q>, <p>:failed:<q> (asyncsched.rq._calls.ReapCall); keys named
--       by what it reads (a dead worker's and its claiming list's queue, a job's, a rate limit's) come from
--       lib_keys.lua
-- ARGV: prefix, now (int s), now_ts, policy ('requeue'|'fail'), maxlen, exc_string (b64 zlib),
--       error text, nqueues, <queue>*nqueues
-- Returns a flat list: <id, action ('requeued'|'failed'|'unstuck'|'unclaimed'|'quarantined: <why>'|
--   'skipped: <why>')>*. A key of the wrong type (planted by a foreign writer) never fails the reap: that id
--   (or key: id '') is skipped and reported; a job hash of another type leaves the intermediate list; ids a
--   dead worker claimed from a queue whose key is of another type go to <p>:asyncsched:quarantine:<q>.
--#include ratelimit
--#include types
--#include life
local p, now, now_ts, policy, stream, maxlen = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], KEYS[1], ARGV[5]
local exc, err, nq = ARGV[6], ARGV[7], tonumber(ARGV[8])
-- each of this reap's queues' keys, from KEYS: {list, intermediate, wip, failed}
local qkeys = {}
for k = 1, nq do
  local b = 3 + 4 * (k - 1)
  qkeys[ARGV[8 + k]] = {KEYS[b + 1], KEYS[b + 2], KEYS[b + 3], KEYS[b + 4]}
end
local out = {}
local function report(id, action) out[#out + 1] = id; out[#out + 1] = action end
local function skipped(id, why) report(id, 'skipped: ' .. why) end
local stream_bad = wrong_type(stream, 'stream')
if stream_bad then skipped('', stream_bad .. ' (lifecycle records of this reap are not written)') end

-- a dead worker's claiming list goes back to the head of its queue (or to quarantine: see above)
local function unclaim(w, q, lk)
  local lbad = wrong_type(lk, 'list')
  if lbad then skipped('', lbad); return true end
  local target, action = key_queue(p, q), 'unclaimed'
  local qbad = wrong_type(target, 'list')
  if qbad then
    target, action = key_quarantine(p, q), 'quarantined: ' .. qbad
    local tbad = wrong_type(target, 'list')
    if tbad then skipped('', tbad); return false end  -- nowhere to put them: left where they are
  end
  while true do
    local id = redis.call('LMOVE', lk, target, 'RIGHT', 'LEFT')
    if not id then break end
    report(id, action)
  end
  return true
end

local registry = KEYS[2]
local rbad = wrong_type(registry, 'hash')
if rbad then skipped('', rbad) else
  local claiming = redis.call('HGETALL', registry)
  for k = 1, #claiming, 2 do
    local w, q = claiming[k], claiming[k + 1]
    local wk = key_worker(p, w)
    local wt = redis.call('TYPE', wk).ok
    if wt == 'none' or (wt == 'hash' and redis.call('HEXISTS', wk, 'death') == 1) then
      if unclaim(w, q, key_claiming(p, w)) then redis.call('HDEL', registry, w) end
    elseif wt ~= 'hash' then
      skipped('', 'WRONGTYPE key ' .. wk .. ' holds a ' .. wt .. ', not a hash')
    end
  end
end

-- one expired execution <member> of queue <q>: retried, requeued or failed as its job hash says
local function reap_one(q, member, qbad)
  local sep = string.find(member, ':', 1, true)
  local id, ex = member, ''
  if sep then id = string.sub(member, 1, sep - 1); ex = string.sub(member, sep + 1) end
  local jk = key_job(p, id)
  redis.call('DEL', key_execution(p, member))
  local ek = key_executions(p, id)
  if not wrong_type(ek, 'zset') then redis.call('ZREM', ek, ex) end
  local jbad = wrong_type(jk, 'hash')
  if jbad then skipped(id, jbad); return end
  local h = redis.call('HMGET', jk, 'status', 'worker_name', 'retries_left', 'failure_ttl', 'asyncsched_attempt',
    'asyncsched_agent', 'asyncsched_task', 'asyncsched_function_path', 'asyncsched_scheduled_task', 'description',
    'rate_limit_key')
  if h[2] then
    local sk = key_worker_executions(p, h[2])
    if not wrong_type(sk, 'set') then redis.call('SREM', sk, member) end
  end
  if h[1] ~= 'started' then return end
  local attempt = h[5] or '1'
  local retries = tonumber(h[3] or '0') or 0
  local kind
  if (policy == 'requeue' or retries > 0) and not qbad then
    if retries > 0 and policy ~= 'requeue' then redis.call('HSET', jk, 'retries_left', retries - 1) end
    redis.call('HSET', jk, 'status', 'queued', 'enqueued_at', now_ts, 'ended_at', now_ts,
      'asyncsched_attempt', tostring((tonumber(attempt) or 1) + 1))
    redis.call('RPUSH', qkeys[q][1], id)
    kind = 'retry'
    report(id, 'requeued')
  else
    local ttl = tonumber(h[4] or '') or 31536000
    redis.call('HSET', jk, 'status', 'failed', 'ended_at', now_ts)
    local fk, rk = qkeys[q][4], key_results(p, id)
    local fbad = wrong_type(fk, 'zset')
    if fbad then skipped(id, fbad) else redis.call('ZADD', fk, now + ttl, id) end
    if not wrong_type(rk, 'stream') then
      redis.call('XADD', rk, 'MAXLEN', '~', 10, '*', 'type', '2', 'worker_name', '', 'exc_string', exc)
    end
    if ttl > 0 then redis.call('EXPIRE', jk, ttl) end
    kind = 'failed'
    report(id, 'failed')
    if h[11] then
      local why = guarded(rl_release, p, h[11], id, now, now_ts)
      if why then skipped(id, why) end
    end
  end
  if stream_bad then return end
  local life = life_job({'kind', kind, 'job_id', id, 'queue', q, 'attempt', attempt, 'ended_at', now, 'error', err},
    h[6], h[7], h[8], h[9], h[10])
  if h[2] then life[#life + 1] = 'worker'; life[#life + 1] = h[2] end
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', unpack(life_pack(life)))
end

-- RQ's intermediate list of queue <q>: an id still queued a minute after it was first seen goes back
local function sweep_intermediate(q, qbad)
  local ik = qkeys[q][2]
  local ibad = wrong_type(ik, 'list')
  if ibad then skipped('', ibad); return end
  for _, id in ipairs(redis.call('LRANGE', ik, 0, -1)) do
    local jk = key_job(p, id)
    local jbad = wrong_type(jk, 'hash')
    if jbad then
      redis.call('LREM', ik, 1, id)
      skipped(id, jbad)
    elseif redis.call('HGET', jk, 'status') ~= 'queued' then
      redis.call('LREM', ik, 1, id)
    else
      local fk = key_first_seen(p, q, id)
      local seen = nil
      if redis.call('TYPE', fk).ok == 'string' then seen = tonumber(redis.call('GET', fk)) end
      if not seen then
        redis.call('SET', fk, now, 'EX', 86400)  -- SET replaces a key of any type
      elseif now - seen > 60 then
        if qbad then
          skipped(id, qbad)
        else
          redis.call('LREM', ik, 1, id)
          redis.call('DEL', fk)
          redis.call('RPUSH', qkeys[q][1], id)
          report(id, 'unstuck')
        end
      end
    end
  end
end

for k = 1, nq do
  local q = ARGV[8 + k]
  local qbad = wrong_type(qkeys[q][1], 'list')
  sweep_intermediate(q, qbad)
  local wk = qkeys[q][3]
  local wbad = wrong_type(wk, 'zset')
  if wbad then skipped('', wbad) else
    for _, member in ipairs(redis.call('ZRANGEBYSCORE', wk, 0, now)) do
      if redis.call('ZREM', wk, member) == 1 then
        local why = guarded(reap_one, q, member, qbad)
        if why then skipped(member, why) end
      end
    end
  end
end

-- RQ's RateLimitRegistry.cleanup: free slots held by jobs that are neither queued nor started (and have no
-- live execution), fill free slots, and forget a key with nobody holding or waiting
local function rl_cleanup(key)
  for _, id in ipairs(redis.call('ZRANGE', key_rl(p, key, 'allowed'), 0, -1)) do
    local jk, ek = key_job(p, id), key_executions(p, id)
    local st = nil
    if redis.call('TYPE', jk).ok == 'hash' then st = redis.call('HGET', jk, 'status') end
    local live = 0
    if redis.call('TYPE', ek).ok == 'zset' then live = redis.call('ZCOUNT', ek, '(' .. now, '+inf') end
    if st ~= 'queued' and st ~= 'started' and live == 0 then
      redis.call('ZREM', key_rl(p, key, 'allowed'), id)
    end
  end
  rl_fill(p, key, now, now_ts)
  local ak, wk = key_rl(p, key, 'allowed'), key_rl(p, key, 'rate_limited')
  if redis.call('ZCARD', ak) == 0 and redis.call('ZCARD', wk) == 0 then
    redis.call('SREM', KEYS[3], key)
    redis.call('DEL', key_rl(p, key), ak, wk)
  end
end
local kbad = wrong_type(KEYS[3], 'set')
if kbad then skipped('', kbad) else
  for _, key in ipairs(redis.call('SMEMBERS', KEYS[3])) do
    local why = guarded(rl_cleanup, key)
    if why then skipped('', 'rate limit ' .. key .. ': ' .. why) end
  end
end
return out
