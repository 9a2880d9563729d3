-- Apply a backend's change to one catalog product, in the backend's order (docs/stock-in.md).
-- KEYS[1] the products hash
-- ARGV[1] sku   ARGV[2] version   ARGV[3] validated fields (JSON: title, description, ...)
-- Returns {"status":"applied|stale|unknown_product","product":{...}}. A product is never
-- created here: it belongs to the host that created it.
local products = KEYS[1]
local sku = ARGV[1]
local version = tonumber(ARGV[2])
local fields = cjson.decode(ARGV[3])

local raw = redis.call('HGET', products, sku)
if not raw then return cjson.encode({ status = 'unknown_product' }) end
local product = cjson.decode(raw)
if tonumber(product.sync_version or -1) >= version then
  return cjson.encode({ status = 'stale', product = product })
end
for name, value in pairs(fields) do product[name] = value end
local t = redis.call('TIME')
product.updated_at = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
product.sync_version = ARGV[2]  -- a string: cjson would round a 16-digit number
redis.call('HSET', products, sku, cjson.encode(product))
return cjson.encode({ status = 'applied', product = product })
