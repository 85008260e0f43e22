-- Enqueue a batch of jobs atomically, as rq.Queue.enqueue / enqueue_at would (rq 2.12 / 3.0).
-- KEYS: lifecycle stream, <p>:queues. ARGV: prefix, maxlen, then one or more segments. A segment is a run of jobs that
-- share every option (queue, function, timeout, TTLs, retry, agent, ...):
--   queue, status ('queued' | 'scheduled'), unique ('1': skip if the id exists, '0': replace it,
--   'n': a freshly generated id), ttl ('' | s), at_front ('1'|'0'), has_meta ('1'|'0': a meta per job),
--   nhash, <field, value>*nhash (the shared hash fields), nlife, <field, value>*nlife (shared lifecycle
--   record fields, packed: 'L' first, lib_life.lua), njobs,
--   then per job: id, data, [meta if has_meta], description, timestamp text (created_at, and enqueued_at
--   when queued), epoch seconds (the lifecycle record's enqueued_at), [if scheduled: run-at epoch ms]
-- A scheduled job's score is its run-at rounded UP to whole seconds (RQ's scheduler reads integer seconds
-- and so never starts it early); the exact time is the job field asyncsched_run_at (ms), which our
-- promote.lua honours; <p>:asyncsched:wake:<q> is told the earliest, so idle workers wake in time.
-- The shared fields are passed straight from ARGV to HSET/XADD (unpack of a range: no table is built, no
-- string is split), which keeps both a 1-job call and a 1,000-job call cheap for Redis.
-- A segment of 8 jobs or more that go straight to their queue writes the shared hash fields once, into a
-- template hash (key_template, in the queue's slot; deleted before the segment ends, so no other client
-- ever sees it), and gives each job a COPY of it and an HSET of its own 4 fields: Redis then builds a
-- job's hash with one copy of memory instead of ~17 inserts (each a scan of the hash and a reallocation),
-- and Lua converts 8 arguments a job instead of ~34 (-34% of the Redis instructions a job in bulk, see
-- docs/performance.md). The hash holds the same fields and values either way. Below 8 jobs the template
-- costs more than it saves (a hash whose values outgrow a listpack is converted on each job's HSET:
-- break-even at ~8 jobs; a listpack one at ~2). It has no function of its own (read_segment writes the
-- template, write_job the copies): each local function is a closure made anew on every call, which a
-- one-job call pays too.
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

-- A segment's header from ARGV[i]: queue, unique, ttl, has_meta, scheduled, the shared hash and lifecycle
-- fields' ARGV ranges, njobs, dependencies, allow_dependency_failures, rate limit key and concurrency, list
-- and scheduled keys, push command, the keys' type error, the index of its first job's arguments, and its
-- template hash (see the header: written here when the segment has one, else nil).
-- (Plain values, not a table, and few functions with few upvalues: each costs Redis on every call.)
local function read_segment(i)
  local q, status, unique, ttl, front = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
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
  local qkey, skey = key_queue(p, q), key_registry(p, 'scheduled', q)
  local bad, tk
  if scheduled then bad = wrong_type(skey, 'zset') else bad = wrong_type(qkey, 'list') end
  local njobs = tonumber(ARGV[life_to + 1])
  if njobs >= 8 and not (scheduled or deps or rl_key or bad) and hash_to > hash_from then
    tk = key_template(p, q)
    redis.call('DEL', tk)  -- ours, but a foreign writer may have left anything there
    redis.call('HSET', tk, unpack(ARGV, hash_from, hash_to))
  end
  return q, unique, ttl, ARGV[i + 5] == '1', scheduled, hash_from, hash_to, life_from, life_to, njobs, deps,
    allow, rl_key, rl_conc, qkey, skey, front == '1' and 'LPUSH' or 'RPUSH', bad, life_to + 2, tk
end

-- A job's hash written. One that goes straight to its queue (g nil) is copied from its segment's template tk
-- if there is one, and noted for the segment's push (pushed, qkey). One that may not (its segment g = {q,
-- ttl, scheduled, hash_from, hash_to, deps, allow, rl_key, rl_conc, qkey, skey, pushed} is scheduled, has
-- dependencies or a rate limit) is then scheduled, deferred, waiting for a rate slot, or pushed. Returns
-- its run-at (ms) if scheduled.
local function write_job(g, tk, jk, id, data, desc, ts, epoch, score, hash_from, hash_to, pushed, qkey)
  if not g then
    if tk and redis.call('COPY', tk, jk) == 1 then  -- 0: the key exists (then merged into, as without)
      redis.call('HSET', jk, 'data', data, 'created_at', ts, 'description', desc, 'enqueued_at', ts)
    else
      redis.call('HSET', jk, 'data', data, 'created_at', ts, 'description', desc, 'enqueued_at', ts,
        unpack(ARGV, hash_from, hash_to))
    end
    many_add(pushed, qkey, id)
    return nil
  end
  local q, ttl, scheduled, deps, allow, rl_key = g[1], g[2], g[3], g[6], g[7], g[8]
  -- rq.Queue.setup_dependencies: deferred while a dependency is neither finished nor (allowed) failed
  local waiting = false
  if deps then
    for _, dep in ipairs(deps) do
      local ds = redis.call('HGET', key_job(p, dep), 'status')
      if ds and ds ~= 'finished' and not (allow and ds == 'failed') then waiting = true end
    end
  end
  if scheduled then
    redis.call('HSET', jk, 'data', data, 'created_at', ts, 'description', desc,
      unpack(ARGV, hash_from, hash_to))
    local run_ms = tonumber(score)
    redis.call('ZADD', g[11], math.ceil(run_ms / 1000), id)
    redis.call('HSET', jk, 'asyncsched_run_at', score)
    return run_ms
  elseif waiting or rl_key then
    redis.call('HSET', jk, 'data', data, 'created_at', ts, 'description', desc,
      unpack(ARGV, hash_from, hash_to))
    if waiting then
      redis.call('HSET', jk, 'status', 'deferred')
      -- RQ 2.x reads the score as an expiry (no ttl: never); RQ 3 only orders by it
      local dscore = ttl ~= '' and tostring(math.floor(tonumber(epoch)) + tonumber(ttl)) or '+inf'
      redis.call('ZADD', key_registry(p, 'deferred', q), dscore, id)
      for _, dep in ipairs(deps) do
        redis.call('SADD', key_dependents(p, dep), id)
        redis.call('SADD', key_dependencies(p, id), dep)
      end
    else
      rl_wait(p, rl_key, g[9], id, tonumber(epoch), ts)
    end
  else
    write_job(nil, nil, jk, id, data, desc, ts, epoch, score, hash_from, hash_to, g[12], g[10])
  end
end

-- A job's lifecycle record (its segment's shared fields are ARGV[life_from..life_to], packed: 'L', then the
-- packed fields, then any in fields of their own; lib_life.lua): its id and time are added to the packed
-- field (an id holding the separator in a field of its own). The stream is trimmed once a segment, by its
-- last record (or after the segment, when its last job was skipped).
local function record(id, epoch, life_from, life_to, trim)
  local packed = ARGV[life_from + 1]
  if string.find(id, '\31', 1, true) then
    redis.call('XADD', stream, '*', 'L', packed .. '\31e\31' .. epoch, 'job_id', id,
      unpack(ARGV, life_from + 2, life_to))
    if trim then redis.call('XTRIM', stream, 'MAXLEN', '~', maxlen) end
  elseif trim then
    redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'L', packed .. '\31j\31' .. id .. '\31e\31' .. epoch,
      unpack(ARGV, life_from + 2, life_to))
  else
    redis.call('XADD', stream, '*', 'L', packed .. '\31j\31' .. id .. '\31e\31' .. epoch,
      unpack(ARGV, life_from + 2, life_to))
  end
end

local i = 3
while i <= #ARGV do
  local q, unique, ttl, has_meta, scheduled, hash_from, hash_to, life_from, life_to, njobs, deps, allow, rl_key,
    rl_conc, qkey, skey, push, bad_q, first, tk = read_segment(i)
  i = first
  local wake, untrimmed = nil, false  -- untrimmed: a record was added since the stream was last trimmed
  local pushed = {}  -- the segment's queued ids, pushed at once after its loop (lib_many)
  -- the segment, for write_job (only when its jobs may not go straight to the queue)
  local held = (scheduled or deps or rl_key) and
    {q, ttl, scheduled, hash_from, hash_to, deps, allow, rl_key, rl_conc, qkey, skey, pushed}
  for k = 1, njobs do
    local id, data = ARGV[i], ARGV[i + 1]
    i = i + 2
    local meta = has_meta and ARGV[i] or nil
    if has_meta then i = i + 1 end
    local desc, ts, epoch = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    i = i + 3
    local score = scheduled and ARGV[i] or nil
    if scheduled then i = i + 1 end
    local jk = key_job(p, id)
    n = n + 1
    if bad_q then
      out[n] = bad_q
    elseif unique == '1' and redis.call('EXISTS', jk) == 1 then
      out[n] = 0
    else
      if unique == '0' then redis.call('DEL', jk) end
      local run_ms = write_job(held, tk, jk, id, data, desc, ts, epoch, score, hash_from, hash_to, pushed,
        qkey)
      if run_ms and (not wake or run_ms < wake) then wake = run_ms end
      if meta then redis.call('HSET', jk, 'meta', meta) end
      if ttl ~= '' then redis.call('EXPIRE', jk, ttl) end
      if not registered[q] then
        redis.call('SADD', queues_key, qkey)
        registered[q] = true
      end
      untrimmed = k < njobs
      record(id, epoch, life_from, life_to, not untrimmed)
      out[n] = 1
    end
  end
  if tk then redis.call('DEL', tk) end
  many_send(pushed, push)
  if untrimmed then redis.call('XTRIM', stream, 'MAXLEN', '~', maxlen) end  -- its last job was skipped
  if wake then redis.call('PUBLISH', key_wake(p, q), string.format('%.0f', wake)) end
end
return out
