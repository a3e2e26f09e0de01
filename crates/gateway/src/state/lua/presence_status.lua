-- Sets a connected user's status. Nothing for a user without a live connection in the org,
-- or when the status is the current one (online when none was set).
--
-- KEYS[1] the user's connections, sorted set (client -> expiry, ms)   KEYS[2] status hash
-- ARGV[1] user   ARGV[2] status   ARGV[3] now, ms
-- Returns 1 when the status changed, else 0.
local conns, status = KEYS[1], KEYS[2]

if redis.call('ZCOUNT', conns, '(' .. ARGV[3], '+inf') == 0 then
  return 0
end
local current = redis.call('HGET', status, ARGV[1]) or 'online'
if current == ARGV[2] then
  return 0
end
redis.call('HSET', status, ARGV[1], ARGV[2])
return 1
