-- One stream's queue figures for a metrics scrape, in one call (eventbus.metrics).
-- KEYS[1]  stream key
-- KEYS[2]  its dead-letter stream key (same hash slot)
-- Returns {length, dlq length, {group, consumers, pending, lag or -1, oldest pending id
-- or ""}, ...}. Lag is -1 where Redis does not know it (before 7.0; after some deletions).
local out = {redis.call('XLEN', KEYS[1]), redis.call('XLEN', KEYS[2])}
if redis.call('EXISTS', KEYS[1]) == 0 then
  return out
end
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local f = {}
  for i = 1, #g, 2 do
    f[g[i]] = g[i + 1]
  end
  local oldest = ''
  if f['pending'] > 0 then
    oldest = redis.call('XPENDING', KEYS[1], f['name'])[2]
  end
  local lag = f['lag']
  if not lag then
    lag = -1
  end
  out[#out + 1] = {f['name'], f['consumers'], f['pending'], lag, oldest}
end
return out
