-- Adds a connection to a channel's presence, unless it is already a live member.
-- An entry that expired but was not swept yet is replaced: the connection is back, and the
-- sweeper must not report it as gone.
--
-- KEYS[1] members hash (client -> member JSON)   KEYS[2] expiry sorted set (client -> ms)
-- ARGV[1] client   ARGV[2] member JSON   ARGV[3] expiry, ms   ARGV[4] now, ms
-- Returns the live members with it when added (at least 1), 0 when it was a live member
-- already.
local members, expiry = KEYS[1], KEYS[2]
-- Every key expires: it outlives the latest entry written to it by twice that entry's TTL,
-- time for the sweeper to report the entries of a node that stopped refreshing them.
local function keep(key, expiry, now)
  redis.call('PEXPIREAT', key, expiry + 2 * (expiry - now))
end

local score = redis.call('ZSCORE', expiry, ARGV[1])
if score and tonumber(score) > tonumber(ARGV[4]) then
  return 0
end
redis.call('HSET', members, ARGV[1], ARGV[2])
redis.call('ZADD', expiry, ARGV[3], ARGV[1])
keep(members, tonumber(ARGV[3]), tonumber(ARGV[4]))
keep(expiry, tonumber(ARGV[3]), tonumber(ARGV[4]))
return redis.call('ZCOUNT', expiry, '(' .. ARGV[4], '+inf')
