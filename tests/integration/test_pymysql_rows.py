"""PyMySQL's inline row reader, and the listing query sent ahead with both drivers.

Same listing bytes with stock PyMySQL, and with and without sending ahead; the next
query really runs before it is asked for; an error in the middle of a result (the
server's statement bound) still ends the run as a deadline, a dropped connection as
one line; a result left unread is not mistaken for the next one's.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pymysql
import pytest
import seed as shop_seed
from pymysql.connections import Connection

import cachewarm
from cachewarm.config import Driver, MySQLSettings
from cachewarm.errors import DeadlineExceeded, SourceError
from cachewarm.mysql import driver_pymysql as pymysql_rows
from cachewarm.mysql.encode import InvalidJSON
from cachewarm.mysql.source import Ahead, Source
from cachewarm.pipeline import Reader
from cachewarm.runlog import RunRecord
from tests.helpers import Gate, MakeSettings, ShopDB, gate, kill_queries, wait_for

IDS = list(range(1, 201))  # the shop fixture's products
DRIVERS = ["pymysql", "mysqlclient"]


def listings(
    shop_db: ShopDB, ids: list[int], then: list[int] | None = None, driver: Driver = "pymysql"
) -> dict[int, bytes | InvalidJSON]:
    """Listings by id (rows come in the server's order, not the batch's)."""
    src = Source(MySQLSettings(url=shop_db.url, driver=driver))
    try:
        ahead = None if then is None else Ahead(then)
        found = dict(src.listings(shop_seed.LISTING_QUERY, ids, then=ahead))
        if ahead is not None:
            found.update(src.listings(shop_seed.LISTING_QUERY, ahead))
        return found
    finally:
        src.close()


def test_stock_pymysql_gives_the_same_listings(
    shop_db: ShopDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    inline = listings(shop_db, IDS[:120], then=IDS[120:])
    with monkeypatch.context() as patch:
        patch.setattr(pymysql_rows, "CONNECT", pymysql.connect)
        patch.setattr(pymysql_rows, "FAST", False)
        stock = listings(shop_db, IDS[:120], then=IDS[120:])
    assert len(inline) == 200
    assert inline == stock


@pytest.mark.parametrize("driver", DRIVERS)
def test_sending_ahead_gives_the_same_listings(shop_db: ShopDB, driver: Driver) -> None:
    ahead = listings(shop_db, IDS[:120], then=IDS[120:], driver=driver)
    assert len(ahead) == 200
    assert ahead == listings(shop_db, IDS, driver=driver) == listings(shop_db, IDS)


@contextlib.contextmanager
def sent_and_waiting(shop_db: ShopDB, shop_conn: Connection, driver: Driver) -> Iterator[Gate]:
    """The listing query of IDS[5:10] sent ahead, seen running and held on the server.

    Its rows past the first batch wait for the test's gate, so the query is still on
    the server when the test looks (and opens the gate, or drops the connection).
    """
    with gate(shop_conn) as held:
        query = (
            "SELECT p.id, p.name FROM products p WHERE p.id IN %(ids)s "
            f"AND IF(p.id <= 5, 1, GET_LOCK('{held.name}', 30)) = 1"
        )
        src = Source(MySQLSettings(url=shop_db.url, driver=driver))
        try:
            ahead = Ahead(IDS[5:10])
            first = list(src.listings(query, IDS[:5], then=ahead))
            assert [i for i, _ in first] == IDS[:5]
            wait_for("the next batch's query on the server", lambda: running(shop_conn, held))
            yield held
            assert [i for i, _ in src.listings(query, ahead)] == IDS[5:10]
        finally:
            src.close()


def running(conn: Connection, held: Gate) -> bool:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
            "WHERE INFO LIKE %s AND ID <> CONNECTION_ID()",
            (f"%{held.name}%",),
        )
        row = cur.fetchone()
    return row is not None and row[0] == 1


@pytest.mark.parametrize("driver", DRIVERS)
def test_the_next_listing_query_runs_before_it_is_asked_for(
    shop_db: ShopDB, shop_conn: Connection, driver: Driver
) -> None:
    with sent_and_waiting(shop_db, shop_conn, driver) as held:
        held.open()


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_connection_dropped_while_a_query_is_ahead_is_one_line(
    shop_db: ShopDB, shop_conn: Connection, driver: Driver
) -> None:
    with (
        pytest.raises(SourceError, match="listing query failed") as failed,
        sent_and_waiting(shop_db, shop_conn, driver) as held,
    ):
        kill_queries(shop_conn, held.name)
    assert "\n" not in str(failed.value)


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_result_sent_ahead_and_not_read_is_skipped(shop_db: ShopDB, driver: Driver) -> None:
    src = Source(MySQLSettings(url=shop_db.url, driver=driver))
    try:
        first = list(src.listings(shop_seed.LISTING_QUERY, IDS[:5], then=Ahead(IDS[5:10])))
        other = list(src.listings(shop_seed.LISTING_QUERY, IDS[100:103]))
        assert [i for i, _ in first] == IDS[:5]
        assert [i for i, _ in other] == IDS[100:103]
        assert src.server_now()  # the connection is in step
    finally:
        src.close()


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("ahead", [False, True])
def test_statement_bound_mid_result_is_a_deadline(
    shop_db: ShopDB, ahead: bool, driver: Driver
) -> None:
    """Rows trickle out (SLEEP per row) until the server's bound kills the statement."""
    query = "SELECT p.id, SLEEP(0.01) AS s FROM products p WHERE p.id IN %(ids)s"
    src = Source(MySQLSettings(url=shop_db.url, driver=driver), deadline=time.monotonic())
    try:
        batch: list[int] | Ahead = IDS
        if ahead:  # one quick row; the slow query goes out after it
            batch = Ahead(IDS)
            assert len(list(src.listings(query, IDS[:1], then=batch))) == 1
        with pytest.raises(DeadlineExceeded, match="stopped the listing query"):
            list(src.listings(query, batch))
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


class _Kept:
    """A batch target that only keeps what it is sent."""

    def __init__(self) -> None:
        self.items: list[tuple[int, bytes]] = []

    def mark(self) -> int:
        return 0

    def send(self, items: list[tuple[int, bytes]], mark: int | None = None) -> None:
        self.items += items


def _selects(src: Source) -> int:
    """SELECTs this connection has run (its own session's counter)."""
    _, rows = src.rows("Com_select", "SHOW SESSION STATUS LIKE 'Com_select'", {})
    return int(rows[0][1])


@pytest.mark.parametrize("driver", DRIVERS)
def test_each_batch_query_runs_once_when_sent_ahead(shop_db: ShopDB, driver: Driver) -> None:
    """A result sent ahead is the one read: were it dropped, its query would run twice."""
    src = Source(MySQLSettings(url=shop_db.url, driver=driver))
    try:
        reader = Reader(
            src,
            listing_query=shop_seed.LISTING_QUERY,
            max_payload_bytes=1 << 20,
            batch_size=50,
            record=RunRecord(run_id="test", command="run"),
        )
        before = _selects(src)
        target = _Kept()
        reader.run(IDS, target, evidence=None)
        after = _selects(src)
    finally:
        src.close()
    assert [i for i, _ in target.items] == IDS
    assert after - before == len(IDS) // 50  # one per batch (SHOW STATUS is not counted)
