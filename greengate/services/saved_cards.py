"""Card storage: saving a payer's card for a merchant, paying with it, paying out to it.

Use cases (each one step of one transaction; the caller owns the session and commits):

- `start_add` — cardstorage/add, add2 and cardstoragepayout/add: a `pending` SavedCard whose
  `access_token` opens the card page. A card for payments gets a small two-step verification payment
  (1–100 in the currency's major units) that the page authorises, with 3-D Secure where the card asks
  for it, and that is voided (`revoked`) as soon as it is approved. A card for payouts only is checked
  by the card rules (and, in test mode, must be a payout test card); nothing is authorised.
- `submit_card` / `submit_3ds` — the page's steps; `expire_if_due` / `expire_card` — the page (or the
  worker's lifetime job, outbox kind `CARD_EXPIRE_JOB`) found it too late.
  The outcome goes to the merchant's `pg_post_link` (outbox kind `CARD_RESULT_CALLBACK`).
- `list_cards`, `remove_card` — cardstorage/list and remove. Removing nulls the PAN ciphertext (also
  in the attempts of payments made with the card), cancels the card's unpaid payments and kills
  the token.
- `init_charge`, `charge_of`, `pay_with_card` — card/init then card/pay (payer present, 3-D Secure
  where the card requires it) or card/direct (no payer: a card that asks for 3-D Secure is declined
  with 10004). The payment then runs through `payment_flow` and `payments.transition` like any card
  payment: callbacks, ledger, status.

For payouts (another service resolves a saved card to pay out to)::

    card = await payout_card(session, keyring, merchant_id, user_id, card_id=..., token=...)
    card.pan.reveal()  # the full PAN, a Secret: never log it
    card.masked, card.brand, card.card_id, card.token

It accepts the card's id or its token (either, or both when they must agree), finds only `active`
cards of that merchant and user (saved for payouts or for payments), and raises `CardNotFound`
(pg_error_code 340) otherwise.

The PAN is stored only as `Keyring` ciphertext with the row's identity as associated data
(`saved_cards:<id>:pan`); the CVC is never stored; the token is random (`secrets.token_urlsafe`),
unrelated to the PAN. Everything else sees the masked PAN (`4405-64XX-XXXX-6150`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from greengate.acquiring.base import FailureCode
from greengate.acquiring.test_data import find_payout_card
from greengate.domain.card_rules import CardForm
from greengate.domain.errors import BusinessRuleViolation, InvalidRequest, NotFound, TransactionNotFound
from greengate.domain.ids import id_number
from greengate.domain.money import exponent
from greengate.domain.payments import PAYER_STEPS, NewPayment, PaymentStatus
from greengate.domain.secret import Secret
from greengate.runtime import Runtime
from greengate.security.encryption import Keyring
from greengate.services import outbox, payment_flow, payments
from greengate.store.models import (
    Merchant,
    Payment,
    PaymentAttempt,
    RecurringProfile,
    SavedCard,
    SavedCardCharge,
)

S = PaymentStatus
CARD_RESULT_CALLBACK = "cardstorage.result"
CARD_EXPIRE_JOB = "cardstorage.expire"
PURPOSES = ("payment", "payout")
PENDING, ACTIVE, FAILED, REMOVED = "pending", "active", "failed", "removed"
ADD_LIFETIME = timedelta(hours=1)
VERIFY_MIN, VERIFY_MAX = 1, 100  # major units blocked to verify a card, then released
VERIFY_DESCRIPTION = "Card verification"


class CardNotFound(NotFound):
    code = "card_not_found"


@dataclass(frozen=True)
class AddCardRequest:
    user_id: str
    post_link: str | None
    back_link: str | None
    order_id: str | None = None
    currency: str = "KZT"
    language: str = "ru"
    testing: bool = False
    request_method: str | None = None  # None: the merchant's default


@dataclass(frozen=True)
class PayoutCard:
    """A saved card resolved for a payout. `pan` is the full number: reveal it only to pay out."""

    card_id: int
    token: str
    pan: Secret[str]
    masked: str
    brand: str
    exp: str
    holder: str
    testing: bool


def pan_aad(card_id: int) -> str:
    return f"saved_cards:{card_id}:pan"


def _attempt_aad(attempt_id: int) -> str:
    # The checkout's associated data for an attempt's PAN (payment_flow keeps it for 3-D Secure).
    return f"payment_attempts:{attempt_id}:pan"


# --- adding a card ---------------------------------------------------------------------------------


async def start_add(
    session: AsyncSession,
    rt: Runtime,
    merchant: Merchant,
    req: AddCardRequest,
    now: datetime,
    *,
    purpose: str,
) -> SavedCard:
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {PURPOSES}")
    testing = payments.is_testing(merchant, req.testing)
    card = SavedCard(
        merchant_id=merchant.id,
        user_id=req.user_id,
        purpose=purpose,
        status=PENDING,
        token=secrets.token_urlsafe(24),
        access_token=secrets.token_urlsafe(24),
        order_id=req.order_id,
        post_link=req.post_link,
        back_link=req.back_link,
        request_method=req.request_method or merchant.request_method or "POST",
        language=req.language,
        testing=testing,
        expires_at=now + ADD_LIFETIME,
        created_at=now,
        updated_at=now,
    )
    if purpose == "payment":
        major = VERIFY_MIN + secrets.randbelow(VERIFY_MAX - VERIFY_MIN + 1)
        amount = major * 10 ** exponent(req.currency)
        payment = await payments.init_payment(
            session,
            rt,
            merchant,
            NewPayment(
                amount=amount,
                currency=req.currency,
                description=VERIFY_DESCRIPTION,
                lifetime=int(ADD_LIFETIME.total_seconds()),
                payment_system="BANKCARD",
                user_id=req.user_id,
                language=req.language,
                testing=req.testing,
                two_step=True,
            ),
            now,
        )
        # The verification is the card storage's business: no check or result callbacks, no captures.
        payment.check_url = payment.result_url = payment.refund_url = payment.capture_url = None
        payment.success_url = payment.failure_url = None
        card.payment_id = payment.id
    session.add(card)
    await session.flush()
    outbox.enqueue(
        session,
        kind=CARD_EXPIRE_JOB,
        aggregate=f"saved_card:{card.id}",
        payload={"saved_card_id": card.id},
        now=now,
        due_at=card.expires_at,
        merchant_id=merchant.id,
    )
    return card


async def find_by_access_token(session: AsyncSession, token: str, *, lock: bool = False) -> SavedCard | None:
    if not token or len(token) > 64:
        return None
    stmt = select(SavedCard).where(SavedCard.access_token == token)
    if lock:
        stmt = stmt.with_for_update()
    card: SavedCard | None = await session.scalar(stmt)
    return card


async def verification_payment(session: AsyncSession, card: SavedCard) -> Payment | None:
    if card.payment_id is None:
        return None
    return await session.get(Payment, card.payment_id)


def _ensure_pending(card: SavedCard) -> None:
    if card.status != PENDING:
        raise BusinessRuleViolation(f"the card is {card.status}, not pending", code="state_forbids")


async def submit_card(
    session: AsyncSession, rt: Runtime, card: SavedCard, form: CardForm, now: datetime
) -> SavedCard:
    """The card page's form. The caller holds the card's row lock."""
    _ensure_pending(card)
    if card.expires_at <= now:
        return await expire_if_due(session, card, now)
    if card.purpose == "payout":
        card.card_masked, card.card_brand = form.masked, form.brand
        card.card_exp, card.card_holder = form.exp_text, form.holder
        if card.testing and find_payout_card(form.pan.reveal()) is None:
            return _fail(
                session, card, now, FailureCode.WRONG_CARD_DATA, "only payout test cards are accepted"
            )
        return _activate(session, rt.keyring, card, form.pan.reveal(), now)
    assert card.payment_id is not None
    payment = await payment_flow.submit_card(session, rt, card.payment_id, form, now)
    return await _after_step(session, rt, card, payment, now)


async def submit_3ds(
    session: AsyncSession, rt: Runtime, card: SavedCard, password: str, now: datetime
) -> SavedCard:
    _ensure_pending(card)
    if card.payment_id is None:
        raise BusinessRuleViolation("a payout card has no 3-D Secure step", code="state_forbids")
    if card.expires_at <= now:
        return await expire_if_due(session, card, now)
    payment = await payment_flow.submit_3ds(session, rt, card.payment_id, password, now)
    return await _after_step(session, rt, card, payment, now)


async def expire_card(session: AsyncSession, card_id: int, now: datetime) -> None:
    """The lifetime job: a card still pending when its page's lifetime ends fails (360)."""
    card = await session.scalar(select(SavedCard).where(SavedCard.id == card_id).with_for_update())
    if card is not None:
        await expire_if_due(session, card, now)


async def expire_if_due(session: AsyncSession, card: SavedCard, now: datetime) -> SavedCard:
    """A pending card whose page outlived its lifetime fails with 360 (its verification expires)."""
    if card.status != PENDING or card.expires_at > now:
        return card
    if card.payment_id is not None:
        payment = await payments.lock_payment(session, card.payment_id)
        if S(payment.status) in PAYER_STEPS:
            await payments.transition(
                session,
                payment,
                S.EXPIRED,
                actor="payer",
                now=now,
                note="card storage page expired",
                changes={"failure_code": 360, "failure_description": "payment lifetime expired"},
            )
    return _fail(session, card, now, 360, "the card page's lifetime has passed")


async def _after_step(
    session: AsyncSession, rt: Runtime, card: SavedCard, payment: Payment, now: datetime
) -> SavedCard:
    """Where the verification payment stands after a page step: approved → save the card and void
    the authorisation; declined → tell the merchant; 3-D Secure → wait for the password."""
    status = S(payment.status)
    if status in PAYER_STEPS:
        return card
    attempt = await payments.latest_attempt(session, payment.id)
    if status is S.OK and attempt is not None and attempt.card_enc is not None:
        pan = rt.keyring.decrypt(attempt.card_enc, _attempt_aad(attempt.id))
        attempt.card_enc = None  # the saved card holds the one copy of the PAN from now on
        card.card_masked, card.card_brand = attempt.card_masked, attempt.card_brand
        card.card_exp, card.card_holder = attempt.card_exp, attempt.card_holder
        await payments.transition(
            session,
            payment,
            S.REVOKED,
            actor="card_storage",
            now=now,
            note="card verification released",
            changes={"refunded_amount": payment.amount},
        )
        return _activate(session, rt.keyring, card, pan, now)
    if attempt is not None:
        attempt.card_enc = None
        card.card_masked, card.card_brand = attempt.card_masked, attempt.card_brand
        card.card_exp, card.card_holder = attempt.card_exp, attempt.card_holder
    if status in (S.PENDING, S.CHECK):
        # Verification needs an answer now; a card the acquirer cannot decide at once is not saved.
        await payments.transition(
            session,
            payment,
            S.CANCELED,
            actor="card_storage",
            now=now,
            note="card verification undecided",
            changes={"failure_code": 10000, "failure_description": "the card could not be verified now"},
        )
    return _fail(
        session,
        card,
        now,
        payment.failure_code or FailureCode.CONTACT_ISSUER,
        payment.failure_description or "the card was not verified",
    )


def _activate(session: AsyncSession, keyring: Keyring, card: SavedCard, pan: str, now: datetime) -> SavedCard:
    card.pan_enc = keyring.encrypt(pan, pan_aad(card.id))
    card.status, card.verified_at, card.updated_at = ACTIVE, now, now
    _notify(session, card, now)
    return card


def _fail(session: AsyncSession, card: SavedCard, now: datetime, code: int, description: str) -> SavedCard:
    card.status, card.updated_at = FAILED, now
    card.failure_code, card.failure_description = int(code), description
    _notify(session, card, now)
    return card


def _notify(session: AsyncSession, card: SavedCard, now: datetime) -> None:
    if not card.post_link:
        return
    outbox.enqueue(
        session,
        kind=CARD_RESULT_CALLBACK,
        aggregate=f"saved_card:{card.id}",
        payload={"saved_card_id": card.id},
        now=now,
        merchant_id=card.merchant_id,
        target_url=card.post_link,
    )


# --- saved cards ---------------------------------------------------------------------------------


async def list_cards(
    session: AsyncSession, merchant_id: int, user_id: str, *, purpose: str
) -> list[SavedCard]:
    return list(
        await session.scalars(
            select(SavedCard)
            .where(
                SavedCard.merchant_id == merchant_id,
                SavedCard.user_id == user_id,
                SavedCard.purpose == purpose,
                SavedCard.status == ACTIVE,
            )
            .order_by(SavedCard.id)
        )
    )


async def recurring_profiles(session: AsyncSession, cards: list[SavedCard], now: datetime) -> dict[int, int]:
    """The live recurring profile of each card (by card id), where one was started by a payment with
    it: its check payment or a charge (card/init with pg_recurring_start=1). The newest wins."""
    if not cards:
        return {}
    ids = [card.id for card in cards]
    by_check = {card.payment_id: card.id for card in cards if card.payment_id is not None}
    found: dict[int, int] = {}
    charged = await session.execute(
        select(SavedCardCharge.saved_card_id, RecurringProfile.id)
        .join(RecurringProfile, RecurringProfile.payment_id == SavedCardCharge.payment_id)
        .where(SavedCardCharge.saved_card_id.in_(ids), RecurringProfile.expires_at > now)
        .order_by(RecurringProfile.id)
    )
    checked = await session.execute(
        select(RecurringProfile.payment_id, RecurringProfile.id)
        .where(RecurringProfile.payment_id.in_(list(by_check)), RecurringProfile.expires_at > now)
        .order_by(RecurringProfile.id)
    )
    rows = [(card_id, profile_id) for card_id, profile_id in charged]
    rows += [(by_check[payment_id], profile_id) for payment_id, profile_id in checked]
    for card_id, profile_id in sorted(rows, key=lambda row: row[1]):
        found[card_id] = profile_id
    return found


async def find_card(
    session: AsyncSession,
    merchant_id: int,
    user_id: str,
    *,
    card_id: str | None,
    token: str | None,
    purposes: tuple[str, ...] = PURPOSES,
    lock: bool = False,
) -> SavedCard:
    """An active card of this merchant and user, by `pg_card_id` and/or `pg_card_token`."""
    if not card_id and not token:
        raise InvalidRequest("pg_card_id or pg_card_token is required", field="pg_card_id")
    stmt = select(SavedCard).where(
        SavedCard.merchant_id == merchant_id,
        SavedCard.user_id == user_id,
        SavedCard.status == ACTIVE,
        SavedCard.purpose.in_(purposes),
    )
    if card_id:
        number = id_number(card_id)
        if number is None:
            raise InvalidRequest("pg_card_id must be a number", field="pg_card_id")
        stmt = stmt.where(SavedCard.id == number)
    if token:
        stmt = stmt.where(SavedCard.token == token)
    if lock:
        stmt = stmt.with_for_update()
    card: SavedCard | None = await session.scalar(stmt)
    if card is None:
        raise CardNotFound("card not found")
    return card


async def remove_card(
    session: AsyncSession,
    merchant_id: int,
    user_id: str,
    *,
    card_id: str | None,
    token: str | None,
    purpose: str,
    now: datetime,
) -> SavedCard:
    card = await find_card(
        session, merchant_id, user_id, card_id=card_id, token=token, purposes=(purpose,), lock=True
    )
    charged = select(SavedCardCharge.payment_id).where(SavedCardCharge.saved_card_id == card.id)
    unpaid = await session.scalars(
        select(Payment).where(Payment.id.in_(charged)).order_by(Payment.id).with_for_update()
    )
    for payment in list(unpaid):
        if S(payment.status) in PAYER_STEPS:
            await payments.transition(
                session,
                payment,
                S.CANCELED,
                actor=f"merchant:{merchant_id}",
                now=now,
                note="saved card removed",
                changes={"failure_code": 400, "failure_description": "the saved card was removed"},
            )
    await session.execute(
        update(PaymentAttempt)
        .where(PaymentAttempt.payment_id.in_(charged), PaymentAttempt.card_enc.is_not(None))
        .values(card_enc=None)
        .execution_options(synchronize_session=False)
    )
    card.pan_enc = None
    card.status, card.deleted_at, card.updated_at = REMOVED, now, now
    return card


async def payout_card(
    session: AsyncSession,
    keyring: Keyring,
    merchant_id: int,
    user_id: str,
    *,
    card_id: str | int | None = None,
    token: str | None = None,
) -> PayoutCard:
    """A saved card to pay out to (see the module docstring)."""
    card = await find_card(
        session,
        merchant_id,
        user_id,
        card_id=str(card_id) if card_id is not None else None,
        token=token,
    )
    assert card.pan_enc is not None
    return PayoutCard(
        card_id=card.id,
        token=card.token,
        pan=Secret(keyring.decrypt(card.pan_enc, pan_aad(card.id))),
        masked=card.card_masked or "",
        brand=card.card_brand or "",
        exp=card.card_exp or "",
        holder=card.card_holder or "",
        testing=card.testing,
    )


# --- paying with a saved card --------------------------------------------------------------------


async def init_charge(
    session: AsyncSession, rt: Runtime, merchant: Merchant, req: NewPayment, card: SavedCard, now: datetime
) -> Payment:
    """card/init: a payment to be paid with this saved card (by card/pay or card/direct)."""
    if card.purpose != "payment":
        raise CardNotFound("card not found")
    payment = await payments.init_payment(
        session, rt, merchant, replace(req, payment_system="BANKCARD", user_id=card.user_id), now
    )
    existing = await session.get(SavedCardCharge, payment.id)
    if existing is None:
        session.add(SavedCardCharge(payment_id=payment.id, saved_card_id=card.id, created_at=now))
    elif existing.saved_card_id != card.id:
        raise InvalidRequest(
            f"pg_order_id {req.order_id} already has a payment with another card", field="pg_order_id"
        )
    return payment


async def token_of_payment(session: AsyncSession, payment_id: int) -> str | None:
    """The token (`pg_card_token`) of the saved card a payment was made with; None for other payments."""
    return await session.scalar(
        select(SavedCard.token)
        .join(SavedCardCharge, SavedCardCharge.saved_card_id == SavedCard.id)
        .where(SavedCardCharge.payment_id == payment_id)
    )


async def charge_of(
    session: AsyncSession, merchant_id: int, payment_id: str | None
) -> tuple[Payment, SavedCard]:
    """The payment made with a saved card (locked), and its card."""
    if not payment_id:
        raise InvalidRequest("pg_payment_id is required", field="pg_payment_id")
    payment = await payments.find_payment(
        session, merchant_id, payment_id=payment_id, order_id=None, lock=True
    )
    charge = await session.get(SavedCardCharge, payment.id)
    if charge is None:
        raise TransactionNotFound("transaction not found: not a saved card payment")
    card = await session.get(SavedCard, charge.saved_card_id)
    assert card is not None
    return payment, card


async def pay_with_card(
    session: AsyncSession,
    rt: Runtime,
    payment: Payment,
    card: SavedCard,
    now: datetime,
    *,
    payer_present: bool,
) -> Payment:
    """Authorise the payment with the saved card. With the payer present a card asking for 3-D Secure
    leaves the payment waiting on the checkout's 3-D Secure page; without (card/direct) it fails 10004."""
    if card.status != ACTIVE or card.pan_enc is None:
        raise CardNotFound("card not found: it was removed")
    month_text, _, year_text = (card.card_exp or "").partition("/")
    month, year = int(month_text or 0), 2000 + int(year_text or 0)
    if (year, month) < (now.year, now.month) and payment.status == S.NEW.value:
        return await payments.transition(
            session,
            payment,
            S.FAILED,
            actor="acquirer",
            now=now,
            note="saved card expired",
            changes={
                "failure_code": int(FailureCode.WRONG_CARD_DATA),
                "failure_description": "the saved card has expired",
            },
        )
    pan = rt.keyring.decrypt(card.pan_enc, pan_aad(card.id))
    form = CardForm(
        pan=Secret(pan),
        exp_month=month,
        exp_year=year,
        holder=card.card_holder or "",
        cvc=Secret(""),  # never stored: a saved card is charged without it
    )
    payment = await payment_flow.submit_card(session, rt, payment.id, form, now)
    if not payer_present and S(payment.status) is S.THREE_DS:
        attempt = await payments.latest_attempt(session, payment.id)
        if attempt is not None:
            attempt.status, attempt.failure_code = "declined", int(FailureCode.THREE_DS_FAILED)
        payment = await payments.transition(
            session,
            payment,
            S.FAILED,
            actor="acquirer",
            now=now,
            note="3-D Secure required without the payer",
            changes={
                "failure_code": int(FailureCode.THREE_DS_FAILED),
                "failure_description": "the card requires 3-D Secure: pay with card/pay",
            },
        )
    return payment
