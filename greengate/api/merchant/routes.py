"""Merchant API payment acceptance scripts (init_payment.php, payment.php, get_status*.php, ...)."""

from __future__ import annotations

from html import escape

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from sqlalchemy.ext.asyncio import AsyncSession

from greengate.api.merchant import operations
from greengate.api.merchant.payment_params import parse_currency, parse_init, parse_money
from greengate.api.merchant.protocol import MerchantCall, handle, process, request_fingerprint
from greengate.api.merchant.status import money, status3_fields, status_fields
from greengate.domain.errors import NoPaymentSystem
from greengate.domain.params import Params, first
from greengate.domain.payment_systems import PAYMENT_SYSTEMS, ready
from greengate.domain.payments import selected_methods
from greengate.runtime import Runtime
from greengate.services import idempotency, refunds, saved_cards
from greengate.services.payments import cancel_payment, find_payment, init_payment, latest_attempt, page_url

router = APIRouter(tags=["Merchant API"], include_in_schema=False)
METHODS = ["GET", "POST"]


async def _init(session: AsyncSession, rt: Runtime, call: MerchantCall) -> Params:
    req = parse_init(call.params)
    key, fingerprint = req.idempotency_key, request_fingerprint("init_payment", call.params)
    stored = None
    if key is not None:
        stored = await idempotency.lookup(session, call.merchant.id, "init_payment", key, fingerprint)
    if stored is not None:
        payment = await find_payment(session, call.merchant.id, payment_id=stored.body, order_id=None)
    else:
        payment = await init_payment(session, rt, call.merchant, req, call.now)
        if key is not None:
            await idempotency.remember(
                session,
                call.merchant.id,
                "init_payment",
                key,
                fingerprint,
                idempotency.StoredResponse(200, str(payment.id)),
                call.now,
            )
    return [
        ("pg_payment_id", str(payment.id)),
        ("pg_redirect_url", page_url(rt, payment)),
        # The method is chosen already (pg_payment_system): the page goes straight to it.
        (
            "pg_redirect_url_type",
            "payment system" if len(selected_methods(payment.payment_system)) == 1 else "need data",
        ),
    ]


@router.api_route("/init_payment.php", methods=METHODS)
async def init_payment_php(request: Request) -> Response:
    return await handle(request, _init, writes="init_payment.php")


@router.api_route("/payment.php", methods=METHODS)
async def payment_php(request: Request) -> Response:
    """The payer's browser brings the signed parameters: create the payment and go to its page."""
    fields, _, _ = await process(request, _init, writes="payment.php")
    if first(fields, "pg_status") == "ok":
        return RedirectResponse(first(fields, "pg_redirect_url") or "/", status_code=303)
    code, text = first(fields, "pg_error_code"), first(fields, "pg_error_description")
    body = (
        "<!doctype html><meta charset=utf-8><title>Payment error</title>"
        f"<h1>The payment could not be started</h1><p>Error {escape(code or '')}: {escape(text or '')}</p>"
    )
    return HTMLResponse(body, status_code=400)


def _status(render: str):  # type: ignore[no-untyped-def]
    async def handler(session: AsyncSession, rt: Runtime, call: MerchantCall) -> Params:
        payment = await find_payment(
            session,
            call.merchant.id,
            payment_id=first(call.params, "pg_payment_id"),
            order_id=first(call.params, "pg_order_id"),
        )
        attempt = await latest_attempt(session, payment.id)
        if render == "3":
            listed = await refunds.refunds_of(session, payment.id)
            return status3_fields(
                payment,
                attempt,
                listed,
                await refunds.settled_amount(session, payment),
                await saved_cards.token_of_payment(session, payment.id),
            )
        return status_fields(payment, attempt)

    return handler


@router.api_route("/get_status.php", methods=METHODS)
async def get_status_php(request: Request) -> Response:
    return await handle(request, _status("1"))


@router.api_route("/get_status2.php", methods=METHODS)
async def get_status2_php(request: Request) -> Response:
    return await handle(request, _status("2"))


@router.api_route("/get_status3.php", methods=METHODS)
async def get_status3_php(request: Request) -> Response:
    return await handle(request, _status("3"))


async def _cancel(session: AsyncSession, rt: Runtime, call: MerchantCall) -> Params:
    payment = await find_payment(
        session,
        call.merchant.id,
        payment_id=first(call.params, "pg_payment_id"),
        order_id=first(call.params, "pg_order_id"),
        lock=True,
    )
    await cancel_payment(session, payment, call.now, actor=f"merchant:{call.merchant.id}")
    return [("pg_payment_id", str(payment.id))]


@router.api_route("/cancel.php", methods=METHODS)
async def cancel_php(request: Request) -> Response:
    return await handle(request, _cancel, writes="cancel.php")


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


@router.api_route("/ps_list.php", methods=METHODS)
async def ps_list_php(request: Request) -> Response:
    return await handle(request, _ps_list)


# revoke.php, do_capture.php, make_recurring_payment.php
router.include_router(operations.router)


def _add_aliases() -> None:
    """Each script also under the names clients of this family use: without ".php" and under "api/"."""
    for route in list(router.routes):
        if isinstance(route, APIRoute) and route.path.endswith(".php"):
            bare = route.path.removesuffix(".php")
            for alias in (bare, f"/api{route.path}", f"/api{bare}"):
                router.add_api_route(alias, route.endpoint, methods=sorted(route.methods or ()), name=alias)


_add_aliases()
