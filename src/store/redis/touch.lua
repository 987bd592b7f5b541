-- Activity on a live session: heartbeat ('h'), query ('q', counts a turn) or
-- migrate ('m', new tool set, conversation reset, slot kept).
-- ARGV: p, user, id, now, idle, life, kind, tool
local p, user, id = ARGV[1], ARGV[2], ARGV[3]
local now, idle, life, kind, tool = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7], ARGV[8]
now = clock(p, now, true)
local s = load(p, id)
if (not s) or s.u ~= user or s.e <= now then return {} end
if s.c + life <= now then
  -- Its lifetime, since lowered, is over: it expires (the reaper ends it),
  -- and the activity is refused.
  s.e = s.c + life
  save(p, s)
  return {}
end
local previous = s.t
if kind == 'q' then
  s.n = s.n + 1
elseif kind == 'm' and tool ~= s.t then
  if redis.call('HINCRBY', p .. 'act', s.t, -1) <= 0 then redis.call('HDEL', p .. 'act', s.t) end
  redis.call('HINCRBY', p .. 'act', tool, 1)
  s.t = tool
  s.n = 0
  s.m = s.m + 1
end
if now > s.a then s.a = now end
s.e = expiry(s.c, s.a, idle, life)
save(p, s)
return { wire(s), previous }
