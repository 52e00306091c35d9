package redisstore

import "github.com/redis/go-redis/v9"

// The Lua scripts of the queue, and the create script that writes a record
// (as jobrecords lays it out) and queues it atomically; the record's other
// changes are jobrecords' scripts. Keys other than KEYS[...] are built
// inside the scripts from the store prefix; every key of a store shares one
// hash tag, so they live in one Redis Cluster slot.

// createScript records a job, enqueues it and announces it, unless the
// idempotency key names a job that still exists.
//
// KEYS: job, tenant index, idempotency key, queue stream, counts, pending
// ARGV: id, fields, request body, tenant, pool, use idempotency (1/0),
// idempotency TTL ms, job key prefix, events channel, enqueued event
// Returns {1, id} when created, {0, existing id} when replayed.
var createScript = redis.NewScript(`
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
  'status', 'queued', 'pool', ARGV[5], 'idem', idem, 'tidx', KEYS[2])
redis.call('ZADD', KEYS[2], 0, ARGV[1])
redis.call('XADD', KEYS[4], '*', 'id', ARGV[1], 'pool', ARGV[5])
redis.call('HINCRBY', KEYS[5], 'queued', 1)
redis.call('HINCRBY', KEYS[6], ARGV[5], 1)
redis.call('PUBLISH', ARGV[9], ARGV[10])
return {1, ARGV[1]}
`)

// fetchScript moves due delayed entries back to the stream, reclaims
// entries whose lease lapsed (when asked), reads new entries, and returns
// each with its job record.
//
// KEYS: queue stream, delayed set
// ARGV: group, consumer, count, reclaim (1/0), lease ms, reclaim cursor,
// job key prefix
// Returns {next cursor, {{entry id, job id, pool, fields, request,
// result, revision}, ...}}.
var fetchScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 256)
for _, m in ipairs(due) do
  local sep = string.find(m, '|', 1, true)
  redis.call('XADD', KEYS[1], '*', 'id', string.sub(m, 1, sep - 1), 'pool', string.sub(m, sep + 1))
  redis.call('ZREM', KEYS[2], m)
end
local out = {}
local n = tonumber(ARGV[3])
local cursor = ARGV[6]
local function add(entry)
  local id, pool = '', ''
  for i = 1, #entry[2], 2 do
    if entry[2][i] == 'id' then id = entry[2][i + 1] elseif entry[2][i] == 'pool' then pool = entry[2][i + 1] end
  end
  local f = redis.call('HMGET', ARGV[7] .. id, 'data', 'req', 'res', 'rev')
  table.insert(out, {entry[1], id, pool, f[1], f[2], f[3], f[4]})
end
if ARGV[4] == '1' then
  local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[5], cursor, 'COUNT', n)
  cursor = r[1]
  for _, e in ipairs(r[2]) do
    if e then add(e) end
  end
end
if #out < n then
  local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', n - #out, 'STREAMS', KEYS[1], '>')
  if r then
    for _, e in ipairs(r[1][2]) do add(e) end
  end
end
return {cursor, out}
`)

// luaOwned reports whether the consumer ARGV[2] of group ARGV[1] holds
// entry id of stream KEYS[1].
const luaOwned = `
local function owned(id)
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  return p[1] ~= nil and p[1][2] == ARGV[2]
end
`

// extendScript resets the idle time of the entries the consumer still
// holds.
//
// KEYS: queue stream
// ARGV: group, consumer, entry ids...
var extendScript = redis.NewScript(luaOwned + `
local n = 0
for i = 3, #ARGV do
  if owned(ARGV[i]) then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    n = n + 1
  end
end
return n
`)

// ackScript removes an entry the consumer holds.
//
// KEYS: queue stream
// ARGV: group, consumer, entry id
var ackScript = redis.NewScript(luaOwned + `
if not owned(ARGV[3]) then return 0 end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
return 1
`)

// requeueScript replaces an entry the consumer holds with a delayed one.
//
// KEYS: queue stream, delayed set
// ARGV: group, consumer, entry id, "id|pool", delay ms
var requeueScript = redis.NewScript(luaOwned + `
if not owned(ARGV[3]) then return 0 end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), ARGV[4])
return 1
`)
