"""The race guard when Redis loses bookkeeping: eviction under allkeys-lru, deletes, FLUSHALL.

The guard must never let a warm write a value it read before an invalidation, whatever
happened to the keys it keeps: losing them may only make the warm skip.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import servers
from pymysql.connections import Connection

import cachewarm as cw
from cachewarm.keys import Keys
from tests.helpers import (
    MakeSettings,
    invalidate_a_batch_in_flight,
    slow_listing_query,
    warming,
)

FILLER = b"x" * 16_384


@pytest.fixture
def lru_redis(tmp_path: Path) -> Iterator[servers.Server]:
    """A small Redis that evicts any key, least recently used first, as most caches do."""
    server = servers.start_redis(
        tmp_path / "lru", extra_args=["--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru"]
    )
    try:
        yield server
    finally:
        server.stop()


class Pressure:
    """Fills Redis to its limit, then keeps writing filler so it evicts all the time.

    Slowly enough that a listing just written outlives the run: the least recently used
    keys go first, and a fresh listing is younger than a few seconds of filler.
    """

    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(url)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, daemon=True)

    def _fill(self) -> None:
        for n in range(300):  # more than 4 MB: eviction starts now
            self._client.set(f"filler:{n}", FILLER)
        n = 300
        while not self._stop.wait(0.02):  # ~50 evicting writes a second
            self._client.set(f"filler:{n}", FILLER)
            n += 1

    def __enter__(self) -> Pressure:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._client.close()


def delete_bookkeeping(url: str, prefix: str) -> None:
    """Delete every bookkeeping key (the guard's slot states too), as evictions could."""
    client = redis.Redis.from_url(url)
    try:
        for key in list(client.scan_iter(match=f"{prefix}:v1:meta:*")):
            client.delete(key)
    finally:
        client.close()


def flush(url: str, _prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        client.flushall()
    finally:
        client.close()


@pytest.mark.writes_mysql
@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    "lose",
    [None, delete_bookkeeping, flush],
    ids=["lru-pressure", "bookkeeping-deleted", "flushall"],
)
@pytest.mark.slow
def test_no_stale_listing_whatever_redis_loses(
    make_settings: MakeSettings,
    shop_conn: Connection,
    lru_redis: servers.Server,
    lose: Callable[[str, str], None] | None,
) -> None:
    """Race an invalidation against a warm while Redis evicts; optionally lose the guard's
    keys between the warm's read and the invalidation. No raced listing may be stale."""
    s = make_settings(
        redis_url=lru_redis.url, listing_query=slow_listing_query(0.15), batch_size=4, limit=16
    )
    admin = make_settings(redis_url=lru_redis.url, batch_size=4)
    keys = Keys(s.keys.prefix, s.keys.version)

    def invalidate(ids: list[int]) -> None:
        if lose is not None:
            lose(lru_redis.url, s.keys.prefix)
        cw.invalidate(admin, ids)

    # Earlier invalidations: a guard whose counter restarts after a loss would now let
    # the raced batch through; this one must not.
    for _ in range(3):
        cw.invalidate(admin, [1, 2, 3])
    client = redis.Redis.from_url(lru_redis.url)
    try:
        with Pressure(lru_redis.url), warming(s) as warm:
            raced = invalidate_a_batch_in_flight(shop_conn, warm.is_alive, invalidate)
        assert raced, "never caught a batch in flight; the race was not exercised"
        assert int(client.info("stats")["evicted_keys"]) > 0, "no memory pressure"
        warm.result()
        for product_id in raced.edited:
            value = client.get(keys.product(product_id))
            if value is not None:
                assert json.loads(value)["name"] == f"edited {product_id}", "stale listing"
    finally:
        client.close()
