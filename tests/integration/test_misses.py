"""Misses readers report (`XADD {prefix}:v{version}:misses`), filled by `run` and `follow`.

Against real servers: what a reader reports is cached by the next run with a warm's
bytes and TTL, through the guard, without joining the hot list; garbage and unknown ids
are counted, never fatal; a flood stays bounded; a crash loses no entry.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import redis
from redis.cluster import RedisCluster

import cachewarm as cw
from cachewarm.config import Settings
from cachewarm.keys import Keys
from tests.helpers import (
    MakeSettings,
)

READER = Path(__file__).resolve().parents[2] / "examples" / "readers" / "reader.py"
HOT_ONLY_FIRST = "SELECT id FROM products ORDER BY id LIMIT %(limit)s"
Client = redis.Redis | RedisCluster


def report(client: Client, keys: Keys, *values: str | int, maxlen: int = 10_000) -> None:
    """What a reader sends after a miss, one entry per value (the contract's command)."""
    pipe = client.pipeline(transaction=False)
    for value in values:
        pipe.xadd(keys.misses, {"id": str(value)}, maxlen=maxlen, approximate=True)
    pipe.execute()


def hot(client: Client, keys: Keys) -> list[int]:
    return [int(i) for i in json.loads(client.get(keys.hot) or b"[]")]


def misses_settings(make_settings: MakeSettings, **overrides: object) -> Settings:
    """The shop with a hot set of the first 5 products, so misses are other products."""
    return make_settings(hot_query=HOT_ONLY_FIRST, limit=5, **overrides)


def test_misses_a_reader_reports_are_cached_by_the_next_run_with_a_warms_bytes(
    make_settings: MakeSettings, redis_client: Client, redis_url: str
) -> None:
    s = misses_settings(make_settings)
    keys = s.keys
    wanted = [150, 120, 101]
    if isinstance(redis_client, redis.Redis):  # the snippet itself, on one Redis
        for product_id in wanted:
            got = subprocess.run(
                [sys.executable, str(READER), redis_url, keys.prefix, "1", str(product_id)],
                capture_output=True,
                timeout=30,
                check=False,
            )
            assert got.returncode == 1, got.stderr
    else:
        report(redis_client, keys, *wanted)
    assert redis_client.xlen(keys.misses) == len(wanted)

    record = cw.warm(s)
    assert record.status == "ok"
    assert (record.miss_taken, record.miss_filled) == (3, 3)
    assert (record.miss_invalid, record.miss_absent, record.miss_queue) == (0, 0, 0)
    assert hot(redis_client, keys) == [1, 2, 3, 4, 5]  # the hot list is the hot query's

    # The bytes a warm writes: the same products warmed as hot ones under another prefix.
    as_hot = make_settings(
        hot_query=f"SELECT id FROM products WHERE id IN ({','.join(map(str, wanted))}) "
        "LIMIT %(limit)s",
        prefix=f"{keys.prefix}-hot",
    )
    assert cw.warm(as_hot).status == "ok"
    for product_id in wanted:
        filled = redis_client.get(keys.product(product_id))
        assert filled is not None
        assert filled == redis_client.get(as_hot.keys.product(product_id))
        ttl_ms = int(redis_client.pttl(keys.product(product_id)))
        assert 0.9 * s.warm.ttl * 1000 < ttl_ms <= (1 + s.warm.ttl_jitter) * s.warm.ttl * 1000
    assert cw.audit(s, every=True).stale == 0
    assert redis_client.xlen(keys.misses) == 0


def test_garbage_and_absent_ids_are_counted_not_fatal(
    make_settings: MakeSettings, redis_client: Client
) -> None:
    s = misses_settings(make_settings)
    keys = s.keys
    garbage = ["0", "-7", "007", "1.5", "abc", "", str(2**64), " 12", "9" * 30]
    report(redis_client, keys, 42, *garbage, 42, 99_999_999, 43, 42)
    redis_client.xadd(keys.misses, {"product": "44"})  # not the contract's field
    redis_client.xadd(keys.misses, {"id": "45", "extra": "1"})

    record = cw.warm(s)
    assert record.status == "ok"
    assert record.miss_taken == 1 + len(garbage) + 4 + 2
    assert record.miss_invalid == len(garbage) + 2
    assert (record.miss_filled, record.miss_absent) == (2, 1)  # 42 once, 43; 99999999
    assert redis_client.get(keys.product(42)) is not None
    assert redis_client.get(keys.product(99_999_999)) is None
    assert redis_client.xlen(keys.misses) == 0
    assert runs_of(s)[-1]["miss_invalid"] == len(garbage) + 2


def runs_of(s: Settings) -> list[dict[str, object]]:
    return [json.loads(line) for line in s.runlog.read_text().splitlines()]


def test_dry_run_reports_the_queue_and_consumes_nothing(
    make_settings: MakeSettings, redis_client: Client
) -> None:
    s = misses_settings(make_settings)
    keys = s.keys
    report(redis_client, keys, 100, 101, 100, "x")
    dry = cw.dry_run(s)
    assert dry.misses is not None
    assert (dry.misses.queued, dry.misses.would_take) == (4, 4)
    assert (dry.misses.ids, dry.misses.invalid) == (2, 1)
    assert redis_client.xlen(keys.misses) == 4
    assert redis_client.get(keys.product(100)) is None
    assert cw.status(s).miss_queue == 4
    assert cw.warm(s).miss_filled == 2
    assert cw.status(s).miss_queue == 0


def test_miss_queue_off_leaves_the_stream_alone(
    make_settings: MakeSettings, redis_client: Client
) -> None:
    s = misses_settings(make_settings, miss_queue=False)
    report(redis_client, s.keys, 100)
    record = cw.warm(s)
    assert (record.status, record.miss_taken) == ("ok", 0)
    assert redis_client.xlen(s.keys.misses) == 1
    assert redis_client.get(s.keys.product(100)) is None


def test_no_stream_is_created_while_no_reader_reports(
    make_settings: MakeSettings, redis_client: Client
) -> None:
    s = misses_settings(make_settings)
    assert cw.warm(s).status == "ok"
    assert redis_client.exists(s.keys.misses) == 0
