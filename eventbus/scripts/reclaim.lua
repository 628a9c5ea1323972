-- Claim entries idle for at least the lease, with their delivery counts.
-- KEYS[1]  stream key
-- ARGV[1]  group
-- ARGV[2]  consumer (us)
-- ARGV[3]  min idle ms (the lease)
-- ARGV[4]  cursor
-- ARGV[5]  count (our free concurrency slots)
-- Claims with JUSTID (Redis 6.2 answers nil, without the id, for an entry deleted
-- while pending; JUSTID always gives the ids), then for each id: reads the entry,
-- counts this claim as a delivery (JUSTID does not) so the delivery count is the
-- attempt number, kept in Redis across crashes; and acknowledges entries deleted from
-- the stream while pending, which would otherwise be claimed forever.
-- Returns {next cursor, {id, fields, delivery count}...}.
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4],
                     'COUNT', ARGV[5], 'JUSTID')
local out = {r[1]}
for _, id in ipairs(r[2]) do
  local entry = redis.call('XRANGE', KEYS[1], id, id)
  if entry[1] then
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
    local count = 1
    if p[1] then count = p[1][4] + 1 end
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'RETRYCOUNT', count, 'JUSTID')
    out[#out + 1] = {id, entry[1][2], count}
  else
    redis.call('XACK', KEYS[1], ARGV[1], id)
  end
end
return out
