-- Writes a script gathers over a batch of jobs and sends once: many_add(m, key, a, b) notes the argument a
-- (and b: a ZADD's score and member) for key, many_send(m, cmd) sends each key's as one command, in the
-- order the keys were first noted; many_call(cmd, l) sends the list l as the arguments of cmd (DEL of
-- many keys). At most 1,000 arguments a call (unpack's stack).
local function many_call(cmd, l)
  for k = 1, #l, 1000 do redis.call(cmd, unpack(l, k, math.min(k + 999, #l))) end
end

local function many_add(m, key, a, b)
  local l = m[key]
  if not l then
    l = {}
    m[key] = l
    m[#m + 1] = key
  end
  l[#l + 1] = a
  if b then l[#l + 1] = b end
end

local function many_send(m, cmd)
  for _, key in ipairs(m) do
    local l = m[key]
    for k = 1, #l, 1000 do redis.call(cmd, key, unpack(l, k, math.min(k + 999, #l))) end
  end
end
