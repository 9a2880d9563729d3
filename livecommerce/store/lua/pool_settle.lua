-- Step 3 of an allocation: forget the intent; a refused transfer gives its units back.
-- KEYS[1] ledger   KEYS[2] xfer hash
-- ARGV[1] transfer id   ARGV[2] outcome of step 2: 'applied' or a refusal reason
-- Returns {"ok":true,"settled":bool,"ledger":{...}}.
local xfer = KEYS[2]
local tid = ARGV[1]
local outcome = ARGV[2]

local l = load_ledger()
local raw = redis.call('HGET', xfer, tid)
if not l or not raw then return answer({ ok = true, settled = false }) end
if outcome ~= 'applied' then
  local units = tonumber(cjson.decode(raw).units)
  l.out = l.out - units
  give_back(l, units)
  save_ledger(l)
end
redis.call('HDEL', xfer, tid)
return answer({ ok = true, settled = true, ledger = ledger_view(l) })
