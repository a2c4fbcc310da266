"""MySQL: the hot ids, the changed ids, and the listing rows of a batch of ids.

Two drivers give the same rows: PyMySQL (pure Python, the default install) and, when
the `fast` extra is installed, mysqlclient (C), chosen by `mysql.driver`. Both are told
to hand over DECIMAL, DATE and TIME as the server's text and DATETIME as ISO 8601 (see
encode.py), so the listing bytes do not depend on the driver.

Every query runs in autocommit mode so it reads a fresh snapshot: a warm that kept one
REPEATABLE READ transaction across batches would write rows older than the
invalidations it checked against (see sink.WRITE_SCRIPT).
"""

from __future__ import annotations

import contextlib
import decimal
import importlib.util
import os
import socket
import weakref
from array import array
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .config import MySQLSettings, mysql_target
from .encode import IdList, ListingEncoder, conversions
from .errors import ConfigError, SourceError
from .keys import MAX_ID

MY_CNF = Path("~/.my.cnf")
FETCH_ROWS = 1000  # rows per driver call while streaming


_open: weakref.WeakSet[Source] = weakref.WeakSet()


def interrupt_all() -> None:
    """Cut every open connection (see Source.interrupt); safe from any thread."""
    for src in list(_open):
        src.interrupt()


def driver_name(setting: str) -> str:
    """'auto' picks mysqlclient when it is installed; naming a missing one is an error."""
    available = importlib.util.find_spec("MySQLdb") is not None
    if setting == "auto":
        return "mysqlclient" if available else "pymysql"
    if setting == "mysqlclient" and not available:
        raise ConfigError(
            '[mysql] driver = "mysqlclient" but it is not installed (cachewarm[fast])'
        )
    return setting


def describe(exc: BaseException) -> str:
    """Driver errors as one line: '(1045, "Access denied...")' -> 'Access denied... [1045]'."""
    args: tuple[object, ...] = exc.args
    if len(args) == 2 and isinstance(args[0], int):
        return f"{args[1]} [{args[0]}]"
    return str(exc) or type(exc).__name__


def connect_args(settings: MySQLSettings) -> tuple[dict[str, Any], dict[str, str]]:
    """(keyword arguments both drivers take, TLS files); the binlog reader uses them too."""
    target = mysql_target(settings)
    kwargs: dict[str, Any] = {
        "host": target.host,
        "port": target.port,
        "database": target.database,
        "charset": "utf8mb4",
        "autocommit": True,
        "connect_timeout": settings.connect_timeout,
        "read_timeout": settings.read_timeout,
        "write_timeout": settings.read_timeout,
    }
    if target.unix_socket:
        kwargs["unix_socket"] = target.unix_socket
    if target.user:
        kwargs["user"] = target.user
    if target.password is not None:
        kwargs["password"] = target.password.reveal()
    elif MY_CNF.expanduser().is_file():
        kwargs["read_default_file"] = str(MY_CNF.expanduser())
    ssl = {
        k: v
        for k, v in (
            ("ca", settings.ssl_ca),
            ("cert", settings.ssl_cert),
            ("key", settings.ssl_key),
        )
        if v
    }
    return kwargs, ssl


class Source:
    """One connection to the shop database, with timeouts so a frozen server cannot hang a run."""

    def __init__(self, settings: MySQLSettings) -> None:
        self.driver = driver_name(settings.driver)
        self.where = mysql_target(settings).display()
        kwargs, ssl = connect_args(settings)
        if self.driver == "mysqlclient":
            import MySQLdb
            import MySQLdb.cursors

            for name in ("connect_timeout", "read_timeout", "write_timeout"):
                kwargs[name] = max(1, round(kwargs[name]))
            if ssl:
                kwargs["ssl"] = ssl
                kwargs["ssl_mode"] = (
                    "VERIFY_IDENTITY"
                    if settings.ssl_verify_identity
                    else ("VERIFY_CA" if settings.ssl_ca else "REQUIRED")
                )
            self._error: type[Exception] = MySQLdb.MySQLError
            self._streaming: Any = MySQLdb.cursors.SSCursor
            connect: Callable[..., Any] = MySQLdb.connect
        else:
            import pymysql
            import pymysql.cursors

            for name, value in ssl.items():
                kwargs[f"ssl_{name}"] = value
            if ssl:
                kwargs["ssl_verify_identity"] = settings.ssl_verify_identity
                kwargs["ssl_verify_cert"] = bool(settings.ssl_ca)
            self._error = pymysql.MySQLError
            self._streaming = pymysql.cursors.SSCursor
            connect = pymysql.connect
        try:
            self._conn = connect(conv=conversions(self.driver), **kwargs)
        except self._error as exc:
            raise SourceError(f"cannot connect to {self.where}: {describe(exc)}") from None
        # Taken now: mysqlclient refuses fileno() from another thread while a query runs.
        self._fd: int | None = self._conn.fileno() if self.driver == "mysqlclient" else None
        _open.add(self)

    def interrupt(self) -> None:
        """Cut the connection from another thread, so a read blocked in C returns now.

        mysqlclient waits for the server inside C with the GIL released, where no Python
        signal handler can run: SIGTERM or the deadline would wait for the query. Shutting
        the socket down makes that read fail at once, and the handler then runs. (PyMySQL
        reads in Python, where signals already get through.)
        """
        fd = self._fd
        if fd is None:
            return
        with contextlib.suppress(OSError), socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._fd = None
        _open.discard(self)
        with contextlib.suppress(self._error):  # already gone: nothing left to release
            self._conn.close()

    @contextlib.contextmanager
    def _query(
        self, what: str, query: str, params: dict[str, Any], *, stream: bool = True
    ) -> Iterator[Any]:
        """An executed cursor; driver errors, also while fetching, become one line.

        Streaming for results of unknown size; a listing batch (at most batch_size rows)
        is read whole, which is cheaper per row.
        """
        cur = None
        try:
            cur = self._conn.cursor(self._streaming if stream else None)
            cur.execute(query, params)
            yield cur
        except self._error as exc:
            raise SourceError(f"{self.where}: {what} failed: {describe(exc)}") from None
        finally:
            if cur is not None:
                with contextlib.suppress(self._error):  # a dead connection has nothing to drain
                    cur.close()

    @staticmethod
    def _rows(cur: Any) -> Iterator[Any]:
        while rows := cur.fetchmany(FETCH_ROWS):
            yield from rows

    def hot_ids(self, query: str, limit: int) -> array[int]:
        """Run the hot query; ids hottest first, repeats dropped, at most `limit`.

        Streamed into an array of 8-byte ids: a million hot ids cost 8 MB, not the
        ~100 MB a buffered result of tuples would.
        """
        ids: array[int] = array("Q")
        with self._query("hot query", query, {"limit": limit}) as cur:
            width = len(cur.description or ())
            if width != 1:
                raise SourceError(
                    f"hot query must return one column (product id), it returned {width}"
                )
            append, check_at = ids.append, limit
            for n, (value,) in enumerate(self._rows(cur), 1):
                append(
                    value
                    if type(value) is int and 0 <= value <= MAX_ID
                    else _as_id(value, n, "hot")
                )
                if len(ids) >= check_at:  # `limit` rows, but are they `limit` distinct ids?
                    ids = _drop_repeats(ids)
                    if len(ids) >= limit:
                        break
                    append, check_at = ids.append, check_at * 2
        ids = _drop_repeats(ids)
        del ids[limit:]
        return ids

    def changed_ids(self, query: str, since: str, cap: int) -> set[int] | None:
        """Ids the changed query reports since `since`; None when more than `cap` (warm fully)."""
        changed: set[int] = set()
        with self._query("changed query", query, {"since": since}) as cur:
            for n, (value, *_) in enumerate(self._rows(cur), 1):
                changed.add(_as_id(value, n, "changed"))
                if len(changed) > cap:
                    return None
        return changed

    def server_now(self) -> str:
        """MySQL's clock, the one `updated_at` columns are stamped with."""
        with self._query("SELECT NOW()", "SELECT CAST(NOW(6) AS CHAR)", {}) as cur:
            return str(cur.fetchone()[0])

    def gtid_position(self) -> str:
        """MariaDB's GTID position of everything committed here so far."""
        with self._query("SELECT @@gtid_binlog_pos", "SELECT @@GLOBAL.gtid_binlog_pos", {}) as cur:
            return str(cur.fetchone()[0])

    def wait_for_gtid(self, position: str, timeout: float) -> bool:
        """On a replica: wait until it has applied `position`; False after `timeout` s."""
        sql = "SELECT MASTER_GTID_WAIT(%(pos)s, %(timeout)s)"
        with self._query("MASTER_GTID_WAIT", sql, {"pos": position, "timeout": timeout}) as cur:
            return int(cur.fetchone()[0]) == 0

    def ids_for(self, query: str, ids: Sequence[int]) -> set[int]:
        """Product ids a query maps other rows' keys to (`[follow] queries`)."""
        with self._query("follow query", query, {"ids": IdList(ids)}) as cur:
            return {_as_id(value, n, "follow") for n, (value, *_) in enumerate(self._rows(cur), 1)}

    def listings(self, query: str, ids: Sequence[int]) -> Iterator[tuple[int, bytes]]:
        """(id, listing JSON) for the ids that still have a listing row; rows are streamed."""
        with self._query("listing query", query, {"ids": IdList(ids)}, stream=False) as cur:
            try:
                encoder = ListingEncoder(cur.description or ())
            except ValueError as exc:
                raise SourceError(f"{self.where}: {exc}") from None
            id_index, encode = encoder.id_index, encoder.encode
            for row in cur.fetchall():
                yield _as_id(row[id_index], 0, "listing"), encode(row)


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


def _as_id(value: object, row: int, query: str) -> int:
    if type(value) is int and 0 <= value <= MAX_ID:
        return value
    if isinstance(value, str | bytes | decimal.Decimal) and _digits(value):
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        raise SourceError(f"{query} query returned a non-integer id {value!r}{_at(row)}")
    if not 0 <= number <= MAX_ID:
        raise SourceError(f"{query} query returned an out-of-range id {value!r}{_at(row)}")
    return number


def _at(row: int) -> str:
    return f" in row {row}" if row else ""


def _digits(value: str | bytes | decimal.Decimal) -> bool:
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    return text.strip().isascii() and text.strip().isdigit()
