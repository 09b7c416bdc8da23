-- A key's daily and monthly quotas (access/limits/quota.py's Quota, in Redis). KEYS[1]: the key's counts of the
-- current UTC day, KEYS[2]: of the current month (hashes: requests, tokens, seeded). The caller names the day and
-- month, and says when they end (ARGV[3], ARGV[4]: milliseconds from now), after which the counts expire.
--
-- ARGV[1] = "take": ARGV[5..8] the daily_requests, daily_tokens, monthly_requests, monthly_tokens limits ("" for
--   none), ARGV[2] the token estimate. Counts one request and the estimate in both unless a quota is exhausted
--   or the estimate would not fit; returns {} when counted, else {quota, limit, used} of the first that refused
--   (in that order, as in this process).
-- ARGV[1] = "adjust": ARGV[2] tokens, ARGV[5] requests (signed); counts never go below zero.
-- ARGV[1] = "seed": ARGV[2] day tokens, ARGV[5] day requests, ARGV[6] month tokens, ARGV[7] month requests, added
--   once per day (month) and key whichever replica seeds first: what the store recorded before Redis counted.

local mode = ARGV[1]
local day, month = KEYS[1], KEYS[2]
local day_ttl, month_ttl = tonumber(ARGV[3]), tonumber(ARGV[4])

local function count(key, field)
  return tonumber(redis.call("HGET", key, field) or "0") or 0
end

local function add(key, requests, tokens, ttl)
  local r = math.max(count(key, "requests") + requests, 0)
  local t = math.max(count(key, "tokens") + tokens, 0)
  redis.call("HSET", key, "requests", string.format("%.17g", r), "tokens", string.format("%.17g", t))
  redis.call("PEXPIRE", key, ttl)
end

if mode == "seed" then
  if redis.call("HSETNX", day, "seeded", "1") == 1 then
    add(day, tonumber(ARGV[5]), tonumber(ARGV[2]), day_ttl)
  end
  if redis.call("HSETNX", month, "seeded", "1") == 1 then
    add(month, tonumber(ARGV[7]), tonumber(ARGV[6]), month_ttl)
  end
  return {}
end

if mode == "adjust" then
  local requests, tokens = tonumber(ARGV[5]), tonumber(ARGV[2])
  add(day, requests, tokens, day_ttl)
  add(month, requests, tokens, month_ttl)
  return {}
end

local tokens = tonumber(ARGV[2])
local checks = {
  {"daily_requests", ARGV[5], day, "requests", 1},
  {"daily_tokens", ARGV[6], day, "tokens", tokens},
  {"monthly_requests", ARGV[7], month, "requests", 1},
  {"monthly_tokens", ARGV[8], month, "tokens", tokens},
}
for _, check in ipairs(checks) do
  if check[2] ~= "" then
    local limit = tonumber(check[2])
    local used = count(check[3], check[4])
    -- Exhausted, or this request's estimate would not fit in what is left.
    if used >= limit or used + check[5] > limit then
      return {check[1], string.format("%.17g", limit), string.format("%.17g", used)}
    end
  end
end
add(day, 1, tokens, day_ttl)
add(month, 1, tokens, month_ttl)
return {}
