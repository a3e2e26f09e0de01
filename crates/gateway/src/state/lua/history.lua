-- A channel's position and the publications after an offset, creating its epoch if it
-- has none (like a first publish would), so a subscriber's recovery point is stable.
--
-- KEYS[1] meta hash {epoch, offset}   KEYS[2] log stream
-- ARGV[1] epoch to use if the channel has none   ARGV[2] expiry of a new epoch, ms
-- ARGV[3] since offset (exclusive)   ARGV[4] limit (0: position only)
-- Returns {epoch, offset, entries} with entries as XRANGE returns them.
local meta, log = KEYS[1], KEYS[2]

local current = redis.call('HMGET', meta, 'epoch', 'offset')
local epoch, offset = current[1], current[2]
if not epoch then
  epoch, offset = ARGV[1], '0'
  redis.call('DEL', log)
  redis.call('HSET', meta, 'epoch', epoch, 'offset', 0)
  redis.call('PEXPIRE', meta, ARGV[2])
end

local entries = {}
if ARGV[4] ~= '0' then
  local start = '-'
  if ARGV[3] ~= '0' then
    start = '(' .. ARGV[3] .. '-0'
  end
  entries = redis.call('XRANGE', log, start, '+', 'COUNT', ARGV[4])
end
return {epoch, offset or '0', entries}
