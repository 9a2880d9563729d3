-- The reference sink, one verified webhook: apply the injected failure mode, then record the
-- order once per webhook-id and count it -- one round trip instead of three.
-- (Standalone: the drop helpers' KEYS binding does not apply here. The sink's keys carry no
-- common hash tag: this runs on a single Redis/Valkey, not on a cluster.)
local received_key = KEYS[1]        -- P:sink:received  webhook-id -> record JSON
local arrivals_key = KEYS[2]        -- P:sink:arrivals  webhook-ids, first arrival order
local stats_key = KEYS[3]           -- P:sink:stats     counters
local fail_key = KEYS[4]            -- P:sink:fail      injected failure mode, if any
local msg_id = ARGV[1]
local record = ARGV[2]              -- '' when the body is not an order.confirmed event

-- Reply: {outcome, mode, delay_s, retry_after}; outcome is 'fail' (answer with the injected
-- failure, nothing recorded), 'bad' (rejected body), 'new' or 'dup'; mode is '' or the
-- injected mode ('slow' comes with new/dup/bad: the order was recorded, answer late).

local f = redis.call('HMGET', fail_key, 'mode', 'match', 'times', 'delay_s', 'retry_after')
local mode = f[1]
local delay_s = f[4] or '30'
local retry_after = f[5] or ''
if mode then
  local match = f[2] or ''
  if match ~= '' and not string.find(msg_id, match, 1, true) then
    mode = false
  elseif (tonumber(f[3]) or 0) > 0 and redis.call('HINCRBY', fail_key, 'left', -1) < 0 then
    mode = false                    -- counted failures used up: behave normally
  end
end
if mode then
  redis.call('HINCRBY', stats_key, 'failed', 1)
  if mode ~= 'slow' then return {'fail', mode, delay_s, retry_after} end
else
  mode = ''
end

if record == '' then
  redis.call('HINCRBY', stats_key, 'rejected', 1)
  return {'bad', mode, delay_s, retry_after}
end
redis.call('HINCRBY', stats_key, 'requests', 1)
if redis.call('HSETNX', received_key, msg_id, record) == 1 then
  redis.call('RPUSH', arrivals_key, msg_id)
  redis.call('HINCRBY', stats_key, 'accepted', 1)
  return {'new', mode, delay_s, retry_after}
end
redis.call('HINCRBY', stats_key, 'duplicates', 1)
return {'dup', mode, delay_s, retry_after}
