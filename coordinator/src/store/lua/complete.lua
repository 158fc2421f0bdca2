-- Leased -> Succeeded. KEYS[3] leased zset.
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
