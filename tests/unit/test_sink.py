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
from cachewarm.lock import Fence

KEYS = Keys("unit", 1)


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    server = fakeredis.FakeServer()
    c = fakeredis.FakeRedis(server=server)
    yield c
    c.close()


def write(
    client: redis.Redis, fence: Fence, epoch: int, items: list[tuple[int, bytes]]
) -> sink.BatchWriter:
    pipe = sink.ScriptPipe(client, fence, ttl_s=100, jitter=0.1, where="fake")
    writer = sink.BatchWriter(pipe, KEYS, 0)
    try:
        writer.send(epoch, items)
        pipe.finish()
    finally:
        pipe.close()
    return writer


def test_writes_counts_and_ttl_with_jitter(client: redis.Redis) -> None:
    w = write(client, Fence(lock_key="x"), 0, [(1, b'{"id":1}'), (2, b'{"id":2}')])
    assert (w.totals.written, w.totals.unchanged) == (2, 0)
    assert client.get(KEYS.product(1)) == b'{"id":1}'
    assert 100_000 - 1000 <= client.pttl(KEYS.product(1)) <= 110_000


def test_unchanged_listing_only_refreshes_ttl(client: redis.Redis) -> None:
    client.set(KEYS.product(1), b'{"id":1}', px=5000)
    w = write(client, Fence(lock_key="x"), 0, [(1, b'{"id":1}')])
    assert (w.totals.written, w.totals.unchanged) == (0, 1)
    assert client.pttl(KEYS.product(1)) > 90_000


def test_empty_payload_removes_listing(client: redis.Redis) -> None:
    client.set(KEYS.product(5), b"old")
    w = write(client, Fence(lock_key="x"), 0, [(5, b"")])
    assert w.totals.removed == 1
    assert client.get(KEYS.product(5)) is None


def test_invalidated_after_read_is_skipped_before_is_written(client: redis.Redis) -> None:
    read_epoch = 0
    epoch, deleted = sink.invalidate(client, KEYS, [1], tombstone_s=60, batch=10, where="fake")
    assert (epoch, deleted) == (1, 0)
    w = write(client, Fence(lock_key="x"), read_epoch, [(1, b"stale"), (2, b"fine")])
    assert w.skipped == {1}
    assert client.get(KEYS.product(1)) is None
    assert client.get(KEYS.product(2)) == b"fine"
    # a warm that read after the invalidation may write
    write(client, Fence(lock_key="x"), epoch, [(1, b"fresh")])
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
        write(client, Fence(lock_key="lock", token="mine"), 0, [(1, b"x")])
    assert client.get(KEYS.product(1)) is None


def test_fence_accepts_the_holder(client: redis.Redis) -> None:
    client.set("lock", "mine")
    write(client, Fence(lock_key="lock", token="mine"), 0, [(1, b"x")])
    assert client.get(KEYS.product(1)) == b"x"


def test_deadline_passed_writes_nothing(client: redis.Redis) -> None:
    past = int(time.time() * 1000) - 1000
    with pytest.raises(DeadlineExceeded):
        write(client, Fence(lock_key="x", deadline_ms=past), 0, [(1, b"x")])
    assert client.get(KEYS.product(1)) is None


def test_publish_replaces_hot_list_and_meta(client: redis.Redis) -> None:
    now = sink.server_time_ms(client)
    fence = Fence(lock_key="x")
    client.hset(KEYS.hot_meta, "stale_field", "1")
    sink.publish_hot(
        client, KEYS, fence, b"[3,1]", expire_at_ms=now + 60_000, meta={"size": "2"}, where="f"
    )
    assert client.get(KEYS.hot) == b"[3,1]"
    assert client.hgetall(KEYS.hot_meta) == {b"size": b"2"}
    assert 0 < client.pttl(KEYS.hot) <= 60_000


def test_many_batches_pipelined_in_order(client: redis.Redis) -> None:
    pipe = sink.ScriptPipe(client, Fence(lock_key="x"), ttl_s=100, jitter=0, where="f")
    writer = sink.BatchWriter(pipe, KEYS, 0)
    try:
        for start in range(0, 1000, 100):
            writer.send(0, [(i, b"%d" % i) for i in range(start, start + 100)])
        pipe.finish()
    finally:
        pipe.close()
    assert writer.totals.written == 1000
    assert client.get(KEYS.product(999)) == b"999"


def test_touch_refreshes_present_and_reports_missing(client: redis.Redis) -> None:
    client.set(KEYS.product(1), b"a", px=1000)
    client.set(KEYS.product(3), b"c", px=1000)
    pipe = sink.ScriptPipe(client, Fence(lock_key="x"), ttl_s=100, jitter=0.5, where="f")
    gone: list[int] = []
    try:
        sink.touch(pipe, KEYS, [1, 2, 3, 4], gone.extend)
        pipe.finish()
    finally:
        pipe.close()
    assert gone == [2, 4]
    assert 99_000 < client.pttl(KEYS.product(3)) <= 150_000
    assert client.get(KEYS.product(1)) == b"a"


def test_ttl_jitter_spreads_a_batch(client: redis.Redis) -> None:
    pipe = sink.ScriptPipe(client, Fence(lock_key="x"), ttl_s=100, jitter=0.5, where="f")
    try:
        sink.BatchWriter(pipe, KEYS, 0).send(0, [(i, b"v") for i in range(200)])
        pipe.finish()
    finally:
        pipe.close()
    ttls = [client.pttl(KEYS.product(i)) for i in range(200)]
    assert all(99_000 < t <= 150_000 for t in ttls)
    assert max(ttls) - min(ttls) > 25_000  # spread over the jitter window, not bunched


def test_writer_learns_the_epoch_from_its_replies(client: redis.Redis) -> None:
    sink.invalidate(client, KEYS, [7, 8], tombstone_s=60, batch=1, where="fake")
    w = write(client, Fence(lock_key="x"), 0, [(1, b"x")])
    assert w.epoch == 2


def test_a_refused_batch_leaves_no_reply_for_the_next_user(client: redis.Redis) -> None:
    """After a fenced-out batch, the pooled connection must not hold the next batch's reply."""
    client.set("lock", "someone-else")
    pipe = sink.ScriptPipe(
        client, Fence(lock_key="lock", token="mine"), ttl_s=100, jitter=0, where="f"
    )
    writer = sink.BatchWriter(pipe, KEYS, 0)
    try:
        writer.send(0, [(1, b"x")])
        with pytest.raises(LockLost):
            writer.send(0, [(2, b"y")])  # collects batch 1's refusal; batch 2 is still due
    finally:
        pipe.close()
    assert client.ping() is True
    assert client.get("lock") == b"someone-else"
