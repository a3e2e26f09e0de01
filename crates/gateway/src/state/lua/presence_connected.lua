-- Counts a connection towards a user's online status in an org. The user's first live
-- connection is the transition to online: the status resets to online. One script, so of
-- two nodes connecting the same user at once exactly one sees the transition.
--
-- KEYS[1] the user's connections, sorted set (client -> expiry, ms)
-- KEYS[2] the org's users, sorted set (user -> at most their earliest connection expiry)
-- KEYS[3] status hash (user -> status)
-- ARGV[1] user   ARGV[2] client   ARGV[3] expiry, ms   ARGV[4] now, ms
-- Returns 0 when the connection was counted already, 1 when added, 2 when added and the
-- user came online.
local conns, users, status = KEYS[1], KEYS[2], KEYS[3]
-- Every key expires: it outlives the latest entry written to it by twice that entry's TTL,
-- time for the sweeper to report the entries of a node that stopped refreshing them.
local function keep(key, expiry, now)
  redis.call('PEXPIREAT', key, expiry + 2 * (expiry - now))
end

-- Connections whose node stopped refreshing them do not keep the user online.
redis.call('ZREMRANGEBYSCORE', conns, '-inf', ARGV[4])
local before = redis.call('ZCARD', conns)
local added = redis.call('ZADD', conns, ARGV[3], ARGV[2])
-- LT keeps the users' score a lower bound of every connection's expiry (it adds a new user).
redis.call('ZADD', users, 'LT', ARGV[3], ARGV[1])
for _, key in ipairs({conns, users}) do
  keep(key, tonumber(ARGV[3]), tonumber(ARGV[4]))
end
if added == 0 then
  return 0
end
if before == 0 then
  redis.call('HSET', status, ARGV[1], 'online')
  keep(status, tonumber(ARGV[3]), tonumber(ARGV[4]))
  return 2
end
return 1
