"""Payouts to cards: create (reserving the merchant's balance), the recipient's card, the acquirer's
answer, expiry, and the operator's test buttons (which also resolve processing payouts).

Nothing happens to a processing payout by itself: a test payout waits for the operator's `resolve`
(it then ends as its test card says) or `approve`/`decline`; a live one (manual acquirer) for
`approve`/`decline`.

Every status change goes through `transition`, which checks the state machine of
`domain.payouts`, updates the row under its version, and in the same transaction posts the ledger
(completed or released) and enqueues the merchant's callback to `pg_post_link`.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from greengate.acquiring import Acquirer, Decision, ManualAcquirer, Outcome, SandboxAcquirer, approval_codes
from greengate.domain import ledger as ledger_domain
from greengate.domain.errors import (
    BusinessRuleViolation,
    InvalidRequest,
    TransactionExpired,
    TransactionNotFound,
)
from greengate.domain.ids import id_number
from greengate.domain.ledger import InsufficientBalance
from greengate.domain.money import format_minor
from greengate.domain.params import Params
from greengate.domain.payouts import (
    EXPIRED_CODE,
    EXPIRED_DESCRIPTION,
    FINAL,
    LedgerEffect,
    NewPayout,
    PayoutKind,
    PayoutStatus,
    check_transition,
)
from greengate.domain.secret import Secret
from greengate.runtime import Runtime
from greengate.services import amount_caps, ledger, outbox, saved_cards
from greengate.store.db import update_versioned
from greengate.store.models import Merchant, Payout, PayoutEvent

S = PayoutStatus
RESULT_CALLBACK = "merchant.payout_result"
EXPIRE_JOB = "payout.expire"
TEST_ACTIONS = ("approve", "decline", "resolve")


class PayoutInsufficientBalance(BusinessRuleViolation):
    """The merchant's available balance does not cover the payout: nothing is written."""

    code = "payout_insufficient_balance"


@dataclass(frozen=True)
class PayoutCard:
    """A saved payout card resolved for reg2reg: its id, number (never logged) and display form."""

    saved_card_id: int
    number: Secret[str]
    masked: str
    brand: str


async def lookup_saved_card(
    session: AsyncSession,
    rt: Runtime,
    merchant_id: int,
    user_id: str,
    card_id: str | None,
    card_token: str | None,
) -> PayoutCard:
    """The merchant's user's active saved card named by id and/or token ;
    CardNotFound (340) when there is none."""
    card = await saved_cards.payout_card(
        session, rt.keyring, merchant_id, user_id, card_id=card_id, token=card_token
    )
    return PayoutCard(saved_card_id=card.card_id, number=card.pan, masked=card.masked, brand=card.brand)


@dataclass(frozen=True)
class Created:
    payout: Payout
    created: bool  # False: the order id already had a payout (returned as it is)


def acquirer_for(payout: Payout) -> Acquirer:
    return SandboxAcquirer() if payout.testing else ManualAcquirer()


def page_url(rt: Runtime, payout: Payout) -> str:
    return f"{rt.settings.base_url}/payout/{payout.access_token}"


def card_aad(payout_id: int) -> str:
    return f"payouts:{payout_id}:pan"


def is_testing(merchant: Merchant, requested: bool) -> bool:
    return merchant.mode == "test" or requested


# --- loading ---------------------------------------------------------------------------------


async def find_by_order(session: AsyncSession, merchant_id: int, order_id: str) -> Payout | None:
    payout: Payout | None = await session.scalar(
        select(Payout).where(Payout.merchant_id == merchant_id, Payout.order_id == order_id)
    )
    return payout


async def find_payout(
    session: AsyncSession, merchant_id: int, *, payout_id: str | None, order_id: str | None
) -> Payout:
    if not payout_id and not order_id:
        raise InvalidRequest("pg_payment_id or pg_order_id is required", field="pg_payment_id")
    stmt = select(Payout).where(Payout.merchant_id == merchant_id)
    if payout_id:
        number = id_number(payout_id)
        if number is None:
            raise InvalidRequest("pg_payment_id must be a number", field="pg_payment_id")
        stmt = stmt.where(Payout.id == number)
    if order_id:
        stmt = stmt.where(Payout.order_id == order_id)
    payout: Payout | None = await session.scalar(stmt)
    if payout is None:
        raise TransactionNotFound("payout not found")
    return payout


async def find_by_token(session: AsyncSession, token: str) -> Payout | None:
    if not token or len(token) > 64:
        return None
    payout: Payout | None = await session.scalar(select(Payout).where(Payout.access_token == token))
    return payout


async def lock_payout(session: AsyncSession, payout_id: int) -> Payout:
    payout: Payout | None = await session.scalar(
        select(Payout).where(Payout.id == payout_id).with_for_update()
    )
    if payout is None:
        raise TransactionNotFound(f"payout {payout_id} not found")
    return payout


def first_answer(payout: Payout) -> Params:
    return [(str(name), value) for name, value in json.loads(payout.first_answer)]


def remember_answer(payout: Payout, fields: Params) -> None:
    """The answer a repeat of this request (same order id or idempotency key) gets."""
    payout.first_answer = json.dumps(fields, ensure_ascii=False)


# --- create ----------------------------------------------------------------------------------


async def create_payout(
    session: AsyncSession,
    rt: Runtime,
    merchant: Merchant,
    req: NewPayout,
    *,
    fingerprint: str,
    now: datetime,
    card: PayoutCard | None = None,
) -> Created:
    """Reserve the amount and create the payout; with a saved card, pay it out at once.

    A payout for the same order id is returned as it is (`created=False`), whether it was there
    before or a concurrent request committed it while this one waited for the balance lock."""
    existing = await find_by_order(session, merchant.id, req.order_id)
    if existing is not None:
        return Created(existing, False)
    await amount_caps.enforce(
        session, merchant.id, req.currency, req.amount, operation="payout", field="pg_amount"
    )
    testing = is_testing(merchant, req.testing)
    book = ledger_domain.book_of(testing)
    shortfall = False
    try:
        # Row lock on the merchant's available account in the payout's book: payouts of one
        # merchant queue up here. A live payout draws on live money only, a test one on test money.
        await ledger.ensure_available(session, merchant.id, req.currency, req.amount, book)
    except InsufficientBalance:
        shortfall = True
    existing = await find_by_order(session, merchant.id, req.order_id)  # committed while we waited
    if existing is not None:
        return Created(existing, False)
    if shortfall:
        have = await ledger.balance(
            session,
            ledger_domain.merchant_owner(merchant.id),
            ledger_domain.Kind.AVAILABLE.value,
            req.currency,
            book,
        )
        raise PayoutInsufficientBalance(
            f"insufficient {book.value} balance: {format_minor(have, req.currency)} {req.currency} "
            f"available in the {book.value} book, {format_minor(req.amount, req.currency)} "
            f"{req.currency} needed for a {book.value} payout",
            field="pg_amount",
        )
    payout = Payout(
        merchant_id=merchant.id,
        kind=req.kind.value,
        order_id=req.order_id,
        user_id=req.user_id,
        status=S.NEW.value,
        version=1,
        amount=req.amount,
        currency=req.currency,
        description=req.description,
        testing=testing,
        language=req.language,
        request_method=merchant.request_method or "POST",
        post_link=req.post_link,
        back_link=req.back_link,
        access_token=secrets.token_urlsafe(24),
        saved_card_id=card.saved_card_id if card else None,
        card_masked=card.masked if card else None,
        card_brand=card.brand if card else None,
        request_hash=fingerprint,
        first_answer="[]",
        extra_params=json.dumps(req.extras, ensure_ascii=False),
        expires_at=req.expires_at,
        created_at=now,
        updated_at=now,
    )
    session.add(payout)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        existing = await find_by_order(session, merchant.id, req.order_id)
        if existing is None:
            raise
        return Created(existing, False)
    await ledger.post(
        session,
        ledger_domain.payout_reserved(merchant.id, req.amount, req.currency, book=book),
        object_type="payout",
        object_id=str(payout.id),
        now=now,
    )
    session.add(
        PayoutEvent(
            payout_id=payout.id, from_status=None, to_status=S.NEW.value, actor="api", note="", at=now
        )
    )
    if card is None:
        outbox.enqueue(
            session,
            kind=EXPIRE_JOB,
            aggregate=f"payout:{payout.id}",
            payload={"payout_id": payout.id},
            now=now,
            due_at=payout.expires_at,
            merchant_id=merchant.id,
        )
    else:
        await _send_to_card(session, rt, payout, card.number, now)
    return Created(payout, True)


# --- status changes --------------------------------------------------------------------------


async def transition(
    session: AsyncSession,
    payout: Payout,
    target: PayoutStatus,
    *,
    actor: str,
    now: datetime,
    note: str = "",
    changes: dict[str, Any] | None = None,
) -> Payout:
    """The one way a payout changes status. The caller holds the payout's row lock (or has just
    created it); the version check refuses a change made concurrently all the same."""
    current = S(payout.status)
    effect = check_transition(current, target)
    values = dict(changes or {}, status=target.value, version=payout.version + 1, updated_at=now)
    if target is S.OK:
        values.setdefault("paid_at", now)
    if not await update_versioned(session, payout, values):
        raise BusinessRuleViolation(f"payout {payout.id} changed concurrently", code="transaction_locked")
    if effect is not None:
        recipe = (
            ledger_domain.payout_completed
            if effect is LedgerEffect.COMPLETED
            else ledger_domain.payout_released
        )
        draft = recipe(
            payout.merchant_id, payout.amount, payout.currency, book=ledger_domain.book_of(payout.testing)
        )
        await ledger.post(session, draft, object_type="payout", object_id=str(payout.id), now=now)
    session.add(
        PayoutEvent(
            payout_id=payout.id,
            from_status=current.value,
            to_status=target.value,
            actor=actor,
            note=note,
            at=now,
        )
    )
    if target in FINAL and payout.post_link:
        outbox.enqueue(
            session,
            kind=RESULT_CALLBACK,
            aggregate=f"payout:{payout.id}",
            payload={"payout_id": payout.id, "status": target.value},
            now=now,
            merchant_id=payout.merchant_id,
            target_url=payout.post_link,
        )
    return payout


def _failure(code: int, description: str) -> dict[str, Any]:
    return {"failure_code": code, "failure_description": description}


async def _apply_decision(
    session: AsyncSession, payout: Payout, decision: Decision, now: datetime, *, actor: str
) -> Payout:
    if decision.outcome is Outcome.APPROVED:
        auth_code, rrn = decision.auth_code, decision.rrn
        if auth_code is None or rrn is None:
            auth_code, rrn = approval_codes(payout.id, payout=True)
        return await transition(
            session, payout, S.OK, actor=actor, now=now, changes={"auth_code": auth_code, "rrn": rrn}
        )
    if decision.outcome is Outcome.DECLINED:
        return await transition(
            session,
            payout,
            S.FAILED,
            actor=actor,
            now=now,
            changes=_failure(decision.failure_code or 10001, decision.failure_description or "declined"),
        )
    if S(payout.status) is S.PROCESSING:
        return payout  # still no answer
    # Processing: it stays so until the operator resolves it (test buttons, `greengate payout action`).
    return await transition(session, payout, S.PROCESSING, actor=actor, now=now)


async def _send_to_card(
    session: AsyncSession, rt: Runtime, payout: Payout, number: Secret[str], now: datetime
) -> Payout:
    acquirer = acquirer_for(payout)
    pan = number.reveal()
    payout.acquirer = acquirer.name
    # Kept encrypted so the operator can resolve a processing payout later; never logged, never shown.
    payout.card_enc = rt.keyring.encrypt(pan, card_aad(payout.id))
    await session.flush()
    decision = acquirer.payout(
        payout_id=payout.id,
        amount_minor=payout.amount,
        currency=payout.currency,
        card_number=pan,
        testing=payout.testing,
    )
    return await _apply_decision(session, payout, decision, now, actor="acquirer")


async def submit_card(
    session: AsyncSession,
    rt: Runtime,
    payout_id: int,
    number: Secret[str],
    masked: str,
    brand: str,
    now: datetime,
) -> Payout:
    """The recipient entered a card on the hosted page: pay out to it."""
    payout = await lock_payout(session, payout_id)
    if payout.status != S.NEW.value:
        raise BusinessRuleViolation(f"the payout is {payout.status}, not new", code="state_forbids")
    if payout.expires_at <= now:
        raise TransactionExpired("the payout's time limit has passed")
    payout.card_masked, payout.card_brand = masked, brand
    return await _send_to_card(session, rt, payout, number, now)


async def _resolve(session: AsyncSession, rt: Runtime, payout: Payout, now: datetime, actor: str) -> Payout:
    """Ask the acquirer again about a processing payout: the sandbox ends it as its test card says."""
    if payout.status != S.PROCESSING.value or payout.card_enc is None:
        raise BusinessRuleViolation(
            f"only a processing payout can be resolved; this one is {payout.status}", code="state_forbids"
        )
    pan = rt.keyring.decrypt(payout.card_enc, card_aad(payout.id))
    decision = acquirer_for(payout).resolve_processing(card_number=pan)
    if decision.outcome is Outcome.PROCESSING:
        raise BusinessRuleViolation(
            "the acquirer has no answer for this payout: approve or decline it", code="state_forbids"
        )
    return await _apply_decision(session, payout, decision, now, actor=actor)


async def expire_payout(session: AsyncSession, payout_id: int, now: datetime) -> bool:
    """Time-limit job: a payout whose recipient never entered a card gives the money back."""
    payout = await lock_payout(session, payout_id)
    if payout.status != S.NEW.value or payout.expires_at > now:
        return False
    await transition(
        session,
        payout,
        S.EXPIRED,
        actor="worker",
        now=now,
        note="time limit passed",
        changes=_failure(EXPIRED_CODE, EXPIRED_DESCRIPTION),
    )
    return True


async def test_action(
    session: AsyncSession,
    payout_id: int,
    action: str,
    *,
    now: datetime,
    actor: str,
    code: int | None = None,
    rt: Runtime | None = None,
) -> Payout:
    """The console's payout test buttons (and `greengate payout action`): approve or decline a payout
    that has not ended, or resolve a processing one (it ends as the acquirer says: for a test card, as
    the test card table says). Test payouts take approve/decline at any open status; live payouts only
    while the manual acquirer leaves them processing. `resolve` needs the runtime (the card's key)."""
    if action not in TEST_ACTIONS:
        raise InvalidRequest(f"action must be one of {', '.join(TEST_ACTIONS)}", field="action")
    payout = await lock_payout(session, payout_id)
    status = S(payout.status)
    if status in FINAL:
        raise BusinessRuleViolation(f"a {status.value} payout cannot be changed", code="state_forbids")
    if not payout.testing and status is not S.PROCESSING:
        raise BusinessRuleViolation(
            "test buttons work on test payouts, or on live payouts the acquirer left processing",
            code="action_disabled",
        )
    if action == "resolve":
        if rt is None:
            raise InvalidRequest("resolve needs the runtime to read the payout's card", field="action")
        return await _resolve(session, rt, payout, now, actor)
    if action == "approve":
        auth_code, rrn = approval_codes(payout.id, payout=True)
        return await transition(
            session,
            payout,
            S.OK,
            actor=actor,
            now=now,
            note="approved by operator",
            changes={"auth_code": auth_code, "rrn": rrn},
        )
    failure = 10001 if code is None else code
    if not 1 <= failure <= 99999:
        raise InvalidRequest("decline code must be a number from 1 to 99999", field="code")
    return await transition(
        session,
        payout,
        S.FAILED,
        actor=actor,
        now=now,
        note="declined by operator",
        changes=_failure(failure, "declined by operator"),
    )


def kind_of(payout: Payout) -> PayoutKind:
    return PayoutKind(payout.kind)
