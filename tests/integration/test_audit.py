"""`audit` against real servers: exactly the stale ids, missing apart, no write without
--fix, --fix repairs, no alarm from an edit whose invalidation is on its way, the CLI."""

from __future__ import annotations

import json
import time
import types
from dataclasses import replace
from pathlib import Path

import pytest
import redis
from pymysql.connections import Connection

import cachewarm as cw
from cachewarm import check, staleness
from cachewarm.config import Settings
from tests.helpers import MakeConfig, MakeSettings, cachewarm, one_line, runs, snapshot
from tests.prometheus import read, value

Client = redis.Redis  # a RedisCluster in test_cluster.py, which runs some of these again
RECHECK_S = 0.1  # the tests' re-check pause: nothing here edits on a timer
FAST = {"CACHEWARM_AUDIT_RECHECK_AFTER": str(RECHECK_S)}


def audited(make_settings: MakeSettings, recheck_after: float = RECHECK_S) -> Settings:
    """make_settings with [audit] recheck_after (make_config knows none of that section)."""
    s = make_settings()
    return replace(s, audit=replace(s.audit, recheck_after=recheck_after))


def warmed_hot_ids(s: Settings, client: Client) -> list[int]:
    """Warm once; the published hot list."""
    assert cw.warm(s).status == "ok"
    hot: list[int] = json.loads(client.get(s.keys.hot) or b"[]")
    assert len(hot) > 20
    return hot


def edit_name(conn: Connection, product_id: int, name: str) -> None:
    """An edit that no one invalidates (yet)."""
    with conn.cursor() as cur:
        cur.execute("UPDATE products SET name = %s WHERE id = %s", (name, product_id))


def make_stale(s: Settings, client: Client, conn: Connection, hot: list[int]) -> list[int]:
    """Four kinds of stale listing and one missing one; returns the stale ids, sorted.

    Wrong bytes written into Redis, a row edited without invalidating, a row deleted
    whose listing stays cached, and (missing, not stale) a listing deleted from Redis.
    """
    wrong_a, wrong_b, edited, deleted, missing = hot[1], hot[5], hot[9], hot[13], hot[17]
    client.set(s.keys.product(wrong_a), b'{"id": 0}', keepttl=True)
    cached = client.get(s.keys.product(wrong_b))
    assert isinstance(cached, bytes)
    client.set(s.keys.product(wrong_b), cached + b" ", keepttl=True)
    edit_name(conn, edited, "edited, never invalidated")
    with conn.cursor() as cur:
        cur.execute("DELETE FROM products WHERE id = %s", (deleted,))
    client.delete(s.keys.product(missing))
    return sorted([wrong_a, wrong_b, edited, deleted])


@pytest.mark.writes_mysql
def test_audit_finds_exactly_the_stale_ids_and_counts_missing_apart(
    make_settings: MakeSettings, redis_client: Client, shop_conn: Connection
) -> None:
    s = audited(make_settings)
    hot = warmed_hot_ids(s, redis_client)
    assert cw.audit(s).to_dict() | {"rechecked": 0} == {
        "checked": len(hot),
        "stale": 0,
        "missing": 0,
        "stale_ids": [],
        "rechecked": 0,
        "fixed": 0,
        "hot_published": True,
    }
    stale = make_stale(s, redis_client, shop_conn, hot)
    report = cw.audit(s)  # the default sample (1000) takes the whole hot list here
    assert (report.checked, report.stale_ids, report.missing) == (len(hot), stale, 1)
    assert report.rechecked == len(stale)
    assert cw.audit(s, every=True).stale_ids == stale


@pytest.mark.writes_mysql
def test_a_sample_checks_that_many_hot_ids(
    make_settings: MakeSettings, redis_client: Client, shop_conn: Connection
) -> None:
    s = audited(make_settings)
    hot = warmed_hot_ids(s, redis_client)
    stale = make_stale(s, redis_client, shop_conn, hot)
    report = cw.audit(s, sample=10)
    assert report.checked == 10
    assert set(report.stale_ids) <= set(stale) and report.missing <= 1
    assert cw.audit(replace(s, audit=replace(s.audit, sample=7))).checked == 7


@pytest.mark.writes_mysql
def test_all_also_checks_cached_listings_outside_the_hot_list(
    make_settings: MakeSettings, redis_client: Client, shop_conn: Connection
) -> None:
    """Readers GET any listing key, so --all SCANs for those the hot list does not name."""
    s = audited(make_settings)
    hot = warmed_hot_ids(s, redis_client)
    with shop_conn.cursor() as cur:
        cur.execute("SELECT MAX(id) FROM products")
        row = cur.fetchone()
    assert row is not None
    unknown = int(row[0]) + 1000  # no such product: a warm would never write it
    redis_client.set(s.keys.product(unknown), b'{"id": %d}' % unknown)
    assert cw.audit(s).stale == 0
    report = cw.audit(s, every=True)
    assert (report.checked, report.stale_ids) == (len(hot) + 1, [unknown])


@pytest.mark.writes_mysql
def test_audit_without_fix_writes_nothing(
    make_settings: MakeSettings,
    redis_client: Client,
    shop_conn: Connection,
    key_prefix: str,
    tmp_path: Path,
) -> None:
    """No key created, changed or deleted, no expiry touched, MySQL as it was, no run-log
    record, no file."""
    s = audited(make_settings)
    hot = warmed_hot_ids(s, redis_client)
    stale = make_stale(s, redis_client, shop_conn, hot)

    def mysql_state() -> object:
        with shop_conn.cursor() as cur:
            cur.execute("CHECKSUM TABLE products, categories, order_lines EXTENDED")
            return cur.fetchall()

    def ttls() -> dict[bytes, int]:
        return {k: int(redis_client.pttl(k)) for k in snapshot(redis_client, key_prefix)}

    keys_before, ttls_before, rows_before = (
        snapshot(redis_client, key_prefix),
        ttls(),
        mysql_state(),
    )
    log_before = s.runlog.read_bytes()
    files_before = sorted(tmp_path.rglob("*"))
    for every in (False, True):
        assert cw.audit(s, every=every).stale_ids == stale
    assert snapshot(redis_client, key_prefix) == keys_before
    ttls_after = ttls()
    assert ttls_after.keys() == ttls_before.keys()
    assert all(ttls_after[k] <= ttls_before[k] for k in ttls_before), "an expiry was touched"
    assert mysql_state() == rows_before
    assert s.runlog.read_bytes() == log_before
    assert sorted(tmp_path.rglob("*")) == files_before


@pytest.mark.writes_mysql
def test_fix_repairs_the_stale_listings_and_a_second_audit_finds_none(
    make_settings: MakeSettings, redis_client: Client, shop_conn: Connection
) -> None:
    s = audited(make_settings)
    hot = warmed_hot_ids(s, redis_client)
    stale = make_stale(s, redis_client, shop_conn, hot)
    report = cw.audit(s, fix=True)
    assert (report.stale_ids, report.fixed) == (stale, len(stale))
    assert cw.audit(s, every=True).stale == 0
    edited, deleted = hot[9], hot[13]
    assert json.loads(cw.show(s, edited) or b"")["name"] == "edited, never invalidated"
    assert cw.show(s, deleted) is None
    last = runs(Path(s.source))[-1]
    assert (last["command"], last["status"], last["hot"]) == ("invalidate", "ok", len(stale))
    # and the next warm does not fight the fix
    assert cw.warm(s).status == "ok"
    assert cw.audit(s, every=True).stale == 0


@pytest.mark.writes_mysql
@pytest.mark.parametrize("rewarm", [True, False], ids=["rewarmed", "invalidated"])
def test_an_edit_whose_invalidation_lands_during_the_pause_raises_no_alarm(
    make_settings: MakeSettings,
    redis_client: Client,
    shop_conn: Connection,
    monkeypatch: pytest.MonkeyPatch,
    rewarm: bool,
) -> None:
    """The admin flow racing the first comparison: the row is edited, the audit compares
    (MySQL new, Redis old), then the invalidation arrives before the re-check.

    The pause is where the invalidation lands: the audit's sleep is replaced by it, so
    the race is the same every time. Invalidated only, the listing is missing, not stale.
    """
    s = audited(make_settings, recheck_after=5.0)
    hot = warmed_hot_ids(s, redis_client)
    product = hot[3]
    edit_name(shop_conn, product, "edited in flight")
    paused: list[float] = []

    def invalidation_arrives(seconds: float) -> None:
        paused.append(seconds)
        cw.invalidate(s, [product], rewarm=rewarm)

    fake = types.SimpleNamespace(
        monotonic=time.monotonic, time=time.time, sleep=invalidation_arrives
    )
    monkeypatch.setattr(staleness, "time", fake)
    report = cw.audit(s)
    assert paused == [5.0]
    assert (report.rechecked, report.stale_ids) == (1, [])
    assert report.missing == (0 if rewarm else 1)


@pytest.mark.writes_mysql
def test_an_edit_left_uninvalidated_through_the_pause_is_stale(
    make_settings: MakeSettings, redis_client: Client, shop_conn: Connection
) -> None:
    """The same edit with no invalidation: the re-check after a real pause still sees it."""
    s = audited(make_settings, recheck_after=0.5)
    hot = warmed_hot_ids(s, redis_client)
    edit_name(shop_conn, hot[3], "edited, nobody told the cache")
    started = time.monotonic()
    report = cw.audit(s)
    assert time.monotonic() - started >= 0.5
    assert (report.rechecked, report.stale_ids) == (1, [hot[3]])


@pytest.mark.writes_mysql
def test_cli_exit_codes_json_and_summary_line(
    make_config: MakeConfig, redis_client: Client, shop_conn: Connection, key_prefix: str
) -> None:
    config = str(make_config())
    assert cachewarm("--config", config, "run").returncode == 0
    clean = cachewarm("--config", config, "audit", "--json", env=FAST)
    assert clean.returncode == 0, clean.stderr
    found = json.loads(one_line(clean.stdout))
    assert {"checked", "stale", "missing", "stale_ids"} <= found.keys()
    assert found["stale"] == 0 and found["stale_ids"] == [] and found["checked"] > 20

    hot = json.loads(redis_client.get(f"{key_prefix}:v1:hot") or b"[]")
    edit_name(shop_conn, hot[0], "edited")
    stale = cachewarm("--config", config, "audit", "--json", env=FAST)
    assert stale.returncode == 1, stale.stderr
    assert json.loads(stale.stdout)["stale_ids"] == [hot[0]]
    human = cachewarm("--config", config, "audit", env=FAST)
    assert human.returncode == 1
    line = one_line(human.stdout)
    assert f"{found['checked']} cached listings checked, 1 stale, 0 missing" in line
    assert line.endswith(f"stale ids {hot[0]}")
    fixed = cachewarm("--config", config, "audit", "--fix", env=FAST)
    assert fixed.returncode == 1 and one_line(fixed.stdout).endswith("; fixed 1")
    assert cachewarm("--config", config, "audit", env=FAST).returncode == 0

    for bad in (["--sample", "0"], ["--sample", "5", "--all"], ["--sample", "x"]):
        result = cachewarm("--config", config, "audit", *bad, env=FAST)
        assert result.returncode == 2, (bad, result.stderr)
        assert one_line(result.stderr).startswith("cachewarm: error: ")
    assert (
        cachewarm("--config", config, "audit", env={"CACHEWARM_AUDIT_SAMPLE": "0"}).returncode == 2
    )


@pytest.mark.writes_mysql
def test_audit_metrics_go_to_its_own_textfile(
    make_config: MakeConfig,
    redis_client: Client,
    shop_conn: Connection,
    key_prefix: str,
    tmp_path: Path,
) -> None:
    textfile = tmp_path / "textfile" / "cachewarm_audit.prom"
    config = str(make_config())
    assert cachewarm("--config", config, "run").returncode == 0
    hot = json.loads(redis_client.get(f"{key_prefix}:v1:hot") or b"[]")
    redis_client.delete(f"{key_prefix}:v1:product:{hot[2]}")
    edit_name(shop_conn, hot[0], "edited")
    before = time.time()
    env = {**FAST, "CACHEWARM_AUDIT_TEXTFILE": str(textfile)}
    assert cachewarm("--config", config, "audit", env=env).returncode == 1
    series = read(textfile)
    labels = {"prefix": key_prefix, "version": "1"}
    assert value(series, "cachewarm_audit_stale_listings", **labels) == 1
    assert value(series, "cachewarm_audit_missing_listings", **labels) == 1
    assert value(series, "cachewarm_audit_checked_listings", **labels) == len(hot)
    last = value(series, "cachewarm_audit_last_timestamp_seconds", **labels)
    assert last is not None and before - 1 <= last <= time.time() + 1


@pytest.mark.writes_mysql
def test_check_reports_an_unwritable_audit_textfile(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    in_the_way = tmp_path / "not-a-dir"
    in_the_way.write_text("")
    env = {"CACHEWARM_AUDIT_TEXTFILE": str(in_the_way / "textfile" / "cachewarm_audit.prom")}
    report = check.check(make_config(), env=env)
    found = [f for f in report.findings if f.check == "audit_textfile"]
    assert [(f.status, f.message) for f in found] == [
        (
            check.FAIL,
            f"cannot create {env['CACHEWARM_AUDIT_TEXTFILE']}: {in_the_way} is not a directory",
        )
    ]
