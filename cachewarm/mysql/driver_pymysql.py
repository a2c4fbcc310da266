"""PyMySQL, reading result rows in one loop per row instead of one method call per field.

Stock PyMySQL builds a packet object per row and calls a method per field to read its
length prefix and bytes: in a warm with the plain install that is most of the CPU. The
Connection below reads each row's payload and walks its length-coded fields inline, and
gives the same values, errors and connection state as stock PyMySQL. A listing read can
also ask for the rows raw (each field's bytes as the server sent them, None for NULL),
so that encode.py turns the server's text into JSON without building Python values
only to print them again.

It overrides private parts of PyMySQL, checked here at import: the result's
`_read_rowdata_packet` / `_read_rowdata_packet_unbuffered` / `_check_packet_is_eof`
and its `converters`, `fields` and `unbuffered_active`; the connection's
`_read_query_result`, `_read_bytes`, `_next_seq_id`, `_force_close`, `_result` and
`_execute_command`; the cursor's `_get_db`, `_clear_result`, `_do_get_result` and
`_executed`.
They are the same from PyMySQL 1.1 to 1.2; any other version gets stock PyMySQL
(`CONNECT` is then pymysql.connect and `raw_columns` is never called), slower but the
same bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pymysql
import pymysql.connections as stock
import pymysql.cursors
from pymysql import err
from pymysql.constants import COMMAND, CR, FLAG
from pymysql.protocol import MysqlPacket

from .encode import RawColumn

MAX_PACKET_LEN = 2**24 - 1  # a payload this long continues in the next packet
VERSIONS = ((1, 1), (1, 2))  # PyMySQL minor versions whose internals are the ones used here
Row = tuple[Any, ...]


def _payload(conn: Any) -> bytes:
    """The next packet's payload: PyMySQL's _read_packet without the packet object.

    The socket timeout needs no check here: the result's first packet went through
    _read_packet, which set the read timeout, and nothing is written mid-result.
    """
    parts = []
    while True:
        header = conn._read_bytes(4)
        length = header[0] | header[1] << 8 | header[2] << 16
        if header[3] != conn._next_seq_id:
            conn._force_close()
            if header[3] == 0:  # MariaDB's error packet at shutdown
                raise err.OperationalError(
                    CR.CR_SERVER_LOST, "Lost connection to MySQL server during query"
                )
            raise err.InternalError(
                f"Packet sequence number wrong - got {header[3]} expected {conn._next_seq_id}"
            )
        conn._next_seq_id = (conn._next_seq_id + 1) % 256
        parts.append(conn._read_bytes(length))
        if length < MAX_PACKET_LEN:  # rows over 16 MB span several packets
            return parts[0] if len(parts) == 1 else b"".join(parts)


class Result(stock.MySQLResult):
    """A result whose rows are parsed inline; raw when its connection asks for it."""

    def _next_row(self) -> Row | None:
        """The next row, or None at the end; an error packet (a killed statement) raises."""
        conn: Any = self.connection
        data = _payload(conn)
        first = data[0]
        if first == 0xFF or (first == 0xFE and len(data) < 9):  # error, or EOF
            packet = MysqlPacket(data, conn.encoding)
            if first == 0xFF:
                self.unbuffered_active = False
                packet.raise_for_error()
            self._check_packet_is_eof(packet)  # type: ignore[attr-defined]
            return None
        raw = conn.raw_rows
        pos = 0
        row: list[Any] = []
        append = row.append
        for encoding, converter in self.converters:  # type: ignore[attr-defined]
            size = data[pos]
            if size < 251:
                start = pos + 1
                pos = start + size
            elif size == 251:  # NULL
                pos += 1
                append(None)
                continue
            else:  # a 2-, 3- or 8-byte length follows
                start = pos + (3 if size == 252 else 4 if size == 253 else 9)
                pos = start + int.from_bytes(data[pos + 1 : start], "little")
            value: Any = data[start:pos]
            if not raw:
                if encoding is not None:
                    value = value.decode(encoding)
                if converter is not None:
                    value = converter(value)
            append(value)
        return tuple(row)

    def _read_rowdata_packet(self) -> None:
        rows = []
        next_row = self._next_row
        while (row := next_row()) is not None:
            rows.append(row)
        self.connection = None  # as stock: drop the reference cycle
        self.affected_rows = len(rows)
        self.rows = tuple(rows)

    def _read_rowdata_packet_unbuffered(self) -> Row | None:
        if not self.unbuffered_active:
            return None
        row = self._next_row()
        if row is None:
            self.unbuffered_active = False
            self.connection = None
            self.rows = None
            return None
        self.affected_rows = 1
        self.rows = (row,)
        return row


class Connection(stock.Connection):
    """pymysql.Connection with the Result above; `raw_rows` set = the next results raw."""

    raw_rows = False

    def _read_query_result(self, unbuffered: bool = False) -> int | None:
        self._result = None
        result = Result(self)
        if unbuffered:
            result.init_unbuffered_query()
        else:
            result.read()
        self._result = result
        if result.server_status is not None:
            self.server_status = result.server_status
        return result.affected_rows


def raw_columns(cur: Any) -> list[RawColumn]:
    """How each column of the cursor's raw result is encoded, from the driver's own view.

    `decode` is what PyMySQL would have done to the field's bytes, for the columns
    encode.py does not spell from the raw text itself.
    """
    result = cur._result
    return [
        RawColumn(
            type_code=field.type_code,
            text=encoding is not None,
            zerofill=bool(field.flags & FLAG.ZEROFILL),
            decode=_decoder(encoding, converter),
        )
        for field, (encoding, converter) in zip(result.fields, result.converters, strict=True)
    ]


def _decoder(
    encoding: str | None, converter: Callable[[Any], Any] | None
) -> Callable[[bytes], Any]:
    if encoding is None:
        return converter or _same
    if converter is None:
        return lambda raw: raw.decode(encoding)
    return lambda raw: converter(raw.decode(encoding))


def _same(raw: bytes) -> bytes:
    return raw


def _compatible() -> bool:
    needed: dict[type, Sequence[str]] = {
        stock.MySQLResult: (
            "_read_rowdata_packet",
            "_read_rowdata_packet_unbuffered",
            "_check_packet_is_eof",
            "_get_descriptions",
        ),
        stock.Connection: (
            "_read_query_result",
            "_read_bytes",
            "_force_close",
            "_execute_command",
        ),
        pymysql.cursors.Cursor: ("_get_db", "_clear_result", "_do_get_result"),
    }
    return tuple(pymysql.VERSION[:2]) in VERSIONS and all(
        hasattr(cls, name) for cls, names in needed.items() for name in names
    )


FAST = _compatible()
CONNECT: Callable[..., Any] = Connection if FAST else pymysql.connect


class Cursor(pymysql.cursors.Cursor):
    """A buffered cursor whose execute() can be split: send() now, receive() later.

    In between the server runs the statement while the caller does other work, which
    is how a warm has the next batch's listing query run while it writes this one.
    """

    def send(self, query: str, args: dict[str, Any]) -> None:
        conn: Any = self._get_db()  # type: ignore[attr-defined]
        self._clear_result()  # type: ignore[attr-defined]
        sql = self.mogrify(query, args)
        self._executed = sql  # as execute() records it; fetch*() check it
        conn._execute_command(COMMAND.COM_QUERY, sql.encode(conn.encoding))

    def receive(self) -> None:
        conn: Any = self._get_db()  # type: ignore[attr-defined]
        conn._affected_rows = conn._read_query_result()
        self._do_get_result()  # type: ignore[attr-defined]
