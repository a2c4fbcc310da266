"""Redis: fenced batch writes, the hot-list publish, invalidation and read-only lookups.

One Redis, a Sentinel-managed master or a Redis Cluster. On one Redis a batch goes as
one script. On a cluster a script that declares keys of several slots is refused
(CROSSSLOT) even by the node that serves them all, so a batch goes as one script per
node that names its keys in ARGV under Redis 7's `allow-cross-slot-keys` flag: the node
refuses any key it does not serve, and such a call (a slot moved or moving) is re-sent
one slot at a time with declared keys, the way every call goes to a node without that
flag. Each script runs atomically on one node, and every key it checks or writes
together (a listing, its slot's state) shares a slot.

Calls are packed straight into RESP and pipelined one batch deep per node: Redis
applies batch n while Python encodes batch n+1, and memory stays bounded by two batches
whatever the size of the hot set. Scripts are loaded on a node's first use and called by
EVALSHA; NOSCRIPT (a flushed or failed-over script cache), MOVED, ASK and TRYAGAIN
re-send that one call, with EVAL, where it belongs now.

Three guards live in the write script:
- the fence: with the Redis lock, a run that lost the lock writes nothing (a paused
  process cannot overwrite the new holder's work). On one Redis the script compares the
  lock token; everywhere it also compares Redis' clock with the lock's lease, which
  ends before the lock itself can expire;
- the deadline, on Redis' own clock: a run past `run.max_seconds` writes nothing;
- the slot state: each of the 16384 cluster slots has a state key holding a value never
  used before in that slot. `invalidate` replaces it, in the same script that deletes the
  listings. A warm learns the states before reading a batch from MySQL and writes a
  listing only if its slot's state is still the one it learned; otherwise it skips
  that product. A state key that is missing (evicted, flushed, lost in a failover) or
  re-created (with a fresh value) can only differ from what the warm learned, so losing
  any bookkeeping key makes a warm skip, never write a value read before an
  invalidation. Nothing depends on a TTL outliving a run, whatever `max_seconds` it had.
"""

from __future__ import annotations

import hashlib
import random
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import redis
import redis.exceptions
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import parse_url
from redis.sentinel import Sentinel, SentinelConnectionPool

from .config import RedisSettings
from .errors import DeadlineExceeded, LockLost, SinkError
from .keys import SLOTS, Keys, key_slot
from .lock import Fence
from .urls import redact_url

Client = redis.Redis | RedisCluster

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

# Slot states outlive a week without runs; an expired one only costs one skipped batch.
STATE_TTL_MS = 7 * 24 * 3600 * 1000
ENSURE_CHUNK = 4096  # state keys per script on one Redis
REDIRECTS = 8  # MOVED/ASK/TRYAGAIN hops for one call before the run gives up
TRYAGAIN_PAUSE_S = 0.05
COPY_LIMIT = 1 << 20  # arguments this large (a big hot list) are sent without a copy


@dataclass(frozen=True)
class Script:
    body: bytes
    sha: bytes

    @classmethod
    def of(cls, text: str) -> Script:
        body = text.encode()
        return cls(body, hashlib.sha1(body, usedforsecurity=False).hexdigest().encode())

    def head(self, *, by_sha: bool) -> bytes:
        """The RESP of `EVALSHA sha` or `EVAL body`, the first two arguments of a call."""
        return _arg(b"EVALSHA") + _arg(self.sha) if by_sha else _arg(b"EVAL") + _arg(self.body)


WRITE = Script.of(WRITE_SCRIPT)
TOUCH = Script.of(TOUCH_SCRIPT)
PUBLISH = Script.of(PUBLISH_SCRIPT)
INVALIDATE = Script.of(INVALIDATE_SCRIPT)
ENSURE = Script.of(ENSURE_SCRIPT)
SCRIPTS = (WRITE, TOUCH, PUBLISH, INVALIDATE, ENSURE)
# The same scripts for one call per cluster node (all but PUBLISH, whose keys share a slot).
ACROSS = {s: Script.of(ACROSS_SLOTS + s.body.decode()) for s in (WRITE, TOUCH, INVALIDATE, ENSURE)}


def connect(settings: RedisSettings) -> Client:
    """A client for `redis.mode`, with timeouts, checked with a PING.

    cluster: redis-py's RedisCluster (slot map, redirections, topology refresh), seeded
    with `url` and `nodes`; sentinel: the master that `sentinels` name for `service_name`.
    """
    kwargs: dict[str, Any] = {
        "socket_connect_timeout": settings.connect_timeout,
        "socket_timeout": settings.timeout,
        "client_name": "cachewarm",
    }
    if settings.password is not None:
        kwargs["password"] = settings.password.reveal()
    if settings.ssl_ca_certs:
        kwargs["ssl_ca_certs"] = settings.ssl_ca_certs
    where = describe(settings)
    client: Client | None = None
    try:
        if settings.mode == "cluster":
            seeds = [ClusterNode(*_host_port(n)) for n in settings.nodes]  # type: ignore[no-untyped-call]
            client = RedisCluster.from_url(settings.url, startup_nodes=seeds, **kwargs)
        elif settings.mode == "sentinel":
            client = _sentinel_master(settings, kwargs)
        else:
            client = redis.Redis.from_url(settings.url, **kwargs)
        client.ping()
    except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException) as exc:
        if client is not None:
            client.close()
        raise SinkError(f"cannot connect to {where}: {exc}") from None
    return client


def _host_port(node: str) -> tuple[str, int]:
    host, _, port = node.rpartition(":")
    return host.strip("[]"), int(port)


def _sentinel_master(settings: RedisSettings, kwargs: dict[str, Any]) -> redis.Redis:
    """The service's master; `url` gives its db, user and TLS (its host is not used)."""
    parsed = parse_url(settings.url)  # type: ignore[no-untyped-call]
    master_kwargs = dict(kwargs)
    for name in ("db", "username"):
        if parsed.get(name) is not None:
            master_kwargs[name] = parsed[name]
    if settings.url.startswith("rediss://"):
        master_kwargs["ssl"] = True
    timeouts = {k: kwargs[k] for k in ("socket_connect_timeout", "socket_timeout")}
    asking = dict(timeouts)  # the sentinels' own connections: no password unless set
    if settings.sentinel_password is not None:
        asking["password"] = settings.sentinel_password.reveal()
    # redis-py types Sentinel from 8.x on; older releases leave it untyped.
    sentinel = Sentinel(  # type: ignore[no-untyped-call,unused-ignore]
        [_host_port(s) for s in settings.sentinels], sentinel_kwargs=asking, **timeouts
    )
    master: redis.Redis = sentinel.master_for(settings.service_name, **master_kwargs)  # type: ignore[no-untyped-call,unused-ignore]
    return master


def master_address(client: Client) -> tuple[str, int] | None:
    """Where the sentinels say the master is now (None without Sentinel)."""
    pool = getattr(client, "connection_pool", None)
    if not isinstance(pool, SentinelConnectionPool):
        return None
    host, port = pool.get_master_address()  # type: ignore[no-untyped-call]
    return str(host), int(port)


def check_master(client: Client, since: tuple[str, int] | None, where: str) -> None:
    """Refuse to publish if a failover moved the master while this run wrote.

    Until Sentinel demotes it, the old master still takes writes, which the new one
    never sees: a hot list published there would be lost with them.
    """
    now = master_address(client)
    if now != since and since is not None and now is not None:
        raise SinkError(
            f"{where}: the master moved from {since[0]}:{since[1]} to {now[0]}:{now[1]} "
            "during the run (failover); hot list not published"
        )


def describe(settings: RedisSettings) -> str:
    """How errors name the Redis: never with a password."""
    if settings.mode == "cluster":
        return f"Redis Cluster at {redact_url(settings.url)}"
    if settings.mode == "sentinel":
        return f"Redis master {settings.service_name!r} of sentinels {','.join(settings.sentinels)}"
    return f"Redis at {redact_url(settings.url)}"


@dataclass
class WriteTotals:
    written: int = 0
    unchanged: int = 0
    removed: int = 0
    bytes: int = 0


def server_time_ms(client: Client) -> int:
    """Redis' clock, the one the scripts compare deadlines and expiries against."""
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def _pack(args: Sequence[bytes | bytearray]) -> list[bytes | bytearray]:
    """One RESP command as chunks, each argument passed through uncopied.

    Much cheaper than redis-py's generic packer for long argument lists; a caller joins
    the chunks of small commands, and sends those of a multi-megabyte one as they are.
    """
    chunks: list[bytes | bytearray] = [b"*%d\r\n" % len(args)]
    for arg in args:
        chunks += (b"$%d\r\n" % len(arg), arg, b"\r\n")
    return chunks


def _arg(value: bytes | bytearray) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


def _pack_args(values: Iterable[bytes | bytearray]) -> list[bytes | bytearray]:
    """RESP of these arguments: small ones joined, a large one (a hot list) left uncopied."""
    chunks: list[bytes | bytearray] = []
    small: list[bytes] = []
    for value in values:
        if len(value) < COPY_LIMIT:
            small.append(_arg(value))
        else:
            chunks += (b"".join(small), b"$%d\r\n" % len(value), value, b"\r\n")
            small = []
    if small:
        chunks.append(b"".join(small))
    return chunks


def _coalesce(chunks: list[bytes | bytearray]) -> list[bytes | bytearray]:
    """Runs of small chunks joined (one sendall each), large ones passed uncopied."""
    out: list[bytes | bytearray] = []
    small: list[bytes | bytearray] = []
    for chunk in chunks:
        if len(chunk) < COPY_LIMIT:
            small.append(chunk)
        else:
            if small:
                out.append(b"".join(small))
                small = []
            out.append(chunk)
    if small:
        out.append(b"".join(small))
    return out


Reply = Callable[[Any], None]


def numkeys(count: int, *, across: bool) -> list[bytes]:
    """The arguments before the keys: numkeys, or 0 and the count for an ACROSS script."""
    return [b"0", b"%d" % count] if across else [b"%d" % count]


@dataclass
class Call:
    """One script call: the slot its keys are in (the first's), what to send, who gets the reply.

    `body` is the RESP of everything after the script (numkeys, keys, args), packed
    once: only the head differs between EVALSHA and a re-sent EVAL. A call spanning
    slots has `split`: the same work as one call per slot, for when its node refuses.
    """

    script: Script
    slot: int
    count: int  # arguments in body
    body: list[bytes | bytearray]
    on_reply: Reply
    split: Callable[[], list[Call]] | None = None

    @classmethod
    def of(
        cls,
        script: Script,
        slot: int,
        keys: Sequence[bytes],
        args: Sequence[bytes | bytearray],
        on_reply: Reply,
        *,
        across: bool = False,
    ) -> Call:
        values = [*numkeys(len(keys), across=across), *keys, *args]
        return cls(
            ACROSS[script] if across else script, slot, len(values), _pack_args(values), on_reply
        )

    def command(self, *, by_sha: bool) -> list[bytes | bytearray]:
        return [b"*%d\r\n" % (self.count + 2), self.script.head(by_sha=by_sha), *self.body]


@dataclass
class _Node:
    """A node's pipelined connection, and what is due on it."""

    name: str
    pool: redis.ConnectionPool
    conn: Any  # a redis.connection.Connection; get_connection and release disagree on its type
    out: list[bytes | bytearray] = field(default_factory=list)
    bulky: bool = False  # out holds a chunk too large to copy
    across: bool = False  # runs the ACROSS scripts: one call may span this node's slots


Build = Callable[[list[int], bool], Call]  # positions, across → the call that writes them


class ScriptPipe:
    """Script calls sent without waiting, one connection per node; replies read a batch behind.

    While Redis runs batch n, the caller is already reading and encoding batch n+1. A
    batch is one call per Redis: per node on a cluster (per slot where a node lacks
    `allow-cross-slot-keys`).
    """

    def __init__(self, client: Client, *, where: str, lock_key: str = "") -> None:
        self._client = client
        self._lock_key = lock_key  # named when a fence refuses a call
        self.cluster = isinstance(client, RedisCluster)
        self._where = where
        self._nodes: dict[str, _Node] = {}
        self._slot_nodes: list[_Node | None] = [None] * SLOTS
        self._pending: deque[tuple[int, _Node, Call]] = deque()
        self._batch = 0
        self._heads = {s: s.head(by_sha=True) for s in (*SCRIPTS, *ACROSS.values())}

    def plan(self, slots: Sequence[int], build: Build, *, chunk: int = 0) -> list[Call]:
        """The calls that cover `slots` (of the keys to touch), at most `chunk` keys each.

        `build(positions, across)` makes one call of those positions. One Redis: one call
        (per chunk). Cluster: one per node, `across` where the call spans slots; one per
        slot on a node without the flag. A call spanning slots can `split` into the
        per-slot calls, built only if its node refuses it.
        """
        if not self.cluster:
            groups = [list(range(len(slots)))] if slots else []
        else:
            by_place: dict[tuple[str, int], list[int]] = {}
            for i, slot in enumerate(slots):
                node = self._slot_nodes[slot] or self._node(slot)
                by_place.setdefault((node.name, -1 if node.across else slot), []).append(i)
            groups = list(by_place.values())
        calls = []
        for group in groups:
            for start in range(0, len(group), chunk or len(group)):
                part = group[start : start + chunk] if chunk else group
                across = any(slots[i] != slots[part[0]] for i in part) if self.cluster else False
                call = build(part, across)
                if across:
                    call.split = partial(_per_slot, part, slots, build)
                calls.append(call)
        return calls

    def fence_keys(self, fence: Fence) -> list[bytes]:
        """The lock key, first in KEYS, when scripts can read it (one Redis)."""
        return [fence.lock_key.encode()] if fence.token and not self.cluster else []

    def fence_args(self, fence: Fence) -> list[bytes]:
        token = fence.token.encode() if fence.token and not self.cluster else b""
        lease = fence.lease.until_ms if fence.lease else 0
        return [token, b"%d" % fence.deadline_ms, b"%d" % lease]

    def send(self, calls: Iterable[Call]) -> None:
        """Send one batch of calls; read the replies of the batch before it."""
        touched: list[_Node] = []
        slot_nodes, heads, pending, batch = (
            self._slot_nodes,
            self._heads,
            self._pending,
            self._batch,
        )
        for call in calls:
            node = slot_nodes[call.slot] or self._node(call.slot)
            if not node.out:
                touched.append(node)
            node.out += (b"*%d\r\n" % (call.count + 2), heads[call.script], *call.body)
            if len(call.body) > 1:
                node.bulky = True
            pending.append((batch, node, call))
        for node in touched:
            out = _coalesce(node.out) if node.bulky else [b"".join(node.out)]
            node.out, node.bulky = [], False
            try:
                node.conn.send_packed_command(out, check_health=False)
            except redis.exceptions.RedisError as exc:
                raise self._failed(node, exc) from None
        self._batch += 1
        while self._pending and self._pending[0][0] < self._batch - 1:
            self._collect()

    def run(self, calls: Iterable[Call]) -> None:
        """Send these calls and wait for all replies."""
        self.send(calls)
        self.finish()

    def finish(self) -> None:
        """Wait for every reply: afterwards every call has been applied (or raised)."""
        while self._pending:
            self._collect()

    def close(self) -> None:
        if self._pending:  # aborted mid-stream: the connections hold unread replies
            self._abandon()
        for node in self._nodes.values():
            node.pool.release(node.conn)
        self._nodes.clear()

    def _node(self, slot: int) -> _Node:
        node = self._slot_nodes[slot]
        if node is None:
            pool, name = self._pool_for(slot)
            node = self._nodes.get(name)
            if node is None:
                try:
                    conn = pool.get_connection()
                except redis.exceptions.RedisError as exc:
                    raise SinkError(f"{name} failed during the write: {exc}") from None
                node = self._nodes[name] = _Node(name, pool, conn)
                self._load_scripts(node)
            self._slot_nodes[slot] = node
        return node

    def _load_scripts(self, node: _Node) -> None:
        """SCRIPT LOAD on a node's first use, so a fresh node answers EVALSHA at once.

        A refusal (an ACL without SCRIPT, say) is left to the NOSCRIPT fallback; a
        cluster node takes calls spanning slots only if it loaded the ACROSS scripts
        (Redis 7+).
        """
        scripts = [*SCRIPTS, *ACROSS.values()] if self.cluster else list(SCRIPTS)
        loaded = 0
        try:
            node.conn.send_packed_command(
                [chunk for s in scripts for chunk in _pack([b"SCRIPT", b"LOAD", s.body])]
            )
            for script in scripts:
                try:
                    node.conn.read_response()
                except redis.exceptions.ResponseError:
                    continue
                loaded += script in ACROSS.values()
        except redis.exceptions.RedisError as exc:
            raise self._failed(node, exc) from None
        node.across = loaded == len(ACROSS)

    def _pool_for(self, slot: int) -> tuple[redis.ConnectionPool, str]:
        if isinstance(self._client, RedisCluster):
            try:
                owner = self._client.nodes_manager.get_node_from_slot(slot)
            except redis.exceptions.RedisClusterException as exc:
                raise SinkError(f"{self._where}: {exc}") from None
            return owner.redis_connection.connection_pool, f"Redis at {owner.name}"
        return self._client.connection_pool, self._where

    def _collect(self) -> None:
        _, node, call = self._pending.popleft()
        try:
            reply = node.conn.read_response()
        except (
            redis.exceptions.NoScriptError,
            redis.exceptions.AskError,  # and MovedError, its subclass
            redis.exceptions.TryAgainError,
        ) as exc:
            self._resend(call, exc)
            return
        except redis.exceptions.ResponseError as exc:
            if not (call.split and not_served(exc)):
                self._abandon()
                raise script_error(exc, node.name, self._lock_key) from None
            self._split(call)
            return
        except redis.exceptions.RedisError as exc:
            raise self._failed(node, exc) from None
        call.on_reply(reply)

    def _split(self, call: Call) -> None:
        """Re-send a call its node refused (a slot of it moved or is moving) slot by slot.

        Its listings before the refused key were already applied: each one is checked
        against its slot's state again, so doing them twice changes no outcome (a
        listing written by the first try counts as unchanged).
        """
        assert call.split is not None
        for part in call.split():
            self._resend(part, None)

    def _resend(self, call: Call, exc: redis.exceptions.ResponseError | None) -> None:
        """Send one call again, with EVAL, where the cluster says its slot is served now
        (where the slot map says, for `exc` None), and hand its reply on."""
        for _ in range(REDIRECTS):
            asking = isinstance(exc, redis.exceptions.AskError) and not isinstance(
                exc, redis.exceptions.MovedError
            )
            if isinstance(exc, redis.exceptions.MovedError):
                self._refresh()
            elif isinstance(exc, redis.exceptions.TryAgainError):
                time.sleep(TRYAGAIN_PAUSE_S)  # the slot's keys are moving between nodes
            pool, name = (
                self._ask_pool(exc)
                if asking and isinstance(exc, redis.exceptions.AskError)
                else self._pool_for(call.slot)
            )
            conn = pool.get_connection()
            try:
                command = call.command(by_sha=False)
                conn.send_packed_command(  # type: ignore[no-untyped-call]
                    [*_pack([b"ASKING"]), *command] if asking else command
                )
                if asking:
                    conn.read_response()
                reply = conn.read_response()
            except (redis.exceptions.AskError, redis.exceptions.TryAgainError) as again:
                exc = again
                continue
            except redis.exceptions.ResponseError as failed:
                if call.split and not_served(failed):
                    self._split(call)
                    return
                self._abandon()
                raise script_error(failed, name, self._lock_key) from None
            except redis.exceptions.RedisError as failed:
                conn.disconnect()  # type: ignore[no-untyped-call]
                self._abandon()
                raise SinkError(f"{name} failed during the write: {failed}") from None
            finally:
                pool.release(conn)
            call.on_reply(reply)
            return
        self._abandon()
        raise SinkError(f"{self._where} kept redirecting slot {call.slot}: {exc}")

    def _refresh(self) -> None:
        """Re-read the slot map (after MOVED): later calls go to the new owners."""
        if isinstance(self._client, RedisCluster):
            try:
                self._client.nodes_manager.initialize()
            except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException) as exc:
                raise SinkError(f"{self._where}: cannot refresh the slot map: {exc}") from None
        self._slot_nodes = [None] * SLOTS

    def _ask_pool(self, exc: redis.exceptions.AskError) -> tuple[redis.ConnectionPool, str]:
        assert isinstance(self._client, RedisCluster)  # only a cluster says ASK
        target = self._client.nodes_manager.get_node(host=exc.host, port=exc.port)
        if target is None or target.redis_connection is None:
            self._refresh()
            target = self._client.nodes_manager.get_node(host=exc.host, port=exc.port)
        if target is None or target.redis_connection is None:
            raise SinkError(f"{self._where}: ASK names unknown node {exc.host}:{exc.port}")
        return target.redis_connection.connection_pool, f"Redis at {target.name}"

    def _abandon(self) -> None:
        """Drop the connections: replies still due on them must never reach another caller."""
        self._pending.clear()
        for node in self._nodes.values():
            node.conn.disconnect()

    def _failed(self, node: _Node, exc: Exception) -> SinkError:
        self._abandon()
        return SinkError(f"{node.name} failed during the write: {exc}")


def _per_slot(positions: list[int], slots: Sequence[int], build: Build) -> list[Call]:
    by_slot: dict[int, list[int]] = {}
    for i in positions:
        by_slot.setdefault(slots[i], []).append(i)
    return [build(group, False) for group in by_slot.values()]


def not_served(exc: redis.exceptions.ResponseError) -> bool:
    """A node's refusal of a key it does not serve, from inside an ACROSS script."""
    return "non local key" in str(exc)


class SlotStates:
    """What this run learned of each slot's guard state, and fresh values to create one.

    Only the learned value of a slot lets a write through; b"" (unknown) never matches.
    A state learned from a write's reply is stamped with the current tick, so a batch
    whose query went out earlier (sent ahead, see pipeline.Reader) can tell it was
    learned after its read began, and must not trust it.
    """

    def __init__(self) -> None:
        self.known: list[bytes] = [b""] * SLOTS
        self.tick = 0
        self._learned_at: dict[int, int] = {}  # slot → tick, for states learned from replies
        self._nonce = secrets.token_hex(8)
        self._count = 0

    def mark(self) -> int:
        """Taken right before a read: its write trusts only states learned before it."""
        self.tick += 1
        return self.tick

    def learn(self, slot: int, state: bytes) -> None:
        self.known[slot] = state
        self._learned_at[slot] = self.tick

    def as_of(self, mark: int | None) -> list[bytes]:
        """The states a batch read after `mark` may be written against (None: all known
        now); a slot learned since then is unknown, so its products are skipped."""
        since = [s for s, t in self._learned_at.items() if mark is not None and t >= mark]
        if not since:
            return self.known
        states = list(self.known)
        for slot in since:
            states[slot] = b""
        return states

    def fresh(self) -> bytes:
        """A state value no slot ever had: random per process, counted per call."""
        self._count += 1
        return b"%s.%d" % (self._nonce.encode(), self._count)


def learn_states(pipe: ScriptPipe, keys: Keys, ids: Sequence[int] | None = None) -> SlotStates:
    """The states of the slots of these products (all slots for None or many ids).

    Missing states are created. What a warm compares its writes with.
    """
    states = SlotStates()
    slots: Sequence[int] = range(SLOTS)
    if ids is not None and len(ids) < SLOTS:
        slots = sorted({key_slot(keys.product(i).encode()) for i in ids})
    fresh = states.fresh()  # one value for every slot created now: unique per slot still

    def build(chosen: list[int], across: bool) -> Call:
        def collect(reply: list[bytes]) -> None:
            for i, state in zip(chosen, reply, strict=True):
                states.known[slots[i]] = state

        names = [keys.slot_state(slots[i]).encode() for i in chosen]
        args = [fresh, b"%d" % STATE_TTL_MS]
        return Call.of(ENSURE, slots[chosen[0]], names, args, collect, across=across)

    pipe.run(pipe.plan(slots, build, chunk=ENSURE_CHUNK))
    return states


class BatchWriter:
    """Writes listings batch by batch through WRITE_SCRIPT, pipelined one batch deep.

    The states a batch is checked against must have been learned before its MySQL
    read. Replies update them only inside `send` and `finish`, so a batch read after
    the last of those calls can use all it knows; one read earlier than that (a query
    sent ahead) passes the `mark` taken before its read.
    """

    def __init__(
        self,
        pipe: ScriptPipe,
        keys: Keys,
        fence: Fence,
        states: SlotStates,
        *,
        ttl_s: int,
        jitter: float,
    ) -> None:
        self._pipe = pipe
        self._keys = keys
        self._fence = fence
        self._states = states
        self._ttl_ms = ttl_s * 1000
        self._jitter_ms = int(ttl_s * 1000 * jitter)
        self.totals = WriteTotals()
        self.skipped: set[int] = set()  # invalidated (or state unknown) while being read
        self._state_names = [_arg(keys.slot_state(slot).encode()) for slot in range(SLOTS)]
        self._packed: dict[bytes, bytes] = {}  # slot states as RESP; few distinct values

    def spread(self) -> tuple[list[bytes], Callable[[int], bytes]]:
        """ARGV 4-5 (TTL, jitter), and ARGV 6 for a call by its first position: an offset
        into the jitter that differs per call, so listings written together spread out."""
        base, width = random.randrange(self._jitter_ms + 1), self._jitter_ms + 1
        return [
            b"%d" % self._ttl_ms,
            b"%d" % self._jitter_ms,
        ], lambda k: b"%d" % ((base + k * 7907) % width)

    def mark(self) -> int:
        return self._states.mark()

    def send(self, items: Sequence[tuple[int, bytes]], mark: int | None = None) -> None:
        """Queue one batch of (id, payload); an empty payload deletes the listing.

        `mark`: taken before the batch's read (None: read after the last send). Packed by
        hand, the hot loop of a warm: one call per Redis or cluster node.
        """
        if not items:
            return
        product, state_names = self._keys.product, self._state_names
        known = self._states.as_of(mark)
        names = [product(i).encode() for i, _ in items]
        slots = [key_slot(name) for name in names]
        pipe = self._pipe
        lock = [_arg(k) for k in pipe.fence_keys(self._fence)]
        ttl_jitter, offset = self.spread()
        fence = b"".join(_arg(a) for a in (*pipe.fence_args(self._fence), *ttl_jitter))
        tail = _arg(b"%d" % STATE_TTL_MS) + _arg(self._states.fresh())
        packed = self._packed
        self.totals.bytes += sum(len(payload) for _, payload in items)

        def build(group: list[int], across: bool) -> Call:
            keys: list[bytes] = []
            args: list[bytes] = []
            for i in group:
                state = known[slots[i]]
                keys += (_arg(names[i]), state_names[slots[i]])
                args += (
                    packed.get(state) or packed.setdefault(state, _arg(state)),
                    _arg(items[i][1]),
                )
            head = b"".join(_arg(a) for a in numkeys(len(lock) + len(keys), across=across))
            body = b"".join((head, *lock, *keys, fence, _arg(offset(group[0])), tail, *args))
            collect = partial(self._collect, items, slots, group)
            # numkeys (and the key count), keys, 8 fixed arguments, 2 per listing
            count = 9 + across + len(lock) + 2 * len(keys)
            return Call(ACROSS[WRITE] if across else WRITE, slots[group[0]], count, [body], collect)

        pipe.send(pipe.plan(slots, build))

    def _collect(
        self, items: Sequence[tuple[int, bytes]], slots: list[int], group: list[int], reply: Any
    ) -> None:
        written, unchanged, removed, skipped, states = reply
        self.totals.written += written
        self.totals.unchanged += unchanged
        self.totals.removed += removed
        for position, state in zip(skipped, states, strict=True):
            i = group[position - 1]
            self.skipped.add(items[i][0])
            self._states.learn(slots[i], state)

    def touch(self, ids: Sequence[int], on_missing: Callable[[list[int]], None]) -> None:
        """Refresh the TTL of current listings; `on_missing` gets the ids that were gone."""
        if not ids:
            return
        names = [self._keys.product(i).encode() for i in ids]
        slots = [key_slot(name) for name in names]
        pipe, fence = self._pipe, self._fence
        ttl_jitter, offset = self.spread()

        def build(group: list[int], across: bool) -> Call:
            def collect(reply: list[int]) -> None:
                on_missing([ids[group[i - 1]] for i in reply])

            keys = pipe.fence_keys(fence) + [names[i] for i in group]
            args = [*pipe.fence_args(fence), *ttl_jitter, offset(group[0])]
            return Call.of(TOUCH, slots[group[0]], keys, args, collect, across=across)

        pipe.send(pipe.plan(slots, build))


def script_error(exc: redis.exceptions.ResponseError, where: str, lock_key: str = "") -> Exception:
    message = str(exc)
    if message.startswith("CACHEWARM_FENCED"):
        return LockLost(f"Redis lock {lock_key} is no longer held by this run; wrote nothing more")
    if message.startswith("CACHEWARM_DEADLINE"):
        return DeadlineExceeded("run passed run.max_seconds while writing to Redis; stopped")
    return SinkError(f"{where} rejected a write: {message}")


def publish_hot(
    pipe: ScriptPipe,
    keys: Keys,
    fence: Fence,
    hot_json: bytes | bytearray,
    *,
    expire_at_ms: int,
    meta: dict[str, str],
) -> None:
    """Replace the hot list and its meta in one fenced step, after every listing was written.

    The list (7 MB at a million ids) goes out as RESP chunks, never copied into a
    command buffer.
    """
    hot = keys.hot.encode()
    call = Call.of(
        PUBLISH,
        key_slot(hot),
        [*pipe.fence_keys(fence), hot, keys.hot_meta.encode()],
        [
            *pipe.fence_args(fence),
            hot_json,
            b"%d" % expire_at_ms,
            *(part.encode() for pair in meta.items() for part in pair),
        ],
        lambda _: None,
    )
    pipe.run([call])


def invalidate(
    pipe: ScriptPipe, keys: Keys, ids: Sequence[int], *, batch: int
) -> tuple[SlotStates, int]:
    """Delete listings and give their slots fresh states, one script per batch and node.

    Returns the states set (for a refill that reads the products afterwards) and how
    many listings were deleted.
    """
    states = SlotStates()
    deleted: list[int] = []
    for start in range(0, len(ids), batch):
        names = [keys.product(i).encode() for i in ids[start : start + batch]]
        slots = [key_slot(name) for name in names]
        fresh = states.fresh()
        for slot in slots:
            states.known[slot] = fresh
        build = partial(_invalidate_call, keys, names, slots, fresh, deleted.append)
        pipe.send(pipe.plan(slots, build))
    pipe.finish()
    return states, sum(deleted)


def _invalidate_call(
    keys: Keys,
    names: list[bytes],
    slots: list[int],
    fresh: bytes,
    on_reply: Reply,
    group: list[int],
    across: bool,
) -> Call:
    pairs = [k for i in group for k in (names[i], keys.slot_state(slots[i]).encode())]
    args = [fresh, b"%d" % STATE_TTL_MS]
    return Call.of(INVALIDATE, slots[group[0]], pairs, args, on_reply, across=across)


def delete_listings(client: Client, keys: Keys, ids: Iterable[int]) -> int:
    """Delete these listings, a thousand keys per DEL (per slot on a cluster); how many."""
    names = [keys.product(i) for i in ids]
    if isinstance(client, RedisCluster):
        return sum(client.delete(*names[s : s + 1000]) for s in range(0, len(names), 1000))
    pipe = client.pipeline(transaction=False)
    for start in range(0, len(names), 1000):
        pipe.delete(*names[start : start + 1000])
    return sum(pipe.execute()) if names else 0


def hot_meta(client: Client, keys: Keys) -> dict[str, str]:
    """What the last published run recorded: when, watermark, last full warm."""
    raw: dict[bytes, bytes] = client.hgetall(keys.hot_meta)  # type: ignore[assignment]
    return {k.decode(): v.decode() for k, v in raw.items()}


def current_values(client: Client, keys: Keys, ids: Sequence[int]) -> list[bytes | None]:
    """What readers see now for these products (read-only: used by dry runs and show)."""
    if not ids:
        return []
    names = [keys.product(i) for i in ids]
    values = (
        client.mget_nonatomic(names) if isinstance(client, RedisCluster) else client.mget(names)
    )
    return [v if isinstance(v, bytes) else None for v in values]
