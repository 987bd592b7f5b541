-- This group's sessions present by tool set, and the tool sets of those past
-- expiry (cost follows what is pending, not what is live).
-- ARGV: p, now
local p, now = ARGV[1], tonumber(ARGV[2])  -- bounded by the caller (see reap.lua)
local pending = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', p .. 'exp', '-inf', now)) do
  local t = redis.call('HGET', p .. 's:' .. id, 't')
  if t then table.insert(pending, t) end
end
return { redis.call('HGETALL', p .. 'act'), pending }
