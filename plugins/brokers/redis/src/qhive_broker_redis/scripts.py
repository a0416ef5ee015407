"""The Lua scripts of the Redis broker.

Every step that touches more than one key of a queue runs as one script, so it
is atomic (Redis runs a script to its end before anything else) and costs one
round trip. Scripts name every key they touch in ``KEYS``, and a queue's keys
share the hash tag ``{<queue>}``, so they also run on Redis Cluster.

Times come from the server (``TIME``), never from the caller: every host of a
cluster then shares one clock for receipt deadlines and statistics expiry.

Message ids are ``<16-digit sequence>-<8 hex digits>``: the sequence (a per-queue
counter) orders them as they were enqueued, the random suffix keeps an id taken
before ``delete_queue()`` from matching a message enqueued after it, when the
counter starts again.
"""

from __future__ import annotations

#: How many ids at the head of the waiting list a message put back is merged with.
MERGE_WINDOW = 128
#: The most expired receipts one claim moves back to the waiting list.
RECOVER_LIMIT = 1000

_COMMON = f"""
local function server_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function seq(id)
  return tonumber(string.sub(id, 1, 16)) or 0
end

-- Put ids that were in flight back at the head of the waiting list, in
-- enqueue order among themselves and the first {MERGE_WINDOW} ids waiting (they
-- are older than nearly everything waiting, so that is their place).
local function put_back(waiting, ids)
  table.sort(ids, function(a, b) return seq(a) < seq(b) end)
  local head = redis.call('LRANGE', waiting, 0, {MERGE_WINDOW - 1})
  local merged, i, j = {{}}, 1, 1
  while i <= #ids or j <= #head do
    if j > #head or (i <= #ids and seq(ids[i]) < seq(head[j])) then
      merged[#merged + 1] = ids[i]
      i = i + 1
    else
      merged[#merged + 1] = head[j]
      j = j + 1
    end
  end
  if #head > 0 then
    redis.call('LTRIM', waiting, #head, -1)
  end
  -- LPUSH puts its last argument first: push the merged ids backwards.
  local backwards = {{}}
  for k = #merged, 1, -1 do
    backwards[#backwards + 1] = merged[k]
  end
  redis.call('LPUSH', waiting, unpack(backwards))
end
"""

#: KEYS: seq, waiting, payloads. ARGV: id suffix, payload, payload, ...
#: Returns the new ids in order.
ENQUEUE = """
local n = #ARGV - 1
local last = redis.call('INCRBY', KEYS[1], n)
local ids, fields = {}, {}
for i = 1, n do
  local id = string.format('%016d-%s', last - n + i, ARGV[1])
  ids[i] = id
  fields[2 * i - 1] = id
  fields[2 * i] = ARGV[i + 1]
end
redis.call('HSET', KEYS[3], unpack(fields))
redis.call('RPUSH', KEYS[2], unpack(ids))
return ids
"""

#: KEYS: waiting, inflight, payloads, deliveries. ARGV: count, retry in ms.
#: Returns id, payload, deliveries, id, payload, deliveries, ...
CLAIM = _COMMON + f"""
local now = server_ms()
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, {RECOVER_LIMIT})
if #expired > 0 then
  redis.call('ZREM', KEYS[2], unpack(expired))
  put_back(KEYS[1], expired)
end
local ids = redis.call('LPOP', KEYS[1], ARGV[1])
if not ids then
  return {{}}
end
local deadline = now + tonumber(ARGV[2])
local out = {{}}
for _, id in ipairs(ids) do
  local payload = redis.call('HGET', KEYS[3], id)
  if payload then
    redis.call('ZADD', KEYS[2], deadline, id)
    out[#out + 1] = id
    out[#out + 1] = payload
    out[#out + 1] = redis.call('HINCRBY', KEYS[4], id, 1)
  else
    -- finished (acknowledged, deleted) while it was waiting again: forget it
    redis.call('HDEL', KEYS[4], id)
  end
end
return out
"""

#: KEYS: waiting, inflight, payloads. ARGV: id. Returns 1 if it was in flight.
RELEASE = _COMMON + """
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then
  return 0
end
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 0 then
  return 0
end
put_back(KEYS[1], {ARGV[1]})
return 1
"""

#: KEYS: inflight. ARGV: retry in ms, id, id, ... Renews the receipts of ids still in
#: flight (a receipt that ran out but was not yet claimed again is still ours).
TOUCH = _COMMON + """
local deadline = server_ms() + tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', 'GT', deadline, ARGV[i])
end
"""

#: KEYS: index, value key. ARGV: value, ttl in ms, stat key.
SET_STAT = _COMMON + """
local now = server_ms()
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
"""

#: KEYS: index. Drops the expired stat keys from the index and returns the others.
LIVE_STATS = _COMMON + """
local now = server_ms()
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
"""
