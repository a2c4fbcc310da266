"""ListingEncoder.raw (listing JSON from the server's field bytes) against encode().

Each column gets the bytes a server sends for its type and the value PyMySQL would
decode them to; both paths must give the same bytes, or fail alike, with either JSON
library. The real-server check of both drivers is in tests/integration/test_warm.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pymysql
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from pymysql.connections import TEXT_TYPES
from pymysql.constants import FIELD_TYPE

from cachewarm.mysql import driver_pymysql as pymysql_rows
from cachewarm.mysql.encode import (
    InvalidJSON,
    ListingEncoder,
    RawColumn,
    conversions,
    fast_dumps,
    stdlib_dumps,
)

DECODERS = conversions("pymysql")


def column(type_code: int, *, binary: bool = False, zerofill: bool = False) -> RawColumn:
    """The column as PyMySQL's result describes it (its _get_descriptions rule)."""
    if type_code == FIELD_TYPE.JSON:
        encoding: str | None = "utf8"
    elif type_code in TEXT_TYPES:
        encoding = None if binary else "utf8"
    else:
        encoding = "ascii"
    converter = DECODERS.get(type_code)
    if converter is pymysql.converters.through:
        converter = None
    return RawColumn(type_code, encoding is not None, zerofill, _decoder(encoding, converter))


def _decoder(encoding: str | None, converter: Callable[[Any], Any] | None) -> Any:
    return pymysql_rows._decoder(encoding, converter)


def text(value: object) -> bytes:
    return str(value).encode()


digits = st.integers(0, 10**12)
clock = st.tuples(st.integers(0, 23), st.integers(0, 59), st.integers(0, 59))
fraction = st.sampled_from(["", ".000", ".5", ".000120", ".123456", ".000000"])
day = st.tuples(st.integers(0, 9999), st.integers(0, 12), st.integers(0, 31))
day_text = day.map(lambda d: f"{d[0]:04}-{d[1]:02}-{d[2]:02}")
clock_text = st.builds(lambda c, f: f"{c[0]:02}:{c[1]:02}:{c[2]:02}{f}", clock, fraction)
utf8_text = st.text(st.characters(codec="utf-8"), max_size=40)
json_doc = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | utf8_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(utf8_text, inner, max_size=3),
    max_leaves=6,
)

# (column, server bytes) for every kind of column the encoder tells apart.
FIELDS: list[st.SearchStrategy[tuple[RawColumn, bytes]]] = [
    *(
        st.tuples(st.just(column(code)), st.integers(-(2**63), 2**64 - 1).map(text))
        for code in (
            FIELD_TYPE.TINY,
            FIELD_TYPE.SHORT,
            FIELD_TYPE.INT24,
            FIELD_TYPE.LONG,
            FIELD_TYPE.LONGLONG,
        )
    ),
    st.tuples(
        st.just(column(FIELD_TYPE.LONG, zerofill=True)), digits.map(lambda n: text(f"{n:010}"))
    ),
    st.tuples(
        st.just(column(FIELD_TYPE.YEAR)), st.integers(0, 2155).map(lambda n: text(f"{n:04}"))
    ),
    *(
        st.tuples(
            st.just(column(code)),
            st.builds(
                lambda s, i, f: text(f"{s}{i}.{f:04}"),
                st.sampled_from(["", "-"]),
                digits,
                st.integers(0, 9999),
            ),
        )
        for code in (FIELD_TYPE.NEWDECIMAL, FIELD_TYPE.DECIMAL)
    ),
    st.tuples(st.just(column(FIELD_TYPE.DATE)), day_text.map(text)),
    st.tuples(
        st.just(column(FIELD_TYPE.TIME)),
        st.builds(lambda s, c: text(f"{s}{c}"), st.sampled_from(["", "-"]), clock_text),
    ),
    *(
        st.tuples(
            st.just(column(code)), st.builds(lambda d, c: text(f"{d} {c}"), day_text, clock_text)
        )
        for code in (FIELD_TYPE.DATETIME, FIELD_TYPE.TIMESTAMP)
    ),
    *(
        st.tuples(
            st.just(column(code)),
            st.floats(allow_nan=False, allow_infinity=False).map(
                lambda f: text(format(f, "g") if f % 2 else repr(f))
            ),
        )
        for code in (FIELD_TYPE.FLOAT, FIELD_TYPE.DOUBLE)
    ),
    *(
        st.tuples(st.just(column(code)), utf8_text.map(str.encode))
        for code in (FIELD_TYPE.VAR_STRING, FIELD_TYPE.STRING, FIELD_TYPE.BLOB, FIELD_TYPE.JSON)
    ),
    *(
        st.tuples(st.just(column(code, binary=True)), st.binary(max_size=40))
        for code in (FIELD_TYPE.VAR_STRING, FIELD_TYPE.BLOB, FIELD_TYPE.BIT, FIELD_TYPE.GEOMETRY)
    ),
]
field = st.one_of(*FIELDS)
nullable = st.tuples(field, st.booleans()).map(lambda f: (f[0][0], None if f[1] else f[0][1]))


def both(
    columns: list[RawColumn], raw_row: list[bytes | None], json_columns: tuple[str, ...] = ()
) -> None:
    names = ["id", *(f"c{i}" for i in range(1, len(columns)))]
    description = [(n, c.type_code) for n, c in zip(names, columns, strict=True)]
    decoded = [None if r is None else c.decode(r) for c, r in zip(columns, raw_row, strict=True)]
    for dumps in (fast_dumps, stdlib_dumps):
        encoder = ListingEncoder(description, dumps=dumps, json_columns=json_columns)
        try:
            expected: bytes | str = encoder.encode(decoded)
        except InvalidJSON as exc:
            expected = str(exc)
        try:
            got: bytes | str = encoder.raw(columns)(raw_row)
        except InvalidJSON as exc:
            got = str(exc)
        assert got == expected


ID = column(FIELD_TYPE.LONGLONG)


@given(st.integers(0, 2**63), st.lists(nullable, max_size=12))
def test_raw_rows_encode_like_decoded_ones(product_id: int, fields: list[Any]) -> None:
    both([ID, *(c for c, _ in fields)], [text(product_id), *(r for _, r in fields)])


@given(
    st.one_of(
        json_doc.map(lambda d: json.dumps(d, indent=st_indent(d), ensure_ascii=False).encode()),
        st.sampled_from([b"NaN", b"[1,", b"{'a': 1}", b"", b"\xff", b'"\\x"', b"[Infinity]"]),
        utf8_text.map(str.encode),
    ),
    st.booleans(),
)
def test_json_columns_from_raw_rows(doc: bytes, binary: bool) -> None:
    if not binary:  # a text column's bytes are UTF-8 (the connection's charset)
        assume(_is_utf8(doc))
    both([ID, column(FIELD_TYPE.BLOB, binary=binary)], [b"1", doc], json_columns=("c1",))


def _is_utf8(doc: bytes) -> bool:
    try:
        doc.decode()
    except UnicodeDecodeError:
        return False
    return True


def st_indent(doc: object) -> int | None:
    return 2 if isinstance(doc, list) else None


@pytest.mark.parametrize(
    ("code", "raw"),
    [(FIELD_TYPE.NEWDECIMAL, b"19.90"), (FIELD_TYPE.DATE, b"2026-11-24"), (FIELD_TYPE.LONG, b"7")],
)
def test_json_columns_that_are_not_strings(code: int, raw: bytes) -> None:
    """A DECIMAL named in json_columns is embedded (a number), as the decoded path does."""
    both([ID, column(code)], [b"1", raw], json_columns=("c1",))
