"""The hosted payout page: `/payout/{token}` is where the recipient of an api/reg2nonreg payout enters
the card to receive the money, then sees the payout processing or its outcome.

GET renders the page for the payout's status; POST `/payout/{token}/card` runs the recipient's step in
one transaction and redirects back (303), or shows the form again with the field's error (HTTP 400),
nothing changed. No JavaScript is needed: the processing page refreshes itself with a meta refresh.
The card number is never logged, stored in clear, or written back into a page.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, urlencode

import structlog
from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse

from greengate.acquiring.test_data import PAYOUT_CARDS
from greengate.clock import utcnow
from greengate.domain.card_rules import card_brand
from greengate.domain.cards import luhn_valid, mask_number
from greengate.domain.errors import BusinessRuleViolation, TransactionExpired
from greengate.domain.payouts import PayoutStatus
from greengate.domain.secret import Secret
from greengate.runtime import Runtime
from greengate.services import payouts
from greengate.store.models import Merchant, Payout
from greengate.web.checkout.i18n import LANGUAGE_NAMES, LANGUAGES, failure_text, pick_language, translator
from greengate.web.checkout.routes import (
    PROCESSING_REFRESH_SECONDS,
    format_amount,
    format_remaining,
    language_param,
    not_found,
    redirect,
    render,
)

log = structlog.get_logger(__name__)
router = APIRouter(include_in_schema=False)
S = PayoutStatus
_NUMBER = re.compile(r"[0-9]{12,19}")
_MAX_FIELD_LENGTH = 64


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _page_url(token: str, suffix: str = "", **query: str | None) -> str:
    params = {name: value for name, value in query.items() if value}
    return f"/payout/{quote(token, safe='')}{suffix}" + (f"?{urlencode(params)}" if params else "")


async def _load(rt: Runtime, token: str) -> tuple[Payout, Merchant] | None:
    """The payout behind the token, expired first when its time limit passed without a card."""
    for _ in range(2):
        now = utcnow()
        async with rt.db.transaction() as session:
            payout = await payouts.find_by_token(session, token)
            if payout is None:
                return None
            if not (payout.status == S.NEW.value and payout.expires_at <= now):
                merchant = await session.get(Merchant, payout.merchant_id)
                assert merchant is not None
                return payout, merchant
        async with rt.db.transaction() as session:
            await payouts.expire_payout(session, payout.id, now)
    raise RuntimeError("payout time limit could not be enforced")  # pragma: no cover


def card_number_error(raw: str) -> tuple[str | None, str]:
    """(the text key of the error or None, the digits) for a card number as the recipient typed it."""
    digits = re.sub(r"[\s-]", "", raw)
    if not _NUMBER.fullmatch(digits):
        return "err_number_format", digits
    if not luhn_valid(digits):
        return "err_number_invalid", digits
    return None, digits


async def render_page(
    request: Request, token: str, *, error: str | None = None, status_code: int = 200
) -> Response:
    loaded = await _load(_runtime(request), token)
    if loaded is None:
        return not_found(request, "payout_not_found.html")
    payout, merchant = loaded
    explicit_lang = language_param(request)
    lang = pick_language(explicit_lang, payout.language)
    t = translator(lang)
    status = S(payout.status)
    remaining = max(int((payout.expires_at - utcnow()).total_seconds()), 0)
    context: dict[str, Any] = {
        "t": t,
        "lang": lang,
        "languages": [
            {"code": code, "name": LANGUAGE_NAMES[code], "url": _page_url(token, lang=code)}
            for code in LANGUAGES
            if code != lang
        ],
        "status": status.value,
        "payout": payout,
        "merchant_name": merchant.name,
        "amount": format_amount(payout.amount, payout.currency, lang),
        "testing": False,  # the payout templates show their own test-mode note
        "page_url": _page_url(token, lang=explicit_lang),
        "back_link": payout.back_link,
        "errors": {"number": t(error)} if error and status is S.NEW else {},
    }
    if status is S.NEW:
        context.update(
            action=_page_url(token, "/card", lang=explicit_lang),
            remaining=remaining,
            remaining_text=format_remaining(remaining),
            expires_text=payout.expires_at.strftime("%Y-%m-%d %H:%M"),
            test_cards=PAYOUT_CARDS if payout.testing else (),
        )
        return render("payout_card.html", context, status_code=status_code if error else 200)
    context.update(
        refresh_seconds=PROCESSING_REFRESH_SECONDS,
        card_masked=payout.card_masked or "",
        failure_reason=failure_text(payout.failure_code, payout.failure_description, lang),
    )
    return render("payout_status.html", context)


@router.get("/payout/{token}", response_class=HTMLResponse)
async def payout_page(request: Request, token: str) -> Response:
    return await render_page(request, token)


@router.post("/payout/{token}/card", response_class=HTMLResponse)
async def submit_card(request: Request, token: str) -> Response:
    form = await request.form()
    raw = form.get("number")
    error, digits = card_number_error(raw[:_MAX_FIELD_LENGTH] if isinstance(raw, str) else "")
    if error is not None:
        return await render_page(request, token, error=error, status_code=400)
    rt = _runtime(request)
    now = utcnow()
    payout_id: int | None = None
    try:
        async with rt.db.transaction() as session:
            payout = await payouts.find_by_token(session, token)
            if payout is None:
                return not_found(request, "payout_not_found.html")
            payout_id = payout.id
            await payouts.submit_card(
                session, rt, payout.id, Secret(digits), mask_number(digits), card_brand(digits), now
            )
    except TransactionExpired:
        assert payout_id is not None
        async with rt.db.transaction() as session:
            await payouts.expire_payout(session, payout_id, now)
    except BusinessRuleViolation as exc:
        # A repeated or stale submit (another tab, the back button): the page shows the current state.
        log.info("payout_card_refused", payout_id=payout_id, code=exc.code)
    return redirect(_page_url(token, lang=language_param(request)))
