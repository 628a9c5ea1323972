-- Extend the lease of entries this consumer still owns.
-- KEYS[1]  stream key
-- ARGV[1]  group
-- ARGV[2]  consumer (us)
-- ARGV[3..] stream ids we believe we hold
-- Resets the idle clock (XCLAIM 0 ... JUSTID, which does not count as a delivery)
-- of each id whose pending entry still names us as owner, so a stalled worker
-- never steals back an entry someone else reclaimed.
-- Returns the ids we no longer own (reclaimed by another consumer, or acked/gone).
local mine, lost = {}, {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    mine[#mine + 1] = ARGV[i]
  else
    lost[#lost + 1] = ARGV[i]
  end
end
local chunk = 500
for start = 1, #mine, chunk do
  local args = {'XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0}
  for j = start, math.min(start + chunk - 1, #mine) do
    args[#args + 1] = mine[j]
  end
  args[#args + 1] = 'JUSTID'
  redis.call(unpack(args))
end
return lost
