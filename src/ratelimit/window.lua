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
local now = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local state = {}
local spend = true
local longest = 0
for i = 0, n - 1 do
  local name = ARGV[3 + i * 4] .. ':' .. ARGV[5 + i * 4]
  local limit = tonumber(ARGV[4 + i * 4])
  local w = tonumber(ARGV[5 + i * 4])
  local enforce = ARGV[6 + i * 4] == '1'
  local v = redis.call('HMGET', KEYS[1], name .. ':b', name .. ':c', name .. ':p')
  local b = tonumber(v[1]) or 0
  local c = tonumber(v[2]) or 0
  local p = tonumber(v[3]) or 0
  local nb = math.floor(now / w)
  if nb == b + 1 then
    p = c
    c = 0
    b = nb
  elseif nb > b + 1 then
    p = 0
    c = 0
    b = nb
  end
  local elapsed = now - b * w
  if elapsed < 0 then elapsed = 0 elseif elapsed > w then elapsed = w end
  local estimate = p * (1.0 - elapsed / w) + c
  local admits = estimate < limit
  if (not admits) and enforce then spend = false end
  state[i] = { name, b, c, p, admits }
  if w > longest then longest = w end
end
local out = { spend and '1' or '0' }
for i = 0, n - 1 do
  local s = state[i]
  local c = s[3]
  if spend then c = c + 1 end
  redis.call('HSET', KEYS[1], s[1] .. ':b', s[2], s[1] .. ':c', c, s[1] .. ':p', s[4])
  table.insert(out, string.format('%s %d %d %d', s[5] and '1' or '0', s[2], c, s[4]))
end
-- Idle principals vanish once both buckets of their longest window have
-- passed. Only ever lengthen the TTL: a request on a route with only short
-- windows must not expire a long window's counters early. (GT leaves a key
-- without a TTL alone, which NX then sets: Redis 7.0 or later.)
if redis.call('PEXPIRE', KEYS[1], 2 * longest, 'GT') == 0 then
  redis.call('PEXPIRE', KEYS[1], 2 * longest, 'NX')
end
return table.concat(out, ' ')
