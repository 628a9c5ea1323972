-- Release entries we own back to the pending list, claimable after a delay.
-- KEYS[1]  stream key
-- ARGV[1]  group
-- ARGV[2]  consumer (us)
-- ARGV[3]  idle ms to set: lease - backoff (the entry becomes claimable by
--          XAUTOCLAIM <lease> after `backoff`); lease for "claimable at once"
-- ARGV[4..] pairs: stream id, retry count to set (-1 keeps the delivery count)
-- Only entries still owned by us are touched. Returns how many were released.
local released = 0
for i = 4, #ARGV, 2 do
  local id = ARGV[i]
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  if p[1] and p[1][2] == ARGV[2] then
    local retry = tonumber(ARGV[i + 1])
    if retry >= 0 then
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id,
                 'IDLE', ARGV[3], 'RETRYCOUNT', retry, 'JUSTID')
    else
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'IDLE', ARGV[3], 'JUSTID')
    end
    released = released + 1
  end
end
return released
