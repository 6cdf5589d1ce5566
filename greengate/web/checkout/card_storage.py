"""The card storage page `/cards/{token}` (cardstorage/add, add2, cardstoragepayout/add).

GET shows what the card needs now: the card form, the checkout's 3-D Secure page (same template,
same password step of the verification payment) or the result with the way back to the shop. Each
POST runs one step in one transaction and redirects back (303); a form with an error comes back
with the field's error (HTTP 400) and nothing changed. Works without JavaScript. The PAN and CVC are
never logged, stored in clear or written back into a page.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import structlog
from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse
from sqlalchemy.ext.asyncio import AsyncSession

from greengate.acquiring.test_data import THREE_DS_PASSWORD
from greengate.api.merchant.codec import MalformedRequest, parse_query, render_query
from greengate.clock import utcnow
from greengate.domain.card_rules import CardFormError, is_amex, validate_card_form
from greengate.domain.errors import (
    BusinessRuleViolation,
    InvalidRequest,
    PaymentSystemCertificateExpired,
    PaymentSystemFailure,
    PaymentSystemUnreachable,
)
from greengate.domain.params import Params
from greengate.domain.payments import PaymentStatus
from greengate.domain.signature import new_salt, script_name_from_url, with_signature
from greengate.runtime import Runtime
from greengate.services import saved_cards
from greengate.services.merchants import payout_secret, secret_key
from greengate.services.payments import latest_attempt
from greengate.store.models import Merchant, Payment, SavedCard
from greengate.web.checkout.i18n import (
    LANGUAGE_NAMES,
    LANGUAGES,
    card_error,
    failure_text,
    pick_language,
    translator,
)
from greengate.web.checkout.routes import (
    FieldError,
    FormState,
    form_text,
    format_amount,
    format_remaining,
    language_param,
    not_found,
    redirect,
    render,
    split_expiry,
)

log = structlog.get_logger(__name__)
router = APIRouter(include_in_schema=False)
S = PaymentStatus


@dataclass
class CardView:
    card: SavedCard
    merchant: Merchant
    payment: Payment | None
    secret: str  # signs the way back to the shop


def _url(token: str, suffix: str = "", lang: str | None = None) -> str:
    return f"/cards/{quote(token, safe='')}{suffix}" + (f"?{urlencode({'lang': lang})}" if lang else "")


async def _load(rt: Runtime, token: str) -> CardView | None:
    """The card behind the token; a pending card past its lifetime fails first."""
    now = utcnow()
    async with rt.db.transaction() as session:
        card = await saved_cards.find_by_access_token(session, token, lock=True)
        if card is None:
            return None
        card = await saved_cards.expire_if_due(session, card, now)
        merchant = await session.get(Merchant, card.merchant_id)
        assert merchant is not None
        payment = await saved_cards.verification_payment(session, card)
        secret = (
            payout_secret(rt.keyring, merchant)
            if card.purpose == "payout"
            else secret_key(rt.keyring, merchant)
        )
        return CardView(card, merchant, payment, secret)


def way_back(card: SavedCard, secret: str) -> str | None:
    """The shop's back link with the outcome, signed like every redirect to the shop."""
    if not card.back_link:
        return None
    success = card.status == saved_cards.ACTIVE
    params: Params = [
        ("pg_order_id", card.order_id or ""),
        ("pg_card_id", str(card.id) if success else ""),
        ("pg_status", "success" if success else "error"),
    ]
    parts = urlsplit(card.back_link)
    try:
        existing: Params = [(n, v) for n, v in parse_query(parts.query) if n not in {p for p, _ in params}]
    except MalformedRequest:
        existing = []
    signed = with_signature(script_name_from_url(card.back_link), existing + params, secret, new_salt())
    return urlunsplit(parts._replace(query=render_query(signed)))


async def render_card_page(
    request: Request, token: str, *, form: FormState | None = None, status_code: int = 200
) -> Response:
    rt: Runtime = request.app.state.runtime
    view = await _load(rt, token)
    if view is None:
        return not_found(request)
    card, payment = view.card, view.payment
    explicit = language_param(request)
    lang = pick_language(explicit, card.language)
    t = translator(lang)
    now = utcnow()
    remaining = max(int((card.expires_at - now).total_seconds()), 0)
    stage = card.status
    if card.status == saved_cards.PENDING and payment is not None and payment.status == S.THREE_DS.value:
        stage = "3ds"
    if form is not None and form.step != ("3ds" if stage == "3ds" else "card" if stage == "pending" else ""):
        form, status_code = None, 200
    context: dict[str, Any] = {
        "t": t,
        "lang": lang,
        "languages": [
            {"code": c, "name": LANGUAGE_NAMES[c], "url": _url(token, lang=c)} for c in LANGUAGES if c != lang
        ],
        "status": stage,
        "card": card,
        "payment": payment,
        "purpose": card.purpose,
        "merchant_name": view.merchant.name,
        "amount": format_amount(payment.amount, payment.currency, lang) if payment else "",
        "testing": card.testing,
        "remaining": remaining,
        "remaining_text": format_remaining(remaining),
        "expires_text": card.expires_at.strftime("%Y-%m-%d %H:%M"),
        "page_url": _url(token, lang=explicit),
        "form": form or FormState(step=""),
        "errors": {name: t(e.key, **e.fields) for name, e in form.errors.items()} if form else {},
    }
    if stage == "pending":
        context["action"] = _url(token, "/card", lang=explicit)
        return render("card_add.html", context, status_code=status_code)
    if stage == "3ds":
        assert payment is not None
        async with rt.db.transaction() as session:
            attempt = await latest_attempt(session, payment.id)
        context.update(
            card_masked=(attempt.card_masked if attempt else "") or "",
            action=_url(token, "/3ds", lang=explicit),
            test_password=THREE_DS_PASSWORD if card.testing else None,
        )
        return render("3ds.html", context, status_code=status_code)
    context.update(
        back_url=way_back(card, view.secret),
        failure_reason=failure_text(card.failure_code, card.failure_description, lang),
    )
    return render("card_result.html", context, status_code=status_code)


@router.get("/cards/{token}", response_class=HTMLResponse)
async def card_page(request: Request, token: str) -> Response:
    return await render_card_page(request, token)


Step = Callable[[AsyncSession, Runtime, SavedCard, datetime], Awaitable[object]]


async def _run(request: Request, token: str, form: FormState, step: Step) -> Response:
    rt: Runtime = request.app.state.runtime
    now = utcnow()
    try:
        async with rt.db.transaction() as session:
            card = await saved_cards.find_by_access_token(session, token, lock=True)
            if card is None:
                return not_found(request)
            await step(session, rt, card, now)
    except (PaymentSystemUnreachable, PaymentSystemCertificateExpired, PaymentSystemFailure):
        form.errors["number" if form.step == "card" else "password"] = FieldError("err_system_unavailable")
        return await render_card_page(request, token, form=form, status_code=400)
    except InvalidRequest as exc:
        name = exc.field if exc.field in form.values else "number" if form.step == "card" else "password"
        form.errors[name or "number"] = FieldError("err_invalid")
        return await render_card_page(request, token, form=form, status_code=400)
    except BusinessRuleViolation as exc:
        log.info("card_page_step_refused", step=form.step, code=exc.code)
    return redirect(_url(token, lang=language_param(request)))


@router.post("/cards/{token}/card", response_class=HTMLResponse)
async def submit_card(request: Request, token: str) -> Response:
    form = await request.form()
    number, cvc = form_text(form, "number"), form_text(form, "cvc")
    exp, holder = form_text(form, "exp"), form_text(form, "holder")
    state = FormState("card", {"exp": exp, "holder": holder})
    rt: Runtime = request.app.state.runtime
    async with rt.db.transaction() as session:
        found = await saved_cards.find_by_access_token(session, token)
        purpose = found.purpose if found else "payment"
    try:
        month, year = split_expiry(exp)
        # A card saved for payouts only needs no CVC: the form has none, the rules get a placeholder.
        if purpose != "payment":
            cvc = "0000" if is_amex(number.replace(" ", "")) else "000"
        card_form = validate_card_form(number, month, year, holder, cvc, utcnow().date())
    except CardFormError as exc:
        name = "exp" if exc.field in ("exp_month", "exp_year") else exc.field or "number"
        key, fields = card_error(exc.field or name, exc.message)
        state.errors[name] = FieldError(key, fields)
        return await render_card_page(request, token, form=state, status_code=400)

    async def step(session: AsyncSession, rt: Runtime, card: SavedCard, now: datetime) -> None:
        await saved_cards.submit_card(session, rt, card, card_form, now)

    return await _run(request, token, state, step)


@router.post("/cards/{token}/3ds", response_class=HTMLResponse)
async def submit_3ds(request: Request, token: str) -> Response:
    form = await request.form()
    password = form_text(form, "password")
    state = FormState("3ds")
    if not password:
        state.errors["password"] = FieldError("err_password_empty")
        return await render_card_page(request, token, form=state, status_code=400)

    async def step(session: AsyncSession, rt: Runtime, card: SavedCard, now: datetime) -> None:
        await saved_cards.submit_3ds(session, rt, card, password, now)

    return await _run(request, token, state, step)
