"""Every Redis key name cachewarm reads or writes, and the product ids they are built from.

The listing and hot-list keys are the reader contract (documented in the README);
everything under `:meta:` is cachewarm's own bookkeeping. All keys carry the format
version, so bumping `keys.version` gives new readers a fresh namespace while old
readers keep reading the old one until it expires.

Reader keys carry no hash tag, so a Redis Cluster places each listing in the slot of its
plain name. Bookkeeping keys that a script must touch together with reader keys borrow
their slot with a hash tag: the hot list's meta hash is tagged with the hot key, and
each slot's guard state (see cachewarm.store) with a short tag that hashes to that slot.
"""

from __future__ import annotations

import functools
from binascii import crc_hqx
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import UsageError

MAX_ID = 2**64 - 1  # BIGINT UNSIGNED
# The largest hot id a reader in JavaScript reads exactly: JSON.parse makes every number
# a double. Above it the hot list would name a product the reader then cannot find.
MAX_SAFE_ID = 2**53 - 1
SLOTS = 16384  # Redis Cluster's hash slots; the guard keeps one state per slot everywhere
# The consumer group of the miss stream: `run` and `follow` share its entries through it.
MISS_GROUP = "cachewarm"


def key_slot(key: bytes) -> int:
    """The cluster slot of a key without a hash tag (no listing key has one)."""
    return crc_hqx(key, 0) % SLOTS


@functools.cache
def slot_tags() -> tuple[str, ...]:
    """For each slot, the smallest decimal number whose hash tag lands in it (about 0.1 s)."""
    tags: list[str | None] = [None] * SLOTS
    left, n = SLOTS, 0
    while left:
        slot = key_slot(b"%d" % n)
        if tags[slot] is None:
            tags[slot] = str(n)
            left -= 1
        n += 1
    return tuple(t for t in tags if t is not None)


@dataclass(frozen=True)
class Keys:
    """Key names for one prefix and format version; also the `[keys]` config section."""

    prefix: str = "cachewarm"
    version: int = 1
    # Publish hot ids above MAX_SAFE_ID too: only when no reader decodes the hot list
    # with doubles (JavaScript's JSON.parse; see docs/readers.md).
    allow_big_ids: bool = False

    @property
    def max_hot_id(self) -> int:
        """The largest id the hot list may hold."""
        return MAX_ID if self.allow_big_ids else MAX_SAFE_ID

    @property
    def base(self) -> str:
        return f"{self.prefix}:v{self.version}"

    def product(self, product_id: int) -> str:
        """The listing JSON of one product: one GET for any reader."""
        return f"{self.base}:product:{product_id}"

    @property
    def product_pattern(self) -> str:
        """SCAN pattern matching every listing key (and nothing else) of this namespace."""
        return f"{self.base}:product:*"

    def product_id(self, key: str) -> int:
        """The product id in a listing key made by `product`."""
        return int(key.rpartition(":")[2])

    @property
    def hot(self) -> str:
        """JSON array of hot ids, hottest first; only ids whose listing was written."""
        return f"{self.base}:hot"

    @property
    def hot_meta(self) -> str:
        """Hash describing the published hot list; in the hot key's slot, published with it."""
        return f"{self.base}:meta:hot{{{self.hot}}}"

    def slot_state(self, slot: int) -> str:
        """The guard state of one cluster slot: changed by every invalidation in that slot."""
        return f"{self.base}:meta:slot:{{{slot_tags()[slot]}}}"

    @property
    def misses(self) -> str:
        """Stream of product ids readers missed (`XADD ... MAXLEN ~ N * id <id>`); no hash
        tag, so on a cluster it lives on the one master serving its slot."""
        return f"{self.base}:misses"

    @property
    def lock(self) -> str:
        """The Redis lock (`run.lock = "redis"`), one per prefix and version."""
        return f"{self.base}:meta:lock"


def parse_id(text: str) -> int:
    """A product id as typed by a person: a non-negative decimal integer, nothing else."""
    stripped = text.strip()
    if not stripped.isascii() or not stripped.isdigit():
        raise UsageError(f"invalid product id {text!r}: expected a non-negative integer")
    value = int(stripped)
    if value > MAX_ID:
        raise UsageError(f"invalid product id {text!r}: larger than BIGINT UNSIGNED")
    return value


def parse_ids(texts: Iterable[str]) -> list[int]:
    """Validate every id before anything is touched; keep order, drop repeats."""
    seen: dict[int, None] = {}
    for text in texts:
        seen.setdefault(parse_id(text), None)
    if not seen:
        raise UsageError("no product ids given")
    return list(seen)
