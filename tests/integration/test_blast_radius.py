"""The blast-radius limit: a run whose own checks reject much of the hot set (a config
slip, not bad data) fails before acting on it, and leaves the cache as it found it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis

import cachewarm as api
from cachewarm import check
from cachewarm.errors import TooManyRejected
from cachewarm.keys import Keys
from cachewarm.metrics import LAST_SUCCESS
from tests.helpers import MakeConfig, MakeSettings, cachewarm, runs, snapshot


def cache(client: redis.Redis, prefix: str) -> dict[bytes, bytes | None]:
    """The listings and the hot list, as readers see them."""
    keys = Keys(prefix, 1)
    return {
        k: v
        for k, v in snapshot(client, prefix).items()
        if b":product:" in k or k == keys.hot.encode()
    }


def last_success(metrics: Path) -> str:
    (line,) = [x for x in metrics.read_text().splitlines() if x.startswith(LAST_SUCCESS)]
    return line


def test_a_text_column_in_json_columns_keeps_the_cache_and_fails_in_one_line(
    make_config: MakeConfig, redis_client: redis.Redis, key_prefix: str, tmp_path: Path
) -> None:
    metrics = tmp_path / "cachewarm.prom"
    config = make_config(metrics_file=str(metrics), batch_size=64)
    first = cachewarm("--config", str(config), "run", "--full")
    assert (first.returncode, first.stderr) == (0, "")
    before, success = cache(redis_client, key_prefix), last_success(metrics)
    assert len(before) > 100

    slip = cachewarm(
        "--config", str(config), "run", "--full", env={"CACHEWARM_WARM_JSON_COLUMNS": "name"}
    )

    assert slip.returncode == 1
    assert slip.stdout == ""
    (line,) = slip.stderr.splitlines()
    assert line.startswith("cachewarm: ")
    hot = len(before) - 1
    # It stops at the first batch past the limit: the rest need not be read.
    assert f"64 of the first 64 of {hot} hot listings rejected by the run's own checks" in line
    assert "64 not JSON in [warm] json_columns, 0 over [warm] max_payload_bytes" in line
    assert "column `name` is not valid JSON" in line
    assert "kept their cached listings and the previous hot list" in line
    assert cache(redis_client, key_prefix) == before
    record = runs(config)[-1]
    assert (record["status"], record["hot_published"]) == ("failed", False)
    assert last_success(metrics) == success


def test_a_payload_limit_set_too_low_removes_nothing(
    make_settings: MakeSettings, redis_client: redis.Redis, key_prefix: str
) -> None:
    api.warm(make_settings())
    before = cache(redis_client, key_prefix)
    with pytest.raises(TooManyRejected, match=r"over \[warm\] max_payload_bytes"):
        api.warm(make_settings(max_payload_bytes=300), full=True)
    assert cache(redis_client, key_prefix) == before


def test_a_dry_run_reaches_the_same_verdict(make_settings: MakeSettings) -> None:
    with pytest.raises(TooManyRejected, match="not JSON in"):
        api.dry_run(make_settings(json_columns="name"))


def test_rejections_within_the_limit_are_removed_as_before(
    make_settings: MakeSettings, redis_client: redis.Redis, key_prefix: str
) -> None:
    """At max_rejected_share = 1 the limit never trips: today's per-listing behaviour."""
    api.warm(make_settings())
    record = api.warm(make_settings(max_payload_bytes=300, max_rejected_share=1), full=True)
    assert record.status == "ok" and record.skipped_oversize > 0
    listings = [k for k in cache(redis_client, key_prefix) if b":product:" in k]
    assert len(listings) == record.hot - record.skipped_oversize


def test_a_share_of_zero_fails_on_the_first_rejection(make_settings: MakeSettings) -> None:
    query = "SELECT p.id, IF(p.id = 7, '[1', '[]') AS sizes FROM products p WHERE p.id IN %(ids)s"
    s = make_settings(listing_query=query, json_columns="sizes", max_rejected_share=0)
    with pytest.raises(TooManyRejected, match=r"1 of .* hot listings rejected .*ids 7\)$"):
        api.warm(s)


def test_check_fails_when_a_run_would(make_config: MakeConfig) -> None:
    report = check.check(make_config(json_columns="name"), env={})
    (finding,) = [
        f for f in report.findings if f.check == "listing_query" and f.status == check.FAIL
    ]
    assert "100 of 100 sampled hot listings rejected" in finding.message
    assert "a run would fail and keep them" in finding.message
    assert report.failed


def test_check_warns_once_for_rejections_a_run_would_remove(make_config: MakeConfig) -> None:
    query = (
        "SELECT p.id, IF(MOD(p.id, 2), '[1', '[]') AS sizes FROM products p WHERE p.id IN %(ids)s"
    )
    report = check.check(
        make_config(listing_query=query, json_columns="sizes", max_rejected_share=1), env={}
    )
    (finding,) = [
        f for f in report.findings if f.check == "listing_query" and f.status == check.WARN
    ]
    assert re.search(
        r"^\d+ of 100 sampled hot listings rejected: a run removes them", finding.message
    )
    assert not report.failed
