-- Claim entries idle for at least the lease, with their delivery counts.
-- KEYS[1]  stream key
-- ARGV[1]  group
-- ARGV[2]  consumer (us)
-- ARGV[3]  min idle ms (the lease)
-- ARGV[4]  cursor
-- ARGV[5]  count (our free concurrency slots)
-- XAUTOCLAIM increments each claimed entry's delivery count, so the count
-- read back here is the attempt number, kept in Redis across crashes.
-- Entries deleted from the stream while pending are acknowledged (Redis 7
-- drops them from the PEL itself; 6.2 returns them with nil fields).
-- Returns {next cursor, {id, fields, delivery count}...}.
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4],
                     'COUNT', ARGV[5])
local out = {r[1]}
for _, entry in ipairs(r[2]) do
  if type(entry) == 'table' and entry[2] then
    local id = entry[1]
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
    local count = 1
    if p[1] then count = p[1][4] end
    out[#out + 1] = {id, entry[2], count}
  elseif type(entry) == 'table' then
    redis.call('XACK', KEYS[1], ARGV[1], entry[1])
  end
end
return out
