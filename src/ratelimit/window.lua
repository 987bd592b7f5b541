-- Sliding-window counters of one principal, all its policies in one step.
-- The same arithmetic as src/ratelimit/window.rs (IEEE doubles in both).
--
-- KEYS[1]  the principal's hash: fields <policy>:<window>:b (bucket index),
--          :c (current count), :p (previous count); the window is part of the
--          field so a changed window starts afresh (old fields expire with the key)
-- ARGV     now_ms, n, then n times: policy, limit, window_ms, enforce (1/0)
-- Returns  one string of integers separated by spaces (one bulk reply parses
--          several times faster in the client than an array of integers):
--          spent (1/0), then per policy: admits (1/0), bucket, current, previous
--
-- Cost (a request is one call, usually within the current buckets): one HMGET
-- for every policy, and one HSET of only what changed (the current counts,
-- unless a bucket rolled over or the request was refused). The key's TTL is
-- set only when a bucket rolls over: it then lasts until both buckets of
-- that window have passed, which no later write in the same bucket extends.
local now = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local fields = {}
for i = 0, n - 1 do
  local name = ARGV[3 + i * 4] .. ':' .. ARGV[5 + i * 4]
  fields[i * 3 + 1] = name .. ':b'
  fields[i * 3 + 2] = name .. ':c'
  fields[i * 3 + 3] = name .. ':p'
end
local v = redis.call('HMGET', KEYS[1], unpack(fields))
local state = {}
local spend = true
local ttl = 0
for i = 0, n - 1 do
  local limit = tonumber(ARGV[4 + i * 4])
  local w = tonumber(ARGV[5 + i * 4])
  local b = tonumber(v[i * 3 + 1]) or 0
  local c = tonumber(v[i * 3 + 2]) or 0
  local p = tonumber(v[i * 3 + 3]) or 0
  local nb = math.floor(now / w)
  -- A policy's first request writes all its fields (and a TTL).
  local rolled = not v[i * 3 + 1]
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
  local admits = (p * (1.0 - elapsed / w) + c) < limit
  if (not admits) and ARGV[6 + i * 4] == '1' then spend = false end
  state[i] = { b, c, p, admits, rolled }
end
local out = { spend and '1' or '0' }
local set = {}
for i = 0, n - 1 do
  local s = state[i]
  local c = s[2]
  if spend then c = c + 1 end
  if s[5] then
    set[#set + 1] = fields[i * 3 + 1]
    set[#set + 1] = s[1]
    set[#set + 1] = fields[i * 3 + 2]
    set[#set + 1] = c
    set[#set + 1] = fields[i * 3 + 3]
    set[#set + 1] = s[3]
  elseif spend then
    set[#set + 1] = fields[i * 3 + 2]
    set[#set + 1] = c
  end
  out[#out + 1] = string.format('%s %d %d %d', s[4] and '1' or '0', s[1], c, s[3])
end
if #set > 0 then
  redis.call('HSET', KEYS[1], unpack(set))
end
-- Idle principals vanish once both buckets of their longest window have
-- passed. Only ever lengthen the TTL: a request on a route with only short
-- windows must not expire a long window's counters early. (GT leaves a key
-- without a TTL alone, which NX then sets: Redis 7.0 or later.)
if ttl > 0 and redis.call('PEXPIRE', KEYS[1], ttl, 'GT') == 0 then
  redis.call('PEXPIRE', KEYS[1], ttl, 'NX')
end
return table.concat(out, ' ')
