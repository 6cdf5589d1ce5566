"""The Merchant API request pipeline: parse any transport, identify the merchant, verify pg_sig,
run the use case in one transaction, answer signed XML.

`pg_salt` is not a nonce in this protocol family (published clients draw it from 1..10000), so no salt
is tracked. Reads store nothing. A state-changing request is recorded with its answer, keyed by the
merchant, the script and a digest of the signed parameters (pg_sig included): the very same request
sent again, however much later, gets the first answer signed afresh and never acts twice.

Every answer is signed with the merchant's key whenever the merchant can be identified: from a readable
`pg_merchant_id` or the `v1/merchant/{id}` path, even when the request fails to parse or to authenticate
(clients that verify error answers refuse unsigned ones). That is safe because an answer cannot be
posted back as a request: a request carrying answer-only fields (`pg_status`, `pg_error_code`, ...) is
refused before its signature is even checked. Only when the merchant cannot be identified is the
answer unsigned (code 101)."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Any, Literal

import structlog
from asyncpg.exceptions import UniqueViolationError
from sqlalchemy import Select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from greengate.api.dispatch import Answer, Incoming, Script
from greengate.api.merchant.codec import merchant_id_hint, read_params, render_xml
from greengate.api.merchant.errors import pg_error_code
from greengate.api.merchant.known_params import answer_fields, unknown_names
from greengate.domain.errors import (
    DomainError,
    InvalidRequest,
    MerchantInactive,
    MerchantUnknown,
    NotFound,
    SignatureInvalid,
    TooManyRequests,
    Unavailable,
)
from greengate.domain.ids import id_number
from greengate.domain.params import Params, ParamValue, first
from greengate.domain.signature import new_salt, script_name_from_url, verify, with_signature
from greengate.metrics import REQUESTS_REFUSED
from greengate.runtime import Runtime
from greengate.services import idempotency, throttles
from greengate.services.merchants import payout_secret, secret_key
from greengate.store import signed_requests
from greengate.store.links import Link, Row, as_link
from greengate.store.merchants import MERCHANT, merchant_from
from greengate.store.models import Merchant
from greengate.store.signed_requests import MERCHANT_AND_ANSWER

log = structlog.get_logger(__name__)
XML_TYPE = b"text/xml; charset=utf-8"


@dataclass(frozen=True)
class MerchantCall:
    merchant: Merchant
    params: Params
    script: str
    now: datetime
    request: Incoming
    context: Row  # the row that read the merchant, with what the script's context joined to it
    recording: Recording | None  # a state-changing call's record of its answer


@dataclass
class Recording:
    """Where a state-changing call's answer is recorded: by the pipeline once the script has run, or by
    the script itself in its last statement (`done`)."""

    script: str
    digest: str
    done: bool = False

    def row(self, fields: Params) -> tuple[str, str, str]:
        """(script, digest, answer) for the answer whose fields the script returns."""
        return self.script, self.digest, _encode_answer([("pg_status", "ok"), *fields])


Handler = Callable[[AsyncSession, Runtime, MerchantCall], Awaitable[Params]]
KeyKind = Literal["payment", "payout"]  # which merchant secret signs the script


Context = Callable[[Params, str], tuple[Select[Any], dict[str, Any]]]


@dataclass(frozen=True)
class OnLink:
    """A state-changing script written in Core statements: it runs on a `Link`, at the driver's cost,
    where the others run in an ORM session.

    `context` gives, for the request's parameters and the database's dialect, the statement that reads
    its merchant and what it needs besides (`store.merchants.merchant_statement`, joining
    `signed_requests.STORED_ANSWER`) and the values it binds; the row is the call's `context`. It must
    not refuse anything: the parameters are checked after authentication.

    `one_statement` says of a request that the script writes with one statement, which records the
    answer too where it can (`Recording.done`): on PostgreSQL it then runs without BEGIN and COMMIT.
    Two identical requests racing are told apart by the record's unique key; the loser gets the
    winner's answer."""

    run: Callable[[Link, Runtime, MerchantCall], Awaitable[Params]]
    context: Context
    one_statement: Callable[[Params], bool] | None = None


@dataclass(frozen=True)
class FromContext:
    """A read answered from its context row alone: one statement reads the merchant and what the
    answer needs (`Database.read_row`: on PostgreSQL, in one batch with the same reads of other
    requests). `context` is as `OnLink`'s."""

    answer: Callable[[MerchantCall], Params]
    context: Context


Work = Handler | OnLink | FromContext  # what a script runs


@dataclass(frozen=True)
class Outcome:
    """What a call comes to: the answer's fields, the secret that signs them (None: unsigned), the
    script name they are signed with, and the seconds to wait when a throttle refused the call."""

    fields: Params
    secret: str | None
    script: str
    retry_after: int | None = None


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


def xml(outcome: Outcome, fields: Params | None = None) -> Answer:
    """The signed XML answer; 429 with Retry-After when a throttle refused the request."""
    body = render_xml(signed(outcome.script, outcome.fields if fields is None else fields, outcome.secret))
    if outcome.retry_after is not None:
        return Answer(429, body, XML_TYPE, ((b"retry-after", str(outcome.retry_after).encode()),))
    return Answer(200, body, XML_TYPE)


FAILURE_SCOPE = "auth_fail_merchant"


def _failure_rule(rt: Runtime) -> throttles.Rule:
    return throttles.Rule(
        FAILURE_SCOPE, rt.settings.auth_failures_per_address, rt.settings.auth_failure_window_seconds
    )


def _is_auth_failure(error: DomainError) -> bool:
    return isinstance(error, MerchantUnknown) or error.code == "signature_invalid"


Read = Callable[[Select[Any], dict[str, Any]], Awaitable[Row | None]]


async def _merchant(
    read: Read, merchant_id: int | None, statement: Select[Any], values: dict[str, Any]
) -> tuple[Merchant, Row]:
    row = None if merchant_id is None else await read(statement, {"merchant_id": merchant_id, **values})
    merchant = None if row is None else merchant_from(row)
    if merchant is None or row is None or merchant.secret_key_enc is None:
        raise MerchantUnknown("pg_merchant_id is missing or unknown")
    return merchant, row


def _context(
    handler: Work, params: Params, writes: str | None, dialect: str
) -> tuple[Select[Any], dict[str, Any]]:
    if isinstance(handler, OnLink | FromContext):
        return handler.context(params, dialect)
    return (MERCHANT if writes is None else MERCHANT_AND_ANSWER), {}


def _check_salt(params: Params) -> None:
    """Present and bounded; any value is accepted (it is no nonce)."""
    salt = first(params, "pg_salt")
    if not salt:
        raise InvalidRequest("pg_salt is required", field="pg_salt")
    if len(salt) > 100:
        raise InvalidRequest("pg_salt is longer than 100 characters", field="pg_salt")


def _secret(rt: Runtime, merchant: Merchant, key_kind: KeyKind) -> str:
    return secret_key(rt.keyring, merchant) if key_kind == "payment" else payout_secret(rt.keyring, merchant)


async def _hinted_secret(rt: Runtime, request: Incoming, key_kind: KeyKind) -> str | None:
    """The signing secret for an answer to a request that could not be read, when the merchant is
    still legible (the path, the query string or the raw body); None when it is not."""
    merchant_id = id_number(request.path_params.get("merchant_id") or merchant_id_hint(request))
    if merchant_id is None:
        return None
    try:
        row = await rt.db.read_row(MERCHANT, {"merchant_id": merchant_id})
        merchant = None if row is None else merchant_from(row)
    except Exception:
        log.exception("merchant_api_hint_failed", path=request.path)
        return None
    if merchant is None or merchant.secret_key_enc is None:
        return None
    return _secret(rt, merchant, key_kind)


def request_digest(params: Params) -> str:
    """The signed request as received (parameters in order, pg_salt and pg_sig included): equal only for
    the very same request, whichever transport carried it."""
    encoded = json.dumps(params, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(encoded.encode("utf-8", "surrogatepass")).hexdigest()


def _encode_answer(fields: Params) -> str:
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":"))


def _decode_value(value: object) -> ParamValue:
    if isinstance(value, str):
        return value
    assert isinstance(value, list)
    return [(str(name), _decode_value(item)) for name, item in value]


def _decode_answer(stored: str) -> Params:
    decoded = _decode_value(json.loads(stored))
    assert isinstance(decoded, list)
    return decoded


@asynccontextmanager
async def _unit(rt: Runtime, handler: Work, params: Params, writes: bool) -> AsyncIterator[tuple[Any, Read]]:
    """Where a call runs, and how it reads its context: a read from its context alone reads that row
    on its own; a Core script runs on a link (on PostgreSQL a write of one statement without a
    transaction); any other script in one ORM session's transaction."""
    if isinstance(handler, FromContext):
        yield None, rt.db.read_row
    elif isinstance(handler, OnLink):
        one = handler.one_statement is not None and handler.one_statement(params)
        async with rt.db.link(transaction=not one) as link:
            yield link, link.row
    else:
        async with rt.db.transaction() as session:
            link = as_link(session)
            yield session, link.row


def _authenticate(merchant: Merchant, params: Params, script: str, secret: str) -> str:
    """The script name the request is signed with; raises unless the request is the merchant's own,
    well-formed request."""
    answer_only = answer_fields(params)
    if answer_only:
        raise SignatureInvalid(
            f"{answer_only[0]} is a field of answers, not of requests: an answer is not a request",
            code="answer_as_request",
        )
    if not verify(script, params, secret):
        # An alias without ".php" (/init_payment): clients sign with the script's own name.
        canonical = f"{script}.php"
        if script.endswith(".php") or not verify(canonical, params, secret):
            raise SignatureInvalid("wrong signature (pg_sig)")
        script = canonical
    if not merchant.active:
        raise MerchantInactive("the merchant's contract is inactive")
    _check_salt(params)
    unknown = unknown_names(params)
    if unknown:
        raise InvalidRequest(
            f"unknown parameter {unknown[0]}: pg_ names are the protocol's; "
            "a shop's own parameters go without the pg_ prefix",
            field=unknown[0],
            code="unknown_parameter",
        )
    return script


async def process(
    rt: Runtime,
    request: Incoming,
    handler: Work,
    *,
    key_kind: KeyKind = "payment",
    writes: str | None = None,
) -> Outcome:
    """Run one Merchant API call.

    `writes` names a state-changing operation: its applied requests are recorded under that name and
    a repeat gets the first answer. None is a read, which writes nothing."""
    script = script_name_from_url(request.path)
    signing_secret: str | None = None
    verdict = await throttles.check_failures(rt.db, _failure_rule(rt), request.client, rt.clock())
    if not verdict.allowed:
        REQUESTS_REFUSED.labels("merchant", "auth_throttled").inc()
        error = TooManyRequests(
            "too many failed signatures from this address; try again later", retry_after=verdict.retry_after
        )
        return Outcome(error_fields(error), None, script, verdict.retry_after)
    merchant: Merchant | None = None
    recording: Recording | None = None
    try:
        params = read_params(request, max_bytes=rt.settings.max_request_bytes)
        merchant_id = id_number(request.path_params.get("merchant_id") or first(params, "pg_merchant_id"))
        statement, values = _context(handler, params, writes, rt.db.dialect)
        if writes is not None:
            recording = Recording(writes, request_digest(params))
            values = {**values, "script": recording.script, "digest": recording.digest}
        async with _unit(rt, handler, params, writes is not None) as (tx, read):
            merchant, context = await _merchant(read, merchant_id, statement, values)
            signing_secret = _secret(rt, merchant, key_kind)
            script = _authenticate(merchant, params, script, signing_secret)
            structlog.contextvars.bind_contextvars(merchant_id=merchant.id)
            call = MerchantCall(merchant, params, script, rt.clock(), request, context, recording)
            if writes is not None and context["stored_answer"] is not None:
                return Outcome(_decode_answer(context["stored_answer"]), signing_secret, script)
            if isinstance(handler, FromContext):
                answer = handler.answer(call)
            else:
                run = handler.run if isinstance(handler, OnLink) else handler
                answer = await run(tx, rt, call)
            if recording is not None and not recording.done:
                await signed_requests.record(tx, merchant.id, *recording.row(answer), call.now)
        return Outcome([("pg_status", "ok"), *answer], signing_secret, script)
    except DomainError as exc:
        if _is_auth_failure(exc):
            await throttles.count_failure(rt.db, _failure_rule(rt), request.client, rt.clock())
        if signing_secret is None and not isinstance(exc, MerchantUnknown):
            signing_secret = await _hinted_secret(rt, request, key_kind)
        return Outcome(error_fields(exc), signing_secret, script)
    except (IntegrityError, UniqueViolationError, sqlite3.IntegrityError):
        # The same request applied concurrently: the first one's answer is this one's too.
        if merchant is not None and recording is not None:
            async with rt.db.read_link() as link:
                stored = await signed_requests.find_answer(
                    link, merchant.id, recording.script, recording.digest
                )
            if stored is not None:
                return Outcome(_decode_answer(stored), signing_secret, script)
        log.warning("merchant_api_conflict", path=request.path)
        err: DomainError = Unavailable("a concurrent request conflicted; retry", code="internal_error")
        return Outcome(error_fields(err), signing_secret, script)
    except Exception:
        log.exception("merchant_api_unhandled", path=request.path)
        err = Unavailable("internal error; the request was not applied", code="internal_error")
        return Outcome(error_fields(err), signing_secret, script)


async def handle(
    rt: Runtime,
    request: Incoming,
    handler: Work,
    *,
    key_kind: KeyKind = "payment",
    writes: str | None = None,
) -> Answer:
    return xml(await process(rt, request, handler, key_kind=key_kind, writes=writes))


def reads(handler: Work, key_kind: KeyKind = "payment") -> Script:
    """A script that reads: it writes nothing, whatever the request."""

    async def script(rt: Runtime, request: Incoming) -> Answer:
        return await handle(rt, request, handler, key_kind=key_kind)

    return script


def writes(handler: Work, name: str, key_kind: KeyKind = "payment") -> Script:
    """A state-changing script, its applied requests recorded under `name`."""

    async def script(rt: Runtime, request: Incoming) -> Answer:
        return await handle(rt, request, handler, key_kind=key_kind, writes=name)

    return script


def to_page(fields: Params, failed: str) -> Answer:
    """The payer's browser brought the signed link: on to the payment's page, or the error as a page."""
    if first(fields, "pg_status") == "ok":
        location = (first(fields, "pg_redirect_url") or "/").encode()
        return Answer(303, b"", b"text/plain; charset=utf-8", ((b"location", location),))
    code, text = first(fields, "pg_error_code"), first(fields, "pg_error_description")
    body = (
        "<!doctype html><meta charset=utf-8><title>Payment error</title>"
        f"<h1>{failed}</h1><p>Error {escape(code or '')}: {escape(text or '')}</p>"
    )
    return Answer(400, body.encode(), b"text/html; charset=utf-8")


# Paths that are not the Merchant API's: their own 404s stay as they are.
_OTHER_SURFACES = (
    "/api/v2",
    "/admin",
    "/pay/",
    "/cards/",
    "/payout",
    "/static",
    "/docs",
    "/redoc",
    "/openapi.json",
    "/metrics",
    "/healthz",
    "/readyz",
)


_MERCHANT_PATH = re.compile(r"/v1/merchant/([0-9]{1,18})/")


def is_merchant_path(path: str) -> bool:
    return not path.startswith(_OTHER_SURFACES)


async def unknown_script(rt: Runtime, request: Incoming) -> Answer:
    """An unknown path answers in the protocol's shape: a signed XML error when the merchant is legible."""
    script = script_name_from_url(request.path)
    error = NotFound(f"unknown script {request.path[:200]}", code="unknown_script")
    raw: str | None
    try:
        raw = first(read_params(request, max_bytes=rt.settings.max_request_bytes), "pg_merchant_id")
    except DomainError:
        raw = merchant_id_hint(request)
    in_path = _MERCHANT_PATH.match(request.path)
    if in_path is not None:
        raw = in_path.group(1)
    secret = None
    if id_number(raw) is not None:
        request.path_params["merchant_id"] = str(raw)
        secret = await _hinted_secret(rt, request, "payment")
    return xml(Outcome(error_fields(error), secret, script))
