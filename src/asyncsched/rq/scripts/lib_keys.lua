-- The one place Lua spells a Redis key, for the keys a script derives from data (a job id popped from a
-- queue or read from a registry, a job's origin, a dependent's id, a worker named in a hash): the same
-- names as asyncsched/rq/keys.py (RQKeys and the <p>:asyncsched: functions), from the prefix p.
-- Keys known before a call are passed as KEYS instead. For Redis Cluster these derived keys are the known
-- exceptions (docs/architecture.md, "Wire format"): every one of them must share its script's hash slot.
local function key_job(p, id) return p .. ':job:' .. id end
local function key_dependents(p, id) return p .. ':job:' .. id .. ':dependents' end
local function key_dependencies(p, id) return p .. ':job::' .. id .. ':dependencies' end  -- RQ's '::'
local function key_results(p, id) return p .. ':results:' .. id end
local function key_executions(p, id) return p .. ':executions:' .. id end
local function key_execution(p, member) return p .. ':execution:' .. member end  -- member <job>:<exec>
local function key_queues(p) return p .. ':queues' end
local function key_queue(p, q) return p .. ':queue:' .. q end
local function key_intermediate(p, q) return p .. ':queue:' .. q .. ':intermediate' end
local function key_first_seen(p, q, id) return p .. ':queue:' .. q .. ':intermediate:first_seen:' .. id end
-- a registry of queue q: 'wip', 'finished', 'failed', 'deferred', 'scheduled' or 'canceled'
local function key_registry(p, name, q) return p .. ':' .. name .. ':' .. q end
local function key_worker(p, w) return p .. ':worker:' .. w end
local function key_worker_executions(p, w) return p .. ':worker:' .. w .. ':executions' end
local function key_pubsub(p, w) return p .. ':pubsub:' .. w end
local function key_scheduler_lock(p, q) return p .. ':scheduler-lock:' .. q end
local function key_suspended(p) return p .. ':suspended' end
-- a key with an optional part: base, or base:part
local function key_part(base, part)
  if part then return base .. ':' .. part end
  return base
end
-- RQ 3's RateLimit: its config hash, or its zset part 'allowed' / 'rate_limited'
local function key_rl(p, key, part) return key_part(p .. ':rl:' .. key, part) end
local function key_rl_keys(p) return p .. ':rl-keys' end
-- asyncsched's own, under <p>:asyncsched
local function key_paused(p, q) return p .. ':asyncsched:paused:' .. q end
local function key_wake(p, q) return p .. ':asyncsched:wake:' .. q end
local function key_quarantine(p, q) return p .. ':asyncsched:quarantine:' .. q end
local function key_template(p, q) return p .. ':asyncsched:enqueue-template:' .. q end  -- enqueue.lua
local function key_result_scratch(p, q) return p .. ':asyncsched:result-scratch:' .. q end  -- finish.lua
local function key_claiming_registry(p) return p .. ':asyncsched:claiming' end
local function key_claiming(p, w) return p .. ':asyncsched:claiming:' .. w end
local function key_rate_limit_waits(p) return p .. ':asyncsched:rate-limit-waits' end
-- a flow limit's hash, or its zset part 'active', 'starts' or 'waiting' (lib_limits.lua)
local function key_limit(p, key, part) return key_part(p .. ':asyncsched:limit:' .. key, part) end
local function key_limit_keys(p) return p .. ':asyncsched:limit-keys' end
local function key_limit_due(p) return p .. ':asyncsched:limit-due' end
local function key_limit_seq(p) return p .. ':asyncsched:limit-seq' end
