"""Script calls pipelined one batch deep, per node, with the cluster's redirections handled.

Calls are sent straight as RESP and their replies read a batch behind: Redis applies
batch n while Python encodes batch n+1, and memory stays bounded by two batches
whatever the size of the hot set. Scripts are loaded on a node's first use and called by
EVALSHA; NOSCRIPT (a flushed or failed-over script cache), MOVED, ASK, TRYAGAIN and a
cluster node's READONLY (a master a failover demoted) re-send that one call, with EVAL,
where it belongs now. A call spanning slots that its
node refuses (a slot moved or moving) is re-sent one slot at a time.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import redis
import redis.exceptions
from redis.cluster import RedisCluster

from ..errors import SinkError
from ..keys import SLOTS
from ..lock import Fence
from .connect import Client
from .scripts import ACROSS, SCRIPTS, script_error
from .wire import Call, coalesce, pack

REDIRECTS = 8  # MOVED/ASK/TRYAGAIN hops for one call before the run gives up
TRYAGAIN_PAUSE_S = 0.05


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
            out = coalesce(node.out) if node.bulky else [b"".join(node.out)]
            node.out, node.bulky = [], False
            try:
                node.conn.send_packed_command(out, check_health=False)
            except redis.exceptions.ConnectionError as exc:
                self._lost(node, [], exc)
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
                [chunk for s in scripts for chunk in pack([b"SCRIPT", b"LOAD", s.body])]
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
            if self._demoted(exc):
                self._resend(call, exc)
                return
            if not (call.split and not_served(exc)):
                self._abandon()
                raise script_error(exc, node.name, self._lock_key) from None
            self._split(call)
            return
        except redis.exceptions.ConnectionError as exc:
            self._lost(node, [call], exc)
            return
        except redis.exceptions.RedisError as exc:
            raise self._failed(node, exc) from None
        call.on_reply(reply)

    def _lost(self, node: _Node, calls: list[Call], exc: redis.exceptions.RedisError) -> None:
        """A node's connection broke with `calls` and those pending on it unanswered.

        A planned cluster failover closes the demoted master's connections: if the
        slot map now names another master for every slot those calls write, they are
        sent there again. Each script runs whole or not at all, and one the old master
        had run is on the new one (a manual failover waits for the replica to catch
        up), where running it again changes no outcome (see _split). A node still
        named master of any of them is down, not demoted: the run fails, as before.
        """
        if not self.cluster:
            raise self._failed(node, exc)
        calls += [call for _, n, call in self._pending if n is node]
        self._pending = deque(entry for entry in self._pending if entry[1] is not node)
        node.conn.disconnect()
        node.pool.release(node.conn)
        del self._nodes[node.name]
        self._refresh()
        if any(self._pool_for(call.slot)[1] == node.name for call in calls):
            raise self._failed(node, exc)
        for call in calls:
            self._resend(call, None)

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
        for attempt in range(REDIRECTS):
            asking = isinstance(exc, redis.exceptions.AskError) and not isinstance(
                exc, redis.exceptions.MovedError
            )
            if isinstance(exc, redis.exceptions.MovedError):
                self._refresh()
            elif exc is not None and self._demoted(exc):
                # The nodes agreeing on the failover: backing off, 12 s over all tries.
                time.sleep(TRYAGAIN_PAUSE_S * 2**attempt)
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
                    [*pack([b"ASKING"]), *command] if asking else command
                )
                if asking:
                    conn.read_response()
                reply = conn.read_response()
            except (redis.exceptions.AskError, redis.exceptions.TryAgainError) as again:
                exc = again
                continue
            except redis.exceptions.ResponseError as failed:
                if self._demoted(failed):
                    exc = failed
                    continue
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

    def _demoted(self, exc: redis.exceptions.ResponseError) -> bool:
        """A cluster node refusing writes during a failover: READONLY (the slot's master
        is a replica now) or a script's "cluster is down" (the nodes still agreeing).

        Followed like MOVED, after a pause (the slot map is re-read and the call sent
        to the master it names): each script runs whole or not at all, so a refused
        call wrote nothing. On one Redis it stays an error: nothing would send the
        call anywhere else.
        """
        return self.cluster and (
            isinstance(exc, redis.exceptions.ReadOnlyError | redis.exceptions.ClusterDownError)
            or "while the cluster is down" in str(exc)
        )

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
