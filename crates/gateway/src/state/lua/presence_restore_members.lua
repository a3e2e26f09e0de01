-- Puts back in a channel's presence the members a refresh found missing: Redis lost them
-- (restart without persistence, FLUSHALL), or the sweeper removed them while their node
-- was cut off. A connection that is there (the same refresh extended it, or it joined
-- meanwhile) is left as it is, so each one is put back and reported once.
--
-- KEYS[1] members hash (client -> member JSON)   KEYS[2] expiry sorted set (client -> ms)
-- ARGV[1] expiry, ms   then pairs: ARGV[2i] client, ARGV[2i + 1] its member JSON
-- Returns the JSON of the members put back.
local members, expiry = KEYS[1], KEYS[2]

local restored = {}
for i = 2, #ARGV, 2 do
  if not redis.call('ZSCORE', expiry, ARGV[i]) then
    redis.call('HSET', members, ARGV[i], ARGV[i + 1])
    redis.call('ZADD', expiry, ARGV[1], ARGV[i])
    restored[#restored + 1] = ARGV[i + 1]
  end
end
return restored
