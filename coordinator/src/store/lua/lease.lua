-- Queued -> Leased. KEYS[2] ready zset, KEYS[3] leased zset; ARGV[5] lease deadline (unix ms).
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[1])
return 1
