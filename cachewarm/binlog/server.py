"""The MySQL/MariaDB binary log: what `follow` needs of the server, and a row-event reader.

Row events are read with python-mysql-replication (built on PyMySQL), their rows by
rows.py, which reads only the mapped columns. The library's users trip over a few
things this module settles once:
- with `binlog_row_metadata` short of FULL, rows arrive keyed by made-up column names,
  so the product-id column cannot be found: it is a precondition, like ROW format and
  FULL row images (an UPDATE must carry the old row too, or a product moved between
  categories leaves its old category's listing behind);
- its MariaDB mode (`is_mariadb`) ignores `log_file`/`log_pos` and can only start from a
  GTID state, so positions are given in the plain mode, which MariaDB serves as well;
- it passes events it has no class for (MariaDB's compressed events) over without a
  word unless asked: they are asked for, and stop the follower;
- with `blocking=True` a quiet server sends nothing at all, so the follower could neither
  flush a batch nor notice SIGTERM: the server is asked for a heartbeat every
  `max_delay` seconds, and heartbeats are passed through as events;
- it opens its schema connection with PyMySQL's deprecated `db=` argument, which
  warns on every connect: its `pymysql_wrapper` hook renames it;
- a reader with the `server_id` of another replica makes the server drop one of the two
  connections, each time the other reconnects: the id is configurable, and the default
  is derived from host, prefix and version, in the upper half of the 32-bit range that
  hand-numbered replicas rarely use.
"""

from __future__ import annotations

import re
import socket
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pymysql
import pymysql.cursors
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import (
    HeartbeatLogEvent,
    MariadbGtidEvent,
    NotImplementedEvent,
    QueryEvent,
    RotateEvent,
    XAPrepareEvent,
    XidEvent,
)
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from ..config import Settings
from ..errors import BinlogUnfit, LostPosition, SourceError
from ..mysql.source import connect_args, describe
from ..urls import mysql_target

ROW_EVENTS = (WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent)
EVENTS = [
    *ROW_EVENTS,
    XidEvent,
    QueryEvent,
    RotateEvent,
    HeartbeatLogEvent,
    MariadbGtidEvent,
    XAPrepareEvent,
    NotImplementedEvent,  # the library has no class for MariaDB's compressed events
]
# MariaDB's QUERY_COMPRESSED_EVENT and its six compressed rows events (log_bin_compress)
COMPRESSED_EVENTS = frozenset(range(0xA5, 0xAC))
FL_PREPARED_XA = 64  # MariaDB GTID event flag: the transaction ends in XA PREPARE
ER_MASTER_FATAL_READING_BINLOG = 1236  # the server cannot send from the asked position
# Grants as SHOW GRANTS prints them; MariaDB 10.5+ prints BINLOG MONITOR for REPLICATION CLIENT.
GRANTS = {
    "REPLICATION SLAVE": ("REPLICATION SLAVE", "REPLICATION REPLICA"),
    "REPLICATION CLIENT": ("REPLICATION CLIENT", "BINLOG MONITOR"),
}


@dataclass(frozen=True)
class Position:
    """Where the follower resumes: the start of a transaction, and the GTID before it."""

    file: str
    pos: int
    gtid: str = ""

    def __str__(self) -> str:
        return f"{self.file}:{self.pos}"


def default_server_id(prefix: str, version: int) -> int:
    """Stable per host and namespace, so a restart reuses it and two hosts differ."""
    seed = f"{socket.gethostname()}/{prefix}:v{version}".encode()
    return 2**31 + zlib.crc32(seed) % 2**31


def server_id(settings: Settings) -> int:
    return settings.follow.server_id or default_server_id(
        settings.keys.prefix, settings.keys.version
    )


def schema(settings: Settings) -> str:
    return (
        settings.follow.schema or mysql_target(settings.mysql.url, settings.mysql.password).database
    )


def _pymysql_args(settings: Settings) -> dict[str, Any]:
    """PyMySQL arguments: the reader is PyMySQL whatever `[mysql] driver` says."""
    kwargs, ssl = connect_args(settings.mysql)
    kwargs.pop("database")
    kwargs["ssl"] = {**ssl, "check_hostname": settings.mysql.ssl_verify_identity} if ssl else None
    if "password" not in kwargs and "read_default_file" not in kwargs:
        kwargs["password"] = ""
    return kwargs


class Control:
    """An ordinary connection for the checks and positions the reader does not give."""

    def __init__(self, settings: Settings) -> None:
        self.where = mysql_target(settings.mysql.url, settings.mysql.password).display()
        try:
            self._conn = pymysql.connect(**_pymysql_args(settings))
        except pymysql.MySQLError as exc:
            raise SourceError(f"cannot connect to {self.where}: {describe(exc)}") from None

    def close(self) -> None:
        self._conn.close()

    def rows(self, sql: str, args: Iterable[object] = ()) -> list[tuple[Any, ...]]:
        try:
            with self._conn.cursor() as cur:
                cur.execute(sql, tuple(args))
                return list(cur.fetchall())
        except pymysql.MySQLError as exc:
            raise SourceError(f"{self.where}: {sql.split()[0]} failed: {describe(exc)}") from None

    def variables(self, *names: str) -> dict[str, str]:
        found = self.rows(
            "SHOW GLOBAL VARIABLES WHERE Variable_name IN (" + ",".join(["%s"] * len(names)) + ")",
            names,
        )
        return {str(name).lower(): str(value) for name, value in found}

    def current(self) -> Position:
        """The end of the binlog now: `--from-now` and `--resync` start here."""
        try:
            status = self.rows("SHOW MASTER STATUS")
        except SourceError as exc:
            raise BinlogUnfit(f"{exc} (grant REPLICATION CLIENT to the follower)") from None
        if not status:
            raise BinlogUnfit(f"binary log is off on {self.where}: start the server with log_bin")
        gtid = self.variables("gtid_binlog_pos").get("gtid_binlog_pos", "")
        return Position(str(status[0][0]), int(status[0][1]), gtid)

    def server_id(self) -> int:
        return int(self.variables("server_id")["server_id"])

    def check_available(self, position: Position) -> None:
        """Fail unless the server still has the binlog from `position` on."""
        logs = {str(row[0]): int(row[1]) for row in self.rows("SHOW BINARY LOGS")}
        size = logs.get(position.file)
        if size is None or position.pos > size:
            oldest = min(logs, default="none")
            raise LostPosition(
                f"binlog position {position} is no longer on {self.where} (oldest: {oldest}); "
                "changes since then may be missed: run `cachewarm follow --resync`"
            )


def check_preconditions(
    ctl: Control, settings: Settings, tables: Iterable[str], query_tables: Iterable[str]
) -> dict[str, str]:
    """Check what following needs; returns the primary key column of each query table.

    Each failure is one line naming the server setting or grant to change.
    """
    where = ctl.where
    want = (
        "log_bin",
        "binlog_format",
        "binlog_row_image",
        "binlog_row_metadata",
        "log_bin_compress",
        "server_id",
    )
    have = ctl.variables(*want)
    if have.get("log_bin", "OFF").upper() not in ("ON", "1"):
        raise BinlogUnfit(f"binary log is off on {where}: start the server with log_bin")
    for name, needed in (("binlog_format", "ROW"), ("binlog_row_image", "FULL")):
        if have.get(name, "").upper() != needed:
            raise BinlogUnfit(f"{where} has {name}={have.get(name)}; follow needs {name}={needed}")
    metadata = have.get("binlog_row_metadata")
    if metadata is not None and metadata.upper() != "FULL":
        raise BinlogUnfit(
            f"{where} has binlog_row_metadata={metadata}; follow needs binlog_row_metadata=FULL"
        )
    if have.get("log_bin_compress", "OFF").upper() in ("ON", "1"):
        # python-mysql-replication passes compressed row events over without a word:
        # following such a log would miss every edit in it.
        raise BinlogUnfit(
            f"{where} has log_bin_compress=ON; follow cannot read compressed row events "
            "(set log_bin_compress=OFF)"
        )
    ours = server_id(settings)
    if int(have.get("server_id", "0")) == ours:
        raise BinlogUnfit(
            f"[follow] server_id {ours} is the server's own server_id; choose another"
        )
    grants = " ".join(str(row[0]).upper() for row in ctl.rows("SHOW GRANTS FOR CURRENT_USER()"))
    everything = re.search(r"GRANT ALL PRIVILEGES ON \*\.\* ", grants) is not None
    for grant, spellings in GRANTS.items():
        # Whole privilege names only: REPLICATION SLAVE ADMIN is not REPLICATION SLAVE.
        held = (re.search(rf"(?:GRANT |, ){s}(?:,| ON )", grants) for s in spellings)
        if not everything and not any(held):
            raise BinlogUnfit(f"the follower's MySQL user lacks the {grant} grant on *.*")
    db = schema(settings)
    for table in (*tables, *query_tables):
        try:
            ctl.rows(f"SELECT 1 FROM {_ident(db)}.{_ident(table)} LIMIT 0")
        except SourceError as exc:
            raise BinlogUnfit(f"[follow] table {db}.{table}: {exc}") from None
    columns = ctl.rows(
        "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_KEY, DATA_TYPE FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = %s",
        (db,),
    )
    types = {(str(t), str(c)): str(d) for t, c, _, d in columns}
    for table, column in settings.follow.tables.items():
        if (table, column) not in types:
            raise BinlogUnfit(f"[follow] tables: {db}.{table} has no column {column!r}")
        if not types[table, column].endswith("int"):
            raise BinlogUnfit(
                f"[follow] tables: {db}.{table}.{column} is {types[table, column]}; "
                "product ids must be an integer column"
            )
    keys: dict[str, str] = {}
    for table in query_tables:
        primary = [(str(c), str(d)) for t, c, k, d in columns if t == table and k == "PRI"]
        if len(primary) != 1 or not primary[0][1].endswith("int"):
            raise BinlogUnfit(
                f"[follow] queries: {db}.{table} needs a one-column integer primary key"
            )
        keys[table] = primary[0][0]
    return keys


CHANGES_CHILD = ("CASCADE", "SET NULL", "SET DEFAULT")  # FK rules that edit the child's rows


def cascading_parents(ctl: Control, settings: Settings, watched: Iterable[str]) -> dict[str, str]:
    """Tables whose edits change watched tables' rows through a foreign key, unseen.

    InnoDB applies ON DELETE / ON UPDATE CASCADE, SET NULL and SET DEFAULT inside the
    server: the child rows it changes are not in the binlog. Each such parent (and its
    own cascading parents, transitively) is returned with the constraint that makes it
    one; a change to it invalidates every listing. Not returned: a parent whose
    `[follow] tables` column is the one a one-column key references, with the child
    mapped by the referencing column: the parent's own rows name the same product ids.
    A parent in another schema cannot be followed and is refused.
    """
    db = schema(settings)
    rows = ctl.rows(
        "SELECT k.CONSTRAINT_NAME, k.TABLE_NAME, k.COLUMN_NAME, k.REFERENCED_TABLE_SCHEMA, "
        "k.REFERENCED_TABLE_NAME, k.REFERENCED_COLUMN_NAME, r.UPDATE_RULE, r.DELETE_RULE "
        "FROM information_schema.REFERENTIAL_CONSTRAINTS r "
        "JOIN information_schema.KEY_COLUMN_USAGE k ON k.CONSTRAINT_SCHEMA = r.CONSTRAINT_SCHEMA "
        "AND k.CONSTRAINT_NAME = r.CONSTRAINT_NAME AND k.TABLE_NAME = r.TABLE_NAME "
        "WHERE r.CONSTRAINT_SCHEMA = %s AND k.REFERENCED_TABLE_NAME IS NOT NULL",
        (db,),
    )
    keys: dict[tuple[str, str], list[tuple[str, str, str, str, bool]]] = {}
    for name, child, column, parent_db, parent, referenced, on_update, on_delete in rows:
        edits = str(on_update) in CHANGES_CHILD or str(on_delete) in CHANGES_CHILD
        keys.setdefault((str(child), str(name)), []).append(
            (str(column), str(parent_db), str(parent), str(referenced), edits)
        )
    mapped = settings.follow.tables
    parents: dict[str, str] = {}
    reached = set(watched)
    while True:
        grew = False
        for (child, name), columns in sorted(keys.items()):
            column, parent_db, parent, referenced, edits = columns[0]
            if child not in reached or not edits or parent in parents:
                continue
            if parent_db != db:
                raise BinlogUnfit(
                    f"foreign key {db}.{child}.{name} cascades from {parent_db}.{parent}, "
                    f"outside the followed schema {db}: the follower cannot see its edits"
                )
            same_ids = (
                len(columns) == 1
                and mapped.get(child) == column
                and mapped.get(parent) == referenced
            )
            if not same_ids:
                parents[parent] = f"{db}.{child}.{name}"
                reached.add(parent)
                grew = True
        if not grew:
            return parents


def _ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def events(
    settings: Settings, position: Position, tables: Iterable[str]
) -> tuple[BinLogStreamReader, Iterator[Any]]:
    """A reader from `position` on, filtered by schema and table in the reader itself.

    Row events of other tables are dropped before their rows are decoded.
    """
    args = _pymysql_args(settings)
    args.pop("autocommit")
    args["read_timeout"] = max(30.0, 20 * settings.follow.max_delay)
    reader = BinLogStreamReader(
        connection_settings=args,
        server_id=server_id(settings),
        log_file=position.file,
        log_pos=position.pos,
        resume_stream=True,
        blocking=True,
        only_schemas=[schema(settings)],
        only_tables=list(tables),
        only_events=EVENTS,
        filter_non_implemented_events=False,
        slave_heartbeat=settings.follow.max_delay,
        enable_logging=False,
        pymysql_wrapper=_connect,
    )
    return reader, iter(reader)


def _connect(**kwargs: Any) -> pymysql.connections.Connection[Any]:
    """The reader's schema connection still passes `db`, which PyMySQL 1.1+ deprecates."""
    if "db" in kwargs:
        kwargs["database"] = kwargs.pop("db")
    return pymysql.connect(**kwargs)


def is_lost_position(exc: BaseException) -> bool:
    """The server refused to send from our position: purged, or never written."""
    return isinstance(exc, pymysql.MySQLError) and bool(
        exc.args and exc.args[0] == ER_MASTER_FATAL_READING_BINLOG
    )
