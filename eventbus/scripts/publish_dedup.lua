-- Publish an event once per key per window (the idempotent producer).
-- KEYS[1]  stream key
-- KEYS[2]  dedup marker key (<prefix>:{<stream>}:pub:<key>), same hash slot
-- ARGV[1]  window in milliseconds
-- ARGV[2]  approximate MAXLEN of the stream; 0 for no cap
-- ARGV[3..] the entry's field, value pairs
-- A repeat within the window writes nothing and returns the first entry's id.
-- Returns {stream id, 1 if a duplicate else 0}.
local first = redis.call('GET', KEYS[2])
if first then
  return {first, 1}
end
local args = {'XADD', KEYS[1]}
if tonumber(ARGV[2]) > 0 then
  args[#args + 1] = 'MAXLEN'
  args[#args + 1] = '~'
  args[#args + 1] = ARGV[2]
end
args[#args + 1] = '*'
for i = 3, #ARGV do
  args[#args + 1] = ARGV[i]
end
local id = redis.call(unpack(args))
redis.call('SET', KEYS[2], id, 'PX', ARGV[1])
return {id, 0}
