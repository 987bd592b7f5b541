-- End sessions at once: one ('d', by id) or all the user's live ones ('r').
-- ARGV: p, user, now, mode, id
local p, user, now, mode, id = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
now = clock(p, now, true)
local out = {}
if mode == 'd' then
  local s = load(p, id)
  if s and s.u == user and s.e > now then
    remove(p, s)
    table.insert(out, wire(s))
  end
else
  for _, s in ipairs(live(p, user, now)) do
    remove(p, s)
    table.insert(out, wire(s))
  end
end
return out
