-- Shared helpers, prepended to every drop_*/hold_*/holds_* script when it is loaded.
--
-- Common binding for every drop script (see keys.DropKeys.as_list):
--   KEYS[1] drop hash      KEYS[2] holds zset     KEYS[3] holdrec hash   KEYS[4] held hash
--   KEYS[5] bought hash    KEYS[6] orders index   KEYS[7] orders stream  KEYS[8] events stream
--   KEYS[9] seq hash
--   ARGV[1] pub/sub channel   ARGV[2] event log MAXLEN   ARGV[3] ending-soon lead (ms)
-- Script-specific KEYS start at 10 and ARGV at 4.
--
-- Invariants kept by every script (checked by livecommerce.audit):
--   remaining + held + sold == quantity + restocked,  remaining >= 0,
--   held == sum of active holds,  held[v] + bought[v] <= limit,
--   every order is in the orders index and appears exactly once in the orders stream.
-- Scripts validate everything before their first write: Lua does not roll back.

local K = {
  drop = KEYS[1], holds = KEYS[2], holdrec = KEYS[3], held = KEYS[4], bought = KEYS[5],
  orders_index = KEYS[6], orders = KEYS[7], events = KEYS[8], seq = KEYS[9],
}
local CTX = { channel = ARGV[1], maxlen = tonumber(ARGV[2]), soon_ms = tonumber(ARGV[3]) }

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
CTX.now = now_ms()

local function fmt(n) return string.format('%d', n) end
local function num(x) return tonumber(x) or 0 end

local function reply(t)
  t.now = CTX.now
  return cjson.encode(t)
end

local function refuse(reason, extra)
  local t = extra or {}
  t.ok = false
  t.reason = reason
  return reply(t)
end

local function load_drop()
  local flat = redis.call('HGETALL', K.drop)
  if #flat == 0 then return nil end
  local d = {}
  for i = 1, #flat, 2 do d[flat[i]] = flat[i + 1] end
  for _, f in ipairs({'quantity', 'restocked', 'remaining', 'held', 'sold', 'limit',
                      'opens_at', 'closes_at'}) do
    d[f] = num(d[f])
  end
  return d
end

local function incr(d, field, delta)
  d[field] = redis.call('HINCRBY', K.drop, field, delta)
end

local function drop_view(d)
  return {
    id = d.id, show = d.show, sku = d.sku, title = d.title, kind = d.kind,
    description = d.description, image_url = d.image_url,
    quantity = d.quantity + d.restocked, remaining = d.remaining, held = d.held, sold = d.sold,
    limit = d.limit, prices = cjson.decode(d.prices), currency = d.currency,
    opens_at = d.opens_at, closes_at = d.closes_at, state = d.state, reason = d.reason,
  }
end

-- Durable event: appended to the show's event log (its id is the event id) and published.
local function emit(etype, data)
  local json = cjson.encode(data)
  local id = redis.call('XADD', K.events, 'MAXLEN', '~', CTX.maxlen, '*',
                        'type', etype, 'data', json, 'ts', fmt(CTX.now))
  redis.call('PUBLISH', CTX.channel,
    '{"id":"' .. id .. '","type":"' .. etype .. '","ts":' .. fmt(CTX.now) .. ',"data":' .. json .. '}')
  return id
end

-- Ephemeral stock level: published only; gateways coalesce it; snapshots carry the true value.
local function publish_stock(d)
  redis.call('PUBLISH', CTX.channel,
    '{"type":"stock","ts":' .. fmt(CTX.now) .. ',"data":{"drop":"' .. d.id .. '","remaining":'
    .. fmt(d.remaining) .. ',"held":' .. fmt(d.held) .. ',"sold":' .. fmt(d.sold) .. '}}')
end

local function close_drop(d, reason)
  redis.call('HSET', K.drop, 'state', 'closed', 'reason', reason, 'closed_at', fmt(CTX.now))
  d.state = 'closed'
  d.reason = reason
  local view = drop_view(d)
  if d.kind == 'offer' then emit('offer_ended', view) else emit('drop_closed', view) end
end

local function open_drop(d)
  redis.call('HSET', K.drop, 'state', 'open', 'reason', '')
  d.state = 'open'
  d.reason = ''
  local view = drop_view(d)
  if d.kind == 'offer' then emit('offer_started', view) else emit('drop_opened', view) end
end

-- Time-driven transitions, judged by the server clock; each happens once because the state
-- it changes is part of its condition.
local function advance(d)
  if d.state == 'scheduled' and CTX.now >= d.opens_at then open_drop(d) end
  if d.state == 'open' and d.closes_at > 0 then
    if CTX.now >= d.closes_at then
      close_drop(d, 'time_up')
    elseif d.kind == 'offer' and d.soon_sent ~= '1' and CTX.soon_ms > 0
        and CTX.now >= d.closes_at - CTX.soon_ms then
      redis.call('HSET', K.drop, 'soon_sent', '1')
      d.soon_sent = '1'
      local view = drop_view(d)
      view.seconds_left = math.floor((d.closes_at - CTX.now) / 1000)
      emit('offer_ending_soon', view)
    end
  end
end

-- When the next time-driven transition of this drop is due (ms), or 0 for none.
local function next_due(d)
  if d.state == 'scheduled' then return d.opens_at end
  if d.state == 'open' and d.closes_at > 0 then
    if d.kind == 'offer' and d.soon_sent ~= '1' and CTX.soon_ms > 0 then
      return math.max(d.closes_at - CTX.soon_ms, 0)
    end
    return d.closes_at
  end
  return 0
end

local function load_hold(n)
  local raw = redis.call('HGET', K.holdrec, n)
  if not raw then return nil end
  return cjson.decode(raw)
end

-- Return a held hold's units to stock. The caller has checked rec.s == 'held'.
local function release(d, n, rec, new_state)
  redis.call('ZREM', K.holds, n)
  incr(d, 'remaining', rec.q)
  incr(d, 'held', -rec.q)
  if redis.call('HINCRBY', K.held, rec.v, -rec.q) <= 0 then redis.call('HDEL', K.held, rec.v) end
  rec.s = new_state
  rec.ended_at = CTX.now
  redis.call('HSET', K.holdrec, n, cjson.encode(rec))
end

-- Release up to `limit` expired holds; returns how many.
local function reap(d, limit)
  local due = redis.call('ZRANGEBYSCORE', K.holds, '-inf', fmt(CTX.now), 'LIMIT', 0, limit)
  for _, n in ipairs(due) do
    local rec = load_hold(n)
    if rec and rec.s == 'held' then
      release(d, n, rec, 'expired')
    else
      redis.call('ZREM', K.holds, n)  -- never left by our scripts; keeps the index honest
    end
  end
  if #due > 0 then publish_stock(d) end
  return #due
end

local function hold_view(d, n, rec)
  return {
    id = d.id .. '.' .. n, drop = d.id, viewer = rec.v, quantity = rec.q,
    expires_at = rec.x, unit_price = rec.p, currency = rec.c, state = rec.s,
    order = rec.o,
  }
end

-- Sell `q` units to viewer `v`: the order and its outbox entry in the same step as the counters.
-- Caller has moved the units out of `remaining` or `held` already.
local function record_order(d, v, q, currency, unit, payment_ref, request_id, hold_id)
  local seq = redis.call('HINCRBY', K.seq, 'o:' .. d.id, 1)
  local order_id = d.show .. '.' .. d.id .. '.' .. fmt(seq)
  local amount = q * unit
  local stream_id = redis.call('XADD', K.orders, '*',
    'order_id', order_id, 'show', d.show, 'drop', d.id, 'sku', d.sku, 'title', d.title,
    'viewer', v, 'quantity', fmt(q), 'unit_price', fmt(unit), 'amount', fmt(amount),
    'currency', currency, 'payment_reference', payment_ref, 'hold', hold_id,
    'request_id', request_id, 'confirmed_at', fmt(CTX.now))
  redis.call('HSET', K.orders_index, order_id, fmt(q))
  incr(d, 'sold', q)
  -- Sales counters for the host dashboard, exact whatever the relay has trimmed since:
  -- per show in the seq hash, per drop in the drop hash.
  local buyer_units = redis.call('HINCRBY', K.bought, v, q)
  for _, key in ipairs({K.seq, K.drop}) do
    redis.call('HINCRBY', key, 'orders', 1)
    redis.call('HINCRBY', key, 'rev:' .. currency, amount)
    redis.call('HINCRBY', key, 'ord:' .. currency, 1)
  end
  redis.call('HINCRBY', K.seq, 'units', q)
  if buyer_units == q then redis.call('HINCRBY', K.drop, 'buyers', 1) end
  if redis.call('HSETNX', K.seq, 'b:' .. v, '1') == 1 then
    redis.call('HINCRBY', K.seq, 'buyers', 1)
  end
  return {
    id = order_id, stream_id = stream_id, show = d.show, drop = d.id, sku = d.sku,
    title = d.title, viewer = v, quantity = q, unit_price = unit, amount = amount,
    currency = currency, payment_reference = payment_ref, hold = hold_id,
    request_id = request_id, confirmed_at = CTX.now,
  }
end

-- The per-drop limit also holds per payment reference, across viewer ids sharing one (a script
-- with many accounts and one card), when the caller passes the reference's one-way hash
-- (Inventory does with LIVECOMMERCE_LIMIT_PER_PAYMENT); '' means: not counted.
local function payer_of(hashed)
  if hashed == nil or hashed == '' then return nil end
  return hashed
end

local function payer_refusal(payers_key, payer, d, q)
  if not payer then return nil end
  local paid = num(redis.call('HGET', payers_key, payer))
  if paid + q > d.limit then
    return { limit = d.limit, allowed = math.max(d.limit - paid, 0), scope = 'payment_reference' }
  end
  return nil
end

-- After a sale: announce sold out, and close for good once every unit is sold (none held).
local function after_sale(d, was_remaining)
  if was_remaining > 0 and d.remaining == 0 then
    emit('sold_out', drop_view(d))
  end
  if d.remaining == 0 and d.held == 0 and d.state ~= 'closed' then close_drop(d, 'sold_out') end
  publish_stock(d)
end

-- A pooled allocation applied to a drop (docs/stock-sync.md): the transfer id's outcome is
-- recorded in the show's transfer log once and for all. transfer_replay answers a transfer seen
-- before (nil for a new one or none); transfer_refuser refuses and records the refusal.
local function transfer_replay(xfers_key, tid)
  if tid == '' then return nil end
  local seen = redis.call('HGET', xfers_key, tid)
  if seen == 'applied' then
    local d = load_drop()
    return reply({ ok = true, replay = true, drop = drop_view(d), next_due = next_due(d) })
  end
  if seen then return refuse(seen) end
  return nil
end

local function transfer_refuser(xfers_key, tid)
  return function(reason, extra)
    if tid ~= '' then redis.call('HSET', xfers_key, tid, reason) end
    return refuse(reason, extra)
  end
end
