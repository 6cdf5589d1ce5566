"""The largest amount one payment, refund, capture or payout may carry, per currency.

The defaults are generous for real commerce (about a million US dollars or more in each currency)
and far below what the ledger stores: an account's sums hold more than 2**120 minor units, and one
entry below 2**62, so no amount a cap allows can break a shared total. A merchant may have a lower
cap per currency; never a higher one.
"""

from __future__ import annotations

from decimal import Decimal

from greengate.domain.errors import BusinessRuleViolation, InvalidRequest
from greengate.domain.money import exponent, format_minor, parse_amount

# In major units; stored and compared in minor units.
DEFAULT_CAPS_MAJOR: dict[str, Decimal] = {
    "KZT": Decimal("1000000000"),  # 1e9 KZT
    "RUB": Decimal("100000000"),  # 1e8 RUB
    "USD": Decimal("1000000"),
    "EUR": Decimal("1000000"),
    "USDT": Decimal("1000000"),
    "KGS": Decimal("100000000"),  # 1e8 KGS
    "UZS": Decimal("10000000000"),  # 1e10 UZS
    "BTC": Decimal("1000"),
}


class AmountAboveCap(BusinessRuleViolation):
    """The Merchant API family answers this with its limit code (420)."""

    code = "limit_exceeded"


def default_cap(currency: str) -> int:
    """The gateway's cap for one operation in `currency`, in minor units."""
    return int(DEFAULT_CAPS_MAJOR[currency].scaleb(exponent(currency)))


def effective_cap(currency: str, merchant_cap: int | None) -> int:
    cap = default_cap(currency)
    return cap if merchant_cap is None else min(cap, merchant_cap)


def check_amount(amount: int, currency: str, merchant_cap: int | None, *, operation: str, field: str) -> None:
    """Refuse an amount above the cap, naming the cap in the message."""
    cap = effective_cap(currency, merchant_cap)
    if amount > cap:
        whose = (
            "the merchant's" if merchant_cap is not None and merchant_cap < default_cap(currency) else "the"
        )
        raise AmountAboveCap(
            f"{field} {format_minor(amount, currency)} {currency} is above {whose} cap of "
            f"{format_minor(cap, currency)} {currency} for one {operation}",
            field=field,
        )


def parse_cap(text: str, currency: str) -> int:
    """A merchant cap typed by the operator: positive, and not above the gateway's default."""
    amount = parse_amount(text.strip(), currency, field="cap")
    if amount <= 0:
        raise InvalidRequest("a cap must be greater than 0", field="cap")
    if amount > default_cap(currency):
        raise InvalidRequest(
            f"a merchant cap cannot exceed the gateway's {format_minor(default_cap(currency), currency)} "
            f"{currency}",
            field="cap",
        )
    return amount
