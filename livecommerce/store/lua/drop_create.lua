-- Create a drop (or timed offer) in a show; it opens now or at opens_at (server clock).
-- KEYS[10] the show's drops zset   KEYS[11] the show hash
-- Returns {"ok":true,"drop":view,"next_due":ms} or a refusal.
-- Pooled drops (docs/stock-sync.md): ARGV[5] is the transfer id of the allocation and KEYS[12]
-- the show's transfer log; the outcome is recorded there in this same step, once and for all.
local drops_key = KEYS[10]
local show_key = KEYS[11]
local f = cjson.decode(ARGV[4])     -- validated by livecommerce.inventory before the call
local tid = ARGV[5] or ''
local xfers_key = KEYS[12]

local replayed = transfer_replay(xfers_key, tid)
if replayed then return replayed end
local refused = transfer_refuser(xfers_key, tid)

if redis.call('EXISTS', K.drop) == 1 then return refused('drop_exists') end
local show_state = redis.call('HGET', show_key, 'state')
if not show_state then return refused('unknown_show') end
if show_state == 'ended' then return refused('show_ended') end

local opens_at = tonumber(f.opens_at)
if opens_at <= 0 or opens_at < CTX.now then opens_at = CTX.now end
local closes_at = tonumber(f.closes_at)
if tonumber(f.duration_ms) > 0 then closes_at = opens_at + tonumber(f.duration_ms) end
if closes_at > 0 and closes_at <= opens_at then
  return refused('invalid_window', { opens_at = opens_at, closes_at = closes_at })
end

redis.call('HSET', K.drop,
  'id', f.id, 'show', f.show, 'sku', f.sku, 'title', f.title, 'kind', f.kind,
  'description', f.description, 'image_url', f.image_url,
  'quantity', fmt(f.quantity), 'restocked', '0', 'remaining', fmt(f.quantity),
  'held', '0', 'sold', '0', 'limit', fmt(f.limit), 'prices', cjson.encode(f.prices),
  'currency', f.currency, 'opens_at', fmt(opens_at), 'closes_at', fmt(closes_at),
  'state', 'scheduled', 'reason', '', 'soon_sent', '0', 'created_at', fmt(CTX.now))
redis.call('ZADD', drops_key, fmt(CTX.now), f.id)
if tid ~= '' then
  redis.call('HSET', K.drop, 'pooled', '1', 'returned', '0', 'settled_sold', '0')
  redis.call('HSET', xfers_key, tid, 'applied')
end
local d = load_drop()
if d.opens_at > CTX.now then
  emit('drop_scheduled', drop_view(d))
else
  advance(d)
end
return reply({ ok = true, drop = drop_view(d), next_due = next_due(d) })
