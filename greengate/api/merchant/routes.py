"""Merchant API payment acceptance scripts (init_payment.php, payment.php, get_status*.php, ...)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from greengate.api.dispatch import Answer, Incoming, Script, Scripts
from greengate.api.merchant import card_storage, operations, payouts
from greengate.api.merchant.payment_params import parse_currency, parse_init, parse_money, read_text
from greengate.api.merchant.protocol import (
    FromContext,
    MerchantCall,
    OnLink,
    process,
    reads,
    request_fingerprint,
    to_page,
    unknown_script,
    writes,
)
from greengate.api.merchant.status import money, status3_fields, status_fields
from greengate.domain.errors import InvalidRequest, NoPaymentSystem
from greengate.domain.params import Params, first
from greengate.domain.payment_systems import PAYMENT_SYSTEMS, ready
from greengate.domain.payments import selected_methods
from greengate.runtime import Runtime
from greengate.services import idempotency, refunds, saved_cards
from greengate.services.payments import (
    Opened,
    cancel_payment,
    find_payment,
    latest_attempt,
    lookup,
    open_payment,
    opened,
    page_url,
    status_of,
)
from greengate.store.links import Link
from greengate.store.models import Payment
from greengate.store.payments import INIT_CONTEXT, INIT_CONTEXT_WITH_ID, status_context

METHODS = ("GET", "POST")


async def _init_on(link: Link, rt: Runtime, call: MerchantCall) -> Params:
    req = parse_init(call.params)
    key, fingerprint = req.idempotency_key, request_fingerprint("init_payment", call.params)
    stored = None
    if key is not None:
        stored = await idempotency.lookup(link, call.merchant.id, "init_payment", key, fingerprint)
    if stored is not None:
        payment = await opened(link, call.merchant.id, int(stored.body))
    else:
        recording = call.recording if key is None else None  # a key is stored in a second statement
        record = None if recording is None else (lambda new: recording.row(_answer(rt, new)))
        payment = await open_payment(link, rt, call.merchant, req, call.now, call.context, record)
        if recording is not None:
            recording.done = payment.recorded
        if key is not None:
            await idempotency.remember(
                link,
                call.merchant.id,
                "init_payment",
                key,
                fingerprint,
                idempotency.StoredResponse(200, str(payment.id)),
                call.now,
            )
    return _answer(rt, payment)


def _answer(rt: Runtime, payment: Opened) -> Params:
    return [
        ("pg_payment_id", str(payment.id)),
        ("pg_redirect_url", page_url(rt, payment.access_token)),
        # The method is chosen already (pg_payment_system): the page goes straight to it.
        (
            "pg_redirect_url_type",
            "payment system" if len(selected_methods(payment.payment_system)) == 1 else "need data",
        ),
    ]


def _init_context(params: Params, dialect: str) -> tuple[Any, dict[str, Any]]:
    """The merchant's cap in the request's currency, the open payment of its order id and (PostgreSQL)
    the new payment's id, read with the merchant; values the request cannot give match nothing (it is
    refused after authentication)."""
    try:
        currency: str | None = parse_currency(params)
        order_id = read_text(params, "pg_order_id", max_length=50)
    except InvalidRequest:
        currency = order_id = None
    statement = INIT_CONTEXT_WITH_ID if dialect == "postgresql" else INIT_CONTEXT
    return statement, {"currency": currency, "order_id": order_id}


def _without_key(params: Params) -> bool:
    """An init without an idempotency key writes one statement (the payment, its event, its expiry job
    and the request's record); a key is looked up and stored by statements of their own."""
    return first(params, "pg_idempotency_key") is None


_init = OnLink(_init_on, _init_context, _without_key)


async def payment_php(rt: Runtime, request: Incoming) -> Answer:
    """The payer's browser brings the signed parameters: create the payment and go to its page."""
    outcome = await process(rt, request, _init, writes="payment.php")
    return to_page(outcome.fields, "The payment could not be started")


def _status_context(params: Params, dialect: str) -> tuple[Any, dict[str, Any]]:
    try:
        return status_context(*lookup(first(params, "pg_payment_id"), first(params, "pg_order_id")))
    except InvalidRequest:
        return status_context(None, None)  # refused after authentication


def _status_on(call: MerchantCall) -> Params:
    """get_status.php and get_status2.php: read with the merchant, in one statement."""
    params = call.params
    return status_fields(
        status_of(call.context, first(params, "pg_payment_id"), first(params, "pg_order_id"))
    )


_status = FromContext(_status_on, _status_context)


async def _payment_named(session: AsyncSession, call: MerchantCall, *, lock: bool = False) -> Payment:
    """The merchant's payment the request names by pg_payment_id or pg_order_id."""
    named = call.params
    return await find_payment(
        session,
        call.merchant.id,
        payment_id=first(named, "pg_payment_id"),
        order_id=first(named, "pg_order_id"),
        lock=lock,
    )


async def _status3(session: AsyncSession, rt: Runtime, call: MerchantCall) -> Params:
    payment = await _payment_named(session, call)
    return status3_fields(
        payment,
        await latest_attempt(session, payment.id),
        await refunds.refunds_of(session, payment.id),
        await refunds.settled_amount(session, payment),
        await saved_cards.token_of_payment(session, payment.id),
    )


async def _cancel(session: AsyncSession, rt: Runtime, call: MerchantCall) -> Params:
    payment = await _payment_named(session, call, lock=True)
    await cancel_payment(session, payment, call.now, actor=f"merchant:{call.merchant.id}")
    return [("pg_payment_id", str(payment.id))]


async def _ps_list(session: AsyncSession, rt: Runtime, call: MerchantCall) -> Params:
    currency = parse_currency(call.params)
    amount = parse_money(call.params, "pg_amount", currency)
    fields: Params = []
    systems = ready(rt.settings.payment_system_state_map())
    if not systems:
        raise NoPaymentSystem("no payment system is ready to accept the request")
    for name in systems:
        description = PAYMENT_SYSTEMS[name]
        fields.append(
            (
                "pg_payment_system",
                [
                    ("pg_name", name),
                    ("pg_description", description),
                    ("pg_amount_to_pay", money(amount, currency)),
                    ("pg_amount_to_pay_currency", currency),
                ],
            )
        )
    return fields


def _php_scripts() -> dict[str, Script]:
    return {
        "/init_payment.php": writes(_init, "init_payment.php"),
        "/payment.php": payment_php,
        "/get_status.php": reads(_status),
        "/get_status2.php": reads(_status),
        "/get_status3.php": reads(_status3),
        "/cancel.php": writes(_cancel, "cancel.php"),
        "/ps_list.php": reads(_ps_list),
        **operations.scripts(),
    }


def add_scripts(scripts: Scripts) -> None:
    """Every Merchant API script. Each ".php" one also under the names clients of this family use:
    without ".php" and under "api/"."""
    for path, script in _php_scripts().items():
        bare = path.removesuffix(".php")
        for alias in (path, bare, f"/api{path}", f"/api{bare}"):
            scripts.add(alias, METHODS, script)
    for path, script in {**card_storage.scripts(), **payouts.scripts()}.items():
        scripts.add(path, METHODS, script)


__all__ = ["add_scripts", "unknown_script"]
