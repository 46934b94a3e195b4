-- kanmon's lockout scripts. Each runs atomically on the master, with
-- Redis's own clock (TIME), so the nodes' clocks don't matter. Times are
-- Unix milliseconds. The rules are package lockout's (lockout/guard.go,
-- lockout/state.go), written again here for Redis; a change to one is a
-- change to both, and redisstate's tests run the same cases on both.
--
-- Counter hash fields: s window bucket start, c failures in it, p in the
-- bucket before, u lock end, v lock level, n failures since the last
-- success (account scope), l last counted failure.
-- Fingerprint hash: field = hex fingerprint, value = "confirmed,checked".

--! now
local function now_ms()
	local t = redis.call('TIME')
	return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

--! check
-- KEYS: counters of scopes 1..4, fingerprints, known-good (account, ip).
-- ARGV: scope mask ("1101"), fingerprint hex or "", recheck interval,
-- fingerprint TTL, known-good TTL.
-- Returns {outcome (0 allow, 1 locked, 2 stale), scope, until, recheck}.
local now = now_ms()
local good = false
local g = redis.call('GET', KEYS[6])
if g and now < tonumber(g) + tonumber(ARGV[5]) then
	good = true
end
for s = 1, 4 do
	if s ~= 1 and good then
		break
	end
	if string.sub(ARGV[1], s, s) == '1' then
		local u = tonumber(redis.call('HGET', KEYS[s], 'u') or '0')
		if u > now then
			return {1, s, u, 0}
		end
	end
end
if ARGV[2] == '' then
	return {0, 0, 0, 0}
end
local v = redis.call('HGET', KEYS[5], ARGV[2])
if not v then
	return {0, 0, 0, 0}
end
local comma = string.find(v, ',', 1, true)
local confirmed = tonumber(string.sub(v, 1, comma - 1))
local checked = tonumber(string.sub(v, comma + 1))
if now >= confirmed + tonumber(ARGV[4]) then
	return {0, 0, 0, 0}
end
if now < checked + tonumber(ARGV[3]) then
	return {2, 0, 0, 0}
end
redis.call('HSET', KEYS[5], ARGV[2], string.format('%d,%d', confirmed, now))
return {0, 0, 0, 1}

--! failure
-- KEYS: counters of scopes 1..4, fingerprints, lock sets of scopes 1..4.
-- ARGV: 1 scope mask, 2 fingerprint hex or "", 3 fingerprint TTL,
-- 4 fingerprints kept, 5..8 thresholds, 9..12 windows, 13 max account
-- failures, 14 failure memory, 15 lock min, 16 lock max, 17 lock memory,
-- 18..21 the scopes' subjects (the lock sets' members).
-- Returns {counted, n1, n2, n3, n4, consecutive, locked scope, until}.
local now = now_ms()
local counted = 1
local fp = ARGV[2]
if fp ~= '' then
	local ttl = tonumber(ARGV[3])
	local v = redis.call('HGET', KEYS[5], fp)
	if v and now < tonumber(string.sub(v, 1, string.find(v, ',', 1, true) - 1)) + ttl then
		counted = 0
	else
		-- drop the expired fingerprints; keep at most ARGV[4], the least
		-- recently confirmed one going first
		local all = redis.call('HGETALL', KEYS[5])
		local live, oldest, oldestAt = 0, nil, nil
		for i = 1, #all, 2 do
			local at = tonumber(string.sub(all[i + 1], 1, string.find(all[i + 1], ',', 1, true) - 1))
			if now >= at + ttl then
				redis.call('HDEL', KEYS[5], all[i])
			else
				live = live + 1
				if oldestAt == nil or at < oldestAt then
					oldest, oldestAt = all[i], at
				end
			end
		end
		if live >= tonumber(ARGV[4]) and oldest then
			redis.call('HDEL', KEYS[5], oldest)
		end
	end
	redis.call('HSET', KEYS[5], fp, string.format('%d,%d', now, now))
	redis.call('PEXPIRE', KEYS[5], ttl)
end
local maxFailures, failureMemory = tonumber(ARGV[13]), tonumber(ARGV[14])
local lockMin, lockMax, lockMemory = tonumber(ARGV[15]), tonumber(ARGV[16]), tonumber(ARGV[17])
local res = {counted, 0, 0, 0, 0, 0, 0, 0}
for s = 1, 4 do
	if string.sub(ARGV[1], s, s) == '1' then
		local key = KEYS[s]
		local thr, w = tonumber(ARGV[4 + s]), tonumber(ARGV[8 + s])
		local h = redis.call('HMGET', key, 's', 'c', 'p', 'u', 'v', 'n', 'l')
		local st, cur, prev = tonumber(h[1] or '0'), tonumber(h[2] or '0'), tonumber(h[3] or '0')
		local untl, level, consec, last = tonumber(h[4] or '0'), tonumber(h[5] or '0'), tonumber(h[6] or '0'), tonumber(h[7] or '0')
		-- roll the buckets forward to now
		local bucket = now - (now % w)
		if bucket > st then
			if bucket == st + w then
				prev, cur = cur, 0
			else
				prev, cur = 0, 0
			end
			st = bucket
		end
		if counted == 1 then
			cur = cur + 1
		end
		local elapsed = math.max(now - st, 0)
		local est = cur
		if elapsed < w then
			est = cur + math.floor(prev * (w - elapsed) / w)
		end
		res[1 + s] = est
		if counted == 1 then
			local trip = est >= thr
			if s == 2 then
				if consec > 0 and now >= last + failureMemory then
					consec = 0
				end
				consec = consec + 1
				trip = trip or consec >= maxFailures
			end
			last = now
			if trip and untl <= now then
				if untl == 0 or now >= untl + lockMemory then
					level = 0
				end
				local d = lockMin
				for _ = 1, level do
					if d >= lockMax then
						break
					end
					d = d * 2
				end
				untl = now + math.min(d, lockMax)
				if level < 255 then
					level = level + 1
				end
				if res[7] == 0 then
					res[7], res[8] = s, untl
				end
				redis.call('ZREMRANGEBYSCORE', KEYS[5 + s], '-inf', now)
				redis.call('ZADD', KEYS[5 + s], untl, ARGV[17 + s])
				redis.call('PEXPIRE', KEYS[5 + s], lockMax + lockMemory)
			end
			redis.call('HSET', key, 's', st, 'c', cur, 'p', prev, 'u', untl, 'v', level, 'n', consec, 'l', last)
			local expires = math.max(st + 2 * w, untl + lockMemory)
			if consec > 0 then
				expires = math.max(expires, last + failureMemory)
			end
			redis.call('PEXPIREAT', key, expires)
		end
		if s == 2 then
			res[6] = consec
		end
	end
end
return res

--! success
-- KEYS: fingerprints, counter (account, ip), counter account, known-good
-- (account, ip), known-good ip, lock set of scope 1.
-- ARGV: known-good TTL, refresh interval, the (account, ip) subject.
local now = now_ms()
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[6], ARGV[3])
if redis.call('HGET', KEYS[3], 'n') then
	redis.call('HSET', KEYS[3], 'n', 0)
end
local last = redis.call('GET', KEYS[4])
if (not last) or now - tonumber(last) >= tonumber(ARGV[2]) then
	redis.call('SET', KEYS[4], now, 'PX', ARGV[1])
	redis.call('SET', KEYS[5], now, 'PX', ARGV[1])
end
return 1
