-- Move a dead letter back to its stream, exactly once (eventbus dlq redrive).
-- KEYS[1]  stream key
-- KEYS[2]  dead-letter stream key (same hash slot)
-- ARGV[1]  the dead letter's id
-- ARGV[2..] the entry's field, value pairs to write back (at most about 8,000 values:
--          Lua's unpack() limit; the caller refuses larger entries)
-- The letter is checked first, written back, and deleted last: a letter already moved
-- (a concurrent or repeated redrive) writes nothing, and a write that fails (a key of
-- the wrong type, OOM) leaves the letter where it was: Redis does not roll a script back.
-- Returns the new entry's id, or false when the dead letter was gone.
if not redis.call('XRANGE', KEYS[2], ARGV[1], ARGV[1])[1] then
  return false
end
local args = {'XADD', KEYS[1], '*'}
for i = 2, #ARGV do
  args[#args + 1] = ARGV[i]
end
local id = redis.call(unpack(args))
redis.call('XDEL', KEYS[2], ARGV[1])
return id
