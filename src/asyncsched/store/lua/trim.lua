-- Trim the lifecycle stream below what every consumer group has acknowledged (never an unread or
-- pending entry). KEYS[1] lifecycle stream. Returns the number of entries removed.
local s = KEYS[1]
if redis.call('EXISTS', s) == 0 then return 0 end
local function map(flat)
  local m = {}
  for i = 1, #flat, 2 do m[flat[i]] = flat[i + 1] end
  return m
end
local function before(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end
local groups = redis.call('XINFO', 'GROUPS', s)
if #groups == 0 then return 0 end  -- nobody reads it: only the producers' hard bound applies
local floor = nil
for _, g in ipairs(groups) do
  local m = map(g)
  local ms, seq = string.match(m['last-delivered-id'], '^(%d+)-(%d+)$')
  local keep = ms .. '-' .. string.format('%d', tonumber(seq) + 1)  -- first id not yet delivered
  if tonumber(m['pending']) > 0 then
    local p = redis.call('XPENDING', s, m['name'])
    if p[2] and before(p[2], keep) then keep = p[2] end
  end
  if floor == nil or before(keep, floor) then floor = keep end
end
return redis.call('XTRIM', s, 'MINID', floor)
