"""Public exchange pages: the payer's order page (fast_link) and the BestChange rates export."""

from __future__ import annotations

import secrets
from datetime import datetime
from decimal import ROUND_UP, Decimal
from pathlib import Path
from urllib.parse import urlencode
from xml.sax.saxutils import escape

import segno
from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from sqlalchemy import func, select

from greengate.api.exchange.wire import fiat_text, wire_time
from greengate.clock import utcnow
from greengate.domain.errors import DomainError
from greengate.domain.exchange import OrderStatus, status_seen
from greengate.domain.money import format_minor
from greengate.runtime import Runtime
from greengate.services.directions import list_directions
from greengate.services.rates import current_rate
from greengate.services.requisites import requisite_numbers
from greengate.store.models import Direction, ExchangeOrder, Requisite
from greengate.web.checkout.i18n import LANGUAGE_NAMES, LANGUAGES, pick_language, translator
from greengate.web.checkout.routes import language_param
from greengate.web.exchange_texts import TEXTS

router = APIRouter()
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


def _remaining(expires_at: datetime, now: datetime) -> int:
    return max(int((expires_at - now).total_seconds()), 0)


def order_page_headers(nonce: str) -> dict[str, str]:
    """The payer's page: no framing, no sniffing, its own nonce'd style and script only."""
    return {
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Content-Security-Policy": (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
            "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; "
            "frame-ancestors 'none'"
        ),
    }


@router.get("/pay/order/{token}", response_class=HTMLResponse, include_in_schema=False)
async def order_page(request: Request, token: str) -> Response:
    rt: Runtime = request.app.state.runtime
    now = utcnow()
    explicit_lang = language_param(request)
    lang = pick_language(explicit_lang, None, request.headers.get("accept-language"))
    t = translator(lang, TEXTS)
    async with rt.db.transaction() as session:
        order = await session.scalar(select(ExchangeOrder).where(ExchangeOrder.access_token == token))
        if order is None or len(token) > 64:
            html = templates.get_template("exchange/not_found.html").render(lang=lang, t=t)
            return HTMLResponse(html, status_code=404)
        numbers = await requisite_numbers(
            session, rt.keyring, {order.requisite_id} if order.requisite_id else set()
        )
        requisite = await session.get(Requisite, order.requisite_id) if order.requisite_id else None
    # Past its time an open order is autocanceled, even before the expiry sweep has written it.
    status = status_seen(OrderStatus(order.status), order.expires_at, now)
    number = numbers.get(order.requisite_id or 0, "")
    amount = fiat_text(order.amount_payable, order.currency)
    show_details = status is OrderStatus.AWAITING and bool(number)
    qr_svg = (
        segno.make(f"{number} {amount} {order.currency}", error="m").svg_inline(scale=4)
        if show_details
        else ""
    )
    context = {
        "t": t,
        "lang": lang,
        "languages": [
            {"code": code, "name": LANGUAGE_NAMES[code], "url": f"?{urlencode({'lang': code})}"}
            for code in LANGUAGES
            if code != lang
        ],
        "order": order,
        "status": status.value,
        "status_text": t(f"status_{status.value}"),
        "exact_amount": Markup.escape(t("exact_amount", amount="\x00")).replace(
            "\x00", Markup("<strong>{} {}</strong>").format(amount, order.currency)
        ),
        "show_details": show_details,
        "number": " ".join(number[i : i + 4] for i in range(0, len(number), 4)),
        "bank": requisite.bank if requisite else "",
        "holder": requisite.holder if requisite else "",
        "amount": amount,
        "currency": order.currency,
        "receivable": format_minor(order.amount_receivable, "BTC"),
        "expires_at": wire_time(order.expires_at),
        "remaining": _remaining(order.expires_at, now)
        if status in (OrderStatus.UNCONFIRMED, OrderStatus.AWAITING)
        else 0,
        "open": status in (OrderStatus.UNCONFIRMED, OrderStatus.AWAITING),
        "qr_svg": qr_svg,
    }
    nonce = secrets.token_urlsafe(16)
    html = templates.get_template("exchange/order.html").render(context, nonce=nonce)
    return HTMLResponse(html, headers=order_page_headers(nonce))


def bestchange_code(direction: Direction) -> str:
    if direction.payment_method in ("card", "kzt"):
        return f"CARD{direction.from_currency}"
    return f"{direction.payment_method.upper()}{direction.from_currency}"


def client_rate(rate: Decimal, commission_percent: Decimal) -> Decimal:
    """Fiat per 1 BTC that a client effectively pays, commission included, rounded against the client."""
    return (rate / (1 - commission_percent / 100)).quantize(Decimal("0.01"), rounding=ROUND_UP)


@router.get(
    "/rates.xml",
    tags=["Exchange API"],
    summary="Rates export for monitoring sites",
    response_class=Response,
    responses={200: {"description": "BestChange-format XML", "content": {"application/xml": {}}}},
)
async def rates_xml(request: Request) -> Response:
    """Each active direction that has requisites and a usable rate, as one `<item>`: fiat per 1 BTC
    with the commission included, the BTC reserve, and the direction's limits."""
    rt: Runtime = request.app.state.runtime
    now = utcnow()
    items: list[str] = []
    async with rt.db.transaction() as session:
        with_requisites = set(
            await session.scalars(
                select(Requisite.payment_method)
                .where(Requisite.active.is_(True))
                .group_by(Requisite.payment_method)
                .having(func.count() > 0)
            )
        )
        for d in await list_directions(session):
            if d.status != 1 or d.payment_method not in with_requisites:
                continue
            try:
                locked = await current_rate(session, rt, d, now)
            except DomainError:
                continue  # a direction that cannot be honoured now is left out
            rate = client_rate(locked.rate, Decimal(d.commission_percent))
            items.append(
                "<item>"
                f"<from>{escape(bestchange_code(d))}</from><to>{escape(d.to_currency)}</to>"
                f"<in>{rate}</in><out>1</out>"
                f"<amount>{format_minor(d.reserve_sat, 'BTC')}</amount>"
                f"<minamount>{fiat_text(d.min_amount, d.from_currency)} {d.from_currency}</minamount>"
                f"<maxamount>{fiat_text(d.max_amount, d.from_currency)} {d.from_currency}</maxamount>"
                "<param>manual</param>"
                "</item>"
            )
    body = '<?xml version="1.0" encoding="utf-8"?>\n<rates>' + "".join(items) + "</rates>\n"
    return Response(body, media_type="application/xml")
