-- Read: one live session ('g', by id) or all the user's live sessions ('l').
-- ARGV: p, user, now, mode, id
local p, user, now, mode, id = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local out = {}
if mode == 'g' then
  local s = load(p, id)
  if s and s.u == user and s.e > now then table.insert(out, wire(s)) end
else
  for _, s in ipairs(live(p, user, now)) do table.insert(out, wire(s)) end
end
return out
