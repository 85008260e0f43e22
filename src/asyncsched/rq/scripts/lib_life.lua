-- life_job(life, agent, task, func, sched, desc): appends to the lifecycle record life (a flat field, value
-- list for XADD) the job's fields read from its hash (asyncsched_agent, asyncsched_task,
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
