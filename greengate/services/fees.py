"""The gateway's fee on merchant payments, set per merchant, payment system and currency.

fee = ROUND_HALF_UP(amount × percent / 100) + fixed, in the currency's minor units, never more than
the amount. Half a minor unit rounds up (not to even) so a merchant can check a statement by hand.
A rule for the payment's own system wins over the merchant's "*" rule; no rule means no fee.
"""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, localcontext

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from greengate.domain.errors import InvalidRequest
from greengate.domain.money import exponent, parse_decimal_text
from greengate.services.audit import record_audit
from greengate.services.merchants import get_merchant
from greengate.store.models import MerchantFee, Payment, PaymentAttempt

ANY = "*"
PAYMENT_SYSTEMS = (ANY, "BANKCARD", "MOBILE_COMMERCE")
ATTEMPT_SYSTEMS = {"bankcard": "BANKCARD", "mobile_commerce": "MOBILE_COMMERCE"}
PERCENT_PLACES = 4


def parse_percent(raw: object) -> Decimal:
    value = parse_decimal_text(raw, field="percent", max_places=PERCENT_PLACES)
    if value > 100:
        raise InvalidRequest("percent must be between 0 and 100", field="percent")
    return value


def compute_fee(amount: int, percent: Decimal, fixed: int) -> int:
    """The fee in minor units for an amount in minor units (see the module docstring)."""
    if amount <= 0:
        return 0
    with localcontext() as ctx:
        ctx.prec = 50  # exact for any BIGINT amount before the explicit rounding
        part = (Decimal(amount) * percent / 100).to_integral_value(rounding=ROUND_HALF_UP)
    return min(int(part) + fixed, amount)


async def fee_rule(
    session: AsyncSession, merchant_id: int, payment_system: str, currency: str
) -> MerchantFee | None:
    rows = await session.scalars(
        select(MerchantFee).where(
            MerchantFee.merchant_id == merchant_id,
            MerchantFee.currency == currency,
            MerchantFee.payment_system.in_({payment_system.upper(), ANY}),
        )
    )
    by_system = {row.payment_system: row for row in rows}
    return by_system.get(payment_system.upper()) or by_system.get(ANY)


async def fee_for(
    session: AsyncSession, merchant_id: int, payment_system: str, amount: int, currency: str
) -> int:
    rule = await fee_rule(session, merchant_id, payment_system, currency)
    return 0 if rule is None else compute_fee(amount, Decimal(rule.percent), rule.fixed)


async def payment_system_of(session: AsyncSession, payment: Payment) -> str:
    """BANKCARD or MOBILE_COMMERCE by how the payer paid; the requested system when no attempt exists."""
    method = await session.scalar(
        select(PaymentAttempt.method)
        .where(PaymentAttempt.payment_id == payment.id)
        .order_by(PaymentAttempt.id.desc())
        .limit(1)
    )
    if method in ATTEMPT_SYSTEMS:
        return ATTEMPT_SYSTEMS[method]
    return (payment.payment_system or "BANKCARD").upper()


async def set_fee(
    session: AsyncSession,
    merchant_id: int,
    *,
    payment_system: str,
    percent: object,
    fixed: int,
    currency: str,
    now: datetime,
    actor: str = "cli",
) -> MerchantFee:
    system = payment_system.upper()
    if system not in PAYMENT_SYSTEMS:
        raise InvalidRequest(
            f"payment system must be one of {', '.join(PAYMENT_SYSTEMS)}", field="payment_system"
        )
    exponent(currency)
    pct = parse_percent(percent)
    if fixed < 0:
        raise InvalidRequest("fixed fee must not be negative", field="fixed")
    await get_merchant(session, merchant_id)
    row = await session.scalar(
        select(MerchantFee)
        .where(
            MerchantFee.merchant_id == merchant_id,
            MerchantFee.payment_system == system,
            MerchantFee.currency == currency,
        )
        .with_for_update()
    )
    before = None if row is None else {"percent": row.percent, "fixed": row.fixed}
    if row is None:
        row = MerchantFee(merchant_id=merchant_id, payment_system=system, currency=currency, created_at=now)
        session.add(row)
    row.percent, row.fixed, row.updated_at = str(pct), fixed, now
    await session.flush()
    await record_audit(
        session,
        actor=actor,
        action="merchant.fee",
        obj=("merchant", merchant_id),
        before=before,
        after={"payment_system": system, "currency": currency, "percent": str(pct), "fixed": fixed},
        now=now,
    )
    return row
