"""MySQL: the hot ids, the changed ids, and the listing rows of a batch of ids.

Two drivers give the same rows: PyMySQL (pure Python, the default install) and, when
the `fast` extra is installed, mysqlclient (C), chosen by `mysql.driver`. Both are told
to hand over DECIMAL, DATE and TIME as the server's text and DATETIME as ISO 8601 (see
encode.py), so the listing bytes do not depend on the driver.

Every query runs in autocommit mode so it reads a fresh snapshot: a warm that kept one
REPEATABLE READ transaction across batches would write rows older than the
invalidations it checked against (see store.scripts.WRITE_SCRIPT).

A run's deadline binds the server too, not only this process: a statement abandoned by
the client keeps running on the server ("Sending data") until it ends, and a hung one
would start a new copy every cron interval. So every statement carries the time the run
has left (MariaDB `SET STATEMENT max_statement_time`, MySQL `max_execution_time`), which
also ends it after a kill -9; and a connection closed with a statement still running
(deadline, SIGTERM, SIGINT) has it stopped at once with `KILL QUERY` from a second one.
"""

from __future__ import annotations

import contextlib
import decimal
import functools
import importlib.util
import os
import socket
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import guard
from ..config import MySQLSettings
from ..errors import ConfigError, DeadlineExceeded, SourceError
from ..keys import MAX_ID, MAX_SAFE_ID
from ..urls import MySQLTarget, mysql_target
from . import driver_pymysql
from .encode import IdList, InvalidJSON, ListingEncoder, conversions

MY_CNF = Path("~/.my.cnf")
FETCH_ROWS = 1000  # rows per driver call while streaming
# The server's bound trails the run's deadline by this much, so the run's own deadline
# (which names the stage it stopped in) normally fires first; the server's is the backstop.
STATEMENT_MARGIN_S = 1.0
KILL_TIMEOUT_S = 2  # connect and read timeout of the connection that sends KILL QUERY
STATEMENT_TIMEOUT_ERRORS = (1969, 3024)  # MariaDB max_statement_time, MySQL max_execution_time


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


@dataclass
class _Driver:
    """What Source needs of a driver: its connect, error class and cursors.

    `ahead_cursor`: a buffered cursor class whose execute() is split into send(query,
    args) and receive(), so a listing query can be sent ahead (None: run when asked).
    """

    connect: Callable[..., Any]
    error: type[Exception]
    streaming_cursor: Any
    ahead_cursor: Any = None
    raw_rows: bool = False  # driver_pymysql: listings read as raw field bytes


def _common_kwargs(settings: MySQLSettings, target: MySQLTarget) -> dict[str, Any]:
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
    return kwargs


def connect_args(settings: MySQLSettings) -> tuple[dict[str, Any], dict[str, str]]:
    """(keyword arguments both drivers take, TLS files); the binlog reader uses them too."""
    return _common_kwargs(settings, mysql_target(settings.url, settings.password)), _tls(settings)


def _tls(settings: MySQLSettings) -> dict[str, str]:
    pairs = (("ca", settings.ssl_ca), ("cert", settings.ssl_cert), ("key", settings.ssl_key))
    return {k: v for k, v in pairs if v}


def _mysqlclient(settings: MySQLSettings, kwargs: dict[str, Any]) -> _Driver:
    import MySQLdb
    import MySQLdb.cursors

    from . import driver_mysqlclient

    for name in ("connect_timeout", "read_timeout", "write_timeout"):
        kwargs[name] = max(1, round(kwargs[name]))  # whole seconds only
    if ssl := _tls(settings):
        kwargs["ssl"] = ssl
        kwargs["ssl_mode"] = (
            "VERIFY_IDENTITY"
            if settings.ssl_verify_identity
            else ("VERIFY_CA" if settings.ssl_ca else "REQUIRED")
        )
    return _Driver(
        MySQLdb.connect, MySQLdb.MySQLError, MySQLdb.cursors.SSCursor, driver_mysqlclient.CURSOR
    )


def _pymysql(settings: MySQLSettings, kwargs: dict[str, Any]) -> _Driver:
    import pymysql
    import pymysql.cursors

    if isinstance(kwargs.get("password"), str):  # PyMySQL would send a str as latin1
        kwargs["password"] = kwargs["password"].encode("utf-8")
    if ssl := _tls(settings):
        kwargs.update({f"ssl_{name}": value for name, value in ssl.items()})
        kwargs["ssl_verify_identity"] = settings.ssl_verify_identity
        kwargs["ssl_verify_cert"] = bool(settings.ssl_ca)
    fast = driver_pymysql.FAST
    return _Driver(
        driver_pymysql.CONNECT,
        pymysql.MySQLError,
        pymysql.cursors.SSCursor,
        ahead_cursor=driver_pymysql.Cursor if fast else None,
        raw_rows=fast,
    )


class Ahead:
    """A listing query to send before its result is wanted: the handle a caller passes back.

    Made by the caller with the ids of its next batch and given to `listings(...,
    then=ahead)`, which sends it once that call's rows are in (when the driver can
    split a query); `listings(query, ahead)` then reads its result. A result left
    unread when another query runs is read and dropped, and the handle runs afresh.
    """

    def __init__(self, ids: Sequence[int]) -> None:
        self.ids = ids
        self.cursor: Any = None  # the statement sent and not yet read


class Source:
    """One connection to the shop database, with timeouts so a frozen server cannot hang a run.

    `deadline` (time.monotonic()) bounds every statement on the server; a surrounding
    run_guard's deadline does too, whichever comes first.
    """

    def __init__(self, settings: MySQLSettings, *, deadline: float | None = None) -> None:
        target = mysql_target(settings.url, settings.password)
        self.driver = driver_name(settings.driver)
        self.where = target.display()
        kwargs = _common_kwargs(settings, target)
        driver = (_mysqlclient if self.driver == "mysqlclient" else _pymysql)(settings, kwargs)
        self._error = driver.error
        self._streaming = driver.streaming_cursor
        self._raw_rows = driver.raw_rows
        self._ahead = driver.ahead_cursor
        self._sent: Ahead | None = None  # sent and not yet read
        self._connect = functools.partial(driver.connect, conv=conversions(self.driver), **kwargs)
        try:
            self._conn = self._connect()
        except self._error as exc:
            raise SourceError(f"cannot connect to {self.where}: {describe(exc)}") from None
        except UnicodeEncodeError:  # PyMySQL, a ~/.my.cnf password beyond latin1; say nothing of it
            raise ConfigError(
                f"cannot connect to {self.where}: the password from {MY_CNF} has characters "
                "PyMySQL cannot send; set [mysql] password or install cachewarm[fast]"
            ) from None
        # Taken now: mysqlclient refuses fileno() from another thread while a query runs.
        self._fd: int | None = (
            self._conn.fileno() if self.driver == "mysqlclient" else self._conn._sock.fileno()
        )
        self._thread_id: int = self._conn.thread_id()
        self._mariadb = "mariadb" in self._conn.get_server_info().lower()
        self._running = False  # a statement was sent and not seen to its end
        self._guard = guard.current()
        deadlines = [deadline, self._guard.deadline if self._guard else None]
        self._deadline = min((d for d in deadlines if d is not None), default=None)
        self._unwatch = self._guard.watch(self.interrupt) if self._guard else None

    def interrupt(self) -> None:
        """Cut the connection from another thread, so a read blocked in a driver returns now.

        mysqlclient waits for the server inside C with the GIL released, where no Python
        signal handler can run: SIGTERM or the deadline would wait for the query. Shutting
        the socket down makes that read fail at once, and the handler then runs. The
        statement itself is stopped by close().
        """
        fd = self._fd
        if fd is None:
            return
        with contextlib.suppress(OSError), socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._fd = None
        if self._unwatch:
            self._unwatch()
        if self._running:
            self._kill_query()
        with contextlib.suppress(self._error):  # already gone: nothing left to release
            self._conn.close()

    def _kill_query(self) -> None:
        """Stop on the server the statement this connection left running.

        The server goes on with a statement whose client is gone until it next sends
        a row, which for a hung query may be never. Best effort, on a short timeout:
        the statement's own bound (see _bounded) ends it anyway.
        """
        try:
            conn = self._connect(
                connect_timeout=KILL_TIMEOUT_S,
                read_timeout=KILL_TIMEOUT_S,
                write_timeout=KILL_TIMEOUT_S,
            )
        except self._error:
            return
        try:
            cur = conn.cursor()
            cur.execute(f"KILL QUERY {int(self._thread_id)}")
        except self._error:
            pass  # the statement ended by itself meanwhile
        finally:
            with contextlib.suppress(self._error):
                conn.close()

    def _bounded(self, cur: Any, query: str) -> str:
        """The query, bounded on the server by the time the run has left (plus a margin)."""
        if self._deadline is None:
            return query
        left = max(0.0, self._deadline - time.monotonic()) + STATEMENT_MARGIN_S
        if self._mariadb:
            return f"SET STATEMENT max_statement_time={left:.3f} FOR {query}"
        cur.execute(f"SET SESSION max_execution_time = {int(left * 1000)}")
        return query

    @contextlib.contextmanager
    def _query(
        self,
        what: str,
        query: str,
        params: dict[str, Any],
        *,
        stream: bool = True,
        raw: bool = False,
        sent: Any = None,
    ) -> Iterator[Any]:
        """An executed cursor; driver errors, also while fetching, become one line.

        Streaming for results of unknown size; a listing batch (at most batch_size rows)
        is read whole, which is cheaper per row. `raw`: rows of field bytes (driver_pymysql).
        `sent`: the cursor of a statement _send() sent ahead, whose result is read now.
        """
        cur = sent
        self._running = True  # until seen to its end: close() stops it on the server
        try:
            if self._sent is not None and sent is None:  # sent ahead, then not asked for
                self._sent.cursor.receive()
                self._sent.cursor = None
                self._sent = None
            if raw:
                self._conn.raw_rows = True
            if cur is None:
                cur = self._conn.cursor(self._streaming if stream else None)
                cur.execute(self._bounded(cur, query), params)
            else:
                cur.receive()
            if raw:
                self._conn.raw_rows = False
            yield cur
            cur.close()  # reads what is left of a streamed result: the statement is over
            self._running = False
        except self._error as exc:
            raise self._failed(what, exc) from None
        finally:
            if raw:
                self._conn.raw_rows = False
            if cur is not None:
                with contextlib.suppress(self._error):  # a dead connection has nothing to drain
                    cur.close()

    def _failed(self, what: str, exc: Exception) -> Exception:
        if self._guard and self._guard.expired:  # cut by the guard's timer
            return self._guard.exceeded()
        if exc.args and exc.args[0] in STATEMENT_TIMEOUT_ERRORS:
            return DeadlineExceeded(f"run passed run.max_seconds; {self.where} stopped the {what}")
        return SourceError(f"{self.where}: {what} failed: {describe(exc)}")

    def _send(self, what: str, query: str, ahead: Ahead) -> None:
        """Send the listing query of `ahead` now; listings(query, ahead) reads its result."""
        self._running = True
        try:
            cur = self._conn.cursor(self._ahead)
            cur.send(self._bounded(cur, query), {"ids": IdList(ahead.ids)})
        except self._error as exc:
            raise self._failed(what, exc) from None
        ahead.cursor, self._sent = cur, ahead

    @staticmethod
    def _rows(cur: Any) -> Iterator[Any]:
        while rows := cur.fetchmany(FETCH_ROWS):
            yield from rows

    def hot_ids(self, query: str, limit: int, *, max_id: int = MAX_SAFE_ID) -> array[int]:
        """Run the hot query; ids hottest first, repeats dropped, at most `limit`.

        Streamed into an array of 8-byte ids: a million hot ids cost 8 MB, not the
        ~100 MB a buffered result of tuples would. An id above `max_id` (Keys.max_hot_id)
        fails the run before anything is written.
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
                    if type(value) is int and 0 <= value <= max_id
                    else _as_id(value, n, "hot", max_id)
                )
                if len(ids) >= check_at:  # `limit` rows, but are they `limit` distinct ids?
                    ids = _drop_repeats(ids)
                    if len(ids) >= limit:
                        break  # repeats already dropped
                    append, check_at = ids.append, check_at * 2
            else:
                ids = _drop_repeats(ids)  # the rows ran out first
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

    def rows(
        self, what: str, query: str, params: dict[str, Any], *, max_rows: int = 100
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Column names and the first rows of a small read (EXPLAIN, SHOW, a probe)."""
        with self._query(what, query, params, stream=False) as cur:
            names = [str(d[0]) for d in cur.description or ()]
            return names, [tuple(row) for row in cur.fetchmany(max_rows)]

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

    def listings(
        self,
        query: str,
        batch: Sequence[int] | Ahead,
        *,
        json_columns: Sequence[str] = (),
        then: Ahead | None = None,
    ) -> Iterator[tuple[int, bytes | InvalidJSON]]:
        """(id, listing JSON) for the ids that still have a listing row.

        A row whose json_columns value is not JSON comes as (id, InvalidJSON): one bad
        product must not fail the whole run, and its caller decides what to do with it.

        `then`, the next call's batch: once these rows are in, its query is sent, so the
        server runs it while the caller encodes and writes these (when the driver can
        split a query, see _Driver). The next call passes it as its `batch`.
        """
        sent = None
        if isinstance(batch, Ahead):
            if batch is self._sent:
                sent, batch.cursor, self._sent = batch.cursor, None, None
            batch = batch.ids
        params = {"ids": IdList(batch)}
        raw = self._raw_rows
        with self._query("listing query", query, params, stream=False, raw=raw, sent=sent) as cur:
            try:
                encoder = ListingEncoder(cur.description or (), json_columns=json_columns)
            except ValueError as exc:
                raise SourceError(f"{self.where}: {exc}") from None
            id_index = encoder.id_index
            encode = encoder.raw(driver_pymysql.raw_columns(cur)) if raw else encoder.encode
            rows = cur.fetchall()
        if then is not None and self._ahead is not None:
            self._send("listing query", query, then)
        for row in rows:
            payload: bytes | InvalidJSON
            try:
                payload = encode(row)
            except InvalidJSON as exc:
                payload = exc
            yield _as_id(row[id_index], 0, "listing"), payload


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


def _as_id(value: object, row: int, query: str, max_id: int = MAX_ID) -> int:
    if type(value) is int and 0 <= value <= max_id:
        return value
    if type(value) is bytes and value.isdigit() and int(value) <= max_id:  # a raw row's id
        return int(value)
    if isinstance(value, str | bytes | decimal.Decimal) and _digits(value):
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        raise SourceError(f"{query} query returned a non-integer id {value!r}{_at(row)}")
    if not 0 <= number <= MAX_ID:
        raise SourceError(f"{query} query returned an out-of-range id {value!r}{_at(row)}")
    if number > max_id:
        raise SourceError(
            f"{query} query returned id {number}{_at(row)}, above {max_id} (2^53-1), which "
            "JavaScript readers of the hot list would misread; [keys] allow_big_ids = true "
            "writes it anyway"
        )
    return number


def _at(row: int) -> str:
    return f" in row {row}" if row else ""


def _digits(value: str | bytes | decimal.Decimal) -> bool:
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    return text.strip().isascii() and text.strip().isdigit()
