-- The statuses of some users in an org: offline with last seen (0 if never seen) for a
-- user without a live connection, else the stored status (online by default).
--
-- KEYS[1] status hash   KEYS[2] last seen hash   KEYS[2 + i] connections of ARGV[1 + i]
-- ARGV[1] now, ms   ARGV[1 + i] user i
-- Returns {status, last seen} per user, flattened, in the order asked.
local status, seen = KEYS[1], KEYS[2]

local result = {}
for i = 2, #ARGV do
  local user = ARGV[i]
  if redis.call('ZCOUNT', KEYS[i + 1], '(' .. ARGV[1], '+inf') > 0 then
    result[#result + 1] = redis.call('HGET', status, user) or 'online'
    result[#result + 1] = '0'
  else
    result[#result + 1] = 'offline'
    result[#result + 1] = redis.call('HGET', seen, user) or '0'
  end
end
return result
