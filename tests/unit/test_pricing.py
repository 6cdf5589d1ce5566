from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from greengate.domain.errors import InvalidRequest
from greengate.domain.pricing import amount_receivable_sat, quantize_rate


@pytest.mark.parametrize(
    ("amount_minor", "rate", "commission", "expected_sat"),
    [
        (999_900, "3233561.44", "17", 256_657),  # spec: 9999 at 3233561.44 with 17 % -> 0.00256657
        (999_900, "3239886.8", "17", 256_156),  # spec: 9999 at 3239886.8 with 17 % -> 0.00256156
        (100_000_000, "27500000", "0", 3_636_363),
    ],
)
def test_receivable_matches_published_figures(
    amount_minor: int, rate: str, commission: str, expected_sat: int
) -> None:
    assert amount_receivable_sat(amount_minor, "RUB", Decimal(rate), Decimal(commission)) == expected_sat


amounts = st.integers(min_value=1, max_value=10**13)
rates = st.decimals(min_value=1, max_value=10**9, places=2, allow_nan=False, allow_infinity=False)
commissions = st.decimals(
    min_value=0, max_value=Decimal("99.99"), places=2, allow_nan=False, allow_infinity=False
)


@given(amounts, rates, commissions)
def test_receivable_never_exceeds_the_exact_value_by_any_satoshi(
    amount: int, rate: Decimal, commission: Decimal
) -> None:
    sat = amount_receivable_sat(amount, "RUB", rate, commission)
    exact = Fraction(amount, 100) / Fraction(rate) * (1 - Fraction(commission) / 100) * 100_000_000
    assert sat == math.floor(exact)
    assert 0 <= exact - sat < 1


def test_a_whole_satoshi_is_not_lost_to_rounding() -> None:
    # 0.01 / 6.04 x 22.65 % is exactly 37500 satoshi; dividing first would give 37499.999...
    assert amount_receivable_sat(1, "RUB", Decimal("6.04"), Decimal("77.35")) == 37_500


@given(amounts, amounts, rates, commissions)
def test_receivable_grows_with_the_amount(a: int, b: int, rate: Decimal, commission: Decimal) -> None:
    low, high = sorted((a, b))
    assert amount_receivable_sat(low, "RUB", rate, commission) <= amount_receivable_sat(
        high, "RUB", rate, commission
    )


@given(amounts, rates, commissions, commissions)
def test_higher_commission_never_gives_more(amount: int, rate: Decimal, c1: Decimal, c2: Decimal) -> None:
    low, high = sorted((c1, c2))
    assert amount_receivable_sat(amount, "RUB", rate, high) <= amount_receivable_sat(amount, "RUB", rate, low)


@pytest.mark.parametrize(("rate", "commission"), [("0", "17"), ("-1", "17"), ("100", "100"), ("100", "-1")])
def test_invalid_rate_or_commission_is_refused(rate: str, commission: str) -> None:
    with pytest.raises(InvalidRequest):
        amount_receivable_sat(100, "RUB", Decimal(rate), Decimal(commission))


def test_rates_are_quantized_half_even_to_two_places() -> None:
    assert quantize_rate(Decimal("3233561.445")) == Decimal("3233561.44")
    assert quantize_rate(Decimal("3233561.455")) == Decimal("3233561.46")
    assert str(quantize_rate(Decimal("3239886.8"))) == "3239886.80"
