-- Removes a channel's expired members (their node stopped refreshing them) and returns
-- them, so exactly one caller reports each. At most ARGV[2] per call; the earliest
-- remaining expiry tells the sweeper when to come back (at or before now: more to do).
--
-- KEYS[1] members hash (client -> member JSON)   KEYS[2] expiry sorted set (client -> ms)
-- ARGV[1] now, ms   ARGV[2] limit
-- Returns {{member JSON...}, earliest remaining expiry or nil when the channel is empty}.
local members, expiry = KEYS[1], KEYS[2]

local gone = redis.call('ZRANGEBYSCORE', expiry, '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local left = {}
for _, client in ipairs(gone) do
  local member = redis.call('HGET', members, client)
  if member then
    left[#left + 1] = member
  end
  redis.call('HDEL', members, client)
  redis.call('ZREM', expiry, client)
end
local first = redis.call('ZRANGE', expiry, 0, 0, 'WITHSCORES')
return {left, first[2] or false}
