"""Fenced writes: listings batch by batch, their TTLs refreshed, the hot list published,
listings invalidated.

Every write goes through a script of scripts.py on a ScriptPipe, so the fence, the
deadline and the slot-state guard are checked by Redis itself in the same step.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from redis.cluster import RedisCluster

from ..keys import SLOTS, Keys, key_slot
from ..lock import Fence
from .connect import Client, failing_as
from .pipe import ScriptPipe
from .scripts import INVALIDATE, PUBLISH, RENEW, TOUCH, WRITE
from .slots import ENSURE_CHUNK, STATE_TTL_MS, SlotStates
from .wire import Call, Reply, arg, numkeys


@dataclass
class WriteTotals:
    written: int = 0
    unchanged: int = 0
    removed: int = 0
    bytes: int = 0


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
        self._state_names = [arg(keys.slot_state(slot).encode()) for slot in range(SLOTS)]
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
        lock = [arg(k) for k in pipe.fence_keys(self._fence)]
        ttl_jitter, offset = self.spread()
        before = [*pipe.fence_args(self._fence), *ttl_jitter]  # ARGV 1-5; 6 is per call
        after = [b"%d" % STATE_TTL_MS, self._states.fresh()]  # ARGV 7-8
        fence, tail = b"".join(map(arg, before)), b"".join(map(arg, after))
        packed = self._packed
        self.totals.bytes += sum(len(payload) for _, payload in items)

        def build(group: list[int], across: bool) -> Call:
            keys: list[bytes] = []
            args: list[bytes] = []
            for i in group:
                state = known[slots[i]]
                keys += (arg(names[i]), state_names[slots[i]])
                args += (
                    packed.get(state) or packed.setdefault(state, arg(state)),
                    arg(items[i][1]),
                )
            counts = numkeys(len(lock) + len(keys), across=across)
            head = b"".join(map(arg, counts))
            this = [arg(offset(group[0]))]
            body = b"".join((head, *lock, *keys, fence, *this, tail, *args))
            collect = partial(self._collect, items, slots, group)
            parts = (counts, lock, keys, before, this, after, args)
            count = sum(map(len, parts))
            return Call(WRITE.variant(across=across), slots[group[0]], count, [body], collect)

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


def renew_states(pipe: ScriptPipe, keys: Keys) -> None:
    """Give every slot a fresh state: no warm in flight writes anything it read before.

    The first half of invalidating everything without the warm lock; the second is
    deleting the cached listings, through `invalidate`.
    """
    fresh = SlotStates().fresh()  # one value for all: still never used before in any slot
    slots = range(SLOTS)

    def build(chosen: list[int], across: bool) -> Call:
        names = [keys.slot_state(slots[i]).encode() for i in chosen]
        args = [fresh, b"%d" % STATE_TTL_MS]
        return Call.of(RENEW, slots[chosen[0]], names, args, lambda _: None, across=across)

    pipe.run(pipe.plan(slots, build, chunk=ENSURE_CHUNK))


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


def delete_listings(client: Client, keys: Keys, ids: Iterable[int], *, where: str) -> int:
    """Delete these listings, a thousand keys per DEL (per slot on a cluster); how many."""
    names = [keys.product(i) for i in ids]
    with failing_as(where):
        if isinstance(client, RedisCluster):
            return sum(client.delete(*names[s : s + 1000]) for s in range(0, len(names), 1000))
        pipe = client.pipeline(transaction=False)
        for start in range(0, len(names), 1000):
            pipe.delete(*names[start : start + 1000])
        return sum(pipe.execute()) if names else 0
