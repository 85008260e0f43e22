-- Dequeue up to N jobs and mark them started in one step, leaving what an RQ worker leaves
-- (job status/started_at/worker_name/last_heartbeat, PERSIST, execution hash, executions zset,
-- wip member <job>:<exec>, RQ 3 worker executions set) plus a 'started' lifecycle record.
-- KEYS: lifecycle stream, <p>:suspended, <p>:worker:<w>, <p>:worker:<w>:executions, the worker's claiming
--       list, then three per queue named in ARGV (given_queue first when not '', then each of the queues):
--       <p>:queue:<q>, <p>:wip:<q>, <ns>:paused:<q> (asyncsched.rq._calls.ClaimCall)
-- ARGV: prefix (for the keys derived from a popped id: lib_keys.lua), worker, now (float s, or '' for
--       Redis' clock), now_ts (RQ text), lease (s), n, maxlen, given_queue ('' if none), use the claiming
--       list ('1' | '0'), ngiven, <id>*ngiven, nqueues, <queue>*nqueues, exec base (20 hex), first exec
--       number (the k-th job started gets execution id base .. %012x of first + k - 1, like RQ's uuid4().hex)
-- Returns a flat list of entries: id, exec, queue, <the job's fields the worker reads (EXTRA's), names and
-- values as a nested array, those set to '' left out but data>. Keys of the wrong type never abort the
-- script half way: a job whose keys Redis refuses is popped and returned as id, '', queue, <error text>
-- (the worker skips it); a queue whose keys are refused is not popped and comes back as '', '', queue,
-- <error text> (the worker backs that queue off). A worker key or the lifecycle stream of the wrong type
-- refuses the whole claim before any write. {'suspended'} when
-- workers are suspended (RQ's suspension key). A job over one of its flow limits (lib_limits.lua) is
-- parked, not started; when one was parked because of a rate, a last entry '', 'limited', '', <when a start
-- frees (epoch s)> tells the worker when to let it go.
--#include ratelimit
--#include limits
--#include types
--#include life
--#include many
local p, w, now_s, now_ts, lease = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])

-- RQ's timestamp text ('%Y-%m-%dT%H:%M:%S.%fZ', UTC) of an epoch second and microsecond
-- (days to civil date: Howard Hinnant's algorithm)
local function rq_ts(sec, usec)
  local days = math.floor(sec / 86400)
  local rem = sec - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400 + (m <= 2 and 1 or 0)
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%06dZ', y, m, d,
    math.floor(rem / 3600), math.floor(rem % 3600 / 60), rem % 60, usec)
end

-- A claim pipelined behind a blocking pop runs at an unknown later moment: it takes the time from Redis
if now_s == '' then
  local t = redis.call('TIME')
  now_s = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
  now_ts = rq_ts(tonumber(t[1]), tonumber(t[2]))
end
local now = tonumber(now_s)
local n, stream, maxlen = tonumber(ARGV[6]), KEYS[1], ARGV[7]
-- The claiming list is the worker's own BLMOVE target (its claim runs pipelined right behind the BLMOVE):
-- its ids, which are of given_queue, are claimed first and count towards n.
local given_q, claiming = ARGV[8], ARGV[9] == '1' and KEYS[5] or ''
local ngiven = tonumber(ARGV[10])
local i = 11 + ngiven
local nqueues = tonumber(ARGV[i])
local queues = {}
for k = 1, nqueues do queues[k] = ARGV[i + k] end
i = i + nqueues + 1
local exec_base, exec_first = ARGV[i], tonumber(ARGV[i + 1])
-- each queue's keys, from KEYS: {list, wip registry, paused flag}
local qkeys, slot = {}, 6
local function bind(q)
  qkeys[q] = qkeys[q] or {KEYS[slot], KEYS[slot + 1], KEYS[slot + 2]}
  slot = slot + 3
end
if given_q ~= '' then bind(given_q) end
for _, q in ipairs(queues) do bind(q) end
-- RQ's suspension (rq suspend / asyncsched suspend): claim nothing. Ids the worker already popped go back to
-- the head of their queue; ids in the claiming list wait there for the claim after the resume.
if redis.call('EXISTS', KEYS[2]) == 1 then
  for k = ngiven, 1, -1 do redis.call('LPUSH', qkeys[given_q][1], ARGV[10 + k]) end
  return {'suspended'}
end
local used = 0
local out = {}
local wkey = KEYS[3]
local wexec = KEYS[4]
local last_id = nil
local wip, wmembers = {}, {}  -- the wip registries' and the worker's executions set's new members (lib_many)

for _, check in ipairs({{stream, 'stream'}, {wexec, 'set'}, {wkey, 'hash'}}) do
  local bad = wrong_type(check[1], check[2])
  if bad then return redis.error_reply(bad) end
end

local function poison(id, q, err)
  -- only a key of the wrong type poisons a job or queue; any other refusal (NOREPLICAS, READONLY, OOM:
  -- no write of this script went through) fails the whole claim, so the worker retries it elsewhere
  if not string.find(err, 'WRONGTYPE', 1, true) then
    error({err = string.match(err, ': (.*)$') or err})  -- Redis' own text (its code first)
  end
  out[#out + 1] = id
  out[#out + 1] = ''
  out[#out + 1] = q
  out[#out + 1] = err
end

-- The job-hash fields read, by slot: 1-10 by this script (1-6 for the 'started' record), all of them by the
-- worker, which gets them back (asyncsched.rq.jobhash.CLAIMED_FIELDS, in this order) and reads the rest of
-- the hash only when a job asks for it (current_job().hash)
local function claimed_slots()  -- a table constructor: sized at once (cheaper than inserting each name)
  return {asyncsched_attempt = 1, asyncsched_agent = 2, asyncsched_task = 3, asyncsched_function_path = 4,
    asyncsched_scheduled_task = 5, description = 6, status = 7, asyncsched_limits = 8, rate_limit_key = 9,
    rate_limit_concurrency = 10, data = 11, timeout = 12, result_ttl = 13, failure_ttl = 14, retries_left = 15,
    retry_intervals = 16, enqueue_at_front_on_retry = 17, asyncsched_retry = 18, meta = 19, enqueued_at = 20,
    webhooks = 21, success_callback_name = 22, failure_callback_name = 23, stopped_callback_name = 24,
    success_callback_timeout = 25, failure_callback_timeout = 26, stopped_callback_timeout = 27,
    repeats_left = 28, repeat_intervals = 29}
end
local EXTRA = claimed_slots()

-- The fields of job hash h (HGETALL) this script reads (slots 1-10; false: unset), and h cut down in place
-- to the fields returned to the worker (names and values of EXTRA's, '' left out but data: cheaper than a
-- new table; its reply ends at the first nil); false when h is empty (no job)
local function read_fields(h)
  local extra = {false, false, false, false, false, false, false, false, false, false}  -- sized once
  local nh, nf = #h, 0
  for k = 1, nh, 2 do
    local name = h[k]
    local slot = EXTRA[name]
    if slot then
      local v = h[k + 1]
      if slot <= 10 then extra[slot] = v end
      if v ~= '' or slot == 11 then
        h[nf + 1], h[nf + 2] = name, v
        nf = nf + 2
      end
    end
  end
  h[nf + 1] = nil
  return nh > 0 and extra
end

local parks, limited_due = 0, nil
-- the numbers every job's writes share, as text once (a number passed to redis.call is formatted anew on
-- every call): the execution's and its executions zset's TTL, their expiry scores
local lease_s, exec_ttl = ARGV[5], tostring(lease + 60)
local exec_score, wip_score = tostring(math.floor(now) + lease + 60), tostring(math.floor(now) + lease)

-- the 'started' lifecycle record of job id (fields extra, read from its hash); the stream is trimmed once,
-- after the batch
local function record_start(id, q, extra)
  local agent, task, func, sched = extra[2], extra[3], extra[4], extra[5]
  local attempt = extra[1] or '1'
  if func and not (agent or task or sched) and life_ok[q] and life_ok[w] and life_ok[func] and life_ok[attempt]
      and not string.find(id, '\31', 1, true) then
    -- the common case, packed without building a table
    redis.call('XADD', stream, '*', 'L', 'k\31started\31j\31' .. id .. '\31q\31' .. q .. '\31w\31' .. w ..
      '\31s\31' .. now_s .. '\31a\31' .. attempt .. '\31f\31' .. func)
    return
  end
  local life = life_job({'kind', 'started', 'job_id', id, 'queue', q, 'worker', w, 'started_at', now_s,
    'attempt', attempt}, agent, task, func, sched, extra[6])
  redis.call('XADD', stream, '*', unpack(life_pack(life)))
end

local function start(id, q)
  local jk = key_job(p, id)
  -- one read gives the status, our extra fields and those returned to the worker (read_fields); the worker
  -- reading them itself costs it more than it saves Redis (docs/performance.md, issue 20)
  local h = redis.pcall('HGETALL', jk)
  if h.err then
    poison(id, q, 'key ' .. jk .. ': ' .. h.err)
    return false
  end
  local extra = read_fields(h)
  -- a missing hash is skipped (as RQ does); a malformed one is claimed so the worker fails it with a reason
  local status = extra and extra[7]
  if not extra or status == 'canceled' or status == 'started' or status == 'finished' then
    return false
  end
  local limits = nil
  if extra[8] then  -- flow limits: a job over one waits in its key's line, holding no worker slot
    limits = lim_parse(extra[8])
    local ok, due = lim_check(p, id, limits, now)
    if not ok then
      parks = parks + 1
      if due and (not limited_due or due < limited_due) then limited_due = due end
      return false
    end
  end
  local rl = extra[9] and rl_claim(p, extra[9], extra[10], id, now, now_ts)  -- RQ 3's RateLimit, RQ's keys
  if rl == 'wait' then parks = parks + 1 end
  if rl then
    if rl ~= 'wait' then poison(id, q, rl) end
    return false
  end
  used = used + 1
  local ex = exec_base .. string.format('%012x', exec_first + used - 1)
  local member, ek = id .. ':' .. ex, key_executions(p, id)
  local z = redis.pcall('ZADD', ek, exec_score, ex)  -- first write: may refuse the job
  if type(z) == 'table' and z.err then
    used = used - 1
    poison(id, q, 'key ' .. ek .. ': ' .. z.err)
    return false
  end
  redis.call('HSET', jk, 'status', 'started', 'started_at', now_ts, 'worker_name', w, 'last_heartbeat', now_ts)
  redis.call('PERSIST', jk)
  if limits then lim_take(p, id, ex, limits, now) end
  local xk = key_execution(p, member)
  redis.call('HSET', xk, 'id', ex, 'job_id', id, 'created_at', now_s, 'last_heartbeat', now_s, 'worker_name', w)
  redis.call('EXPIRE', xk, lease_s)
  redis.call('EXPIRE', ek, exec_ttl)
  many_add(wip, qkeys[q][2], wip_score, member)
  many_add(wmembers, wexec, member)
  record_start(id, q, extra)
  local o = #out
  out[o + 1], out[o + 2], out[o + 3], out[o + 4] = id, ex, q, h
  last_id = id
  return true
end

-- a queue is usable when its list and its wip registry have the right types (checked before popping)
local usable = {}
local function queue_ok(q)
  if usable[q] == nil then
    local bad = wrong_type(qkeys[q][1], 'list') or wrong_type(qkeys[q][2], 'zset')
    usable[q] = not bad
    if bad then poison('', q, bad) end
  end
  return usable[q]
end

-- A paused queue (asyncsched's key, set by TaskQueue.pause) gives nothing: ids already popped from it by a
-- blocking pop (BLPOP's given ids, BLMOVE's claiming list) go back to its front, in order.
local function paused(q) return redis.call('EXISTS', qkeys[q][3]) == 1 end
local given_paused = given_q ~= '' and paused(given_q)
local count = 0  -- jobs started from the claiming list and the queues, towards n

-- The ids the worker popped by BLPOP: started, or put back where they were when their queue is paused or
-- refused; then those of its claiming list (few functions: each is a closure made on every call, which costs)
local function claim_popped()
  if ngiven > 0 then
    if queue_ok(given_q) and not given_paused then
      for k = 1, ngiven do
        start(ARGV[10 + k], given_q)
      end
    else  -- popped by the worker's BLPOP: put them back where they were
      for k = ngiven, 1, -1 do
        redis.pcall('LPUSH', qkeys[given_q][1], ARGV[10 + k])
      end
    end
  end
  if given_paused and claiming ~= '' then
    while type(redis.pcall('LMOVE', claiming, qkeys[given_q][1], 'RIGHT', 'LEFT')) == 'string' do end
  end
  -- then the ids in the worker's claiming list (its BLMOVE target), up to n
  if claiming ~= '' and n > 0 and queue_ok(given_q) and not given_paused then
    local ids = redis.pcall('LPOP', claiming, n)
    if type(ids) == 'table' and ids.err then
      poison('', given_q, 'key ' .. claiming .. ': ' .. ids.err)
      ids = nil
    end
    if ids then
      for _, id in ipairs(ids) do
        if start(id, given_q) then count = count + 1 end
      end
    end
  end
end

-- Then the queues in order, until n jobs are started (or 100 parked); returns the reply
local function claim_queues()
  for _, q in ipairs(queues) do
    while count < n and parks < 100 and queue_ok(q) and not paused(q) do
      local want = n - count
      local ids = redis.call('LPOP', qkeys[q][1], want)
      if not ids then break end
      for _, id in ipairs(ids) do
        if start(id, q) then count = count + 1 end
      end
      if #ids < want then break end
    end
  end
  -- the batch's writes sent once, the worker's hash marked busy, and the reply
  if limited_due then
    out[#out + 1] = ''; out[#out + 1] = 'limited'; out[#out + 1] = ''; out[#out + 1] = string.format('%.6f', limited_due)
  end
  many_send(wip, 'ZADD')
  many_send(wmembers, 'SADD')
  if last_id then
    redis.call('XTRIM', stream, 'MAXLEN', '~', maxlen)  -- once for the batch's 'started' records
    redis.call('EXPIRE', wexec, exec_ttl)
  end
  if last_id and redis.call('EXISTS', wkey) == 1 then
    redis.call('HSET', wkey, 'state', 'busy', 'current_job', last_id, 'last_heartbeat', now_ts)
  end
  return out
end

claim_popped()
return claim_queues()
