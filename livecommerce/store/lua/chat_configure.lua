-- Change a show's chat rules and tell its viewers the rules now in force, in one step.
-- An empty ARGV means "leave as it is". Reply: {enabled (0/1), slow_ms}
local settings_key = KEYS[1]        -- hash: enabled, slow_ms, pinned
local words_key = KEYS[2]           -- set: the host's word filter
local channel = ARGV[1]
local enabled = ARGV[2]             -- '1', '0' or ''
local slow_ms = ARGV[3]             -- integer ms or ''
local replace_words = ARGV[4] == '1'
-- ARGV[5..]: the new word filter when replace_words

if enabled ~= '' then redis.call('HSET', settings_key, 'enabled', enabled) end
if slow_ms ~= '' then redis.call('HSET', settings_key, 'slow_ms', slow_ms) end
if replace_words then
  redis.call('DEL', words_key)
  if #ARGV > 4 then redis.call('SADD', words_key, unpack(ARGV, 5)) end
end
local now_enabled = redis.call('HGET', settings_key, 'enabled') ~= '0'
local now_slow = tonumber(redis.call('HGET', settings_key, 'slow_ms') or '0') or 0
local t = redis.call('TIME')
redis.call('PUBLISH', channel, cjson.encode({
  type = 'chat_settings', ts = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000),
  data = { enabled = now_enabled, slow_mode_s = now_slow / 1000 },
}))
return { now_enabled and 1 or 0, now_slow }
