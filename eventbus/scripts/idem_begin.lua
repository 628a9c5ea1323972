-- Begin an idempotent delivery: claim the marker of its idempotency key.
-- KEYS[1]  marker (<prefix>:{<stream>}:idem:<group>:<key>)
-- ARGV[1]  our token (consumer and stream id)
-- ARGV[2]  lease in ms (the marker expires with the lease if we die)
-- Returns 'acquired' (absent, or already ours: refreshed), 'done' (handled before:
-- a duplicate) or 'busy' (another delivery of the same key is in flight).
local v = redis.call('GET', KEYS[1])
if not v or v == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 'acquired'
end
if v == 'done' then
  return 'done'
end
return 'busy'
