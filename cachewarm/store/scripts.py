"""The Lua scripts every write runs, each with the KEYS and ARGV it takes.

Every multi-step change is one script, so Redis applies it atomically on its node: the
fence, the deadline and the slot-state check happen in the same step as the write they
guard (see the store package's docstring). The fixed ARGV of the fenced scripts come
first, in the order FENCE_CHECK and SPREAD read them.
"""

from __future__ import annotations

import redis.exceptions

from ..errors import DeadlineExceeded, LockLost, SinkError
from .wire import Script

# ARGV 1-3 of every fenced script: lock token ('' = no token check; KEYS[1] is the lock
# otherwise), run deadline ms, lease end ms (0 = none). `k` counts the lock key.
FENCE_CHECK = """
local token, deadline, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local k = 0
if token ~= '' then
  k = 1
  if redis.call('GET', KEYS[1]) ~= token then return redis.error_reply('CACHEWARM_FENCED') end
end
if deadline > 0 or lease > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if lease > 0 and now > lease then return redis.error_reply('CACHEWARM_FENCED') end
  if deadline > 0 and now > deadline then return redis.error_reply('CACHEWARM_DEADLINE') end
end
"""

# ARGV 4-6: a listing's TTL is ttl + a jitter spread over the batch, so keys written
# together do not all expire together; computed here so the client sends one TTL.
SPREAD = """
local ttl, jitter, offset = tonumber(ARGV[4]), tonumber(ARGV[5]) + 1, tonumber(ARGV[6])
local function px(i) return ttl + (offset + i * 7919) % jitter end
"""

# Prepended to a script that takes its keys in ARGV (numkeys 0): ARGV[1] counts them, then
# come the keys, then the script's own arguments. Redis 7+; an older node refuses to load
# it and is written to one slot per script.
ACROSS_SLOTS = """#!lua flags=allow-cross-slot-keys
local nkeys = tonumber(ARGV[1])
local keys, args = {}, {}
for i = 1, nkeys do keys[i] = ARGV[i + 1] end
for i = nkeys + 2, #ARGV do args[#args + 1] = ARGV[i] end
local KEYS, ARGV = keys, args
"""

# KEYS: [lock], then (listing key, its slot's state key) per product.
# ARGV: fence, spread, state TTL ms, a fresh state value, then (state learned before the
# read, payload) per product ('' payload = the listing query has no row: delete).
# Returns {written, unchanged, removed, {1-based positions skipped}, {their slot's state
# now}}: the last saves the warm a round trip before reading its next batch.
WRITE_SCRIPT = (
    FENCE_CHECK
    + SPREAD
    + """
local state_ttl, fresh = ARGV[7], ARGV[8]
local written, unchanged, removed, skipped, states = 0, 0, 0, {}, {}
for i = 1, (#KEYS - k) / 2 do
  local key, state_key = KEYS[k + 2 * i - 1], KEYS[k + 2 * i]
  local learned, payload = ARGV[7 + 2 * i], ARGV[8 + 2 * i]
  if payload == '' then
    removed = removed + redis.call('DEL', key)
  else
    local state = redis.call('GET', state_key)
    if state ~= learned then
      if not state then
        state = fresh
        redis.call('SET', state_key, fresh, 'PX', state_ttl)
      end
      skipped[#skipped + 1] = i
      states[#states + 1] = state
    elseif redis.call('GET', key) == payload then
      redis.call('PEXPIRE', key, px(i))
      unchanged = unchanged + 1
    else
      redis.call('SET', key, payload, 'PX', px(i))
      written = written + 1
    end
  end
end
return {written, unchanged, removed, skipped, states}
"""
)
WRITE = Script.of(WRITE_SCRIPT, across_prelude=ACROSS_SLOTS)

# KEYS: [lock], then listing keys. ARGV: fence, spread.
# Refreshes the TTL of listings an incremental warm knows are current; returns the
# 1-based positions of those that are gone (expired, evicted, invalidated): re-read them.
TOUCH_SCRIPT = (
    FENCE_CHECK
    + SPREAD
    + """
local missing = {}
for i = k + 1, #KEYS do
  if redis.call('PEXPIRE', KEYS[i], px(i)) == 0 then
    missing[#missing + 1] = i - k
  end
end
return missing
"""
)
TOUCH = Script.of(TOUCH_SCRIPT, across_prelude=ACROSS_SLOTS)

# KEYS: [lock], hot, hot meta (same slot). ARGV: fence, hot JSON, expire-at ms, meta pairs.
PUBLISH_SCRIPT = (
    FENCE_CHECK
    + """
redis.call('SET', KEYS[k + 1], ARGV[4], 'PXAT', ARGV[5])
redis.call('DEL', KEYS[k + 2])
redis.call('HSET', KEYS[k + 2], unpack(ARGV, 6))
return 1
"""
)
PUBLISH = Script.of(PUBLISH_SCRIPT)  # its keys share a slot

# KEYS: (listing key, its slot's state key) per product. ARGV: fresh state, state TTL ms.
# Returns the number of listings deleted.
INVALIDATE_SCRIPT = """
local deleted = 0
for i = 1, #KEYS, 2 do
  deleted = deleted + redis.call('DEL', KEYS[i])
  redis.call('SET', KEYS[i + 1], ARGV[1], 'PX', ARGV[2])
end
return deleted
"""
INVALIDATE = Script.of(INVALIDATE_SCRIPT, across_prelude=ACROSS_SLOTS)

# KEYS: state keys. ARGV: fresh state, state TTL ms. Returns each slot's state, creating
# missing ones: a warm learns them all before its first read.
ENSURE_SCRIPT = """
local states = {}
for i = 1, #KEYS do
  local state = redis.call('GET', KEYS[i])
  if state then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
  else
    state = ARGV[1]
    redis.call('SET', KEYS[i], state, 'PX', ARGV[2])
  end
  states[i] = state
end
return states
"""
ENSURE = Script.of(ENSURE_SCRIPT, across_prelude=ACROSS_SLOTS)


# KEYS: state keys. ARGV: a fresh state, state TTL ms. Gives every slot named a fresh
# state, so a warm in flight writes nothing it read before: with every slot, an
# invalidation of everything, including products no listing is cached for yet.
RENEW_SCRIPT = """
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
end
return #KEYS
"""
RENEW = Script.of(RENEW_SCRIPT, across_prelude=ACROSS_SLOTS)


SCRIPTS = (WRITE, TOUCH, PUBLISH, INVALIDATE, ENSURE, RENEW)
# The same scripts for one call per cluster node (all but PUBLISH, whose keys share a slot).
ACROSS = {s: s.across for s in SCRIPTS if s.across is not None}


def script_error(exc: redis.exceptions.ResponseError, where: str, lock_key: str = "") -> Exception:
    """A script's refusal as the run's error: the fence and the deadline say which."""
    message = str(exc)
    if message.startswith("CACHEWARM_FENCED"):
        return LockLost(f"Redis lock {lock_key} is no longer held by this run; wrote nothing more")
    if message.startswith("CACHEWARM_DEADLINE"):
        return DeadlineExceeded("run passed run.max_seconds while writing to Redis; stopped")
    return SinkError(f"{where} rejected a write: {message}")
