"""Recurring payments: a card payment started with pg_recurring_start=1 leaves a profile when it
succeeds; make_recurring_payment.php then charges the profile's card without the payer, until the
profile's lifetime (pg_recurring_lifetime months) ends.

A charge is a new payment (the merchant's intent) with one attempt on the stored card. The acquirer
decides it as it would the card's payment, without 3-D Secure: there is no payer to authenticate.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from greengate.acquiring import Decision, Outcome
from greengate.acquiring.base import FailureCode, declined
from greengate.acquiring.test_data import THREE_DS_PASSWORD
from greengate.domain import payment_systems
from greengate.domain.card_rules import CardForm
from greengate.domain.errors import InvalidRequest, TransactionExpired, TransactionNotFound
from greengate.domain.payments import NewPayment, PaymentStatus
from greengate.domain.secret import Secret
from greengate.runtime import Runtime
from greengate.services import payment_flow
from greengate.services.payments import init_payment, latest_attempt
from greengate.store.models import Merchant, Payment, PaymentAttempt, RecurringProfile

DEFAULT_LIFETIME_MONTHS = 12  # when pg_recurring_lifetime is absent
CARD_EXPIRED = declined(FailureCode.WRONG_CARD_DATA, "the saved card has expired")


@dataclass(frozen=True)
class RecurringCharge:
    """A validated make_recurring_payment.php request."""

    profile_id: int
    amount: int
    description: str
    order_id: str | None = None
    urls: dict[str, str] = field(default_factory=dict)  # result, refund → URL
    request_method: str | None = None
    extras: list[tuple[str, str]] = field(default_factory=list)


def add_months(when: datetime, months: int) -> datetime:
    """The same day `months` later (the month's last day when it is shorter)."""
    index = when.month - 1 + months
    year, month = when.year + index // 12, index % 12 + 1
    return when.replace(year=year, month=month, day=min(when.day, calendar.monthrange(year, month)[1]))


async def start_profile(session: AsyncSession, payment: Payment, now: datetime) -> RecurringProfile | None:
    """Called when a payment asking for recurring succeeds: a profile on the card it was paid with
    (a payment paid otherwise has no card to charge again, and gets none)."""
    attempt = await latest_attempt(session, payment.id)
    if attempt is None or attempt.method != "bankcard" or not attempt.card_enc:
        return None
    profile = RecurringProfile(
        merchant_id=payment.merchant_id,
        payment_id=payment.id,
        attempt_id=attempt.id,
        currency=payment.currency,
        card_masked=attempt.card_masked,
        expires_at=add_months(now, payment.recurring_lifetime_months or DEFAULT_LIFETIME_MONTHS),
        created_at=now,
    )
    session.add(profile)
    await session.flush()
    return profile


async def profile_of_payment(session: AsyncSession, payment_id: int) -> RecurringProfile | None:
    return await session.scalar(select(RecurringProfile).where(RecurringProfile.payment_id == payment_id))


async def find_profile(session: AsyncSession, merchant_id: int, profile_id: int) -> RecurringProfile:
    profile = await session.scalar(
        select(RecurringProfile).where(
            RecurringProfile.id == profile_id, RecurringProfile.merchant_id == merchant_id
        )
    )
    if profile is None:
        raise TransactionNotFound(f"recurring profile {profile_id} not found")
    return profile


def _stored_card(pan: str, source: PaymentAttempt) -> CardForm:
    month, _, year = (source.card_exp or "01/00").partition("/")
    return CardForm(
        pan=Secret(pan),
        exp_month=int(month),
        exp_year=2000 + int(year),
        holder=source.card_holder or "",
        cvc=Secret(""),  # never stored: a merchant-initiated charge goes without it
    )


async def charge(
    session: AsyncSession, rt: Runtime, merchant: Merchant, req: RecurringCharge, now: datetime
) -> tuple[Payment, RecurringProfile]:
    profile = await find_profile(session, merchant.id, req.profile_id)
    if profile.expires_at <= now:
        raise TransactionExpired(
            f"recurring profile {profile.id} expired on {profile.expires_at:%Y-%m-%d %H:%M:%S}",
            code="recurring_expired",
        )
    # A recurring charge goes to the card's payment system, whichever way the first payment was made.
    payment_systems.check_available("BANKCARD", rt.settings.payment_system_state_map())
    first = await session.get(Payment, profile.payment_id)
    source = await session.get(PaymentAttempt, profile.attempt_id)
    assert first is not None and source is not None and source.card_enc is not None
    payment = await init_payment(
        session,
        rt,
        merchant,
        NewPayment(
            amount=req.amount,
            currency=profile.currency,
            description=req.description,
            order_id=req.order_id,
            urls=req.urls,
            request_method=req.request_method,
            user_phone=first.user_phone,
            user_email=first.user_email,
            user_id=first.user_id,
            language=first.language,
            testing=first.testing,
            extras=req.extras,
        ),
        now,
    )
    if payment.created_at != now:  # init_payment found the shop's open payment with this order id
        raise InvalidRequest(
            f"pg_order_id {req.order_id} already has a payment that is open or paid", field="pg_order_id"
        )
    pan = rt.keyring.decrypt(source.card_enc, payment_flow.card_aad(source.id))
    card = _stored_card(pan, source)
    acquirer = payment_flow.acquirer_for(payment)
    attempt = PaymentAttempt(
        payment_id=payment.id,
        method="bankcard",
        acquirer=acquirer.name,
        status="started",
        card_masked=source.card_masked,
        card_brand=source.card_brand,
        card_exp=source.card_exp,
        card_holder=source.card_holder,
        otp_attempts=0,
        created_at=now,
        updated_at=now,
    )
    session.add(attempt)
    await session.flush()
    attempt.card_enc = rt.keyring.encrypt(pan, payment_flow.card_aad(attempt.id))
    decision: Decision
    if (card.exp_year, card.exp_month) < (now.year, now.month):
        decision = CARD_EXPIRED
    else:
        decision = acquirer.authorize_card(
            payment_id=payment.id,
            amount_minor=payment.amount,
            currency=payment.currency,
            card=card,
            testing=payment.testing,
        )
        if decision.outcome is Outcome.REQUIRE_3DS:
            # No payer to authenticate: the issuer's answer is the one it gives after authentication.
            decision = acquirer.complete_3ds(
                payment_id=payment.id, card_number=pan, password=THREE_DS_PASSWORD
            )
    await payment_flow.decide(session, payment, attempt, decision, now)
    assert payment.status != PaymentStatus.NEW.value
    return payment, profile
