"""Merchants: list, create (secrets shown once), settings, mode, disable, credential rotation, fees,
amount caps, balances per book."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from greengate.clock import utcnow
from greengate.domain.amount_caps import DEFAULT_CAPS_MAJOR, default_cap, parse_cap
from greengate.domain.errors import DomainError, InvalidRequest
from greengate.domain.money import format_minor, parse_amount
from greengate.services import amount_caps as cap_service
from greengate.services import fees as fee_service
from greengate.services import ledger
from greengate.services.console_sessions import set_flash
from greengate.services.merchants import (
    MODES,
    MerchantApiSettings,
    MerchantCredentials,
    create_merchant,
    get_merchant,
    rotate_credentials,
    update_exchange_settings,
    update_merchant_settings,
)
from greengate.store.models import Merchant, MerchantFee
from greengate.web.console.auth import Console, ConsoleRoute, action, page, perform
from greengate.web.console.filters import text as filter_text
from greengate.web.console.rendering import paginate, redirect, render

router = APIRouter(route_class=ConsoleRoute)
URL_FIELDS = ("check_url", "result_url", "refund_url", "capture_url", "success_url", "failure_url")


@router.get("/admin/merchants")
async def merchant_list(request: Request, console: Console = Depends(page())) -> Response:
    q = filter_text(request, "q")
    mode = request.query_params.get("mode", "")
    state = request.query_params.get("state", "")
    stmt = select(Merchant).order_by(Merchant.id.desc())
    if q:
        stmt = stmt.where(
            or_(Merchant.name.ilike(f"%{q}%"), Merchant.id == int(q))
            if (q.isascii() and q.isdigit()) and len(q) < 18
            else Merchant.name.ilike(f"%{q}%")
        )
    if mode in MODES:
        stmt = stmt.where(Merchant.mode == mode)
    if state in ("active", "disabled"):
        stmt = stmt.where(Merchant.active.is_(state == "active"))
    async with console.rt.db.transaction() as session:
        merchants = await paginate(session, stmt, request)
    return render(request, "merchants.html", console, page=merchants, q=q, mode=mode, state=state)


@router.get("/admin/merchants/new")
async def merchant_new(request: Request, console: Console = Depends(page("merchants"))) -> Response:
    return render(request, "merchant_new.html", console)


def _secrets_page(
    request: Request, console: Console, merchant: Merchant, creds: MerchantCredentials, *, created: bool
) -> Response:
    return render(request, "secrets.html", console, merchant=merchant, creds=creds, created=created)


@router.post("/admin/merchants")
async def merchant_create(request: Request, console: Console = Depends(action("merchants"))) -> Response:
    try:
        async with console.rt.db.transaction() as session:
            merchant, creds = await create_merchant(
                session,
                console.rt.keyring,
                name=console.value("name", 200),
                mode=console.value("mode") or "test",
                now=utcnow(),
                actor=console.actor,
            )
    except DomainError as exc:
        async with console.rt.db.transaction() as session:
            await set_flash(session, console.session_id, f"error:{exc.message}")
        return redirect("/admin/merchants/new")
    return _secrets_page(request, console, merchant, creds, created=True)


@router.get("/admin/merchants/{merchant_id}")
async def merchant_page(merchant_id: int, request: Request, console: Console = Depends(page())) -> Response:
    async with console.rt.db.transaction() as session:
        merchant = await session.get(Merchant, merchant_id)
        if merchant is None:
            return render(request, "not_found.html", console, status_code=404, what=f"merchant {merchant_id}")
        fee_rows = list(
            await session.scalars(
                select(MerchantFee).where(MerchantFee.merchant_id == merchant_id).order_by(MerchantFee.id)
            )
        )
        own = await cap_service.own_caps(session, merchant_id)
        in_force = await cap_service.caps_of(session, merchant_id)
        balances = await ledger.balances(session, merchant_id)
    return render(
        request,
        "merchant.html",
        console,
        merchant=merchant,
        fees=fee_rows,
        caps=[(cur, cap, cur in own, default_cap(cur)) for cur, cap in in_force.items()],
        books=[
            ("live", [b for b in balances if b.book == "live"]),
            ("test", [b for b in balances if b.book == "test"]),
        ],
        url_fields=URL_FIELDS,
        payment_systems=fee_service.PAYMENT_SYSTEMS,
    )


@router.post("/admin/merchants/{merchant_id}/settings")
async def merchant_settings(merchant_id: int, console: Console = Depends(action("merchants"))) -> Response:
    changes = MerchantApiSettings(
        check_url=console.value("check_url"),
        result_url=console.value("result_url"),
        refund_url=console.value("refund_url"),
        capture_url=console.value("capture_url"),
        success_url=console.value("success_url"),
        failure_url=console.value("failure_url"),
        request_method=console.value("request_method") or None,
        check_enabled=console.value("check_enabled") == "1",
    )

    async def work(session: AsyncSession) -> str:
        settings = console.rt.settings
        merchant = await get_merchant(session, merchant_id, lock=True)
        await update_merchant_settings(
            session,
            merchant,
            changes,
            now=utcnow(),
            allow_private_callbacks=settings.callback_allow_private,
            actor=console.actor,
        )
        await update_exchange_settings(
            session,
            merchant,
            network=settings.btc_network,
            now=utcnow(),
            allow_private_callbacks=settings.callback_allow_private,
            webhook_url=console.value("webhook_url"),
            default_wallet=console.value("default_wallet", 100),
            actor=console.actor,
        )
        return f"Merchant {merchant_id} settings saved."

    return await perform(console, work, f"/admin/merchants/{merchant_id}")


async def _api_change(
    console: Console, merchant_id: int, changes: MerchantApiSettings, message: str
) -> Response:
    async def work(session: AsyncSession) -> str:
        merchant = await get_merchant(session, merchant_id, lock=True)
        await update_merchant_settings(
            session,
            merchant,
            changes,
            now=utcnow(),
            allow_private_callbacks=console.rt.settings.callback_allow_private,
            actor=console.actor,
        )
        return message

    return await perform(console, work, f"/admin/merchants/{merchant_id}")


@router.post("/admin/merchants/{merchant_id}/mode")
async def merchant_mode(merchant_id: int, console: Console = Depends(action("merchants"))) -> Response:
    mode = console.value("mode")
    return await _api_change(
        console, merchant_id, MerchantApiSettings(mode=mode), f"Merchant {merchant_id} is now in {mode} mode."
    )


@router.post("/admin/merchants/{merchant_id}/active")
async def merchant_active(merchant_id: int, console: Console = Depends(action("merchants"))) -> Response:
    active = console.value("active") == "1"
    word = "enabled" if active else "disabled"
    return await _api_change(
        console, merchant_id, MerchantApiSettings(active=active), f"Merchant {merchant_id} {word}."
    )


@router.post("/admin/merchants/{merchant_id}/rotate")
async def merchant_rotate(
    merchant_id: int, request: Request, console: Console = Depends(action("merchants"))
) -> Response:
    try:
        async with console.rt.db.transaction() as session:
            merchant = await get_merchant(session, merchant_id, lock=True)
            creds = await rotate_credentials(
                session, console.rt.keyring, merchant, now=utcnow(), actor=console.actor
            )
    except DomainError as exc:
        async with console.rt.db.transaction() as session:
            await set_flash(session, console.session_id, f"error:{exc.message}")
        return redirect(f"/admin/merchants/{merchant_id}")
    return _secrets_page(request, console, merchant, creds, created=False)


@router.post("/admin/merchants/{merchant_id}/fees")
async def merchant_fee(merchant_id: int, console: Console = Depends(action("merchants"))) -> Response:
    async def work(session: AsyncSession) -> str:
        currency = console.value("currency", 8).upper()
        row = await fee_service.set_fee(
            session,
            merchant_id,
            payment_system=console.value("payment_system") or "*",
            percent=console.value("percent") or "0",
            fixed=parse_amount(console.value("fixed") or "0", currency, field="fixed"),
            currency=currency,
            now=utcnow(),
            actor=console.actor,
        )
        return f"Fee for {row.payment_system} in {row.currency} set to {row.percent}% + fixed."

    return await perform(console, work, f"/admin/merchants/{merchant_id}")


@router.post("/admin/merchants/{merchant_id}/caps")
async def merchant_cap(merchant_id: int, console: Console = Depends(action("merchants"))) -> Response:
    async def work(session: AsyncSession) -> str:
        currency = console.value("currency", 8).upper()
        if currency not in DEFAULT_CAPS_MAJOR:
            raise InvalidRequest(f"unsupported currency {currency}", field="currency")
        text = console.value("max_amount", 24).strip()
        cap = parse_cap(text, currency) if text else None
        await cap_service.set_cap(session, merchant_id, currency, cap, utcnow(), actor=console.actor)
        if cap is None:
            return f"The gateway's cap applies to {currency} again."
        return f"Cap in {currency} set to {format_minor(cap, currency)} {currency}."

    return await perform(console, work, f"/admin/merchants/{merchant_id}")
