-- Enqueue a batch of jobs atomically, as rq.Queue.enqueue / enqueue_at would (rq 2.12 / 3.0).
-- KEYS: lifecycle stream, <p>:queues. ARGV: prefix, maxlen, then one or more segments. A segment is a run of jobs that
-- share every option (queue, function, timeout, TTLs, retry, agent, ...):
--   queue, status ('queued' | 'scheduled'), unique ('1': skip if the id exists, '0': replace it,
--   'n': a freshly generated id), ttl ('' | s), at_front ('1'|'0'), has_meta ('1'|'0': a meta per job),
--   nhash, <field, value>*nhash (the shared hash fields), nlife, <field, value>*nlife (shared lifecycle
--   record fields), njobs,
--   then per job: id, data, [meta if has_meta], description, timestamp text (created_at, and enqueued_at
--   when queued), epoch seconds (the lifecycle record's enqueued_at), [if scheduled: run-at epoch ms]
-- A scheduled job's score is its run-at rounded UP to whole seconds (RQ's scheduler reads integer seconds
-- and so never starts it early); the exact time is the job field asyncsched_run_at (ms), which our
-- promote.lua honours; <p>:asyncsched:wake:<q> is told the earliest, so idle workers wake in time.
-- The shared fields are passed straight from ARGV to HSET/XADD (unpack of a range: no table is built, no
-- string is split), which keeps both a 1-job call and a 1,000-job call cheap for Redis.
-- Returns one integer per job: 1 written, 0 skipped (unique and the job already exists).
-- A queue key (list, scheduled zset) of the wrong type refuses the jobs of that segment alone: each gets
-- the WRONGTYPE text naming the key in place of its integer, and nothing of theirs is written. The stream
-- of the wrong type refuses the whole call (an error reply) before any write.
--#include ratelimit
--#include types
--#include many
local p, maxlen = ARGV[1], ARGV[2]
local stream, queues_key = KEYS[1], KEYS[2]
local out, n = {}, 0
local registered = {}

local bad = wrong_type(stream, 'stream')
if bad then return redis.error_reply(bad) end

-- A segment's header from ARGV[i]: its shared options, argument ranges and keys, as a table s (with the ids to
-- push and the earliest run-at, filled by its jobs), and the index of its first job's arguments
local function read_segment(i)
  local q, status, front = ARGV[i], ARGV[i + 1], ARGV[i + 4]
  local hash_from = i + 7
  local hash_to = hash_from + 2 * tonumber(ARGV[i + 6]) - 1
  local life_from = hash_to + 2
  local life_to = life_from + 2 * tonumber(ARGV[hash_to + 1]) - 1
  local scheduled = status == 'scheduled'
  -- RQ's dependencies and rate limit, from the shared hash fields (rare: found by one scan)
  local deps, allow, rl_key, rl_conc = nil, false, nil, nil
  for k = hash_from, hash_to, 2 do
    local name = ARGV[k]
    if name == 'dependency_ids' then
      deps = {}
      for dep in string.gmatch(ARGV[k + 1], '"([^"]+)"') do deps[#deps + 1] = dep end
    elseif name == 'allow_dependency_failures' then allow = ARGV[k + 1] == '1'
    elseif name == 'rate_limit_key' then rl_key = ARGV[k + 1]
    elseif name == 'rate_limit_concurrency' then rl_conc = ARGV[k + 1] end
  end
  local qkey = key_queue(p, q)
  local skey = key_registry(p, 'scheduled', q)
  local bad
  if scheduled then bad = wrong_type(skey, 'zset') else bad = wrong_type(qkey, 'list') end
  -- one constructor (a table sized at once); pushed: the segment's queued ids, pushed after its jobs (lib_many)
  return {q = q, unique = ARGV[i + 2], ttl = ARGV[i + 3], has_meta = ARGV[i + 5] == '1', hash_from = hash_from,
    hash_to = hash_to, life_from = life_from, life_to = life_to, njobs = tonumber(ARGV[life_to + 1]),
    scheduled = scheduled, deps = deps, allow = allow, rl_key = rl_key, rl_conc = rl_conc, qkey = qkey,
    skey = skey, push = front == '1' and 'LPUSH' or 'RPUSH', bad = bad, pushed = {}, wake = false}, life_to + 2
end

-- A job of segment s that may not go straight to its queue (the segment is scheduled, has dependencies or a
-- rate limit): its hash written, then scheduled, deferred, waiting for a rate slot, or pushed
local function hold_job(s, jk, id, data, desc, ts, epoch, score)
  local q, deps, hash_from, hash_to = s.q, s.deps, s.hash_from, s.hash_to
  -- rq.Queue.setup_dependencies: deferred while a dependency is neither finished nor (allowed) failed
  local waiting = false
  if deps then
    for _, dep in ipairs(deps) do
      local ds = redis.call('HGET', key_job(p, dep), 'status')
      if ds and ds ~= 'finished' and not (s.allow and ds == 'failed') then waiting = true end
    end
  end
  if s.scheduled then
    redis.call('HSET', jk, 'data', data, 'created_at', ts, 'description', desc,
      unpack(ARGV, hash_from, hash_to))
    local run_ms = tonumber(score)
    redis.call('ZADD', s.skey, math.ceil(run_ms / 1000), id)
    redis.call('HSET', jk, 'asyncsched_run_at', score)
    if not s.wake or run_ms < s.wake then s.wake = run_ms end
  elseif waiting or s.rl_key then
    redis.call('HSET', jk, 'data', data, 'created_at', ts, 'description', desc,
      unpack(ARGV, hash_from, hash_to))
    if waiting then
      redis.call('HSET', jk, 'status', 'deferred')
      -- RQ 2.x reads the score as an expiry (no ttl: never); RQ 3 only orders by it
      local ttl = s.ttl
      local dscore = ttl ~= '' and tostring(math.floor(tonumber(epoch)) + tonumber(ttl)) or '+inf'
      redis.call('ZADD', key_registry(p, 'deferred', q), dscore, id)
      for _, dep in ipairs(deps) do
        redis.call('SADD', key_dependents(p, dep), id)
        redis.call('SADD', key_dependencies(p, id), dep)
      end
    else
      rl_wait(p, s.rl_key, s.rl_conc, id, tonumber(epoch), ts)
    end
  else
    redis.call('HSET', jk, 'data', data, 'created_at', ts, 'description', desc, 'enqueued_at', ts,
      unpack(ARGV, hash_from, hash_to))
    many_add(s.pushed, s.qkey, id)
  end
end

-- The jobs of segment s, from ARGV[i]: each written (a plain queued job inline, the others by hold_job),
-- skipped or refused; returns the index after them
local function enqueue_jobs(s, i)
  local has_meta, scheduled, unique, bad = s.has_meta, s.scheduled, s.unique, s.bad
  local q, qkey, ttl, pushed, hash_from, hash_to = s.q, s.qkey, s.ttl, s.pushed, s.hash_from, s.hash_to
  local held = scheduled or s.deps or s.rl_key
  for _ = 1, s.njobs do
    local id, data = ARGV[i], ARGV[i + 1]
    i = i + 2
    local meta
    if has_meta then
      meta = ARGV[i]
      i = i + 1
    end
    local desc, ts, epoch = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    i = i + 3
    local score
    if scheduled then
      score = ARGV[i]
      i = i + 1
    end
    local jk = key_job(p, id)
    n = n + 1
    if bad then
      out[n] = bad
    elseif unique == '1' and redis.call('EXISTS', jk) == 1 then
      out[n] = 0
    else
      if unique == '0' then redis.call('DEL', jk) end
      if held then
        hold_job(s, jk, id, data, desc, ts, epoch, score)
      else
        redis.call('HSET', jk, 'data', data, 'created_at', ts, 'description', desc, 'enqueued_at', ts,
          unpack(ARGV, hash_from, hash_to))
        many_add(pushed, qkey, id)
      end
      if meta then redis.call('HSET', jk, 'meta', meta) end
      if ttl ~= '' then redis.call('EXPIRE', jk, ttl) end
      if not registered[q] then
        redis.call('SADD', queues_key, qkey)
        registered[q] = true
      end
      redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'job_id', id, 'enqueued_at', epoch,
        unpack(ARGV, s.life_from, s.life_to))
      out[n] = 1
    end
  end
  return i
end

local i = 3
while i <= #ARGV do
  local s
  s, i = read_segment(i)
  i = enqueue_jobs(s, i)
  many_send(s.pushed, s.push)
  if s.wake then redis.call('PUBLISH', key_wake(p, s.q), string.format('%.0f', s.wake)) end
end
return out
