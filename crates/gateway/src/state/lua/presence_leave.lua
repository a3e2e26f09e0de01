-- Removes a connection from a channel's presence, whether or not its entry has expired
-- (whoever removes an entry reports it, so the sweeper never reports it again), and counts
-- the live members left, for the node to choose between a `leave` push and a diff.
--
-- KEYS[1] members hash (client -> member JSON)   KEYS[2] expiry sorted set (client -> ms)
-- ARGV[1] client   ARGV[2] now, ms
-- Returns {JSON or nil, live members left}.
local members, expiry = KEYS[1], KEYS[2]

local value = redis.call('HGET', members, ARGV[1])
redis.call('HDEL', members, ARGV[1])
redis.call('ZREM', expiry, ARGV[1])
return {value or false, redis.call('ZCOUNT', expiry, '(' .. ARGV[2], '+inf')}
