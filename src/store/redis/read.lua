-- Read: all the user's live sessions, oldest first. (One session is read
-- with a plain HMGET, without a script.)
-- ARGV: p, user, now
local p, user, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
now = clock(p, now, false)
local out = {}
for _, s in ipairs(live(p, user, now)) do table.insert(out, wire(s)) end
return out
