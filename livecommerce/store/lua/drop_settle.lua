-- Step 1 of a settlement of a pooled drop (docs/stock-sync.md): a closed drop's unsold units
-- move to `returned`, and the units sold since the last settlement are counted, both in one
-- settlement record that pool_credit.lua credits to the SKU's pool.
-- KEYS[10] the drop's returns hash
-- ARGV[4] mode: 'settle' | 'reduce' (give back up to ARGV[5] unsold units of an open drop)
--               | 'close' (close the drop, reason out_of_stock, and give back what is unsold)
-- ARGV[5] most units to take back in 'reduce' mode
-- Returns {"ok":true,"pending":[[id, returned, sold], ...],"taken":n,"idle":bool,
--          "finished":bool,"drop":view}.
local returns = KEYS[10]
local mode = ARGV[4]
local most = tonumber(ARGV[5]) or 0

local d = load_drop()
if not d then return refuse('unknown_drop') end
if d.pooled ~= '1' then return refuse('not_pooled') end
advance(d)
local was_remaining = d.remaining
if mode == 'close' and d.state ~= 'closed' and d.remaining > 0 then
  close_drop(d, 'out_of_stock')
end
local take = 0
if d.state == 'closed' then
  take = d.remaining
elseif mode == 'reduce' then
  take = math.max(0, math.min(most, d.remaining))
end
local sold = d.sold - num(d.settled_sold)
if take > 0 or sold > 0 then
  local sid = d.show .. '.' .. d.id .. '.s' .. fmt(redis.call('HINCRBY', K.drop, 'sseq', 1))
  incr(d, 'remaining', -take)
  redis.call('HINCRBY', K.drop, 'returned', take)
  redis.call('HINCRBY', K.drop, 'settled_sold', sold)
  redis.call('HSET', returns, sid, cjson.encode({ r = take, s = sold }))
  if take > 0 and d.state ~= 'closed' then
    local view = drop_view(d)
    view.taken = take
    emit('stock_reduced', view)
    after_sale(d, was_remaining)  -- sold_out, and closed when nothing is held either
  elseif take > 0 then
    publish_stock(d)
  end
end
local flat = redis.call('HGETALL', returns)
local pending = {}
for i = 1, #flat, 2 do
  local rec = cjson.decode(flat[i + 1])
  pending[#pending + 1] = { flat[i], rec.r, rec.s }
end
-- idle: nothing left to sell or to give back once the pending settlements are credited.
local idle = d.state == 'closed' and d.remaining == 0 and d.held == 0
return reply({ ok = true, pending = pending, taken = take, idle = idle, finished = idle and #pending == 0,
               drop = drop_view(d), next_due = next_due(d) })
