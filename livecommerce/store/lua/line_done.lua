-- Count `n` tickets of a drop's line as answered and tell every gateway how far the line moved.
-- (Standalone: the drop helpers' KEYS binding does not apply here.)
-- Returns the tickets answered so far.
local line_key = KEYS[1]
local channel = ARGV[1]
local drop = ARGV[2]
local n = tonumber(ARGV[3])

if not n or n < 1 or n ~= math.floor(n) then return redis.error_reply('bad done count') end
local done = redis.call('HINCRBY', line_key, 'done', n)
local taken = tonumber(redis.call('HGET', line_key, 'next') or '0')
redis.call('PUBLISH', channel, '{"type":"line","data":{"drop":"' .. drop .. '","done":'
  .. string.format('%d', done) .. ',"next":' .. string.format('%d', taken) .. '}}')
return done
