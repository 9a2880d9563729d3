-- Close a drop early (by the host). Holds already taken stay confirmable until they expire.
-- With ARGV[4] == 'final' (the show ended) the drop can never open again -- restock and window
-- changes are refused -- and closing an already closed drop is not an error.
local final = ARGV[4] == 'final'

local d = load_drop()
if not d then return refuse('unknown_drop') end
advance(d)
if final then
  redis.call('HSET', K.drop, 'final', '1')
  d.final = '1'
end
if d.state == 'closed' then
  if final then return reply({ ok = true, drop = drop_view(d), next_due = 0 }) end
  return refuse('closed', { closed_reason = d.reason })
end
close_drop(d, 'host')
return reply({ ok = true, drop = drop_view(d), next_due = 0 })
