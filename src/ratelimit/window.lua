-- Sliding-window counters of one principal, all its policies in one step.
-- The same arithmetic as src/ratelimit/window.rs (IEEE doubles in both).
--
-- KEYS[1]  the principal's hash: fields <policy>:<window>:b (bucket index),
--          :c (current count), :p (previous count); the window is part of the
--          field so a changed window starts afresh (old fields expire with the key)
-- ARGV     now_ms, then per policy: limit, window_ms, enforce (1/0); then
--          per policy its three field names, as above (the client writes
--          them: building them here cost Redis more than receiving them)
-- Returns  one string of integers separated by spaces (one bulk reply parses
--          several times faster in the client than an array of integers):
--          spent (1/0), then per policy: admits (1/0), bucket, current, previous
--
-- Cost (a request is one call, usually within the current buckets): one HMGET
-- for every policy, and one HSET of only what changed (the current counts,
-- unless a bucket rolled over or the request was refused). The key's TTL is
-- set only when a bucket rolls over: it then lasts until both buckets of
-- that window have passed, which no later write in the same bucket extends.
--
-- Written for Redis's CPU, the one every replica shares (each line below was
-- counted with callgrind on redis-server; see loadtest/instructions.sh):
-- - a string becomes a number by arithmetic (`s + 0`): Lua 5.1's `tonumber`
--   runs strtod twice, once to check and once to convert;
-- - a count or bucket that did not change goes back as the string HMGET
--   returned: turning a number into a string is a sprintf, in Lua (`..`,
--   string.format) and in redis.call alike; the one new count is turned once
--   and serves both the HSET and the reply (Lua writes a whole number below
--   10^14 as plain digits, as Redis does: bucket indexes and counts stay far
--   below, so the stored fields read the same to every version);
-- - as few tables as will do, each made at its size (a table is an
--   allocation, a resize another, and both later garbage).
local now = ARGV[1] + 0
local n = (#ARGV - 1) / 6  -- policies
local f0 = 1 + 3 * n       -- ARGV[f0 + 3i + 1 .. 3]: policy i's fields b, c, p
local key = KEYS[1]
local floor = math.floor
local v = redis.call('HMGET', key, unpack(ARGV, f0 + 1, f0 + 3 * n))
-- Per policy, five slots: bucket, current, previous, admits, rolled.
local st = { 0, 0, 0, false, false }  -- sized for one policy; more grow it
local spend = true
local ttl = 0
for i = 0, n - 1 do
  local a = 2 + i * 3  -- this policy's limit, window_ms, enforce
  local w = ARGV[a + 1] + 0
  local bs, cs, ps = v[i * 3 + 1], v[i * 3 + 2], v[i * 3 + 3]
  local b = bs and bs + 0 or 0
  local c = cs and cs + 0 or 0
  local p = ps and ps + 0 or 0
  local nb = floor(now / w)
  -- A policy's first request writes all its fields (and a TTL).
  local rolled = not bs
  if nb == b + 1 then
    p = c
    c = 0
    b = nb
    rolled = true
  elseif nb > b + 1 then
    p = 0
    c = 0
    b = nb
    rolled = true
  end
  if rolled then
    -- Until both buckets of this window have passed (from now, on Redis's
    -- clock: no skew between replicas and Redis matters).
    local t = (b + 2) * w - now
    if t > ttl then ttl = t end
  end
  local elapsed = now - b * w
  if elapsed < 0 then elapsed = 0 elseif elapsed > w then elapsed = w end
  local admits = (p * (1.0 - elapsed / w) + c) < ARGV[a] + 0
  if (not admits) and ARGV[a + 2] == '1' then spend = false end
  local k = i * 5
  st[k + 1] = b
  st[k + 2] = c
  st[k + 3] = p
  st[k + 4] = admits
  st[k + 5] = rolled
end
local out = spend and '1' or '0'
local set, ns = nil, 0
for i = 0, n - 1 do
  local k = i * 5
  local rolled = st[k + 5]
  local bs, cs, ps
  if rolled then
    bs, ps = st[k + 1] .. '', st[k + 3] .. ''
  else
    bs, cs, ps = v[i * 3 + 1], v[i * 3 + 2] or '0', v[i * 3 + 3] or '0'
  end
  if spend or rolled then
    cs = (spend and st[k + 2] + 1 or st[k + 2]) .. ''
    set = set or { false, false, false, false, false, false }
    if rolled then
      set[ns + 1] = ARGV[f0 + i * 3 + 1]
      set[ns + 2] = bs
      set[ns + 3] = ARGV[f0 + i * 3 + 3]
      set[ns + 4] = ps
      ns = ns + 4
    end
    set[ns + 1] = ARGV[f0 + i * 3 + 2]
    set[ns + 2] = cs
    ns = ns + 2
  end
  out = out .. (st[k + 4] and ' 1 ' or ' 0 ') .. bs .. ' ' .. cs .. ' ' .. ps
end
if set then
  redis.call('HSET', key, unpack(set, 1, ns))
end
-- Idle principals vanish once both buckets of their longest window have
-- passed. Only ever lengthen the TTL: a request on a route with only short
-- windows must not expire a long window's counters early. (GT leaves a key
-- without a TTL alone, which NX then sets: Redis 7.0 or later.)
if ttl > 0 and redis.call('PEXPIRE', key, ttl, 'GT') == 0 then
  redis.call('PEXPIRE', key, ttl, 'NX')
end
return out
