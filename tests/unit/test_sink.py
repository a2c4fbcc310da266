"""The write, publish, invalidate and slot-state scripts' logic, quickly, on fakeredis.

The same behaviour is proven against a real Redis in test_warm.py and
test_reliability.py; these pin down the script semantics case by case.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import fakeredis
import pytest
import redis

from cachewarm.errors import DeadlineExceeded, LockLost
from cachewarm.keys import Keys, key_slot
from cachewarm.lock import Fence, Lease
from cachewarm.store.pipe import ScriptPipe
from cachewarm.store.reads import server_time_ms
from cachewarm.store.slots import SlotStates, learn_states
from cachewarm.store.writer import BatchWriter, publish_hot
from cachewarm.store.writer import invalidate as invalidate_listings

KEYS = Keys("unit", 1)


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    server = fakeredis.FakeServer()
    c = fakeredis.FakeRedis(server=server)
    yield c
    c.close()


NO_LOCK = Fence(lock_key="x")


def learn(client: redis.Redis, ids: list[int] | None = None) -> SlotStates:
    """The states of the slots of products 0-999 (or of `ids`)."""
    pipe = ScriptPipe(client, where="fake")
    try:
        return learn_states(pipe, KEYS, list(range(1000)) if ids is None else ids)
    finally:
        pipe.close()


def writer_for(
    client: redis.Redis, fence: Fence, states: SlotStates, *, jitter: float = 0.1
) -> tuple[ScriptPipe, BatchWriter]:
    pipe = ScriptPipe(client, where="fake", lock_key=fence.lock_key)
    return pipe, BatchWriter(pipe, KEYS, fence, states, ttl_s=100, jitter=jitter)


def write(
    client: redis.Redis,
    fence: Fence,
    items: list[tuple[int, bytes]],
    states: SlotStates | None = None,
) -> BatchWriter:
    """One batch, checked against `states` (learned now when not given)."""
    pipe, writer = writer_for(client, fence, states or learn(client))
    try:
        writer.send(items)
        pipe.finish()
    finally:
        pipe.close()
    return writer


def invalidate(client: redis.Redis, ids: list[int], batch: int = 10) -> int:
    pipe = ScriptPipe(client, where="fake")
    try:
        return invalidate_listings(pipe, KEYS, ids, batch=batch)[1]
    finally:
        pipe.close()


def state_key(product_id: int) -> str:
    return KEYS.slot_state(key_slot(KEYS.product(product_id).encode()))


def test_writes_counts_and_ttl_with_jitter(client: redis.Redis) -> None:
    w = write(client, NO_LOCK, [(1, b'{"id":1}'), (2, b'{"id":2}')])
    assert (w.totals.written, w.totals.unchanged) == (2, 0)
    assert client.get(KEYS.product(1)) == b'{"id":1}'
    assert 100_000 - 1000 <= client.pttl(KEYS.product(1)) <= 110_000


def test_learning_creates_every_slot_state_once(client: redis.Redis) -> None:
    first = learn(client, list(range(20_000)))
    assert all(first.known) and client.dbsize() == 16384
    assert learn(client, list(range(20_000))).known == first.known


def test_unchanged_listing_only_refreshes_ttl(client: redis.Redis) -> None:
    client.set(KEYS.product(1), b'{"id":1}', px=5000)
    w = write(client, NO_LOCK, [(1, b'{"id":1}')])
    assert (w.totals.written, w.totals.unchanged) == (0, 1)
    assert client.pttl(KEYS.product(1)) > 90_000


def test_empty_payload_removes_listing(client: redis.Redis) -> None:
    client.set(KEYS.product(5), b"old")
    w = write(client, NO_LOCK, [(5, b"")])
    assert w.totals.removed == 1
    assert client.get(KEYS.product(5)) is None


def test_invalidated_after_learning_is_skipped_before_is_written(client: redis.Redis) -> None:
    learned = learn(client)
    assert invalidate(client, [1]) == 0
    w = write(client, NO_LOCK, [(1, b"stale"), (2, b"fine")], learned)
    assert w.skipped == {1}
    assert client.get(KEYS.product(1)) is None
    assert client.get(KEYS.product(2)) == b"fine"
    # a warm that learned the states after the invalidation may write
    write(client, NO_LOCK, [(1, b"fresh")])
    assert client.get(KEYS.product(1)) == b"fresh"


@pytest.mark.parametrize("how", ["evicted", "recreated", "flushed"])
def test_a_lost_slot_state_makes_the_write_skip(client: redis.Redis, how: str) -> None:
    """Whatever happened to the bookkeeping, a value read before it is not written."""
    learned = learn(client)
    before = learned.known[key_slot(KEYS.product(1).encode())]
    if how == "flushed":
        client.flushall()
    else:
        client.delete(state_key(1))
    if how == "recreated":
        learn(client)
    w = write(client, NO_LOCK, [(1, b"maybe stale")], learned)
    assert w.skipped == {1}
    assert client.get(KEYS.product(1)) is None
    assert client.get(state_key(1)) not in (None, before)


def test_unknown_state_never_matches(client: redis.Redis) -> None:
    learn(client)
    w = write(client, NO_LOCK, [(1, b"x")], SlotStates())
    assert w.skipped == {1}
    assert client.get(KEYS.product(1)) is None


def test_invalidate_batches_and_counts(client: redis.Redis) -> None:
    for i in range(25):
        client.set(KEYS.product(i), b"v")
    before = client.get(state_key(29))
    assert invalidate(client, list(range(30)), batch=7) == 25
    assert client.get(state_key(29)) not in (None, before)
    assert client.pttl(state_key(29)) > 24 * 3600 * 1000


def test_fence_refuses_a_lost_lock(client: redis.Redis) -> None:
    client.set("lock", "someone-else")
    with pytest.raises(LockLost, match="Redis lock lock is no longer held"):
        write(client, Fence(lock_key="lock", token="mine"), [(1, b"x")])
    assert client.get(KEYS.product(1)) is None


def test_fence_accepts_the_holder(client: redis.Redis) -> None:
    client.set("lock", "mine")
    write(client, Fence(lock_key="lock", token="mine"), [(1, b"x")])
    assert client.get(KEYS.product(1)) == b"x"


def test_an_expired_lease_is_refused_even_with_the_token(client: redis.Redis) -> None:
    client.set("lock", "mine")
    past = Lease(server_time_ms(client, where="fake") - 1)
    with pytest.raises(LockLost):
        write(client, Fence(lock_key="lock", token="mine", lease=past), [(1, b"x")])
    assert client.get(KEYS.product(1)) is None


def test_deadline_passed_writes_nothing(client: redis.Redis) -> None:
    past = int(time.time() * 1000) - 1000
    with pytest.raises(DeadlineExceeded):
        write(client, Fence(lock_key="x", deadline_ms=past), [(1, b"x")])
    assert client.get(KEYS.product(1)) is None


def test_publish_replaces_hot_list_and_meta(client: redis.Redis) -> None:
    now = server_time_ms(client, where="fake")
    client.hset(KEYS.hot_meta, "stale_field", "1")
    pipe = ScriptPipe(client, where="fake")
    try:
        publish_hot(pipe, KEYS, NO_LOCK, b"[3,1]", expire_at_ms=now + 60_000, meta={"size": "2"})
    finally:
        pipe.close()
    assert client.get(KEYS.hot) == b"[3,1]"
    assert client.hgetall(KEYS.hot_meta) == {b"size": b"2"}
    assert 0 < client.pttl(KEYS.hot) <= 60_000


def test_hot_meta_shares_the_hot_keys_cluster_slot() -> None:
    assert key_slot(KEYS.hot.encode()) == redis_slot(KEYS.hot_meta)
    assert all(redis_slot(KEYS.slot_state(s)) == s for s in (0, 1, 5000, 16383))


def redis_slot(key: str) -> int:
    """redis-py's own slot function, hash tags included."""
    from redis.crc import key_slot as crc_slot

    return crc_slot(key.encode())


def test_many_batches_pipelined_in_order(client: redis.Redis) -> None:
    pipe, writer = writer_for(client, NO_LOCK, learn(client), jitter=0)
    try:
        for start in range(0, 1000, 100):
            writer.send([(i, b"%d" % i) for i in range(start, start + 100)])
        pipe.finish()
    finally:
        pipe.close()
    assert writer.totals.written == 1000
    assert client.get(KEYS.product(999)) == b"999"


def test_touch_refreshes_present_and_reports_missing(client: redis.Redis) -> None:
    client.set(KEYS.product(1), b"a", px=1000)
    client.set(KEYS.product(3), b"c", px=1000)
    pipe, writer = writer_for(client, NO_LOCK, SlotStates(), jitter=0.5)
    gone: list[int] = []
    try:
        writer.touch([1, 2, 3, 4], gone.extend)
        pipe.finish()
    finally:
        pipe.close()
    assert gone == [2, 4]
    assert 99_000 < client.pttl(KEYS.product(3)) <= 150_000
    assert client.get(KEYS.product(1)) == b"a"


def test_ttl_jitter_spreads_a_batch(client: redis.Redis) -> None:
    pipe, writer = writer_for(client, NO_LOCK, learn(client), jitter=0.5)
    try:
        writer.send([(i, b"v") for i in range(200)])
        pipe.finish()
    finally:
        pipe.close()
    ttls = [client.pttl(KEYS.product(i)) for i in range(200)]
    assert all(99_000 < t <= 150_000 for t in ttls)
    assert max(ttls) - min(ttls) > 25_000  # spread over the jitter window, not bunched


def test_writer_learns_new_states_from_its_replies(client: redis.Redis) -> None:
    states = learn(client)
    invalidate(client, [7])
    w = write(client, NO_LOCK, [(7, b"read before")], states)
    assert w.skipped == {7}
    w = write(client, NO_LOCK, [(7, b"read after")], states)  # the reply taught the new state
    assert w.skipped == set() and client.get(KEYS.product(7)) == b"read after"


def test_a_script_cache_flush_is_survived(client: redis.Redis) -> None:
    states = learn(client)
    client.script_flush()
    write(client, NO_LOCK, [(1, b"x")], states)
    assert client.get(KEYS.product(1)) == b"x"


def test_a_refused_batch_leaves_no_reply_for_the_next_user(client: redis.Redis) -> None:
    """After a fenced-out batch, the pooled connection must not hold the next batch's reply."""
    states = learn(client)
    client.set("lock", "someone-else")
    pipe, writer = writer_for(client, Fence(lock_key="lock", token="mine"), states)
    try:
        writer.send([(1, b"x")])
        with pytest.raises(LockLost):
            writer.send([(2, b"y")])  # collects batch 1's refusal; batch 2 is still due
    finally:
        pipe.close()
    assert client.ping() is True
    assert client.get("lock") == b"someone-else"


def same_slot(product_id: int) -> int:
    """Another product whose listing shares `product_id`'s cluster slot."""
    slot = key_slot(KEYS.product(product_id).encode())
    return next(
        i for i in range(product_id + 1, 10**6) if key_slot(KEYS.product(i).encode()) == slot
    )


@pytest.mark.parametrize("marked", [True, False])
def test_a_batch_read_ahead_never_trusts_a_state_learned_after_its_read(
    client: redis.Redis, marked: bool
) -> None:
    """The query of a batch goes out before the previous batch's replies are read.

    Here product b is read (old value), then edited and invalidated; an earlier batch's
    write of a, in b's slot, meets the new state and its reply teaches it to the writer.
    With the mark taken before b's read, the writer must not trust that state for b;
    without it (what a writer that ignored read-ahead would do), b's stale value lands.
    """
    a = 5
    b = same_slot(a)
    states = learn(client, [a, b])
    pipe, writer = writer_for(client, NO_LOCK, states)
    try:
        earlier = writer.mark()
        b_read = writer.mark()  # b's batch query goes out: b's old row is read
        invalidate(client, [b])  # b edited and invalidated after that read
        writer.send([(a, b"a")], earlier)  # meets b's new state: a is skipped
        writer.send([(999_999, b"other")], writer.mark())  # collects a's reply: learns it
        writer.send([(b, b"b read before the edit")], b_read if marked else None)
        pipe.finish()
    finally:
        pipe.close()
    assert a in writer.skipped
    if marked:
        assert b in writer.skipped and client.get(KEYS.product(b)) is None
    else:  # the hazard the mark exists for
        assert client.get(KEYS.product(b)) == b"b read before the edit"
