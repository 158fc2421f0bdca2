-- Leased (or, for an orphaned lease taken back, Queued) -> Succeeded.
-- KEYS[2] ready zset, KEYS[3] leased zset.
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
