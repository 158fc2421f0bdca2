-- Read only: the jobs ready at ARGV[1] (unix ms), oldest first, at most ARGV[2] of them,
-- each with its state and its sweep, so one round trip gives the lease call everything
-- it decides on. KEYS[1] jobs hash, KEYS[2] ready zset, KEYS[5] owner hash.
-- Returns a flat array: key, state (JSON), sweep, key, state, sweep, ...
local ready = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local found = {}
for _, key in ipairs(ready) do
  local state = redis.call('HGET', KEYS[1], key)
  local sweep = redis.call('HGET', KEYS[5], key)
  if state and sweep then
    found[#found + 1] = key
    found[#found + 1] = state
    found[#found + 1] = sweep
  end
end
return found
