-- Shared helpers of the SKU pool scripts (pool_*), prepended when they are loaded.
--
-- KEYS[1] is always the SKU's ledger hash (keys.SkuKeys.pool). Ledger invariant, kept by every
-- pool script and checked by livecommerce.store.pool_audit (docs/stock-sync.md):
--   pool + out - back == on_hand + adjust,  pool >= 0,  short >= 0,  pool == 0 or short == 0
-- Scripts validate everything before their first write: Lua does not roll back.

local LEDGER = KEYS[1]
local FIELDS = {'on_hand', 'version', 'pool', 'out', 'back', 'sold', 'adjust', 'short'}

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local NOW = now_ms()

local function fmt(n) return string.format('%d', n) end

local function load_ledger()
  local flat = redis.call('HGETALL', LEDGER)
  if #flat == 0 then return nil end
  local l = {}
  for i = 1, #flat, 2 do l[flat[i]] = flat[i + 1] end
  for _, f in ipairs(FIELDS) do l[f] = tonumber(l[f]) or 0 end
  return l
end

local function save_ledger(l)
  local args = {'updated_at', fmt(NOW)}
  for _, f in ipairs(FIELDS) do
    args[#args + 1] = f
    args[#args + 1] = fmt(l[f])
  end
  redis.call('HSET', LEDGER, unpack(args))
end

local function ledger_view(l)
  local v = {}
  for _, f in ipairs(FIELDS) do v[f] = l[f] end
  v.version = fmt(l.version)  -- a string: cjson would round a 16-digit number (microseconds)
  v.allocated = l.out - l.back - l.sold
  return v
end

-- Units coming back to the pool cover a shortfall first: they are no longer on hand.
local function give_back(l, units)
  local absorb = math.min(units, l.short)
  l.short = l.short - absorb
  l.adjust = l.adjust - absorb
  l.pool = l.pool + units - absorb
end

local function answer(t)
  t.now = NOW
  return cjson.encode(t)
end
