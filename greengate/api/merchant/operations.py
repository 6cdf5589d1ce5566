"""Merchant API money-after-the-payment scripts: revoke.php (refunds), do_capture.php (clearing of
two-step payments) and make_recurring_payment.php (charging a recurring profile).

Each may be retried safely: with `pg_idempotency_key` (or an `Idempotency-Key` header) a repeat of the
same request gets the first answer and has no second effect; a recurring charge is also one per
merchant order id (`pg_order_id`)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession

from greengate.api.dispatch import Script
from greengate.api.exchange.wire import wire_time
from greengate.api.merchant.payment_params import KNOWN, parse_url, read_text, shop_params
from greengate.api.merchant.protocol import MerchantCall, request_fingerprint, writes
from greengate.api.merchant.status import money
from greengate.domain.errors import BusinessRuleViolation, InvalidRequest
from greengate.domain.money import parse_amount
from greengate.domain.params import Params, first
from greengate.domain.payments import CURRENCY_ALIASES, REQUEST_METHODS, TRANSACTION_STATUS, PaymentStatus
from greengate.runtime import Runtime
from greengate.services import captures, idempotency, recurring, refunds
from greengate.services.payments import find_payment

IDEMPOTENCY_HEADER = b"idempotency-key"


# --- parameters ------------------------------------------------------------------------------


def _id(params: Params, name: str) -> int:
    value = read_text(params, name, max_length=18, required=True)
    assert value is not None
    if not value.isascii() or not value.isdigit():
        raise InvalidRequest(f"{name} must be a number", field=name)
    return int(value)


def _amount(params: Params, name: str, currency: str) -> int | None:
    raw = read_text(params, name, max_length=20)
    if raw is None:
        return None
    amount = parse_amount(raw, currency, field=name)
    if amount <= 0:
        raise InvalidRequest(f"{name} must be greater than 0", field=name)
    return amount


# --- idempotency -----------------------------------------------------------------------------


def _as_params(body: str) -> Params:
    return [(str(name), str(value)) for name, value in json.loads(body)]


async def _once(
    session: AsyncSession,
    call: MerchantCall,
    keys: list[tuple[str, str]],
    act: Callable[[], Awaitable[Params]],
) -> Params:
    """Run `act` once per idempotency key: a repeat gets the stored answer. `keys`: (scope, key)."""
    fingerprint = request_fingerprint(call.script, call.params)
    for scope, key in keys:
        try:
            stored = await idempotency.lookup(session, call.merchant.id, scope, key, fingerprint)
        except BusinessRuleViolation as exc:
            if scope.endswith(".order"):
                raise InvalidRequest(
                    f"pg_order_id {key} was used by another request", field="pg_order_id"
                ) from exc
            raise
        if stored is not None:
            return _as_params(stored.body)
    fields = await act()
    for scope, key in keys:
        await idempotency.remember(
            session,
            call.merchant.id,
            scope,
            key,
            fingerprint,
            idempotency.StoredResponse(200, json.dumps(fields, ensure_ascii=False)),
            call.now,
        )
    return fields


def _key(call: MerchantCall) -> list[tuple[str, str]]:
    key = first(call.params, "pg_idempotency_key") or call.request.header(IDEMPOTENCY_HEADER)
    if not key:
        return []
    try:
        return [(call.script, idempotency.validate_key(key))]
    except InvalidRequest as exc:
        raise InvalidRequest(exc.message, field="pg_idempotency_key") from None


# --- revoke.php ------------------------------------------------------------------------------


async def _revoke(session: AsyncSession, rt: Runtime, call: MerchantCall) -> Params:
    payment_id = _id(call.params, "pg_payment_id")

    async def act() -> Params:
        payment = await find_payment(
            session, call.merchant.id, payment_id=str(payment_id), order_id=None, lock=True
        )
        currency = read_text(call.params, "pg_currency", max_length=3)
        if (
            currency is not None
            and CURRENCY_ALIASES.get(currency.upper(), currency.upper()) != payment.currency
        ):
            raise InvalidRequest(
                f"pg_currency {currency} is not the payment's currency ({payment.currency})",
                field="pg_currency",
            )
        amount = _amount(call.params, "pg_refund_amount", payment.currency)
        refund = await refunds.refund_payment(
            session, payment, amount, actor=f"merchant:{call.merchant.id}", now=call.now
        )
        return [
            ("pg_payment_id", str(payment.id)),
            ("pg_refund_payment_id", str(refund.id)),
            ("pg_refund_amount", money(refund.amount, refund.currency)),
            ("pg_revoke_amount", money(payment.refunded_amount, payment.currency)),
            ("pg_transaction_status", TRANSACTION_STATUS[PaymentStatus(payment.status)]),
        ]

    return await _once(session, call, _key(call), act)


# --- do_capture.php --------------------------------------------------------------------------


async def _capture(session: AsyncSession, rt: Runtime, call: MerchantCall) -> Params:
    payment_id = _id(call.params, "pg_payment_id")

    async def act() -> Params:
        payment = await find_payment(
            session, call.merchant.id, payment_id=str(payment_id), order_id=None, lock=True
        )
        amount = _amount(call.params, "pg_clearing_amount", payment.currency)
        if amount is None:
            amount = _amount(call.params, "pg_amount", payment.currency)
        capture = await captures.capture_payment(
            session, payment, amount, actor=f"merchant:{call.merchant.id}", now=call.now
        )
        return [
            ("pg_payment_id", str(payment.id)),
            ("pg_amount", money(payment.amount, payment.currency)),
            ("pg_clearing_amount", money(capture.amount, capture.currency)),
            ("pg_currency", payment.currency),
            ("pg_captured", "1"),
        ]

    return await _once(session, call, _key(call), act)


# --- make_recurring_payment.php --------------------------------------------------------------

RECURRING_KNOWN = KNOWN | {"pg_recurring_profile"}


async def _recurring(session: AsyncSession, rt: Runtime, call: MerchantCall) -> Params:
    params = call.params
    profile_id = _id(params, "pg_recurring_profile")
    description = read_text(params, "pg_description", max_length=1024, required=True)
    assert description is not None
    order_id = read_text(params, "pg_order_id", max_length=50)
    urls: dict[str, str] = {}
    for name in ("pg_result_url", "pg_refund_url"):
        value = read_text(params, name, max_length=2000)
        if value is not None:
            urls[name.removeprefix("pg_").removesuffix("_url")] = parse_url(value, name)
    method = read_text(params, "pg_request_method", max_length=8)
    if method is not None and method.upper() not in REQUEST_METHODS:
        raise InvalidRequest(
            f"pg_request_method must be one of {', '.join(REQUEST_METHODS)}", field="pg_request_method"
        )
    keys = _key(call)
    if order_id is not None:
        keys.append((f"{call.script}.order", order_id))

    async def act() -> Params:
        profile = await recurring.find_profile(session, call.merchant.id, profile_id)
        amount = _amount(params, "pg_amount", profile.currency)
        if amount is None:
            raise InvalidRequest("pg_amount is required", field="pg_amount")
        req = recurring.RecurringCharge(
            profile_id=profile_id,
            amount=amount,
            description=description,
            order_id=order_id,
            urls=urls,
            request_method=method.upper() if method else None,
            extras=shop_params(params, RECURRING_KNOWN),
        )
        payment, profile = await recurring.charge(session, rt, call.merchant, req, call.now)
        fields: Params = [
            ("pg_payment_id", str(payment.id)),
            ("pg_order_id", payment.order_id or ""),
            ("pg_amount", money(payment.amount, payment.currency)),
            ("pg_currency", payment.currency),
            ("pg_transaction_status", TRANSACTION_STATUS[PaymentStatus(payment.status)]),
            ("pg_recurring_profile_id", str(profile.id)),
            ("pg_recurring_profile_expiry_date", wire_time(profile.expires_at)),
        ]
        if payment.failure_code is not None:
            fields += [
                ("pg_failure_code", str(payment.failure_code)),
                ("pg_failure_description", payment.failure_description or ""),
            ]
        return fields

    return await _once(session, call, keys, act)


def scripts() -> dict[str, Script]:
    return {
        "/revoke.php": writes(_revoke, "revoke.php"),
        "/do_capture.php": writes(_capture, "do_capture.php"),
        "/make_recurring_payment.php": writes(_recurring, "make_recurring_payment.php"),
    }
