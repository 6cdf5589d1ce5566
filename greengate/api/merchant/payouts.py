"""Merchant API payouts to cards: api/reg2nonreg, api/reg2reg and api/payment_status.

Signed with the merchant's payout secret. A repeated request (same pg_order_id, pg_idempotency_key
or Idempotency-Key header) gets the first answer again and never a second payout.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from greengate.api.dispatch import Answer, Incoming, Script
from greengate.api.exchange.wire import wire_time
from greengate.api.merchant.payment_params import (
    parse_currency,
    parse_money,
    parse_url,
    read_flag,
    read_text,
    shop_params,
)
from greengate.api.merchant.protocol import Handler, MerchantCall, process, request_fingerprint, xml
from greengate.domain import ledger as ledger_domain
from greengate.domain.errors import InvalidRequest
from greengate.domain.money import format_minor
from greengate.domain.params import Params, first
from greengate.domain.payments import LANGUAGES
from greengate.domain.payouts import (
    DEFAULT_TIME_LIMIT_SECONDS,
    MAX_TIME_LIMIT_SECONDS,
    PAYMENT_STATUS,
    RESULT_STATUS,
    TRANSACTION_STATUS,
    NewPayout,
    PayoutKind,
    PayoutStatus,
)
from greengate.runtime import Runtime
from greengate.services import idempotency, ledger, payouts
from greengate.store.models import Payout

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
CARD_PARAMS = ("pg_card_token_to", "pg_card_id_to", "pg_card_id", "pg_card_token")
# Parameters the gateway interprets; anything else is the merchant's own and is echoed in callbacks.
KNOWN = frozenset(
    {
        "pg_merchant_id",
        "pg_amount",
        "pg_currency",
        "pg_order_id",
        "pg_user_id",
        "pg_description",
        "pg_post_link",
        "pg_back_link",
        "pg_order_time_limit",
        "pg_testing_mode",
        "pg_language",
        "pg_idempotency_key",
        "pg_payment_id",
        "pg_salt",
        "pg_sig",
        *CARD_PARAMS,
    }
)


# --- request parameters ----------------------------------------------------------------------


def _time_limit(params: Params, now: datetime) -> datetime:
    raw = read_text(params, "pg_order_time_limit", max_length=19, printable=True)
    if raw is None:
        return now + timedelta(seconds=DEFAULT_TIME_LIMIT_SECONDS)
    try:
        limit = datetime.strptime(raw, TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise InvalidRequest(
            "pg_order_time_limit must be a UTC time like 2026-11-25 18:00:00", field="pg_order_time_limit"
        ) from None
    if limit <= now:
        raise InvalidRequest("pg_order_time_limit has passed", field="pg_order_time_limit")
    if limit > now + timedelta(seconds=MAX_TIME_LIMIT_SECONDS):
        raise InvalidRequest("pg_order_time_limit is more than 30 days away", field="pg_order_time_limit")
    return limit


def parse_payout(params: Params, kind: PayoutKind, now: datetime, header_key: str | None) -> NewPayout:
    currency = parse_currency(params)
    amount = parse_money(params, "pg_amount", currency)
    order_id = read_text(params, "pg_order_id", max_length=50, required=True, printable=True)
    assert order_id is not None
    user_id = read_text(
        params, "pg_user_id", max_length=100, required=kind is PayoutKind.TO_SAVED_CARD, printable=True
    )
    links = {}
    for name in ("pg_post_link", "pg_back_link"):
        value = read_text(params, name, max_length=2000, printable=True)
        links[name] = parse_url(value, name) if value is not None else None
    language = (read_text(params, "pg_language", max_length=2, printable=True) or "ru").lower()
    if language not in LANGUAGES:
        raise InvalidRequest(f"pg_language must be one of {', '.join(LANGUAGES)}", field="pg_language")
    key = read_text(params, "pg_idempotency_key", max_length=idempotency.MAX_KEY_LENGTH, printable=True)
    if header_key is not None:
        header_key = idempotency.validate_key(header_key)
        if key is not None and key != header_key:
            raise InvalidRequest(
                "pg_idempotency_key and the Idempotency-Key header differ", field="pg_idempotency_key"
            )
    card_id = card_token = None
    if kind is PayoutKind.TO_SAVED_CARD:
        card_token = read_text(params, "pg_card_token_to", max_length=100, printable=True) or read_text(
            params, "pg_card_token", max_length=100, printable=True
        )
        card_id = read_text(params, "pg_card_id_to", max_length=30, printable=True) or read_text(
            params, "pg_card_id", max_length=30, printable=True
        )
        if card_token is None and card_id is None:
            raise InvalidRequest("pg_card_token_to or pg_card_id is required", field="pg_card_token_to")
    return NewPayout(
        kind=kind,
        amount=amount,
        currency=currency,
        order_id=order_id,
        description=read_text(params, "pg_description", max_length=1024, printable=True) or "",
        expires_at=_time_limit(params, now),
        user_id=user_id,
        post_link=links["pg_post_link"],
        back_link=links["pg_back_link"],
        language=language,
        testing=bool(read_flag(params, "pg_testing_mode")),
        card_id=card_id,
        card_token=card_token,
        idempotency_key=key or header_key,
        extras=shop_params(params, KNOWN),
    )


# --- answers ---------------------------------------------------------------------------------


def _money(payout: Payout) -> str:
    return format_minor(payout.amount, payout.currency)


# A declined payout's answer: the payment system's refusal in the family's API code; the payer-facing
# code (10000, 10001, ...) only in pg_failure_code.
PAYOUT_DECLINED = 470


def _error_fields(payout: Payout) -> Params:
    if payout.failure_code is None:
        return [("pg_error_code", "0"), ("pg_error_description", "")]
    return [
        ("pg_error_code", str(PAYOUT_DECLINED)),
        ("pg_error_description", payout.failure_description or ""),
        ("pg_failure_code", str(payout.failure_code)),
        ("pg_failure_description", payout.failure_description or ""),
    ]


async def _reg2reg_answer(session: AsyncSession, payout: Payout) -> Params:
    status = PayoutStatus(payout.status)
    balance = await ledger.balance(
        session,
        ledger_domain.merchant_owner(payout.merchant_id),
        ledger_domain.Kind.AVAILABLE.value,
        payout.currency,
        ledger_domain.book_of(payout.testing),
    )
    return [
        ("pg_status", RESULT_STATUS[status]),
        ("pg_payment_id", str(payout.id)),
        ("pg_order_id", payout.order_id),
        ("pg_payment_status", PAYMENT_STATUS[status]),
        ("pg_balance", format_minor(balance, payout.currency)),
        ("pg_card_hash", payout.card_masked or ""),
        ("pg_payment_amount", _money(payout)),
        ("pg_currency", payout.currency),
        ("pg_payment_date", wire_time(payout.paid_at or payout.created_at)),
        *_error_fields(payout),
    ]


def status_fields(payout: Payout) -> Params:
    status = PayoutStatus(payout.status)
    fields: Params = [
        ("pg_payment_id", str(payout.id)),
        ("pg_order_id", payout.order_id),
        ("pg_user_id", payout.user_id or ""),
        ("pg_transaction_status", TRANSACTION_STATUS[status]),
        ("pg_payment_status", PAYMENT_STATUS[status]),
        ("pg_amount", _money(payout)),
        ("pg_currency", payout.currency),
        ("pg_testing_mode", "1" if payout.testing else "0"),
        ("pg_create_date", wire_time(payout.created_at)),
        ("pg_payment_date", wire_time(payout.paid_at) if payout.paid_at else ""),
        ("pg_card_hash", payout.card_masked or ""),
        *_error_fields(payout),
    ]
    return fields


# --- handlers --------------------------------------------------------------------------------


def _creator(kind: PayoutKind) -> Handler:
    async def handler(session: AsyncSession, rt: Runtime, call: MerchantCall) -> Params:
        merchant = call.merchant
        req = parse_payout(call.params, kind, call.now, call.request.header(b"idempotency-key"))
        fingerprint = request_fingerprint(call.script, call.params)
        key = req.idempotency_key
        if key is not None:
            stored = await idempotency.lookup(session, merchant.id, call.script, key, fingerprint)
            if stored is not None:
                remembered = await session.get(Payout, int(stored.body))
                assert remembered is not None
                return payouts.first_answer(remembered)
        existing = await payouts.find_by_order(session, merchant.id, req.order_id)
        card = None
        if existing is None and kind is PayoutKind.TO_SAVED_CARD:
            assert req.user_id is not None
            card = await payouts.lookup_saved_card(
                session, rt, merchant.id, req.user_id, req.card_id, req.card_token
            )
        created = await payouts.create_payout(
            session, rt, merchant, req, fingerprint=fingerprint, now=call.now, card=card
        )
        payout = created.payout
        if created.created:
            if kind is PayoutKind.TO_NEW_CARD:
                answer: Params = [
                    ("pg_payment_id", str(payout.id)),
                    ("pg_redirect_url", payouts.page_url(rt, payout)),
                ]
            else:
                answer = await _reg2reg_answer(session, payout)
            payouts.remember_answer(payout, answer)
        elif payout.request_hash != fingerprint:
            raise InvalidRequest(
                f"pg_order_id {req.order_id} already has a payout with other parameters", field="pg_order_id"
            )
        else:
            answer = payouts.first_answer(payout)
        if key is not None:
            await idempotency.remember(
                session,
                merchant.id,
                call.script,
                key,
                fingerprint,
                idempotency.StoredResponse(200, str(payout.id)),
                call.now,
            )
        return answer

    return handler


def _answering(handler: Handler, writes: str | None = None) -> Script:
    async def script(rt: Runtime, request: Incoming) -> Answer:
        outcome = await process(rt, request, handler, key_kind="payout", writes=writes)
        fields = outcome.fields
        if len(fields) > 1 and fields[0] == ("pg_status", "ok") and fields[1][0] == "pg_status":
            fields = fields[1:]  # the answer names the payout's own pg_status (reg2reg)
        return xml(outcome, fields)

    return script


async def _status(session: AsyncSession, rt: Runtime, call: MerchantCall) -> Params:
    payout = await payouts.find_payout(
        session,
        call.merchant.id,
        payout_id=first(call.params, "pg_payment_id"),
        order_id=first(call.params, "pg_order_id"),
    )
    return status_fields(payout)


def scripts() -> dict[str, Script]:
    return {
        # Payout to a card the recipient enters on the hosted page.
        "/api/reg2nonreg": _answering(_creator(PayoutKind.TO_NEW_CARD), "api/reg2nonreg"),
        # Payout to a saved payout card.
        "/api/reg2reg": _answering(_creator(PayoutKind.TO_SAVED_CARD), "api/reg2reg"),
        # A payout's status by pg_payment_id or pg_order_id.
        "/api/payment_status": _answering(_status),
    }
