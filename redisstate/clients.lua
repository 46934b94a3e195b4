-- kanmon's password-clients script: auth.ClientPending.Apply (forgets,
-- then auth.MergeClients) on the records of a batch of accounts, written
-- again for Redis (auth/clients.go, auth/clientbuffer.go); a change to one
-- is a change to both, and clients_test.go checks them against each other.
-- It runs atomically on the master with Redis's own clock (TIME), so that
-- every node expires rows, keys and index entries on one clock.
--
-- KEYS[1], KEYS[2]: the indexes of the refused and password records:
-- sorted sets, member = the account's user key, score = its newest last
-- seen (Unix ms).
-- KEYS[2+i]: account i's record: a JSON array of rows.
-- ARGV[1]: retention (ms); ARGV[2]: most rows per record; then three per
-- account i, from ARGV[3]: its index (1 or 2), its member in that index,
-- its pending changes: JSON {"forgets": [row], "seen": [row]}.
-- A row is {"protocol", "name", "version", "ip", "first", "last",
-- "count"}; times are Unix ms, 0 for none; name and version are left out
-- when empty.
-- A stored value that does not read as such an array counts as empty.
-- Returns the number of accounts written.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local retention = tonumber(ARGV[1])
local max_rows = tonumber(ARGV[2])
local cut = now - retention
-- auth's maxClientName and maxClientVersion.
local name_max, version_max = 64, 32
-- Larger numbers are not read, here or in Go.
local num_max = 4611686018427387904

-- str reads a string field: absent or null is '', another type nil.
local function str(v)
  if v == nil or v == cjson.null then
    return ''
  end
  if type(v) == 'string' then
    return v
  end
  return nil
end

-- num reads a number field, floored: absent or null is 0, another type
-- or a number out of range nil.
local function num(v)
  if v == nil or v == cjson.null then
    return 0
  end
  if type(v) ~= 'number' or v ~= v or v > num_max or v < -num_max then
    return nil
  end
  return math.floor(v)
end

-- row reads one row; nil when it is unreadable.
local function row(v)
  if v == cjson.null then
    v = {}
  end
  if type(v) ~= 'table' or #v > 0 then -- not an object
    return nil
  end
  local r = {protocol = str(v.protocol), name = str(v.name), version = str(v.version), ip = str(v.ip),
    first = num(v.first), last = num(v.last), count = num(v.count)}
  if not (r.protocol and r.name and r.version and r.ip and r.first and r.last and r.count) then
    return nil
  end
  return r
end

-- rows reads an array of rows; any unreadable row makes it empty.
local function rows(v)
  if type(v) ~= 'table' then
    return {}
  end
  local out = {}
  for i, e in ipairs(v) do
    local r = row(e)
    if not r then
      return {}
    end
    out[i] = r
  end
  return out
end

-- decode reads a JSON text; nil when it is not JSON.
local function decode(s)
  if not s then
    return nil
  end
  local ok, v = pcall(cjson.decode, s)
  if not ok then
    return nil
  end
  return v
end

-- printable is auth's printable: the first n printable ASCII bytes of s,
-- without leading and trailing spaces.
local function printable(s, n)
  s = string.sub((string.gsub(s, '[^ -~]', '')), 1, n)
  s = string.gsub(s, '^ +', '')
  s = string.gsub(s, ' +$', '')
  return s
end

-- sanitize is PasswordClient.sanitize, in place.
local function sanitize(r)
  r.name = printable(r.name, name_max)
  r.version = printable(r.version, version_max)
  if r.count < 1 then
    r.count = 1
  end
  if r.first == 0 or (r.last ~= 0 and r.last < r.first) then
    r.first = r.last
  end
  return r
end

-- forget is auth.ForgetClients: list without the rows that ForgetMatch
-- matches to f.
local function forget(list, f)
  local fname = printable(f.name, name_max)
  local out = {}
  for _, r in ipairs(list) do
    local match = false
    if r.protocol == f.protocol then
      if f.name ~= '' then
        match = r.name == fname
      else
        match = r.name == '' and r.ip == f.ip
      end
    end
    if not match then
      out[#out + 1] = r
    end
  end
  return out
end

-- combine is auth's combine: b's sighting added to a, in place.
local function combine(a, b)
  local last = a.last
  a.count = a.count + b.count
  if b.first < a.first then
    a.first = b.first
  end
  if b.last >= last then
    a.last = b.last
    if b.version ~= '' then
      a.version = b.version
    end
  end
end

-- trim is auth's trimClients: rows last seen after the cut, the max_rows
-- most counted (then most recent), most recent first. Lua's sort is not
-- stable: ties keep their order by position, as Go's stable sorts do.
local function trim(list)
  local kept = {}
  for _, r in ipairs(list) do
    if r.last > cut then
      kept[#kept + 1] = r
      r.pos = #kept
    end
  end
  if #kept > max_rows then
    table.sort(kept, function(a, b)
      if a.count ~= b.count then
        return a.count > b.count
      end
      if a.last ~= b.last then
        return a.last > b.last
      end
      return a.pos < b.pos
    end)
    for i = #kept, max_rows + 1, -1 do
      kept[i] = nil
    end
    for i, r in ipairs(kept) do
      r.pos = i
    end
  end
  table.sort(kept, function(a, b)
    if a.last ~= b.last then
      return a.last > b.last
    end
    return a.pos < b.pos
  end)
  return kept
end

-- merge is auth.MergeClients.
local function merge(list, seen)
  local out, at = {}, {}
  local function add(c)
    c = sanitize(c)
    local k = c.protocol .. '\0' .. c.name .. '\0' .. c.ip
    local i = at[k]
    if i then
      combine(out[i], c)
    else
      out[#out + 1] = c
      at[k] = #out
    end
  end
  for _, c in ipairs(list) do
    add(c)
  end
  for _, c in ipairs(seen) do
    add(c)
  end
  return trim(out)
end

-- encode is the stored JSON of a non-empty list.
local function encode(list)
  local out = {}
  for i, r in ipairs(list) do
    local e = {protocol = r.protocol, ip = r.ip, first = r.first, last = r.last, count = r.count}
    if r.name ~= '' then
      e.name = r.name
    end
    if r.version ~= '' then
      e.version = r.version
    end
    out[i] = e
  end
  return cjson.encode(out)
end

local written = 0
for i = 1, #KEYS - 2 do
  local key = KEYS[2 + i]
  local a = 3 * i
  local index = KEYS[tonumber(ARGV[a])]
  local member = ARGV[a + 1]
  local p = decode(ARGV[a + 2])
  if type(p) ~= 'table' then
    p = {}
  end
  local list = rows(decode(redis.call('GET', key)))
  for _, f in ipairs(rows(p.forgets)) do
    list = forget(list, f)
  end
  list = merge(list, rows(p.seen))
  if #list == 0 then
    redis.call('DEL', key)
    redis.call('ZREM', index, member)
  else
    local newest = list[1].last
    -- The key lives until its newest row expires, at most retention.
    local ttl = math.min(newest + retention - now, retention)
    redis.call('SET', key, encode(list), 'PX', ttl)
    redis.call('ZADD', index, newest, member)
  end
  written = written + 1
end
for k = 1, 2 do
  redis.call('ZREMRANGEBYSCORE', KEYS[k], '-inf', cut)
  redis.call('PEXPIRE', KEYS[k], retention)
end
return written
