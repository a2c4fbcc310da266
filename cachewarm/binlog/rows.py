"""Row images of a rows event, reduced to the few integer columns `follow` reads.

python-mysql-replication decodes every column of every row into Python objects
(decimals, datetimes, strings): most of a follower's CPU, spent on values it throws
away. `RowReader` walks the event body by length instead, using the table map's
column types and metadata, and decodes only the wanted integer columns of each image
(both images of an UPDATE).

The walk of an image depends only on which of its columns are NULL, so it is compiled
once per NULL pattern into a few steps: skip a run of fixed-size columns, skip one
length-prefixed value, read one wanted integer.

Anything it cannot walk fails loudly, with one line, before any of the event's ids
are used: a column type it has no length rule for, a wanted column that is not an
integer, a table map without column names or a row image without every column (the
server's binlog_row_metadata or binlog_row_image changed at runtime), or a body whose
rows do not end exactly where the event does (the table map and the rows disagree).
These checks run once per table map and bitmap, not per row. It reads the event's
body through the reader's packet (`packet.read`, `packet.read_bytes`, `event_size`),
as the library's own row decoding does; the library's `rows` cannot be used on the
same event afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pymysqlreplication.constants import FIELD_TYPE as T
from pymysqlreplication.row_event import UpdateRowsEvent

from ..errors import BinlogUnfit

Value = int | None
Step = tuple[int, int, int, int, bool]  # gap, length-prefix bytes, slot, int size, signed
MAX_WALKS = 256  # NULL patterns kept per table and bitmap; more is a table of many NULLables

INT_SIZES = {T.TINY: 1, T.SHORT: 2, T.INT24: 3, T.LONG: 4, T.LONGLONG: 8}
FIXED_SIZES = {
    **INT_SIZES,
    T.FLOAT: 4,
    T.DOUBLE: 8,
    T.YEAR: 1,
    T.DATE: 3,
    T.TIME: 3,
    T.DATETIME: 8,
    T.TIMESTAMP: 4,
}
FRACTIONAL = {T.TIMESTAMP2: 4, T.DATETIME2: 5, T.TIME2: 3}  # bytes before the fraction
PREFIXED = (T.BLOB, T.GEOMETRY, T.JSON)  # the prefix size is in the column's metadata
DIGIT_BYTES = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)  # DECIMAL: bytes of 0-8 leftover digits


def decimal_size(precision: int, scale: int) -> int:
    """DECIMAL(p,s) packs each side in 4 bytes per 9 digits plus the leftover digits."""
    whole = precision - scale
    return whole // 9 * 4 + DIGIT_BYTES[whole % 9] + scale // 9 * 4 + DIGIT_BYTES[scale % 9]


def value_size(column: Any) -> tuple[int, int]:
    """(fixed size, length-prefix size) of one non-NULL value; exactly one is non-zero.

    Raises ValueError for a type without a rule here.
    """
    kind = column.type
    if kind in FIXED_SIZES:
        return FIXED_SIZES[kind], 0
    if kind in FRACTIONAL:
        return FRACTIONAL[kind] + (column.fsp + 1) // 2, 0
    if kind == T.NEWDECIMAL:
        return decimal_size(column.precision, column.decimals), 0
    if kind in (T.VARCHAR, T.STRING):
        return 0, 1 if column.max_length <= 255 else 2
    if kind in (T.ENUM, T.SET):
        return column.size, 0
    if kind == T.BIT:
        return column.bytes, 0
    if kind in PREFIXED:
        return 0, column.length_size
    raise ValueError(f"binlog column type {kind}")


class _Image:
    """How to walk one row image of a table, for one columns-present bitmap."""

    def __init__(self, sizes: list[tuple[int, int]], slots: list[int], signed: list[bool]):
        self.sizes, self.slots, self.signed = sizes, slots, signed
        self.null_bytes = (len(sizes) + 7) // 8
        self.walks: dict[bytes, tuple[list[Step], int]] = {}

    def walk(self, nulls: bytes) -> tuple[list[Step], int]:
        """The steps for one NULL pattern, and the bytes after the last one; kept."""
        bits = int.from_bytes(nulls, "little")
        steps: list[Step] = []
        gap = 0
        for j, (fixed, prefix) in enumerate(self.sizes):
            if bits >> j & 1:
                continue  # NULL: no bytes, and a wanted column stays None
            if self.slots[j] >= 0:
                steps.append((gap, 0, self.slots[j], fixed, self.signed[j]))
                gap = 0
            elif prefix:
                steps.append((gap, prefix, 0, 0, False))
                gap = 0
            else:
                gap += fixed
        if len(self.walks) >= MAX_WALKS:
            self.walks.clear()
        self.walks[nulls] = (steps, gap)
        return steps, gap


class RowReader:
    """Per table name, the distinct integer columns to read, e.g. (product id, primary key).

    `images(event)` returns, per row image, the wanted columns' values in that order,
    None for NULL. A wanted column missing from the table raises `missing(event, name)`.
    """

    def __init__(
        self, wanted: Mapping[str, Sequence[str]], missing: Callable[[Any, str], Exception]
    ) -> None:
        self.wanted = wanted
        self.missing = missing
        # per table name, not table id: a table gets a new id at each ALTER or reopening
        self._tables: dict[str, tuple[object, dict[bytes, _Image]]] = {}

    def images(self, event: Any) -> list[tuple[Value, ...]]:
        images = self._images(event)
        packet = event.packet
        body: bytes = packet.read(event.event_size - packet.read_bytes)
        width = len(self.wanted[event.table])
        out: list[tuple[Value, ...]] = []
        pos, end = 0, len(body)
        from_bytes = int.from_bytes
        try:
            while pos < end:
                for image in images:
                    nulls = body[pos : pos + image.null_bytes]
                    pos += image.null_bytes
                    walk = image.walks.get(nulls)
                    steps, tail = image.walk(nulls) if walk is None else walk
                    values: list[Value] = [None] * width
                    for gap, prefix, slot, size, signed in steps:
                        pos += gap
                        if prefix == 1:
                            pos += 1 + body[pos]
                        elif prefix:
                            pos += prefix + from_bytes(body[pos : pos + prefix], "little")
                        else:
                            value = body[pos : pos + size]
                            values[slot] = from_bytes(value, "little", signed=signed)
                            pos += size
                    pos += tail
                    out.append(tuple(values))
        except IndexError:
            pos = end + 1
        if pos != end:
            raise BinlogUnfit(
                f"a row event of {event.schema}.{event.table} does not match its table map "
                f"({pos} of {end} bytes read): the follower stops before it"
            )
        return out

    def _images(self, event: Any) -> list[_Image]:
        """The image walkers of this event's table map and bitmaps, built on first use."""
        columns = event.columns
        cached = self._tables.get(event.table)
        if cached is None or cached[0] is not columns:
            cached = (columns, {})  # a new table map: after ALTER TABLE or a rotation
            self._tables[event.table] = cached
        bitmaps = [event.columns_present_bitmap]
        if isinstance(event, UpdateRowsEvent):
            bitmaps.append(event.columns_present_bitmap2)
        by_bitmap = cached[1]
        images = []
        for bitmap in bitmaps:
            image = by_bitmap.get(bitmap)
            if image is None:
                image = by_bitmap[bitmap] = self._image(event, bitmap)
            images.append(image)
        return images

    def _image(self, event: Any, bitmap: bytes) -> _Image:
        columns = event.columns
        where = f"{event.schema}.{event.table}"
        if event.number_of_columns != len(columns):
            raise BinlogUnfit(
                f"a row event of {where} has {event.number_of_columns} columns, its table map "
                f"{len(columns)}: the follower stops before it"
            )
        if any(c.name is None for c in columns):
            raise BinlogUnfit(
                f"the table map of {where} carries no column names: binlog_row_metadata was "
                "set short of FULL while following; set binlog_row_metadata=FULL, then run "
                "`cachewarm follow --resync` (the follower stops before these rows)"
            )
        present = [c for i, c in enumerate(columns) if bitmap[i >> 3] >> (i & 7) & 1]
        if len(present) != len(columns):
            raise BinlogUnfit(
                f"a row event of {where} carries {len(present)} of its {len(columns)} columns: "
                "binlog_row_image was set short of FULL (globally or in a session) while "
                "following; set binlog_row_image=FULL, then run `cachewarm follow --resync` "
                "(the follower stops before these rows)"
            )
        wanted = list(self.wanted[event.table])
        names = [c.name for c in columns]
        for name in wanted:
            if name not in names:
                raise self.missing(event, name)
        sizes, slots, signed = [], [], []
        for column in present:
            try:
                sizes.append(value_size(column))
            except ValueError as exc:
                raise BinlogUnfit(
                    f"{where} column {column.name!r} has {exc}, which the follower cannot "
                    "read: the follower stops before its rows"
                ) from None
            slot = wanted.index(column.name) if column.name in wanted else -1
            if slot >= 0 and column.type not in INT_SIZES:
                raise BinlogUnfit(
                    f"{where} column {column.name!r} is not an integer column "
                    f"(binlog type {column.type}): the follower maps integer ids only"
                )
            slots.append(slot)
            signed.append(not column.unsigned)
        return _Image(sizes, slots, signed)
