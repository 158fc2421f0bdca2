-- Leased -> Leased with a later expiry. KEYS[3] leased zset; ARGV[5] new due time.
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[1])
return 1
