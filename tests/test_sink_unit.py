"""The write, publish and invalidate scripts' logic, quickly, on fakeredis.

The same behaviour is proven against a real Redis in test_warm.py and
test_reliability.py; these pin down the script semantics case by case.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import fakeredis
import pytest
import redis

from cachewarm import sink
from cachewarm.errors import DeadlineExceeded, LockLost
from cachewarm.keys import Keys

KEYS = Keys("unit", 1)


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    server = fakeredis.FakeServer()
    c = fakeredis.FakeRedis(server=server)
    yield c
    c.close()


def write(
    client: redis.Redis, fence: sink.Fence, epoch: int, items: list[tuple[int, bytes]]
) -> sink.BatchWriter:
    writer = sink.BatchWriter(client, KEYS, fence, ttl_s=100, jitter=0.1, where="fake")
    try:
        writer.send(epoch, items)
        writer.finish()
    finally:
        writer.close()
    return writer


def test_writes_counts_and_ttl_with_jitter(client: redis.Redis) -> None:
    w = write(client, sink.Fence(lock_key="x"), 0, [(1, b'{"id":1}'), (2, b'{"id":2}')])
    assert (w.totals.written, w.totals.unchanged) == (2, 0)
    assert client.get(KEYS.product(1)) == b'{"id":1}'
    assert 100_000 - 1000 <= client.pttl(KEYS.product(1)) <= 110_000


def test_unchanged_listing_only_refreshes_ttl(client: redis.Redis) -> None:
    client.set(KEYS.product(1), b'{"id":1}', px=5000)
    w = write(client, sink.Fence(lock_key="x"), 0, [(1, b'{"id":1}')])
    assert (w.totals.written, w.totals.unchanged) == (0, 1)
    assert client.pttl(KEYS.product(1)) > 90_000


def test_empty_payload_removes_listing(client: redis.Redis) -> None:
    client.set(KEYS.product(5), b"old")
    w = write(client, sink.Fence(lock_key="x"), 0, [(5, b"")])
    assert w.totals.removed == 1
    assert client.get(KEYS.product(5)) is None


def test_invalidated_after_read_is_skipped_before_is_written(client: redis.Redis) -> None:
    read_epoch = 0
    epoch, deleted = sink.invalidate(client, KEYS, [1], tombstone_s=60, batch=10, where="fake")
    assert (epoch, deleted) == (1, 0)
    w = write(client, sink.Fence(lock_key="x"), read_epoch, [(1, b"stale"), (2, b"fine")])
    assert w.skipped == [1]
    assert client.get(KEYS.product(1)) is None
    assert client.get(KEYS.product(2)) == b"fine"
    # a warm that read after the invalidation may write
    write(client, sink.Fence(lock_key="x"), epoch, [(1, b"fresh")])
    assert client.get(KEYS.product(1)) == b"fresh"


def test_invalidate_batches_and_counts(client: redis.Redis) -> None:
    for i in range(25):
        client.set(KEYS.product(i), b"v")
    epoch, deleted = sink.invalidate(
        client, KEYS, list(range(30)), tombstone_s=60, batch=7, where="fake"
    )
    assert deleted == 25
    assert epoch == 5  # one epoch per batch script
    assert client.pttl(KEYS.tombstone(29)) > 60_000


def test_fence_refuses_a_lost_lock(client: redis.Redis) -> None:
    client.set("lock", "someone-else")
    with pytest.raises(LockLost, match="no longer held"):
        write(client, sink.Fence(lock_key="lock", token="mine"), 0, [(1, b"x")])
    assert client.get(KEYS.product(1)) is None


def test_fence_accepts_the_holder(client: redis.Redis) -> None:
    client.set("lock", "mine")
    write(client, sink.Fence(lock_key="lock", token="mine"), 0, [(1, b"x")])
    assert client.get(KEYS.product(1)) == b"x"


def test_deadline_passed_writes_nothing(client: redis.Redis) -> None:
    past = int(time.time() * 1000) - 1000
    with pytest.raises(DeadlineExceeded):
        write(client, sink.Fence(lock_key="x", deadline_ms=past), 0, [(1, b"x")])
    assert client.get(KEYS.product(1)) is None


def test_publish_replaces_hot_list_and_meta(client: redis.Redis) -> None:
    now = sink.server_time_ms(client)
    fence = sink.Fence(lock_key="x")
    client.hset(KEYS.hot_meta, "stale_field", "1")
    sink.publish_hot(
        client, KEYS, fence, b"[3,1]", expire_at_ms=now + 60_000, meta={"size": "2"}, where="f"
    )
    assert client.get(KEYS.hot) == b"[3,1]"
    assert client.hgetall(KEYS.hot_meta) == {b"size": b"2"}
    assert 0 < client.pttl(KEYS.hot) <= 60_000


def test_many_batches_pipelined_in_order(client: redis.Redis) -> None:
    writer = sink.BatchWriter(
        client, KEYS, sink.Fence(lock_key="x"), ttl_s=100, jitter=0, where="f"
    )
    try:
        for start in range(0, 1000, 100):
            writer.send(0, [(i, b"%d" % i) for i in range(start, start + 100)])
        totals = writer.finish()
    finally:
        writer.close()
    assert totals.written == 1000
    assert client.get(KEYS.product(999)) == b"999"
