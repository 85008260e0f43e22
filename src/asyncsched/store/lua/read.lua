-- The Recorder's read of the lifecycle stream, with exact accounting of what it can no longer read: this
-- script runs in one MULTI with the XREADGROUP ... COUNT count that follows it (nothing runs in between),
-- so it accounts for that read before it happens and the entries go to the client straight from Redis
-- (passed through Lua, they cost Redis three times the CPU). Given a consumer (Redis Cluster, where the
-- client sends no MULTI), it reads them itself.
-- KEYS[1] lifecycle stream, KEYS[2] ledger hash. ARGV: group, count, now (epoch ms)[, consumer].
-- The ledger keeps 'position': how many entries ever added to the stream precede the group's
-- last-delivered entry (read, or counted lost). Entries are only ever trimmed from the front, so when
-- the first entry of the stream lies past the last delivered one, the entries between were dropped
-- unread: (entries-added - length) - position of them. They are added to 'lost' before reading on. Then
-- every entry after the last delivered one is present: the read delivers min(count, entries-added -
-- position) of them, and the position moves past them.
-- Returns {lost, last delivered id before this read, first entry id ('' none), entries read here}.
local s, h = KEYS[1], KEYS[2]
local group, count, now, consumer = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]

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
-- the read: count entries, or every one left (caught up: exact whoever else read)
pos = math.min(added, pos + count)
local entries = {}
if consumer then
  local reply = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count, 'STREAMS', s, '>')
  if reply and #reply > 0 then
    if type(reply[1]) == 'table' then entries = reply[1][2] else entries = reply[2] end
  end
end
redis.call('HSET', h, 'position', pos)
if lost > 0 then
  redis.call('HINCRBY', h, 'lost', lost)
  redis.call('HSET', h, 'last_loss_at', now)
end
return {lost, last, first or '', entries}
