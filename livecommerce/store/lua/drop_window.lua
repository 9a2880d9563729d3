-- Extend or shorten a drop's selling window. closes_at 0 removes the closing time; a drop
-- closed because its time was up opens again when the new closing time is in the future.
local closes_at = tonumber(ARGV[4])  -- absolute ms (server clock), or 0 for none
local opens_at = tonumber(ARGV[5])   -- absolute ms, or -1 to keep

local d = load_drop()
if not d then return refuse('unknown_drop') end
advance(d)
if d.final == '1' then return refuse('closed', { closed_reason = 'show_ended' }) end
if d.state == 'closed' and d.reason ~= 'time_up' then
  return refuse('closed', { closed_reason = d.reason })
end
local new_opens = d.opens_at
if opens_at >= 0 then
  if d.state ~= 'scheduled' then return refuse('already_open') end
  new_opens = math.max(opens_at, CTX.now)
end
if closes_at == 0 and d.kind == 'offer' then
  return refuse('invalid_window', { now = CTX.now, opens_at = new_opens })  -- offers end
end
if closes_at ~= 0 and (closes_at <= CTX.now or closes_at <= new_opens) then
  return refuse('invalid_window', { now = CTX.now, opens_at = new_opens })
end

redis.call('HSET', K.drop, 'opens_at', fmt(new_opens), 'closes_at', fmt(closes_at))
d.opens_at = new_opens
d.closes_at = closes_at
if closes_at == 0 or closes_at - CTX.soon_ms > CTX.now then
  redis.call('HSET', K.drop, 'soon_sent', '0')
  d.soon_sent = '0'
end
emit('window_changed', drop_view(d))
if d.state == 'closed' then open_drop(d) end
advance(d)
return reply({ ok = true, drop = drop_view(d), next_due = next_due(d) })
