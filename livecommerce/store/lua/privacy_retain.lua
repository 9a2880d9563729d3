-- Retention of ended hold records: past their retention, a hold that ended (confirmed,
-- cancelled, expired) keeps its numbers but loses who it was and how they paid. Active holds
-- are never touched (a viewer's live hold still needs its viewer). Standalone script.
local holdrec_key = KEYS[1]         -- B:drop:<d>:holdrec
local cutoff_ms = tonumber(ARGV[1]) -- holds that ended before this server-clock ms
-- ARGV[2 ..]: hold numbers the caller found past the cutoff (checked again here)
local cleared = 0
for i = 2, #ARGV do
  local raw = redis.call('HGET', holdrec_key, ARGV[i])
  if raw then
    local rec = cjson.decode(raw)
    if rec.s ~= 'held' and (tonumber(rec.ended_at) or 0) < cutoff_ms and rec.v ~= '' then
      rec.v = ''
      if type(rec.order) == 'table' then
        rec.order.viewer = ''
        rec.order.payment_reference = ''
      end
      redis.call('HSET', holdrec_key, ARGV[i], cjson.encode(rec))
      cleared = cleared + 1
    end
  end
end
return cleared
