-- Cancel a hold: its units return to stock. Cancelling a cancelled hold is a no-op success.
local n = ARGV[4]
local viewer = ARGV[5]

local d = load_drop()
if not d then return refuse('unknown_drop') end
local rec = load_hold(n)
if not rec or rec.v ~= viewer then return refuse('unknown_hold') end
if rec.s == 'cancelled' then return reply({ ok = true, replay = true, hold = hold_view(d, n, rec) }) end
if rec.s == 'confirmed' then return refuse('hold_confirmed', { order = rec.o }) end
if rec.s == 'expired' then return refuse('hold_expired') end

advance(d)
local state = 'cancelled'
if CTX.now >= rec.x then state = 'expired' end
release(d, n, rec, state)
publish_stock(d)
if state == 'expired' then return refuse('hold_expired') end
return reply({ ok = true, hold = hold_view(d, n, rec), remaining = d.remaining })
