"""Per-currency caps on one payment, refund, capture or payout: the gateway's defaults and a
merchant's own lower caps."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from greengate.domain import amount_caps
from greengate.domain.errors import InvalidRequest
from greengate.domain.money import EXPONENTS
from greengate.services.audit import record_audit
from greengate.services.merchants import get_merchant
from greengate.store.links import Link, as_link
from greengate.store.models import MerchantAmountCap

_CAP = select(MerchantAmountCap.max_amount.label("cap")).where(
    MerchantAmountCap.merchant_id == bindparam("merchant_id"),
    MerchantAmountCap.currency == bindparam("currency"),
)


async def merchant_cap(conn: Link | AsyncSession, merchant_id: int, currency: str) -> int | None:
    row = await as_link(conn).row(_CAP, {"merchant_id": merchant_id, "currency": currency})
    return None if row is None else int(row["cap"])


async def caps_of(session: AsyncSession, merchant_id: int) -> dict[str, int]:
    """The cap in force per currency, in minor units: the merchant's own where it has one."""
    own = await own_caps(session, merchant_id)
    return {cur: amount_caps.effective_cap(cur, own.get(cur)) for cur in amount_caps.DEFAULT_CAPS_MAJOR}


async def own_caps(session: AsyncSession, merchant_id: int) -> dict[str, int]:
    rows = await session.execute(
        select(MerchantAmountCap.currency, MerchantAmountCap.max_amount)
        .where(MerchantAmountCap.merchant_id == merchant_id)
        .order_by(MerchantAmountCap.currency)
    )
    return {currency: int(cap) for currency, cap in rows}


async def enforce(
    conn: Link | AsyncSession, merchant_id: int, currency: str, amount: int, *, operation: str, field: str
) -> None:
    """Refuse an amount above the cap in force; call before anything is written. An unknown currency
    is refused by its own check."""
    if currency in EXPONENTS and currency in amount_caps.DEFAULT_CAPS_MAJOR:
        own = await merchant_cap(conn, merchant_id, currency)
        check(currency, amount, own, operation=operation, field=field)


def check(currency: str, amount: int, own: int | None, *, operation: str, field: str) -> None:
    """`enforce` with the merchant's own cap read already."""
    if currency in EXPONENTS and currency in amount_caps.DEFAULT_CAPS_MAJOR:
        amount_caps.check_amount(amount, currency, own, operation=operation, field=field)


async def set_cap(
    session: AsyncSession,
    merchant_id: int,
    currency: str,
    max_amount: int | None,
    now: datetime,
    *,
    actor: str,
) -> None:
    """Set the merchant's cap in `currency` (minor units), or remove it with None."""
    if currency not in amount_caps.DEFAULT_CAPS_MAJOR:
        raise InvalidRequest(f"unsupported currency {currency}", field="currency")
    if max_amount is not None and not 0 < max_amount <= amount_caps.default_cap(currency):
        raise InvalidRequest("a merchant cap is positive and not above the gateway's", field="cap")
    await get_merchant(session, merchant_id)
    before = await merchant_cap(session, merchant_id, currency)
    await session.execute(
        delete(MerchantAmountCap).where(
            MerchantAmountCap.merchant_id == merchant_id, MerchantAmountCap.currency == currency
        )
    )
    if max_amount is not None:
        session.add(
            MerchantAmountCap(
                merchant_id=merchant_id,
                currency=currency,
                max_amount=max_amount,
                created_at=now,
                updated_at=now,
            )
        )
        await session.flush()
    await record_audit(
        session,
        actor=actor,
        action="merchant.cap",
        obj=("merchant", merchant_id),
        before=None if before is None else {"currency": currency, "max_amount": before},
        after={"currency": currency, "max_amount": max_amount},
        now=now,
    )
