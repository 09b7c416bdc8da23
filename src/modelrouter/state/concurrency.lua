-- A key's requests in flight across every replica (max_concurrent), as leases in a sorted set scored by when they
-- expire: a replica that crashed without releasing its leases cannot hold them past their expiry. Times are Redis's.
--
-- KEYS[1]: the key's leases.  ARGV[1]: "acquire" | "renew" | "release".  ARGV[2]: the lease time in ms.
-- acquire: ARGV[3] the limit, ARGV[4] the lease's id; returns 1 (held) or 0 (at the limit).
-- renew: ARGV[3..] the ids this replica holds: each one's expiry moved forward (one that expired stays gone).
-- release: ARGV[3..] the ids to drop.

local key, mode, ttl = KEYS[1], ARGV[1], tonumber(ARGV[2])
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

if mode == "release" then
  for i = 3, #ARGV do redis.call("ZREM", key, ARGV[i]) end
  return 0
end

redis.call("ZREMRANGEBYSCORE", key, "-inf", now)
if mode == "renew" then
  for i = 3, #ARGV do redis.call("ZADD", key, "XX", now + ttl, ARGV[i]) end
  redis.call("PEXPIRE", key, ttl)
  return 0
end

if redis.call("ZCARD", key) >= tonumber(ARGV[3]) then return 0 end
redis.call("ZADD", key, now + ttl, ARGV[4])
redis.call("PEXPIRE", key, ttl)
return 1
