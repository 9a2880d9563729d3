-- Post one chat message: refuse it (chat off, muted, filtered word, slow mode) or append it to
-- the show's bounded history and publish it on the show's channel, in one atomic step.
-- Replies: {'ok', id, ts} | {'chat_off'} | {'muted', until_ms} | {'filtered', word}
--        | {'slow_mode', retry_ms}
local history_key = KEYS[1]         -- stream: the chat history
local settings_key = KEYS[2]        -- hash: enabled, slow_ms, pinned
local words_key = KEYS[3]           -- set: the host's word filter (casefolded)
local mutes_key = KEYS[4]           -- hash: viewer -> muted until (ms; -1 = the whole show)
local slow_key = KEYS[5]            -- string: this viewer's slow-mode marker
local questions_key = KEYS[6]       -- zset: open questions
local request_key = KEYS[7]         -- string: first reply to this request id (idempotency)
local channel = ARGV[1]
local viewer = ARGV[2]
local name = ARGV[3]
local text = ARGV[4]
local folded = ARGV[5]              -- text.casefold(), for the word filter
local question = ARGV[6] == '1'
local maxlen = tonumber(ARGV[7])
local request_ttl_ms = tonumber(ARGV[8])

-- The same request id again (a resend after a reconnect): the first reply, posted once.
local first = redis.call('GET', request_key)
if first then
  local id, ts = string.match(first, '^(%S+) (%d+)$')
  return { 'ok', id, tonumber(ts) }
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

if redis.call('HGET', settings_key, 'enabled') == '0' then return { 'chat_off' } end

local muted = redis.call('HGET', mutes_key, viewer)
if muted then
  local until_ms = tonumber(muted)
  if until_ms == -1 or until_ms > now then return { 'muted', until_ms } end
  redis.call('HDEL', mutes_key, viewer)  -- a timed mute that ran out
end

-- A letter, digit or any non-ASCII byte (UTF-8 of a letter) continues a word.
local function word_byte(b)
  return b ~= nil and (b >= 128 or (b >= 48 and b <= 57) or (b >= 97 and b <= 122)
    or (b >= 65 and b <= 90) or b == 95)
end
local function has_word(hay, word)
  local init = 1
  while true do
    local s, e = string.find(hay, word, init, true)
    if not s then return false end
    if not word_byte(string.byte(hay, s - 1)) and not word_byte(string.byte(hay, e + 1)) then
      return true
    end
    init = s + 1
  end
end
for _, word in ipairs(redis.call('SMEMBERS', words_key)) do
  if has_word(folded, word) then return { 'filtered', word } end
end

local slow_ms = tonumber(redis.call('HGET', settings_key, 'slow_ms') or '0') or 0
if slow_ms > 0 then
  if not redis.call('SET', slow_key, '1', 'PX', slow_ms, 'NX') then
    return { 'slow_mode', math.max(redis.call('PTTL', slow_key), 1) }
  end
end

local id = redis.call('XADD', history_key, 'MAXLEN', maxlen, '*',
  'viewer', viewer, 'name', name, 'text', text, 'q', question and '1' or '0', 'ts', now)
if question then redis.call('ZADD', questions_key, now, id) end
redis.call('PUBLISH', channel, cjson.encode({
  type = 'chat', ts = now,
  data = { id = id, viewer = viewer, name = name, text = text, question = question, ts = now },
}))
redis.call('SET', request_key, id .. ' ' .. now, 'PX', request_ttl_ms)
return { 'ok', id, now }
