-- Create, start or end a show, appending its event to the show's log in the same step.
-- (Standalone: the drop helpers' KEYS binding does not apply here.)
local show_key = KEYS[1]
local events_key = KEYS[2]
local channel = ARGV[1]
local maxlen = tonumber(ARGV[2])
local action = ARGV[3]              -- 'create', 'start', 'end'
local fields = cjson.decode(ARGV[4])

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now_s = string.format('%d', now)

local function show_view()
  local flat = redis.call('HGETALL', show_key)
  local v = {}
  for i = 1, #flat, 2 do v[flat[i]] = flat[i + 1] end
  return v
end

local function emit(etype, data)
  local json = cjson.encode(data)
  local id = redis.call('XADD', events_key, 'MAXLEN', '~', maxlen, '*',
                        'type', etype, 'data', json, 'ts', now_s)
  redis.call('PUBLISH', channel,
    '{"id":"' .. id .. '","type":"' .. etype .. '","ts":' .. now_s .. ',"data":' .. json .. '}')
end

local function refuse(reason)
  return cjson.encode({ ok = false, reason = reason, now = now })
end

local state = redis.call('HGET', show_key, 'state')
if action == 'create' then
  if state then return refuse('show_exists') end
  redis.call('HSET', show_key, 'id', fields.id, 'title', fields.title, 'host', fields.host,
             'video_url', fields.video_url, 'state', 'scheduled', 'created_at', now_s,
             'started_at', '', 'ended_at', '')
  emit('show_created', show_view())
elseif action == 'start' then
  if not state then return refuse('unknown_show') end
  if state ~= 'scheduled' then return refuse('show_' .. state) end
  redis.call('HSET', show_key, 'state', 'live', 'started_at', now_s)
  emit('show_started', show_view())
elseif action == 'end' then
  if not state then return refuse('unknown_show') end
  if state == 'ended' then return refuse('show_ended') end
  redis.call('HSET', show_key, 'state', 'ended', 'ended_at', now_s)
  emit('show_ended', show_view())
elseif action == 'update' then
  if not state then return refuse('unknown_show') end
  for k, v in pairs(fields) do redis.call('HSET', show_key, k, v) end
  emit('show_updated', show_view())
else
  return refuse('invalid_action')
end
return cjson.encode({ ok = true, show = show_view(), now = now })
