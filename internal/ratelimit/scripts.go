package ratelimit

import "github.com/redis/go-redis/v9"

// The Redis scripts run the same arithmetic as gcra.go. Each Admit is one
// script call, so checking and reserving all three limits is one atomic step
// and one round trip.
//
// Time: ARGV[1] is the caller's time in µs, or "" to use the Redis server's
// clock (TIME), which is what production does so that replicas with skewed
// clocks still agree on one timeline. Scripts that call TIME are safe since
// Redis 5, which replicates a script's effects rather than the script.
//
// Numbers are written back with string.format('%d') because Lua would
// otherwise format them with 14 significant digits.

const luaPrelude = `
local W = 60000000
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
-- level returns the bucket's level drained up to now, and the time it is
-- current at (now, or a later time already stored by a caller whose clock
-- is ahead).
local function level(key, limit)
  local v = redis.call('HMGET', key, 'l', 't')
  local l, last = tonumber(v[1]) or 0, tonumber(v[2]) or now
  if now > last then
    local drained = (now - last) * limit
    if drained >= l then l = 0 else l = l - drained end
    last = now
  end
  return l, last
end
local function store(key, l, at, limit)
  redis.call('HSET', key, 'l', string.format('%d', l), 't', string.format('%d', at))
  redis.call('PEXPIRE', key, math.ceil(l / limit / 1000) + 1000)
end
`

// admitScript checks and, when all pass, reserves one request, ARGV[5]
// tokens and one concurrency slot.
//
// KEYS: requests bucket, tokens bucket, concurrency set.
// ARGV: now µs or "", rpm, tpm, concurrency, tokens, ticket id, lease µs.
// Returns {refused, wait µs, request level, token level, in flight, now}
// where refused is 0 (admitted), 1 rpm, 2 tpm, 3 concurrency, 4 tokens
// above the tpm limit itself.
var admitScript = redis.NewScript(luaPrelude + `
local rpm, tpm, conc = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local cost, lease = tonumber(ARGV[5]) * W, tonumber(ARGV[7])
local refused, wait = 0, 0
local rl, rt, tl, tt, inflight = 0, now, 0, now, 0
if rpm > 0 then
  rl, rt = level(KEYS[1], rpm)
  local over = rl + W - rpm * W
  if over > 0 then refused = 1; wait = math.ceil(over / rpm) end
end
if tpm > 0 then
  tl, tt = level(KEYS[2], tpm)
  if cost > tpm * W then return {4, 0, rl, tl, 0, now} end
  local over = tl + cost - tpm * W
  if over > 0 then
    if refused == 0 then refused = 2 end
    wait = math.max(wait, math.ceil(over / tpm))
  end
end
if conc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', string.format('%d', now))
  inflight = redis.call('ZCARD', KEYS[3])
  if inflight >= conc then
    if refused == 0 then refused = 3 end
  end
end
if refused == 0 then
  if rpm > 0 then rl = rl + W; store(KEYS[1], rl, rt, rpm) end
  if tpm > 0 then tl = tl + cost; store(KEYS[2], tl, tt, tpm) end
  if conc > 0 then
    redis.call('ZADD', KEYS[3], string.format('%d', now + lease), ARGV[6])
    redis.call('PEXPIRE', KEYS[3], math.ceil(lease / 1000) + 1000)
    inflight = inflight + 1
  end
end
return {refused, wait, rl, tl, inflight, now}
`)

// settleScript charges (or refunds, when negative) ARGV[3] tokens and frees
// the ticket's concurrency slot.
//
// KEYS: tokens bucket, concurrency set.
// ARGV: now µs or "", tpm, token delta, ticket id ("" when none).
var settleScript = redis.NewScript(luaPrelude + `
local tpm, delta = tonumber(ARGV[2]), tonumber(ARGV[3])
if tpm > 0 and delta ~= 0 then
  local l, at = level(KEYS[1], tpm)
  l = l + delta * W
  if l < 0 then l = 0 end
  store(KEYS[1], l, at, tpm)
end
if ARGV[4] ~= '' then redis.call('ZREM', KEYS[2], ARGV[4]) end
return 1
`)

// renewScript extends the lease of a ticket that is still in the set.
//
// KEYS: concurrency set. ARGV: now µs or "", lease µs, ticket id.
var renewScript = redis.NewScript(luaPrelude + `
local lease = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], 'XX', string.format('%d', now + lease), ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil(lease / 1000) + 1000)
return 1
`)
