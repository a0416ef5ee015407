"""The Lua scripts of the Redis broker.

Every step that touches more than one key of a queue runs as one script, so it
is atomic (Redis runs a script to its end before anything else) and costs one
round trip. Scripts name every key they touch in ``KEYS``, and a queue's keys
share the hash tag ``{<queue>}``, so they also run on Redis Cluster.

Times come from the server (``TIME``), never from the caller: every host of a
cluster then shares one clock for receipt deadlines, due times and statistics
expiry.

Message ids are ``<16-digit sequence>-<8 hex digits>``, plus ``:p<priority>`` for a
priority other than 0: the sequence (a per-queue counter) orders them as they were
enqueued, the random suffix keeps an id taken before ``delete_queue()`` from
matching a message enqueued after it, when the counter starts again. The priority
travels in the id, so a message put back (released, redelivered, due) finds its
place without a lookup, and finishing one has nothing more to clean up.

Priority 0 ids wait in the LIST ``waiting`` (the plain, fast path); the others in
the ZSET ``prioritized``, scored ``-priority * 2^44 + sequence``: higher priorities
first, enqueue order among equals, negative scores for priorities above 0 and
positive ones below, and exact as doubles (|score| < 2^48 while the sequence stays
below 2^44). A claim takes priorities above 0, then the list, then those below 0.
"""

from __future__ import annotations

#: How many ids at the head of the waiting list a message put back is merged with.
MERGE_WINDOW = 128
#: The most expired receipts (and, separately, due delayed messages) one claim moves
#: back to be waiting.
RECOVER_LIMIT = 1000
#: The id pushed onto an empty waiting list to wake consumers blocked on it in
#: ``BLMOVE`` when a message arrives elsewhere (``prioritized``, ``delayed``). It has
#: no payload, so a claim drops it; it is only pushed onto an empty list, so there is
#: never more than one, always at the head (its sequence reads as 0).
WAKE_TOKEN = "wake"
#: 2^44: the sequence's share of a priority score.
_PRIORITY_STEP = 1 << 44

_COMMON = f"""
local function server_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function seq(id)
  return tonumber(string.sub(id, 1, 16)) or 0
end

local function priority(id)
  return tonumber(string.match(id, ':p(%-?%d+)$')) or 0
end

local function rank(id)
  return -priority(id) * {_PRIORITY_STEP} + seq(id)
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

-- Make ids waiting again where their priority says: priority 0 in its place in
-- the list, the others in the ZSET. Returns how many went to the ZSET.
local function requeue(waiting, prioritized, ids)
  local plain, ranked = {{}}, 0
  for _, id in ipairs(ids) do
    if priority(id) == 0 then
      plain[#plain + 1] = id
    else
      redis.call('ZADD', prioritized, rank(id), id)
      ranked = ranked + 1
    end
  end
  if #plain > 0 then
    put_back(waiting, plain)
  end
  return ranked
end

-- Wake the consumers blocked on an empty waiting list (a push onto a list that
-- is not empty wakes nobody, and one that is not empty wakes them anyway).
local function wake(waiting)
  if redis.call('LLEN', waiting) == 0 then
    redis.call('RPUSH', waiting, '{WAKE_TOKEN}')
  end
end
"""

#: KEYS: seq, waiting, payloads. ARGV: id suffix, payload, payload, ...
#: Returns the new ids in order. The plain path: priority 0, no delay.
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

#: KEYS: seq, waiting, payloads, prioritized, delayed. ARGV: id suffix, payload,
#: delay in ms, priority, wake-up limit in ms. Returns the new id.
#: A delayed message waits in ``delayed`` (id → due, ms); blocked consumers are woken
#: to shorten their wait only if it falls due sooner than their wait ends anyway.
ENQUEUE_WITH = _COMMON + """
local id = string.format('%016d-%s', redis.call('INCR', KEYS[1]), ARGV[1])
local p = tonumber(ARGV[4])
if p ~= 0 then
  id = id .. ':p' .. p
end
redis.call('HSET', KEYS[3], id, ARGV[2])
local delay = tonumber(ARGV[3])
if delay > 0 then
  redis.call('ZADD', KEYS[5], server_ms() + delay, id)
  if delay >= tonumber(ARGV[5]) then
    return id
  end
elseif p ~= 0 then
  redis.call('ZADD', KEYS[4], rank(id), id)
else
  redis.call('RPUSH', KEYS[2], id)
  return id
end
wake(KEYS[2])
return id
"""

#: KEYS: waiting, inflight, payloads, deliveries, prioritized, delayed.
#: ARGV: count, retry in ms.
#: Returns id, payload, deliveries, id, payload, deliveries, ... or, when there is
#: nothing to take, the ms until the next delayed message or receipt falls due
#: (0: none), so that a blocked consumer waits no longer than that.
CLAIM = _COMMON + f"""
local now = server_ms()
local deadline = now + tonumber(ARGV[2])
local need = tonumber(ARGV[1])
local out = {{}}

local function take(ids)
  for _, id in ipairs(ids) do
    local payload = redis.call('HGET', KEYS[3], id)
    if payload then
      redis.call('ZADD', KEYS[2], deadline, id)
      out[#out + 1] = id
      out[#out + 1] = payload
      out[#out + 1] = redis.call('HINCRBY', KEYS[4], id, 1)
      need = need - 1
    else
      -- finished (acknowledged, deleted) while it was waiting again, or a wake token
      redis.call('HDEL', KEYS[4], id)
    end
  end
end

local function take_ranked(min, max)
  while need > 0 do
    local ids = redis.call('ZRANGEBYSCORE', KEYS[5], min, max, 'LIMIT', 0, need)
    if #ids == 0 then
      return
    end
    redis.call('ZREM', KEYS[5], unpack(ids))
    local asked = need
    take(ids)
    if #ids < asked then
      return
    end
  end
end

-- The first of a ZSET scored by time: what is due now is moved (bounded), else its
-- score is the next due time. One command either way when nothing is due.
local soonest = nil
local function due_from(key)
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2]
  if not first then
    return 0
  end
  first = tonumber(first)
  if first > now then
    if not soonest or first < soonest then
      soonest = first
    end
    return 0
  end
  local due = redis.call('ZRANGEBYSCORE', key, '-inf', now, 'LIMIT', 0, {RECOVER_LIMIT})
  redis.call('ZREM', key, unpack(due))
  return requeue(KEYS[1], KEYS[5], due)
end

local ranked = due_from(KEYS[2])  -- receipts that ran out
-- One cheap look keeps the plain path (no priorities, no delays) as it was.
local more = redis.call('EXISTS', KEYS[5], KEYS[6])
if more > 0 then
  ranked = ranked + due_from(KEYS[6])  -- delayed messages now due
  take_ranked('-inf', '(0')
end
while need > 0 do
  local ids = redis.call('LPOP', KEYS[1], need)
  if not ids then
    break
  end
  local asked = need
  take(ids)
  if #ids < asked then
    break
  end
end
if more > 0 and need > 0 then
  take_ranked('(0', '+inf')
end
if ranked > 0 and redis.call('EXISTS', KEYS[5]) == 1 then
  wake(KEYS[1])  -- the rest of what came back is for the other consumers
end
if #out > 0 then
  return out
end
-- Nothing taken: when to look again (0: no time known; after moving what was due,
-- the next due time is left unknown, and the wait is the usual one).
if not soonest then
  return 0
end
return math.max(1, soonest - now)
"""

#: KEYS: waiting, inflight, payloads, prioritized, delayed. ARGV: id, delay in ms,
#: wake-up limit in ms. Returns 1 if it was in flight.
RELEASE = _COMMON + """
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then
  return 0
end
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 0 then
  return 0
end
local delay = tonumber(ARGV[2])
if delay > 0 then
  redis.call('ZADD', KEYS[5], server_ms() + delay, ARGV[1])
  if delay < tonumber(ARGV[3]) then
    wake(KEYS[1])
  end
elseif requeue(KEYS[1], KEYS[4], {ARGV[1]}) > 0 then
  wake(KEYS[1])
end
return 1
"""

#: KEYS: waiting, prioritized. Messages that can be taken now: the list without a
#: wake token (only ever at its head), and the prioritized ones.
QUEUE_SIZE = f"""
local size = redis.call('LLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2])
if redis.call('LINDEX', KEYS[1], 0) == '{WAKE_TOKEN}' then
  size = size - 1
end
return size
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
