-- The guard every transition starts with: the job must still be in exactly the state
-- the coordinator read (same attempt, same phase, same deadline) when it decided the
-- transition with JobState::apply. Otherwise nothing is written and the caller re-reads.
-- KEYS[1] jobs hash; ARGV[1] job key, ARGV[2] expected state (JSON),
-- ARGV[3] expected attempt, ARGV[4] new state (JSON).
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current ~= ARGV[2] then
  return 0
end
if cjson.decode(current)['attempts_made'] ~= tonumber(ARGV[3]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
