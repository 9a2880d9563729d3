-- Close a drop early (by the host). Holds already taken stay confirmable until they expire.
local d = load_drop()
if not d then return refuse('unknown_drop') end
advance(d)
if d.state == 'closed' then return refuse('closed', { closed_reason = d.reason }) end
close_drop(d, 'host')
return reply({ ok = true, drop = drop_view(d), next_due = 0 })
