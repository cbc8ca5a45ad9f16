"""The Lua scripts of the Redis engine (key layout: :mod:`cluster.redis_layout`).

Each runs atomically in Redis, so a publication's offset, its history entry and
its PUBLISH can never disagree, and a read sees the epoch, the top offset and
the entries of one instant. Every command connection loads them first (SCRIPT
LOAD, :mod:`cluster.redis_pipe`); they are called with EVALSHA and re-sent
with EVAL when the server answers NOSCRIPT all the same (``SCRIPT FLUSH``),
which also caches them again.
"""

from __future__ import annotations

import hashlib


class Script:
    """A Lua script and its SHA1 (computed here, as Redis does)."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source.strip() + "\n"
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    def __repr__(self) -> str:
        return f"<Script {self.name} {self.sha[:8]}>"


#: Append a publication to history and PUBLISH it, atomically.
#: KEYS: stream, meta. ARGV: pub/sub channel, envelope (a msgpack fixmap), history
#: size, ttl (ms), an epoch to use if the history is new. Returns {offset, epoch}.
#: The PUBLISHed message is the envelope with ``o`` (offset) and ``e`` (epoch)
#: appended: the fixmap's size byte grows by 2 and the two pairs follow.
PUBLISH = Script(
    "publish",
    r"""
local stream, meta = KEYS[1], KEYS[2]
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then
  epoch = ARGV[5]
  redis.call('DEL', stream)
  redis.call('HSET', meta, 'epoch', epoch, 'top', 0)
end
local top = redis.call('HINCRBY', meta, 'top', 1)
local envelope = ARGV[2]
redis.call('XADD', stream, 'MAXLEN', ARGV[3], string.format('%d-0', top), 'd', envelope)
redis.call('PEXPIRE', stream, ARGV[4])
redis.call('PEXPIRE', meta, ARGV[4])
redis.call('PUBLISH', ARGV[1],
  string.char(string.byte(envelope, 1) + 2) .. string.sub(envelope, 2)
  .. '\161o' .. cmsgpack.pack(top) .. '\161e' .. cmsgpack.pack(epoch))
return {top, epoch}
""",
)

#: The same on a Redis Cluster: SPUBLISH, so the message stays on the slot's shard.
PUBLISH_SHARDED = Script(
    "publish_sharded", PUBLISH.source.replace("redis.call('PUBLISH'", "redis.call('SPUBLISH'")
)

#: Read history; creates nothing (history exists from the first publication, a
#: read of a channel without one answers the empty position, cluster.broker).
#: KEYS: stream, meta. ARGV: the engine's instance name for empty epochs, history
#: ttl (ms), history size, since offset ('' = none), since epoch, limit (-1 =
#: all). Returns {top, epoch, ok (1, or 0 when ``since`` is gone), first offset,
#: envelope, envelope, ...} with consecutive offsets. An empty position's time is
#: Redis's own (TIME), the clock PEXPIRE uses too, the same for every node.
HISTORY = Script(
    "history",
    r"""
local stream, meta = KEYS[1], KEYS[2]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local empty = '~' .. ARGV[1] .. '.' .. string.format('%d', now)
local since, sepoch = nil, ARGV[5]
if ARGV[4] ~= '' then
  since = tonumber(ARGV[4])
  if string.sub(sepoch, 1, 1) == '~' then
    local inst, stamp = string.match(sepoch, '^~(.*)%.(%d+)$')
    local age = stamp and string.len(stamp) <= 16 and now - tonumber(stamp)
    if inst ~= ARGV[1] or since ~= 0 or not age or age < 0 or age >= tonumber(ARGV[2]) then
      sepoch = nil
    else
      sepoch = true
    end
  end
end
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then
  if since ~= nil and sepoch ~= true then return {0, empty, 0, 0} end
  return {0, empty, 1, 1}
end
if sepoch == true then sepoch = epoch end
local top = tonumber(redis.call('HGET', meta, 'top') or '0')
local kept = math.min(redis.call('XLEN', stream), tonumber(ARGV[3]))
local oldest = top - kept + 1
local limit = tonumber(ARGV[6])
local first, last = oldest, top
if since ~= nil then
  if sepoch ~= epoch or since < oldest - 1 or since > top then
    return {top, epoch, 0, 0}
  end
  first = since + 1
  if limit >= 0 and first + limit - 1 < last then last = first + limit - 1 end
elseif limit >= 0 and last - limit + 1 > first then
  first = last - limit + 1
end
local result = {top, epoch, 1, first}
if first <= last then
  local entries = redis.call('XRANGE', stream, string.format('%d-0', first),
                             string.format('%d-0', last))
  for i, entry in ipairs(entries) do result[4 + i] = entry[2][2] end
end
return result
""",
)

#: Add or refresh presence entries, each expiring ``ttl`` ms from now (Redis's
#: clock, the same for every node). KEYS: presence hashes. ARGV: ttl (ms), then
#: one (client id, value) pair per key. The hash's own TTL is only ever extended
#: (nodes may use different TTLs). Returns the number of entries written.
PRESENCE_ADD = Script(
    "presence_add",
    r"""
local t = redis.call('TIME')
local ttl = tonumber(ARGV[1])
local expires = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + ttl)
for i, key in ipairs(KEYS) do
  redis.call('HSET', key, ARGV[2 * i], expires .. ':' .. ARGV[2 * i + 1])
  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
end
return #KEYS
""",
)

#: Live presence entries of one channel; expired ones are deleted on the way.
#: KEYS: presence hash. Returns {client id, value, client id, value, ...}.
PRESENCE_GET = Script(
    "presence_get",
    r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local all = redis.call('HGETALL', KEYS[1])
local live = {}
for i = 1, #all, 2 do
  local value = all[i + 1]
  local sep = string.find(value, ':', 1, true)
  if sep and tonumber(string.sub(value, 1, sep - 1)) > now then
    live[#live + 1] = all[i]
    live[#live + 1] = string.sub(value, sep + 1)
  else
    redis.call('HDEL', KEYS[1], all[i])
  end
end
return live
""",
)

#: Every script of a Redis server (or Sentinel's primary).
ALL = (PUBLISH, HISTORY, PRESENCE_ADD, PRESENCE_GET)
#: Every script of a Redis Cluster.
ALL_SHARDED = (PUBLISH_SHARDED, HISTORY, PRESENCE_ADD, PRESENCE_GET)
