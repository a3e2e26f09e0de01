-- Records one publication: idempotency check, next offset, capped history, expiries.
-- One script so the steps are atomic; every key shares the channel's hash tag.
--
-- KEYS[1] meta hash {epoch, offset}   KEYS[2] log stream   KEYS[3] idempotency key (optional)
-- ARGV[1] encoded publication (for a channel without history: only sent with a key)
-- ARGV[2] suffix of the epoch to create if the channel has none: the epoch is Redis's
-- time in ms, '.', this suffix (recovery from an unpublished read compares the times)
-- ARGV[3] history size, or -1 for a channel without history (passed on as text: a Lua
-- number would reach Redis in exponent notation when large)
-- ARGV[4] history ttl, ms   ARGV[5] idempotency window, ms   ARGV[6] idempotency lease, ms
-- Returns {kind, offset, epoch[, payload]}, kind one of
--   'new'     appended, and the key (if any) claimed;
--   'sent'    a duplicate of a publish that was broadcast;
--   'unsent'  a duplicate of a publish not known to be broadcast, with its stored payload:
--             the caller now holds the claim and sends it;
--   'busy'    a duplicate of a publish without history still within its lease.
--
-- The key's value: 'd<offset>:<epoch>' once broadcast (settle.lua); while claimed,
-- 'p<offset>:<epoch>' on a channel with history (the publication is in the log), or
-- 'e<claimed at, ms>:<payload>' on a channel without (the payload is kept to send again).
local meta, log, idem = KEYS[1], KEYS[2], KEYS[3]

local function now_ms()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end

if idem then
  local seen = redis.call('GET', idem)
  if seen then
    local kind = string.sub(seen, 1, 1)
    if not string.find('dpe', kind, 1, true) then
      -- Written by a version before claims ('<offset>:<epoch>'): broadcast then.
      seen, kind = 'd' .. seen, 'd'
    end
    local sep = string.find(seen, ':', 2, true)
    if kind == 'e' then
      local now = now_ms()
      if now - tonumber(string.sub(seen, 2, sep - 1)) < tonumber(ARGV[6]) then
        return {'busy', 0, ''}
      end
      -- Take the claim over, with a lease of its own.
      local payload = string.sub(seen, sep + 1)
      redis.call('SET', idem, string.format('e%.0f:', now) .. payload, 'KEEPTTL')
      return {'unsent', 0, '', payload}
    end
    local offset, epoch = string.sub(seen, 2, sep - 1), string.sub(seen, sep + 1)
    if kind == 'p' then
      if redis.call('HGET', meta, 'epoch') == epoch then
        local entry = redis.call('XRANGE', log, offset .. '-0', offset .. '-0')
        if entry[1] then
          return {'unsent', tonumber(offset), epoch, entry[1][2][2]}
        end
      end
      -- Trimmed, expired or lost with its epoch: nothing is left to send.
      redis.call('SET', idem, 'd' .. offset .. ':' .. epoch, 'KEEPTTL')
    end
    return {'sent', tonumber(offset), epoch}
  end
end

local offset, epoch = 0, ''
if ARGV[3] ~= '-1' then
  epoch = redis.call('HGET', meta, 'epoch')
  if not epoch then
    -- A new epoch: a stream left from a lost one would hold higher ids than ours.
    epoch = string.format('%.0f.', now_ms()) .. ARGV[2]
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
  local claim
  if ARGV[3] == '-1' then
    claim = string.format('e%.0f:', now_ms()) .. ARGV[1]
  else
    claim = string.format('p%d:%s', offset, epoch)
  end
  redis.call('SET', idem, claim, 'PX', ARGV[5])
end
return {'new', offset, epoch}
