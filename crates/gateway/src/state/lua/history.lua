-- A channel's position and the publications after an offset. Read-only: a channel with no
-- epoch answers no epoch and Redis's time, which the caller turns into an unpublished
-- placeholder (only a publication creates an epoch; reads must not grow state).
--
-- KEYS[1] meta hash {epoch, offset}   KEYS[2] log stream
-- ARGV[1] since offset (exclusive)   ARGV[2] limit (0: position only)
-- Returns {epoch or '', offset, entries, now ms} with entries as XRANGE returns them.
local meta, log = KEYS[1], KEYS[2]

local current = redis.call('HMGET', meta, 'epoch', 'offset')
local epoch, offset = current[1], current[2]
if not epoch then
  local time = redis.call('TIME')
  local now = string.format('%.0f', tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000))
  return {'', '0', {}, now}
end

local entries = {}
if ARGV[2] ~= '0' then
  local start = '-'
  if ARGV[1] ~= '0' then
    start = '(' .. ARGV[1] .. '-0'
  end
  entries = redis.call('XRANGE', log, start, '+', 'COUNT', ARGV[2])
end
return {epoch, offset or '0', entries, '0'}
