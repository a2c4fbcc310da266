"""Incremental warms: less work, exactly the same Redis contents as a full warm."""

from __future__ import annotations

import json

import pytest
import redis
from pymysql.connections import Connection

import cachewarm
from cachewarm import Settings
from cachewarm.keys import Keys
from tests.helpers import MakeSettings

CHANGED = "SELECT id FROM products WHERE updated_at >= %(since)s"


def contents(client: redis.Redis, s: Settings) -> tuple[object, dict[int, object]]:
    """The hot list and every listing it names, by product id."""
    keys = Keys(s.keys.prefix, s.keys.version)
    hot = client.get(keys.hot)
    ids = json.loads(hot or b"[]")
    return hot, {i: client.get(keys.product(i)) for i in ids}


@pytest.mark.writes_mysql
def test_incremental_rereads_only_changed_and_missing(
    make_settings: MakeSettings, shop_conn: Connection, redis_client: redis.Redis
) -> None:
    s = make_settings(changed_query=CHANGED, changed_overlap=0)
    keys = Keys(s.keys.prefix, 1)
    first = cachewarm.warm(s)
    assert first.mode == "full"
    hot = json.loads(redis_client.get(keys.hot) or b"")
    edited, evicted, invalidated = hot[:3], hot[10], hot[20]
    with shop_conn.cursor() as cur:
        cur.execute("UPDATE products SET sku = CONCAT('E-', id) WHERE id IN %s", (edited,))
    redis_client.delete(keys.product(evicted))
    cachewarm.invalidate(s, [invalidated])
    second = cachewarm.warm(s)
    assert second.mode == "incremental"
    assert second.written == 5
    assert second.read == 5
    assert second.unchanged == first.written - 5
    for product_id in edited:
        listing = json.loads(redis_client.get(keys.product(product_id)) or b"")
        assert listing["sku"] == f"E-{product_id}"


@pytest.mark.writes_mysql
def test_incremental_matches_a_full_warm_byte_for_byte(
    make_settings: MakeSettings, shop_conn: Connection, redis_client: redis.Redis
) -> None:
    incremental = make_settings(changed_query=CHANGED)
    cachewarm.warm(incremental)
    with shop_conn.cursor() as cur:
        cur.execute("UPDATE products SET name = CONCAT(name, ' ✓') WHERE id % 7 = 0")
        cur.execute("UPDATE order_lines SET qty = qty + 50 WHERE product_id % 11 = 0")
    assert cachewarm.warm(incremental).mode == "incremental"
    full = make_settings(prefix=incremental.keys.prefix + "-full")
    try:
        assert cachewarm.warm(full).mode == "full"
        assert contents(redis_client, incremental) == contents(redis_client, full)
    finally:
        for key in redis_client.scan_iter(match=f"{full.keys.prefix}:*"):
            redis_client.delete(key)


def test_incremental_refreshes_ttls_of_unchanged(
    make_settings: MakeSettings, redis_client: redis.Redis
) -> None:
    s = make_settings(changed_query=CHANGED, changed_overlap=0)
    cachewarm.warm(s)
    keys = Keys(s.keys.prefix, 1)
    top = json.loads(redis_client.get(keys.hot) or b"")[0]
    redis_client.pexpire(keys.product(top), 5000)
    assert cachewarm.warm(s).mode == "incremental"
    assert redis_client.pttl(keys.product(top)) > s.warm.ttl * 1000 * 0.99


def test_full_every_and_flag_force_full_warms(make_settings: MakeSettings) -> None:
    s = make_settings(changed_query=CHANGED)
    assert cachewarm.warm(s).mode == "full"
    assert cachewarm.warm(s, full=True).mode == "full"
    assert cachewarm.warm(s).mode == "incremental"
    assert cachewarm.warm(make_settings(changed_query=CHANGED, full_every=0)).mode == "full"


@pytest.mark.writes_mysql
def test_too_many_changes_fall_back_to_full(
    make_settings: MakeSettings, shop_conn: Connection
) -> None:
    s = make_settings(changed_query=CHANGED, limit=20)
    cachewarm.warm(s)
    with shop_conn.cursor() as cur:
        cur.execute("UPDATE products SET sku = CONCAT('X-', id)")
    assert cachewarm.warm(s).mode == "full"


@pytest.mark.writes_mysql
def test_edit_while_not_hot_is_not_kept_when_hot_again(
    make_settings: MakeSettings, shop_conn: Connection, redis_client: redis.Redis
) -> None:
    """X cached, edited while not hot (watermark moves on), hot again: never the old listing."""
    everyone = make_settings(changed_query=CHANGED, changed_overlap=0)
    cachewarm.warm(everyone)
    keys = Keys(everyone.keys.prefix, 1)
    x = json.loads(redis_client.get(keys.hot) or b"")[-1]
    without_x = make_settings(
        changed_query=CHANGED,
        changed_overlap=0,
        hot_query=f"SELECT id FROM products WHERE id <> {x} ORDER BY id LIMIT %(limit)s",
    )
    with shop_conn.cursor() as cur:
        cur.execute("UPDATE products SET sku = 'EDITED-X' WHERE id = %s", (x,))
    assert cachewarm.warm(without_x).mode == "incremental"
    cachewarm.warm(without_x)
    assert cachewarm.warm(everyone).mode == "incremental"
    assert json.loads(redis_client.get(keys.product(x)) or b"")["sku"] == "EDITED-X"
