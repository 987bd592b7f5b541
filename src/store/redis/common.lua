-- Shared by every session script (prepended to each). Key layout, all in one
-- group slot {g:<n>}:
--   <p>s:<id>          HASH u user, t tool set, c created, a last active,
--                      e expires, n turns, m migrations (ms since the epoch)
--   <p>u:<user>        ZSET the user's session ids, score = expires
--   <p>exp             ZSET the group's session ids, score = expires
--   <p>act             HASH tool set -> sessions present (live or not yet reaped)
--   <p>i:<len>:<user>:<key>  HASH an idempotency record, expiring (the
--                      user's length makes the key unambiguous)
--   <p>k:<user>        ZSET the user's idempotency keys, score = when each
--                      expires (counts them against the per-user bound)
--   <p>now             STRING the group's clock (see `clock`)
-- where <p> = "<prefix>:{g:<n>}:".
local function skey(p, id) return p .. 's:' .. id end

-- The time a change runs at: the caller's `now`, or the latest a change of
-- this group has run at if that is later. Changes reach Redis in another
-- order than their callers read their clocks (a delayed request, another
-- replica's clock), and a session one change has seen expire must stay
-- expired for every later one: a heartbeat read just before its expiry but
-- run after a create that no longer counted it would revive it over the cap.
-- A read (`write` false) sees the same time without moving it. Only a lead
-- of up to CLOCK_SLACK ms is taken as reordering: a group time further ahead
-- comes from a wrong clock (a replica running fast), which must not drag the
-- group's time (and every session's expiry) along with it; a change then
-- runs at its own time and resets the group's. (sessions::lifecycle's
-- CLOCK_SLACK_MS is the same number, and change_time the same rule.)
local CLOCK_SLACK = 5000

-- A caller's time, bounded by Redis's own when it is a wall clock's (the
-- last ARGV is 'w'; a test's clock, which may be set anywhere, is not). A
-- replica whose clock is more than CLOCK_SLACK off Redis's is wrong: ahead,
-- its changes and its reaper would expire everyone's sessions early; behind,
-- its heartbeats would set expiries in the past. Its time is held to within
-- CLOCK_SLACK of Redis's, so one bad clock cannot end another's sessions.
local function bounded(now)
  if ARGV[#ARGV] ~= 'w' then return now end
  local t = redis.call('TIME')
  local server = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if now > server + CLOCK_SLACK then return server + CLOCK_SLACK end
  if now < server - CLOCK_SLACK then return server - CLOCK_SLACK end
  return now
end

local function clock(p, now, write)
  now = bounded(now)
  local seen = tonumber(redis.call('GET', p .. 'now'))
  if seen and seen >= now and seen - now <= CLOCK_SLACK then return seen end
  if write and seen ~= now then redis.call('SET', p .. 'now', now) end
  return now
end
local function ukey(p, user) return p .. 'u:' .. user end

local function load(p, id)
  local v = redis.call('HMGET', skey(p, id), 'u', 't', 'c', 'a', 'e', 'n', 'm')
  if not v[1] then return nil end
  return { id = id, u = v[1], t = v[2], c = tonumber(v[3]), a = tonumber(v[4]),
           e = tonumber(v[5]), n = tonumber(v[6]), m = tonumber(v[7]) }
end

local function save(p, s)
  redis.call('HSET', skey(p, s.id), 'u', s.u, 't', s.t, 'c', s.c, 'a', s.a, 'e', s.e, 'n', s.n, 'm', s.m)
  redis.call('ZADD', ukey(p, s.u), s.e, s.id)
  redis.call('ZADD', p .. 'exp', s.e, s.id)
end

local function remove(p, s)
  redis.call('DEL', skey(p, s.id))
  redis.call('ZREM', ukey(p, s.u), s.id)
  redis.call('ZREM', p .. 'exp', s.id)
  if redis.call('HINCRBY', p .. 'act', s.t, -1) <= 0 then redis.call('HDEL', p .. 'act', s.t) end
end

local function wire(s)
  return { s.id, s.u, s.t, s.c, s.a, s.e, s.n, s.m }
end

local function expiry(c, a, idle, life)
  return math.min(a + idle, c + life)
end

-- The user's sessions live at `now`, oldest first.
local function live(p, user, now)
  local out = {}
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', ukey(p, user), '(' .. now, '+inf')) do
    local s = load(p, id)
    if s then table.insert(out, s) end
  end
  table.sort(out, function(x, y)
    if x.c ~= y.c then return x.c < y.c end
    return x.id < y.id
  end)
  return out
end
