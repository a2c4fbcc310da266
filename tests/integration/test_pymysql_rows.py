"""PyMySQL's inline row reader and the listing query sent ahead, on a real server.

Same listing bytes with stock PyMySQL, with and without sending ahead; an error packet
in the middle of a result (the server's statement bound) still ends the run as a
deadline; a result left unread is not mistaken for the next one's.
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


def listings(
    shop_db: ShopDB, ids: list[int], then: list[int] | None = None
) -> dict[int, bytes | InvalidJSON]:
    """Listings by id (rows come in the server's order, not the batch's)."""
    src = Source(MySQLSettings(url=shop_db.url, driver="pymysql"))
    try:
        found = dict(src.listings(shop_seed.LISTING_QUERY, ids, then=then))
        if then is not None:
            found.update(src.listings(shop_seed.LISTING_QUERY, then))
        return found
    finally:
        src.close()


def test_the_inline_reader_is_used_with_this_pymysql() -> None:
    """A PyMySQL upgrade that changes the internals it needs must not go unnoticed."""
    assert tuple(pymysql.VERSION[:2]) in pymysql_rows.VERSIONS
    assert pymysql_rows.FAST


def test_stock_pymysql_gives_the_same_listings(
    shop_db: ShopDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    inline = listings(shop_db, IDS[:120], then=IDS[120:])
    with monkeypatch.context() as patch:
        patch.setattr(pymysql_rows, "CONNECT", pymysql.connect)
        patch.setattr(pymysql_rows, "FAST", False)
        stock = listings(shop_db, IDS[:120], then=IDS[120:])
    assert len(inline) == 200
    assert inline == stock == listings(shop_db, IDS)


def test_a_result_sent_ahead_and_not_read_is_skipped(shop_db: ShopDB) -> None:
    src = Source(MySQLSettings(url=shop_db.url, driver="pymysql"))
    try:
        first = list(src.listings(shop_seed.LISTING_QUERY, IDS[:5], then=IDS[5:10]))
        other = list(src.listings(shop_seed.LISTING_QUERY, IDS[100:103]))
        assert [i for i, _ in first] == IDS[:5]
        assert [i for i, _ in other] == IDS[100:103]
        assert src.server_now()  # the connection is in step
    finally:
        src.close()


@pytest.mark.parametrize("ahead", [False, True])
def test_statement_bound_mid_result_is_a_deadline(shop_db: ShopDB, ahead: bool) -> None:
    """Rows trickle out (SLEEP per row) until the server's bound kills the statement."""
    query = "SELECT p.id, SLEEP(0.01) AS s FROM products p WHERE p.id IN %(ids)s"
    src = Source(MySQLSettings(url=shop_db.url, driver="pymysql"), deadline=time.monotonic())
    try:
        if ahead:  # one quick row; the slow query goes out after it
            assert len(list(src.listings(query, IDS[:1], then=IDS))) == 1
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
