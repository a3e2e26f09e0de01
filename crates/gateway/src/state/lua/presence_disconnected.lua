-- Removes a connection of a user in an org. When no live connection is left, the user goes
-- offline: the status is dropped and last seen recorded. Nothing happens for a connection
-- that was not counted (or that the sweeper already removed and reported).
--
-- KEYS[1] the user's connections, sorted set (client -> expiry, ms)
-- KEYS[2] the org's users, sorted set   KEYS[3] status hash   KEYS[4] last seen hash
-- ARGV[1] user   ARGV[2] client   ARGV[3] now, ms
-- Returns 1 when the user went offline, else 0.
local conns, users, status, seen = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
-- Last seen times outlive the org's last change by this long (then the key expires).
local SEEN_TTL_MS = 30 * 24 * 3600 * 1000

if redis.call('ZREM', conns, ARGV[2]) == 0 then
  return 0
end
redis.call('ZREMRANGEBYSCORE', conns, '-inf', ARGV[3])
if redis.call('ZCARD', conns) > 0 then
  return 0
end
redis.call('ZREM', users, ARGV[1])
redis.call('HDEL', status, ARGV[1])
redis.call('HSET', seen, ARGV[1], ARGV[3])
redis.call('PEXPIRE', seen, SEEN_TTL_MS)
return 1
