-- Release every expired hold of one drop (up to ARGV[4] of them) and apply time-driven
-- transitions. Safe with many reapers at once: a hold leaves the holds set exactly once.
-- Returns {released, next_due_ms, active holds left}.
local batch = tonumber(ARGV[4])

local d = load_drop()
if not d then return {0, 0, 0} end
advance(d)
local released = reap(d, batch)
return {released, next_due(d), redis.call('ZCARD', K.holds)}
