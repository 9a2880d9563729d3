-- Add units to a drop. A drop closed because it sold out opens again; one closed by the host
-- or by its window is refused (extend the window first).
local added = tonumber(ARGV[4])

if not added or added < 1 or added ~= math.floor(added) or added > 1000000 then
  return refuse('invalid_quantity')
end
local d = load_drop()
if not d then return refuse('unknown_drop') end
advance(d)
if d.final == '1' then return refuse('closed', { closed_reason = 'show_ended' }) end
if d.state == 'closed' and d.reason ~= 'sold_out' then
  return refuse('closed', { closed_reason = d.reason })
end
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
