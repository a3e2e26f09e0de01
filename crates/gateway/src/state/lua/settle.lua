-- Settles an idempotency key claimed by append.lua once its broadcast is over.
--
-- KEYS[1] idempotency key
-- ARGV[1] 'd<offset>:<epoch>' when broadcast, or '' to release the claim (not broadcast,
-- channel without history: a retry is then a new publish)
-- Returns 1 if the key changed. A key settled as broadcast, or gone, stays so: a late
-- release must not let a publication that was sent be sent again.
local idem = KEYS[1]
local seen = redis.call('GET', idem)
if not seen or string.sub(seen, 1, 1) == 'd' then
  return 0
end
if ARGV[1] == '' then
  redis.call('DEL', idem)
else
  redis.call('SET', idem, ARGV[1], 'KEEPTTL')
end
return 1
