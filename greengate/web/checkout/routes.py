"""The hosted payment pages: `/pay/{token}` shows whatever the payment needs from the payer now.

GET renders the page for the payment's status (card or phone form, 3-D Secure, OTP, processing,
result). Each POST runs one payer step in one transaction and redirects back to the GET page; a form
the payer got wrong comes back with the field's error (HTTP 400) and nothing changed. Pages work
without JavaScript; the only scripts are a countdown and the automatic return to the shop.
The card number and CVC are never logged, stored in clear, or written back into a page.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import structlog
from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from greengate.acquiring.base import OTP_MAX_ATTEMPTS
from greengate.acquiring.test_data import THREE_DS_PASSWORD, find_test_phone
from greengate.clock import utcnow
from greengate.domain.card_rules import CardFormError, validate_card_form
from greengate.domain.errors import (
    BusinessRuleViolation,
    InvalidRequest,
    PaymentSystemCertificateExpired,
    PaymentSystemFailure,
    PaymentSystemUnreachable,
    TransactionExpired,
)
from greengate.domain.money import format_minor
from greengate.domain.payment_systems import METHOD_SYSTEM, ConnectorState, ready
from greengate.domain.payments import PAYER_STEPS, PaymentStatus, selected_methods
from greengate.domain.signature import new_salt
from greengate.runtime import Runtime
from greengate.services import payment_flow
from greengate.services.merchants import secret_key
from greengate.services.payments import expire_payment, latest_attempt
from greengate.store.models import Merchant, Payment, PaymentAttempt
from greengate.web.checkout.i18n import (
    LANGUAGE_NAMES,
    LANGUAGES,
    card_error,
    failure_text,
    pick_language,
    translator,
)
from greengate.web.checkout.redirects import ReturnAction, outcome, return_action

log = structlog.get_logger(__name__)
router = APIRouter(include_in_schema=False)
templates = Environment(
    loader=FileSystemLoader(str(Path(__file__).parent.parent / "templates")),
    autoescape=select_autoescape(("html",), default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)

S = PaymentStatus
TOKEN_MAX_LENGTH = 64
PROCESSING_REFRESH_SECONDS = 2
METHODS = ("card", "phone")
_FINISHED = frozenset({S.OK, S.FAILED, S.CANCELED, S.EXPIRED, S.REVOKED})
_STEP_OF_STATUS = {S.NEW: ("card", "phone"), S.THREE_DS: ("3ds",), S.OTP: ("otp",)}
_OTP = re.compile(r"[0-9]{4,8}")
_EXPIRY_SEPARATORS = re.compile(r"\s*[/.\-\s]\s*")
_MAX_FIELD_LENGTH = 200


@dataclass(frozen=True)
class FieldError:
    """A field's error as a text key of the page's language, with its format fields."""

    key: str
    fields: dict[str, object] = field(default_factory=dict)


@dataclass
class FormState:
    """What the payer submitted on a form that came back with an error (never the PAN or CVC)."""

    step: str  # card | phone | 3ds | otp
    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, FieldError] = field(default_factory=dict)


# The field an error belongs to when the service does not name one, per step.
_STEP_FIELD = {"card": "number", "phone": "phone", "3ds": "password", "otp": "code"}
_SERVICE_ERRORS = {"wrong_phone": "err_phone", "phone_not_accepted": "err_phone_not_accepted"}


@dataclass
class View:
    payment: Payment
    merchant: Merchant
    attempt: PaymentAttempt | None
    secret: str | None  # the merchant's key, loaded only when the page signs a way back


# ---------------------------------------------------------------------------------------------
# Small helpers


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def language_param(request: Request) -> str | None:
    lang = (request.query_params.get("lang") or "").strip().lower()
    return lang if lang in LANGUAGES else None


def _page_url(token: str, suffix: str = "", **query: str | None) -> str:
    params = {name: value for name, value in query.items() if value}
    return f"/pay/{quote(token, safe='')}{suffix}" + (f"?{urlencode(params)}" if params else "")


def form_action(targets: list[str | None]) -> str:
    """The CSP form-action: the gateway itself, plus the origin of each off-site form target (the
    result page posts the signed answer back to the merchant)."""
    sources = ["'self'"]
    for url in targets:
        parts = urlsplit(url or "")
        if parts.scheme in ("http", "https") and parts.netloc:
            origin = f"{parts.scheme}://{parts.netloc}"
            if origin not in sources and all(ch not in origin for ch in " ;,'\"\r\n"):
                sources.append(origin)
    return "form-action " + " ".join(sources)


def page_headers(nonce: str, form_targets: list[str | None] | None = None) -> dict[str, str]:
    return {
        "Cache-Control": "no-store",
        "Pragma": "no-cache",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Content-Security-Policy": (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
            "img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'; "
            + form_action(form_targets or [])
        ),
    }


def redirect(url: str) -> Response:
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


def form_text(form: Any, name: str) -> str:
    value = form.get(name)
    return value[:_MAX_FIELD_LENGTH] if isinstance(value, str) else ""


def format_amount(minor: int, currency: str, lang: str) -> str:
    """`1,234.50 KZT` in English, `1 234,50 KZT` in Russian and Kazakh."""
    text = format_minor(minor, currency)
    whole, _, fraction = text.partition(".")
    groups = [whole[max(i - 3, 0) : i] for i in range(len(whole), 0, -3)][::-1]
    if lang == "en":
        number = ",".join(groups) + (f".{fraction}" if fraction else "")
    else:
        number = "\u00a0".join(groups) + (f",{fraction}" if fraction else "")
    return f"{number}\u00a0{currency}"


def format_remaining(seconds: int) -> str:
    hours, rest = divmod(max(seconds, 0), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def mask_phone(digits: str) -> str:
    if len(digits) < 7:
        return "+" + digits
    return f"+{digits[:4]}{'*' * (len(digits) - 6)}{digits[-2:]}"


def methods_for(payment: Payment, states: Mapping[str, ConnectorState]) -> tuple[str, ...]:
    """The payment methods the page offers; `pg_payment_system` may select one of them. A method whose
    payment system is not up is left out, unless none is left (its submit then says why)."""
    methods = selected_methods(payment.payment_system)
    up = ready(states)
    open_methods = tuple(m for m in methods if METHOD_SYSTEM[m] in up)
    return open_methods or methods


def split_expiry(text: str) -> tuple[str, str]:
    """`MM/YY`, `MM/YYYY`, `MM YY`, `MMYY` → (month, year) as typed; the card rules judge them."""
    value = text.strip()
    parts = _EXPIRY_SEPARATORS.split(value, maxsplit=1)
    if len(parts) == 2:
        return parts[0], parts[1]
    if (value.isascii() and value.isdigit()) and len(value) in (4, 6):
        return value[:2], value[2:]
    return value, ""


# ---------------------------------------------------------------------------------------------
# Loading and rendering


async def _find(session: AsyncSession, token: str) -> Payment | None:
    if not token or len(token) > TOKEN_MAX_LENGTH:
        return None
    payment: Payment | None = await session.scalar(select(Payment).where(Payment.access_token == token))
    return payment


def _needs_expiry(payment: Payment, now: datetime) -> bool:
    return S(payment.status) in PAYER_STEPS and payment.expires_at <= now


async def _expire(rt: Runtime, payment_id: int, now: datetime) -> None:
    async with rt.db.transaction() as session:
        if await expire_payment(session, payment_id, now):
            log.info("checkout_payment_expired", payment_id=payment_id)


async def _load_view(rt: Runtime, token: str) -> View | None:
    """The payment behind the token, expired first when its lifetime has passed on a payer step."""
    for _ in range(2):
        now = utcnow()
        async with rt.db.transaction() as session:
            payment = await _find(session, token)
            if payment is None:
                return None
            if not _needs_expiry(payment, now):
                merchant = await session.get(Merchant, payment.merchant_id)
                assert merchant is not None
                attempt = await latest_attempt(session, payment.id)
                secret = secret_key(rt.keyring, merchant) if S(payment.status) in _FINISHED else None
                return View(payment, merchant, attempt, secret)
        await _expire(rt, payment.id, now)
    raise RuntimeError("payment lifetime could not be enforced")  # pragma: no cover


def render(template: str, context: dict[str, Any], *, status_code: int = 200) -> Response:
    nonce = secrets.token_urlsafe(16)
    html = templates.get_template(f"checkout/{template}").render(context, nonce=nonce)
    way_back = context.get("way_back")
    targets = [getattr(way_back, "url", None)]
    return HTMLResponse(html, status_code=status_code, headers=page_headers(nonce, targets))


def not_found(request: Request, template: str = "not_found.html") -> Response:
    lang = pick_language(language_param(request), None, request.headers.get("accept-language"))
    return render(template, {"t": translator(lang), "lang": lang}, status_code=404)


def _language_links(token: str, lang: str, method: str | None) -> list[dict[str, Any]]:
    return [
        {"code": code, "name": LANGUAGE_NAMES[code], "url": _page_url(token, lang=code, method=method)}
        for code in LANGUAGES
        if code != lang
    ]


async def render_page(
    request: Request, token: str, *, form: FormState | None = None, status_code: int = 200
) -> Response:
    view = await _load_view(_runtime(request), token)
    if view is None:
        return not_found(request)
    payment, merchant, attempt = view.payment, view.merchant, view.attempt
    now = utcnow()
    explicit_lang = language_param(request)
    lang = pick_language(explicit_lang, payment.language, request.headers.get("accept-language"))
    t = translator(lang)
    status = S(payment.status)
    if form is not None and form.step not in _STEP_OF_STATUS.get(status, ()):
        form, status_code = None, 200  # the payment moved on: show where it is now
    methods = methods_for(payment, _runtime(request).settings.payment_system_state_map())
    requested_method = request.query_params.get("method")
    method = (
        form.step
        if form is not None and form.step in METHODS
        else requested_method
        if requested_method in methods
        else methods[0]
    )
    remaining = max(int((payment.expires_at - now).total_seconds()), 0)
    context: dict[str, Any] = {
        "t": t,
        "lang": lang,
        "languages": _language_links(token, lang, method if status is S.NEW else None),
        "status": status.value,
        "payment": payment,
        "merchant_name": merchant.name,
        "amount": format_amount(payment.amount, payment.currency, lang),
        "testing": payment.testing,
        "remaining": remaining,
        "remaining_text": format_remaining(remaining),
        "expires_text": payment.expires_at.strftime("%Y-%m-%d %H:%M"),
        "page_url": _page_url(token, lang=explicit_lang),
        "form": form or FormState(step=""),
        "errors": {name: t(error.key, **error.fields) for name, error in form.errors.items()} if form else {},
    }
    if status is S.NEW:
        context.update(
            methods=methods,
            method=method,
            method_urls={m: _page_url(token, lang=explicit_lang, method=m) for m in methods},
            card_action=_page_url(token, "/card", lang=explicit_lang),
            phone_action=_page_url(token, "/phone", lang=explicit_lang),
            phone_value=(form.values.get("phone") if form else None) or _phone_prefill(payment),
        )
        return render("pay.html", context, status_code=status_code)
    if status is S.THREE_DS:
        context.update(
            card_masked=(attempt.card_masked if attempt else "") or "",
            action=_page_url(token, "/3ds", lang=explicit_lang),
            test_password=THREE_DS_PASSWORD if payment.testing else None,
        )
        return render("3ds.html", context, status_code=status_code)
    if status is S.OTP:
        digits = (attempt.phone if attempt else "") or ""
        tries = attempt.otp_attempts if attempt else 0
        test_phone = find_test_phone(digits) if payment.testing else None
        context.update(
            phone_masked=mask_phone(digits),
            action=_page_url(token, "/otp", lang=explicit_lang),
            wrong_tries=tries,
            tries_left=max(OTP_MAX_ATTEMPTS - tries, 0),
            test_code=test_phone.otp if test_phone else None,
        )
        return render("otp.html", context, status_code=status_code)
    if status in (S.CHECK, S.PENDING):
        context["refresh_seconds"] = PROCESSING_REFRESH_SECONDS
        return render("processing.html", context, status_code=status_code)
    action: ReturnAction | None = (
        return_action(payment, view.secret, new_salt()) if view.secret is not None else None
    )
    context.update(
        way_back=action,
        # pg_timeout_after_payment: after a success the page itself takes the payer back that much later.
        redirect_after=(
            payment.timeout_after_payment if action is not None and status is S.OK and action.signed else None
        ),
        return_url=_page_url(token, "/return"),
        failure_reason=failure_text(payment.failure_code, payment.failure_description, lang),
        card_masked=(attempt.card_masked if attempt else "") or "",
    )
    return render("result.html", context, status_code=status_code)


def _phone_prefill(payment: Payment) -> str:
    return f"+{payment.user_phone}" if payment.user_phone else ""


# ---------------------------------------------------------------------------------------------
# Routes


@router.get("/pay/{token}", response_class=HTMLResponse)
async def payment_page(request: Request, token: str) -> Response:
    return await render_page(request, token)


Step = Callable[[AsyncSession, Runtime, int, datetime], Awaitable[Payment]]


async def _run_step(request: Request, token: str, form: FormState, step: Step) -> Response:
    """One payer step in one transaction, then back to the page (303), or the form with its error."""
    rt = _runtime(request)
    now = utcnow()
    payment_id: int | None = None
    after = _page_url(token, lang=language_param(request))
    try:
        async with rt.db.transaction() as session:
            payment = await _find(session, token)
            if payment is None:
                return not_found(request)
            payment_id = payment.id
            await step(session, rt, payment.id, now)
    except TransactionExpired:
        assert payment_id is not None
        await _expire(rt, payment_id, now)
    except (PaymentSystemUnreachable, PaymentSystemCertificateExpired, PaymentSystemFailure):
        form.errors[_STEP_FIELD[form.step]] = FieldError("err_system_unavailable")
        return await _form_error(request, token, form)
    except InvalidRequest as exc:
        name = exc.field if exc.field in form.values else _STEP_FIELD[form.step]
        form.errors[name] = FieldError(_SERVICE_ERRORS.get(exc.code, "err_invalid"))
        return await _form_error(request, token, form)
    except BusinessRuleViolation as exc:
        # A repeated or stale submit (another tab, the back button): the page shows the current state.
        log.info("checkout_step_refused", payment_id=payment_id, step=form.step, code=exc.code)
    return redirect(after)


async def _form_error(request: Request, token: str, form: FormState) -> Response:
    return await render_page(request, token, form=form, status_code=400)


@router.post("/pay/{token}/card", response_class=HTMLResponse)
async def submit_card(request: Request, token: str) -> Response:
    form = await request.form()
    number, cvc = form_text(form, "number"), form_text(form, "cvc")
    exp, holder = form_text(form, "exp"), form_text(form, "holder")
    if not exp and (form.get("exp_month") or form.get("exp_year")):
        exp = f"{form_text(form, 'exp_month')}/{form_text(form, 'exp_year')}"
    state = FormState("card", {"exp": exp, "holder": holder})
    try:
        month, year = split_expiry(exp)
        card = validate_card_form(number, month, year, holder, cvc, utcnow().date())
    except CardFormError as exc:
        name = "exp" if exc.field in ("exp_month", "exp_year") else exc.field or "number"
        key, fields = card_error(exc.field or name, exc.message)
        state.errors[name] = FieldError(key, fields)
        return await _form_error(request, token, state)

    async def step(session: AsyncSession, rt: Runtime, payment_id: int, now: datetime) -> Payment:
        return await payment_flow.submit_card(session, rt, payment_id, card, now)

    return await _run_step(request, token, state, step)


@router.post("/pay/{token}/phone", response_class=HTMLResponse)
async def submit_phone(request: Request, token: str) -> Response:
    form = await request.form()
    phone = form_text(form, "phone").strip()
    state = FormState("phone", {"phone": phone})
    if not phone or len(phone) > 32:
        state.errors["phone"] = FieldError("err_phone")
        return await _form_error(request, token, state)

    async def step(session: AsyncSession, rt: Runtime, payment_id: int, now: datetime) -> Payment:
        return await payment_flow.submit_phone(session, rt, payment_id, phone, now)

    return await _run_step(request, token, state, step)


@router.post("/pay/{token}/3ds", response_class=HTMLResponse)
async def submit_3ds(request: Request, token: str) -> Response:
    form = await request.form()
    password = form_text(form, "password")
    state = FormState("3ds")
    if not password:
        state.errors["password"] = FieldError("err_password_empty")
        return await _form_error(request, token, state)

    async def step(session: AsyncSession, rt: Runtime, payment_id: int, now: datetime) -> Payment:
        return await payment_flow.submit_3ds(session, rt, payment_id, password, now)

    return await _run_step(request, token, state, step)


@router.post("/pay/{token}/otp", response_class=HTMLResponse)
async def submit_otp(request: Request, token: str) -> Response:
    form = await request.form()
    code = "".join(form_text(form, "code").split())
    state = FormState("otp")
    if not _OTP.fullmatch(code):
        state.errors["code"] = FieldError("err_code_format")
        return await _form_error(request, token, state)

    async def step(session: AsyncSession, rt: Runtime, payment_id: int, now: datetime) -> Payment:
        return await payment_flow.submit_otp(session, rt, payment_id, code, now)

    return await _run_step(request, token, state, step)


@router.get("/pay/{token}/return")
async def return_to_shop(request: Request, token: str) -> Response:
    """The signed GET way back to the shop, with a fresh salt for each click."""
    view = await _load_view(_runtime(request), token)
    if view is None:
        return not_found(request)
    page = _page_url(token, lang=language_param(request))
    if view.secret is None or outcome(view.payment) is None:
        return redirect(page)
    action = return_action(view.payment, view.secret, new_salt())
    if action is None or action.method != "GET":
        return redirect(page)
    return redirect(action.url)
