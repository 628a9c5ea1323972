-- Mark idempotency keys done (the store is a separate Redis: no XACK here).
-- KEYS[1..] markers
-- ARGV[1]   done TTL in ms
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], 'done', 'PX', ARGV[1])
end
return #KEYS
