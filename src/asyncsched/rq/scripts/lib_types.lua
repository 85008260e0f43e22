-- Keys a foreign writer may have made of another type (SET rq:job:x str): a script checks a key's type
-- before it reads or writes it, and skips (and reports) one bad id or key instead of failing whole.
-- wrong_type(key, want): nil when key is missing or a <want>, else a WRONGTYPE text naming the key.
local function wrong_type(key, want)
  local t = redis.call('TYPE', key).ok
  if t ~= 'none' and t ~= want then
    return 'WRONGTYPE key ' .. key .. ' holds a ' .. t .. ', not a ' .. want
  end
  return nil
end

-- guarded(f, ...): runs f(...); nil when it succeeded, the error text when a command of it answered
-- WRONGTYPE (a key no check foresaw). Any other error (OOM, READONLY...) is raised as is.
local function guarded(f, ...)
  local ok, e = pcall(f, ...)
  if ok then return nil end
  local text = type(e) == 'table' and e.err or tostring(e)
  if not string.find(text, 'WRONGTYPE', 1, true) then error(e) end
  return text
end
