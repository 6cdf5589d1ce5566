"""What happens between the payer opening the page and the payment's outcome: card or phone,
3-D Secure or OTP, the merchant's check, the acquirer's decision. Also the operator's test buttons."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from greengate.acquiring import Acquirer, Decision, ManualAcquirer, Outcome, SandboxAcquirer
from greengate.domain import payment_systems
from greengate.domain.card_rules import CardForm
from greengate.domain.errors import BusinessRuleViolation, InvalidRequest, TransactionExpired
from greengate.domain.ledger import InsufficientBalance
from greengate.domain.payments import PAYER_STEPS, PaymentStatus
from greengate.runtime import Runtime
from greengate.services import refunds
from greengate.services.payments import latest_attempt, lock_payment, transition
from greengate.store.models import Payment, PaymentAttempt, PaymentEvent

S = PaymentStatus
log = structlog.get_logger(__name__)
TEST_ACTIONS = ("approve", "decline", "require-3ds", "expire", "refund", "chargeback")


def acquirer_for(payment: Payment) -> Acquirer:
    return SandboxAcquirer() if payment.testing else ManualAcquirer()


def _pan_aad(attempt_id: int) -> str:
    return f"payment_attempts:{attempt_id}:pan"


def card_aad(attempt_id: int) -> str:
    """The associated data an attempt's encrypted PAN is bound to."""
    return _pan_aad(attempt_id)


def _ensure_payable(payment: Payment, now: datetime, *, expected: PaymentStatus) -> None:
    if payment.expires_at <= now and S(payment.status) in PAYER_STEPS:
        raise TransactionExpired("the payment's lifetime has passed")
    if payment.status != expected.value:
        raise BusinessRuleViolation(
            f"the payment is {payment.status}, not {expected.value}", code="state_forbids"
        )


async def submit_card(
    session: AsyncSession, rt: Runtime, payment_id: int, card: CardForm, now: datetime
) -> Payment:
    payment = await lock_payment(session, payment_id)
    _ensure_payable(payment, now, expected=S.NEW)
    payment_systems.check_available("BANKCARD", rt.settings.payment_system_state_map())
    attempt = PaymentAttempt(
        payment_id=payment.id,
        method="bankcard",
        acquirer="",
        status="started",
        card_masked=card.masked,
        card_brand=card.brand,
        card_exp=card.exp_text,
        card_holder=card.holder,
        otp_attempts=0,
        created_at=now,
        updated_at=now,
    )
    acquirer = acquirer_for(payment)
    attempt.acquirer = acquirer.name
    session.add(attempt)
    await session.flush()
    # The PAN is kept encrypted for the 3-D Secure step and the operator; the CVC is never stored.
    attempt.card_enc = rt.keyring.encrypt(card.pan.reveal(), _pan_aad(attempt.id))
    decision = acquirer.authorize_card(
        payment_id=payment.id,
        amount_minor=payment.amount,
        currency=payment.currency,
        card=card,
        testing=payment.testing,
    )
    if decision.outcome is Outcome.REQUIRE_3DS or (
        payment.require_3ds and decision.outcome is not Outcome.DECLINED
    ):
        attempt.status = "3ds"
        return await transition(session, payment, S.THREE_DS, actor="payer", now=now)
    return await _proceed(session, payment, attempt, decision, now)


async def submit_3ds(
    session: AsyncSession, rt: Runtime, payment_id: int, password: str, now: datetime
) -> Payment:
    payment = await lock_payment(session, payment_id)
    _ensure_payable(payment, now, expected=S.THREE_DS)
    attempt = await _attempt(session, payment)
    assert attempt.card_enc is not None
    pan = rt.keyring.decrypt(attempt.card_enc, _pan_aad(attempt.id))
    decision = acquirer_for(payment).complete_3ds(payment_id=payment.id, card_number=pan, password=password)
    if decision.outcome is Outcome.REQUIRE_3DS:  # a card that needed no 3-DS but the operator asked for it
        decision = (
            Decision(Outcome.APPROVED)
            if password == _sandbox_password()
            else Decision(
                Outcome.DECLINED, failure_code=10004, failure_description="3-D Secure authentication failed"
            )
        )
    return await _proceed(session, payment, attempt, decision, now)


def _sandbox_password() -> str:
    from greengate.acquiring.test_data import THREE_DS_PASSWORD

    return THREE_DS_PASSWORD


async def submit_phone(
    session: AsyncSession, rt: Runtime, payment_id: int, phone: str, now: datetime
) -> Payment:
    payment = await lock_payment(session, payment_id)
    _ensure_payable(payment, now, expected=S.NEW)
    payment_systems.check_available("MOBILE_COMMERCE", rt.settings.payment_system_state_map())
    acquirer = acquirer_for(payment)
    digits = "".join(ch for ch in phone if ch.isdigit())
    attempt = PaymentAttempt(
        payment_id=payment.id,
        method="mobile_commerce",
        acquirer=acquirer.name,
        status="started",
        phone=digits,
        otp_attempts=0,
        created_at=now,
        updated_at=now,
    )
    session.add(attempt)
    decision = acquirer.start_phone(payment_id=payment.id, phone=digits, testing=payment.testing)
    if decision.outcome is Outcome.REQUIRE_OTP:
        attempt.status = "otp"
        return await transition(session, payment, S.OTP, actor="payer", now=now)
    if decision.outcome is Outcome.DECLINED and decision.failure_code in (701, 711):
        # The payer may correct the number: the payment stays open, the attempt records why.
        attempt.status, attempt.failure_code = "declined", decision.failure_code
        attempt.failure_description = decision.failure_description
        raise InvalidRequest(
            decision.failure_description or "phone number not accepted",
            code="wrong_phone" if decision.failure_code == 701 else "phone_not_accepted",
        )
    return await _proceed(session, payment, attempt, decision, now)


async def submit_otp(
    session: AsyncSession, rt: Runtime, payment_id: int, code: str, now: datetime
) -> Payment:
    payment = await lock_payment(session, payment_id)
    _ensure_payable(payment, now, expected=S.OTP)
    attempt = await _attempt(session, payment)
    attempt.otp_attempts += 1
    attempt.updated_at = now
    decision = acquirer_for(payment).complete_otp(
        payment_id=payment.id, phone=attempt.phone or "", code=code, attempt=attempt.otp_attempts
    )
    if decision.outcome is Outcome.DECLINED and decision.failure_code == 700:
        return payment  # wrong code, tries left: the page asks again
    return await _proceed(session, payment, attempt, decision, now)


async def _attempt(session: AsyncSession, payment: Payment) -> PaymentAttempt:
    attempt = await latest_attempt(session, payment.id)
    if attempt is None:
        raise BusinessRuleViolation("the payment has no attempt to continue", code="state_forbids")
    return attempt


def _decline_changes(decision: Decision) -> dict[str, Any]:
    return {
        "failure_code": decision.failure_code or 10001,
        "failure_description": decision.failure_description or "declined",
    }


async def _proceed(
    session: AsyncSession, payment: Payment, attempt: PaymentAttempt, decision: Decision, now: datetime
) -> Payment:
    """After the payer's last step: ask the merchant first when a check URL is set, then settle."""
    attempt.auth_code, attempt.rrn, attempt.updated_at = decision.auth_code, decision.rrn, now
    if decision.outcome is Outcome.DECLINED:
        attempt.status, attempt.failure_code = "declined", decision.failure_code
        attempt.failure_description = decision.failure_description
        return await transition(
            session, payment, S.FAILED, actor="acquirer", now=now, changes=_decline_changes(decision)
        )
    if payment.check_url:
        attempt.status, attempt.pending_outcome = "check", decision.outcome.value
        return await transition(session, payment, S.CHECK, actor="payer", now=now)
    return await _settle(session, payment, attempt, decision.outcome, now)


async def decide(
    session: AsyncSession, payment: Payment, attempt: PaymentAttempt, decision: Decision, now: datetime
) -> Payment:
    """The acquirer's final word on an attempt without a payer (a recurring charge), as after the
    payer's last step."""
    return await _proceed(session, payment, attempt, decision, now)


async def _settle(
    session: AsyncSession, payment: Payment, attempt: PaymentAttempt, outcome: Outcome, now: datetime
) -> Payment:
    if outcome is Outcome.PROCESSING:
        attempt.status = "processing"
        return await transition(session, payment, S.PENDING, actor="acquirer", now=now)
    attempt.status = "approved"
    return await transition(session, payment, S.OK, actor="acquirer", now=now)


async def on_check_answer(
    session: AsyncSession, payment_id: int, *, accepted: bool, reason: str, now: datetime
) -> Payment:
    """The merchant's answer to the check request (or its absence, which counts as a refusal)."""
    payment = await lock_payment(session, payment_id)
    if payment.status != S.CHECK.value:
        return payment  # answered already (a retried delivery)
    attempt = await _attempt(session, payment)
    if not accepted:
        attempt.status = "rejected"
        return await transition(
            session,
            payment,
            S.FAILED,
            actor="merchant",
            now=now,
            note=reason,
            changes={"failure_code": 400, "failure_description": reason},
        )
    return await _settle(session, payment, attempt, Outcome(attempt.pending_outcome or "approved"), now)


async def test_action(
    session: AsyncSession, payment_id: int, action: str, *, now: datetime, actor: str, code: int | None = None
) -> Payment:
    """The console's test buttons (and `greengate payment action`). Test payments take every action;
    live payments only approve/decline while the manual acquirer waits for the operator."""
    if action not in TEST_ACTIONS:
        raise InvalidRequest(f"action must be one of {', '.join(TEST_ACTIONS)}", field="action")
    payment = await lock_payment(session, payment_id)
    status = S(payment.status)
    if not payment.testing and not (action in ("approve", "decline") and status is S.PENDING):
        raise BusinessRuleViolation("test buttons work on test payments only", code="action_disabled")
    attempt = await latest_attempt(session, payment.id)
    if action == "approve":
        if attempt is not None:
            attempt.status, attempt.updated_at = "approved", now
        return await transition(session, payment, S.OK, actor=actor, now=now, note="approved by operator")
    if action == "decline":
        failure = code or 10001
        if not 1 <= failure <= 99999:
            raise InvalidRequest("decline code must be a positive number", field="code")
        if attempt is not None:
            attempt.status, attempt.failure_code, attempt.updated_at = "declined", failure, now
        return await transition(
            session,
            payment,
            S.FAILED,
            actor=actor,
            now=now,
            note="declined by operator",
            changes={"failure_code": failure, "failure_description": "declined by operator"},
        )
    if action in ("refund", "chargeback"):
        # Everything still refundable; a chargeback is the issuer taking the payment back: it is undone
        # as a whole, its fee included.
        await refunds.refund_payment(
            session,
            payment,
            None,
            actor=actor,
            now=now,
            kind=action,
            reason=f"{action} by operator",
            reversal=action == "chargeback",
        )
        return payment
    if action == "require-3ds":
        if status is not S.NEW:
            raise BusinessRuleViolation(
                "3-D Secure can be required only before the payer pays", code="state_forbids"
            )
        payment.require_3ds, payment.updated_at = True, now
        return payment
    if status not in PAYER_STEPS:
        raise BusinessRuleViolation(f"a {status.value} payment cannot expire", code="state_forbids")
    return await transition(
        session,
        payment,
        S.EXPIRED,
        actor=actor,
        now=now,
        note="expired by operator",
        changes={"failure_code": 360, "failure_description": "payment lifetime expired"},
    )


async def refund_rejected_result(
    session: AsyncSession, payment_id: int, *, reason: str, now: datetime
) -> bool:
    """The merchant answered `rejected` to a result it was allowed to reject: return the money."""
    payment = await lock_payment(session, payment_id)
    if payment.status != S.OK.value:
        return False
    if not payment.two_step or payment.captured:
        # The payment is undone as a whole, its fee included: the refund needs no more of the
        # merchant's balance than this payment brought in.
        try:
            async with session.begin_nested():
                await refunds.refund_payment(
                    session,
                    payment,
                    None,
                    actor="merchant",
                    now=now,
                    reason=f"result rejected: {reason}",
                    reversal=True,
                )
        except InsufficientBalance as exc:
            # The money has left the merchant's balance since (a payout): the payment stays paid, and
            # the refusal is on its record and in the log for the operator — never a silent retry.
            log.error("rejected_result_not_refunded", payment_id=payment_id, error=str(exc))
            session.add(
                PaymentEvent(
                    payment_id=payment_id,
                    from_status=S.OK.value,
                    to_status=S.OK.value,
                    actor="merchant",
                    note=f"result rejected: {reason}; not refunded: {exc}",
                    at=now,
                )
            )
            return False
        return True
    # An authorisation not captured yet is released in full.
    await transition(
        session,
        payment,
        S.REVOKED,
        actor="merchant",
        now=now,
        note=f"result rejected: {reason}",
        changes={"refunded_amount": payment.amount},
    )
    return True
