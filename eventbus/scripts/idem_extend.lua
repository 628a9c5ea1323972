-- Extend the claims we still hold, with the entries' leases.
-- KEYS[1..] markers
-- ARGV[1]   lease in ms
-- ARGV[2..] our token for each marker
-- Returns how many were still ours.
local ours = 0
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i + 1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[1])
    ours = ours + 1
  end
end
return ours
