-- The guard every transition starts with: the job must still be in exactly the state
-- the coordinator read (same attempt, same phase, same deadline) when it decided the
-- transition with JobState::apply. Otherwise nothing is written and the caller re-reads.
-- A lease also needs the store's epoch marker to be the epoch the lease is granted in
-- (ARGV[7]); otherwise -1: the store lost state, or another coordinator started an epoch.
-- KEYS[1] jobs hash; ARGV[1] job key, ARGV[2] expected state (JSON),
-- ARGV[3] expected attempt, ARGV[4] new state (JSON), ARGV[7] epoch or ''.
if ARGV[7] ~= '' and redis.call('HGET', KEYS[1], '~epoch') ~= ARGV[7] then
  return -1
end
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current ~= ARGV[2] then
  return 0
end
if cjson.decode(current)['attempts_made'] ~= tonumber(ARGV[3]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
