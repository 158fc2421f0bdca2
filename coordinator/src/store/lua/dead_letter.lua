-- Queued or Leased -> DeadLettered. KEYS[2] ready, KEYS[3] leased, KEYS[4] dead-letter hash;
-- ARGV[5] the last error.
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[5])
return 1
