"""Fixtures backed by real MariaDB and Redis servers, and the config factories over them.

By default each test session (each pytest-xdist worker is one) starts its own throwaway
servers on free ports (about 1 s), the first time a test asks for one, and stops them at
the end. Set CACHEWARM_TEST_MYSQL_URL / CACHEWARM_TEST_REDIS_URL (e.g. from
`scripts/servers.py up`) to reuse running ones; tests then only create `cwtest_*`
databases and `cwtest-*` keys, which they remove again, so a shared server is never
flushed.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import redis
import seed as shop_seed  # scripts/seed.py -> examples/seed.py
import servers
from pymysql.connections import Connection

from cachewarm.config import SECTIONS, load_settings
from tests.helpers import SHOP_PRODUCTS, MakeConfig, MakeSettings, ShopDB


def _server_url(env: str, start: Callable[[Path], servers.Server], tmp: Path) -> Iterator[str]:
    configured = os.environ.get(env)
    if configured:
        yield configured.rstrip("/")
        return
    server = start(tmp)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mysql_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Server-level URL (no database) with rights to create and drop databases."""
    yield from _server_url(
        "CACHEWARM_TEST_MYSQL_URL", servers.start_mariadb, tmp_path_factory.mktemp("mariadb")
    )


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """redis:// URL of a server the tests may write `cwtest-*` keys to."""
    yield from _server_url(
        "CACHEWARM_TEST_REDIS_URL", servers.start_redis, tmp_path_factory.mktemp("redis")
    )


@contextlib.contextmanager
def seeded_database(mysql_url: str, products: int, **seed_options: Any) -> Iterator[ShopDB]:
    """A uniquely named sample-shop database, dropped again afterwards."""
    name = f"cwtest_{secrets.token_hex(6)}"
    shop = ShopDB(name=name, url=f"{mysql_url}/{name}")
    try:
        shop_seed.seed(shop.url, products, **seed_options)
        yield shop
    finally:
        _drop_database(mysql_url, name)


def _drop_database(mysql_url: str, name: str) -> None:
    conn = shop_seed.connect(mysql_url, server_only=True, local_infile=False)
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {shop_seed.quote_ident(name)}")
    finally:
        conn.close()


def _fingerprint(shop: ShopDB) -> tuple[object, ...]:
    """What a write could change: the tables, views and triggers, and every table's rows."""
    conn = shop.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES "
                "WHERE TABLE_SCHEMA = %s ORDER BY TABLE_NAME",
                (shop.name,),
            )
            tables = tuple(cur.fetchall())
            cur.execute(
                "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS "
                "WHERE TRIGGER_SCHEMA = %s ORDER BY TRIGGER_NAME",
                (shop.name,),
            )
            triggers = tuple(cur.fetchall())
            names = ", ".join(
                shop_seed.quote_ident(t) for t, kind in tables if kind == "BASE TABLE"
            )
            cur.execute(f"CHECKSUM TABLE {names}")
            checksums = tuple(cur.fetchall())
    finally:
        conn.close()
    return tables, triggers, checksums


class SharedShop:
    """One seeded database for every test that only reads MySQL, checked after each test.

    A test that changed it fails, and the database is seeded again so that no later test
    sees the change. It is also seeded again once it is older than RESEED_AFTER_S: the
    seed's recent order lines stay inside the hot query's one-day window for an hour.
    """

    RESEED_AFTER_S = 1800.0

    def __init__(self, mysql_url: str) -> None:
        self.mysql_url = mysql_url
        self.shop: ShopDB | None = None
        self.seeded_at = 0.0
        self.fingerprint: tuple[object, ...] = ()

    def fresh(self) -> ShopDB:
        """The shared database, as seeded: seeding it first if it is missing or too old."""
        if self.shop is None or time.monotonic() - self.seeded_at > self.RESEED_AFTER_S:
            self.drop()
            name = f"cwtest_shared_{secrets.token_hex(6)}"
            shop = ShopDB(name=name, url=f"{self.mysql_url}/{name}")
            shop_seed.seed(shop.url, SHOP_PRODUCTS)
            self.shop, self.seeded_at = shop, time.monotonic()
            self.fingerprint = _fingerprint(shop)
        return self.shop

    def unchanged(self) -> bool:
        """Whether the database is as seeded; if not, it is dropped (seeded again on use)."""
        if self.shop is None:
            return True
        if _fingerprint(self.shop) == self.fingerprint:
            return True
        self.drop()
        return False

    def drop(self) -> None:
        if self.shop is not None:
            _drop_database(self.mysql_url, self.shop.name)
            self.shop = None


@pytest.fixture(scope="session")
def shared_shop(mysql_url: str) -> Iterator[SharedShop]:
    """The session's read-only shop database (see SharedShop); dropped at the end."""
    shared = SharedShop(mysql_url)
    try:
        yield shared
    finally:
        shared.drop()


@pytest.fixture
def shop_db(request: pytest.FixtureRequest, mysql_url: str) -> Iterator[ShopDB]:
    """A database seeded with 200 products, as the sample shop has them.

    Shared by every test that only reads it, and verified unchanged after each. A test
    that writes MySQL (rows, tables, the seed itself) carries `@pytest.mark.writes_mysql`
    and gets a uniquely named database of its own, dropped afterwards.
    """
    if request.node.get_closest_marker("writes_mysql") is not None:
        with seeded_database(mysql_url, SHOP_PRODUCTS) as own:
            yield own
        return
    shared: SharedShop = request.getfixturevalue("shared_shop")
    yield shared.fresh()
    if not shared.unchanged():
        pytest.fail(
            f"{request.node.nodeid} changed the shared read-only shop database; "
            "mark it @pytest.mark.writes_mysql to give it a database of its own",
            pytrace=False,
        )


@pytest.fixture
def shop_conn(shop_db: ShopDB) -> Iterator[Connection]:
    """An autocommit connection to shop_db, closed afterwards."""
    conn = shop_db.connect()
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client for redis_url, closed afterwards."""
    client = redis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    """A unique key prefix; every `<prefix>:*` key is deleted afterwards (SCAN, no FLUSHDB)."""
    prefix = f"cwtest-{secrets.token_hex(6)}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        servers.delete_prefix(client, prefix)
    finally:
        client.close()


def _private(start: Callable[[Path], servers.Server], base_dir: Path) -> Iterator[servers.Server]:
    server = start(base_dir)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mariadb_server(tmp_path: Path) -> Iterator[servers.Server]:
    """A private MariaDB for fault injection (kill/restart) that no other test shares."""
    yield from _private(servers.start_mariadb, tmp_path / "mariadb")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[servers.Server]:
    """A private Redis for fault injection (kill/restart) that no other test shares."""
    yield from _private(servers.start_redis, tmp_path / "redis")


_FIELD_SECTIONS = {
    name: section for section, cls in SECTIONS.items() for name in (f.name for f in fields(cls))
}


def _toml_value(value: object) -> str:
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)


@pytest.fixture
def make_config(shop_db: ShopDB, redis_url: str, key_prefix: str, tmp_path: Path) -> MakeConfig:
    """Write a config file for shop_db, redis_url and key_prefix; keywords override keys.

    A keyword is a field name (`limit`, `version`) or `<section>_<field>` where the name
    alone is ambiguous (`mysql_url`, `redis_url`).
    """
    counter = itertools.count()

    def make(**overrides: object) -> Path:
        values: dict[str, dict[str, object]] = {
            "mysql": {"url": shop_db.url},
            "redis": {"url": redis_url},
            "warm": {
                "hot_query": shop_seed.HOT_QUERY,
                "listing_query": shop_seed.LISTING_QUERY,
                "ttl": 600,
                "batch_size": 64,
            },
            "keys": {"prefix": key_prefix},
            "run": {"lockfile": str(tmp_path / "cw.lock"), "log": str(tmp_path / "runs.jsonl")},
        }
        for name, value in overrides.items():
            section, _, field_name = name.partition("_")
            if section not in SECTIONS or field_name not in {
                f.name for f in fields(SECTIONS[section])
            }:
                section, field_name = _FIELD_SECTIONS[name], name
            values[section][field_name] = value
        text = "".join(
            f"[{section}]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in items.items())
            for section, items in values.items()
        )
        path = tmp_path / f"cachewarm-{next(counter)}.toml"
        path.write_text(text, encoding="utf-8")
        path.chmod(0o600)
        return path

    return make


@pytest.fixture
def redis_mode() -> str:
    """`[redis] mode` of the configs a test writes by hand; the cluster module overrides it."""
    return "single"


@pytest.fixture
def make_settings(make_config: MakeConfig) -> MakeSettings:
    """Settings loaded exactly as the CLI would load make_config's file."""
    return lambda **overrides: load_settings(make_config(**overrides), env={})


@pytest.fixture(scope="module")
def binlog_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.Server]:
    """A MariaDB with the binlog `follow` needs (ROW, FULL images and metadata), per module."""
    server = servers.start_mariadb(tmp_path_factory.mktemp("binlog") / "db", server_id=1)
    try:
        yield server
    finally:
        server.stop()
