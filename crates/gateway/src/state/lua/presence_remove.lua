-- Removes one entry from a hash and its expiry sorted set (a member leaving, a user who
-- stops typing), whether or not it has expired: whoever removes an entry reports it, so
-- the sweeper never reports it again.
--
-- KEYS[1] hash (id -> JSON)   KEYS[2] expiry sorted set (id -> ms)
-- ARGV[1] id
-- Returns {JSON or nil, expiry or nil}.
local hash, expiry = KEYS[1], KEYS[2]

local value = redis.call('HGET', hash, ARGV[1])
local score = redis.call('ZSCORE', expiry, ARGV[1])
redis.call('HDEL', hash, ARGV[1])
redis.call('ZREM', expiry, ARGV[1])
return {value or false, score or false}
