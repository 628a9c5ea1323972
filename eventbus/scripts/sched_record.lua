-- Record what a scheduler replica did with a tick (state shared by all replicas).
-- KEYS[1]  the schedule's state hash (<prefix>:sched:<name>)
-- ARGV[1]  the tick (ISO 8601 UTC: strings compare like times)
-- ARGV[2]  now (ISO 8601 UTC)
-- ARGV[3]  the next tick (ISO 8601 UTC)
-- ARGV[4]  events written for this tick by this replica
-- ARGV[5]  publishes suppressed as duplicates (another replica wrote the tick)
-- ARGV[6]  1 when the tick was skipped by the misfire policy
-- ARGV[7]  the cron spec, ARGV[8] its time zone (for `eventbus schedules`)
-- ARGV[9]  an error message when the tick failed (its function or a publish), else ''
-- next_tick only moves forward, unless the spec or zone changed.
local last = redis.call('HGET', KEYS[1], 'last_tick')
if not last or last < ARGV[1] then
  redis.call('HSET', KEYS[1], 'last_tick', ARGV[1])
end
local nxt = redis.call('HGET', KEYS[1], 'next_tick')
local changed = redis.call('HGET', KEYS[1], 'spec') ~= ARGV[7]
  or redis.call('HGET', KEYS[1], 'tz') ~= ARGV[8]
if not nxt or nxt < ARGV[3] or changed then
  redis.call('HSET', KEYS[1], 'next_tick', ARGV[3])
end
redis.call('HSET', KEYS[1], 'spec', ARGV[7], 'tz', ARGV[8])
if tonumber(ARGV[4]) > 0 then
  redis.call('HSET', KEYS[1], 'last_fired_at', ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'fires', 1)
  redis.call('HINCRBY', KEYS[1], 'events', ARGV[4])
end
if tonumber(ARGV[5]) > 0 then
  redis.call('HINCRBY', KEYS[1], 'duplicates', ARGV[5])
end
if tonumber(ARGV[6]) > 0 then
  redis.call('HINCRBY', KEYS[1], 'skipped', 1)
end
if ARGV[9] ~= '' then
  redis.call('HINCRBY', KEYS[1], 'errors', 1)
  redis.call('HSET', KEYS[1], 'last_error', ARGV[9], 'last_error_at', ARGV[2])
end
return 1
