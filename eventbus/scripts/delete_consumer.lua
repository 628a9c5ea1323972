-- Delete a consumer, but only when it owns no pending entries
-- (XGROUP DELCONSUMER would silently drop them).
-- KEYS[1]  stream key
-- ARGV[1]  group
-- ARGV[2]  consumer
-- Returns 1 when deleted, 0 when it still owns entries.
local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if p[1] then
  return 0
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
