"""Redis Sentinel: the guarantee tests through a Sentinel-managed master, and a failover."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
import redis
import servers

from cachewarm.keys import Keys
from cachewarm.store.connect import connect
from tests.helpers import (
    MakeConfig,
    MakeSettings,
    cachewarm,
    one_line,
    runs,
    slow_listing_query,
    start,
    wait_for,
)
from tests.integration.test_misses import (
    test_misses_a_reader_reports_are_cached_by_the_next_run_with_a_warms_bytes,
    test_misses_an_invalidation_racing_a_fill_leaves_nothing_stale,
)
from tests.integration.test_reliability import (
    finish,
    test_invalidation_during_a_warm_is_never_overwritten_with_stale_data,
    test_paused_redis_lock_holder_cannot_overwrite_the_next_holder,
)
from tests.integration.test_warm import (
    test_empty_hot_query_keeps_the_published_list,
    test_invalidate_rewarm_writes_the_fresh_row,
    test_run_writes_every_hot_listing_then_the_hot_list,
)
from tests.integration.topologies import sentinel_settings

__all__ = [  # collected here again, through Sentinel
    "test_empty_hot_query_keeps_the_published_list",
    "test_invalidate_rewarm_writes_the_fresh_row",
    "test_invalidation_during_a_warm_is_never_overwritten_with_stale_data",
    "test_misses_a_reader_reports_are_cached_by_the_next_run_with_a_warms_bytes",
    "test_misses_an_invalidation_racing_a_fill_leaves_nothing_stale",
    "test_paused_redis_lock_holder_cannot_overwrite_the_next_holder",
    "test_run_writes_every_hot_listing_then_the_hot_list",
]


@pytest.fixture(scope="session")
def redis_url(shared_sentinel: servers.RedisSentinel) -> str:
    """The master's own URL, for the tests' direct reads; cachewarm asks the sentinels."""
    return shared_sentinel.master.url


@pytest.fixture
def make_config(make_config: MakeConfig, shared_sentinel: servers.RedisSentinel) -> MakeConfig:
    # The URL's host and port are deliberately useless: the master must come from Sentinel.
    via = {**sentinel_settings(shared_sentinel), "redis_url": "redis://127.0.0.1:1/0"}
    return lambda **overrides: make_config(**{**via, **overrides})


def master_client(setup: servers.RedisSentinel) -> redis.Redis:
    host, port = setup.master_address()
    return redis.Redis(host=host, port=port)


def is_writable_master(setup: servers.RedisSentinel, port: int) -> bool:
    client = redis.Redis(host=setup.master.host, port=port)
    try:
        return client.info("replication").get("role") == "master"
    except redis.exceptions.RedisError:
        return False
    finally:
        client.close()


@pytest.mark.timeout(120)
@pytest.mark.slow
def test_failover_mid_run_then_the_next_run_writes_to_the_new_master(
    make_config: MakeConfig, redis_sentinel: servers.RedisSentinel, key_prefix: str
) -> None:
    via = sentinel_settings(redis_sentinel)
    slow = make_config(**via, listing_query=slow_listing_query(0.05), batch_size=4)
    old = master_client(redis_sentinel)
    proc = start("--config", str(slow), "run")
    try:
        wait_for("the first batches", lambda: len(old.keys(f"{key_prefix}:v1:product:*")) >= 8)
        sentinel = redis_sentinel.sentinels[0]
        watcher = redis.Redis(host=sentinel.host, port=sentinel.port)
        watcher.sentinel_failover(redis_sentinel.service_name)
        watcher.close()
        code, _, err, _ = finish(proc, timeout=60)
    finally:
        old.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    record = runs(slow)[-1]
    if code != 0:  # the run may fail, with one line and nothing published by it
        assert code == 1 and one_line(err).startswith("cachewarm: error: "), err
        assert record["hot_published"] is False
    new_port = redis_sentinel.replica.port
    wait_for(
        "the sentinels to name the new master",
        lambda: (
            redis_sentinel.master_address()[1] == new_port
            and is_writable_master(redis_sentinel, new_port)
        ),
        timeout=30,
    )
    again = cachewarm("--config", str(make_config(**via)), "run", timeout=90)
    assert again.returncode == 0, again.stderr
    new = master_client(redis_sentinel)
    try:
        keys = Keys(key_prefix, 1)
        hot = json.loads(new.get(keys.hot) or b"[]")
        assert len(hot) > 100
        assert all(new.exists(keys.product(i)) for i in hot)
        assert new.info("replication")["role"] == "master"
    finally:
        new.close()


def test_sentinels_with_a_password(
    make_config: MakeConfig, tmp_path: Path, key_prefix: str
) -> None:
    """The sentinels' requirepass comes from sentinel_password; output never shows it."""
    password = "sentinel-€-" + secrets.token_hex(6)
    setup = servers.start_redis_sentinel(tmp_path / "auth", password=password)
    try:
        via = sentinel_settings(setup)
        without = cachewarm("--config", str(make_config(**via)), "run")
        done = cachewarm("--config", str(make_config(**via, sentinel_password=password)), "run")
        master = master_client(setup)
        try:
            hot = json.loads(master.get(Keys(key_prefix, 1).hot) or b"[]")
        finally:
            master.close()
    finally:
        setup.stop()
    assert without.returncode == 1, without.stderr
    assert "auth" in one_line(without.stderr).lower(), without.stderr
    assert done.returncode == 0, done.stderr
    assert len(hot) > 100
    for proc in (without, done):
        assert password not in proc.stdout + proc.stderr


def test_a_closed_client_hangs_up_on_the_sentinels(
    make_settings: MakeSettings, shared_sentinel: servers.RedisSentinel
) -> None:
    """Every connect asks the sentinels; closing its client must close those sockets too."""
    settings = make_settings()
    asked = shared_sentinel.sentinels[0]
    watcher = redis.Redis(host=asked.host, port=asked.port)
    try:
        before = len(watcher.client_list())
        for _ in range(5):
            client = connect(settings.redis)
            assert len(watcher.client_list()) > before  # this connect asked this sentinel
            client.close()
        assert len(watcher.client_list()) == before
    finally:
        watcher.close()
