package jobrecords

import "github.com/redis/go-redis/v9"

// The Lua scripts that make each state change atomic. Every key of a
// Records shares one hash tag, so they live in one Redis Cluster slot.

const luaFinal = `
local function final(s) return s == 'succeeded' or s == 'failed' or s == 'canceled' end
`

const luaNow = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

// createScript records a job and marks it unsent (not yet on the broker),
// unless the idempotency key names a job that still exists.
//
// KEYS: job, tenant index, idempotency key, counts, pending, unsent
// ARGV: id, fields, request body, tenant, pool, use idempotency (1/0),
// idempotency TTL ms, job key prefix, priority
// Returns {1, id} when created, {0, existing id} when replayed.
var createScript = redis.NewScript(luaNow + `
if ARGV[6] == '1' then
  local existing = redis.call('GET', KEYS[3])
  if existing and redis.call('EXISTS', ARGV[8] .. existing) == 1 then
    return {0, existing}
  end
  redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[7])
end
local idem = ''
if ARGV[6] == '1' then idem = KEYS[3] end
redis.call('HSET', KEYS[1], 'data', ARGV[2], 'req', ARGV[3], 'rev', 1, 'tenant', ARGV[4],
  'status', 'queued', 'pool', ARGV[5], 'prio', ARGV[9], 'idem', idem, 'tidx', KEYS[2])
redis.call('ZADD', KEYS[2], 0, ARGV[1])
redis.call('HINCRBY', KEYS[4], 'queued', 1)
redis.call('HINCRBY', KEYS[5], ARGV[5], 1)
redis.call('ZADD', KEYS[6], now, ARGV[1])
return {1, ARGV[1]}
`)

// unsentScript returns the queued jobs marked unsent for at least an age,
// pushing their mark forward so that other gateways sweeping at the same
// time leave them alone; marks of jobs that are gone or no longer queued
// are dropped.
//
// KEYS: unsent
// ARGV: age ms, max, job key prefix
// Returns {{id, priority, pool}, ...}.
var unsentScript = redis.NewScript(luaNow + `
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]), 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  local f = redis.call('HMGET', ARGV[3] .. id, 'status', 'prio', 'pool')
  if f[1] == 'queued' then
    redis.call('ZADD', KEYS[1], 'XX', now, id)
    table.insert(out, {id, f[2] or '', f[3] or ''})
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
`)

// updateScript is the compare-and-set of a job record. The result body is
// written when the job becomes final and never changes after; the job is
// then indexed for expiry and announced.
//
// KEYS: job, counts, pending, finished index
// ARGV: expected revision, fields, status, id, finished at ms, has result
// (1/0), result body, retention ms, events channel, finished event
// Returns the new revision, 0 on a revision mismatch, -1 if the job is gone.
var updateScript = redis.NewScript(luaFinal + `
local cur = redis.call('HGET', KEYS[1], 'rev')
if not cur then return -1 end
if cur ~= ARGV[1] then return 0 end
local f = redis.call('HMGET', KEYS[1], 'status', 'pool', 'idem')
local old, new, pool, idem = f[1], ARGV[3], f[2], f[3]
local rev = tonumber(cur) + 1
redis.call('HSET', KEYS[1], 'data', ARGV[2], 'rev', rev, 'status', new)
if not final(old) then
  if ARGV[6] == '1' then
    redis.call('HSET', KEYS[1], 'res', ARGV[7])
  else
    redis.call('HDEL', KEYS[1], 'res')
  end
end
if old ~= new then
  redis.call('HINCRBY', KEYS[2], old, -1)
  redis.call('HINCRBY', KEYS[2], new, 1)
  if old == 'queued' then redis.call('HINCRBY', KEYS[3], pool, -1) end
  if new == 'queued' then redis.call('HINCRBY', KEYS[3], pool, 1) end
  if final(new) and not final(old) then
    redis.call('ZADD', KEYS[4], ARGV[5], ARGV[4])
    if idem and idem ~= '' and redis.call('GET', idem) == ARGV[4] then
      redis.call('PEXPIRE', idem, ARGV[8])
    end
    redis.call('PUBLISH', ARGV[9], ARGV[10])
  end
end
return rev
`)

// expireScript deletes jobs finished before a time, with their index
// entries and idempotency keys.
//
// KEYS: finished index, counts, unsent
// ARGV: before ms (exclusive), max, job key prefix
// Returns how many jobs it deleted.
var expireScript = redis.NewScript(`
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  local key = ARGV[3] .. id
  local f = redis.call('HMGET', key, 'status', 'idem', 'tidx')
  if f[1] then
    redis.call('HINCRBY', KEYS[2], f[1], -1)
    if f[3] and f[3] ~= '' then redis.call('ZREM', f[3], id) end
    if f[2] and f[2] ~= '' and redis.call('GET', f[2]) == id then redis.call('DEL', f[2]) end
    redis.call('DEL', key)
  end
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[3], id)
end
return #ids
`)
