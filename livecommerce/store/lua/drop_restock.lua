-- Add units to a drop. A drop closed because it sold out opens again; one closed by the host
-- or by its window is refused (extend the window first).
-- A pooled drop (docs/stock-sync.md) is restocked only by an allocation from its pool: ARGV[5]
-- is its transfer id and KEYS[10] the show's transfer log, where the outcome is recorded.
local added = tonumber(ARGV[4])
local tid = ARGV[5] or ''
local xfers_key = KEYS[10]

local replayed = transfer_replay(xfers_key, tid)
if replayed then return replayed end
local refused = transfer_refuser(xfers_key, tid)

if not added or added < 1 or added ~= math.floor(added) or added > 1000000 then
  return refused('invalid_quantity')
end
local d = load_drop()
if not d then return refused('unknown_drop') end
if (d.pooled == '1') ~= (tid ~= '') then return refused('pooled_drop') end
advance(d)
if d.final == '1' then return refused('closed', { closed_reason = 'show_ended' }) end
if d.state == 'closed' and d.reason ~= 'sold_out' then
  return refused('closed', { closed_reason = d.reason })
end
if tid ~= '' then redis.call('HSET', xfers_key, tid, 'applied') end
redis.call('HINCRBY', K.drop, 'restocked', added)
d.restocked = d.restocked + added
incr(d, 'remaining', added)
local view = drop_view(d)
view.added = added
emit('restocked', view)
if d.state == 'closed' then
  open_drop(d)
  advance(d)  -- its window may have passed while it was sold out
end
publish_stock(d)
return reply({ ok = true, drop = drop_view(d), next_due = next_due(d) })
