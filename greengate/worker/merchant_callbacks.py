"""Merchant API callbacks (check and result) on the wire: built, signed with the script name of the
merchant's URL, sent with the payment's request method, and the merchant's signed answer read back."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy.ext.asyncio import AsyncSession

from greengate.api.exchange.wire import wire_time
from greengate.api.merchant.codec import (
    MalformedRequest,
    is_xml_name,
    parse_query,
    parse_xml,
    render_form,
    render_query,
    render_xml,
)
from greengate.api.merchant.status import captured_flag
from greengate.domain.money import format_minor
from greengate.domain.params import Params, first
from greengate.domain.payments import PaymentStatus
from greengate.domain.signature import new_salt, script_name_from_url, verify, with_signature
from greengate.metrics import OUTBOX_RESULTS
from greengate.runtime import Runtime
from greengate.services import outbox
from greengate.store.models import Payment, PaymentAttempt
from greengate.worker import attempts
from greengate.worker.http_delivery import DeliveryOutcome, OutgoingRequest


@dataclass(frozen=True)
class MerchantAnswer:
    delivered: bool  # HTTP 200 with a well-formed, correctly signed answer
    status: str  # ok | rejected | error | "" when not delivered
    description: str
    error: str | None


def callback_params(
    payment: Payment, attempt: PaymentAttempt | None, *, kind: str, result: str | None, can_reject: bool
) -> Params:
    amount = format_minor(payment.amount, payment.currency)
    card = attempt if attempt is not None and attempt.method == "bankcard" else None
    fields: Params = [
        ("pg_payment_id", str(payment.id)),
        ("pg_order_id", payment.order_id or ""),
        ("pg_amount", amount),
        ("pg_currency", payment.currency),
        # What the merchant is credited: the amount less the gateway's fee.
        ("pg_net_amount", format_minor(payment.amount - payment.fee_amount, payment.currency)),
        ("pg_ps_amount", amount),
        ("pg_ps_full_amount", amount),
        ("pg_ps_currency", payment.currency),
        (
            "pg_payment_system",
            "BANKCARD" if attempt is None or attempt.method == "bankcard" else "MOBILE_COMMERCE",
        ),
        ("pg_description", payment.description),
        ("pg_payment_date", wire_time(payment.paid_at or payment.updated_at)),
        ("pg_user_phone", payment.user_phone or (attempt.phone if attempt and attempt.phone else "") or ""),
        ("pg_need_phone_notification", "0"),
        ("pg_user_contact_email", payment.user_email or ""),
        ("pg_need_email_notification", "0"),
        ("pg_testing_mode", "1" if payment.testing else "0"),
        ("pg_captured", captured_flag(payment)),  # as get_status says: was the money taken
        ("pg_card_pan", card.card_masked or "" if card else ""),
        ("pg_card_exp", card.card_exp or "" if card else ""),
        ("pg_card_owner", card.card_holder or "" if card else ""),
        ("pg_card_brand", card.card_brand or "" if card else ""),
        ("pg_auth_code", (attempt.auth_code or "") if attempt else ""),
    ]
    if kind == "result":
        fields.append(("pg_result", result or "0"))
        fields.append(("pg_can_reject", "1" if can_reject else "0"))
        if result == "0":
            fields.append(("pg_failure_code", str(payment.failure_code or "")))
            fields.append(("pg_failure_description", payment.failure_description or ""))
    fields.extend((name, value) for name, value in json.loads(payment.extra_params))
    return fields


def _url_params(url: str) -> Params | None:
    """The parameters of the URL's query string; None when they cannot be read (not UTF-8)."""
    query = urlsplit(url).query
    if not query:
        return []
    try:
        return parse_query(query)
    except MalformedRequest:
        return None


@dataclass(frozen=True)
class SignedCallback:
    request: OutgoingRequest
    sent: str  # what the delivery log shows
    script: str
    salt: str


def sign(*, url: str, method: str, params: Params, secret: str) -> SignedCallback:
    """The signed request of one callback, sent with the payment's request method."""
    script = script_name_from_url(url)
    # Parameters in the merchant's own URL (result.php?shop=7) reach it with the message, so they are
    # signed with it and travel in it too: the merchant verifies everything it receives.
    own = _url_params(url)
    params = [*(own or []), *params]
    if method == "XML":
        # Only parameters XML can name travel (and are signed) in a pg_xml callback.
        params = [(name, value) for name, value in params if is_xml_name(name)]
    message = with_signature(script, params, secret, new_salt())
    salt = first(message, "pg_salt") or ""
    if method == "GET":
        sent = render_query(message)
        parts = urlsplit(url)
        query = f"{parts.query}&{sent}" if own is None else sent
        request = OutgoingRequest("GET", urlunsplit(parts._replace(query=query)), {})
    else:
        if method == "XML":
            body = render_form([("pg_xml", render_xml(message, root="request").decode())])
        else:
            body = render_form(message)
        sent = body.decode()
        request = OutgoingRequest(
            "POST", url, {"Content-Type": "application/x-www-form-urlencoded"}, content=body
        )
    return SignedCallback(request, sent, script, salt)


AfterAttempt = Callable[[AsyncSession, MerchantAnswer, datetime], Awaitable[None]]


async def deliver_message(
    rt: Runtime,
    message: outbox.ClaimedMessage,
    *,
    worker: str,
    clock: Callable[[], datetime],
    method: str,
    params: Params,
    secret: str,
    retry_schedule: list[int] | None = None,
    after: AfterAttempt | None = None,
) -> None:
    """Send one outbox message as a signed merchant callback, logging the attempt before it goes out
    and its outcome after; `after` runs in the same transaction as the outcome (unless another worker
    took the message meanwhile)."""
    callback = sign(url=message.target_url or "", method=method, params=params, secret=secret)
    sent = await attempts.send(
        rt, message, worker=worker, clock=clock, request=callback.request, logged=callback.sent
    )
    if sent is None:
        return
    started, outcome = sent
    answer = read_answer(outcome, script=callback.script, secret=secret, salt=callback.salt)
    now = clock()
    async with rt.db.transaction() as session:
        state = await outbox.record_attempt(
            session,
            message,
            started,
            worker=worker,
            duration_ms=outcome.duration_ms,
            succeeded=answer.delivered,
            status_code=outcome.status_code,
            response_body=outcome.body,
            error=answer.error,
            retry_schedule=rt.settings.callback_retry_schedule if retry_schedule is None else retry_schedule,
            now=now,
        )
        if after is not None and state != "lost_claim":
            await after(session, answer, now)
    OUTBOX_RESULTS.labels(kind=message.kind, outcome=state).inc()


def read_answer(outcome: DeliveryOutcome, *, script: str, secret: str, salt: str) -> MerchantAnswer:
    if outcome.status_code != 200:
        return MerchantAnswer(False, "", "", outcome.error or f"HTTP {outcome.status_code}")
    try:
        answer = parse_xml(outcome.body)
    except MalformedRequest as exc:
        return MerchantAnswer(False, "", "", f"unparseable answer: {exc.message}")
    if not verify(script, answer, secret):
        return MerchantAnswer(False, "", "", "answer signature (pg_sig) is wrong")
    if first(answer, "pg_salt") != salt:
        return MerchantAnswer(False, "", "", "answer does not echo the callback's pg_salt")
    status = (first(answer, "pg_status") or "").lower()
    if status not in ("ok", "rejected", "error"):
        return MerchantAnswer(False, "", "", f"answer pg_status {status!r} is not ok, rejected or error")
    description = first(answer, "pg_description") or first(answer, "pg_error_description") or ""
    return MerchantAnswer(status != "error", status, description, None if status != "error" else description)


def result_flag(status: str) -> str:
    return "1" if status == PaymentStatus.OK.value else "0"
