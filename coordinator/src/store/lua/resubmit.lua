-- DeadLettered, Cancelled or Succeeded (its result refused on reuse) -> Queued, for a
-- later sweep that needs the job.
-- KEYS[2] ready zset, KEYS[4] dead-letter hash, KEYS[5] owner hash;
-- ARGV[5] not before (unix ms), ARGV[6] the sweep that now owns the job.
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
redis.call('HSET', KEYS[5], ARGV[1], ARGV[6])
return 1
