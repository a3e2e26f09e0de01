-- Sets the status of a user whose connection ARGV[4] is live (the caller holds it). When
-- the user has no live connection in the org, its entry was lost (Redis restarted empty,
-- FLUSHALL) or swept while its node was cut off: it is counted again, and the user is back
-- with this status. Nothing when the status is the current one (online when none was set).
--
-- KEYS[1] the user's connections, sorted set (client -> expiry, ms)
-- KEYS[2] the org's users, sorted set   KEYS[3] status hash
-- ARGV[1] user   ARGV[2] status   ARGV[3] now, ms   ARGV[4] client   ARGV[5] expiry, ms
-- Returns 0 when nothing changed, 1 when the status changed, 2 when the connection was
-- counted again (a change too).
local conns, users, status = KEYS[1], KEYS[2], KEYS[3]
-- Every key expires: it outlives the latest entry written to it by twice that entry's TTL,
-- time for the sweeper to report the entries of a node that stopped refreshing them.
local function keep(key, expiry, now)
  redis.call('PEXPIREAT', key, expiry + 2 * (expiry - now))
end

if redis.call('ZCOUNT', conns, '(' .. ARGV[3], '+inf') == 0 then
  redis.call('ZADD', conns, ARGV[5], ARGV[4])
  -- LT keeps the users' score a lower bound of every connection's expiry.
  redis.call('ZADD', users, 'LT', ARGV[5], ARGV[1])
  redis.call('HSET', status, ARGV[1], ARGV[2])
  for _, key in ipairs({conns, users, status}) do
    keep(key, tonumber(ARGV[5]), tonumber(ARGV[3]))
  end
  return 2
end
local current = redis.call('HGET', status, ARGV[1]) or 'online'
if current == ARGV[2] then
  return 0
end
redis.call('HSET', status, ARGV[1], ARGV[2])
keep(status, tonumber(ARGV[5]), tonumber(ARGV[3]))
return 1
