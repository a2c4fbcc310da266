"""Redis: fenced batch writes, the hot-list publish, invalidation and read-only lookups.

Every write that must be atomic is one Lua script (module constants below) sent with
EVAL, so a flushed script cache can never fail a run. Batches are packed straight into
RESP and pipelined one batch deep: Redis applies batch n while Python encodes batch n+1,
and memory stays bounded by two batches whatever the size of the hot set.

Three guards live in the write script:
- the fence: with the Redis lock, a run whose token no longer holds the lock writes
  nothing (a paused process cannot overwrite the new holder's work);
- the deadline, on Redis' own clock: a run past `run.max_seconds` writes nothing;
- the tombstone: `invalidate` bumps an epoch counter and stamps each product with it;
  a warm knows the epoch before reading a batch from MySQL and skips any product
  invalidated since, so a value read before an edit can never be written after it.
  Tombstones live `run.max_seconds` plus a margin, longer than any run may write.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.exceptions

from .config import RedisSettings
from .errors import DeadlineExceeded, LockLost, SinkError
from .keys import Keys
from .lock import Fence
from .urls import redact_url

FENCE_CHECK = """
local token, deadline = ARGV[1], tonumber(ARGV[2])
if token ~= '' and redis.call('GET', KEYS[1]) ~= token then
  return redis.error_reply('CACHEWARM_FENCED lock ' .. KEYS[1] .. ' is no longer held by this run')
end
if deadline > 0 then
  local now = redis.call('TIME')
  if tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) > deadline then
    return redis.error_reply('CACHEWARM_DEADLINE run passed its deadline')
  end
end
"""

# A listing's TTL is ttl + a jitter spread over the batch, so keys written together do
# not all expire together; computed here so the client sends one TTL per batch.
SPREAD = """
local ttl, jitter, offset = tonumber(ARGV[3]), tonumber(ARGV[4]) + 1, tonumber(ARGV[5])
local function px(i) return ttl + (offset + i * 7919) % jitter end
"""

# KEYS: lock, epoch, then (listing key, tombstone key) per product.
# ARGV: token, deadline ms, ttl ms, jitter ms, offset, read epoch, then one payload per
# product ('' = the listing query has no row: delete).
# Returns {written, unchanged, removed, {1-based positions skipped as invalidated},
# epoch now}: the last saves the warm a round trip before reading its next batch.
WRITE_SCRIPT = (
    FENCE_CHECK
    + SPREAD
    + """
local epoch = tonumber(ARGV[6])
local written, unchanged, removed, skipped = 0, 0, 0, {}
for i = 1, (#KEYS - 2) / 2 do
  local key, payload = KEYS[2 * i + 1], ARGV[6 + i]
  if payload == '' then
    removed = removed + redis.call('DEL', key)
  else
    local stamp = redis.call('GET', KEYS[2 * i + 2])
    if stamp and tonumber(stamp) > epoch then
      skipped[#skipped + 1] = i
    elseif redis.call('GET', key) == payload then
      redis.call('PEXPIRE', key, px(i))
      unchanged = unchanged + 1
    else
      redis.call('SET', key, payload, 'PX', px(i))
      written = written + 1
    end
  end
end
return {written, unchanged, removed, skipped, tonumber(redis.call('GET', KEYS[2]) or '0')}
"""
)

# KEYS: lock, then listing keys. ARGV: token, deadline ms, ttl ms, jitter ms, offset.
# Refreshes the TTL of listings an incremental warm knows are current; returns the
# 1-based positions of those that are gone (expired, evicted, invalidated): re-read them.
TOUCH_SCRIPT = (
    FENCE_CHECK
    + SPREAD
    + """
local missing = {}
for i = 2, #KEYS do
  if redis.call('PEXPIRE', KEYS[i], px(i)) == 0 then
    missing[#missing + 1] = i - 1
  end
end
return missing
"""
)

# KEYS: lock, hot, hot meta. ARGV: token, deadline, hot JSON, expire-at ms, meta field/values.
PUBLISH_SCRIPT = (
    FENCE_CHECK
    + """
redis.call('SET', KEYS[2], ARGV[3], 'PXAT', ARGV[4])
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[3], unpack(ARGV, 5))
return 1
"""
)

# KEYS: epoch, then (listing key, tombstone key) per product. ARGV: tombstone ttl ms.
# Returns {epoch, listings deleted}.
INVALIDATE_SCRIPT = """
local epoch = redis.call('INCR', KEYS[1])
local deleted = 0
for i = 2, #KEYS, 2 do
  deleted = deleted + redis.call('DEL', KEYS[i])
  redis.call('SET', KEYS[i + 1], epoch, 'PX', ARGV[1])
end
return {epoch, deleted}
"""

TOMBSTONE_MARGIN_S = 60


def connect(settings: RedisSettings) -> redis.Redis:
    """A client with timeouts; the connection itself is made (and checked) by ping()."""
    kwargs: dict[str, Any] = {
        "socket_connect_timeout": settings.connect_timeout,
        "socket_timeout": settings.timeout,
        "client_name": "cachewarm",
    }
    if settings.password is not None:
        kwargs["password"] = settings.password.reveal()
    if settings.ssl_ca_certs:
        kwargs["ssl_ca_certs"] = settings.ssl_ca_certs
    client = redis.Redis.from_url(settings.url, **kwargs)
    where = redact_url(settings.url)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        client.close()
        raise SinkError(f"cannot connect to Redis at {where}: {exc}") from None
    return client


@dataclass
class WriteTotals:
    written: int = 0
    unchanged: int = 0
    removed: int = 0
    bytes: int = 0


def server_time_ms(client: redis.Redis) -> int:
    """Redis' clock, the one the scripts compare deadlines and expiries against."""
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def read_epoch(client: redis.Redis, keys: Keys) -> int:
    value = client.get(keys.epoch)
    return int(value) if value is not None else 0


def _pack(args: Sequence[bytes | bytearray]) -> list[bytes | bytearray]:
    """One RESP command as chunks, each argument passed through uncopied.

    Much cheaper than redis-py's generic packer for long argument lists; a caller joins
    the chunks of small commands, and sends those of a multi-megabyte one as they are.
    """
    chunks: list[bytes | bytearray] = [b"*%d\r\n" % len(args)]
    for arg in args:
        chunks += (b"$%d\r\n" % len(arg), arg, b"\r\n")
    return chunks


Reply = Callable[[Any], None]


class ScriptPipe:
    """EVAL calls sent without waiting; replies read one call behind and handed on in order.

    While Redis runs batch n, the caller is already reading and encoding batch n+1.
    """

    def __init__(self, client: redis.Redis, fence: Fence, *, ttl_s: int, jitter: float, where: str):
        self._pool = client.connection_pool
        self._conn = self._pool.get_connection()
        self._fence_args = [fence.token.encode(), b"%d" % fence.deadline_ms]
        self._lock_key = fence.lock_key.encode()
        self._ttl_ms = ttl_s * 1000
        self._jitter_ms = int(ttl_s * 1000 * jitter)
        self._where = where
        self._pending: deque[Reply] = deque()

    def call(self, script: bytes, keys: list[bytes], args: list[bytes], on_reply: Reply) -> None:
        """Run `script` with the lock key first in KEYS and the fence and TTL first in ARGV."""
        spread = [
            b"%d" % self._ttl_ms,
            b"%d" % self._jitter_ms,
            b"%d" % random.randrange(self._jitter_ms + 1),
        ]
        command = [b"EVAL", script, b"%d" % (len(keys) + 1), self._lock_key, *keys]
        command += self._fence_args + spread + args
        try:
            self._conn.send_packed_command([b"".join(_pack(command))], check_health=False)  # type: ignore[no-untyped-call]
        except redis.exceptions.RedisError as exc:
            raise self._failed(exc) from None
        self._pending.append(on_reply)
        if len(self._pending) > 1:
            self._collect()

    def finish(self) -> None:
        """Wait for every reply: afterwards every call has been applied (or raised)."""
        while self._pending:
            self._collect()

    def close(self) -> None:
        if self._pending:  # aborted mid-stream: the connection holds unread replies
            self._abandon()
        self._pool.release(self._conn)

    def _collect(self) -> None:
        on_reply = self._pending.popleft()
        try:
            reply = self._conn.read_response()
        except redis.exceptions.ResponseError as exc:
            self._abandon()
            raise script_error(exc, self._where) from None
        except redis.exceptions.RedisError as exc:
            raise self._failed(exc) from None
        on_reply(reply)

    def _abandon(self) -> None:
        """Drop the connection: replies still due on it must never reach another caller."""
        self._pending.clear()
        self._conn.disconnect()  # type: ignore[no-untyped-call]

    def _failed(self, exc: Exception) -> SinkError:
        self._abandon()
        return SinkError(f"Redis at {self._where} failed during the write: {exc}")


_WRITE = WRITE_SCRIPT.encode()
_PUBLISH = PUBLISH_SCRIPT.encode()
_TOUCH = TOUCH_SCRIPT.encode()


class BatchWriter:
    """Writes listings batch by batch through WRITE_SCRIPT, pipelined one batch deep."""

    def __init__(self, pipe: ScriptPipe, keys: Keys, epoch: int) -> None:
        self._pipe = pipe
        self._keys = keys
        self.totals = WriteTotals()
        self.skipped: set[int] = set()  # invalidated while this run was reading them
        # The invalidation epoch as of the latest reply: reading it before a batch's
        # SELECT is what the tombstone check needs, and an older value is only stricter.
        self.epoch = epoch

    def send(self, epoch: int, items: Sequence[tuple[int, bytes]]) -> None:
        """Queue one batch of (id, payload); an empty payload deletes the listing."""
        if not items:
            return
        product, tombstone = self._keys.product, self._keys.tombstone
        names: list[bytes] = [self._keys.epoch.encode()]
        payloads: list[bytes] = [b"%d" % epoch]
        for product_id, payload in items:
            names += (product(product_id).encode(), tombstone(product_id).encode())
            payloads.append(payload)
            self.totals.bytes += len(payload)
        ids = [product_id for product_id, _ in items]

        def collect(reply: Any) -> None:
            written, unchanged, removed, skipped, now = reply
            self.epoch = max(self.epoch, now)
            self.totals.written += written
            self.totals.unchanged += unchanged
            self.totals.removed += removed
            self.skipped.update(ids[i - 1] for i in skipped)

        self._pipe.call(_WRITE, names, payloads, collect)


def touch(
    pipe: ScriptPipe, keys: Keys, ids: Sequence[int], on_missing: Callable[[list[int]], None]
) -> None:
    """Refresh the TTL of current listings; `on_missing` gets the ids that were gone."""
    if not ids:
        return
    names = [keys.product(i).encode() for i in ids]
    pipe.call(_TOUCH, names, [], lambda reply: on_missing([ids[i - 1] for i in reply]))


def script_error(exc: redis.exceptions.ResponseError, where: str) -> Exception:
    message = str(exc)
    if message.startswith("CACHEWARM_FENCED"):
        return LockLost(f"Redis {message.removeprefix('CACHEWARM_FENCED ')}; wrote nothing more")
    if message.startswith("CACHEWARM_DEADLINE"):
        return DeadlineExceeded("run passed run.max_seconds while writing to Redis; stopped")
    return SinkError(f"Redis at {where} rejected a write: {message}")


def publish_hot(
    client: redis.Redis,
    keys: Keys,
    fence: Fence,
    hot_json: bytes | bytearray,
    *,
    expire_at_ms: int,
    meta: dict[str, str],
    where: str,
) -> None:
    """Replace the hot list in one step, after every listing in it was written.

    Sent as RESP chunks so the list (7 MB at a million ids) is never copied into a
    command buffer.
    """
    args: list[bytes | bytearray] = [
        b"EVAL",
        _PUBLISH,
        b"3",
        fence.lock_key.encode(),
        keys.hot.encode(),
        keys.hot_meta.encode(),
        fence.token.encode(),
        b"%d" % fence.deadline_ms,
        hot_json,
        b"%d" % expire_at_ms,
        *(part.encode() for pair in meta.items() for part in pair),
    ]
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        conn.send_packed_command(_pack(args))  # type: ignore[no-untyped-call]
        conn.read_response()
    except redis.exceptions.ResponseError as exc:
        raise script_error(exc, where) from None
    except redis.exceptions.RedisError as exc:
        conn.disconnect()  # type: ignore[no-untyped-call]
        raise SinkError(f"Redis at {where} failed publishing {keys.hot}: {exc}") from None
    finally:
        pool.release(conn)


def invalidate(
    client: redis.Redis,
    keys: Keys,
    ids: Sequence[int],
    *,
    tombstone_s: float,
    batch: int,
    where: str,
) -> tuple[int, int]:
    """Delete listings and stamp tombstones, one script call per batch, pipelined.

    Returns (epoch after the last batch, listings deleted).
    """
    ttl_ms = int((tombstone_s + TOMBSTONE_MARGIN_S) * 1000)
    pipe = client.pipeline(transaction=False)
    for start in range(0, len(ids), batch):
        chunk = ids[start : start + batch]
        names = [name for i in chunk for name in (keys.product(i), keys.tombstone(i))]
        pipe.eval(INVALIDATE_SCRIPT, 1 + len(names), keys.epoch, *names, ttl_ms)
    try:
        replies = pipe.execute()
    except redis.exceptions.RedisError as exc:
        raise SinkError(f"Redis at {where} failed during invalidate: {exc}") from None
    return max(int(r[0]) for r in replies), sum(int(r[1]) for r in replies)


def delete_listings(client: redis.Redis, keys: Keys, ids: Iterable[int]) -> int:
    """Delete these listings, a thousand keys per DEL, in one round trip; returns how many."""
    names = [keys.product(i) for i in ids]
    pipe = client.pipeline(transaction=False)
    for start in range(0, len(names), 1000):
        pipe.delete(*names[start : start + 1000])
    return sum(pipe.execute()) if names else 0


def hot_meta(client: redis.Redis, keys: Keys) -> dict[str, str]:
    """What the last published run recorded: when, watermark, last full warm."""
    raw: dict[bytes, bytes] = client.hgetall(keys.hot_meta)  # type: ignore[assignment]
    return {k.decode(): v.decode() for k, v in raw.items()}


def current_values(client: redis.Redis, keys: Keys, ids: Sequence[int]) -> list[bytes | None]:
    """What readers see now for these products (read-only: used by dry runs and show)."""
    if not ids:
        return []
    values = client.mget([keys.product(i) for i in ids])
    return [v if isinstance(v, bytes) else None for v in values]
