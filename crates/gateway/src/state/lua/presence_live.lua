-- The unexpired entries of a hash with an expiry sorted set (a channel's members, its
-- typers), read in one step so the two keys agree. Expired ones are left to the sweeper
-- (members) or to the next update and the keys' own expiry (typers).
--
-- KEYS[1] hash (id -> JSON)   KEYS[2] expiry sorted set (id -> ms)
-- ARGV[1] now, ms
-- Returns the JSON values, earliest expiry first.
local hash, expiry = KEYS[1], KEYS[2]

local ids = redis.call('ZRANGEBYSCORE', expiry, '(' .. ARGV[1], '+inf')
local values = {}
-- HMGET in slices: unpack of a very large table overflows Lua's stack.
for first = 1, #ids, 1000 do
  local last = math.min(first + 999, #ids)
  local slice = redis.call('HMGET', hash, unpack(ids, first, last))
  for _, value in ipairs(slice) do
    if value then
      values[#values + 1] = value
    end
  end
end
return values
