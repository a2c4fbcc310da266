"""Key names (the reader contract) and product id parsing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cachewarm.errors import UsageError
from cachewarm.keys import MAX_ID, Keys, parse_id, parse_ids


def test_reader_contract_key_names() -> None:
    keys = Keys("shop", 3)
    assert keys.product(42) == "shop:v3:product:42"
    assert keys.hot == "shop:v3:hot"


def test_versions_never_collide() -> None:
    assert Keys("shop", 1).product(1) != Keys("shop", 2).product(1)
    assert Keys("shop", 1).hot != Keys("shop", 2).hot


@pytest.mark.parametrize("text", ["", "abc", "-1", "1.5", "1e3", "0x10", "١٢", str(MAX_ID + 1)])
def test_bad_ids_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_id(text)
    assert info.value.exit_code == 2


def test_parse_ids_keeps_order_and_drops_repeats() -> None:
    assert parse_ids(["3", " 1", "3", "2 "]) == [3, 1, 2]


def test_parse_ids_checks_all_before_returning() -> None:
    with pytest.raises(UsageError, match="'x'"):
        parse_ids(["1", "2", "x"])
    with pytest.raises(UsageError, match="no product ids"):
        parse_ids([])


@given(st.integers(min_value=0, max_value=MAX_ID))
def test_every_valid_id_round_trips(value: int) -> None:
    assert parse_id(str(value)) == value


@given(st.text(max_size=30))
def test_any_text_is_an_id_or_a_usage_error(text: str) -> None:
    try:
        value = parse_id(text)
    except UsageError:
        return
    assert 0 <= value <= MAX_ID and str(value) == text.strip().lstrip("0").rjust(1, "0")
