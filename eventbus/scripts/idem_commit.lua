-- Finish successful idempotent deliveries: mark each key done and acknowledge its entry,
-- atomically (one call for a whole batch).
-- KEYS[1]     stream key
-- KEYS[2..]   markers, one per entry
-- ARGV[1]     group
-- ARGV[2]     done TTL in ms
-- ARGV[3..]   the stream id of each marker's entry, in the same order
-- The marker becomes 'done' even if our claim had lapsed: the handler's effect
-- happened, so later deliveries of the key must skip it.
-- Returns the number of entries acknowledged.
local acked = 0
for i = 2, #KEYS do
  redis.call('SET', KEYS[i], 'done', 'PX', ARGV[2])
  acked = acked + redis.call('XACK', KEYS[1], ARGV[1], ARGV[i + 1])
end
return acked
