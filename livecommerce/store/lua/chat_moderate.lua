-- One moderation step on a chat message, atomic with its broadcast on the show's channel.
--   delete: remove it from the history and the open questions (and unpin it)
--   pin:    pin it (everyone sees it next to the product); replaces the previous pin
--   answer: close the question (and unpin it)
--   unpin:  clear the pin (ARGV[3] ignored)
-- Replies: {'ok', json_of_the_message_or_empty} | {'unknown_message'}
local history_key = KEYS[1]         -- stream: the chat history
local settings_key = KEYS[2]        -- hash: enabled, slow_ms, pinned
local questions_key = KEYS[3]       -- zset: open questions
local channel = ARGV[1]
local action = ARGV[2]
local id = ARGV[3]

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function publish(kind, data)
  redis.call('PUBLISH', channel, cjson.encode({ type = kind, ts = now, data = data }))
end

local function pinned_id()
  local raw = redis.call('HGET', settings_key, 'pinned')
  if not raw then return nil end
  return cjson.decode(raw).id
end

local function unpin_if(message_id)
  if message_id == nil or pinned_id() == message_id then
    if redis.call('HDEL', settings_key, 'pinned') == 1 then
      publish('chat_pinned', { message = cjson.null })
    end
  end
end

if action == 'unpin' then
  unpin_if(nil)
  return { 'ok', '' }
end

local entries = redis.call('XRANGE', history_key, id, id)
local open_question = redis.call('ZSCORE', questions_key, id)
if #entries == 0 and not open_question then return { 'unknown_message' } end

if action == 'delete' then
  redis.call('XDEL', history_key, id)
  redis.call('ZREM', questions_key, id)
  publish('chat_deleted', { id = id })
  unpin_if(id)
  return { 'ok', '' }
end

if #entries == 0 then return { 'unknown_message' } end
local f = {}
local fields = entries[1][2]
for i = 1, #fields, 2 do f[fields[i]] = fields[i + 1] end
local message = { id = id, viewer = f.viewer, name = f.name, text = f.text,
                  question = f.q == '1', ts = tonumber(f.ts) }

if action == 'pin' then
  local json = cjson.encode(message)
  redis.call('HSET', settings_key, 'pinned', json)
  publish('chat_pinned', { message = message })
  return { 'ok', json }
end

if action == 'answer' then
  if redis.call('ZREM', questions_key, id) == 0 and not message.question then
    return { 'unknown_message' }
  end
  publish('question_answered', { id = id })
  unpin_if(id)
  return { 'ok', cjson.encode(message) }
end

return redis.error_reply('chat_moderate: unknown action ' .. action)
