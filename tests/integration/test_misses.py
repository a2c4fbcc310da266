"""Misses readers report (`XADD {prefix}:v{version}:misses`), filled by `run` and `follow`.

Against real servers: what a reader reports is cached by the next run with a warm's
bytes and TTL, through the guard, without joining the hot list; garbage and unknown ids
are counted, never fatal; a flood stays bounded; a crash loses no entry.
"""

from __future__ import annotations

import json
import random
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis
import seed as shop_seed
import servers
from pymysql.connections import Connection
from redis.cluster import RedisCluster

import cachewarm as cw
from cachewarm.binlog.follow import IDLE_SAVE_S
from cachewarm.config import Settings, load_settings
from cachewarm.keys import MISS_GROUP, Keys
from cachewarm.runlog import RunRecord
from tests import prometheus
from tests.helpers import (
    SHOP_PRODUCTS,
    MakeConfig,
    MakeSettings,
    cachewarm_here,
    invalidate_a_batch_in_flight,
    running,
    running_listing_batches,
    slow_listing_query,
    snapshot,
    start,
    wait_for,
    warming,
)
from tests.integration.test_follow import following

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
    make_settings: MakeSettings, redis_client: Client, key_prefix: str
) -> None:
    """The dry run counts what the run will: invalid entries, and ids without a listing
    row found by the run's listing query; it takes no entry, makes no group, writes no key."""
    s = misses_settings(make_settings)
    keys = s.keys
    report(redis_client, keys, 100, 101, 100, "x", 99_999_999)
    before = snapshot(redis_client, key_prefix)
    dry = cw.dry_run(s)
    assert dry.misses is not None
    assert (dry.misses.queued, dry.misses.would_take) == (5, 5)
    assert (dry.misses.ids, dry.misses.invalid, dry.misses.absent) == (3, 1, 1)
    printed = cachewarm_here("--config", s.source, "run", "--dry-run")
    assert printed.returncode == 0, printed.stderr
    assert (
        "misses: 5 queued; the run would take 5: 3 product ids, 1 invalid, "
        "1 without a listing row\n"
    ) in printed.stdout
    assert snapshot(redis_client, key_prefix) == before  # the stream and its groups too
    assert redis_client.xinfo_groups(keys.misses) == []
    assert redis_client.xlen(keys.misses) == 5
    assert redis_client.get(keys.product(100)) is None
    logged = runs_of(s)[-1]
    assert (logged["status"], logged["miss_taken"], logged["miss_filled"]) == ("dry-run", 0, 0)
    assert (logged["miss_invalid"], logged["miss_absent"], logged["miss_queue"]) == (1, 1, 5)
    assert cw.status(s).miss_queue == 5
    record = cw.warm(s)
    assert (record.miss_filled, record.miss_invalid, record.miss_absent) == (2, 1, 1)
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


def test_a_misses_key_that_is_no_stream_fails_no_run(
    make_settings: MakeSettings, redis_client: Client
) -> None:
    s = misses_settings(make_settings)
    redis_client.set(s.keys.misses, b"not a stream")
    record = cw.warm(s)
    assert (record.status, record.miss_taken, record.hot_published) == ("ok", 0, True)
    assert redis_client.get(s.keys.misses) == b"not a stream"


def test_no_stream_is_created_while_no_reader_reports(
    make_settings: MakeSettings, redis_client: Client
) -> None:
    s = misses_settings(make_settings)
    assert cw.warm(s).status == "ok"
    assert redis_client.exists(s.keys.misses) == 0


def test_a_flood_stays_bounded_and_the_run_within_its_deadline(
    make_settings: MakeSettings, redis_client: Client
) -> None:
    """100k reports with the contract's MAXLEN: the stream keeps about miss_queue_max, a
    run takes miss_per_run of them and ends well before its deadline; a reader that
    forgets MAXLEN is trimmed back by the next run."""
    s = misses_settings(make_settings, miss_per_run=3000, max_seconds=60)
    keys = s.keys
    flood = [str(1 + i % (SHOP_PRODUCTS + 50)) if i % 7 else f"junk{i}" for i in range(100_000)]
    for start_at in range(0, len(flood), 10_000):
        report(redis_client, keys, *flood[start_at : start_at + 10_000])
    queued = int(redis_client.xlen(keys.misses))
    # MAXLEN ~ trims whole stream nodes (100 entries by default): never much more than that.
    assert s.warm.miss_queue_max <= queued <= s.warm.miss_queue_max + 100

    head: Any = redis_client.xrange(keys.misses, count=3000)  # what the run will take
    values = [fields[b"id"] for _, fields in head]
    named = {int(v) for v in values if v.isdigit()}

    record = cw.warm(s)
    assert record.status == "ok"
    assert record.duration_s < s.run.max_seconds / 2
    assert record.miss_taken == 3000
    assert record.miss_invalid == sum(not v.isdigit() for v in values)
    assert record.miss_filled == len({i for i in named if i <= SHOP_PRODUCTS})
    assert record.miss_absent == len({i for i in named if i > SHOP_PRODUCTS})
    assert record.miss_queue == queued - 3000 == redis_client.xlen(keys.misses)

    forgetful = [str(i % SHOP_PRODUCTS + 1) for i in range(15_000)]
    pipe = redis_client.pipeline(transaction=False)
    for value in forgetful:
        pipe.xadd(keys.misses, {"id": value})  # no MAXLEN
    pipe.execute()
    assert redis_client.xlen(keys.misses) > s.warm.miss_queue_max + 100
    record = cw.warm(make_settings(hot_query=HOT_ONLY_FIRST, limit=5, miss_per_run=1))
    assert record.miss_queue <= s.warm.miss_queue_max + 100


@pytest.mark.writes_mysql
def test_misses_an_invalidation_racing_a_fill_leaves_nothing_stale(
    make_settings: MakeSettings, shop_conn: Connection, redis_client: Client
) -> None:
    """The admin flow against the miss path: edit rows a fill is reading, invalidate."""
    s = make_settings(
        hot_query=HOT_ONLY_FIRST, limit=1, listing_query=slow_listing_query(0.15), batch_size=4
    )
    admin = make_settings(batch_size=4)  # same keys and listings, without the slowness
    reported = list(range(101, 117))
    report(redis_client, s.keys, *reported)
    with warming(s) as warm:
        raced = invalidate_a_batch_in_flight(
            shop_conn, warm.is_alive, lambda ids: cw.invalidate(admin, ids)
        )
    assert raced, "never caught a fill in flight; the race was not exercised"
    assert set(raced.edited) <= set(reported), "the batch caught was not a miss fill"
    record = warm.result()
    assert record.status == "ok"
    assert len(raced.caught) <= record.skipped_invalidated <= len(raced.edited)
    assert record.miss_filled == len(reported) - record.skipped_invalidated
    for product_id in raced.edited:
        value = redis_client.get(s.keys.product(product_id))
        assert value is None or json.loads(value)["name"] == f"edited {product_id}"
    audit = cw.audit(admin, every=True)
    assert audit.checked >= len(reported) - len(raced.edited)
    assert audit.stale == 0, audit.stale_ids


def pending(client: Client, keys: Keys) -> list[dict[str, Any]]:
    """The group's entries taken and not acknowledged, with their idle times."""
    found: Any = client.xpending_range(keys.misses, MISS_GROUP, min="-", max="+", count=100_000)
    return list(found)


def test_kill_9_mid_drain_loses_no_entry(
    make_config: MakeConfig, redis_client: Client, shop_conn: Connection
) -> None:
    slow = make_config(
        hot_query=HOT_ONLY_FIRST,
        limit=1,
        listing_query=slow_listing_query(0.1),
        batch_size=4,
        miss_claim_after=0.5,
    )
    keys = load_settings(slow, env={}).keys
    reported = list(range(101, 141))
    report(redis_client, keys, *reported)
    with running(start("--config", str(slow), "run")) as proc:
        wait_for(
            "a fill's listing query",
            lambda: any(set(ids) <= set(reported) for _, ids in running_listing_batches(shop_conn)),
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    taken = pending(redis_client, keys)
    assert taken, "the run died holding no entry: the crash missed the drain"
    wait_for(
        "the dead run's entries to idle past miss_claim_after",
        lambda: all(int(str(p["time_since_delivered"])) > 500 for p in pending(redis_client, keys)),
    )

    left = int(redis_client.xlen(keys.misses))  # entries the dead run had not finished
    fast = make_config(hot_query=HOT_ONLY_FIRST, limit=1, miss_claim_after=0.5)
    record = cw.warm(load_settings(fast, env={}))
    assert record.status == "ok"
    assert record.miss_taken == left
    for product_id in reported:
        assert redis_client.get(keys.product(product_id)) is not None, product_id
    assert redis_client.xlen(keys.misses) == 0
    assert pending(redis_client, keys) == []
    consumers = redis_client.xinfo_consumers(keys.misses, MISS_GROUP)
    assert consumers == [], "the dead run's consumer, holding nothing now, is still listed"


FOLLOW_WITHIN_S = 10  # generous for a loaded CI box; bench/misses.py measures the latency


@pytest.fixture
def follow_settings(
    binlog_server: servers.Server, redis_url: str, redis_mode: str, key_prefix: str, tmp_path: Path
) -> Iterator[Settings]:
    """A shop on the binlog server, and settings that follow its products table."""
    name = f"cwtest_{secrets.token_hex(6)}"
    url = f"{binlog_server.url}/{name}"
    shop_seed.seed(url, SHOP_PRODUCTS)
    config = tmp_path / "follow.toml"
    config.write_text(
        f'[mysql]\nurl = "{url}"\n[redis]\nurl = "{redis_url}"\nmode = "{redis_mode}"\n'
        f"[warm]\nhot_query = {json.dumps(shop_seed.HOT_QUERY)}\n"
        f"listing_query = {json.dumps(shop_seed.LISTING_QUERY)}\n"
        f'[keys]\nprefix = "{key_prefix}"\n'
        f'[run]\nlockfile = "{tmp_path / "cw.lock"}"\nlog = "{tmp_path / "runs.jsonl"}"\n'
        f'[follow]\ntables = {{ "products" = "id" }}\ncheckpoint = "{tmp_path / "f.json"}"\n',
        encoding="utf-8",
    )
    try:
        yield load_settings(config, env={})
    finally:
        conn = shop_seed.connect(binlog_server.url, server_only=True, local_infile=False)
        try:
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        finally:
            conn.close()


def test_follow_fills_reported_misses_as_they_come(
    follow_settings: Settings, redis_client: redis.Redis
) -> None:
    """The follower drains beside the binlog: a report is cached within moments, with
    the bytes a warm writes, acknowledged, and no hot list appears."""
    s, keys = follow_settings, follow_settings.keys
    with following(s, from_now=True):
        assert redis_client.exists(keys.misses) == 0  # nothing reported, nothing created
        for batch in ([7, 8, 9], [150, 7, "junk", 99_999]):
            report(redis_client, keys, *batch)
            wanted = [keys.product(i) for i in batch if isinstance(i, int) and i <= SHOP_PRODUCTS]
            wait_for(
                "the follower to fill the reported misses",
                partial(lambda names: redis_client.exists(*names) == len(names), wanted),
                timeout=FOLLOW_WITHIN_S,
            )
        wait_for("every entry acknowledged", lambda: redis_client.xlen(keys.misses) == 0)
    assert redis_client.exists(keys.hot) == 0
    assert redis_client.exists(keys.product(99_999)) == 0
    assert pending(redis_client, keys) == []
    audit = cw.audit(s, every=True)
    assert (audit.checked, audit.stale) == (4, 0)


def follower_misses(textfile: Path, keys: Keys) -> tuple[float | None, ...]:
    """The follower's miss series: filled, invalid, absent (counters), queue length;
    all None until the follower first writes the file (just after its first checkpoint)."""
    try:
        text = textfile.read_text(encoding="utf-8")  # whole: the file is replaced by rename
    except FileNotFoundError:
        return (None,) * 4
    series = prometheus.parse_prometheus(text)
    labels = {"prefix": keys.prefix, "version": str(keys.version)}
    names = ("filled_total", "invalid_total", "absent_total", "queue_length")
    return tuple(prometheus.value(series, f"cachewarm_follow_miss_{n}", **labels) for n in names)


def test_run_and_follow_draining_at_once_fill_each_entry_once(
    follow_settings: Settings, redis_client: Client, tmp_path: Path
) -> None:
    """`run`s and the follower drain one stream at the same time, through one consumer
    group, while readers report: each entry goes to exactly one of them, so every id
    reported once is filled once, with a warm's bytes, and nothing is left queued,
    pending or registered."""
    textfile = tmp_path / "textfile" / "follow.prom"
    base = follow_settings
    s = replace(  # slow fills, a few ids at a time: both consumers are busy at once
        base,
        warm=replace(
            base.warm,
            hot_query=HOT_ONLY_FIRST,
            limit=5,
            batch_size=4,
            listing_query=slow_listing_query(0.02),
        ),
        follow=replace(base.follow, metrics_textfile=str(textfile)),
    )
    keys = s.keys
    valid = list(range(6, SHOP_PRODUCTS + 1))  # every product outside the hot set, once
    absent = list(range(SHOP_PRODUCTS + 1, SHOP_PRODUCTS + 11))
    garbage = [f"junk{i}" for i in range(10)]
    entries: list[str | int] = [*valid, *absent, *garbage]
    random.Random(7).shuffle(entries)

    def reporter() -> None:
        for at in range(0, len(entries), 10):
            report(redis_client, keys, *entries[at : at + 10])
            time.sleep(0.1)  # a burst every 0.1 s, while the runs and the follower drain

    runs: list[RunRecord] = []
    with following(s, from_now=True):
        reporting = threading.Thread(target=reporter, name="reporter")
        reporting.start()
        try:
            while reporting.is_alive() or len(runs) < 2:
                runs.append(cw.warm(s))
        finally:
            reporting.join()
        runs.append(cw.warm(s))
        wait_for(
            "every entry filled and acknowledged",
            lambda: redis_client.xlen(keys.misses) == 0 and pending(redis_client, keys) == [],
            timeout=FOLLOW_WITHIN_S * 3,
        )
    assert all(r.status == "ok" for r in runs), [r.error for r in runs]
    logged = [r for r in runs_of(s) if r["command"] == "run"]
    assert len(logged) == len(runs)
    counted = ("filled", "invalid", "absent")
    by_runs = [sum(int(str(r[f"miss_{n}"])) for r in logged) for n in counted]
    by_follower = [int(v or 0) for v in follower_misses(textfile, keys)[:3]]
    assert by_runs[0] > 0 and by_follower[0] > 0, (by_runs, by_follower, "one consumer took all")
    # Exactly: an id filled by both would count twice, one lost would leave a count short.
    assert [r + f for r, f in zip(by_runs, by_follower, strict=True)] == [
        len(valid),
        len(garbage),
        len(absent),
    ]
    assert sum(int(str(r["miss_taken"])) for r in logged) == by_runs[0] + by_runs[1] + by_runs[2]

    assert redis_client.xlen(keys.misses) == 0
    assert pending(redis_client, keys) == []
    assert redis_client.xinfo_consumers(keys.misses, MISS_GROUP) == []
    assert hot(redis_client, keys) == [1, 2, 3, 4, 5]
    assert redis_client.exists(*(keys.product(i) for i in absent)) == 0

    as_hot = replace(  # the bytes a warm writes: the same products warmed as hot ones
        base,
        warm=replace(
            base.warm,
            hot_query=f"SELECT id FROM products WHERE id IN ({','.join(map(str, valid))}) "
            "LIMIT %(limit)s",
        ),
        keys=replace(base.keys, prefix=f"{keys.prefix}-hot"),
    )
    assert cw.warm(as_hot).status == "ok"
    filled = get_all(redis_client, [keys.product(i) for i in valid])
    warmed = get_all(redis_client, [as_hot.keys.product(i) for i in valid])
    assert None not in filled
    assert filled == warmed


def get_all(client: Client, names: list[str]) -> list[bytes | None]:
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.get(name)
    return list(pipe.execute())


@pytest.mark.slow
def test_the_followers_metrics_count_its_misses_and_the_queue(
    follow_settings: Settings, redis_client: Client, tmp_path: Path
) -> None:
    """Counters for the follower's whole life, each batch adding to them, and the
    queue's length as it is: entries another consumer holds count until acknowledged."""
    textfile = tmp_path / "textfile" / "follow.prom"
    s = replace(
        follow_settings, follow=replace(follow_settings.follow, metrics_textfile=str(textfile))
    )
    keys = s.keys
    report(redis_client, keys, 10, 11, 12)  # taken by a consumer that dies holding them
    redis_client.xgroup_create(keys.misses, MISS_GROUP, id="0")
    held: Any = redis_client.xreadgroup(MISS_GROUP, "gone", {keys.misses: ">"})
    names = [name for _, found in held for name, _ in found]
    assert len(names) == 3
    with following(s, from_now=True):
        report(redis_client, keys, 7, 8, "junk", 99_999)
        wait_for(
            "the first fills and the held entries in the metrics",
            lambda: follower_misses(textfile, keys) == (2, 1, 1, 3),
            timeout=FOLLOW_WITHIN_S + IDLE_SAVE_S,  # an idle follower rewrites the file so often
        )
        redis_client.xack(keys.misses, MISS_GROUP, *names)  # as their consumer would
        redis_client.xdel(keys.misses, *names)
        report(redis_client, keys, 9, 7, "", 99_998)
        wait_for(
            "the second fills added to the first, and the queue empty",
            lambda: follower_misses(textfile, keys) == (4, 2, 2, 0),
            timeout=FOLLOW_WITHIN_S + IDLE_SAVE_S,
        )
    text = textfile.read_text(encoding="utf-8")
    for name in ("filled", "invalid", "absent"):
        assert f"# TYPE cachewarm_follow_miss_{name}_total counter\n" in text
        assert f"# HELP cachewarm_follow_miss_{name}_total " in text
    assert "# TYPE cachewarm_follow_miss_queue_length gauge\n" in text
    assert follower_misses(textfile, keys) == (4, 2, 2, 0)  # written again as it stopped
    prometheus.read(textfile)  # valid, and no temporary file left beside it
    assert redis_client.get(keys.product(11)) is None  # the held entries were never filled
