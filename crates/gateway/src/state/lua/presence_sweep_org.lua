-- Removes an org's expired connections and takes offline the users left with none, with
-- last seen at their last connection's expiry. Only users whose score in the users set
-- (a lower bound of their earliest connection expiry) has passed are visited; the others'
-- scores are raised to their real earliest expiry. At most ARGV[3] users per call.
--
-- KEYS[1] the org's users, sorted set   KEYS[2] status hash   KEYS[3] last seen hash
-- ARGV[1] now, ms   ARGV[2] the users' connection key prefix (the user is appended; same
-- hash tag, so the same slot as KEYS)   ARGV[3] limit
-- Returns {{user, last seen, ...}, earliest remaining users score or nil when none}.
local users, status, seen = KEYS[1], KEYS[2], KEYS[3]
local now = ARGV[1]
-- Last seen times outlive the org's last change by this long (then the key expires).
local SEEN_TTL_MS = 30 * 24 * 3600 * 1000

local due = redis.call('ZRANGEBYSCORE', users, '-inf', now, 'LIMIT', 0, ARGV[3])
local offline = {}
for _, user in ipairs(due) do
  local conns = ARGV[2] .. user
  -- Ascending, so the last score is the latest expiry.
  local gone = redis.call('ZRANGEBYSCORE', conns, '-inf', now, 'WITHSCORES')
  redis.call('ZREMRANGEBYSCORE', conns, '-inf', now)
  local first = redis.call('ZRANGE', conns, 0, 0, 'WITHSCORES')
  if first[2] then
    redis.call('ZADD', users, first[2], user)
  else
    redis.call('ZREM', users, user)
    -- No connection was removed here: `disconnected` already reported this user.
    if #gone > 0 then
      local last = gone[#gone]
      redis.call('HDEL', status, user)
      redis.call('HSET', seen, user, last)
      redis.call('PEXPIRE', seen, SEEN_TTL_MS)
      offline[#offline + 1] = user
      offline[#offline + 1] = last
    end
  end
end
local first = redis.call('ZRANGE', users, 0, 0, 'WITHSCORES')
return {offline, first[2] or false}
