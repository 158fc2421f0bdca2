-- Queued -> Leased. KEYS[2] ready zset, KEYS[3] leased zset; ARGV[5] due time (unix ms:
-- the earlier of the lease expiry and the hard deadline).
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[1])
return 1
