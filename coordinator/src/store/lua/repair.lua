-- Finds and fixes index entries that disagree with the job states, after a partial loss
-- (a deleted set, an evicted key): a queued job must be in the ready set at its
-- "not before", a leased job in the leased set at its due time (the earlier of its
-- lease expiry and its hard deadline), a dead-lettered job in the dead hash, and no set
-- may name a job the jobs hash does not hold. Fields starting with '~' are markers.
-- KEYS[1] jobs, [2] ready, [3] leased, [4] dead, [5] owner.
-- Returns {fixes, job without an owner, ...}.
local fixed = 0
local unowned = {}
local jobs = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local key = all[i]
  if string.sub(key, 1, 1) ~= '~' then
    jobs[key] = true
    local state = cjson.decode(all[i + 1])
    local phase = state['phase']
    local name = phase['phase']
    local ready_at, due_at = nil, nil
    if name == 'queued' then
      ready_at = phase['not_before']
    elseif name == 'leased' then
      due_at = phase['expires_at']
      local deadline = phase['deadline']
      if type(deadline) == 'number' and deadline < due_at then
        due_at = deadline
      end
    end
    local in_ready = redis.call('ZSCORE', KEYS[2], key)
    if ready_at and not in_ready then
      redis.call('ZADD', KEYS[2], string.format('%d', ready_at), key)
      fixed = fixed + 1
    elseif in_ready and not ready_at then
      redis.call('ZREM', KEYS[2], key)
      fixed = fixed + 1
    end
    local in_leased = redis.call('ZSCORE', KEYS[3], key)
    if due_at and not in_leased then
      redis.call('ZADD', KEYS[3], string.format('%d', due_at), key)
      fixed = fixed + 1
    elseif in_leased and not due_at then
      redis.call('ZREM', KEYS[3], key)
      fixed = fixed + 1
    end
    local in_dead = redis.call('HEXISTS', KEYS[4], key) == 1
    if name == 'dead_lettered' and not in_dead then
      local last_error = state['last_error']
      if type(last_error) ~= 'string' then
        last_error = ''
      end
      redis.call('HSET', KEYS[4], key, last_error)
      fixed = fixed + 1
    elseif in_dead and name ~= 'dead_lettered' then
      redis.call('HDEL', KEYS[4], key)
      fixed = fixed + 1
    end
    if redis.call('HEXISTS', KEYS[5], key) == 0 then
      unowned[#unowned + 1] = key
    end
  end
end
for _, set in ipairs({KEYS[2], KEYS[3]}) do
  for _, key in ipairs(redis.call('ZRANGE', set, 0, -1)) do
    if not jobs[key] then
      redis.call('ZREM', set, key)
      fixed = fixed + 1
    end
  end
end
for _, key in ipairs(redis.call('HKEYS', KEYS[4])) do
  if not jobs[key] then
    redis.call('HDEL', KEYS[4], key)
    fixed = fixed + 1
  end
end
local answer = {fixed}
for _, key in ipairs(unowned) do
  answer[#answer + 1] = key
end
return answer
