-- Create under the cap, evicting (least recently active first) or refusing,
-- honouring an idempotency key: one atomic step.
-- ARGV: p, user, id, tool, now, cap, idle, life, on_limit ('evict'|'reject'),
--       idem_key ('' for none), fingerprint, idem_ttl, idem_max
local p, user, id, tool = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now, cap, idle, life = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
now = clock(p, now, true)
local on_limit, idem, fp, idem_ttl = ARGV[9], ARGV[10], ARGV[11], tonumber(ARGV[12])
local idem_max = tonumber(ARGV[13])
-- The user's length first: 'a' + 'b:k' and 'a:b' + 'k' must not meet.
local ikey = p .. 'i:' .. string.len(user) .. ':' .. user .. ':' .. idem
local kkey = p .. 'k:' .. user

if idem ~= '' then
  local r = redis.call('HMGET', ikey, 'fp', 'id', 't', 'c', 'a', 'e', 'ev', 'x')
  -- Expiry is judged by the caller's clock (field x); PEXPIRE only cleans up.
  if r[1] and tonumber(r[8]) > now then
    if r[1] ~= fp then return { 'conflict' } end
    local out = { 'replayed', { r[2], user, r[3], tonumber(r[4]), tonumber(r[5]), tonumber(r[6]), 0, 0 } }
    for ev in string.gmatch(r[7] or '', '[^,]+') do table.insert(out, ev) end
    return out
  end
  -- A new key: only unexpired keys count against the bound. This key's own
  -- entry, if its record is already gone (PEXPIRE runs on Redis's clock,
  -- expiry is judged on the caller's), does not count against it.
  redis.call('ZREMRANGEBYSCORE', kkey, '-inf', now)
  redis.call('ZREM', kkey, idem)
  local held = redis.call('ZCARD', kkey)
  if held >= idem_max then
    -- The wait until fewer than idem_max are held (more than one may have to
    -- expire when the bound was lowered).
    local nth = redis.call('ZRANGE', kkey, held - idem_max, held - idem_max, 'WITHSCORES')
    return { 'keys_full', tonumber(nth[2]) - now }
  end
end

local mine = live(p, user, now)
local evicted = {}
if #mine >= cap then
  if on_limit == 'reject' then
    -- Room comes when #mine - cap + 1 of them have expired: usually the
    -- soonest, more when the cap was lowered below what is held.
    local out, expiries = { 'rejected', 0 }, {}
    for _, s in ipairs(mine) do
      table.insert(expiries, s.e)
      table.insert(out, s.id)
    end
    table.sort(expiries)
    out[2] = expiries[#mine - cap + 1] - now
    return out
  end
  table.sort(mine, function(x, y)
    if x.a ~= y.a then return x.a < y.a end
    if x.c ~= y.c then return x.c < y.c end
    return x.id < y.id
  end)
  for i = 1, #mine + 1 - cap do
    remove(p, mine[i])
    table.insert(evicted, mine[i])
  end
end

local s = { id = id, u = user, t = tool, c = now, a = now, e = expiry(now, now, idle, life), n = 0, m = 0 }
save(p, s)
redis.call('HINCRBY', p .. 'act', tool, 1)

local ev_ids = {}
for _, e in ipairs(evicted) do table.insert(ev_ids, e.id) end
if idem ~= '' then
  redis.call('HSET', ikey, 'fp', fp, 'id', id, 't', tool, 'c', s.c, 'a', s.a, 'e', s.e,
             'ev', table.concat(ev_ids, ','), 'x', now + idem_ttl)
  redis.call('PEXPIRE', ikey, idem_ttl)
  redis.call('ZADD', kkey, now + idem_ttl, idem)
  -- The index lives as long as its longest-lived key (the TTL may have been
  -- lowered at runtime since an earlier key was added).
  if redis.call('PTTL', kkey) < idem_ttl then redis.call('PEXPIRE', kkey, idem_ttl) end
end
local out = { 'created', wire(s) }
for _, e in ipairs(evicted) do table.insert(out, wire(e)) end
return out
