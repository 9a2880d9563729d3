-- Apply one reported on-hand level of a SKU, in the backend's order (docs/stock-sync.md).
-- KEYS[1] ledger   KEYS[2] deliveries zset
-- ARGV[1] on_hand  ARGV[2] version  ARGV[3] delivery id ('' = none)  ARGV[4] retention ms
-- ARGV[5] source name
-- Returns {"ok":true,"status":"created|applied|stale|duplicate","ledger":{...}}.
local deliveries = KEYS[2]
local on_hand = tonumber(ARGV[1])
local version = tonumber(ARGV[2])
local delivery = ARGV[3]
local retention = tonumber(ARGV[4])
local source = ARGV[5]

if delivery ~= '' and redis.call('ZSCORE', deliveries, delivery) then
  local l = load_ledger()
  return answer({ ok = true, status = 'duplicate', ledger = l and ledger_view(l) or cjson.null })
end
local l = load_ledger()
local status = 'applied'
if l and version <= l.version then
  status = 'stale'
else
  if not l then
    status = 'created'
    l = { on_hand = 0, version = 0, pool = 0, out = 0, back = 0, sold = 0, adjust = 0, short = 0 }
  end
  local outstanding = l.out - l.back - l.sold
  local pool = math.max(0, on_hand - outstanding)
  l.adjust = l.adjust + (pool - l.pool) - (on_hand - l.on_hand)
  l.pool = pool
  l.short = math.max(0, outstanding - on_hand)
  l.on_hand = on_hand
  l.version = version
  save_ledger(l)
  redis.call('HSET', LEDGER, 'source', source)
end
if delivery ~= '' then
  redis.call('ZADD', deliveries, fmt(NOW), delivery)
  redis.call('ZREMRANGEBYSCORE', deliveries, '-inf', fmt(NOW - retention))
end
return answer({ ok = true, status = status, ledger = ledger_view(l) })
