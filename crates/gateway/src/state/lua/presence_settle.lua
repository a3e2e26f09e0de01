-- Moves swept entries of a sweep index (channels or orgs) to their next due time, or
-- removes the ones found empty, unless their score changed since the sweeper read it.
-- The index is another slot than the entries' keys, so this cannot be part of the sweep
-- scripts; an entry removed here is checked once more by the sweeper afterwards, in case
-- a join landed between the two (see `redis_presence.rs`).
--
-- KEYS[1] index sorted set (name -> due, ms)
-- ARGV: triples of name, score read, next due ('' when the entry was empty)
-- Returns the names removed.
local index = KEYS[1]

local removed = {}
for i = 1, #ARGV, 3 do
  local name, read, due = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local score = redis.call('ZSCORE', index, name)
  if score and tonumber(score) == tonumber(read) then
    if due == '' then
      redis.call('ZREM', index, name)
      removed[#removed + 1] = name
    else
      redis.call('ZADD', index, due, name)
    end
  end
end
return removed
