"""`cachewarm follow` against a real MariaDB with a ROW binlog and a real Redis.

No test here calls `invalidate`: every listing that goes away was removed by the
follower reading the binlog.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
import redis
import seed as shop_seed
import servers
from pymysql.connections import Connection

import cachewarm as cw
from cachewarm.binlog import checkpoint, follow
from cachewarm.config import Settings, load_settings
from cachewarm.errors import BinlogUnfit
from cachewarm.keys import Keys, key_slot
from tests.helpers import (
    MakeConfig,
    running_listing_batches,
    slow_listing_query,
    stale_ids,
    start,
    wait_for,
    warming,
)

PRODUCTS = 200
GONE_WITHIN_S = 10  # generous for a loaded CI box; the latency itself is measured in bench/


def _root(server: servers.Server) -> Connection:
    return pymysql.connect(host=server.host, port=server.port, user="root", autocommit=True)


@pytest.fixture
def shop(binlog_server: servers.Server) -> Iterator[str]:
    """URL of a freshly seeded shop database on the binlog server."""
    name = f"cwtest_{secrets.token_hex(6)}"
    url = f"{binlog_server.url}/{name}"
    shop_seed.seed(url, PRODUCTS)
    try:
        yield url
    finally:
        conn = _root(binlog_server)
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


@pytest.fixture
def db(shop: str) -> Iterator[Connection]:
    conn = shop_seed.connect(shop, local_infile=False)
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture
def make_config(shop: str, redis_url: str, key_prefix: str, tmp_path: Path) -> MakeConfig:
    """A config for the binlog shop; keywords set [follow] keys, `warm_*` / `mysql_*` others."""

    def make(**overrides: object) -> Path:
        sections: dict[str, dict[str, object]] = {
            "mysql": {"url": shop},
            "redis": {"url": redis_url},
            "warm": {
                "hot_query": shop_seed.HOT_QUERY,
                "listing_query": shop_seed.LISTING_QUERY,
                "batch_size": 64,
            },
            "keys": {"prefix": key_prefix},
            "run": {"lockfile": str(tmp_path / "cw.lock"), "log": str(tmp_path / "runs.jsonl")},
            "follow": {
                "tables": {"products": "id"},
                "queries": {"categories": "SELECT id FROM products WHERE category_id IN %(ids)s"},
                "checkpoint": str(tmp_path / "follow.json"),
            },
        }
        for name, value in overrides.items():
            section, _, key = name.partition("_")
            if section in ("warm", "mysql", "redis", "run", "keys") and key:
                sections[section][key] = value
            else:
                sections["follow"][name] = value
        path = tmp_path / f"cachewarm-{secrets.token_hex(3)}.toml"
        path.write_text("".join(_section(n, v) for n, v in sections.items()), encoding="utf-8")
        return path

    return make


def _section(name: str, values: dict[str, object]) -> str:
    def value(v: object) -> str:
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{json.dumps(k)} = {value(x)}" for k, x in v.items()) + " }"
        if isinstance(v, bool):
            return "true" if v else "false"
        return repr(v) if isinstance(v, int | float) else json.dumps(v)

    return f"[{name}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in values.items())


@pytest.fixture
def settings(make_config: MakeConfig) -> Settings:
    return load_settings(make_config(), env={})


@contextlib.contextmanager
def following(s: Settings, **kwargs: Any) -> Iterator[threading.Event]:
    """Run the follower in a thread until the block ends; its error fails the test."""
    stop = threading.Event()
    outcome: dict[str, BaseException] = {}
    started = s.follow_checkpoint.stat().st_mtime_ns if s.follow_checkpoint.exists() else 0

    def run() -> None:
        try:
            follow.follow(s, stop=stop, **kwargs)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="follower")
    thread.start()
    try:
        wait_for(
            "the follower to save its starting checkpoint",
            lambda: (
                "error" in outcome
                or (
                    s.follow_checkpoint.exists()
                    and s.follow_checkpoint.stat().st_mtime_ns != started
                )
            ),
        )
        yield stop
    finally:
        stop.set()
        thread.join(timeout=30)
        if "error" in outcome:  # the likelier cause of whatever failed in the block
            raise outcome["error"]
    assert not thread.is_alive(), "the follower did not stop"


def keys_of(s: Settings) -> Keys:
    return Keys(s.keys.prefix, s.keys.version)


def cached_hot_ids(s: Settings, client: redis.Redis, n: int) -> list[int]:
    """Warm, then the first n hot ids that have a listing in Redis."""
    cw.warm(s)
    hot = json.loads(client.get(keys_of(s).hot) or b"[]")
    assert len(hot) >= n
    return [int(i) for i in hot[:n]]


def gone(client: redis.Redis, s: Settings, *ids: int) -> Callable[[], bool]:
    return lambda: client.exists(*(keys_of(s).product(i) for i in ids)) == 0


def sql(conn: Connection, statement: str, args: object = None) -> None:
    with conn.cursor() as cur:
        cur.execute(statement, args)


def _one(cur: Any) -> Any:
    row = cur.fetchone()
    assert row is not None
    return row[0]


def state(s: Settings) -> dict[str, Any]:
    data = checkpoint.load_state(s.follow_checkpoint)
    assert data is not None
    return data


# --- 1. edits anywhere invalidate ---------------------------------------------------------


def test_update_insert_and_delete_invalidate_with_no_invalidate_call(
    settings: Settings, db: Connection, redis_client: redis.Redis
) -> None:
    updated, deleted = cached_hot_ids(settings, redis_client, 2)
    new_id = 10_000  # a product not in MySQL yet, whose (negative) listing a reader cached
    keys = keys_of(settings)
    redis_client.set(keys.product(new_id), b'{"missing": true}')
    with following(settings, from_now=True):
        sql(db, "UPDATE products SET price = price + 1 WHERE id = %s", (updated,))
        wait_for("the updated listing to go", gone(redis_client, settings, updated), GONE_WITHIN_S)
        sql(
            db,
            "INSERT INTO products (id, sku, name, price, category_id) "
            "VALUES (%s, 'NEW', 'new', 1.00, 1)",
            (new_id,),
        )
        wait_for("the inserted listing to go", gone(redis_client, settings, new_id), GONE_WITHIN_S)
        sql(db, "DELETE FROM products WHERE id = %s", (deleted,))
        wait_for("the deleted listing to go", gone(redis_client, settings, deleted), GONE_WITHIN_S)
    untouched = json.loads(redis_client.get(keys.hot) or b"[]")[2:]
    assert redis_client.exists(*(keys.product(i) for i in untouched)) == len(untouched)
    saved = state(settings)
    assert saved["invalidated"] >= 3
    assert saved["position"]["gtid"]


def test_rewarm_refills_the_listing_with_the_new_row(
    settings: Settings, db: Connection, redis_client: redis.Redis
) -> None:
    (product,) = cached_hot_ids(settings, redis_client, 1)
    key = keys_of(settings).product(product)
    with following(settings, from_now=True, rewarm=True):
        sql(db, "UPDATE products SET name = 'renamed' WHERE id = %s", (product,))
        wait_for(
            "the listing to be refilled",
            lambda: json.loads(redis_client.get(key) or b"{}").get("name") == "renamed",
            GONE_WITHIN_S,
        )


def test_category_change_invalidates_every_product_in_it_through_queries(
    settings: Settings, db: Connection, redis_client: redis.Redis
) -> None:
    cached_hot_ids(settings, redis_client, 1)
    keys = keys_of(settings)
    cached = [keys.product_id(k.decode()) for k in redis_client.scan_iter(keys.product_pattern)]
    with db.cursor() as cur:
        cur.execute("SELECT category_id, COUNT(*) FROM products GROUP BY 1 ORDER BY 2 DESC")
        category = _one(cur)
        cur.execute("SELECT id FROM products WHERE category_id = %s", (category,))
        members = {int(r[0]) for r in cur.fetchall()}
    in_category = [i for i in cached if i in members]
    elsewhere = [i for i in cached if i not in members]
    assert in_category and elsewhere
    with following(settings, from_now=True):
        sql(db, "UPDATE categories SET name = 'Renamed' WHERE id = %s", (category,))
        wait_for(
            "every listing of the category to go",
            gone(redis_client, settings, *in_category),
            GONE_WITHIN_S,
        )
    assert redis_client.exists(*(keys.product(i) for i in elsewhere)) == len(elsewhere)


def test_other_tables_are_filtered_out_by_the_reader(
    settings: Settings, db: Connection, redis_client: redis.Redis
) -> None:
    (product,) = cached_hot_ids(settings, redis_client, 1)
    with following(settings, from_now=True):
        sql(db, "UPDATE order_lines SET qty = qty + 1 WHERE product_id = %s", (product,))
        sql(db, "UPDATE products SET price = price + 1 WHERE id = %s", (product,))
        wait_for("the product edit applied", gone(redis_client, settings, product), GONE_WITHIN_S)
    assert state(settings)["events"] == 1, "only the products row is a watched row event"


def test_a_product_moved_between_categories_is_invalidated_once_by_both_images(
    settings: Settings, db: Connection, redis_client: redis.Redis
) -> None:
    """product_badges-style mapping: the old and the new row's product id both count."""
    a, b = cached_hot_ids(settings, redis_client, 2)
    sql(db, "CREATE TABLE product_badges (id INT PRIMARY KEY, product_id BIGINT UNSIGNED)")
    sql(db, "INSERT INTO product_badges VALUES (1, %s)", (a,))
    s = load_settings(
        _config_with(settings, tables={"products": "id", "product_badges": "product_id"}), env={}
    )
    with following(s, from_now=True):
        sql(db, "UPDATE product_badges SET product_id = %s WHERE id = 1", (b,))
        wait_for("both listings to go", gone(redis_client, s, a, b), GONE_WITHIN_S)


def test_a_renamed_mapping_column_stops_the_follower_before_the_edit(
    settings: Settings, db: Connection, redis_client: redis.Redis
) -> None:
    (product,) = cached_hot_ids(settings, redis_client, 1)
    sql(db, "CREATE TABLE product_badges (id INT PRIMARY KEY, product_id BIGINT UNSIGNED)")
    s = load_settings(
        _config_with(settings, tables={"products": "id", "product_badges": "product_id"}), env={}
    )
    before: list[Any] = []

    def alter_while_following() -> None:
        with following(s, from_now=True):
            sql(db, "ALTER TABLE product_badges CHANGE product_id item_id BIGINT UNSIGNED")
            with db.cursor() as cur:
                cur.execute("SHOW MASTER STATUS")
                before.extend((cur.fetchone() or ())[:2])
            sql(db, "INSERT INTO product_badges VALUES (1, %s)", (product,))
            wait_for("the follower to stop on the altered table", lambda: state(s)["last_error"])

    with pytest.raises(BinlogUnfit, match=r"product_badges have no column 'product_id'"):
        alter_while_following()
    saved = state(s)["position"]
    assert (saved["file"], saved["pos"]) <= tuple(before), "checkpoint moved past the insert"
    assert state(s)["last_change"] == f"ALTER of {s.mysql.url.rpartition('/')[2]}.product_badges"


def _config_with(s: Settings, **follow_keys: object) -> Path:
    """The same config file with some [follow] keys replaced."""
    path = Path(s.source)
    text = path.read_text()
    for key, value in follow_keys.items():
        lines = [ln for ln in text.splitlines() if not ln.startswith(f"{key} =")]
        text = "\n".join(lines) + "\n" + _section("x", {key: value}).split("\n", 1)[1]
    out = path.with_name(f"edited-{secrets.token_hex(3)}.toml")
    out.write_text(text)
    return out


# --- 2. the guard: an edit during an in-flight warm ---------------------------------------


def test_edit_during_an_in_flight_warm_leaves_no_stale_listing(
    make_config: MakeConfig, db: Connection, redis_client: redis.Redis
) -> None:
    slow = load_settings(
        # 10 batches of 4, 0.6 s each: room for the 4 attempts below to catch one in flight.
        make_config(warm_listing_query=slow_listing_query(0.15), warm_batch_size=4, warm_limit=40),
        env={},
    )
    follower = load_settings(make_config(), env={})
    keys = keys_of(slow)
    raced: list[int] = []
    with following(follower, from_now=True), warming(slow, join_s=60) as warm:
        for _ in range(4):
            batches: list[tuple[int, list[int]]] = []

            def reading(found: list[tuple[int, list[int]]] = batches) -> bool:
                found[:] = [b for b in running_listing_batches(db) if b[0] >= 100]
                return bool(found)

            wait_for("a listing query in flight", lambda: reading() or not warm.is_alive())
            if not batches:
                break
            ids = batches[0][1]
            invalidated = _invalidated_since(redis_client, keys, ids)
            sql(db, "UPDATE products SET name = CONCAT('edited ', id) WHERE id IN %s", (ids,))
            # The follower invalidates on its own; catch it while the read still runs.
            wait_for("the follower to invalidate", invalidated)
            if any(b[1] == ids for b in running_listing_batches(db)):
                raced = ids
                break
    assert raced, "never caught a batch in flight; the race was not exercised"
    assert warm.result().skipped_invalidated >= len(raced)
    for product_id in raced:
        value = redis_client.get(keys.product(product_id))
        if value is not None:
            assert json.loads(value)["name"] == f"edited {product_id}", "stale listing written"


def _slot_states(client: redis.Redis, keys: Keys, ids: list[int]) -> list[bytes | None]:
    """The guard's state of each id's slot: every invalidation gives its slot a fresh one."""
    values = client.mget([keys.slot_state(key_slot(keys.product(i).encode())) for i in ids])
    return [v if isinstance(v, bytes) else None for v in values]


def _invalidated_since(client: redis.Redis, keys: Keys, ids: list[int]) -> Callable[[], bool]:
    """True once every id's slot state differs from what it is now."""
    before = _slot_states(client, keys, ids)
    return lambda: (
        all(
            b is None or a != b
            for a, b in zip(_slot_states(client, keys, ids), before, strict=True)
        )
        and None not in _slot_states(client, keys, ids)
    )


# --- 3. at least once: restarts, rotation, DDL --------------------------------------------


def test_kill_9_then_edits_then_restart_misses_nothing(
    settings: Settings, db: Connection, redis_client: redis.Redis
) -> None:
    ids = cached_hot_ids(settings, redis_client, 6)
    config = settings.source
    proc = start("--config", config, "follow", "--from-now")
    try:
        wait_for("the follower's first checkpoint", settings.follow_checkpoint.exists)
        sql(db, "UPDATE products SET price = price + 1 WHERE id = %s", (ids[0],))
        wait_for("the first edit applied", gone(redis_client, settings, ids[0]), GONE_WITHIN_S)
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    for product_id in ids[1:]:
        sql(db, "UPDATE products SET price = price + 1 WHERE id = %s", (product_id,))
    assert redis_client.exists(*(keys_of(settings).product(i) for i in ids[1:])) == 5
    proc = start("--config", config, "follow")
    try:
        wait_for("every edit while down applied", gone(redis_client, settings, *ids[1:]))
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def test_sigterm_applies_the_batch_and_saves_the_checkpoint(
    settings: Settings, db: Connection, redis_client: redis.Redis
) -> None:
    (product,) = cached_hot_ids(settings, redis_client, 1)
    proc = start("--config", settings.source, "follow", "--from-now")
    wait_for("the follower's first checkpoint", settings.follow_checkpoint.exists)
    sql(db, "UPDATE products SET price = price + 1 WHERE id = %s", (product,))
    with db.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        end = cur.fetchone()
    assert end is not None
    wait_for("the edit applied", gone(redis_client, settings, product), GONE_WITHIN_S)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    saved = state(settings)["position"]
    assert (saved["file"], saved["pos"]) >= (end[0], end[1])


def test_binlog_rotation_and_alter_table_while_following(
    settings: Settings, db: Connection, redis_client: redis.Redis
) -> None:
    a, b, c = cached_hot_ids(settings, redis_client, 3)
    with following(settings, from_now=True):
        first = state(settings)["position"]["file"]
        sql(db, "FLUSH BINARY LOGS")
        sql(db, "UPDATE products SET price = price + 1 WHERE id = %s", (a,))
        wait_for("the edit after rotation applied", gone(redis_client, settings, a), GONE_WITHIN_S)
        sql(db, "ALTER TABLE products ADD COLUMN note VARCHAR(20) NULL FIRST")
        sql(db, "UPDATE products SET note = 'x' WHERE id = %s", (b,))
        wait_for("the edit after ALTER applied", gone(redis_client, settings, b), GONE_WITHIN_S)
        sql(db, "ALTER TABLE products DROP COLUMN note")
        sql(db, "DELETE FROM products WHERE id = %s", (c,))
        wait_for("the delete after ALTER applied", gone(redis_client, settings, c), GONE_WITHIN_S)
    assert state(settings)["position"]["file"] > first


# --- 7. a replica for the warm's reads ----------------------------------------------------


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(primary URL, replica URL) of a seeded shop replicated by GTID."""
    base = tmp_path_factory.mktemp("replicated")
    primary = servers.start_mariadb(base / "primary", server_id=11)
    try:
        replica = servers.start_replica(base / "replica", primary, server_id=12)
        try:
            shop_seed.seed(f"{primary.url}/shop", PRODUCTS)
            yield f"{primary.url}/shop", f"{replica.url}/shop"
        finally:
            replica.stop()
    finally:
        primary.stop()


def _caught_up(primary: Connection, replica: Connection) -> None:
    with primary.cursor() as cur:
        cur.execute("SELECT @@GLOBAL.gtid_binlog_pos")
        position = _one(cur)
    with replica.cursor() as cur:
        cur.execute("SELECT MASTER_GTID_WAIT(%s, 30)", (position,))
        assert _one(cur) == 0


@pytest.fixture
def replica_pair(replicated: tuple[str, str]) -> Iterator[tuple[Connection, Connection]]:
    primary = shop_seed.connect(replicated[0], local_infile=False)
    replica = shop_seed.connect(replicated[1], local_infile=False)
    try:
        _caught_up(primary, replica)
        yield primary, replica
    finally:
        with replica.cursor() as cur:
            cur.execute("START SLAVE SQL_THREAD")
        primary.close()
        replica.close()


def test_warm_reads_listings_from_a_caught_up_replica(
    make_config: MakeConfig,
    replicated: tuple[str, str],
    replica_pair: tuple[Connection, Connection],
    redis_client: redis.Redis,
) -> None:
    _, replica = replica_pair
    s = load_settings(make_config(mysql_url=replicated[0], mysql_replica_url=replicated[1]), env={})
    (product,) = cached_hot_ids(s, redis_client, 1)
    sql(replica, "SET SESSION sql_log_bin = 0")
    sql(replica, "UPDATE products SET name = 'only on the replica' WHERE id = %s", (product,))
    try:
        cw.warm(s, full=True)
        listing = json.loads(redis_client.get(keys_of(s).product(product)) or b"{}")
        assert listing["name"] == "only on the replica"
    finally:
        sql(replica, "UPDATE products SET name = 'restored' WHERE id = %s", (product,))


def test_lagging_replica_never_refills_or_warms_an_old_row(
    make_config: MakeConfig,
    replicated: tuple[str, str],
    replica_pair: tuple[Connection, Connection],
    redis_client: redis.Redis,
) -> None:
    primary, replica = replica_pair
    s = load_settings(
        make_config(
            mysql_url=replicated[0],
            mysql_replica_url=replicated[1],
            mysql_replica_max_wait=0.2,
            rewarm=True,
        ),
        env={},
    )
    (product,) = cached_hot_ids(s, redis_client, 1)
    key = keys_of(s).product(product)
    sql(replica, "STOP SLAVE SQL_THREAD")
    with following(s, from_now=True):
        sql(primary, "UPDATE products SET name = 'fresh' WHERE id = %s", (product,))
        wait_for(
            "the follower's refill from the primary",
            lambda: json.loads(redis_client.get(key) or b"{}").get("name") == "fresh",
            GONE_WITHIN_S,
        )
    record = cw.warm(s, full=True)  # the replica still has the old name
    assert record.status == "ok"
    assert json.loads(redis_client.get(key) or b"{}")["name"] == "fresh"
    with replica.cursor() as cur:
        cur.execute("SELECT name FROM products WHERE id = %s", (product,))
        assert _one(cur) != "fresh", "the replica caught up: the lag was not exercised"


# --- changes without row events of their own: DDL, XA, cascades, settings, visibility ---


def fresh_within(s: Settings, timeout: float = GONE_WITHIN_S) -> None:
    wait_for("every cached listing to equal a fresh read", lambda: not stale_ids(s), timeout)


# --- DDL ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "statements",
    [
        ["ALTER TABLE products MODIFY price DECIMAL(10,0) NOT NULL"],
        ["/* nightly */ TRUNCATE TABLE `{db}`.`products`"],
        [
            "CREATE TABLE products_new LIKE products",
            "INSERT INTO products_new SELECT * FROM products",
            "UPDATE products_new SET name = CONCAT('swapped ', id)",
            "RENAME TABLE products TO products_old, products_new TO products",
        ],
        ["RENAME TABLE `{db}`.products TO `{db}`.products_old"],
    ],
    ids=["alter", "truncate", "rename-swap", "rename-away"],
)
@pytest.mark.slow
def test_ddl_of_a_watched_table_invalidates_every_listing_it_feeds(
    settings: Settings, db: Connection, redis_client: redis.Redis, statements: list[str]
) -> None:
    cw.warm(settings)
    assert not stale_ids(settings)
    name = settings.mysql.url.rpartition("/")[2]
    with following(settings, from_now=True):
        for statement in statements:
            sql(db, statement.format(db=name))
        verb = statements[-1].split("*/")[-1].split()[0].upper()
        wait_for(  # a swap's CREATE already invalidates: wait for the last statement
            f"the follower to apply the {verb}",
            lambda: str(state(settings)["last_change"]).startswith(verb),
            GONE_WITHIN_S,
        )
        if "products_new" not in statements[-1]:  # no products table to compare with
            wait_for(
                "every listing gone",
                lambda: not list(redis_client.scan_iter(keys_of(settings).product_pattern)),
                GONE_WITHIN_S,
            )
        else:
            fresh_within(settings)
    assert f"{name}.products" in state(settings)["last_change"]


def test_drop_of_a_watched_table_invalidates_every_listing(
    settings: Settings, db: Connection, redis_client: redis.Redis
) -> None:
    cw.warm(settings)
    with following(settings, from_now=True):
        sql(db, "DROP TABLE IF EXISTS order_lines, PRODUCTS")
        wait_for(
            "every listing gone",
            lambda: not list(redis_client.scan_iter(keys_of(settings).product_pattern)),
            GONE_WITHIN_S,
        )
    assert state(settings)["last_change"].startswith("DROP")


# --- XA -------------------------------------------------------------------------------------


def test_xa_commit_invalidates_again_after_a_warm_between_prepare_and_commit(
    make_config: MakeConfig, db: Connection, redis_client: redis.Redis
) -> None:
    s = load_settings(make_config(reinvalidate_after=0.0), env={})  # the XA COMMIT alone
    (product,) = cached_hot_ids(s, redis_client, 1)
    with following(s, from_now=True):
        sql(db, "XA START 'cw1'")
        sql(db, "UPDATE products SET name = 'edited in XA' WHERE id = %s", (product,))
        sql(db, "XA END 'cw1'")
        sql(db, "XA PREPARE 'cw1'")
        wait_for("the invalidation at XA PREPARE", gone(redis_client, s, product), GONE_WITHIN_S)
        cw.warm(s)  # reads the row as it was: the prepared edit is not committed yet
        assert redis_client.exists(keys_of(s).product(product))
        sql(db, "XA COMMIT 'cw1'")
        fresh_within(s)


# --- foreign keys ---------------------------------------------------------------------------


def test_a_cascading_foreign_key_into_a_watched_table_invalidates_its_listings(
    make_config: MakeConfig, db: Connection, redis_client: redis.Redis
) -> None:
    sql(
        db,
        "ALTER TABLE products ADD CONSTRAINT cw_category FOREIGN KEY (category_id) "
        "REFERENCES categories (id) ON DELETE CASCADE ON UPDATE CASCADE",
    )
    s = load_settings(make_config(), env={})
    (product,) = cached_hot_ids(s, redis_client, 1)
    with db.cursor() as cur:
        cur.execute("SELECT category_id FROM products WHERE id = %s", (product,))
        row = cur.fetchone()
    assert row is not None
    with following(s, from_now=True):
        sql(db, "DELETE FROM categories WHERE id = %s", (row[0],))  # its products go too
        fresh_within(s)
    assert not redis_client.exists(keys_of(s).product(product))


# --- binlog settings changed while following -------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "value", "scope"),
    [
        ("binlog_format", "STATEMENT", "SESSION"),
        ("binlog_format", "MIXED", "GLOBAL"),
        ("binlog_row_image", "MINIMAL", "SESSION"),
        ("binlog_row_metadata", "MINIMAL", "GLOBAL"),
        ("log_bin_compress", "ON", "GLOBAL"),
    ],
)
@pytest.mark.slow
def test_a_binlog_setting_changed_while_following_stops_with_one_line_naming_it(
    settings: Settings, db: Connection, setting: str, value: str, scope: str
) -> None:
    with db.cursor() as cur:
        cur.execute(f"SELECT @@GLOBAL.{setting}")
        row = cur.fetchone()
    assert row is not None
    opened: list[Connection] = []

    def change_while_following() -> None:
        with following(settings, from_now=True):
            sql(db, f"SET {scope} {setting} = {value}")
            edits = db
            if scope == "GLOBAL":  # a global binlog_format applies to sessions opened after it
                edits = shop_seed.connect(settings.mysql.url, local_infile=False)
                opened.append(edits)
            sql(edits, "UPDATE products SET description = REPEAT('z', 2000) WHERE id = 1")
            wait_for("the follower to stop", lambda: state(settings)["last_error"])

    try:
        with pytest.raises(BinlogUnfit) as caught:
            change_while_following()
    finally:
        sql(db, f"SET GLOBAL {setting} = %s", (row[0],))
        for conn in opened:
            conn.close()
    message = str(caught.value)
    assert "\n" not in message and setting in message and "--resync" in message, message
    assert caught.value.exit_code == 2
    assert state(settings)["last_error"] == message


# --- the commit-visibility window -----------------------------------------------------------


def test_every_invalidation_is_repeated_after_reinvalidate_after(
    make_config: MakeConfig, db: Connection, redis_client: redis.Redis
) -> None:
    s = load_settings(make_config(reinvalidate_after=1.5), env={})
    (product,) = cached_hot_ids(s, redis_client, 1)
    key = keys_of(s).product(product)
    with following(s, from_now=True):
        sql(db, "UPDATE products SET name = 'edited' WHERE id = %s", (product,))
        wait_for("the first invalidation", gone(redis_client, s, product), GONE_WITHIN_S)
        first = time.monotonic()
        # what a warm reading in the window between the binlog write and the commit
        # becoming visible would write back: the row as it was
        redis_client.set(key, b"the old row")
        wait_for("the second invalidation", gone(redis_client, s, product), GONE_WITHIN_S)
        assert time.monotonic() - first >= 1.0
