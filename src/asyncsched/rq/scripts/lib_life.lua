-- The lifecycle record format (asyncsched/_lifecycle.py; docs/store.md, "The lifecycle record format"): one
-- stream field 'L' packs the record's short fields as tag US value US tag US value ... (US = '\31'); the free text (result, error,
-- traceback, progress) and any value holding US follow in fields of their own, under their full names.
local LIFE_TAG = {kind = 'k', job_id = 'j', queue = 'q', attempt = 'a', worker = 'w', enqueued_at = 'e',
  started_at = 's', ended_at = 'd', ['function'] = 'f', agent_name = 'g', task_name = 't',
  scheduled_task_id = 'c', progress_at = 'p'}

-- life_pack(life): the XADD field/value list of the record life (a flat field, value list, full names)
local function life_pack(life)
  local packed, out = {}, {'L', ''}
  for i = 1, #life, 2 do
    local name, value = life[i], life[i + 1]
    local tag = LIFE_TAG[name]
    if tag and not string.find(value, '\31', 1, true) then
      packed[#packed + 1] = tag; packed[#packed + 1] = value
    else
      out[#out + 1] = name; out[#out + 1] = value
    end
  end
  out[2] = table.concat(packed, '\31')
  return out
end

-- life_ok[v]: whether the text v holds no US (may be packed as it is), remembered: the hot paths check the
-- names that repeat within a call (queue, worker, function, attempt) by a table read (string.find costs
-- Redis ~700 instructions, the read ~100); a job id, different each time, they check with string.find
local life_ok = setmetatable({}, {__index = function(t, v)
  local ok = not string.find(v, '\31', 1, true)
  t[v] = ok
  return ok
end})

-- life_job(life, agent, task, func, sched, desc): appends to the lifecycle record life (a flat field, value
-- list for life_pack) the job's fields read from its hash (asyncsched_agent, asyncsched_task,
-- asyncsched_function_path, asyncsched_scheduled_task, description; nil when missing): agent_name, task_name,
-- function (the function path, else the description up to its first '('), scheduled_task_id. Returns life.
local function life_job(life, agent, task, func, sched, desc)
  local n = #life
  if agent then life[n + 1] = 'agent_name'; life[n + 2] = agent; n = n + 2 end
  if task then life[n + 1] = 'task_name'; life[n + 2] = task; n = n + 2 end
  if not func and desc then func = string.match(desc, '^[^(]+') or desc end
  if func then life[n + 1] = 'function'; life[n + 2] = func; n = n + 2 end
  if sched then life[n + 1] = 'scheduled_task_id'; life[n + 2] = sched end
  return life
end
