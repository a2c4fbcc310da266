"""The hot list holds only ids every reader decodes exactly (at most 2^53-1) unless
`[keys] allow_big_ids` opts in; ids that only name keys (invalidate, the changed
query) keep the BIGINT UNSIGNED range."""

from __future__ import annotations

import json

import pytest
import redis
from pymysql.connections import Connection

import cachewarm as cw
from cachewarm.keys import MAX_SAFE_ID, Keys
from tests.helpers import MakeConfig, MakeSettings, cachewarm, one_line, snapshot

BIG = MAX_SAFE_ID + 2  # 9007199254740993: JSON.parse reads it as ...992


def add_hottest_product(conn: Connection, product_id: int) -> None:
    """A copy of product 1 under `product_id`, ordered more than any other today."""
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO products (id, sku, name, description, price, weight_kg, category_id, "
            "released_on, thumbnail) SELECT %s, CONCAT('BIG-', sku), name, description, price, "
            "weight_kg, category_id, released_on, thumbnail FROM products WHERE id = 1",
            (product_id,),
        )
        cur.execute(
            "INSERT INTO order_lines (product_id, qty, ordered_at) VALUES (%s, 1000000, NOW())",
            (product_id,),
        )


@pytest.mark.writes_mysql
def test_a_hot_id_above_2_53_fails_the_run_in_one_line_and_keeps_the_cache(
    make_config: MakeConfig, shop_conn: Connection, redis_client: redis.Redis, key_prefix: str
) -> None:
    config = make_config()
    assert cachewarm("--config", str(config), "run").returncode == 0
    before = snapshot(redis_client, key_prefix)
    assert redis_client.get(Keys(key_prefix).hot)
    add_hottest_product(shop_conn, BIG)
    result = cachewarm("--config", str(config), "run")
    assert result.returncode == 1
    assert one_line(result.stderr) == (
        f"cachewarm: error: hot query returned id {BIG} in row 1, above 9007199254740991 "
        "(2^53-1), which JavaScript readers of the hot list would misread; "
        "[keys] allow_big_ids = true writes it anyway"
    )
    assert snapshot(redis_client, key_prefix) == before


@pytest.mark.writes_mysql
def test_allow_big_ids_publishes_them_exactly(
    make_settings: MakeSettings, shop_conn: Connection, redis_client: redis.Redis
) -> None:
    add_hottest_product(shop_conn, BIG)
    s = make_settings(allow_big_ids=True)
    cw.warm(s)
    assert json.loads(redis_client.get(s.keys.hot) or b"")[0] == BIG
    assert json.loads(redis_client.get(s.keys.product(BIG)) or b"")["id"] == BIG


@pytest.mark.writes_mysql
def test_ids_that_only_name_keys_are_not_limited(
    make_config: MakeConfig, make_settings: MakeSettings, redis_client: redis.Redis
) -> None:
    """Deleting a listing or re-reading a changed one is safe for any BIGINT UNSIGNED id;
    refusing one would fail the whole invalidation or incremental run for the others."""
    s = make_settings(changed_query=f"SELECT {BIG} FROM products WHERE updated_at >= %(since)s")
    redis_client.set(s.keys.product(BIG), b"{}")
    result = cachewarm("--config", str(make_config()), "invalidate", "1", str(BIG))
    assert result.returncode == 0, result.stderr
    assert redis_client.exists(s.keys.product(BIG)) == 0
    assert cw.warm(s).mode == "full"
    assert cw.warm(s).mode == "incremental"
