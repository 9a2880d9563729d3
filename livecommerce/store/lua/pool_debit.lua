-- Step 1 of an allocation: take units from the pool and write the transfer intent.
-- KEYS[1] ledger   KEYS[2] xfer hash   KEYS[3] drops set
-- ARGV[1] transfer id   ARGV[2] units   ARGV[3] intent (JSON)   ARGV[4] "<show>/<drop>"
-- Returns {"ok":true,"ledger":{...}} (also for a replay) or {"ok":false,"reason":...}.
local xfer = KEYS[2]
local drops = KEYS[3]
local tid = ARGV[1]
local units = tonumber(ARGV[2])
local intent = ARGV[3]
local member = ARGV[4]

local l = load_ledger()
if not l then return answer({ ok = false, reason = 'no_pool' }) end
if redis.call('HEXISTS', xfer, tid) == 1 then
  return answer({ ok = true, replay = true, ledger = ledger_view(l) })
end
if not units or units < 1 or units ~= math.floor(units) then
  return answer({ ok = false, reason = 'invalid_quantity' })
end
if units > l.pool then
  return answer({ ok = false, reason = 'insufficient_stock', available = l.pool })
end
l.pool = l.pool - units
l.out = l.out + units
save_ledger(l)
redis.call('HSET', xfer, tid, intent)
redis.call('SADD', drops, member)
return answer({ ok = true, ledger = ledger_view(l) })
