-- Commit an idempotent handler's transaction: check the claim, run the writes the handler
-- queued, mark the key done and acknowledge the entry, all or nothing visible to others.
-- One script rather than WATCH + MULTI/EXEC: our own lease keeper refreshes the marker
-- (PEXPIRE) while the handler runs, and Redis counts that as a change of a WATCHed key,
-- so a WATCHed commit could be aborted by its own worker's heartbeat.
-- KEYS[1]  stream key
-- KEYS[2]  marker (<prefix>:{<stream>}:idem:<group>:<key>)
-- ARGV[1]  group
-- ARGV[2]  stream id of the entry
-- ARGV[3]  our token (for a handler that ran unguarded, because the store was unreachable
--          when it began and on_store_error="fail_open", the token its begin tried: the
--          writes apply if the key is free or, the begin having run after all, ours)
-- ARGV[4]  done TTL in ms
-- ARGV[5]  number of queued commands
-- ARGV[6..] for each command: its argument count, then its arguments
-- Before anything is written, every command is checked: its name and arity (COMMAND
-- INFO, when the user may run it), that scripts may run it, and (Redis >= 7.0,
-- redis.acl_check_cmd) the user's permission: an unknown command, a wrong number of arguments or a missing permission
-- fails the whole commit with nothing applied, as MULTI/EXEC's queueing would.
-- Returns {'applied', <error of each command that failed while running>...} (Redis does
-- not roll back a command that fails at run time, inside EXEC or a script alike);
-- {'done'}: the key was already handled (the entry is acknowledged, nothing applied);
-- {'busy', <holder>}: another delivery holds the key (nothing applied, not acknowledged).
local marker = redis.call('GET', KEYS[2])
if marker == 'done' then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  return {'done'}
end
if marker and marker ~= ARGV[3] then
  return {'busy', marker}
end
local commands, i = {}, 6
for c = 1, tonumber(ARGV[5]) do
  local argc, command = tonumber(ARGV[i]), {}
  for j = 1, argc do
    command[j] = ARGV[i + j]
  end
  commands[c] = command
  i = i + argc + 1
end
local function rejected(c, reason)
  return redis.error_reply('ERR transaction command ' .. c .. ' (' .. commands[c][1]
    .. ') rejected, nothing applied: ' .. reason)
end
local function flagged(info, flag)
  for _, f in ipairs(info[3]) do
    if f == flag or (type(f) == 'table' and f.ok == flag) then
      return true
    end
  end
  return false
end
for c = 1, #commands do
  -- COMMAND INFO needs the user's command|info permission: without it, the arity and
  -- noscript checks are skipped (the ACL check below still runs on Redis >= 7.0)
  local known, infos = pcall(redis.call, 'COMMAND', 'INFO', commands[c][1])
  local info = known and infos[1]
  if known and not info then
    return rejected(c, 'unknown command')
  end
  if info then
    local arity, argc = info[2], #commands[c]
    if (arity > 0 and argc ~= arity) or (arity < 0 and argc < -arity) then
      return rejected(c, 'wrong number of arguments')
    end
    if flagged(info, 'noscript') then
      return rejected(c, 'not allowed in a transaction')
    end
  end
  if redis.acl_check_cmd then -- Redis >= 7.0: the user's permissions too
    local ok, allowed = pcall(redis.acl_check_cmd, unpack(commands[c]))
    if not ok then
      return rejected(c, type(allowed) == 'table' and allowed.err or tostring(allowed))
    end
    if not allowed then
      return redis.error_reply('NOPERM transaction command ' .. c .. ': this user has no '
        .. 'permission to run ' .. commands[c][1] .. ' on its keys; nothing applied')
    end
  end
end
local out = {'applied'}
for c = 1, #commands do
  local reply = redis.pcall(unpack(commands[c]))
  if type(reply) == 'table' and reply.err then
    out[#out + 1] = c .. ' (' .. commands[c][1] .. '): ' .. reply.err
  end
end
redis.call('SET', KEYS[2], 'done', 'PX', ARGV[4])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return out
