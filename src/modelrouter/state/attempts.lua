-- Admin login throttling across replicas (admin/ratelimit.py's AttemptLimiter, in Redis): a sliding log of attempt
-- times per key, a sorted set scored by the time (Redis's, in ms).
-- KEYS: the keys.  ARGV[1]: the window in ms.  ARGV[2]: a unique member for this attempt.  ARGV[3..]: each key's
-- limit. Records the attempt under every key if each is under its limit and returns 0; otherwise records nothing
-- and returns the milliseconds until the busiest key has room again.
local window = tonumber(ARGV[1])
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wait = 0
for i, key in ipairs(KEYS) do
  redis.call("ZREMRANGEBYSCORE", key, "-inf", now - window)
  local limit = tonumber(ARGV[i + 2])
  local count = redis.call("ZCARD", key)
  if count >= limit then
    -- Room again when enough of the oldest attempts have aged out.
    local oldest = redis.call("ZRANGE", key, count - limit, count - limit, "WITHSCORES")
    wait = math.max(wait, tonumber(oldest[2]) + window - now)
  end
end
if wait > 0 then return wait end
for _, key in ipairs(KEYS) do
  redis.call("ZADD", key, now, ARGV[2])
  redis.call("PEXPIRE", key, window)
end
return 0
