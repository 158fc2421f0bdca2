-- Leased -> Queued (retryable failure, expired lease, preemption).
-- KEYS[2] ready zset, KEYS[3] leased zset; ARGV[5] not before (unix ms).
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
return 1
