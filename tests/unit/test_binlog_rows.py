"""cachewarm.rows without a server: value sizes, and the walk over synthetic row images.

The sizes of real values are checked against the library's full decoding on a real
binlog in tests/integration/test_binlog_rows.py; here the documented storage sizes,
and the walk itself (NULL patterns, length prefixes, both images, wanted integers)
over bodies built column by column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from pymysqlreplication.column import Column
from pymysqlreplication.constants import FIELD_TYPE as T
from pymysqlreplication.row_event import UpdateRowsEvent, WriteRowsEvent

from cachewarm.binlog.rows import RowReader, decimal_size, value_size
from cachewarm.errors import BinlogUnfit


@pytest.mark.parametrize(
    ("precision", "scale", "size"),
    # MySQL manual, "DECIMAL Data Type Characteristics": 4 bytes per 9 digits, leftovers 0-4.
    [(10, 2, 5), (18, 9, 8), (20, 6, 10), (5, 0, 3), (9, 9, 4), (65, 30, 30), (1, 0, 1)],
)
def test_decimal_sizes_are_the_documented_ones(precision: int, scale: int, size: int) -> None:
    assert decimal_size(precision, scale) == size


def _column(kind: int, **meta: Any) -> Column:
    return Column(type=kind, name="c", unsigned=False, **meta)


@pytest.mark.parametrize(
    ("column", "size"),
    [
        (_column(T.DATETIME2, fsp=0), (5, 0)),
        (_column(T.DATETIME2, fsp=3), (7, 0)),
        (_column(T.DATETIME2, fsp=6), (8, 0)),
        (_column(T.TIMESTAMP2, fsp=1), (5, 0)),
        (_column(T.TIME2, fsp=5), (6, 0)),
        (_column(T.VARCHAR, max_length=255), (0, 1)),
        (_column(T.VARCHAR, max_length=256), (0, 2)),
        (_column(T.STRING, max_length=400), (0, 2)),
        (_column(T.BLOB, length_size=4), (0, 4)),
        (_column(T.BIT, bits=13, bytes=2), (2, 0)),
        (_column(T.SET, size=8), (8, 0)),
        (_column(T.LONGLONG), (8, 0)),
    ],
)
def test_value_sizes(column: Column, size: tuple[int, int]) -> None:
    assert value_size(column) == size


def test_an_unknown_type_has_no_size() -> None:
    with pytest.raises(ValueError, match="binlog column type 14"):
        value_size(_column(T.NEWDATE))


@dataclass
class _Packet:
    body: bytes
    read_bytes: int = 0

    def read(self, n: int) -> bytes:
        out = self.body[self.read_bytes : self.read_bytes + n]
        self.read_bytes += n
        return out


@dataclass
class _Event:
    columns: list[Column]
    packet: _Packet
    columns_present_bitmap: bytes
    table: str = "t"
    schema: str = "shop"
    table_id: int = 7
    number_of_columns: int = field(init=False)
    event_size: int = field(init=False)

    def __post_init__(self) -> None:
        self.number_of_columns = len(self.columns)
        self.event_size = len(self.packet.body)


class _Update(_Event, UpdateRowsEvent):  # type: ignore[misc]
    columns_present_bitmap2: bytes = b""


class _Write(_Event, WriteRowsEvent):  # type: ignore[misc]
    pass


INTS = [(T.TINY, 1), (T.SHORT, 2), (T.INT24, 3), (T.LONG, 4), (T.LONGLONG, 8)]
OTHERS = [
    _column(T.DOUBLE),
    _column(T.NEWDECIMAL, precision=12, decimals=4),
    _column(T.DATETIME2, fsp=3),
    _column(T.VARCHAR, max_length=80),
    _column(T.VARCHAR, max_length=1020),
    _column(T.BLOB, length_size=2),
    _column(T.BLOB, length_size=3),
    _column(T.ENUM, size=1),
    _column(T.BIT, bits=1, bytes=1),
]


@st.composite
def tables(draw: st.DrawFn) -> tuple[list[Column], list[str]]:
    """A table of other columns with 1-3 wanted integer columns among them."""
    columns = [draw(st.sampled_from(OTHERS)) for _ in range(draw(st.integers(0, 12)))]
    wanted = []
    for n in range(draw(st.integers(1, 3))):
        kind, _ = draw(st.sampled_from(INTS))
        name = f"w{n}"
        at = draw(st.integers(0, len(columns)))
        columns.insert(at, Column(type=kind, name=name, unsigned=draw(st.booleans())))
        wanted.append(name)
    return columns, wanted


def _value(draw: st.DrawFn, column: Column) -> tuple[bytes, int | None]:
    """One non-NULL value's bytes, and the integer the walk must read from a wanted one."""
    fixed, prefix = value_size(column)
    if column.type in dict(INTS):
        bits = fixed * 8
        low, high = (
            (0, 2**bits - 1) if column.unsigned else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        )
        number = draw(st.integers(low, high))
        return number.to_bytes(fixed, "little", signed=not column.unsigned), number
    if fixed:
        return draw(st.binary(min_size=fixed, max_size=fixed)), None
    data = draw(st.binary(max_size=300))
    return len(data).to_bytes(prefix, "little") + data, None


@st.composite
def events(draw: st.DrawFn) -> tuple[_Event, list[str], list[tuple[int | None, ...]], int]:
    """A rows event, its wanted columns, their values per image, the last image's size."""
    columns, wanted = draw(tables())
    update = draw(st.booleans())
    body, expected = b"", []
    for _ in range(draw(st.integers(1, 5)) * (2 if update else 1)):
        nulls, values, found = 0, b"", dict.fromkeys(wanted)
        for j, column in enumerate(columns):
            if draw(st.booleans()) and draw(st.booleans()):
                nulls |= 1 << j
                continue
            data, number = _value(draw, column)
            values += data
            if column.name in found:
                found[column.name] = number
        image = nulls.to_bytes((len(columns) + 7) // 8, "little") + values
        body += image
        expected.append(tuple(found.values()))
    present = b"\xff" * ((len(columns) + 7) // 8)
    event: _Event = (_Update if update else _Write)(columns, _Packet(body), present)
    if isinstance(event, _Update):
        event.columns_present_bitmap2 = present
    return event, wanted, expected, len(image)


def _reader(wanted: list[str]) -> RowReader:
    return RowReader({"t": wanted}, lambda event, name: KeyError(name))


@given(events())
def test_the_walk_reads_the_wanted_integers_of_every_image(case: Any) -> None:
    event, wanted, expected, _ = case
    assert _reader(wanted).images(event) == expected


@given(events(), st.integers(1, 2**16))
def test_a_body_cut_short_fails_with_one_line(case: Any, cut: int) -> None:
    event, wanted, _, last = case
    assume(last > 1)
    short = event.packet.body[: -(1 + cut % (last - 1))]  # the last image loses some bytes
    event.packet, event.event_size = _Packet(short), len(short)
    with pytest.raises(BinlogUnfit, match=r"^a row event of shop\.t does not match its"):
        _reader(wanted).images(event)


def test_a_missing_wanted_column_and_an_unknown_type_fail_before_reading() -> None:
    columns = [Column(type=T.LONG, name="id", unsigned=False), _column(T.NEWDATE)]
    event = _Write(columns, _Packet(b"\x00" + b"\x01\x00\x00\x00" * 2), b"\x03")
    with pytest.raises(KeyError, match="product_id"):
        _reader(["product_id"]).images(event)
    assert event.packet.read_bytes == 0
    with pytest.raises(BinlogUnfit, match=r"^shop\.t column 'c' has binlog column type 14, "):
        _reader(["id"]).images(event)
