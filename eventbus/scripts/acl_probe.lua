-- Which of these commands may the current Redis user run? (A worker asks at start, so a
-- missing ACL permission fails the start with one message, not a delivery at a time.)
-- KEYS     unused (the commands name their keys)
-- ARGV     for each command: its argument count, then its arguments
-- Returns the 1-based indexes of the commands the user may not run, or {-1} when the
-- server cannot tell (before Redis 7.0 there is no redis.acl_check_cmd).
if not redis.acl_check_cmd then
  return {-1}
end
local denied, i, c = {}, 1, 0
while i <= #ARGV do
  local argc, command = tonumber(ARGV[i]), {}
  for j = 1, argc do
    command[j] = ARGV[i + j]
  end
  c = c + 1
  local ok, allowed = pcall(redis.acl_check_cmd, unpack(command))
  if ok and not allowed then
    denied[#denied + 1] = c
  end
  i = i + argc + 1
end
return denied
