"""What a run does at the edges, against real servers: listings it cannot write, hung
statements, an empty hot set, repeated listing rows, hot products with no listing row,
and what a dry run records."""

from __future__ import annotations

import json
import re
import secrets
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import seed as shop_seed
from pymysql.connections import Connection

import cachewarm as api
from cachewarm import Settings
from cachewarm.errors import SourceError
from cachewarm.keys import Keys
from cachewarm.metrics import LAST_SUCCESS
from cachewarm.runlog import RunRecord
from tests.helpers import (
    MakeConfig,
    MakeSettings,
    cachewarm_here,
    kill_queries,
    one_line,
    runs,
    start,
    wait_for,
)

CHANGED = "SELECT id FROM products WHERE updated_at >= %(since)s"
PAYLOAD_LIMIT = 8192


def hot_list(client: redis.Redis, s: Settings) -> list[int]:
    ids: list[int] = json.loads(client.get(Keys(s.keys.prefix, s.keys.version).hot) or b"[]")
    return ids


def cached(client: redis.Redis, s: Settings, product_id: int) -> bool:
    return bool(client.exists(Keys(s.keys.prefix, s.keys.version).product(product_id)))


# -- a listing the run cannot write ------------------------------------------------------


@pytest.mark.writes_mysql
@pytest.mark.parametrize("first", ["incremental", "full"])
def test_oversize_listing_is_removed_and_stays_out_of_the_hot_list(
    first: str, make_settings: MakeSettings, shop_conn: Connection, redis_client: redis.Redis
) -> None:
    """A listing that grows past max_payload_bytes is deleted, in every later run too."""
    s = make_settings(changed_query=CHANGED, changed_overlap=0, max_payload_bytes=PAYLOAD_LIMIT)
    assert api.warm(s).skipped_oversize == 0  # every sample listing fits the limit
    grown = hot_list(redis_client, s)[0]
    with shop_conn.cursor() as cur:
        cur.execute(
            "UPDATE products SET description = REPEAT('x', %s) WHERE id = %s",
            (3 * PAYLOAD_LIMIT, grown),
        )
    modes = [first, "incremental", "incremental", "full"]
    for mode in modes:
        record = api.warm(s, full=mode == "full")
        assert (record.status, record.mode) == ("ok", mode)
        assert record.skipped_oversize == 1
        assert not cached(redis_client, s, grown), f"old listing kept by a {mode} run"
        hot = hot_list(redis_client, s)
        assert grown not in hot and len(hot) == record.hot - 1


# -- no statement outlives the run -------------------------------------------------------

HANG = "BENCHMARK(1000000000000, 1) = 0"  # runs for hours unless the server stops it
STOPS = {
    "deadline": (None, 1),
    "SIGTERM": (signal.SIGTERM, 143),
    "SIGINT": (signal.SIGINT, 130),
    "SIGKILL": (signal.SIGKILL, -signal.SIGKILL),
}


def statements(conn: Connection, marker: str) -> int:
    """How many statements containing `marker` the server is running for other clients."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
            "WHERE INFO LIKE %s AND ID <> CONNECTION_ID()",
            (f"%{marker}%",),
        )
        row = cur.fetchone()
    return int(row[0]) if row else 0


@pytest.fixture
def marker(shop_conn: Connection) -> Iterator[str]:
    """A token to find the hung statement by; whatever still runs with it is killed after."""
    token = f"cwhang_{secrets.token_hex(6)}"
    yield token
    kill_queries(shop_conn, token)


@pytest.mark.parametrize("driver", ["pymysql", "mysqlclient"])
@pytest.mark.parametrize(
    ("hung", "stop"),
    [
        ("hot", "deadline"),
        ("listing", "deadline"),
        ("hot", "SIGTERM"),
        ("listing", "SIGTERM"),
        ("hot", "SIGINT"),
        ("listing", "SIGINT"),
        ("hot", "SIGKILL"),
        ("listing", "SIGKILL"),
    ],
)
@pytest.mark.slow
def test_no_statement_of_the_run_is_left_on_the_server(
    driver: str,
    hung: str,
    stop: str,
    make_config: MakeConfig,
    shop_conn: Connection,
    marker: str,
) -> None:
    """Deadline, signals, even kill -9: the hung statement ends on the server too.

    After a kill -9 nothing of the run is left to send KILL QUERY: the statement's own
    bound (the run's max_seconds) has to end it.
    """
    queries = {
        "hot": shop_seed.HOT_QUERY.replace("GROUP BY", f"AND {HANG} AND '{marker}' <> '' GROUP BY"),
        "listing": f"{shop_seed.LISTING_QUERY} AND {HANG} AND '{marker}' <> ''",
    }
    sig, code = STOPS[stop]
    config = make_config(
        driver=driver,
        max_seconds=2 if sig in (None, signal.SIGKILL) else 120,
        **{f"{hung}_query": queries[hung]},
    )
    proc = start("--config", str(config), "run")
    try:
        wait_for(f"the hung {hung} query to run", lambda: statements(shop_conn, marker))
        if sig is not None:
            proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == code, err
        wait_for(
            "no statement of the run left on the server",
            lambda: statements(shop_conn, marker) == 0,
            timeout=10,
        )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


# -- an empty hot set --------------------------------------------------------------------


def metric(path: Path, name: str, status: str | None = None) -> float | None:
    label = f',status="{status}"' if status else ""
    found = re.search(
        rf'^{name}{{prefix="[^"]*",version="\d+"{label}}} (\S+)$', path.read_text(), re.M
    )
    return float(found.group(1)) if found else None


def test_empty_hot_set_is_not_a_success(
    make_config: MakeConfig, redis_client: redis.Redis, tmp_path: Path
) -> None:
    textfile = tmp_path / "cachewarm.prom"
    ok = make_config(metrics_file=str(textfile))
    assert cachewarm_here("--config", str(ok), "run").returncode == 0
    succeeded = metric(textfile, LAST_SUCCESS)
    assert succeeded is not None
    empty = make_config(
        metrics_file=str(textfile),
        hot_query="SELECT id FROM products WHERE id < 0 LIMIT %(limit)s",
    )
    result = cachewarm_here("--config", str(empty), "run")
    assert result.returncode == 0
    assert one_line(result.stderr).startswith("cachewarm: warning: the hot query returned no ids")
    assert runs(empty)[-1]["status"] == "empty"
    assert metric(textfile, LAST_SUCCESS) == succeeded
    assert metric(textfile, "cachewarm_last_run_status", "empty") == 1
    assert metric(textfile, "cachewarm_last_run_status", "ok") == 0


# -- several listing rows for one id -----------------------------------------------------


def test_repeated_listing_rows_warn_once_and_the_first_wins(
    make_config: MakeConfig, redis_client: redis.Redis, key_prefix: str
) -> None:
    probe = make_config()
    assert cachewarm_here("--config", str(probe), "run").returncode == 0
    hot = json.loads(redis_client.get(f"{key_prefix}:v1:hot") or b"")
    early, late = hot[0], hot[-1]  # in the first and the last batch
    doubled = (
        "SELECT p.id, p.sku, x.tag FROM products p "
        "JOIN (SELECT 1 AS n, 'first' AS tag UNION ALL SELECT 2, 'second') x "
        f"ON x.n = 1 OR p.id IN ({early}, {late}) "
        "WHERE p.id IN %(ids)s ORDER BY p.id, x.n"
    )
    result = cachewarm_here(
        "--config", str(make_config(listing_query=doubled, batch_size=16)), "run"
    )
    assert result.returncode == 0, result.stderr
    assert one_line(result.stderr) == (
        f"cachewarm: warning: the listing query returned 2 rows for product {early}; "
        "kept the first (said once per run)"
    )
    for product_id in (early, late):
        listing = json.loads(redis_client.get(f"{key_prefix}:v1:product:{product_id}") or b"")
        assert listing["tag"] == "first"


# -- a hot product with no listing row ---------------------------------------------------

HIDDEN = f"{shop_seed.LISTING_QUERY} AND p.sku NOT LIKE 'HIDDEN-%%'"


def agree(dry: api.DryRunReport, record: RunRecord) -> None:
    """The dry run said what the run then did."""
    would = (dry.record.written, dry.record.removed, dry.record.unchanged, dry.record.mode)
    assert would == (record.written, record.removed, record.unchanged, record.mode)


@pytest.mark.writes_mysql
@pytest.mark.parametrize("gone", ["deleted", "hidden", "hidden, not invalidated"])
def test_hot_product_without_a_listing_row_is_dropped_and_runs_go_on(
    gone: str, make_settings: MakeSettings, shop_conn: Connection, redis_client: redis.Redis
) -> None:
    """Its sales keep it hot; every run drops it, exits ok, and publishes the rest."""
    s = make_settings(changed_query=CHANGED, changed_overlap=0, listing_query=HIDDEN)
    api.warm(s)
    hot = hot_list(redis_client, s)
    product, other = hot[0], hot[1]
    with shop_conn.cursor() as cur:
        if gone == "deleted":
            cur.execute("DELETE FROM products WHERE id = %s", (product,))
        else:
            cur.execute("UPDATE products SET sku = CONCAT('HIDDEN-', id) WHERE id = %s", (product,))
    if gone != "hidden, not invalidated":
        api.invalidate(s, [product])
    for step in ["quiet", "quiet", "quiet", "unrelated edit", "full"]:
        if step == "unrelated edit":
            with shop_conn.cursor() as cur:
                cur.execute("UPDATE products SET name = 'renamed' WHERE id = %s", (other,))
        full = step == "full"
        before = redis_client.get(Keys(s.keys.prefix, 1).hot)
        dry = api.dry_run(s, full=full)
        record = api.warm(s, full=full)
        agree(dry, record)
        assert dry.hot_changed == (redis_client.get(Keys(s.keys.prefix, 1).hot) != before)
        assert record.status == "ok" and record.mode == ("full" if full else "incremental")
        assert not cached(redis_client, s, product)
        assert hot_list(redis_client, s) == [i for i in hot if i != product]
        if step == "unrelated edit":
            assert record.written == 1
            assert json.loads(api.show(s, other) or b"")["name"] == "renamed"


def test_dry_run_refuses_a_broken_listing_query_like_the_run(
    make_settings: MakeSettings, redis_client: redis.Redis
) -> None:
    s = make_settings()
    api.warm(s)
    broken = make_settings(listing_query=f"{shop_seed.LISTING_QUERY} AND p.id < 0")
    errors = []
    for attempt in (api.dry_run, api.warm):
        with pytest.raises(SourceError, match="refusing to delete their listings") as failed:
            attempt(broken)
        errors.append(str(failed.value))
    assert errors[0] == errors[1]
    assert [r["status"] for r in runs_of(broken)[-2:]] == ["failed", "failed"]


def runs_of(s: Settings) -> list[dict[str, object]]:
    return [json.loads(line) for line in s.runlog.read_text().splitlines()]


# -- what a dry run records --------------------------------------------------------------


@pytest.mark.writes_mysql
def test_dry_run_record_and_events_say_would(
    make_config: MakeConfig, shop_conn: Connection, redis_client: redis.Redis, key_prefix: str
) -> None:
    config = make_config()
    assert cachewarm_here("--config", str(config), "run").returncode == 0
    hot = json.loads(redis_client.get(f"{key_prefix}:v1:hot") or b"")
    with shop_conn.cursor() as cur:
        cur.execute("UPDATE products SET sku = 'EDITED' WHERE id = %s", (hot[0],))
        cur.execute("DELETE FROM products WHERE id = %s", (hot[1],))
    result = cachewarm_here("--config", str(config), "--log-format", "json", "run", "--dry-run")
    assert result.returncode == 0, result.stderr
    record = runs(config)[-1]
    assert record["command"] == "dry-run"
    assert (record["would_write"], record["would_remove"]) == (1, 1)
    assert "written" not in record and "removed" not in record
    events = [json.loads(line) for line in result.stderr.splitlines()]
    finished = next(e for e in events if e["event"] == "run.finished")
    assert (finished["would_write"], finished["would_remove"]) == (1, 1)
    assert "written" not in finished and "removed" not in finished
    status = cachewarm_here("--config", str(config), "status")
    assert "1 would be written" in status.stdout
