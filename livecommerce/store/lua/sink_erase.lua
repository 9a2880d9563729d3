-- The reference sink, one verified order.erased webhook: remember the order's pseudonym and
-- rewrite the record of the order if the sink has it (an order that arrives later is recorded
-- pseudonymised by sink_record.lua). Idempotent. Standalone; single Redis/Valkey.
local received_key = KEYS[1]        -- P:sink:received  webhook-id -> record JSON
local erased_key = KEYS[2]          -- P:sink:erased    order id -> pseudonym
local stats_key = KEYS[3]           -- P:sink:stats     counters
local order_msg_id = ARGV[1]        -- the webhook-id of the order itself
local order_id = ARGV[2]
local pseudonym = ARGV[3]
local erased_ref = ARGV[4]

redis.call('HSET', erased_key, order_id, pseudonym)
redis.call('HINCRBY', stats_key, 'erasures', 1)
local raw = redis.call('HGET', received_key, order_msg_id)
if not raw then return 'absent' end
local rec = cjson.decode(raw)
if type(rec.order) ~= 'table' or rec.order.viewer == pseudonym then return 'same' end
rec.order.viewer = pseudonym
rec.order.payment_reference = erased_ref
redis.call('HSET', received_key, order_msg_id, cjson.encode(rec))
return 'rewritten'
