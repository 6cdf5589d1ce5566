"""Exchange pricing: how much BTC a fiat payment buys at a locked rate."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, localcontext

from greengate.domain.errors import InvalidRequest
from greengate.domain.money import exponent, to_major

SATOSHI_PER_BTC = 100_000_000
RATE_PLACES = 2


def amount_receivable_sat(
    amount_payable_minor: int, fiat_currency: str, rate: Decimal, commission_percent: Decimal
) -> int:
    """round_down_8(amount / rate × (1 − commission/100)) in satoshi.

    Rounding goes down so the gateway never promises more BTC than the formula gives.
    """
    if rate <= 0:
        raise InvalidRequest("exchange rate must be positive", code="rate_unavailable")
    if not (Decimal(0) <= commission_percent < Decimal(100)):
        raise InvalidRequest("commission must be in [0, 100)", code="invalid_commission")
    exponent(fiat_currency)
    with localcontext() as ctx:
        # Multiply first (exact at this precision), then one integer division: `//` truncates the
        # exact quotient, where `/` would round it to the context first and could round up a
        # value just below a whole satoshi.
        ctx.prec = 80
        numerator = (
            to_major(amount_payable_minor, fiat_currency) * (100 - commission_percent) * SATOSHI_PER_BTC
        )
        sat = numerator // (rate * 100)
    return int(sat)


def quantize_rate(rate: Decimal) -> Decimal:
    """Rates are kept and shown with two decimals, rounded half-even when a source gives more."""
    return rate.quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)
