-- Adds jobs that are not in the store yet. KEYS[1] jobs hash, KEYS[2] ready zset,
-- KEYS[5] owner hash (job -> sweep); ARGV[1] not before (unix ms), ARGV[2] sweep id,
-- then (job key, initial state JSON) pairs. Returns how many were new.
local added = 0
for i = 3, #ARGV, 2 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('HSET', KEYS[5], ARGV[i], ARGV[2])
    redis.call('ZADD', KEYS[2], ARGV[1], ARGV[i])
    added = added + 1
  end
end
return added
