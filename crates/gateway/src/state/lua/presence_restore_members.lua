-- Puts back in a channel's presence the members a refresh found missing: Redis lost them
-- (restart without persistence, FLUSHALL), or the sweeper removed them while their node
-- was cut off. A connection that is there (the same refresh extended it, or it joined
-- meanwhile) is left as it is, so each one is put back and reported once.
--
-- KEYS[1] members hash (client -> member JSON)   KEYS[2] expiry sorted set (client -> ms)
-- ARGV[1] expiry, ms   then pairs: ARGV[2i] client, ARGV[2i + 1] its member JSON
-- Returns the JSON of the members put back.
local members, expiry = KEYS[1], KEYS[2]
-- Every key expires: it outlives the latest entry written to it by twice that entry's TTL,
-- time for the sweeper to report the entries of a node that stopped refreshing them.
local function keep(key, expiry, now)
  redis.call('PEXPIREAT', key, expiry + 2 * (expiry - now))
end

local restored = {}
for i = 2, #ARGV, 2 do
  if not redis.call('ZSCORE', expiry, ARGV[i]) then
    redis.call('HSET', members, ARGV[i], ARGV[i + 1])
    redis.call('ZADD', expiry, ARGV[1], ARGV[i])
    restored[#restored + 1] = ARGV[i + 1]
  end
end
if #restored > 0 then
  local time = redis.call('TIME')
  local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  keep(members, tonumber(ARGV[1]), now)
  keep(expiry, tonumber(ARGV[1]), now)
end
return restored
