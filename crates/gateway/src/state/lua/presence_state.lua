-- Replaces a live member's entry with the same member carrying a new presence state, if the
-- entry is still the one the node read (compare and set: the node rewrites the JSON, so
-- the script never re-encodes the token's `info`).
--
-- KEYS[1] members hash (client -> member JSON)   KEYS[2] expiry sorted set (client -> ms)
-- ARGV[1] client   ARGV[2] member JSON read   ARGV[3] new member JSON   ARGV[4] now, ms
-- Returns the live members (at least 1) when set, 0 when the connection is not a live
-- member, -1 when its entry changed since it was read (read it again).
local members, expiry = KEYS[1], KEYS[2]

local score = redis.call('ZSCORE', expiry, ARGV[1])
if not score or tonumber(score) <= tonumber(ARGV[4]) then
  return 0
end
if redis.call('HGET', members, ARGV[1]) ~= ARGV[2] then
  return -1
end
redis.call('HSET', members, ARGV[1], ARGV[3])
return redis.call('ZCOUNT', expiry, '(' .. ARGV[4], '+inf')
