"""The Merchant API request pipeline: parse any transport, identify the merchant, verify pg_sig,
refuse replayed salts, run the use case in one transaction, answer signed XML.

Only when the merchant cannot be identified is the answer unsigned (code 101)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import structlog
from fastapi import Request, Response
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import ClientDisconnect

from greengate.api.merchant.codec import read_params, render_xml
from greengate.api.merchant.errors import pg_error_code
from greengate.clock import utcnow
from greengate.domain.errors import (
    DomainError,
    InvalidRequest,
    MerchantInactive,
    MerchantUnknown,
    SignatureInvalid,
    TooManyRequests,
    Unavailable,
)
from greengate.domain.ids import id_number
from greengate.domain.params import Params, first
from greengate.domain.signature import new_salt, script_name_from_url, verify, with_signature
from greengate.metrics import REQUESTS_REFUSED
from greengate.runtime import Runtime
from greengate.services import idempotency, throttles
from greengate.services.merchants import payout_secret, secret_key
from greengate.store.models import Merchant, MerchantSalt

log = structlog.get_logger(__name__)
XML_TYPE = "text/xml; charset=utf-8"
SALT_WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class MerchantCall:
    merchant: Merchant
    params: Params
    script: str
    now: datetime


Handler = Callable[[AsyncSession, Runtime, MerchantCall], Awaitable[Params]]
KeyKind = Literal["payment", "payout"]  # which merchant secret signs the script


def _as_read(fields: Params) -> Params:
    """An empty nested list renders as an empty element, which every reader (the reference signer
    included) takes as the empty string: sign it as that, or the answer would not verify."""
    return [(name, (_as_read(value) or "") if isinstance(value, list) else value) for name, value in fields]


def request_fingerprint(script: str, params: Params) -> str:
    """The request minus its salt and signature, for idempotency: a retry signed anew is the same
    request."""
    content = [(name, value) for name, value in params if name not in ("pg_salt", "pg_sig")]
    return idempotency.request_fingerprint("POST", script, json.dumps(content).encode())


def signed(script: str, fields: Params, secret: str | None) -> Params:
    if secret is None:
        return fields
    return with_signature(script, _as_read(fields), secret, new_salt())


def error_fields(error: DomainError) -> Params:
    return [
        ("pg_status", "error"),
        ("pg_error_code", str(pg_error_code(error))),
        ("pg_error_description", error.message),
    ]


def xml(params: Params, request: Request | None = None) -> Response:
    """The XML answer; 429 with Retry-After when a throttle refused the request."""
    retry_after = getattr(request.state, "retry_after", None) if request is not None else None
    if retry_after is not None:
        headers = {"Retry-After": str(retry_after)}
        return Response(render_xml(params), status_code=429, media_type=XML_TYPE, headers=headers)
    return Response(render_xml(params), media_type=XML_TYPE)


FAILURE_SCOPE = "auth_fail_merchant"


def _failure_rule(rt: Runtime) -> throttles.Rule:
    return throttles.Rule(
        FAILURE_SCOPE, rt.settings.auth_failures_per_address, rt.settings.auth_failure_window_seconds
    )


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _is_auth_failure(error: DomainError) -> bool:
    return isinstance(error, MerchantUnknown) or error.code == "signature_invalid"


async def _merchant(session: AsyncSession, params: Params, path_merchant_id: str | None) -> Merchant:
    raw = path_merchant_id or first(params, "pg_merchant_id")
    merchant_id = id_number(raw)
    if merchant_id is None:
        raise MerchantUnknown("pg_merchant_id is missing or unknown")
    merchant = await session.get(Merchant, merchant_id)
    if merchant is None or merchant.secret_key_enc is None:
        raise MerchantUnknown("pg_merchant_id is missing or unknown")
    return merchant


async def _consume_salt(session: AsyncSession, merchant_id: int, params: Params, now: datetime) -> None:
    salt = first(params, "pg_salt")
    if not salt:
        raise InvalidRequest("pg_salt is required", field="pg_salt")
    if len(salt) > 100:
        raise InvalidRequest("pg_salt is longer than 100 characters", field="pg_salt")
    row = await session.scalar(
        select(MerchantSalt)
        .where(MerchantSalt.merchant_id == merchant_id, MerchantSalt.salt == salt)
        .with_for_update()
    )
    if row is not None and now - row.seen_at < SALT_WINDOW:
        raise SignatureInvalid(
            "pg_salt was already used: a request is signed with a fresh salt", code="salt_replayed"
        )
    if row is not None:
        row.seen_at = now
    else:
        session.add(MerchantSalt(merchant_id=merchant_id, salt=salt, seen_at=now))


async def process(
    request: Request, handler: Handler, *, key_kind: KeyKind = "payment", merchant_id: str | None = None
) -> tuple[Params, str | None, str]:
    """Run one Merchant API call; returns the response fields, the signing secret (None: unsigned)
    and the script name the response is signed with."""
    rt: Runtime = request.app.state.runtime
    script = script_name_from_url(request.url.path)
    signing_secret: str | None = None
    verdict = await throttles.check_failures(rt.db, _failure_rule(rt), _address(request), utcnow())
    if not verdict.allowed:
        REQUESTS_REFUSED.labels("merchant", "auth_throttled").inc()
        request.state.retry_after = verdict.retry_after
        error = TooManyRequests(
            "too many failed signatures from this address; try again later", retry_after=verdict.retry_after
        )
        return error_fields(error), None, script
    try:
        params = await read_params(request, max_bytes=rt.settings.max_request_bytes)
        async with rt.db.transaction() as session:
            merchant = await _merchant(session, params, merchant_id)
            signing_secret = (
                secret_key(rt.keyring, merchant)
                if key_kind == "payment"
                else payout_secret(rt.keyring, merchant)
            )
            if not verify(script, params, signing_secret):
                raise SignatureInvalid("wrong signature (pg_sig)")
            if not merchant.active:
                raise MerchantInactive("the merchant's contract is inactive")
            now = utcnow()
            await _consume_salt(session, merchant.id, params, now)
            structlog.contextvars.bind_contextvars(merchant_id=merchant.id)
            fields = await handler(session, rt, MerchantCall(merchant, params, script, now))
        return [("pg_status", "ok"), *fields], signing_secret, script
    except DomainError as exc:
        if _is_auth_failure(exc):
            await throttles.count_failure(rt.db, _failure_rule(rt), _address(request), utcnow())
        return error_fields(exc), signing_secret, script
    except ClientDisconnect:
        # The client left, or the body limit cut the body off and answered 413 already.
        gone: DomainError = Unavailable("the request body did not arrive", code="client_gone")
        return error_fields(gone), signing_secret, script
    except IntegrityError:
        # Two requests raced on the same salt (or order id): the loser is a replay.
        err: DomainError = SignatureInvalid("pg_salt was already used", code="salt_replayed")
        return error_fields(err), signing_secret, script
    except Exception:
        log.exception("merchant_api_unhandled", path=request.url.path)
        err = Unavailable("internal error; the request was not applied", code="internal_error")
        return error_fields(err), signing_secret, script


async def handle(
    request: Request, handler: Handler, *, key_kind: KeyKind = "payment", merchant_id: str | None = None
) -> Response:
    fields, key, script = await process(request, handler, key_kind=key_kind, merchant_id=merchant_id)
    return xml(signed(script, fields, key), request)
