-- Erase one viewer from one show, in one atomic step (safe during a live show: a sale runs
-- before or after it, never in between). Standalone: the drop helpers are not prepended.
-- Personal data (viewer id, payment reference) is replaced by a pseudonym; quantities and
-- amounts stay, so the counters, the outbox and the audit still add up:
--   * orders stream: each of the viewer's entries is deleted and its pseudonymised copy kept in
--     the erasure ledger under the same entry id (the audit reads both; seq "erased_entries"
--     counts them); one the relay's group has not yet handed over is appended again,
--     pseudonymised, as a replay (counted in seq "replays"), so the backend still gets the
--     order; then an `order.erased` entry per order (counted in seq "erasures") tells the
--     backend through the relay;
--   * seq b:<viewer>, held/bought hashes: the field moves to the pseudonym, values unchanged;
--   * hold records: v (and the embedded order's viewer and payment reference) rewritten;
--   * idempotency records of the viewer: deleted.
local seq_key = KEYS[1]             -- B:seq
local orders_key = KEYS[2]          -- B:orders   (the outbox)
local ledger_key = KEYS[3]          -- B:erased   stream entry id -> pseudonymised fields (JSON)
local blocks_key = KEYS[4]          -- B:blocks   a host's block of the viewer moves too
-- KEYS[5 ..]: per drop holdrec, held, bought (ARGV[4] drops); then ARGV[5] request keys.
local viewer = ARGV[1]
local pseudonym = ARGV[2]
local group = ARGV[3]
local ndrops = tonumber(ARGV[4])
local nreq = tonumber(ARGV[5])
local scanned_to = ARGV[6]          -- last entry id the caller scanned ('0-0': none)
local erased_ref = ARGV[7]          -- what replaces a payment reference
local first_candidate = 8           -- ARGV[8 ..]: entry ids the caller found for the viewer

local t = redis.call('TIME')
local now = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))

local function parse_id(id)
  local ms, sq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(sq)
end
local function id_gt(a, b)
  local am, as = parse_id(a)
  local bm, bs = parse_id(b)
  return am > bm or (am == bm and as > bs)
end

local counts = { orders = 0, replayed = 0, events = 0, holds = 0, requests = 0, counters = 0 }

-- 1. The outbox. Where the relay's group stands decides whether an order was handed over.
local last_delivered = nil
local groups = redis.pcall('XINFO', 'GROUPS', orders_key)
if type(groups) == 'table' and not groups.err then
  for _, g in ipairs(groups) do
    local name, last
    for i = 1, #g, 2 do
      if g[i] == 'name' then name = g[i + 1] end
      if g[i] == 'last-delivered-id' then last = g[i + 1] end
    end
    if name == group then last_delivered = last end
  end
end

local candidates = {}
for i = first_candidate, #ARGV do candidates[#candidates + 1] = ARGV[i] end
if redis.call('EXISTS', orders_key) == 1 then
  -- Entries appended since the caller's scan (the viewer may be buying right now).
  local tail = redis.call('XRANGE', orders_key, '(' .. scanned_to, '+')
  for _, e in ipairs(tail) do candidates[#candidates + 1] = e[1] end
end

local announced = {}
for _, id in ipairs(candidates) do
  local found = redis.call('XRANGE', orders_key, id, id)
  if #found == 1 then
    local flat = found[1][2]
    local f = {}
    for i = 1, #flat, 2 do f[flat[i]] = flat[i + 1] end
    if f.viewer == viewer and (f.type == nil or f.type == 'order.confirmed') then
      local copy = {}
      local copy_flat = {}
      for i = 1, #flat, 2 do
        local k, v = flat[i], flat[i + 1]
        if k == 'viewer' then v = pseudonym elseif k == 'payment_reference' then v = erased_ref end
        copy[k] = v
        copy_flat[#copy_flat + 1] = k
        copy_flat[#copy_flat + 1] = v
      end
      local pending = false
      if last_delivered then
        pending = #redis.call('XPENDING', orders_key, group, id, id, 1) > 0
      end
      local undelivered = pending or last_delivered == nil or id_gt(id, last_delivered)
      redis.call('XDEL', orders_key, id)
      redis.call('HSET', ledger_key, id, cjson.encode(copy))
      redis.call('HINCRBY', seq_key, 'erased_entries', 1)
      if pending then redis.call('XACK', orders_key, group, id) end
      if undelivered then
        if copy.replay_of == nil then
          copy_flat[#copy_flat + 1] = 'replay_of'
          copy_flat[#copy_flat + 1] = id
        end
        redis.call('XADD', orders_key, '*', unpack(copy_flat))
        redis.call('HINCRBY', seq_key, 'replays', 1)
        counts.replayed = counts.replayed + 1
      end
      counts.orders = counts.orders + 1
      if not announced[f.order_id] then
        announced[f.order_id] = true
        redis.call('XADD', orders_key, '*', 'type', 'order.erased', 'order_id', f.order_id,
                   'show', f.show, 'drop', f.drop, 'viewer', pseudonym, 'erased_at', now)
        redis.call('HINCRBY', seq_key, 'erasures', 1)
        counts.events = counts.events + 1
      end
    end
  end
end

-- 2. Counters: the field moves to the pseudonym, the value stays.
local function move(key, from, to)
  local value = redis.call('HGET', key, from)
  if not value then return end
  redis.call('HDEL', key, from)
  redis.call('HINCRBY', key, to, tonumber(value))
  counts.counters = counts.counters + 1
end
local block = redis.call('HGET', blocks_key, 'viewer:' .. viewer)
if block then
  redis.call('HDEL', blocks_key, 'viewer:' .. viewer)
  redis.call('HSET', blocks_key, 'viewer:' .. pseudonym, block)
  counts.counters = counts.counters + 1
end
if redis.call('HDEL', seq_key, 'b:' .. viewer) == 1 then
  redis.call('HSETNX', seq_key, 'b:' .. pseudonym, '1')
  counts.counters = counts.counters + 1
end
for d = 0, ndrops - 1 do
  local holdrec, held, bought = KEYS[5 + d * 3], KEYS[6 + d * 3], KEYS[7 + d * 3]
  local flat = redis.call('HGETALL', holdrec)
  for i = 1, #flat, 2 do
    local rec = cjson.decode(flat[i + 1])
    if rec.v == viewer then
      rec.v = pseudonym
      if type(rec.order) == 'table' then
        rec.order.viewer = pseudonym
        rec.order.payment_reference = erased_ref
      end
      redis.call('HSET', holdrec, flat[i], cjson.encode(rec))
      counts.holds = counts.holds + 1
    end
  end
  move(held, viewer, pseudonym)
  move(bought, viewer, pseudonym)
end

-- 3. Idempotency records (each holds the viewer's hold or order as first answered).
for i = 1, nreq do
  counts.requests = counts.requests + redis.call('DEL', KEYS[4 + ndrops * 3 + i])
end
return cjson.encode(counts)
