-- Reserve units of a drop for a viewer (a hold that expires), or with mode "buy" sell them at
-- once (one-tap checkout: the order goes to the outbox in this same step).
-- KEYS[10] idempotency record for (viewer, request id)
local idem_key = KEYS[10]
local viewer = ARGV[4]
local q = tonumber(ARGV[5])
local request_id = ARGV[6]
local hold_ttl_ms = tonumber(ARGV[7])
local currency_arg = ARGV[8]
local mode = ARGV[9]                -- 'reserve' or 'buy'
local payment_ref = ARGV[10]
local idem_ttl_s = tonumber(ARGV[11])
local reap_batch = 32

-- 1. Checks, no writes.
if not q or q < 1 or q ~= math.floor(q) or q > 1000000 then
  return refuse('invalid_quantity')
end
-- The record keeps what was asked with the result: the same request id for a different
-- request is refused instead of answered with someone else's result.
local fingerprint = KEYS[1] .. '|' .. mode .. '|' .. ARGV[5] .. '|' .. currency_arg
local first = redis.call('GET', idem_key)
if first then
  local cut = string.find(first, '\n', 1, true)
  if not cut or string.sub(first, 1, cut - 1) ~= fingerprint then
    return refuse('request_id_reused')
  end
  return '{"replay":true,' .. string.sub(first, cut + 2)
end

local d = load_drop()
if not d then return refuse('unknown_drop') end

-- 2. Time-driven transitions and expired holds first: both are complete steps of their own.
advance(d)
reap(d, reap_batch)

local function finish(result)
  redis.call('SET', idem_key, fingerprint .. '\n' .. result, 'EX', idem_ttl_s)
  return result
end

if d.state == 'scheduled' then
  return finish(refuse('not_open', { opens_at = d.opens_at }))
end
if d.state == 'closed' and d.reason == 'sold_out' then
  return finish(refuse('sold_out', { remaining = 0 }))
end
if d.state == 'closed' then
  return finish(refuse('closed', { closed_reason = d.reason }))
end
local prices = cjson.decode(d.prices)
local currency = currency_arg
if currency == '' then currency = d.currency end
local unit = prices[currency]
if not unit then return finish(refuse('unsupported_currency', { currency = currency })) end
local used = num(redis.call('HGET', K.held, viewer)) + num(redis.call('HGET', K.bought, viewer))
if used + q > d.limit then
  return finish(refuse('limit_exceeded', { limit = d.limit, allowed = math.max(d.limit - used, 0) }))
end
if d.remaining == 0 then return finish(refuse('sold_out', { remaining = 0 })) end
if q > d.remaining then
  return finish(refuse('insufficient_stock', { remaining = d.remaining }))
end

-- 3. Writes.
local was_remaining = d.remaining
incr(d, 'remaining', -q)
local result
if mode == 'buy' then
  local order = record_order(d, viewer, q, currency, unit, payment_ref, request_id, '')
  result = reply({ ok = true, order = order, remaining = d.remaining })
else
  local n = fmt(redis.call('HINCRBY', K.seq, 'h:' .. d.id, 1))
  local rec = { v = viewer, q = q, x = CTX.now + hold_ttl_ms, s = 'held', c = currency, p = unit,
                r = request_id, t = CTX.now }
  redis.call('HSET', K.holdrec, n, cjson.encode(rec))
  redis.call('ZADD', K.holds, fmt(rec.x), n)
  redis.call('HINCRBY', K.held, viewer, q)
  incr(d, 'held', q)
  result = reply({ ok = true, hold = hold_view(d, n, rec), remaining = d.remaining })
end
after_sale(d, was_remaining)
return finish(result)
