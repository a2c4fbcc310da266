"""The guard's slot states: what a warm learned of each slot before it read from MySQL.

Each of the 16384 cluster slots has a state key holding a value never used before in
that slot; an invalidation replaces it. A warm writes a listing only if its slot's
state is still the one it learned before the listing's read (see the store package's
docstring), so what it learned, and when, is kept here.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from ..keys import SLOTS, Keys, key_slot
from .pipe import ScriptPipe
from .scripts import ENSURE
from .wire import Call

# Slot states outlive a week without runs; an expired one only costs one skipped batch.
STATE_TTL_MS = 7 * 24 * 3600 * 1000
ENSURE_CHUNK = 4096  # state keys per script on one Redis


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
