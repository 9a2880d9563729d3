-- Read hashes and sets of one slot in one atomic step (the pool audit's snapshot; works on a
-- cluster, where redis-py's MULTI pipelines do not). KEYS: the keys to read, one slot.
-- Returns one flat array per key: HGETALL for a hash, SMEMBERS for a set, {} when missing.
local out = {}
for i, key in ipairs(KEYS) do
  local kind = redis.call('TYPE', key).ok
  if kind == 'hash' then
    out[i] = redis.call('HGETALL', key)
  elseif kind == 'set' then
    out[i] = redis.call('SMEMBERS', key)
  else
    out[i] = {}
  end
end
return out
