-- The rate-limit algorithms of access/limits/algorithms.py, step for step, run atomically in Redis for all the
-- buckets one request falls under. The Python module is the reference: each function below mirrors the one of
-- the same name there, and tests/test_shared_limits.py checks the two give the same decisions.
--
-- KEYS: the buckets.  ARGV[1]: "take" | "adjust".  ARGV[2]: now in seconds, or "" for Redis TIME (so that every
-- replica counts on one clock).  ARGV[3]: per bucket, packed little-endian (struct "<Bdddddddd"): the algorithm's
-- number (ORDER below), the amount (the cost of a take, the signed delta of an adjust), the lease wanted (units
-- to take ahead, 0: none), rate, period, burst (0: none), max_wait, warmup, cold_factor. Binary rather than
-- text: formatting and parsing decimal numbers was most of the script's time, and of the client's.
--
-- take: every bucket is taken in order; at the first refusal the earlier takes are given back and nothing after
-- it is touched (all limits or none), exactly as the in-process Limiter does. Returns one decision per bucket
-- taken (the refusal last), packed as 7 doubles each: allowed (1/0), remaining, limit, retry_after, reset_after,
-- wait, and the lease granted (Redis would truncate Lua numbers to integers).
-- A lease (access/limits/leases.py) is taken after an admitted amount, and only from what is left beyond a
-- quarter of the limit, an eighth of that and a 256th of the limit at most: near its limit a bucket grants none,
-- so there every admission is decided here, one at a time.
-- adjust: applies every delta (reconciling a token estimate, refunding a take); returns nothing.
--
-- A bucket's state is one string: its algorithm's number and its fields as doubles, kept with an expiry (SET PX).

local EPS = 1e-9
local INF = math.huge
local LEASE_FLOOR = 0.25  -- no lease from the last quarter of a limit
local LEASE_SHARE = 0.125  -- a lease is at most this share of what is left above that
local LEASE_MOST = 1 / 256  -- and at most this share of the limit (so a limit under 256 units never leases)

local function floordiv(a, b)
  -- Python's float floor division (a // b), for window starts that agree with the reference to the last bit.
  local mod = math.fmod(a, b)
  local div = (a - mod) / b
  if mod ~= 0 and ((b < 0) ~= (mod < 0)) then div = div - 1 end
  if div ~= 0 then
    local f = math.floor(div)
    if div - f > 0.5 then f = f + 1 end
    return f
  end
  return 0
end

local function capacity(r)
  if r.burst > 0 then return r.burst end
  return r.rate
end

-- token bucket ------------------------------------------------------------------------------------------------

local function refill(s, now, cap, fill)
  local elapsed = now - s.at
  if elapsed > 0 then s.at = now else elapsed = 0 end
  local tokens = s.tokens + elapsed * fill
  if tokens > cap then tokens = cap end
  s.tokens = tokens
  return tokens
end

local token_bucket = {}

function token_bucket.take(s, cost, now, r)
  local cap = capacity(r)
  local fill = r.rate / r.period
  local tokens
  if s == nil then
    s = {tokens = cap, at = now}
    tokens = cap
  else
    local elapsed = now - s.at
    if elapsed > 0 then
      s.at = now
      tokens = s.tokens + elapsed * fill
    else
      tokens = s.tokens
    end
    if tokens > cap then tokens = cap end
  end
  if tokens + EPS >= cost then
    tokens = tokens - cost
    s.tokens = tokens
    return s, {1, math.max(tokens, 0), cap, 0, (cap - tokens) / fill, 0}
  end
  s.tokens = tokens
  local retry = INF
  if cost <= cap then retry = (cost - tokens) / fill end
  return s, {0, math.max(tokens, 0), cap, retry, (cap - tokens) / fill, 0}
end

function token_bucket.adjust(s, delta, now, r)
  local cap = capacity(r)
  if s == nil then s = {tokens = cap, at = now} end
  s.tokens = math.min(refill(s, now, cap, r.rate / r.period) - delta, cap)
  return s
end

function token_bucket.expires(s, r)
  return s.at + (capacity(r) - s.tokens) * r.period / r.rate
end

-- leaky bucket (GCRA) -----------------------------------------------------------------------------------------

local leaky_bucket = {}

function leaky_bucket.take(s, cost, now, r)
  local interval = r.period / r.rate
  local burst = 1
  if r.burst > 0 then burst = r.burst end
  local tolerance = burst * interval
  local horizon = tolerance + r.max_wait
  local limit = horizon / interval
  if s == nil then s = {tat = now} end
  local backlog = s.tat - now
  if backlog < 0 then backlog = 0 end
  local after = backlog + cost * interval
  if after <= horizon + EPS then
    s.tat = now + after
    local wait = after - tolerance
    if wait < 0 then wait = 0 end
    return s, {1, math.max((horizon - after) / interval, 0), limit, 0, after, wait}
  end
  local retry = INF
  if cost * interval <= horizon + EPS then retry = after - horizon end
  return s, {0, math.max((horizon - backlog) / interval, 0), limit, retry, backlog, 0}
end

function leaky_bucket.adjust(s, delta, now, r)
  if s == nil then s = {tat = now} end
  local tat = math.max(s.tat, now) + delta * r.period / r.rate
  s.tat = math.max(tat, now)
  return s
end

function leaky_bucket.expires(s, r)
  return s.tat
end

-- sliding window ----------------------------------------------------------------------------------------------

local function slide(s, now, period)
  local start = floordiv(now, period) * period
  if s == nil then return {start = start, prev = 0, curr = 0} end
  if start > s.start then
    if start - s.start < 1.5 * period then s.prev = s.curr else s.prev = 0 end
    s.curr = 0
    s.start = start
  end
  return s
end

local function sliding_retry(prev, curr, elapsed, cost, rate, period)
  local room = rate - cost
  if room < -EPS then return INF end
  if curr <= room and prev > 0 then
    return math.max(period * (1 - (room - curr) / prev) - elapsed, 0)
  end
  local later = 0
  if curr > 0 then later = period * (1 - room / curr) end
  return period - elapsed + math.max(later, 0)
end

local function sliding_reset(start, prev, curr, now, period)
  if curr > 0 then return start + 2 * period - now end
  if prev > 0 then return start + period - now end
  return 0
end

local sliding_window = {}

function sliding_window.take(s, cost, now, r)
  local period, rate = r.period, r.rate
  s = slide(s, now, period)
  local start, prev, curr = s.start, s.prev, s.curr
  local elapsed = 0
  if now > start then elapsed = now - start end
  local used = prev * (1 - elapsed / period) + curr
  if used + cost <= rate + EPS then
    s.curr = curr + cost
    local reset = sliding_reset(start, prev, curr + cost, now, period)
    return s, {1, math.max(rate - used - cost, 0), rate, 0, reset, 0}
  end
  local retry = sliding_retry(prev, curr, elapsed, cost, rate, period)
  return s, {0, math.max(rate - used, 0), rate, retry, sliding_reset(start, prev, curr, now, period), 0}
end

function sliding_window.adjust(s, delta, now, r)
  s = slide(s, now, r.period)
  local curr = s.curr + delta
  if curr < 0 then
    s.prev = math.max(s.prev + curr, 0)
    curr = 0
  end
  s.curr = curr
  return s
end

function sliding_window.expires(s, r)
  local windows = 0
  if s.curr > 0 then windows = 2 elseif s.prev > 0 then windows = 1 end
  return s.start + windows * r.period
end

-- fixed window ------------------------------------------------------------------------------------------------

local function fix(s, now, period)
  local start = floordiv(now, period) * period
  if s == nil then return {start = start, count = 0} end
  if start > s.start then
    s.start = start
    s.count = 0
  end
  return s
end

local fixed_window = {}

function fixed_window.take(s, cost, now, r)
  local period, rate = r.period, r.rate
  s = fix(s, now, period)
  local count = s.count
  local reset = s.start + period - now
  if count + cost <= rate + EPS then
    count = count + cost
    s.count = count
    return s, {1, math.max(rate - count, 0), rate, 0, reset, 0}
  end
  local retry = INF
  if cost <= rate then retry = reset end
  return s, {0, math.max(rate - count, 0), rate, retry, reset, 0}
end

function fixed_window.adjust(s, delta, now, r)
  s = fix(s, now, r.period)
  s.count = math.max(s.count + delta, 0)
  return s
end

function fixed_window.expires(s, r)
  return s.start + r.period
end

-- warm-up -----------------------------------------------------------------------------------------------------

local function share(heat, r)
  local cold = 1 / r.cold_factor
  return cold + (1 - cold) * heat / r.warmup
end

local function cold_state(now, r, cap)
  return {tokens = cap * share(0, r), at = now, heat = 0}
end

local function warm(s, now, r, cap)
  local heat = s.heat
  local sh = share(heat, r)
  local tokens = s.tokens
  local elapsed = now - s.at
  if elapsed <= 0 then return tokens, sh end
  local fill = r.rate / r.period * sh
  local mark = cap * share(0, r)
  local busy = 0
  if tokens < mark then busy = (mark - tokens) / fill end
  if busy > elapsed then busy = elapsed end
  tokens = math.min(tokens + elapsed * fill, cap * sh)
  heat = math.max(math.min(heat + busy, r.warmup) - (elapsed - busy), 0)
  sh = share(heat, r)
  local size = cap * sh
  if tokens > size then tokens = size end
  s.tokens = tokens
  s.at = now
  s.heat = heat
  return tokens, sh
end

local warmup = {}

function warmup.take(s, cost, now, r)
  local cap = capacity(r)
  if s == nil then s = cold_state(now, r, cap) end
  local tokens, sh = warm(s, now, r, cap)
  local size = cap * sh
  local fill = r.rate / r.period * sh
  if tokens + EPS >= cost or (tokens + EPS >= size and cost <= cap) then
    tokens = tokens - cost
    s.tokens = tokens
    return s, {1, math.max(tokens, 0), cap, 0, (size - tokens) / fill, 0}
  end
  local retry = INF
  if cost <= cap then retry = (math.min(cost, size) - tokens) / fill end
  return s, {0, math.max(tokens, 0), cap, retry, (size - tokens) / fill, 0}
end

function warmup.adjust(s, delta, now, r)
  local cap = capacity(r)
  if s == nil then s = cold_state(now, r, cap) end
  local tokens, sh = warm(s, now, r, cap)
  s.tokens = math.min(tokens - delta, cap * sh)
  return s
end

function warmup.expires(s, r)
  local cap = capacity(r)
  local cold = share(0, r)
  local fill = r.rate / r.period * share(s.heat, r)
  local busy = math.max(cap * cold - s.tokens, 0) / fill
  return s.at + busy + math.min(s.heat + busy, r.warmup)
end

-- the buckets -------------------------------------------------------------------------------------------------

local ORDER = {"token_bucket", "leaky_bucket", "sliding_window", "fixed_window", "warmup"}  -- as in shared.py
local ALGORITHMS = {token_bucket, leaky_bucket, sliding_window, fixed_window, warmup}
local FIELDS = {{"tokens", "at"}, {"tat"}, {"start", "prev", "curr"}, {"start", "count"}, {"tokens", "at", "heat"}}
local FORMATS = {"<Bdd", "<Bd", "<Bddd", "<Bdd", "<Bddd"}

local function load(key, alg)
  -- A state of another algorithm (the rule was changed) counts as none, as in the in-process backend.
  local stored = redis.call("GET", key)
  if not stored or string.byte(stored, 1) ~= alg then return nil end
  local values = {struct.unpack(FORMATS[alg], stored)}
  local s = {}
  for i, field in ipairs(FIELDS[alg]) do s[field] = values[i + 1] end
  return s
end

local function save(key, alg, s, r, now)
  local fields = FIELDS[alg]
  local value
  if #fields == 1 then
    value = struct.pack(FORMATS[alg], alg, s[fields[1]])
  elseif #fields == 2 then
    value = struct.pack(FORMATS[alg], alg, s[fields[1]], s[fields[2]])
  else
    value = struct.pack(FORMATS[alg], alg, s[fields[1]], s[fields[2]], s[fields[3]])
  end
  -- Kept until it would behave like a fresh state anyway, and a second more (clocks of replicas differ).
  local ttl = math.ceil((ALGORITHMS[alg].expires(s, r) - now) * 1000) + 1000
  if ttl < 1000 then ttl = 1000 end
  redis.call("SET", key, value, "PX", ttl)
end

local mode = ARGV[1]
local now
if ARGV[2] == "" then
  local t = redis.call("TIME")
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[2])
end

local packed = ARGV[3]
local buckets = {}
local at = 1
for i = 1, #KEYS do
  local alg, amount, extra, rate, period, burst, max_wait, warmup_s, cold_factor
  alg, amount, extra, rate, period, burst, max_wait, warmup_s, cold_factor, at =
    struct.unpack("<Bdddddddd", packed, at)
  if ALGORITHMS[alg] == nil then return redis.error_reply("unknown algorithm " .. tostring(alg)) end
  buckets[i] = {
    key = KEYS[i],
    alg = alg,
    amount = amount,
    extra = extra,
    granted = 0,
    rule = {rate = rate, period = period, burst = burst, max_wait = max_wait, warmup = warmup_s, cold_factor = cold_factor},
  }
end

-- States by key: a request may fall twice under one bucket, and the second step must see the first.
local states = {}
local function state_of(b)
  local s = states[b.key]
  if s == nil or s.alg ~= b.alg then
    s = {alg = b.alg, value = load(b.key, b.alg)}
    states[b.key] = s
  end
  return s
end

if mode == "adjust" then
  for _, b in ipairs(buckets) do
    local s = state_of(b)
    s.value = ALGORITHMS[b.alg].adjust(s.value, b.amount, now, b.rule)
    save(b.key, b.alg, s.value, b.rule, now)
  end
  return {}
end

local decisions = {}
local refused = false
local taken = 0
for i, b in ipairs(buckets) do
  local s = state_of(b)
  local d
  s.value, d = ALGORITHMS[b.alg].take(s.value, b.amount, now, b.rule)
  if d[1] == 1 and b.extra >= 1 and d[6] == 0 then
    local room = math.min((d[2] - LEASE_FLOOR * d[3]) * LEASE_SHARE, d[3] * LEASE_MOST)
    local lease = math.min(b.extra, math.floor(room))
    if lease >= 1 then
      local after
      s.value, after = ALGORITHMS[b.alg].take(s.value, lease, now, b.rule)
      if after[1] == 1 and after[6] == 0 then
        b.granted = lease
        d = after
      end
    end
  end
  decisions[i] = struct.pack("<ddddddd", d[1], d[2], d[3], d[4], d[5], d[6], b.granted)
  taken = i
  if d[1] == 0 then
    refused = true
    break
  end
end
if refused then
  for i = 1, taken - 1 do
    local b = buckets[i]
    local s = state_of(b)
    s.value = ALGORITHMS[b.alg].adjust(s.value, -(b.amount + b.granted), now, b.rule)
  end
end
for i = 1, taken do
  local b = buckets[i]
  save(b.key, b.alg, states[b.key].value, b.rule, now)
end
return table.concat(decisions)
