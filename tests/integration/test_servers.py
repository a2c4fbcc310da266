"""The test infrastructure itself: throwaway servers, the seeded shop, key cleanup."""

from __future__ import annotations

import datetime
import decimal
import os
import secrets
import statistics

import pymysql
import pytest
import redis
import seed as shop_seed
import servers
from pymysql.connections import Connection

from tests.helpers import SHOP_PRODUCTS

SYSTEM_PORTS = {3306, 6379}


def _scalar(conn: Connection, sql: str) -> object:
    with conn.cursor() as cur:
        cur.execute(sql)
        row = cur.fetchone()
    assert row is not None
    return row[0]


def test_shop_db_has_the_seeded_rows(shop_conn: Connection) -> None:
    assert _scalar(shop_conn, "SELECT COUNT(*) FROM products") == SHOP_PRODUCTS
    assert _scalar(shop_conn, "SELECT COUNT(*) FROM categories") == len(shop_seed.CATEGORIES)
    assert _scalar(shop_conn, "SELECT COUNT(*) FROM order_lines") == 3 * SHOP_PRODUCTS


def test_hot_query_returns_skewed_sales_hottest_first(shop_conn: Connection) -> None:
    with shop_conn.cursor() as cur:
        cur.execute(shop_seed.HOT_QUERY, {"limit": 1000})
        hot = [int(r[0]) for r in cur.fetchall()]
        cur.execute(
            "SELECT product_id, SUM(qty) FROM order_lines"
            " WHERE ordered_at >= NOW() - INTERVAL 1 DAY GROUP BY product_id"
        )
        sold = {int(pid): int(total) for pid, total in cur.fetchall()}
        cur.execute("SELECT COUNT(*) FROM order_lines WHERE ordered_at < NOW() - INTERVAL 1 DAY")
        old = cur.fetchone()
    assert hot == sorted(sold, key=lambda pid: (-sold[pid], pid))
    totals = [sold[pid] for pid in hot]
    assert totals[0] >= 10 * statistics.median(totals), "sales should be Zipf-skewed"
    assert len(hot) < SHOP_PRODUCTS, "some products should not have sold at all"
    assert old is not None
    assert old[0] > 0, "older order lines must be filtered out by the query"


def test_utf8mb4_and_binary_values_round_trip(shop_conn: Connection) -> None:
    with shop_conn.cursor() as cur:
        cur.execute(
            "SELECT id, sku, name, description, price, weight_kg, category_id, released_on,"
            " thumbnail FROM products ORDER BY id"
        )
        rows = cur.fetchall()
    expected = [
        (
            pid,
            sku,
            name,
            desc,
            decimal.Decimal(price),
            weight,
            cat,
            datetime.date.fromisoformat(released) if released else None,
            thumb,
        )
        for pid, sku, name, desc, price, weight, cat, released, _, thumb in (
            shop_seed.generate_products(SHOP_PRODUCTS)
        )
    ]
    assert [tuple(r) for r in rows] == expected
    names = {r[2] for r in rows}
    assert "Emoji Party Pack 🔥🚀🎉👩‍👩‍👧" in names
    assert "Two-line\nlabel" in names
    assert any(r[3] is None for r in rows)
    assert any(r[3] == "" for r in rows)


def test_listing_query_fetches_requested_ids(shop_conn: Connection) -> None:
    with shop_conn.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute(shop_seed.LISTING_QUERY, {"ids": (1, 3, 13, 10_000)})
        rows = {r["id"]: r for r in cur.fetchall()}
    assert sorted(rows) == [1, 3, 13]
    assert isinstance(rows[3]["price"], decimal.Decimal)
    assert isinstance(rows[3]["updated_at"], datetime.datetime)
    assert rows[3]["category_slug"]


def test_key_prefix_is_unique_and_scoped(key_prefix: str, redis_client: redis.Redis) -> None:
    assert key_prefix.startswith("cwtest-")
    other = f"cwtest-{secrets.token_hex(6)}"
    redis_client.set(f"{key_prefix}:v1:hot", "[1]")
    redis_client.set(other, "outside")  # shares the start of the prefix but not "prefix:"
    try:
        with redis_client.pipeline(transaction=False) as pipe:
            for i in range(2500):  # more than one SCAN page and one DEL batch
                pipe.set(f"{other}:v1:product:{i}", "x")
            pipe.execute()
        assert servers.delete_prefix(redis_client, other) == 2500
        assert not list(redis_client.scan_iter(match=f"{other}:*"))
        assert redis_client.get(other) == b"outside"
        assert redis_client.get(f"{key_prefix}:v1:hot") == b"[1]"
    finally:
        redis_client.delete(other)


def test_session_servers_are_not_the_system_ones(mysql_url: str, redis_url: str) -> None:
    for url, env in (
        (mysql_url, "CACHEWARM_TEST_MYSQL_URL"),
        (redis_url, "CACHEWARM_TEST_REDIS_URL"),
    ):
        if not os.environ.get(env):
            port = int(url.rsplit(":", 1)[1].split("/")[0])
            assert port not in SYSTEM_PORTS, f"{url} looks like a system server"


def test_mariadb_kill_and_restart_keeps_port_and_data(mariadb_server: servers.Server) -> None:
    assert mariadb_server.port not in SYSTEM_PORTS
    conn = shop_seed.connect(mariadb_server.url, server_only=True)
    with conn.cursor() as cur:
        cur.execute("CREATE DATABASE survivor")
    conn.close()
    mariadb_server.kill()
    assert not mariadb_server.is_running()
    with pytest.raises(pymysql.err.OperationalError):
        shop_seed.connect(mariadb_server.url, server_only=True).close()
    port = mariadb_server.port
    mariadb_server.restart()
    assert mariadb_server.port == port
    conn = shop_seed.connect(f"{mariadb_server.url}/survivor")
    conn.close()


def test_redis_kill_and_restart(redis_server: servers.Server) -> None:
    assert redis_server.port not in SYSTEM_PORTS
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert client.ping()
        redis_server.kill()
        with pytest.raises(redis.ConnectionError):
            client.ping()
        redis_server.restart()
        assert client.ping()  # the client reconnects; data is gone (no persistence)
    finally:
        client.close()
