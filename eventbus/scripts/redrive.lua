-- Move a dead letter back to its stream, exactly once (eventbus dlq redrive).
-- KEYS[1]  stream key
-- KEYS[2]  dead-letter stream key (same hash slot)
-- ARGV[1]  the dead letter's id
-- ARGV[2..] the entry's field, value pairs to write back
-- The XDEL decides: a dead letter already moved (a concurrent or repeated redrive)
-- deletes nothing, and nothing is written.
-- Returns the new entry's id, or false when the dead letter was gone.
if redis.call('XDEL', KEYS[2], ARGV[1]) == 0 then
  return false
end
local args = {'XADD', KEYS[1], '*'}
for i = 2, #ARGV do
  args[#args + 1] = ARGV[i]
end
return redis.call(unpack(args))
