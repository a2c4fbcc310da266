"""The MySQL -> JSON mapping as pure functions (the real-server test is in test_warm.py)."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cachewarm.encode import ListingEncoder, iso_datetime


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
    enc = ListingEncoder(["name", "id", "price", "blob", "gone"])
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
        ListingEncoder(["sku"])
    with pytest.raises(ValueError, match="name"):
        ListingEncoder(["id", "name", "name"])


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
    payload = ListingEncoder(columns).encode([1, *row])
    decoded = json.loads(payload.decode("utf-8"))
    assert list(decoded) == columns
    for column, value in zip(columns[1:], row, strict=True):
        if isinstance(value, bytes):
            assert base64.b64decode(decoded[column]) == value
        else:
            assert decoded[column] == value


def test_huge_text_survives() -> None:
    text = "ü😀" * 2_000_000  # ~12 MB, LONGTEXT territory
    decoded = json.loads(ListingEncoder(["id", "t"]).encode([1, text]))
    assert decoded["t"] == text
