-- Records a user as typing in a channel until ARGV[3], dropping typers who expired. Both
-- keys expire with the last typer, so a channel nobody types in keeps nothing.
--
-- KEYS[1] typers hash (user -> typer JSON)   KEYS[2] typing sorted set (user -> expiry, ms)
-- ARGV[1] user   ARGV[2] typer JSON   ARGV[3] expiry, ms   ARGV[4] now, ms   ARGV[5] ttl, ms
local typers, typing = KEYS[1], KEYS[2]

local gone = redis.call('ZRANGEBYSCORE', typing, '-inf', ARGV[4])
for _, user in ipairs(gone) do
  redis.call('HDEL', typers, user)
end
redis.call('ZREMRANGEBYSCORE', typing, '-inf', ARGV[4])
redis.call('HSET', typers, ARGV[1], ARGV[2])
redis.call('ZADD', typing, ARGV[3], ARGV[1])
redis.call('PEXPIRE', typers, ARGV[5])
redis.call('PEXPIRE', typing, ARGV[5])
return 1
