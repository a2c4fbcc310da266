"""`[warm] json_columns`: child rows (JSON_ARRAYAGG, JSON_OBJECT, JSON columns) reach readers
as real arrays and objects, byte-identical whatever the driver and JSON library, and a
value that is not JSON skips that one listing instead of failing or turning into a string.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import redis
import seed
from hypothesis import given
from hypothesis import strategies as st
from pymysql.connections import Connection

import cachewarm as cw
from cachewarm.config import load_settings
from cachewarm.errors import ConfigError
from cachewarm.keys import Keys
from cachewarm.mysql import encode
from cachewarm.mysql.encode import InvalidJSON, ListingEncoder, stdlib_dumps
from cachewarm.mysql.source import Source
from tests.helpers import MakeConfig, MakeSettings, cachewarm_here, runs

TEXT, DOUBLE, JSON_TEXT = 253, 5, 252
DESCRIPTION = [("id", 8), ("name", TEXT), ("images", JSON_TEXT), ("weight", DOUBLE)]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
# How a server might print a document: compact, spaced, escaped or not.
json_texts = st.builds(
    lambda value, ascii_only, spaced: (
        value,
        json.dumps(value, ensure_ascii=ascii_only, separators=(", ", ": ") if spaced else None),
    ),
    json_values,
    st.booleans(),
    st.booleans(),
)


def encoders() -> list[ListingEncoder]:
    """Both JSON libraries (the suite installs orjson: see test_encode.py)."""
    return [
        ListingEncoder(DESCRIPTION, json_columns=["images"]),
        ListingEncoder(DESCRIPTION, json_columns=["images"], dumps=stdlib_dumps),
    ]


def test_json_column_is_embedded_not_quoted() -> None:
    text = '[{"url": "a b.jpg", "price": 19.90, "alt": "Tasse \\"☕\\""}, {"n": null}]'
    for encoder in encoders():
        listing = encoder.encode([7, "mug", text, 0.25])
        assert listing == (
            b'{"id":7,"name":"mug","images":[{"url":"a b.jpg","price":19.90,'
            b'"alt":"Tasse \\"\xe2\x98\x95\\""},{"n":null}],"weight":0.25}'
        )
        assert json.loads(listing)["images"][0]["url"] == "a b.jpg"


def test_null_and_bytes_values() -> None:
    """NULL stays null; bytes (as mysqlclient can hand JSON results) embed like text."""
    for encoder in encoders():
        assert json.loads(encoder.encode([1, "x", None, None]))["images"] is None
        assert encoder.encode([1, "x", b'{"a": [1, 2]}', 1.0]) == encoder.encode(
            [1, "x", '{"a":[1,2]}', 1.0]
        )


@given(json_texts, st.text(), st.floats(allow_nan=False, allow_infinity=False))
def test_both_encoders_give_the_same_bytes_and_the_same_value(
    doc: tuple[Any, str], name: str, weight: float
) -> None:
    value, text = doc
    fast, slow = (e.encode([1, name, text, weight]) for e in encoders())
    assert fast == slow
    decoded = json.loads(fast)
    assert (decoded["images"], decoded["name"], decoded["weight"]) == (value, name, weight)
    assert list(decoded) == ["id", "name", "images", "weight"]


@pytest.mark.parametrize(
    "bad",
    ["{bad", "[1, 2", "NaN", "[1, Infinity]", "", "'single'", "[1] [2]", b"[\xff]"],
    ids=["broken", "unclosed", "nan", "infinity", "empty", "quotes", "two", "not-utf8"],
)
def test_invalid_json_is_an_error_naming_the_column(bad: str | bytes) -> None:
    for encoder in encoders():
        with pytest.raises(InvalidJSON, match="column `images` is not valid JSON: ") as caught:
            encoder.encode([1, "x", bad, 1.0])
        assert caught.value.column == "images"


def test_json_column_the_query_does_not_return_is_refused() -> None:
    with pytest.raises(ValueError, match="json_columns names variants, which the listing"):
        ListingEncoder(DESCRIPTION, json_columns=["images", "variants"])


def test_json_columns_setting_from_file_env_and_its_errors(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[warm]\njson_columns = ["images", "variants"]\n')
    assert load_settings(config, env={}).warm.json_columns == ("images", "variants")
    env = {"CACHEWARM_WARM_JSON_COLUMNS": "images, badges"}
    assert load_settings(config, env=env).warm.json_columns == ("images", "badges")
    config.write_text("[warm]\njson_columns = [1]\n")
    with pytest.raises(ConfigError, match=r"\[warm\] json_columns: expected a list of strings"):
        load_settings(config, env={})
    config.write_text('[warm]\njson_columns = ["id"]\n')
    with pytest.raises(ConfigError, match="json_columns cannot hold `id`"):
        load_settings(config, env={})


# --- against real MariaDB and Redis ---------------------------------------------------------


def test_warm_writes_images_as_arrays_identically_with_both_drivers(
    make_settings: MakeSettings, redis_client: redis.Redis, shop_conn: Connection
) -> None:
    settings = make_settings(
        listing_query=seed.LISTING_QUERY_WITH_IMAGES, json_columns=",".join(seed.JSON_COLUMNS)
    )
    first = cw.warm(replace(settings, mysql=replace(settings.mysql, driver="pymysql")))
    assert first.written > 0 and first.skipped_invalid_json == 0
    keys = settings.keys
    hot = json.loads(redis_client.get(keys.hot) or b"")
    with shop_conn.cursor() as cur:
        cur.execute("SELECT product_id, COUNT(*) FROM product_images GROUP BY product_id")
        image_counts = dict(cur.fetchall())
    for product_id in hot:
        listing = json.loads(redis_client.get(keys.product(product_id)) or b"")
        assert isinstance(listing["images"], list)
        assert len(listing["images"]) == image_counts.get(product_id, 0)
        assert [i["width"] for i in listing["images"]] == [
            320 * (n + 1) for n in range(len(listing["images"]))
        ]
    before = {i: redis_client.get(keys.product(i)) for i in hot}
    second = cw.warm(replace(settings, mysql=replace(settings.mysql, driver="mysqlclient")))
    assert (second.written, second.unchanged) == (0, first.written)  # byte for byte the same
    assert {i: redis_client.get(keys.product(i)) for i in hot} == before


def test_invalid_json_skips_that_listing_only(
    make_config: MakeConfig, redis_client: redis.Redis, key_prefix: str
) -> None:
    """Named in a warning, counted in the run log, removed, not in the hot list; exit 0."""
    keys = Keys(key_prefix, 1)

    def config(bad_id: int) -> Path:
        variants = f", IF(p.id = {bad_id}, '[{{\"size\": \"L\"', '[]') AS variants"
        query = seed.LISTING_QUERY_WITH_IMAGES.replace(
            " FROM products p", variants + " FROM products p"
        )
        return make_config(listing_query=query, json_columns="images,variants")

    good = cachewarm_here("--config", str(config(-1)), "run")
    assert good.returncode == 0, good.stderr
    victim = json.loads(redis_client.get(keys.hot) or b"")[0]
    assert json.loads(redis_client.get(keys.product(victim)) or b"")["variants"] == []

    bad_config = config(victim)
    dry = cachewarm_here("--config", str(bad_config), "run", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert " 1 to remove" in dry.stdout
    result = cachewarm_here("--config", str(bad_config), "run")
    assert (result.returncode, result.stdout) == (0, "")
    (warning,) = result.stderr.splitlines()
    assert warning.startswith("cachewarm: warning: 1 listing(s) rejected by the run's own checks")
    assert f"product {victim}: column `variants` is not valid JSON" in warning
    record = runs(bad_config)[-1]
    assert (record["status"], record["skipped_invalid_json"]) == ("ok", 1)
    assert redis_client.get(keys.product(victim)) is None
    hot = json.loads(redis_client.get(keys.hot) or b"")
    assert victim not in hot and len(hot) + 1 == record["hot"]


@contextlib.contextmanager
def docs_table(conn: Connection) -> Iterator[None]:
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE docs (id BIGINT UNSIGNED PRIMARY KEY, doc JSON)")
    try:
        yield
    finally:
        with conn.cursor() as cur:
            cur.execute("DROP TABLE docs")


DOCS_QUERY = (
    "SELECT d.id, d.doc, JSON_ARRAY(d.id, 'x') AS arr, "
    "(SELECT JSON_ARRAYAGG(JSON_OBJECT('doc', JSON_EXTRACT(e.doc, '$'), 'n', e.id)) "
    "FROM docs e WHERE e.id <= d.id) AS agg FROM docs d WHERE d.id IN %(ids)s"
)


@pytest.mark.writes_mysql
@hypothesis.settings(
    max_examples=25, suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture]
)
@given(st.lists(json_texts, min_size=1, max_size=3))
def test_drivers_and_encoders_agree_on_server_json(
    make_settings: MakeSettings,
    shop_conn: Connection,
    monkeypatch: pytest.MonkeyPatch,
    docs: list[tuple[Any, str]],
) -> None:
    """Documents stored in a JSON column and rebuilt by JSON functions on the server."""
    settings = make_settings()
    with docs_table(shop_conn):
        with shop_conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO docs (id, doc) VALUES (%s, %s)",
                [(n, text) for n, (_, text) in enumerate(docs, 1)],
            )
        ids = list(range(1, len(docs) + 1))
        outputs = []
        for driver in ("pymysql", "mysqlclient"):
            for dumps in (encode.fast_dumps, stdlib_dumps):
                monkeypatch.setattr(encode, "fast_dumps", dumps)
                src = Source(replace(settings.mysql, driver=driver))
                try:
                    rows = list(src.listings(DOCS_QUERY, ids, json_columns=["doc", "arr", "agg"]))
                finally:
                    src.close()
                monkeypatch.undo()
                outputs.append(rows)
    assert all(rows == outputs[0] for rows in outputs[1:])
    for (product_id, listing), (value, _) in zip(outputs[0], docs, strict=True):
        assert isinstance(listing, bytes)
        decoded = json.loads(listing)
        assert (decoded["doc"], decoded["arr"]) == (value, [product_id, "x"])
        assert [item["n"] for item in decoded["agg"]] == list(range(1, product_id + 1))
