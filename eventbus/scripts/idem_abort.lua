-- Give up a claim after a failure, if it is still ours (another delivery may retry).
-- KEYS[1]  marker
-- ARGV[1]  our token
-- Returns 1 when deleted.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
