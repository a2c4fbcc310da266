"""Read-only lookups: what readers see now, what the last run published, Redis' clock.

Nothing here writes or touches an expiry, so dry runs, `show` and `status` can use
these freely; a failure is a SinkError naming `where`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from redis.cluster import RedisCluster

from ..keys import Keys
from .connect import Client, failing_as


def server_time_ms(client: Client, *, where: str) -> int:
    """Redis' clock, the one the scripts compare deadlines and expiries against."""
    with failing_as(where):
        seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def hot_meta(client: Client, keys: Keys, *, where: str) -> dict[str, str]:
    """What the last published run recorded: when, watermark, last full warm."""
    with failing_as(where):
        raw: dict[bytes, bytes] = client.hgetall(keys.hot_meta)  # type: ignore[assignment]
    return {k.decode(): v.decode() for k, v in raw.items()}


def hot_list(client: Client, keys: Keys, *, where: str) -> bytes | None:
    """The published hot list as readers GET it, or None."""
    with failing_as(where):
        value = client.get(keys.hot)
    return value if isinstance(value, bytes) else None


def hot_ttl_ms(client: Client, keys: Keys, *, where: str) -> int:
    """PTTL of the hot list: -2 when there is none, -1 when it does not expire."""
    with failing_as(where):
        return int(client.pttl(keys.hot))


def listing(client: Client, keys: Keys, product_id: int, *, where: str) -> bytes | None:
    """One product's listing exactly as readers GET it, or None when not cached."""
    with failing_as(where):
        value = client.get(keys.product(product_id))
    return value if isinstance(value, bytes) else None


def current_values(
    client: Client, keys: Keys, ids: Sequence[int], *, where: str
) -> list[bytes | None]:
    """What readers see now for these products (read-only: used by dry runs and show)."""
    if not ids:
        return []
    names = [keys.product(i) for i in ids]
    with failing_as(where):
        values = (
            client.mget_nonatomic(names) if isinstance(client, RedisCluster) else client.mget(names)
        )
    return [v if isinstance(v, bytes) else None for v in values]


def listing_ids(client: Client, keys: Keys, *, where: str) -> Iterator[int]:
    """Ids of every cached listing of this prefix and version, by SCAN (on every master).

    SCAN may name a key twice or miss one written or deleted while it runs; a key under
    the pattern whose last part is not an id is none of cachewarm's and is passed over.
    """
    with failing_as(where):
        for name in client.scan_iter(match=keys.product_pattern, count=1000):
            tail = name.rpartition(b":")[2]
            if tail.isdigit():
                yield int(tail)
