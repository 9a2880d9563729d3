-- Take `n` consecutive tickets of a drop's waiting line (arrival order across every gateway).
-- (Standalone: the drop helpers' KEYS binding does not apply here.)
-- Returns { last ticket taken, tickets answered so far }.
local line_key = KEYS[1]
local n = tonumber(ARGV[1])

if not n or n < 1 or n ~= math.floor(n) then return redis.error_reply('bad ticket count') end
local last = redis.call('HINCRBY', line_key, 'next', n)
local done = tonumber(redis.call('HGET', line_key, 'done') or '0')
return { last, done }
