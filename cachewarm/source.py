"""MySQL: the hot ids, then the listing rows of a batch of ids.

Each query runs in autocommit mode so it reads a fresh snapshot: a warm that kept one
REPEATABLE READ transaction across batches would write rows older than the
invalidations it checked against (see sink.WRITE_SCRIPT).
"""

from __future__ import annotations

import decimal
from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pymysql
import pymysql.cursors

from .config import MySQLSettings, mysql_target
from .encode import ListingEncoder, pymysql_conversions
from .errors import SourceError
from .keys import MAX_ID

MY_CNF = Path("~/.my.cnf")


def connect(settings: MySQLSettings) -> pymysql.Connection[Any]:
    """Open a connection with timeouts so a frozen server cannot hang the run."""
    target = mysql_target(settings)
    kwargs: dict[str, Any] = {
        "host": target.host,
        "port": target.port,
        "database": target.database,
        "unix_socket": target.unix_socket,
        "charset": "utf8mb4",
        "autocommit": True,
        "connect_timeout": settings.connect_timeout,
        "read_timeout": settings.read_timeout,
        "write_timeout": settings.read_timeout,
        "conv": pymysql_conversions(),
    }
    if target.user:
        kwargs["user"] = target.user
    if target.password is not None:
        kwargs["password"] = target.password.reveal()
    elif MY_CNF.expanduser().is_file():
        kwargs["read_default_file"] = str(MY_CNF.expanduser())
    if settings.ssl_ca or settings.ssl_cert:
        kwargs["ssl_ca"] = settings.ssl_ca
        kwargs["ssl_cert"] = settings.ssl_cert
        kwargs["ssl_key"] = settings.ssl_key
        kwargs["ssl_verify_identity"] = settings.ssl_verify_identity
        kwargs["ssl_verify_cert"] = bool(settings.ssl_ca)
    try:
        return pymysql.connect(**kwargs)
    except pymysql.MySQLError as exc:
        raise SourceError(f"cannot connect to {target.display()}: {describe(exc)}") from None


def describe(exc: BaseException) -> str:
    """PyMySQL errors as one line: '(1045, "Access denied...")' -> 'Access denied... [1045]'."""
    args: tuple[object, ...] = exc.args
    if len(args) == 2 and isinstance(args[0], int):
        return f"{args[1]} [{args[0]}]"
    return str(exc) or type(exc).__name__


def where(conn: pymysql.Connection[Any]) -> str:
    """'MySQL at host:port/db', for messages that must say which server failed."""
    db = conn.db.decode() if isinstance(conn.db, bytes) else conn.db
    place = conn.unix_socket or f"{conn.host}:{conn.port}"
    return f"MySQL at {place}/{db}"


def hot_ids(conn: pymysql.Connection[Any], query: str, limit: int) -> array[int]:
    """Run the hot query; ids hottest first, repeats dropped, at most `limit`.

    Streamed into an array of 8-byte ids: a million hot ids cost 8 MB, not the ~100 MB
    a buffered result of tuples would.
    """
    ids: array[int] = array("Q")
    try:
        with conn.cursor(pymysql.cursors.SSCursor) as cur:
            cur.execute(query, {"limit": limit})
            width = len(cur.description or ())
            if width != 1:
                raise SourceError(
                    f"hot query must return one column (product id), it returned {width}"
                )
            append = ids.append
            for n, (value,) in enumerate(cur.fetchall_unbuffered(), 1):
                append(value if type(value) is int and 0 <= value <= MAX_ID else _as_id(value, n))
                if len(ids) == limit:
                    break
    except pymysql.MySQLError as exc:
        raise SourceError(f"{where(conn)}: hot query failed: {describe(exc)}") from None
    return _drop_repeats(ids)


def _drop_repeats(ids: array[int]) -> array[int]:
    """Keep each id's first (hottest) place, with about one byte of memory per id.

    A bitmap of hashes finds the few candidates; only those go through an exact set.
    """
    bits = bytearray(max(1, len(ids)))
    size = len(bits) * 8
    suspects = set()
    for value in ids:
        h = (value * 0x9E3779B97F4A7C15 >> 16) % size
        if bits[h >> 3] & (1 << (h & 7)):
            suspects.add(value)
        else:
            bits[h >> 3] |= 1 << (h & 7)
    if not suspects:
        return ids
    seen: set[int] = set()
    kept: array[int] = array("Q")
    for value in ids:
        if value in suspects:
            if value in seen:
                continue
            seen.add(value)
        kept.append(value)
    return kept


def _as_id(value: object, row: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str | bytes | decimal.Decimal) and _digits(value):
        number = int(value)
    else:
        raise SourceError(f"hot query returned a non-integer id {value!r} in row {row}")
    if not 0 <= number <= MAX_ID:
        raise SourceError(f"hot query returned an out-of-range id {value!r} in row {row}")
    return number


def _digits(value: str | bytes | decimal.Decimal) -> bool:
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    return text.strip().isascii() and text.strip().isdigit()


def server_now(conn: pymysql.Connection[Any]) -> str:
    """MySQL's clock, the one `updated_at` columns are stamped with."""
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT CAST(NOW(6) AS CHAR)")
            row = cur.fetchone()
    except pymysql.MySQLError as exc:
        raise SourceError(f"{where(conn)}: SELECT NOW() failed: {describe(exc)}") from None
    return str(row[0]) if row else ""


def changed_ids(conn: pymysql.Connection[Any], query: str, since: str, cap: int) -> set[int] | None:
    """Ids the changed query reports since `since`; None when more than `cap` (warm fully)."""
    changed: set[int] = set()
    try:
        with conn.cursor(pymysql.cursors.SSCursor) as cur:
            cur.execute(query, {"since": since})
            for n, (value, *_) in enumerate(cur.fetchall_unbuffered(), 1):
                changed.add(_as_id(value, n))
                if len(changed) > cap:
                    return None
    except pymysql.MySQLError as exc:
        raise SourceError(f"{where(conn)}: changed query failed: {describe(exc)}") from None
    return changed


def listings(
    conn: pymysql.Connection[Any], query: str, ids: Sequence[int]
) -> Iterator[tuple[int, bytes]]:
    """(id, listing JSON) for the ids that still have a listing row; rows are streamed."""
    try:
        with conn.cursor(pymysql.cursors.SSCursor) as cur:
            cur.execute(query, {"ids": tuple(ids)})
            try:
                encoder = ListingEncoder([d[0] for d in cur.description or ()])
            except ValueError as exc:
                raise SourceError(str(exc)) from None
            id_index, encode = encoder.id_index, encoder.encode
            for row in cur.fetchall_unbuffered():
                yield row[id_index], encode(row)
    except pymysql.MySQLError as exc:
        raise SourceError(f"{where(conn)}: listing query failed: {describe(exc)}") from None
