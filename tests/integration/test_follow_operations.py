"""`follow` as operators run it: start-up refusals, a lost position, status and metrics,
restarts of MariaDB and Redis, and giving up after `max_outage`.

Split from test_follow.py (what the follower invalidates) so the two run side by side.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import seed as shop_seed
import servers
from pymysql.connections import Connection

from cachewarm.binlog import checkpoint, follow
from cachewarm.binlog.server import default_server_id
from cachewarm.config import Settings, load_settings
from cachewarm.errors import BinlogUnfit, ConfigError, LockHeld, LostPosition, SourceError
from cachewarm.keys import Keys
from tests.helpers import (
    MakeConfig,
    cachewarm,
    one_line,
    start,
    wait_for,
)
from tests.integration.test_follow import (
    GONE_WITHIN_S,
    PRODUCTS,
    _one,
    _root,
    _slot_states,
    cached_hot_ids,
    db,
    following,
    gone,
    keys_of,
    make_config,
    settings,
    shop,
    sql,
    state,
)

__all__ = ["db", "make_config", "settings", "shop"]  # the binlog shop's fixtures, used here too


def _stamped(client: redis.Redis, keys: Keys, ids: list[int]) -> Callable[[], bool]:
    """On a Redis that started empty and that no warm touches: every id was invalidated."""
    return lambda: None not in _slot_states(client, keys, ids)


# --- 4. lost position ---------------------------------------------------------------------


def test_purged_checkpoint_is_a_clear_error_and_resync_recovers(
    settings: Settings, db: Connection, redis_client: redis.Redis
) -> None:
    ids = cached_hot_ids(settings, redis_client, 3)
    with following(settings, from_now=True):
        pass
    old = state(settings)["position"]
    sql(db, "UPDATE products SET price = price + 1 WHERE id = %s", (ids[0],))  # missed
    sql(db, "FLUSH BINARY LOGS")
    # The server will not purge a file a binlog dump thread still reads.
    wait_for("the stopped follower's dump thread to end", lambda: not _dump_threads(db))
    with db.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        current = _one(cur)

    def purged() -> bool:
        # MariaDB keeps a file until InnoDB has checkpointed its transactions: retry.
        with db.cursor() as cur:
            cur.execute("PURGE BINARY LOGS TO %s", (current,))
            cur.execute("SHOW BINARY LOGS")
            return old["file"] not in {row[0] for row in cur.fetchall()}

    wait_for("the old binlog to be purged", purged)
    done = cachewarm("--config", settings.source, "follow")
    assert done.returncode == 1
    line = one_line(done.stderr)
    assert f"{old['file']}:{old['pos']}" in line and "--resync" in line
    with pytest.raises(LostPosition):
        follow.follow(settings)
    assert state(settings)["last_error"], "status should show why the follower stopped"
    # The missed edit's listing was never invalidated; --resync drops every listing.
    assert redis_client.exists(keys_of(settings).product(ids[0])) == 1
    with following(settings, resync=True):
        assert gone(redis_client, settings, *ids)()
        sql(db, "UPDATE products SET price = price + 1 WHERE id = %s", (ids[1],))
    assert state(settings)["position"]["file"] == current
    with following(settings):  # resumes from the checkpoint --resync saved
        wait_for("the edit after --resync applied", gone(redis_client, settings, ids[1]))


def _dump_threads(conn: Connection) -> list[Any]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'"
        )
        return list(cur.fetchall())


def test_checkpoint_from_another_server_is_a_lost_position(settings: Settings) -> None:
    with following(settings, from_now=True):
        pass
    saved = state(settings)
    checkpoint.save_state(
        settings.follow_checkpoint, {**saved, "server_id": saved["server_id"] + 1}
    )
    with pytest.raises(LostPosition, match=r"server_id .*--resync"):
        follow.follow(settings)


def test_first_start_needs_a_flag_and_from_now_will_not_skip_a_checkpoint(
    settings: Settings,
) -> None:
    done = cachewarm("--config", settings.source, "follow")
    assert done.returncode == 2
    assert "--from-now" in one_line(done.stderr)
    with following(settings, from_now=True):
        pass
    with pytest.raises(ConfigError, match="--resync"):
        follow.follow(settings, from_now=True)


# --- 5. preconditions ---------------------------------------------------------------------


def test_binlog_off_is_a_one_line_error(make_config: MakeConfig, shop_db: Any) -> None:
    """The suite's ordinary MariaDB (mysql_url) runs with --skip-log-bin."""
    done = cachewarm("--config", str(make_config(mysql_url=shop_db.url)), "follow", "--from-now")
    assert done.returncode == 2
    assert "binary log is off" in one_line(done.stderr)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("binlog_format", "STATEMENT"),
        ("binlog_row_image", "MINIMAL"),
        ("binlog_row_metadata", "MINIMAL"),
        ("log_bin_compress", "ON"),
    ],
)
def test_unfit_binlog_settings_are_one_line_errors(
    settings: Settings, binlog_server: servers.Server, variable: str, value: str
) -> None:
    conn = _root(binlog_server)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT @@GLOBAL.{variable}")
            before = _one(cur)
            cur.execute(f"SET GLOBAL {variable} = %s", (value,))
        try:
            done = cachewarm("--config", settings.source, "follow", "--from-now")
        finally:
            with conn.cursor() as cur:
                cur.execute(f"SET GLOBAL {variable} = %s", (before,))
    finally:
        conn.close()
    assert done.returncode == 2
    assert f"{variable}={value}" in one_line(done.stderr)


@pytest.mark.parametrize(
    ("grants", "missing"),
    [
        ("SELECT ON *.*", "REPLICATION SLAVE"),
        ("SELECT, REPLICATION SLAVE ADMIN, BINLOG MONITOR ON *.*", "REPLICATION SLAVE"),
        ("SELECT, REPLICATION SLAVE ON *.*", "REPLICATION CLIENT"),
        ("REPLICATION SLAVE, REPLICATION CLIENT ON *.*", "SELECT"),
    ],
)
def test_missing_grants_are_one_line_errors(
    make_config: MakeConfig, binlog_server: servers.Server, grants: str, missing: str
) -> None:
    user = f"cwf_{secrets.token_hex(4)}"
    conn = _root(binlog_server)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'pw-{user}'")
            cur.execute(f"GRANT {grants} TO '{user}'@'%'")
        url = load_settings(make_config(), env={}).mysql.url.replace("root@", f"{user}@")
        config = make_config(mysql_url=url)
        done = cachewarm(
            "--config",
            str(config),
            "follow",
            "--from-now",
            env={"CACHEWARM_MYSQL_PASSWORD": f"pw-{user}"},
        )
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP USER '{user}'@'%'")
        conn.close()
    assert done.returncode == 2, done.stderr
    line = one_line(done.stderr)
    assert missing in line
    assert f"pw-{user}" not in line


def test_follower_server_id_must_differ_from_the_servers(make_config: MakeConfig) -> None:
    done = cachewarm("--config", str(make_config(server_id=1)), "follow", "--from-now")
    assert done.returncode == 2
    assert "server_id" in one_line(done.stderr)


def test_default_server_id_is_stable_and_in_the_upper_half() -> None:
    first = default_server_id("shop", 1)
    assert first == default_server_id("shop", 1)
    assert first != default_server_id("shop", 2)
    assert 2**31 <= first < 2**32


def test_follow_without_a_mapping_is_a_config_error(make_config: MakeConfig) -> None:
    s = load_settings(
        make_config(), env={"CACHEWARM_FOLLOW_TABLES": "{}", "CACHEWARM_FOLLOW_QUERIES": "{}"}
    )
    with pytest.raises(ConfigError, match=r"\[follow\] sets neither"):
        follow.follow(s)


def test_query_without_ids_placeholder_is_a_config_error(make_config: MakeConfig) -> None:
    s = load_settings(make_config(queries={"categories": "SELECT 1"}), env={})
    with pytest.raises(ConfigError, match="%\\(ids\\)s"):
        follow.follow(s)


def test_broken_mapping_query_fails_at_start_naming_it(make_config: MakeConfig) -> None:
    bad = {"categories": "SELECT nope FROM products WHERE category_id IN %(ids)s"}
    s = load_settings(make_config(queries=bad), env={})
    with pytest.raises(SourceError, match=r"\[follow\] queries\.categories: .*nope"):
        follow.follow(s, from_now=True)


def test_mapping_from_the_environment_must_be_a_json_object(make_config: MakeConfig) -> None:
    with pytest.raises(ConfigError, match="CACHEWARM_FOLLOW_TABLES: expected a JSON object"):
        load_settings(make_config(), env={"CACHEWARM_FOLLOW_TABLES": "products=id"})
    s = load_settings(make_config(), env={"CACHEWARM_FOLLOW_TABLES": '{"products": "id"}'})
    assert s.follow.tables == {"products": "id"}


def test_unknown_mapping_column_names_the_table(make_config: MakeConfig) -> None:
    s = load_settings(make_config(tables={"products": "product_id"}), env={})
    with pytest.raises(BinlogUnfit, match="products has no column 'product_id'"):
        follow.follow(s, from_now=True)


def test_a_non_integer_mapping_column_is_refused_at_start(make_config: MakeConfig) -> None:
    s = load_settings(make_config(tables={"products": "sku"}), env={})
    with pytest.raises(BinlogUnfit, match=r"products\.sku is varchar; product ids must be an"):
        follow.follow(s, from_now=True)


# --- 6. operations ------------------------------------------------------------------------


def test_status_shows_the_follower_and_metrics_are_written(
    make_config: MakeConfig, db: Connection, redis_client: redis.Redis, tmp_path: Path
) -> None:
    metrics = tmp_path / "follow.prom"
    s = load_settings(make_config(metrics_textfile=str(metrics)), env={})
    (product,) = cached_hot_ids(s, redis_client, 1)
    with following(s, from_now=True):
        sql(db, "UPDATE products SET price = price + 1 WHERE id = %s", (product,))
        wait_for("the edit applied", gone(redis_client, s, product), GONE_WITHIN_S)
        with pytest.raises(LockHeld, match=r"follow\.json\.lock"):  # one follower at a time
            follow.follow(s)
        running = json.loads(cachewarm("--config", s.source, "status", "--json").stdout)
        assert running["follower"]["running"]["pid"] == os.getpid()
    done = cachewarm("--config", s.source, "status", "--json")
    assert done.returncode == 0, done.stderr
    follower = json.loads(done.stdout)["follower"]
    assert follower["running"] is None
    assert follower["position"]["file"].startswith("binlog.")
    assert follower["invalidated"] >= 1
    assert follower["last_error"] is None
    text = cachewarm("--config", s.source, "status").stdout
    assert "follower: stopped, at binlog." in text
    prom = metrics.read_text()
    assert "cachewarm_follow_invalidations_total{" in prom
    assert "cachewarm_follow_lag_seconds{" in prom


def test_reconnects_after_mysql_restarts_and_misses_nothing(
    make_config: MakeConfig, redis_client: redis.Redis, tmp_path: Path
) -> None:
    server = servers.start_mariadb(tmp_path / "own", server_id=2)
    try:
        url = f"{server.url}/shop"
        shop_seed.seed(url, PRODUCTS)
        s = load_settings(make_config(mysql_url=url, max_outage=60.0), env={})
        a, b, c = cached_hot_ids(s, redis_client, 3)
        with following(s, from_now=True):
            conn = shop_seed.connect(url, local_infile=False)
            try:  # the follower is streaming, so the kill breaks its connection
                sql(conn, "UPDATE products SET price = price + 1 WHERE id = %s", (c,))
            finally:
                conn.close()
            wait_for("the edit before the restart applied", gone(redis_client, s, c), 60)
            before = state(s)["position"]
            server.kill()
            server.start()
            conn = shop_seed.connect(url, local_infile=False)
            try:
                sql(conn, "UPDATE products SET price = price + 1 WHERE id IN (%s, %s)", (a, b))
            finally:
                conn.close()
            wait_for("the edit after the restart applied", gone(redis_client, s, a, b), 60)
        # Read across the restart, which began a new binlog file. Whether the break shows
        # as last_error depends on where it lands: the replication library reconnects on
        # its own when a read fails, and only a failure outside a read reaches the follower.
        assert state(s)["position"]["file"] > before["file"]
    finally:
        server.stop()


def test_reconnects_after_redis_restarts_and_misses_nothing(
    make_config: MakeConfig, db: Connection, redis_server: servers.Server
) -> None:
    s = load_settings(make_config(redis_url=redis_server.url, max_outage=60.0), env={})
    client = redis.Redis.from_url(redis_server.url)
    keys = keys_of(s)
    try:
        a, b = cached_hot_ids(s, client, 2)
        with following(s, from_now=True):
            redis_server.kill()
            sql(db, "UPDATE products SET price = price + 1 WHERE id = %s", (a,))
            wait_for("the follower to notice", lambda: state(s)["last_error"], 30)
            redis_server.start()  # empty: only a replayed invalidation can stamp `a` again
            sql(db, "UPDATE products SET price = price + 1 WHERE id = %s", (b,))
            wait_for("both edits applied after the restart", _stamped(client, keys, [a, b]), 60)
    finally:
        client.close()


def test_gives_up_after_max_outage_with_one_line(make_config: MakeConfig, tmp_path: Path) -> None:
    server = servers.start_mariadb(tmp_path / "own", server_id=3)
    try:
        url = f"{server.url}/shop"
        shop_seed.seed(url, 10)
        config = make_config(mysql_url=url, max_outage=1.0)
        proc = start("--config", str(config), "follow", "--from-now")
        checkpoint = load_settings(config, env={}).follow_checkpoint
        wait_for("the follower's first checkpoint", checkpoint.exists)
        server.kill()
        _, err = proc.communicate(timeout=60)
    finally:
        server.stop()
    assert proc.returncode == 1
    assert "[follow] max_outage" in err.splitlines()[-1]


def test_systemd_unit_runs_follow_and_restarts_on_failure() -> None:
    unit = (Path(__file__).parents[2] / "deploy" / "cachewarm-follow.service").read_text()
    assert "ExecStart=" in unit and " follow" in unit
    assert "Restart=on-failure" in unit
