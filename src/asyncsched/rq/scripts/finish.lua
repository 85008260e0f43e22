-- Record the outcome of a batch of executions exactly as an RQ worker does (rq 2.12 / 3.0):
-- job hash status/ended_at, result stream entry, finished/failed registry, TTLs, retry re-queue or
-- schedule, execution cleanup, worker counters, dependents, plus one lifecycle record per job.
-- A job no longer 'started' by this worker (cancelled, reaped, deleted) only has its execution cleaned.
-- KEYS: lifecycle stream, <p>:worker:<w>, <p>:worker:<w>:executions, then five per queue named in ARGV:
-- <p>:queue:<q>, <p>:wip:<q>, <p>:finished:<q>, <p>:failed:<q>, <p>:scheduled:<q>, then five per job, in the
-- order of the jobs: <p>:job:<id>, <p>:execution:<id>:<exec>, <p>:executions:<id>, <p>:results:<id>,
-- <p>:job:<id>:dependents (asyncsched.rq._calls.FinishCall). Keys derived from data (a dependent's, its
-- origin's, a rate or flow limit's, a queue's result scratch stream) come from lib_keys.lua.
-- ARGV: prefix, worker, maxlen, now_ts, now (float), F (fields per job), nqueues, <queue>*nqueues, njobs, then
-- one argument per job: its F fields joined by the byte 0x1e (record separator), in this order:
--  1 id  2 exec  3 queue  4 outcome (finished|failed|stopped|requeue|schedule)  5 result type
--  6 return_value ('' none)  7 exc_string ('' none)  8 job ttl ('' keep, -1 persist, 0 delete, n)
--  9 results ttl ('' none, -1 persist, n)  10 registry score  11 retries_left ('' keep)
--  12 scheduled score  13 at_front  14 exec started (float)  15 exec ended (float)  16 working time (s)
--  17 lifecycle kind  18 error  19 traceback  20 result (capped JSON)  21 next attempt ('' keep)
--  22 attempt  23 agent  24 task name  25 function path  26 scheduled task id (as claimed; '' none)
--  27 RQ Repeat: repeats left after this run ('' no repeat)  28 repeat intervals left (JSON)
--  29 repeat run-at (epoch s; 0: re-queued now)  30 flow or rate limits ('1' if the job was claimed with
--  rate_limit_key or asyncsched_limits set, else '': its hash is then not searched for them)
-- Returns one integer per job: 1 recorded, 0 only cleaned up (a vanished hash: outcome recorded in the
-- lifecycle stream only).
--#include ratelimit
--#include limits
--#include life
--#include many
local p, w, stream, maxlen, now_ts = ARGV[1], ARGV[2], KEYS[1], ARGV[3], ARGV[4]
local now = tonumber(ARGV[5])
local F, nqueues = tonumber(ARGV[6]), tonumber(ARGV[7])
local njobs = tonumber(ARGV[8 + nqueues])
local first_job = 8 + nqueues  -- ARGV[first_job + j]: the j-th job's packed fields
local qkeys = {}  -- queue -> {list, wip, finished, failed, scheduled}
for k = 1, nqueues do
  local b = 3 + 5 * (k - 1)
  qkeys[ARGV[7 + k]] = {KEYS[b + 1], KEYS[b + 2], KEYS[b + 3], KEYS[b + 4], KEYS[b + 5]}
end
local jobkeys_at = 3 + 5 * nqueues  -- KEYS[jobkeys_at + 5 * j + 1..5]: the j-th job's (from 0)
local wkey = KEYS[2]
local wexists = redis.call('EXISTS', wkey) == 1
local out = {}

local function enqueue_dependents(dk, failed)
  local children = redis.call('SMEMBERS', dk)
  for _, child in ipairs(children) do
    local ck = key_job(p, child)
    local cs = redis.call('HMGET', ck, 'status', 'origin', 'allow_dependency_failures', 'rate_limit_key',
      'rate_limit_concurrency', 'enqueue_at_front')
    if cs[1] == 'deferred' and not (failed and cs[3] ~= '1') then
      local ready = true
      for _, parent in ipairs(redis.call('SMEMBERS', key_dependencies(p, child))) do
        local ps = redis.call('HGET', key_job(p, parent), 'status')
        if ps ~= 'finished' and not (cs[3] == '1' and (ps == 'failed' or ps == 'stopped' or ps == 'canceled')) then
          ready = false
        end
      end
      if ready then
        local origin = cs[2] or 'default'
        redis.call('ZREM', key_registry(p, 'deferred', origin), child)
        if cs[4] and tonumber(cs[5] or '') then  -- rate limited: waits for a slot (as RQ 3)
          rl_wait(p, cs[4], cs[5], child, now, now_ts)
        else
          redis.call('HSET', ck, 'status', 'queued', 'enqueued_at', now_ts)
          redis.call(cs[6] == '1' and 'LPUSH' or 'RPUSH', key_queue(p, origin), child)
        end
      end
    end
  end
  if #children > 0 then redis.call('DEL', dk) end
end

-- a job's F fields: one string.match with F captures (Lua allows 32), far cheaper than a field at a time
local split
if F <= 32 then
  local match, pattern = string.match, '^' .. string.rep('([^\030]*)\030', F - 1) .. '([^\030]*)$'
  split = function(packed) return {match(packed, pattern)} end
else
  split = function(packed)
    local fields = {}
    for field in string.gmatch(packed .. '\030', '([^\030]*)\030') do fields[#fields + 1] = field end
    return fields
  end
end

-- RQ's result stream entry of an execution (fields f of the job) added to stream key. The usual entries (a
-- return value or an error, not both) are sent without building a table.
local function xadd_result(key, f)
  local exc, rv = f[7], f[6]
  if exc == '' then
    if rv == '' then
      redis.call('XADD', key, 'MAXLEN', '~', '10', '*', 'type', f[5], 'worker_name', w, 'execution_id', f[2],
        'execution_started_at', f[14], 'execution_ended_at', f[15])
    else
      redis.call('XADD', key, 'MAXLEN', '~', '10', '*', 'type', f[5], 'worker_name', w, 'return_value', rv,
        'execution_id', f[2], 'execution_started_at', f[14], 'execution_ended_at', f[15])
    end
  elseif rv == '' then
    redis.call('XADD', key, 'MAXLEN', '~', '10', '*', 'type', f[5], 'worker_name', w, 'exc_string', exc,
      'execution_id', f[2], 'execution_started_at', f[14], 'execution_ended_at', f[15])
  else
    redis.call('XADD', key, 'MAXLEN', '~', '10', '*', 'type', f[5], 'worker_name', w, 'exc_string', exc,
      'return_value', rv, 'execution_id', f[2], 'execution_started_at', f[14], 'execution_ended_at', f[15])
  end
end

-- A queue's scratch stream (key_result_scratch, in its slot), emptied on its first use in a call: a foreign
-- writer may have left anything there, a call that failed half way an entry.
local scratch_of = {}
local function scratch(q)
  local sk = scratch_of[q]
  if not sk then
    sk = key_result_scratch(p, q)
    redis.call('DEL', sk)
    scratch_of[q] = sk
  end
  return sk
end

-- The job's result (fields f) added to its results stream rk, and the stream's TTL. A stream that
-- XADD creates reserves a ~4 KB block for its first entries (Redis >= 7.0: stream-node-max-bytes), so a
-- job's one-entry results stream took ~4.7 KB; a COPY is sized to its content (~0.8 KB). So a first result
-- is written to the queue's scratch stream, copied to rk and the scratch deleted (its block reused by the
-- next job's); a job whose stream exists (a retry, a repeat, a rerun) has the entry appended there.
local function add_result(f, rk)
  local sk = scratch(f[3])  -- the job's queue
  xadd_result(sk, f)
  if redis.call('COPY', sk, rk) == 0 then xadd_result(rk, f) end
  redis.call('DEL', sk)
  local res_ttl = f[9]
  if res_ttl == '-1' then redis.call('PERSIST', rk) elseif res_ttl ~= '' then redis.call('EXPIRE', rk, res_ttl) end
end

-- the job hash's TTL after its outcome ('' keep, -1 persist, 0 delete, n seconds)
local function apply_ttl(jk, job_ttl)
  if job_ttl == '0' then redis.call('DEL', jk)
  elseif job_ttl == '-1' then redis.call('PERSIST', jk)
  elseif job_ttl ~= '' then redis.call('EXPIRE', jk, job_ttl) end
end
local ok_count, fail_count, work_time = 0, 0, 0
-- writes sent once per batch (lib_many): executions deleted, wip / worker members removed, registry entries
local gone, wip, wmembers, registry = {}, {}, {}, {}
-- dependents are rare: one EXISTS over the batch's dependents keys spares a SMEMBERS per job
local deps = 0
for j = 0, njobs - 1, 500 do
  local dks = {}
  for k = j, math.min(j + 499, njobs - 1) do dks[#dks + 1] = KEYS[jobkeys_at + 5 * k + 5] end
  deps = deps + redis.call('EXISTS', unpack(dks))
end

-- The outcome of a job still started by this worker written to its hash, registries, queue and results
local function apply_outcome(f, id, outcome, qk, jk, rk, dk)
  local job_ttl, score = f[8], f[10]
  if f[21] ~= '' then redis.call('HSET', jk, 'asyncsched_attempt', f[21]) end
  if f[11] ~= '' then redis.call('HSET', jk, 'retries_left', f[11]) end
  if outcome == 'finished' then
    redis.call('HSET', jk, 'status', 'finished', 'ended_at', now_ts, 'last_heartbeat', now_ts)
    if job_ttl ~= '0' then
      add_result(f, rk)
      many_add(registry, qk[3], score, id)
    end
    if deps > 0 then enqueue_dependents(dk, false) end
    if f[27] ~= '' then
      -- rq.Repeat.schedule: the run is recorded as finished, then the job runs again (no TTL applied)
      redis.call('HSET', jk, 'repeats_left', f[27], 'repeat_intervals', f[28])
      if f[29] == '0' then
        redis.call('HSET', jk, 'status', 'queued', 'enqueued_at', now_ts)
        redis.call('RPUSH', qk[1], id)
      else
        redis.call('HSET', jk, 'status', 'scheduled')
        redis.call('ZADD', qk[5], f[29], id)
      end
    else
      apply_ttl(jk, job_ttl)
    end
    ok_count = ok_count + 1
  elseif outcome == 'failed' or outcome == 'stopped' then
    redis.call('HSET', jk, 'status', outcome, 'ended_at', now_ts)
    many_add(registry, qk[4], score, id)
    add_result(f, rk)
    if deps > 0 then enqueue_dependents(dk, true) end
    apply_ttl(jk, job_ttl)
    fail_count = fail_count + 1
  else
    redis.call('HSET', jk, 'ended_at', now_ts)
    if outcome == 'schedule' then
      redis.call('HSET', jk, 'status', 'scheduled')
      redis.call('ZADD', qk[5], f[12], id)
    else
      redis.call('HSET', jk, 'status', 'queued', 'enqueued_at', now_ts)
      if f[13] == '1' then redis.call('LPUSH', qk[1], id)
      else redis.call('RPUSH', qk[1], id) end
    end
    fail_count = fail_count + 1
  end
end

-- The lifecycle record of a job's outcome (fields f; those of the job's hash it names, 22-26, as the worker
-- claimed it: only this worker writes them while the job is its own). The
-- usual record (no agent, task or schedule; no error) is sent without building a table. The stream is
-- trimmed once, after the batch.
local function record_outcome(f, id, q, jk)
  local attempt, agent, task, func, sched = f[22], f[23], f[24], f[25], f[26]
  if attempt == '' then attempt = '1' end
  if func ~= '' and agent == '' and task == '' and sched == '' and f[18] == '' and f[19] == ''
      and life_ok[q] and life_ok[w] and life_ok[func] and life_ok[attempt] and not string.find(id, '\31', 1, true)
      then  -- (kind and times: the worker's own text)
    local life = 'k\31' .. f[17] .. '\31j\31' .. id .. '\31q\31' .. q .. '\31w\31' .. w .. '\31s\31' .. f[14] ..
      '\31d\31' .. f[15] .. '\31a\31' .. attempt .. '\31f\31' .. func
    if f[20] == '' then
      redis.call('XADD', stream, '*', 'L', life)
    else
      redis.call('XADD', stream, '*', 'L', life, 'result', f[20])
    end
    return
  end
  -- no function path (a job RQ enqueued): its function is named from the description
  local desc = func == '' and redis.call('HGET', jk, 'description')
  local life = life_job({'kind', f[17], 'job_id', id, 'queue', q, 'worker', w, 'started_at', f[14],
    'ended_at', f[15], 'attempt', attempt}, agent ~= '' and agent, task ~= '' and task, func ~= '' and func,
    sched ~= '' and sched, desc)
  if f[18] ~= '' then life[#life + 1] = 'error'; life[#life + 1] = f[18] end
  if f[19] ~= '' then life[#life + 1] = 'traceback'; life[#life + 1] = f[19] end
  if f[20] ~= '' then life[#life + 1] = 'result'; life[#life + 1] = f[20] end
  redis.call('XADD', stream, '*', unpack(life_pack(life)))
end

-- Each job of the batch: its execution cleaned up, then its outcome recorded (or only its lifecycle record
-- when its hash is gone, or its limits released when it is no longer this worker's)
local function finish_jobs()
  for j = 0, njobs - 1 do
    local f = split(ARGV[first_job + j + 1])
    local id, ex, q, outcome = f[1], f[2], f[3], f[4]
    local qk, b = qkeys[q], jobkeys_at + 5 * j
    local jk, rk, dk = KEYS[b + 1], KEYS[b + 4], KEYS[b + 5]
    local member = id .. ':' .. ex
    gone[#gone + 1] = KEYS[b + 2]
    many_add(wip, qk[2], member)
    redis.call('ZREM', KEYS[b + 3], ex)
    many_add(wmembers, KEYS[3], member)
    -- one read: the state check and the limits to release (when the job has any: a field looked for and
    -- absent costs a scan of the hash)
    local cur
    if f[30] == '' then cur = redis.call('HMGET', jk, 'status', 'worker_name')
    else cur = redis.call('HMGET', jk, 'status', 'worker_name', 'rate_limit_key', 'asyncsched_limits') end
    if not cur[1] and (outcome == 'finished' or outcome == 'failed' or outcome == 'stopped') then
      -- the hash is gone (Redis lost its data, or the job was deleted while it ran): the job still ran,
      -- so its outcome is recorded from what the worker knows (fields 22-26)
      local life = {'kind', f[17], 'job_id', id, 'queue', q, 'worker', w, 'started_at', f[14], 'ended_at', f[15],
        'attempt', f[22] ~= '' and f[22] or '1'}
      local known = {{'agent_name', f[23]}, {'task_name', f[24]}, {'function', f[25]},
        {'scheduled_task_id', f[26]}, {'error', f[18]}, {'traceback', f[19]}, {'result', f[20]}}
      for _, kv in ipairs(known) do
        if kv[2] and kv[2] ~= '' then life[#life + 1] = kv[1]; life[#life + 1] = kv[2] end
      end
      redis.call('XADD', stream, '*', unpack(life_pack(life)))
      out[#out + 1] = 0
    elseif cur[1] ~= 'started' or cur[2] ~= w then
      -- cancelled while running: its rate-limit slot was kept until now (cancel.lua)
      if cur[3] and cur[1] == 'canceled' then rl_release(p, cur[3], id, now, now_ts) end
      if cur[4] then lim_release(p, cur[4], id, now, now_ts) end  -- unless another worker runs it now
      out[#out + 1] = 0
    else
      apply_outcome(f, id, outcome, qk, jk, rk, dk)
      if cur[3] then rl_release(p, cur[3], id, now, now_ts) end
      if cur[4] then lim_release(p, cur[4], id, now, now_ts) end
      if f[16] ~= '' then work_time = work_time + tonumber(f[16]) end
      record_outcome(f, id, q, jk)
      out[#out + 1] = 1
    end
  end
end

finish_jobs()
if njobs > 0 then redis.call('XTRIM', stream, 'MAXLEN', '~', maxlen) end  -- once for the batch's records
many_call('DEL', gone)
many_send(wip, 'ZREM')
many_send(wmembers, 'SREM')
many_send(registry, 'ZADD')
if wexists then
  -- worker counters once per batch
  if ok_count > 0 then redis.call('HINCRBY', wkey, 'successful_job_count', ok_count) end
  if fail_count > 0 then redis.call('HINCRBY', wkey, 'failed_job_count', fail_count) end
  if work_time > 0 then redis.call('HINCRBYFLOAT', wkey, 'total_working_time', tostring(work_time)) end
  if redis.call('SCARD', KEYS[3]) == 0 then
    redis.call('HSET', wkey, 'state', 'idle')
    redis.call('HDEL', wkey, 'current_job')
  end
end
return out
