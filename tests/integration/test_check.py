"""`cachewarm check` against real servers: a config that works passes with nothing written
anywhere, and each problem it looks for, provoked for real, is one failing (or warning) line.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from pymysql.connections import Connection
from servers import Server

from cachewarm import check
from cachewarm.check import CheckReport, Finding
from tests.helpers import MakeConfig, cachewarm_here
from tests.integration.conftest import seeded_database

# Statements that change data, schema or accounts: none may run during a check.
WRITE_COUNTERS = (
    "Com_insert",
    "Com_update",
    "Com_delete",
    "Com_replace",
    "Com_create",
    "Com_drop",
    "Com_alter",
    "Com_truncate",
    "Com_load",
    "Com_grant",
    "Com_revoke",
    "Com_rename",
)


def statuses(report: CheckReport) -> dict[str, str]:
    """check name -> its worst status (a check may give several findings)."""
    order = {check.OK: 0, check.WARN: 1, check.FAIL: 2}
    worst: dict[str, str] = {}
    for f in report.findings:
        if order[f.status] >= order[worst.get(f.check, check.OK)]:
            worst[f.check] = f.status
    return worst


def finding(report: CheckReport, name: str, status: str) -> Finding:
    found = [f for f in report.findings if f.check == name and f.status == status]
    assert len(found) == 1, report.findings
    return found[0]


@contextlib.contextmanager
def mysql_user(conn: Connection, *grants: str) -> Iterator[tuple[str, str]]:
    """(URL, password) of a throwaway account on conn's database with only `grants`.

    A grant names tables relative to that database: "SELECT ON {db}.products".
    """
    with conn.cursor() as cur:
        cur.execute("SELECT DATABASE()")
        (db,) = cur.fetchone() or ("",)
    name, password = f"cwcheck_{secrets.token_hex(4)}", secrets.token_hex(12)
    with conn.cursor() as cur:
        cur.execute(f"CREATE USER '{name}'@'%' IDENTIFIED BY '{password}'")
    try:
        with conn.cursor() as cur:
            for grant in grants:
                cur.execute(f"GRANT {grant.format(db=db)} TO '{name}'@'%'")
        yield f"mysql://{name}@{conn.host}:{conn.port}/{db}", password
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP USER '{name}'@'%'")


def com_counters(conn: Connection) -> dict[str, int]:
    with conn.cursor() as cur:
        cur.execute("SHOW GLOBAL STATUS LIKE 'Com\\_%'")
        return {str(name): int(value) for name, value in cur.fetchall()}


def redis_counters(client: redis.Redis) -> dict[str, int]:
    info = client.info("all")
    stats = {name: int(info.get(name, 0)) for name in ("rdb_changes_since_last_save",)}
    stats["dbsize"] = int(client.dbsize())
    stats["info_calls"] = int(info.get("cmdstat_info", {}).get("calls", 0))
    return stats


def test_a_working_config_passes_and_writes_nothing(
    make_config: MakeConfig,
    shop_conn: Connection,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    with mysql_user(shop_conn, "SELECT ON {db}.*") as (url, password):
        config = make_config(mysql_url=url, mysql_password=password)
        mysql_before, redis_before = com_counters(shop_conn), redis_counters(redis_client)
        report = check.check(config, env={})
        mysql_after, redis_after = com_counters(shop_conn), redis_counters(redis_client)
        cli = cachewarm_here("--config", str(config), "check")
    assert not report.failed, report.findings
    assert set(statuses(report).values()) == {check.OK}, report.findings
    assert list(statuses(report)) == [
        "config",
        "parts",
        "mysql",
        "hot_query",
        "listing_query",
        "grants",
        "hot_query_plan",
        "redis",
        "redis_memory_policy",
        "redis_memory",
        "lockfile",
        "run_log",
    ]
    assert "with SELECT only" in finding(report, "grants", check.OK).message
    changed = {k for k in mysql_after if mysql_after[k] != mysql_before.get(k)}
    assert "Com_select" in changed  # the check did query this server...
    assert not {k for k in changed if k.startswith(WRITE_COUNTERS)}  # ...and wrote nothing
    assert redis_after["info_calls"] > redis_before["info_calls"]
    assert {k: v for k, v in redis_after.items() if k != "info_calls"} == {
        k: v for k, v in redis_before.items() if k != "info_calls"
    }
    assert not (tmp_path / "cw.lock").exists() and not (tmp_path / "runs.jsonl").exists()
    assert cli.returncode == 0, cli.stdout + cli.stderr
    lines = cli.stdout.splitlines()
    assert len(lines) == len(report.findings) and all(line.startswith("ok   ") for line in lines)
    assert password not in cli.stdout + cli.stderr


def test_bad_password_fails_one_line_and_shows_no_secret(
    make_config: MakeConfig, shop_conn: Connection
) -> None:
    with mysql_user(shop_conn, "SELECT ON {db}.*") as (url, _):
        wrong = secrets.token_hex(12)
        config = make_config(mysql_url=url, mysql_password=wrong)
        result = cachewarm_here("--config", str(config), "check")
    assert result.returncode == 1
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert line.startswith("FAIL mysql: cannot connect to MySQL at ")
    assert "Access denied" in line and "[1045]" in line
    assert wrong not in result.stdout + result.stderr
    assert "ok   redis: connected" in result.stdout  # the other checks still ran


def test_missing_select_grant_names_the_table(
    make_config: MakeConfig, shop_conn: Connection
) -> None:
    grants = [f"SELECT ON {{db}}.{t}" for t in ("products", "categories", "product_images")]
    with mysql_user(shop_conn, *grants) as (url, password):
        config = make_config(mysql_url=url, mysql_password=password)
        report = check.check(config, env={})
    line = finding(report, "grants", check.FAIL).message
    assert "hot query failed: SELECT command denied" in line and "order_lines" in line
    assert "[1142]" in line
    assert statuses(report)["listing_query"] == check.OK  # it reads only granted tables


def test_hot_query_returning_non_integers_fails(make_config: MakeConfig) -> None:
    config = make_config(hot_query="SELECT sku FROM products ORDER BY id LIMIT %(limit)s")
    report = check.check(config, env={})
    assert finding(report, "hot_query", check.FAIL).message == (
        "hot query returned a non-integer id 'GAR-00000001' in row 1"
    )
    result = cachewarm_here("--config", str(config), "check", "--json")
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert data["ok"] is False
    assert {"check": "hot_query", "status": "fail"}.items() <= next(
        f for f in data["findings"] if f["check"] == "hot_query"
    ).items()


LISTING = "FROM products p JOIN categories c ON c.id = p.category_id WHERE p.id IN %(ids)s"


@pytest.mark.parametrize(
    ("columns", "status", "expected"),
    [
        ("p.sku, p.name", check.FAIL, "listing query returns no column named `id`"),
        ("p.id, p.name, c.name", check.FAIL, "listing query returns column(s) name twice"),
        ("p.name, p.id", check.WARN, "first column is `name`, not `id`"),
    ],
    ids=["no-id", "duplicate-names", "id-not-first"],
)
def test_listing_query_contract(
    make_config: MakeConfig, columns: str, status: str, expected: str
) -> None:
    report = check.check(make_config(listing_query=f"SELECT {columns} {LISTING}"), env={})
    assert expected in finding(report, "listing_query", status).message
    assert report.failed == (status == check.FAIL)


def test_listing_query_finding_no_rows_fails(make_config: MakeConfig) -> None:
    config = make_config(listing_query=f"SELECT p.id, p.name {LISTING} AND p.id < 0")
    report = check.check(config, env={})
    assert "no row for any of the 100 sampled hot ids" in (
        finding(report, "listing_query", check.FAIL).message
    )


@pytest.fixture
def big_shop(mysql_url: str) -> Iterator[str]:
    """A shop whose hot query groups ~360k order lines: EXPLAIN's estimate is large."""
    with seeded_database(mysql_url, 200, lines_per_product=2000, images=False) as shop:
        yield shop.url


def test_hot_query_sorting_a_large_estimate_is_a_warning(
    make_config: MakeConfig, big_shop: str
) -> None:
    report = check.check(make_config(mysql_url=big_shop), env={})
    message = finding(report, "hot_query_plan", check.WARN).message
    assert "EXPLAIN shows Using filesort and Using temporary over ~" in message
    assert "256 MiB (min of tmp_table_size, max_heap_table_size)" in message
    assert not report.failed


def test_small_estimate_plan_is_ok(make_config: MakeConfig) -> None:
    report = check.check(make_config(), env={})
    assert "Using temporary" in finding(report, "hot_query_plan", check.OK).message


@pytest.mark.parametrize(
    ("policy", "meaning"),
    [
        ("allkeys-lru", "Redis evicts any key, listings and the hot list included"),
        ("volatile-ttl", "every cachewarm key has one"),
        ("noeviction", "writes fail: a run fails (exit 1) without publishing"),
    ],
)
def test_redis_policy_and_headroom_reported(
    make_config: MakeConfig, redis_server: Server, policy: str, meaning: str
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    try:
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory", used + 10_000)
        client.config_set("maxmemory-policy", policy)
    finally:
        client.close()
    report = check.check(make_config(redis_url=redis_server.url), env={})
    assert f"maxmemory-policy {policy}: when full, " in (
        finding(report, "redis_memory_policy", check.OK).message
    )
    assert meaning in finding(report, "redis_memory_policy", check.OK).message
    headroom = finding(report, "redis_memory", check.WARN).message
    assert "for 1000 listings of ~" in headroom and " is free (listings already cached" in headroom


def test_unreachable_redis_fails(make_config: MakeConfig) -> None:
    report = check.check(make_config(redis_url="redis://127.0.0.1:1/0"), env={})
    assert finding(report, "redis", check.FAIL).message.startswith(
        "cannot connect to Redis at redis://127.0.0.1:1/0"
    )
    assert statuses(report)["mysql"] == check.OK


def test_unwritable_run_log_and_symlinked_lockfile_fail(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    in_the_way = tmp_path / "not-a-dir"
    in_the_way.write_text("")
    lockfile = tmp_path / "evil.lock"
    lockfile.symlink_to(tmp_path / "elsewhere")
    config = make_config(log=str(in_the_way / "logs" / "runs.jsonl"), lockfile=str(lockfile))
    report = check.check(config, env={})
    assert finding(report, "run_log", check.FAIL).message == (
        f"cannot create {in_the_way}/logs/runs.jsonl: {in_the_way} is not a directory"
    )
    assert "is a symlink" in finding(report, "lockfile", check.FAIL).message
    assert not (tmp_path / "elsewhere").exists()


def test_redis_lock_needs_no_lockfile(make_config: MakeConfig, key_prefix: str) -> None:
    report = check.check(make_config(lock="redis"), env={})
    assert f"the Redis key {key_prefix}:v1:meta:lock" in (
        finding(report, "lockfile", check.OK).message
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[warm\n", "is not valid TOML"),
        ('[warm]\nhot_query = ""\n', "[warm] hot_query is not set"),
    ],
    ids=["toml", "no-query"],
)
def test_a_config_that_does_not_load_is_one_failed_check(
    tmp_path: Path, text: str, expected: str
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    result = cachewarm_here("--config", str(config), "check")
    assert result.returncode == 1
    assert result.stdout.startswith("FAIL config: ") and expected in result.stdout
    assert len(result.stdout.splitlines()) == 1


def test_library_and_cli_agree(make_config: MakeConfig) -> None:
    config = make_config(hot_query="SELECT sku FROM products LIMIT %(limit)s")
    report = check.check(config, env={})
    data = json.loads(cachewarm_here("--config", str(config), "check", "--json").stdout)
    assert data == report.to_dict()
