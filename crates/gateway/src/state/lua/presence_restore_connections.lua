-- Counts again the connections of a user in an org that a refresh found missing (lost by
-- Redis, or swept while their node was cut off). When the user had no live connection,
-- that is their transition back online, with the status they set through the refreshing
-- node if it knows one. Without one the stored status stays empty (read as online), so
-- that another node of the user that knows it can still fill it in: when the user is
-- online with no stored status, a known status is set, a change when it is not online.
-- One script, so of two nodes putting the same user back exactly one sees the transition.
--
-- KEYS[1] the user's connections, sorted set (client -> expiry, ms)
-- KEYS[2] the org's users, sorted set (user -> at most their earliest connection expiry)
-- KEYS[3] status hash (user -> status)
-- ARGV[1] user   ARGV[2] expiry, ms   ARGV[3] now, ms   ARGV[4] known status or ''
-- ARGV[5...] the connections (clients)
-- Returns {clients counted again, status to announce or false}.
local conns, users, status = KEYS[1], KEYS[2], KEYS[3]
local user, known = ARGV[1], ARGV[4]
-- Every key expires: it outlives the latest entry written to it by twice that entry's TTL,
-- time for the sweeper to report the entries of a node that stopped refreshing them.
local function keep(key, expiry, now)
  redis.call('PEXPIREAT', key, expiry + 2 * (expiry - now))
end

local before = redis.call('ZCOUNT', conns, '(' .. ARGV[3], '+inf')
local added = {}
for i = 5, #ARGV do
  if not redis.call('ZSCORE', conns, ARGV[i]) then
    redis.call('ZADD', conns, ARGV[2], ARGV[i])
    added[#added + 1] = ARGV[i]
  end
end
if #added == 0 then
  return {added, false}
end
-- LT keeps the users' score a lower bound of every connection's expiry (it adds a new user).
redis.call('ZADD', users, 'LT', ARGV[2], user)
-- After the status writes below (a key created by HSET would have no expiry yet).
local function done(result)
  for _, key in ipairs({conns, users, status}) do
    keep(key, tonumber(ARGV[2]), tonumber(ARGV[3]))
  end
  return result
end
if before == 0 then
  if known == '' then
    redis.call('HDEL', status, user)
    return done({added, 'online'})
  end
  redis.call('HSET', status, user, known)
  return done({added, known})
end
if known ~= '' and redis.call('HSETNX', status, user, known) == 1 and known ~= 'online' then
  return done({added, known})
end
return done({added, false})
