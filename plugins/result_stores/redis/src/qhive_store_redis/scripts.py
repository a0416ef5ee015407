"""The Lua scripts of the Redis result store.

Each one runs atomically in Redis, so the save rules hold however many
processes save the same ids at once. ``KEYS[1]`` is always the project's key
prefix ``qhive:{<name>}:``; the other keys a script touches are made from it or
read from a result's hash, and share its hash tag, so on a Redis Cluster they
all live in one slot.

A result is the hash ``<prefix>result:<id>``:

* ``blob`` — the signed package of the whole result (see ``qhive.result_packages``);
* ``success`` (``1``/``0``) and ``attempts`` — what the save rules need, outside
  the signature so the script can read them (``attempts`` is overlaid on the
  decoded result: the script, not the writer, knows the stored count);
* ``g``, ``n``, ``r`` — the keys of its group index, name index and the
  ``save_limit`` set it is counted in (``''`` for none), so that deleting or
  pruning it removes it from all three.

A save announces what it wrote on the channel ``<prefix>saved``, in the same
script (so in the batch's one round trip), for :meth:`RedisResultStore.wait`: one
``PUBLISH`` per batch of a JSON array of ``result:<id>``, ``group:<group>`` and
``name:<name>`` (the written results' keys less the prefix, each once) — and only
while someone is subscribed (``PUBSUB NUMSUB``), so a save nobody waits for pays
one lookup in a dict. Per-result channels were not taken: a batch would publish
up to three times per result, where one channel costs one ``PUBLISH`` per batch
and a waiter ignores announcements that do not name what it waits for.

Cluster statistics (for brokers that keep none) are plain keys
``<prefix>stat:<key>`` with an expiry, found through the index ``<prefix>stats``
(a ZSET of keys scored by expiry) rather than ``KEYS`` or ``SCAN``. Their
expiry is read on the server's clock (``TIME``), as the broker's is.
"""

# ARGV: ttl (seconds, 0 = for ever), save_limit, then 8 per result:
#   id, blob, success, attempt_count, score, group key, name key, ranked key
# where "ranked key" is the save_limit set of an unpinned success ('' if the
# result is not counted). Returns per result {'saved', attempts},
# {'final', attempts, blob} (a success was stored) or {'dropped'} (save_limit -1).
# Announces the written results on <prefix>saved if anyone listens (see above).
SAVE = """
local prefix, ttl, limit = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local function keep(key)
  if ttl > 0 then redis.call('EXPIRE', key, ttl) else redis.call('PERSIST', key) end
end
local channel = prefix .. 'saved'
local listened = redis.call('PUBSUB', 'NUMSUB', channel)[2] > 0
local answers, ranked, seen, written, told = {}, {}, {}, {}, {}
for i = 3, #ARGV, 8 do
  local id, blob, success, attempts = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local score, gkey, nkey, rkey = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6], ARGV[i + 7]
  local key = prefix .. 'result:' .. id
  local stored = redis.call('HMGET', key, 'success', 'attempts', 'blob')
  if stored[1] == '1' then
    -- a success is final
    answers[#answers + 1] = {'final', stored[2], stored[3]}
  elseif rkey ~= '' and limit < 0 then
    -- save_limit -1 keeps no unpinned success; a stored failure stays
    answers[#answers + 1] = {'dropped'}
  else
    if stored[1] == '0' then attempts = tostring(tonumber(stored[2]) + 1) end
    redis.call('HSET', key, 'blob', blob, 'success', success, 'attempts', attempts,
               'g', gkey, 'n', nkey, 'r', rkey)
    keep(key)
    for _, index in ipairs({gkey, nkey, rkey}) do
      if index ~= '' then
        redis.call('ZADD', index, score, id)
        keep(index)
      end
    end
    if rkey ~= '' and not seen[rkey] then
      seen[rkey] = true
      ranked[#ranked + 1] = rkey
    end
    if listened then
      written[#written + 1] = 'result:' .. id
      for _, index in ipairs({gkey, nkey}) do
        if index ~= '' and not told[index] then  -- a batch's results often share a group
          told[index] = true
          written[#written + 1] = string.sub(index, #prefix + 1)
        end
      end
    end
    answers[#answers + 1] = {'saved', attempts}
  end
end
if #written > 0 then redis.call('PUBLISH', channel, cjson.encode(written)) end
-- save_limit: drop the oldest counted successes beyond the limit of each set touched
if limit > 0 then
  for _, rkey in ipairs(ranked) do
    local doomed = redis.call('ZRANGE', rkey, 0, -(limit + 1))
    for _, id in ipairs(doomed) do
      local key = prefix .. 'result:' .. id
      local held = redis.call('HMGET', key, 'success', 'r', 'g', 'n')
      if held[1] == '1' and held[2] == rkey then
        redis.call('DEL', key)
        if held[3] and held[3] ~= '' then redis.call('ZREM', held[3], id) end
        if held[4] and held[4] ~= '' then redis.call('ZREM', held[4], id) end
      end
    end
    if #doomed > 0 then redis.call('ZREMRANGEBYRANK', rkey, 0, -(limit + 1)) end
  end
end
return answers
"""

# KEYS[2]: a group index. ARGV[1]: '1' to include failures. Returns the flat list
# id, blob, attempts of the results, newest first; drops ids whose result expired.
GROUP = """
local prefix, index, failures = KEYS[1], KEYS[2], ARGV[1] == '1'
local out = {}
for _, id in ipairs(redis.call('ZREVRANGE', index, 0, -1)) do
  local held = redis.call('HMGET', prefix .. 'result:' .. id, 'blob', 'attempts', 'success')
  if not held[1] then
    redis.call('ZREM', index, id)
  elseif failures or held[3] == '1' then
    out[#out + 1] = id
    out[#out + 1] = held[1]
    out[#out + 1] = held[2]
  end
end
return out
"""

# KEYS[2]: a group index. ARGV[1]: '1' to count only failures.
COUNT = """
local prefix, index, failures = KEYS[1], KEYS[2], ARGV[1] == '1'
local count = 0
for _, id in ipairs(redis.call('ZRANGE', index, 0, -1)) do
  local success = redis.call('HGET', prefix .. 'result:' .. id, 'success')
  if not success then
    redis.call('ZREM', index, id)
  elseif not failures or success == '0' then
    count = count + 1
  end
end
return count
"""

# KEYS[2]: a name index. Returns {id, blob, attempts} of the newest live result, or nil.
NEWEST = """
local prefix, index = KEYS[1], KEYS[2]
while true do
  local top = redis.call('ZREVRANGE', index, 0, 0)
  if #top == 0 then return false end
  local held = redis.call('HMGET', prefix .. 'result:' .. top[1], 'blob', 'attempts')
  if held[1] then return {top[1], held[1], held[2]} end
  redis.call('ZREM', index, top[1])
end
"""

# ARGV[1]: a task id. Returns 1 if it had a result.
DELETE = """
local id = ARGV[1]
local key = KEYS[1] .. 'result:' .. id
local held = redis.call('HMGET', key, 'g', 'n', 'r')
if redis.call('DEL', key) == 0 then return 0 end
for i = 1, 3 do
  if held[i] and held[i] ~= '' then redis.call('ZREM', held[i], id) end
end
return 1
"""

# KEYS[2]: a group index. Deletes the group's results and the index; returns how many.
DELETE_GROUP = """
local prefix, index = KEYS[1], KEYS[2]
local count = 0
for _, id in ipairs(redis.call('ZRANGE', index, 0, -1)) do
  local key = prefix .. 'result:' .. id
  local held = redis.call('HMGET', key, 'g', 'n', 'r')
  if held[1] == index and redis.call('DEL', key) == 1 then
    count = count + 1
    if held[2] ~= '' then redis.call('ZREM', held[2], id) end
    if held[3] ~= '' then redis.call('ZREM', held[3], id) end
  end
end
redis.call('DEL', index)
return count
"""

_SERVER_MS = """
local function server_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# ARGV: key, value, ttl (ms). Sets the value, indexes it and drops expired index
# entries; the index lives as long as its longest-lived stat.
SET_STAT = _SERVER_MS + """
local index, now, ttl = KEYS[1] .. 'stats', server_ms(), tonumber(ARGV[3])
redis.call('SET', KEYS[1] .. 'stat:' .. ARGV[1], ARGV[2], 'PX', ttl)
redis.call('ZADD', index, now + ttl, ARGV[1])
redis.call('ZREMRANGEBYSCORE', index, '-inf', now)
local last = redis.call('ZRANGE', index, -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', index, math.max(tonumber(last[2]) - now, 1))
"""

# ARGV[1]: a key prefix. Returns the live values whose key starts with it.
LIVE_STATS = _SERVER_MS + """
local index, now, wanted = KEYS[1] .. 'stats', server_ms(), ARGV[1]
redis.call('ZREMRANGEBYSCORE', index, '-inf', now)
local out = {}
for _, key in ipairs(redis.call('ZRANGEBYSCORE', index, '(' .. now, '+inf')) do
  if string.sub(key, 1, #wanted) == wanted then
    local value = redis.call('GET', KEYS[1] .. 'stat:' .. key)
    if value then out[#out + 1] = value end
  end
end
return out
"""
