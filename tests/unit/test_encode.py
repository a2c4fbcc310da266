"""The MySQL -> JSON mapping as pure functions (the real-server test is in test_warm.py)."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cachewarm.mysql.encode import (
    FLOAT_TYPES,
    ListingEncoder,
    fast_dumps,
    iso_datetime,
    stdlib_dumps,
)

DOUBLE = FLOAT_TYPES[1]
VARCHAR = 253


def describe(*names: str, floats: tuple[str, ...] = ()) -> list[tuple[str, int]]:
    return [(n, DOUBLE if n in floats else VARCHAR) for n in names]


@pytest.mark.parametrize(
    ("raw", "iso"),
    [
        ("2026-11-24 10:15:00", "2026-11-24T10:15:00"),
        ("2026-11-24 10:15:00.000000", "2026-11-24T10:15:00"),
        ("2026-11-24 10:15:00.5", "2026-11-24T10:15:00.500000"),
        ("2026-11-24 10:15:00.000120", "2026-11-24T10:15:00.000120"),
        ("0000-00-00 00:00:00", "0000-00-00T00:00:00"),
    ],
)
def test_iso_datetime(raw: str, iso: str) -> None:
    assert iso_datetime(raw) == iso


def test_keys_in_column_order_compact_utf8() -> None:
    enc = ListingEncoder(describe("name", "id", "price", "blob", "gone"))
    payload = enc.encode(['Tasse ☕ "x"\n', 7, "19.90", b"\x00\xff", None])
    assert (
        payload
        == (
            '{"name":"Tasse ☕ \\"x\\"\\n","id":7,"price":"19.90","blob":"AP8=","gone":null}'
        ).encode()
    )
    assert enc.id_index == 1


def test_listing_needs_an_id_column_and_unique_names() -> None:
    with pytest.raises(ValueError, match="no column named `id`"):
        ListingEncoder(describe("sku"))
    with pytest.raises(ValueError, match="name"):
        ListingEncoder(describe("id", "name", "name"))


values = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),  # every code point utf8mb4 can hold (surrogates excluded by st.text)
    st.binary(max_size=300),
)


@given(st.lists(values, min_size=1, max_size=8))
def test_round_trip_every_supported_value(row: list[object]) -> None:
    columns = ["id"] + [f"c{i}" for i in range(len(row))]
    payload = ListingEncoder(describe(*columns)).encode([1, *row])
    decoded = json.loads(payload.decode("utf-8"))
    assert list(decoded) == columns
    for column, value in zip(columns[1:], row, strict=True):
        if isinstance(value, bytes):
            assert base64.b64decode(decoded[column]) == value
        else:
            assert decoded[column] == value


def test_huge_text_survives() -> None:
    text = "ü😀" * 2_000_000  # ~12 MB, LONGTEXT territory
    decoded = json.loads(ListingEncoder(describe("id", "t")).encode([1, text]))
    assert decoded["t"] == text


def test_fast_json_is_installed_for_the_suite() -> None:
    """The suite runs with the `fast` extra, so the comparisons below compare two encoders."""
    assert fast_dumps is not stdlib_dumps


@given(st.lists(values, min_size=1, max_size=8))
def test_fast_and_stdlib_encoders_give_the_same_bytes(row: list[object]) -> None:
    names = ["id"] + [f"c{i}" for i in range(len(row))]
    floats = tuple(n for n, v in zip(names[1:], row, strict=True) if isinstance(v, float))
    fast = ListingEncoder(describe(*names, floats=floats)).encode([1, *row])
    slow = ListingEncoder(describe(*names, floats=floats), dumps=stdlib_dumps).encode([1, *row])
    assert fast == slow


@pytest.mark.parametrize("value", [1e-05, -3.2e-07, 5e-324, 1e16, 1.5e300, 0.0001, -0.0])
def test_float_edge_cases_match(value: float) -> None:
    desc = describe("id", "f", floats=("f",))
    assert ListingEncoder(desc).encode([1, value]) == (
        ListingEncoder(desc, dumps=stdlib_dumps).encode([1, value])
    )
