-- Confirm a hold: units move from held to sold and the order is appended to the outbox stream
-- in this same step. Confirming a confirmed hold returns its order again (idempotent).
local n = ARGV[4]                   -- hold number within the drop
local viewer = ARGV[5]
local payment_ref = ARGV[6]

local d = load_drop()
if not d then return refuse('unknown_drop') end
local rec = load_hold(n)
if not rec or rec.v ~= viewer then return refuse('unknown_hold') end
if rec.s == 'confirmed' then return reply({ ok = true, replay = true, order = rec.order }) end
if rec.s == 'cancelled' then return refuse('hold_cancelled') end
if rec.s == 'expired' then return refuse('hold_expired') end

advance(d)
if CTX.now >= rec.x then
  -- Expired but not yet reaped: it can never be confirmed; release it now.
  local was_empty = d.remaining == 0
  release(d, n, rec, 'expired')
  if was_empty then publish_stock(d) end
  return refuse('hold_expired')
end

local hold_id = d.id .. '.' .. n
redis.call('ZREM', K.holds, n)
incr(d, 'held', -rec.q)
if redis.call('HINCRBY', K.held, viewer, -rec.q) <= 0 then redis.call('HDEL', K.held, viewer) end
local order = record_order(d, viewer, rec.q, rec.c, rec.p, payment_ref, rec.r, hold_id)
rec.s = 'confirmed'
rec.o = order.id
rec.order = order
rec.ended_at = CTX.now
redis.call('HSET', K.holdrec, n, cjson.encode(rec))
after_sale(d, d.remaining)
return reply({ ok = true, order = order })
