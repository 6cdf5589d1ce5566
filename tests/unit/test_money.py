from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from greengate.domain.errors import InvalidAmount
from greengate.domain.money import Money, format_minor, parse_amount, parse_decimal_text


@pytest.mark.parametrize(
    ("raw", "currency", "minor"),
    [
        ("9999", "RUB", 999_900),
        ("0.01", "RUB", 1),
        ("100.0", "KZT", 10_000),
        ("100.50", "RUB", 10_050),
        (5000, "RUB", 500_000),
        (Decimal("10.5"), "RUB", 1_050),
        ("0.00256657", "BTC", 256_657),
        (" 42 ", "RUB", 4_200),
    ],
)
def test_parse_amount_accepts_plain_decimals(raw: object, currency: str, minor: int) -> None:
    assert parse_amount(raw, currency) == minor


@pytest.mark.parametrize(
    "raw",
    [
        "-1",
        "1e3",
        "NaN",
        "Infinity",
        "1,5",
        "1.005",
        "",
        ".5",
        "5.",
        "01",
        "+5",
        "0x10",
        "1_000",
        True,
        None,
        1.5,
        [],
        {},
        Decimal("NaN"),
        Decimal("Infinity"),
        "9" * 16,
        "١٢",
    ],
)
def test_parse_amount_refuses_anything_but_plain_decimal_text(raw: object) -> None:
    with pytest.raises(InvalidAmount):
        parse_amount(raw, "RUB")


def test_parse_amount_names_the_field_in_its_error() -> None:
    with pytest.raises(InvalidAmount) as info:
        parse_amount("1.001", "RUB", field="from_amount")
    assert info.value.field == "from_amount"
    assert "2 decimal places" in info.value.message


def test_unknown_currency_is_refused() -> None:
    with pytest.raises(InvalidAmount):
        parse_amount("1", "XXX")


@given(st.integers(min_value=0, max_value=10**15 - 1), st.sampled_from(["RUB", "KZT", "BTC"]))
def test_format_then_parse_round_trips(minor: int, currency: str) -> None:
    assert parse_amount(format_minor(minor, currency), currency) == minor
    assert parse_amount(format_minor(minor, currency, trim=True), currency) == minor


@given(st.decimals(min_value=0, max_value=10**12, places=2, allow_nan=False, allow_infinity=False))
def test_parse_amount_is_exact_for_two_place_decimals(value: Decimal) -> None:
    assert parse_amount(format(value, "f"), "RUB") == int(value * 100)


@given(st.text(max_size=30))
def test_parse_decimal_text_never_crashes_on_arbitrary_text(text: str) -> None:
    try:
        value = parse_decimal_text(text)
    except InvalidAmount:
        return
    assert value.is_finite() and value >= 0


def test_money_refuses_mixing_currencies() -> None:
    with pytest.raises(ValueError):
        Money(1, "RUB") + Money(1, "KZT")
    assert Money(150, "RUB") - Money(50, "RUB") == Money(100, "RUB")
    assert str(Money(256_657, "BTC")) == "0.00256657 BTC"


@given(
    st.integers(min_value=-(10**18), max_value=10**18), st.sampled_from(["RUB", "KZT", "BTC"]), st.booleans()
)
def test_formatting_equals_the_decimal_rendering(minor: int, currency: str, trim: bool) -> None:
    places = {"RUB": 2, "KZT": 2, "BTC": 8}[currency]
    expected = f"{Decimal(minor).scaleb(-places):.{places}f}"
    if trim:
        expected = expected.rstrip("0").rstrip(".")
    assert format_minor(minor, currency, trim=trim) == expected


def test_formatting_takes_a_whole_decimal_and_refuses_a_fraction_of_a_minor_unit() -> None:
    # Sums from PostgreSQL arrive as Decimal.
    assert format_minor(Decimal("150050"), "KZT") == "1500.50"
    with pytest.raises(ValueError, match="whole number"):
        format_minor(Decimal("1.5"), "RUB")
