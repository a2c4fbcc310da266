"""cachewarm.rows against python-mysql-replication's full decoding, on a real MariaDB binlog.

One table with every column type a shop table can have, NULLs in every nullable
column, rows several events long and an ALTER TABLE between the edits: the binlog is
read twice, once decoding every column with the library and once with RowReader,
and the integer columns must come out identical, image by image.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest
import servers
from pymysql.connections import Connection
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import UpdateRowsEvent

from cachewarm.binlog import rows
from cachewarm.binlog import server as binlog
from cachewarm.errors import BinlogUnfit

WANTED = ("product_id", "id", "med", "tiny", "small")  # signed and unsigned, 1 to 8 bytes
# (definition, a random literal or None for NULL); id is the primary key.
COLUMNS: dict[str, tuple[str, Any]] = {
    "product_id": (
        "INT NULL",
        lambda r: r.choice([r.randint(-(2**31), 2**31 - 1), r.randint(0, 999)]),
    ),
    "tiny": ("TINYINT NULL", lambda r: r.randint(-128, 127)),
    "small": ("SMALLINT UNSIGNED NULL", lambda r: r.randint(0, 2**16 - 1)),
    "med": ("MEDIUMINT NULL", lambda r: r.randint(-(2**23), 2**23 - 1)),
    "big": ("BIGINT NULL", lambda r: r.randint(-(2**63), 2**63 - 1)),
    "flt": ("FLOAT NULL", lambda r: r.uniform(-1e6, 1e6)),
    "dbl": ("DOUBLE NULL", lambda r: r.uniform(-1e12, 1e12)),
    "price": ("DECIMAL(10,2) NULL", lambda r: round(r.uniform(-1e7, 1e7), 2)),
    "wide_dec": (
        "DECIMAL(65,30) NULL",
        lambda r: f"'{r.randint(-(10**34), 10**34)}.{r.randint(0, 10**29)}'",
    ),
    "whole_dec": ("DECIMAL(5,0) UNSIGNED NULL", lambda r: r.randint(0, 99999)),
    "frac_dec": ("DECIMAL(9,9) NULL", lambda r: f"'0.{r.randint(0, 10**9 - 1):09d}'"),
    "dt": (
        "DATETIME NULL",
        lambda r: f"'20{r.randint(10, 38)}-0{r.randint(1, 9)}-1{r.randint(0, 9)} 12:34:56'",
    ),
    "dt3": (
        "DATETIME(3) NULL",
        lambda r: f"'2026-11-28 10:15:0{r.randint(0, 9)}.{r.randint(0, 999)}'",
    ),
    "dt6": ("DATETIME(6) NULL", lambda r: f"'1999-12-31 23:59:59.{r.randint(0, 999999)}'"),
    "ts": (
        "TIMESTAMP(2) NULL",
        lambda r: f"'2020-02-29 0{r.randint(0, 9)}:00:00.{r.randint(0, 99)}'",
    ),
    "tm": ("TIME(4) NULL", lambda r: f"'{r.randint(-838, 838)}:59:59.{r.randint(0, 9999)}'"),
    "tm0": ("TIME NULL", lambda r: f"'{r.randint(0, 23)}:00:01'"),
    "day": ("DATE NULL", lambda r: f"'20{r.randint(10, 99)}-01-0{r.randint(1, 9)}'"),
    "yr": ("YEAR NULL", lambda r: r.randint(1901, 2155)),
    "ch": ("CHAR(10) NULL", lambda r: _text(r, 10)),
    "ch_wide": ("CHAR(100) NULL", lambda r: _text(r, 100)),  # 400 bytes: a 2-byte length
    "bin": ("BINARY(16) NULL", lambda r: f"X'{r.randbytes(r.randint(0, 16)).hex()}'"),
    "vc": ("VARCHAR(20) NULL", lambda r: _text(r, 20)),
    "vc_wide": ("VARCHAR(1000) NULL", lambda r: _text(r, 1000)),
    "vb": ("VARBINARY(300) NULL", lambda r: f"X'{r.randbytes(r.randint(0, 300)).hex()}'"),
    "tt": ("TINYTEXT NULL", lambda r: _text(r, 60)),
    "body": ("TEXT NULL", lambda r: _text(r, r.choice([0, 100, 3000]))),
    "mt": ("MEDIUMTEXT NULL", lambda r: _text(r, r.choice([5, 20000]))),
    "lb": ("LONGBLOB NULL", lambda r: f"X'{r.randbytes(r.choice([0, 1, 9000])).hex()}'"),
    "doc": ("JSON NULL", lambda r: f"JSON_OBJECT('k', {r.randint(0, 9)}, 's', {_text(r, 30)})"),
    "state": (
        "ENUM('draft','live','gone') NULL",
        lambda r: r.choice(["'draft'", "'live'", "'gone'"]),
    ),
    "tags": ("SET('a','b','c','d','e','f','g','h','i') NULL", lambda r: "'a,c,i'"),
    "flag": ("BIT(1) NULL", lambda r: r.randint(0, 1)),
    "bits": ("BIT(13) NULL", lambda r: r.randint(0, 2**13 - 1)),
    "place": ("POINT NULL", lambda r: f"POINT({r.randint(-90, 90)}, {r.randint(-180, 180)})"),
    "uid": ("UUID NULL", lambda r: "UUID()"),
    "addr": ("INET6 NULL", lambda r: f"'2001:db8::{r.randint(0, 65535):x}'"),
}


def _text(r: random.Random, n: int) -> str:
    chars = "aZ09 'quote' \\ \t\n ünï ☕ 😀 ж"
    return (
        "'"
        + "".join(r.choice(chars) for _ in range(r.randint(0, n)))
        .replace("\\", "\\\\")
        .replace("'", "''")
        + "'"
    )


@pytest.fixture
def conn(binlog_server: servers.Server) -> Iterator[Connection]:
    c = pymysql.connect(
        host=binlog_server.host, port=binlog_server.port, user="root", autocommit=True
    )
    with c.cursor() as cur:
        cur.execute("CREATE DATABASE IF NOT EXISTS shop")
        cur.execute("USE shop")
        cur.execute("DROP TABLE IF EXISTS wide")
    try:
        yield c
    finally:
        c.close()


def _sql(conn: Connection, statement: str) -> None:
    with conn.cursor() as cur:
        cur.execute(statement)


def _end(conn: Connection) -> tuple[str, int]:
    with conn.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        row = cur.fetchone()
    assert row is not None
    return str(row[0]), int(row[1])


def _values(r: random.Random, names: list[str], nulls: float) -> list[str]:
    return ["NULL" if r.random() < nulls else str(COLUMNS[n][1](r)) for n in names]


def _edits(conn: Connection, r: random.Random, names: list[str], first_id: int) -> None:
    """Inserts (some in one multi-row statement), updates of every column, deletes."""
    ids = [first_id + i for i in range(40)]
    for start in range(0, 40, 8):
        rows_sql = ", ".join(
            f"({i}, {', '.join(_values(r, names, 0.3))})" for i in ids[start : start + 8]
        )
        _sql(conn, f"INSERT INTO wide (id, {', '.join(names)}) VALUES {rows_sql}")
    _sql(conn, f"INSERT INTO wide (id) VALUES ({2**64 - 1 - first_id})")  # all NULL
    for i in ids[:25]:
        sets = ", ".join(f"{n} = {v}" for n, v in zip(names, _values(r, names, 0.5), strict=True))
        _sql(conn, f"UPDATE wide SET {sets} WHERE id = {i}")
    _sql(conn, "UPDATE wide SET product_id = -product_id, tiny = NULL WHERE id % 3 = 0")
    _sql(conn, f"DELETE FROM wide WHERE id IN ({', '.join(map(str, ids[::4]))})")


def _reader(server: servers.Server, start: tuple[str, int]) -> BinLogStreamReader:
    return BinLogStreamReader(
        connection_settings={
            "host": server.host,
            "port": server.port,
            "user": "root",
            "password": "",
        },
        server_id=4242,
        log_file=start[0],
        log_pos=start[1],
        resume_stream=True,
        blocking=False,
        only_schemas=["shop"],
        only_tables=["wide"],
        only_events=list(binlog.ROW_EVENTS),
        enable_logging=False,
        pymysql_wrapper=binlog._connect,
    )


def _library_images(server: servers.Server, start: tuple[str, int]) -> list[tuple[Any, ...]]:
    reader = _reader(server, start)
    try:
        out: list[tuple[Any, ...]] = []
        for event in reader:
            for row in event.rows:
                images = (
                    (row["before_values"], row["after_values"])
                    if "after_values" in row
                    else (row["values"],)
                )
                out.extend(tuple(values[n] for n in WANTED) for values in images)
        return out
    finally:
        reader.close()


def _fast_images(
    server: servers.Server, start: tuple[str, int]
) -> tuple[list[tuple[Any, ...]], int]:
    reader = _reader(server, start)
    fast = rows.RowReader({"wide": WANTED}, lambda event, name: AssertionError(name))
    try:
        out: list[tuple[Any, ...]] = []
        updates = 0
        for event in reader:
            images = fast.images(event)
            updates += isinstance(event, UpdateRowsEvent)
            out.extend(images)
        return out, updates
    finally:
        reader.close()


# The reference decoder reads TIMESTAMP columns with datetime.utcfromtimestamp, which
# Python 3.12 deprecates; the follower itself never decodes them.
@pytest.mark.filterwarnings("ignore:datetime.datetime.utcfromtimestamp:DeprecationWarning")
def test_ids_read_by_length_equal_the_librarys_full_decoding(
    binlog_server: servers.Server, conn: Connection
) -> None:
    r = random.Random(20261128)
    start = _end(conn)
    names = list(COLUMNS)
    definitions = ", ".join(f"{n} {d}" for n, (d, _) in COLUMNS.items())
    _sql(conn, f"CREATE TABLE wide (id BIGINT UNSIGNED NOT NULL PRIMARY KEY, {definitions})")
    _edits(conn, r, names, 1)
    # An ALTER mid-stream: a new table map with columns added, dropped, widened, moved.
    _sql(
        conn,
        "ALTER TABLE wide ADD COLUMN note VARCHAR(5) NULL FIRST, DROP COLUMN dt3, "
        "MODIFY price DECIMAL(20,6) NULL, MODIFY med BIGINT NULL AFTER body",
    )
    after = [n for n in names if n != "dt3"]
    _edits(conn, r, after, 1000)
    _sql(conn, "UPDATE wide SET note = 'x' WHERE id > 1000")

    library = _library_images(binlog_server, start)
    fast, updates = _fast_images(binlog_server, start)
    assert fast == library
    assert updates > 20 and len(library) > 300
    seen = {n: {image[i] for image in library} for i, n in enumerate(WANTED)}
    assert None in seen["product_id"] and any(v < 0 for v in seen["product_id"] if v is not None)
    assert max(seen["id"]) > 2**63  # unsigned BIGINT above the signed range
    assert any(v > 2**15 for v in seen["small"] if v is not None)  # unsigned SMALLINT
    assert any(v < 0 for v in seen["med"] if v is not None)  # MEDIUMINT, then BIGINT


def test_a_non_integer_wanted_column_fails_with_one_line(
    binlog_server: servers.Server, conn: Connection
) -> None:
    start = _end(conn)
    _sql(conn, "CREATE TABLE wide (id BIGINT UNSIGNED NOT NULL PRIMARY KEY, sku VARCHAR(20))")
    _sql(conn, "INSERT INTO wide VALUES (1, '42')")
    reader = _reader(binlog_server, start)
    fast = rows.RowReader({"wide": ("sku",)}, lambda event, name: AssertionError(name))
    try:
        (event,) = list(reader)
        with pytest.raises(BinlogUnfit, match=r"^shop\.wide column 'sku' is not an integer column"):
            fast.images(event)
    finally:
        reader.close()


def test_a_missing_wanted_column_is_reported_by_the_caller(
    binlog_server: servers.Server, conn: Connection
) -> None:
    start = _end(conn)
    _sql(conn, "CREATE TABLE wide (id BIGINT UNSIGNED NOT NULL PRIMARY KEY)")
    _sql(conn, "INSERT INTO wide VALUES (1)")
    reader = _reader(binlog_server, start)
    fast = rows.RowReader(
        {"wide": ("id", "product_id")}, lambda e, name: KeyError(f"{e.table}.{name}")
    )
    try:
        (event,) = list(reader)
        with pytest.raises(KeyError, match=r"wide\.product_id"):
            fast.images(event)
    finally:
        reader.close()
