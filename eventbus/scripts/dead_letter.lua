-- Move one entry to the dead-letter stream and acknowledge it, atomically.
-- KEYS[1]  stream key
-- KEYS[2]  dead-letter stream key
-- ARGV[1]  group
-- ARGV[2]  consumer (us)
-- ARGV[3]  stream id
-- ARGV[4]  dead-letter stream MAXLEN (approximate); 0 for no cap
-- ARGV[5..] field, value pairs of the dead-letter entry (bounded by the caller: Lua's
--          unpack() takes about 8,000 values)
-- Does nothing when the entry is no longer ours (someone reclaimed it).
-- Returns {dead-letter entry id, letters the cap cut}, or false when not ours.
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if not p[1] or p[1][2] ~= ARGV[2] then
  return false
end
local args = {'XADD', KEYS[2]}
if tonumber(ARGV[4]) > 0 then
  args[#args + 1] = 'MAXLEN'
  args[#args + 1] = '~'
  args[#args + 1] = ARGV[4]
end
args[#args + 1] = '*'
for i = 5, #ARGV do
  args[#args + 1] = ARGV[i]
end
local before = redis.call('XLEN', KEYS[2])
local dlq_id = redis.call(unpack(args))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
return {dlq_id, before + 1 - redis.call('XLEN', KEYS[2])}
