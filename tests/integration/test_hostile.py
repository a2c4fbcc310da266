"""Hostile data: any utf8mb4 text and multi-megabyte TEXT survive MariaDB -> warm -> Redis
exactly, and hot queries that return junk fail with one clear line."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pymysql.connections import Connection
from pymysql.converters import escape_string

import cachewarm as cw
from cachewarm.errors import SourceError
from cachewarm.keys import MAX_SAFE_ID, Keys
from tests.helpers import MakeConfig, MakeSettings, cachewarm, one_line

DRIVERS = ["pymysql", "mysqlclient"]
REAL_SERVERS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Every code point MariaDB's utf8mb4 stores (all but surrogates), mixed with known trouble.
TROUBLE = ["\x00", "\\", "'", '"', "%", "%s", "%(ids)s", "\n", "\r\n", "\u2028", "😀", "\ufeff"]
text = st.lists(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=20) | st.sampled_from(TROUBLE),
    max_size=12,
).map("".join)


def stored(conn: Connection, product_id: int) -> tuple[str, str | None]:
    """(name, description) exactly as MariaDB returns them to PyMySQL."""
    with conn.cursor() as cur:
        cur.execute("SELECT name, description FROM products WHERE id = %s", (product_id,))
        row = cur.fetchone()
    assert row is not None
    return row[0], row[1]


@pytest.mark.writes_mysql
@pytest.mark.parametrize("driver", DRIVERS)
def test_any_utf8mb4_text_round_trips_exactly(
    make_settings: MakeSettings,
    shop_conn: Connection,
    redis_client: redis.Redis,
    driver: str,
) -> None:
    s = make_settings(
        driver=driver, hot_query="SELECT 1 UNION ALL SELECT 2 LIMIT %(limit)s", batch_size=2
    )
    keys = Keys(s.keys.prefix, s.keys.version)

    @REAL_SERVERS
    @given(name=text.filter(lambda t: len(t) <= 255), description=st.none() | text)
    def round_trip(name: str, description: str | None) -> None:
        with shop_conn.cursor() as cur:
            cur.execute(
                "UPDATE products SET name = %s, description = %s WHERE id IN (1, 2)",
                (name, description),
            )
        assert cw.warm(s).status == "ok"
        assert stored(shop_conn, 1) == (name, description)  # MariaDB kept it as given
        for product_id in (1, 2):
            listing = json.loads(redis_client.get(keys.product(product_id)) or b"")
            assert (listing["name"], listing["description"]) == (name, description)

    round_trip()


@pytest.fixture
def big_table(shop_conn: Connection) -> str:
    with shop_conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE big (id BIGINT UNSIGNED PRIMARY KEY, body LONGTEXT, tail VARCHAR(20)) "
            "CHARSET utf8mb4 COLLATE utf8mb4_bin"
        )
    return "big"


@pytest.mark.writes_mysql
@pytest.mark.timeout(120)
@pytest.mark.parametrize("driver", DRIVERS)
def test_multi_megabyte_text_round_trips_exactly(
    make_settings: MakeSettings,
    shop_conn: Connection,
    redis_client: redis.Redis,
    big_table: str,
    driver: str,
) -> None:
    s = make_settings(
        driver=driver,
        hot_query="SELECT 7 LIMIT %(limit)s",
        listing_query=f"SELECT id, body, tail FROM {big_table} WHERE id IN %(ids)s",
        max_payload_bytes=64 << 20,
    )
    keys = Keys(s.keys.prefix, s.keys.version)

    @settings(REAL_SERVERS, max_examples=3)
    @given(chunk=text.filter(lambda t: len(t.encode()) >= 8 and "\x00" not in t))
    def round_trip(chunk: str) -> None:
        body = chunk * (3_000_000 // len(chunk.encode()) + 1)  # a little over 3 MB of UTF-8
        with shop_conn.cursor() as cur:
            cur.execute(f"REPLACE INTO {big_table} VALUES (7, %s, %s)", (body, "end ✓"))
        record = cw.warm(s)
        assert (record.status, record.written + record.unchanged) == ("ok", 1)
        with shop_conn.cursor() as cur:
            cur.execute(f"SELECT body FROM {big_table} WHERE id = 7")
            row = cur.fetchone()
        assert row is not None and row[0] == body
        raw = redis_client.get(keys.product(7)) or b""
        assert len(raw) >= 3_000_000
        assert json.loads(raw) == {"id": 7, "body": body, "tail": "end ✓"}

    round_trip()


def literal(value: str) -> str:
    """A SQL string literal that survives both MariaDB and the driver's %-formatting."""
    return "'" + escape_string(value).replace("%", "%%") + "'"


@settings(REAL_SERVERS, max_examples=40)
@given(
    value=st.text(
        st.characters(exclude_categories=["Cs", "Nd", "No"]) | st.sampled_from("0123456789 -+.e")
    )
)
def test_hot_query_text_ids_are_exact_integers_or_a_clear_error(
    make_settings: MakeSettings, value: str
) -> None:
    base = make_settings()  # the query goes in directly: TOML cannot carry every character
    s = replace(base, warm=replace(base.warm, hot_query=f"SELECT {literal(value)} AS id"))
    stripped = value.strip()
    try:
        record = cw.warm(s)
    except SourceError as exc:
        assert not (stripped.isascii() and stripped.isdigit() and int(stripped) <= MAX_SAFE_ID)
        assert str(exc).startswith(
            (
                "hot query returned a non-integer id ",
                "hot query returned an out-of-range id ",
                "hot query returned id ",  # above MAX_SAFE_ID
            )
        ), str(exc)
        assert "\n" not in str(exc).replace("\\n", "")
    else:
        assert stripped.isascii() and stripped.isdigit(), f"accepted {value!r} as an id"
        assert list(record.hot_ids) == [int(stripped)]


@pytest.mark.parametrize(
    "expression",
    ["'12abc'", "'²'", "'١٢'", "1.5", "1e3", "NULL", "-1", "18446744073709551616", "''"],
)
@pytest.mark.slow
def test_hot_query_junk_ids_fail_with_one_line(
    make_config: MakeConfig, redis_client: redis.Redis, key_prefix: str, expression: str
) -> None:
    config = make_config(hot_query=f"SELECT {expression} AS id LIMIT %(limit)s")
    result = cachewarm("--config", str(config), "run")
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert line.startswith(
        (
            "cachewarm: error: hot query returned a non-integer id ",
            "cachewarm: error: hot query returned an out-of-range id ",
        )
    ), line
    assert line.endswith(" in row 1")
    assert list(redis_client.scan_iter(match=f"{key_prefix}:*")) == []


@settings(REAL_SERVERS, max_examples=30)
@given(
    values=st.lists(st.integers(1, 40), max_size=30),  # ids with a product row
    limit=st.integers(1, 12),
)
@example(values=[1, 1, 2], limit=2)
def test_hot_ids_keep_first_places_drop_repeats_and_honour_the_limit(
    make_settings: MakeSettings, values: list[int], limit: int
) -> None:
    """The hot query itself has no LIMIT here, so repeats are for cachewarm to drop."""
    rows = " UNION ALL ".join(f"SELECT {n} AS n, {v} AS v" for n, v in enumerate(values))
    query = f"SELECT v FROM ({rows}) AS t ORDER BY n" if values else "SELECT 1 FROM DUAL WHERE 0"
    s = make_settings(hot_query=query, limit=limit)
    expected = list(dict.fromkeys(values))[:limit]
    record = cw.warm(s)
    assert record.hot == len(expected)
    assert list(record.hot_ids) == expected
