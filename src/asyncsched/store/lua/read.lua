-- The Recorder's read of the lifecycle stream, with exact accounting of what it can no longer read.
-- KEYS[1] lifecycle stream, KEYS[2] ledger hash. ARGV: group, consumer, count, now (epoch ms).
-- The ledger keeps 'position': how many entries ever added to the stream precede the group's
-- last-delivered entry (read, or counted lost). Entries are only ever trimmed from the front, so when
-- the first entry of the stream lies past the last delivered one, the entries between were dropped
-- unread: (entries-added - length) - position of them. They are added to 'lost' before reading on.
-- Returns {lost, last delivered id before this read, first entry id ('' none), entries}; the entries are
-- one flat list, each entry as its id, its count of field and value items (0: trimmed), then those items:
-- the client builds no list per entry.
local s, h = KEYS[1], KEYS[2]
local group, consumer, count, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

local function map(flat)
  local m = {}
  for i = 1, #flat, 2 do m[flat[i]] = flat[i + 1] end
  return m
end
local function before(a, b)  -- stream id a < b
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end

if redis.call('EXISTS', s) == 0 then return redis.error_reply('NOGROUP no stream ' .. s) end
local st = map(redis.call('XINFO', 'STREAM', s))
local added, length = tonumber(st['entries-added']), tonumber(st['length'])
local first = st['first-entry']
first = (first and first[1]) or nil
local last, lag = nil, nil
for _, g in ipairs(redis.call('XINFO', 'GROUPS', s)) do
  local m = map(g)
  if m['name'] == group then last, lag = m['last-delivered-id'], m['lag'] end
end
if not last then return redis.error_reply('NOGROUP no consumer group ' .. group .. ' on ' .. s) end

local pos = tonumber(redis.call('HGET', h, 'position') or '')
if pos == nil or pos > added then
  -- first read (or the stream was recreated): what was trimmed before we existed is not ours
  if first and not before(last, first) and lag then pos = added - tonumber(lag) else pos = added - length end
end
local lost = 0
if length == 0 then
  if pos < added then lost = added - pos end
elseif before(last, first) and pos < added - length then
  lost = added - length - pos
end
pos = pos + lost

local reply = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count, 'STREAMS', s, '>')
local entries = {}
if reply and #reply > 0 then
  if type(reply[1]) == 'table' then entries = reply[1][2] else entries = reply[2] end
end
local flat, n = {}, 0
for i = 1, #entries do
  local e = entries[i]
  local fields = e[2]
  local count = (type(fields) == 'table') and #fields or 0
  flat[n + 1], flat[n + 2] = e[1], count
  n = n + 2
  for j = 1, count do flat[n + j] = fields[j] end
  n = n + count
end
pos = pos + #entries
local now_last = last
if #entries > 0 then now_last = entries[#entries][1] end
if now_last == st['last-generated-id'] then pos = added end  -- caught up: exact whoever else read
redis.call('HSET', h, 'position', pos)
if lost > 0 then
  redis.call('HINCRBY', h, 'lost', lost)
  redis.call('HSET', h, 'last_loss_at', now)
end
return {lost, last, first or '', flat}
