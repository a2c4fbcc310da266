"""The library API against real MariaDB and Redis: run, dry run, invalidate, show, status."""

from __future__ import annotations

import json

import pytest
import redis
from pymysql.connections import Connection

import cachewarm
from cachewarm.errors import ConfigError, SourceError
from cachewarm.keys import Keys
from tests.helpers import MakeSettings, ShopDB


def hot_ids(conn: Connection, limit: int = 1000) -> list[int]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT product_id FROM order_lines WHERE ordered_at >= NOW() - INTERVAL 1 DAY "
            "GROUP BY product_id ORDER BY SUM(qty) DESC, product_id LIMIT %s",
            (limit,),
        )
        return [int(r[0]) for r in cur.fetchall()]


def keyspace(client: redis.Redis, prefix: str) -> dict[bytes, bytes | None]:
    """Every key under the prefix with its serialized value (DUMP), for exact comparison."""
    return {k: client.dump(k) for k in client.scan_iter(match=f"{prefix}:*")}


def test_run_writes_every_hot_listing_then_the_hot_list(
    make_settings: MakeSettings, shop_conn: Connection, redis_client: redis.Redis
) -> None:
    s = make_settings()
    keys = Keys(s.keys.prefix, s.keys.version)
    record = cachewarm.warm(s)
    expected = hot_ids(shop_conn)
    assert record.status == "ok" and record.hot == len(expected) > 0
    assert json.loads(redis_client.get(keys.hot) or b"") == expected
    assert record.written == len(expected)
    for product_id in expected:
        listing = json.loads(redis_client.get(keys.product(product_id)) or b"null")
        assert listing["id"] == product_id
        ttl = redis_client.pttl(keys.product(product_id))
        assert s.warm.ttl * 1000 * 0.99 < ttl <= s.warm.ttl * 1000 * (1 + s.warm.ttl_jitter)
    assert 0 < redis_client.pttl(keys.hot) <= s.warm.ttl * 1000


def test_listing_is_the_row_in_column_order(
    make_settings: MakeSettings, shop_conn: Connection, redis_client: redis.Redis
) -> None:
    s = make_settings()
    cachewarm.warm(s)
    top = hot_ids(shop_conn)[0]
    with shop_conn.cursor() as cur:
        cur.execute("SELECT id, sku, name, price FROM products WHERE id = %s", (top,))
        pid, sku, name, price = cur.fetchone()  # type: ignore[misc]
    listing = json.loads(cachewarm.show(s, top) or b"")
    assert list(listing)[:4] == ["id", "sku", "name", "description"]
    assert (listing["id"], listing["sku"], listing["name"]) == (pid, sku, name)
    assert listing["price"] == f"{price:.2f}"


@pytest.mark.writes_mysql
def test_second_run_reports_unchanged_and_rewrites_only_edits(
    make_settings: MakeSettings, shop_conn: Connection, redis_client: redis.Redis
) -> None:
    s = make_settings()
    keys = Keys(s.keys.prefix, s.keys.version)
    first = cachewarm.warm(s)
    top = hot_ids(shop_conn)[0]
    with shop_conn.cursor() as cur:
        cur.execute("UPDATE products SET name = 'Renamed ✓' WHERE id = %s", (top,))
    second = cachewarm.warm(s)
    assert (second.written, second.unchanged) == (1, first.written - 1)
    assert json.loads(redis_client.get(keys.product(top)) or b"")["name"] == "Renamed ✓"


@pytest.mark.writes_mysql
@pytest.mark.parametrize("driver", ["pymysql", "mysqlclient"])
def test_json_mapping_of_every_type(
    make_settings: MakeSettings, shop_conn: Connection, redis_client: redis.Redis, driver: str
) -> None:
    with shop_conn.cursor() as cur:
        cur.execute(
            """CREATE TABLE all_types (
                id BIGINT UNSIGNED PRIMARY KEY, tiny TINYINT, small SMALLINT, big BIGINT,
                ubig BIGINT UNSIGNED, dec_col DECIMAL(12,4), money DECIMAL(10,2),
                f FLOAT, d DOUBLE, day DATE, dt DATETIME, dt6 DATETIME(6), ts TIMESTAMP(3) NULL,
                tm TIME, txt TEXT, vc VARCHAR(50), ch CHAR(3), bin VARBINARY(8), blb BLOB,
                nul INT NULL, flag BIT(8), size ENUM('s','m'), tags SET('a','b'), tiny_d DOUBLE,
                doc JSON
            ) CHARSET utf8mb4"""
        )
        cur.execute(
            "INSERT INTO all_types VALUES (1, -128, 32767, -9223372036854775808, "
            "18446744073709551615, -12345678.0500, 19.90, 1.5, 0.1, '2026-11-24', "
            "'2026-11-24 10:15:00', '2026-11-24 10:15:00.000120', '2026-11-24 10:15:00.500', "
            "'838:59:59', %s, 'it''s \"q\" \\\\ ok', 'abc', x'00ff10', x'deadbeef', NULL, b'101', "
            "'m', 'a,b', 1e-05, '{\"k\": [1, 2]}')",
            ("emoji 😀 línea\nnueva\ttab",),
        )
    s = make_settings(
        hot_query="SELECT 1 LIMIT %(limit)s",
        listing_query="SELECT * FROM all_types WHERE id IN %(ids)s",
        driver=driver,
    )
    cachewarm.warm(s)
    payload = cachewarm.show(s, 1)
    assert (
        payload
        == (
            '{"id":1,"tiny":-128,"small":32767,"big":-9223372036854775808,'
            '"ubig":18446744073709551615,"dec_col":"-12345678.0500","money":"19.90",'
            '"f":1.5,"d":0.1,"day":"2026-11-24","dt":"2026-11-24T10:15:00",'
            '"dt6":"2026-11-24T10:15:00.000120","ts":"2026-11-24T10:15:00.500000",'
            '"tm":"838:59:59","txt":"emoji 😀 línea\\nnueva\\ttab","vc":"it\'s \\"q\\" \\\\ ok",'
            '"ch":"abc","bin":"AP8Q","blb":"3q2+7w==","nul":null,"flag":"BQ==","size":"m",'
            '"tags":"a,b","tiny_d":1e-05,"doc":"{\\"k\\": [1, 2]}"}'
        ).encode()
    )


def test_both_drivers_write_the_same_bytes(
    make_settings: MakeSettings, redis_client: redis.Redis
) -> None:
    by_driver = {}
    for driver in ("pymysql", "mysqlclient"):
        s = make_settings(driver=driver, version=2 if driver == "pymysql" else 3)
        record = cachewarm.warm(s)
        keys = Keys(s.keys.prefix, s.keys.version)
        hot = redis_client.get(keys.hot)
        by_driver[driver] = (
            hot,
            [redis_client.get(keys.product(i)) for i in json.loads(hot or b"")],
        )
        assert record.written == record.hot > 0
    assert by_driver["pymysql"] == by_driver["mysqlclient"]


@pytest.mark.writes_mysql
def test_dry_run_writes_nothing_on_the_server(
    make_settings: MakeSettings, shop_conn: Connection, redis_client: redis.Redis
) -> None:
    s = make_settings()
    cachewarm.warm(s)
    top = hot_ids(shop_conn)[0]
    with shop_conn.cursor() as cur:
        cur.execute("UPDATE products SET price = price + 1 WHERE id = %s", (top,))
        cur.execute("DELETE FROM products WHERE id = %s", (hot_ids(shop_conn)[1],))
    redis_client.delete(Keys(s.keys.prefix, 1).product(hot_ids(shop_conn)[2]))
    before = keyspace(redis_client, s.keys.prefix)
    ttls = {k: redis_client.pttl(k) for k in before}
    dirty = redis_client.info("persistence")["rdb_changes_since_last_save"]
    report = cachewarm.dry_run(s)
    assert redis_client.info("persistence")["rdb_changes_since_last_save"] == dirty
    assert keyspace(redis_client, s.keys.prefix) == before
    assert all(redis_client.pttl(k) <= ttl for k, ttl in ttls.items())  # no TTL refreshed
    assert (report.new, report.changed, report.would_remove) == (1, 1, 1)
    assert report.unchanged == report.record.hot - 3
    assert report.hot_changed
    assert report.record.status == "dry-run"


def test_dry_run_from_empty_redis_creates_no_key(
    make_settings: MakeSettings, redis_client: redis.Redis
) -> None:
    s = make_settings()
    report = cachewarm.dry_run(s)
    assert report.new == report.record.hot > 0
    assert keyspace(redis_client, s.keys.prefix) == {}


def test_invalidate_deletes_and_is_idempotent(
    make_settings: MakeSettings, shop_conn: Connection, redis_client: redis.Redis
) -> None:
    s = make_settings()
    cachewarm.warm(s)
    ids = hot_ids(shop_conn)[:3]
    assert cachewarm.invalidate(s, ids).deleted == 3
    assert all(cachewarm.show(s, i) is None for i in ids)
    assert cachewarm.invalidate(s, ids).deleted == 0


@pytest.mark.writes_mysql
def test_invalidate_rewarm_writes_the_fresh_row(
    make_settings: MakeSettings, shop_conn: Connection
) -> None:
    s = make_settings()
    cachewarm.warm(s)
    top = hot_ids(shop_conn)[0]
    with shop_conn.cursor() as cur:
        cur.execute("UPDATE products SET sku = 'EDITED' WHERE id = %s", (top,))
    result = cachewarm.invalidate(s, [top, 999_999], rewarm=True)
    assert (result.deleted, result.rewarmed, result.missing) == (1, 1, [999_999])
    assert json.loads(cachewarm.show(s, top) or b"")["sku"] == "EDITED"
    # and the next cron warm does not fight it
    assert cachewarm.warm(s).skipped_invalidated == 0


@pytest.mark.writes_mysql
def test_deleted_product_leaves_cache_and_hot_list(
    make_settings: MakeSettings, shop_conn: Connection, redis_client: redis.Redis
) -> None:
    s = make_settings()
    cachewarm.warm(s)
    gone = hot_ids(shop_conn)[0]
    with shop_conn.cursor() as cur:
        cur.execute("DELETE FROM products WHERE id = %s", (gone,))
    record = cachewarm.warm(s)
    assert record.removed == 1
    assert cachewarm.show(s, gone) is None
    assert gone not in json.loads(redis_client.get(f"{s.keys.prefix}:v1:hot") or b"")


def test_version_bump_leaves_old_readers_alone(
    make_settings: MakeSettings, redis_client: redis.Redis, shop_conn: Connection
) -> None:
    v1 = make_settings()
    cachewarm.warm(v1)
    old = keyspace(redis_client, f"{v1.keys.prefix}:v1")
    cachewarm.warm(make_settings(version=2))
    assert keyspace(redis_client, f"{v1.keys.prefix}:v1") == old
    assert redis_client.exists(f"{v1.keys.prefix}:v2:hot")


def test_empty_hot_query_keeps_the_published_list(
    make_settings: MakeSettings, redis_client: redis.Redis
) -> None:
    s = make_settings()
    cachewarm.warm(s)
    hot_key = f"{s.keys.prefix}:v1:hot"
    published = redis_client.get(hot_key)
    empty = make_settings(hot_query="SELECT id FROM products WHERE id < 0 LIMIT %(limit)s")
    record = cachewarm.warm(empty)
    assert record.status == "empty" and record.hot == 0 and not record.hot_published
    assert redis_client.get(hot_key) == published


def test_oversize_listing_is_skipped_not_written(
    make_settings: MakeSettings, shop_conn: Connection
) -> None:
    s = make_settings(max_payload_bytes=300, max_rejected_share=1)
    record = cachewarm.warm(s)
    assert record.skipped_oversize > 0
    assert record.written == record.hot - record.skipped_oversize


def test_hot_query_with_bad_ids_is_a_clear_error(make_settings: MakeSettings) -> None:
    s = make_settings(hot_query="SELECT name FROM products LIMIT %(limit)s")
    with pytest.raises(SourceError, match="non-integer id"):
        cachewarm.warm(s)


def test_hot_query_duplicates_are_dropped(make_settings: MakeSettings) -> None:
    s = make_settings(hot_query="SELECT 5 UNION ALL SELECT 3 UNION ALL SELECT 5 LIMIT %(limit)s")
    record = cachewarm.warm(s)
    assert record.hot == 2 and record.hot_ids == [5, 3]


def test_listing_query_without_id_column_fails_clearly(make_settings: MakeSettings) -> None:
    s = make_settings(listing_query="SELECT sku FROM products WHERE id IN %(ids)s")
    with pytest.raises(SourceError, match="no column named `id`"):
        cachewarm.warm(s)


def test_missing_queries_are_config_errors(make_settings: MakeSettings) -> None:
    with pytest.raises(ConfigError, match="hot_query is not set"):
        cachewarm.warm(make_settings(hot_query=""))
    with pytest.raises(ConfigError, match=r"must contain %\(ids\)s"):
        cachewarm.warm(make_settings(listing_query="SELECT * FROM products"))


def test_status_reports_runs_and_hot_list(make_settings: MakeSettings, shop_db: ShopDB) -> None:
    s = make_settings()
    assert cachewarm.status(s).hot is None
    cachewarm.warm(s)
    cachewarm.dry_run(s)
    report = cachewarm.status(s)
    assert [r["status"] for r in report.runs] == ["ok", "dry-run"]
    assert report.hot is not None and report.hot.size == report.runs[0]["hot"]
    assert 0 <= report.hot.age_s < 60
    assert report.lock is None and report.redis_error is None


def test_listing_query_matching_nothing_keeps_the_cache(
    make_settings: MakeSettings, redis_client: redis.Redis
) -> None:
    s = make_settings()
    cachewarm.warm(s)
    before = keyspace(redis_client, s.keys.prefix)
    broken = make_settings(listing_query="SELECT * FROM products WHERE id IN %(ids)s AND id < 0")
    with pytest.raises(SourceError, match="refusing to delete their listings"):
        cachewarm.warm(broken)
    assert keyspace(redis_client, s.keys.prefix) == before


def test_sum_of_integers_is_a_decimal_string_and_a_cast_makes_it_a_number(
    make_settings: MakeSettings, redis_client: redis.Redis
) -> None:
    """As the README's type table says: MySQL types SUM() of integers DECIMAL."""
    query = (
        "SELECT p.id, (SELECT SUM(qty) FROM order_lines o WHERE o.product_id = p.id) AS sold,"
        " (SELECT CAST(SUM(qty) AS SIGNED) FROM order_lines o WHERE o.product_id = p.id) AS n"
        " FROM products p WHERE p.id IN %(ids)s"
    )
    s = make_settings(listing_query=query)
    cachewarm.warm(s)
    top = json.loads(redis_client.get(f"{s.keys.prefix}:v1:hot") or b"")[0]
    listing = json.loads(redis_client.get(f"{s.keys.prefix}:v1:product:{top}") or b"")
    assert isinstance(listing["sold"], str) and listing["n"] == int(listing["sold"]) > 0
