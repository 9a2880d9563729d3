-- Erase one viewer from one show's chat, in one atomic step (safe during a live show: a post or
-- a moderation step runs before or after it, never in between). Standalone script.
--   * history: each of the viewer's messages is deleted (XDEL), leaves the open questions and
--     the pin, and a `chat_deleted` (and `chat_pinned` null) push tells live viewers to drop it;
--   * a pinned message of the viewer that already left the history is unpinned too;
--   * mute: moves to the pseudonym (same "until"); moderator seat, slow-mode marker and the
--     request-id records of the viewer's posts: deleted.
-- A second run finds nothing under the viewer id and changes (and pushes) nothing.
-- Reply: JSON {chat_messages = n, chat_records = n}.
local history_key = KEYS[1]         -- B:chat            stream: the chat history
local settings_key = KEYS[2]        -- B:chat:settings   hash: enabled, slow_ms, pinned
local mutes_key = KEYS[3]           -- B:chat:mutes      hash: viewer -> muted until
local mods_key = KEYS[4]            -- B:chat:mods       set: moderators
local questions_key = KEYS[5]       -- B:chat:questions  zset: open questions
local slow_key = KEYS[6]            -- B:chat:slow:<viewer>
local first_request = 7             -- KEYS[7 ..]: B:chat:req:<viewer>:<rid> the caller found
local channel = ARGV[1]
local viewer = ARGV[2]
local pseudonym = ARGV[3]

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function publish(kind, data)
  redis.call('PUBLISH', channel, cjson.encode({ type = kind, ts = now, data = data }))
end

local counts = { chat_messages = 0, chat_records = 0 }

local pinned = nil
local raw_pin = redis.call('HGET', settings_key, 'pinned')
if raw_pin then pinned = cjson.decode(raw_pin) end
local function unpin()
  redis.call('HDEL', settings_key, 'pinned')
  publish('chat_pinned', { message = cjson.null })
  pinned = nil
end

-- The history is bounded by count (MAXLEN), so reading it whole stays small.
for _, e in ipairs(redis.call('XRANGE', history_key, '-', '+')) do
  local id, flat = e[1], e[2]
  local owner = nil
  for i = 1, #flat, 2 do
    if flat[i] == 'viewer' then owner = flat[i + 1] end
  end
  if owner == viewer then
    redis.call('XDEL', history_key, id)
    redis.call('ZREM', questions_key, id)
    publish('chat_deleted', { id = id })
    if pinned and pinned.id == id then unpin() end
    counts.chat_messages = counts.chat_messages + 1
  end
end
if pinned and pinned.viewer == viewer then
  unpin()
  counts.chat_records = counts.chat_records + 1
end

local muted = redis.call('HGET', mutes_key, viewer)
if muted then
  redis.call('HDEL', mutes_key, viewer)
  redis.call('HSET', mutes_key, pseudonym, muted)
  counts.chat_records = counts.chat_records + 1
end
counts.chat_records = counts.chat_records + redis.call('SREM', mods_key, viewer)
counts.chat_records = counts.chat_records + redis.call('DEL', slow_key)
for i = first_request, #KEYS do
  counts.chat_records = counts.chat_records + redis.call('DEL', KEYS[i])
end
return cjson.encode(counts)
