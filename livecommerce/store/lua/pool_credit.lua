-- Step 2 of a settlement: credit what a drop returned and sold, once, and append the
-- inventory.adjusted event (the stock-out outbox) in the same step.
-- KEYS[1] ledger   KEYS[2] credited set   KEYS[3] adjusted stream
-- ARGV[1] settlement id   ARGV[2] returned units   ARGV[3] sold units   ARGV[4] sku
-- ARGV[5] show   ARGV[6] drop
-- Returns {"ok":true,"credited":bool,"ledger":{...}}.
local credited = KEYS[2]
local adjusted = KEYS[3]
local sid = ARGV[1]
local returned = tonumber(ARGV[2])
local sold = tonumber(ARGV[3])
local sku, show, drop = ARGV[4], ARGV[5], ARGV[6]

local l = load_ledger()
if not l then return answer({ ok = false, reason = 'no_pool' }) end
if redis.call('SISMEMBER', credited, sid) == 1 then
  return answer({ ok = true, credited = false, ledger = ledger_view(l) })
end
l.back = l.back + returned
l.sold = l.sold + sold
give_back(l, returned)
save_ledger(l)
redis.call('SADD', credited, sid)
-- Not trimmed here: the relay trims what the backend acknowledged, as for orders.
redis.call('XADD', adjusted, '*',
  'id', sid, 'sku', sku, 'show', show, 'drop', drop, 'sold', fmt(sold),
  'returned', fmt(returned), 'pool', fmt(l.pool), 'on_hand', fmt(l.on_hand), 'at', fmt(NOW))
return answer({ ok = true, credited = true, ledger = ledger_view(l) })
