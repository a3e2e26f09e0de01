-- Records one publication: idempotency check, next offset, capped history, expiries.
-- One script so the steps are atomic; every key shares the channel's hash tag.
--
-- KEYS[1] meta hash {epoch, offset}   KEYS[2] log stream   KEYS[3] idempotency key (optional)
-- ARGV[1] encoded publication   ARGV[2] epoch to use if the channel has none
-- ARGV[3] history size, or -1 for a channel without history (passed on as text: a Lua
-- number would reach Redis in exponent notation when large)
-- ARGV[4] history ttl, ms   ARGV[5] idempotency window, ms
-- Returns {duplicate (0|1), offset, epoch}.
local meta, log, idem = KEYS[1], KEYS[2], KEYS[3]

if idem then
  local seen = redis.call('GET', idem)
  if seen then
    local sep = string.find(seen, ':', 1, true)
    return {1, tonumber(string.sub(seen, 1, sep - 1)), string.sub(seen, sep + 1)}
  end
end

local offset, epoch = 0, ''
if ARGV[3] ~= '-1' then
  epoch = redis.call('HGET', meta, 'epoch')
  if not epoch then
    -- A new epoch: a stream left from a lost one would hold higher ids than ours.
    epoch = ARGV[2]
    redis.call('DEL', log)
    redis.call('HSET', meta, 'epoch', epoch, 'offset', 0)
  end
  offset = tonumber(redis.call('HGET', meta, 'offset') or '0') + 1
  -- XADD first: if it fails, no offset has been taken (scripts do not roll back).
  redis.call('XADD', log, 'MAXLEN', ARGV[3], string.format('%d-0', offset), 'p', ARGV[1])
  redis.call('HINCRBY', meta, 'offset', 1)
  redis.call('PEXPIRE', meta, ARGV[4])
  redis.call('PEXPIRE', log, ARGV[4])
end

if idem then
  redis.call('SET', idem, string.format('%d:%s', offset, epoch), 'PX', ARGV[5])
end
return {0, offset, epoch}
