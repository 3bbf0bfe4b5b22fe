"""ledger.units: money text <-> int wei, exact, with clear errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wwwserve.ledger.errors import InvalidAmountError, LedgerError
from wwwserve.ledger.params import WEI_PER_CREDIT, WEI_PER_ETH
from wwwserve.ledger.units import MAX_UINT256, format_wei, parse_amount


@pytest.mark.parametrize(
    ("text", "wei"),
    [
        ("1.5eth", 1_500_000_000_000_000_000),
        ("1.5 ETH", 1_500_000_000_000_000_000),
        ("  2 ether ", 2 * WEI_PER_ETH),
        ("250gwei", 250 * 10**9),
        ("0.5 gwei", 500_000_000),
        ("1000", 1000),
        ("1000 wei", 1000),
        ("3credit", 3 * WEI_PER_CREDIT),
        ("0.001 credits", WEI_PER_CREDIT // 1000),
        ("0", 0),
        (".5 eth", WEI_PER_ETH // 2),
        ("1_000 gwei", 1000 * 10**9),
        ("0.000000000000000001 eth", 1),
        ("1.000 wei", 1),  # trailing zeros are not extra precision
        (5, 5),
    ],
)
def test_parse_amount_accepts(text: str | int, wei: int) -> None:
    assert parse_amount(text) == wei


def test_parse_amount_is_exact_for_huge_numbers() -> None:
    # 30 significant digits: more than Decimal's default 28-digit context would keep.
    assert parse_amount("123456789012345678901234567.123456789012345678 eth") == (
        123456789012345678901234567123456789012345678
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("-1", "negative"),
        ("-0.5 eth", "negative"),
        ("abc", "cannot parse"),
        ("1.5.2 eth", "cannot parse"),
        ("1e18", "cannot parse"),
        ("nan", "cannot parse"),
        ("inf eth", "cannot parse"),
        ("1 eth 2", "cannot parse"),
        ("1.5", "whole number of wei"),
        ("1.5 wei", "whole number of wei"),
        ("0.0000000001 gwei", "more decimal places than gwei allows \\(9\\)"),
        ("1.0000000000000000001 eth", "more decimal places than eth allows \\(18\\)"),
        ("0.0000000000000001 credit", "more decimal places than credit allows \\(15\\)"),
        ("3 dollars", "unknown unit 'dollars'"),
        (str(2**256), "does not fit in uint256"),
    ],
)
def test_parse_amount_rejects(text: str, message: str) -> None:
    with pytest.raises(InvalidAmountError, match=message) as info:
        parse_amount(text)
    # one line, and catchable both as a ledger error and as a ValueError
    assert "\n" not in str(info.value)
    assert isinstance(info.value, LedgerError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("bad", [-1, 2**256, True, 1.5, None])
def test_parse_amount_rejects_bad_non_text(bad: object) -> None:
    with pytest.raises(InvalidAmountError):
        parse_amount(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("wei", "unit", "text"),
    [
        (1_500_000_000_000_000_000, "eth", "1.5 ETH"),
        (0, "eth", "0 ETH"),
        (1, "eth", "0.000000000000000001 ETH"),
        (10**18, "ether", "1 ETH"),
        (-(10**17), "eth", "-0.1 ETH"),
        (3 * WEI_PER_CREDIT, "credit", "3 credit"),
        (WEI_PER_CREDIT // 4, "credits", "0.25 credit"),
        (250 * 10**9, "gwei", "250 gwei"),
        (1234, "wei", "1234 wei"),
    ],
)
def test_format_wei(wei: int, unit: str, text: str) -> None:
    assert format_wei(wei, unit) == text


def test_format_wei_rejects_floats_and_unknown_units() -> None:
    with pytest.raises(InvalidAmountError):
        format_wei(1.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidAmountError, match="unknown unit"):
        format_wei(1, "btc")


@given(st.integers(min_value=0, max_value=MAX_UINT256), st.sampled_from(["eth", "gwei", "credit", "wei"]))
def test_format_then_parse_round_trips(wei: int, unit: str) -> None:
    assert parse_amount(format_wei(wei, unit)) == wei
