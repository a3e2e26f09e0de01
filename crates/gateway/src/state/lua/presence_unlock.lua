-- Releases the sweeper lock if this caller still holds it (it may have expired and been
-- taken by another node).
--
-- KEYS[1] lock   ARGV[1] the value this caller set
-- Returns 1 when released.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
