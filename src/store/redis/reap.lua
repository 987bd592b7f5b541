-- Claim and remove up to ARGV[3] sessions of this group whose expiry is at or
-- before ARGV[2]. Atomic: across every replica, each is returned exactly once.
-- ARGV: p, now, max
-- (No `clock` here: what it removes is gone, so no later change can revive
-- it, and a sweep per group every second would otherwise write the clock.
-- A replica running fast must not reap what is still live: the caller has
-- bounded `now` by Redis's TIME once for the whole sweep.)
local p, now, max = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', p .. 'exp', '-inf', now, 'LIMIT', 0, max)) do
  local s = load(p, id)
  if s then
    remove(p, s)
    table.insert(out, wire(s))
  else
    redis.call('ZREM', p .. 'exp', id)
  end
end
return out
