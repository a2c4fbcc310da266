"""PyMySQL's inline row reader on a real server.

Same listing bytes as stock PyMySQL; an error packet in the middle of a result (the
server's statement bound) still ends the run as a deadline.
"""

from __future__ import annotations

import time

import pymysql
import pytest
import seed as shop_seed

import cachewarm
from cachewarm import pymysql_rows
from cachewarm.config import MySQLSettings
from cachewarm.encode import InvalidJSON
from cachewarm.errors import DeadlineExceeded
from cachewarm.source import Source
from tests.helpers import MakeSettings, ShopDB

IDS = list(range(1, 201))  # the shop fixture's products


def listings(shop_db: ShopDB, ids: list[int]) -> dict[int, bytes | InvalidJSON]:
    """Listings by id (rows come in the server's order, not the batch's)."""
    src = Source(MySQLSettings(url=shop_db.url, driver="pymysql"))
    try:
        return dict(src.listings(shop_seed.LISTING_QUERY, ids))
    finally:
        src.close()


def test_the_inline_reader_is_used_with_this_pymysql() -> None:
    """A PyMySQL upgrade that changes the internals it needs must not go unnoticed."""
    assert tuple(pymysql.VERSION[:2]) in pymysql_rows.VERSIONS
    assert pymysql_rows.FAST


def test_stock_pymysql_gives_the_same_listings(
    shop_db: ShopDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    inline = listings(shop_db, IDS)
    with monkeypatch.context() as patch:
        patch.setattr(pymysql_rows, "CONNECT", pymysql.connect)
        patch.setattr(pymysql_rows, "FAST", False)
        stock = listings(shop_db, IDS)
    assert len(inline) == 200
    assert inline == stock


def test_statement_bound_mid_result_is_a_deadline(shop_db: ShopDB) -> None:
    """Rows trickle out (SLEEP per row) until the server's bound kills the statement."""
    query = "SELECT p.id, SLEEP(0.01) AS s FROM products p WHERE p.id IN %(ids)s"
    src = Source(MySQLSettings(url=shop_db.url, driver="pymysql"), deadline=time.monotonic())
    try:
        with pytest.raises(DeadlineExceeded, match="stopped the listing query"):
            list(src.listings(query, IDS))
    finally:
        src.close()


def test_full_warm_through_the_stock_reader(
    make_settings: MakeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A whole run without the inline reader (an unknown PyMySQL) still warms everything."""
    monkeypatch.setattr(pymysql_rows, "CONNECT", pymysql.connect)
    monkeypatch.setattr(pymysql_rows, "FAST", False)
    s = make_settings(driver="pymysql", batch_size=7)
    record = cachewarm.warm(s)
    assert record.written == record.hot > 0
