"""order/check and order/create, the Exchange API's busiest endpoints, from request bytes to response
bytes. The FastAPI routes document them (/docs) and call them; a POST to their exact path is served by
the lean dispatch (`greengate.api.dispatch`)."""

from __future__ import annotations

import re
from collections.abc import Awaitable
from typing import Any

import structlog

from greengate.api.dispatch import Answer, Incoming, Scripts
from greengate.api.exchange.wire import dumps, error_body, error_status, order_wire
from greengate.api.jsonbody import canonical_json, parse_json_object
from greengate.clock import utcnow
from greengate.domain.errors import DomainError, InvalidRequest, Unauthorized, Unavailable
from greengate.domain.ids import id_number
from greengate.runtime import Runtime
from greengate.services import idempotency
from greengate.services.exchange_orders import CreateOrderRequest, create_order, order_context
from greengate.services.order_checks import find_client_orders

log = structlog.get_logger(__name__)
JSON = "application/json"
MAX_IDS = 500
CHECK_PATH = "/api/v2/order/check"
CREATE_PATH = "/api/v2/order/create"
Reply = tuple[int, bytes]
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def json_object(rt: Runtime, content_type: str, body: bytes) -> dict[str, Any]:
    if content_type.split(";")[0].strip().lower() != JSON:
        raise InvalidRequest(
            "the Exchange API accepts only JSON bodies (Content-Type: application/json)",
            code="unsupported_media_type",
        )
    if len(body) > rt.settings.max_request_bytes:
        raise InvalidRequest("request body is too large", code="payload_too_large")
    return parse_json_object(body)


def text_field(data: dict[str, Any], name: str, *, max_length: int = 200) -> str:
    value = data.get(name)
    if value is None:
        raise InvalidRequest(f"{name} is required", code="missing_field", field=name)
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a string", code="invalid_field", field=name)
    if len(value) > max_length:
        raise InvalidRequest(f"{name} is too long", code="invalid_field", field=name)
    if _UNSTORABLE.search(value):
        # A lone surrogate cannot be encoded for the database, NUL cannot sit in a text column.
        raise InvalidRequest(f"{name} holds characters that are not text", code="invalid_field", field=name)
    return value


def order_ids(data: dict[str, Any]) -> tuple[list[int], list[str]]:
    """The ids a check or cancel names: the numeric ones, and the others as the client wrote them (no
    order has such an id, so they are unknown ids; they never fail the batch)."""
    raw = data.get("order_id")
    if raw is None:
        raise InvalidRequest("order_id is required", code="missing_field", field="order_id")
    items = raw if isinstance(raw, list) else [raw]
    if len(items) > MAX_IDS:
        raise InvalidRequest(
            f"at most {MAX_IDS} order ids per request", code="invalid_field", field="order_id"
        )
    ids: list[int] = []
    others: list[str] = []
    for item in items:
        number = id_number(str(item) if isinstance(item, int) and not isinstance(item, bool) else item)
        if number is None:
            others.append(item if isinstance(item, str) else dumps(item).decode())
        else:
            ids.append(number)
    return ids, others


def error_answer(error: DomainError) -> Reply:
    return error_status(error), dumps(error_body(error))


async def answer(path: str, work: Awaitable[Reply]) -> Reply:
    """The endpoint's answer; a failure in the spec's error shape, never a traceback."""
    try:
        return await work
    except DomainError as exc:
        return error_answer(exc)
    except Exception:
        log.exception("exchange_api_unhandled", path=path)
        return error_answer(Unavailable("internal error; the request was not applied", code="internal_error"))


async def check(rt: Runtime, api_secret: str | None, content_type: str, body: bytes) -> Reply:
    """The client's own orders among the ids; others' and unknown ids are simply absent."""
    if not api_secret:
        raise Unauthorized("Api-Secret header is required", code="missing_api_secret")
    try:
        ids, _ = order_ids(json_object(rt, content_type, body))
    except DomainError:
        # A wrong secret is refused before a bad body.
        if await find_client_orders(rt.db, rt.keyring, api_secret, []) is None:
            raise Unauthorized("Api-Secret is not valid", code="invalid_api_secret") from None
        raise
    found = await find_client_orders(rt.db, rt.keyring, api_secret, ids)
    if found is None:
        raise Unauthorized("Api-Secret is not valid", code="invalid_api_secret")
    base, now = rt.settings.base_url, utcnow()
    rendered = [order_wire(order, number, base, now) for order, number in found]
    return 200, dumps({"result": "true", "data": {"orders": rendered}})


async def create(
    rt: Runtime,
    api_secret: str | None,
    idempotency_key: str | None,
    content_type: str,
    body: bytes,
) -> Reply:
    """Create an order: lock the rate, assign requisites (or leave it unconfirmed until one frees up)."""
    if not api_secret:
        raise Unauthorized("Api-Secret header is required", code="missing_api_secret")
    now = utcnow()
    # Without an Idempotency-Key each statement can commit on its own (PostgreSQL): the order and its
    # messages are written by one statement. A key is locked and stored in the create's transaction.
    async with rt.db.link(transaction=idempotency_key is not None) as link:
        try:
            data = json_object(rt, content_type, body)
            if data.get("from_amount") is None:
                raise InvalidRequest("from_amount is required", code="missing_field", field="from_amount")
            request = CreateOrderRequest(
                payment_method=text_field(data, "payment_method", max_length=32),
                wallet=text_field(data, "wallet", max_length=100),
                from_amount=data["from_amount"],
            )
        except DomainError:
            if await order_context(link, api_secret, "") is None:
                raise Unauthorized("Api-Secret is not valid", code="invalid_api_secret") from None
            raise
        ctx = await order_context(link, api_secret, request.payment_method, request.from_amount)
        if ctx is None:
            raise Unauthorized("Api-Secret is not valid", code="invalid_api_secret")
        fingerprint = ""
        if idempotency_key is not None:
            idempotency.validate_key(idempotency_key)
            # The same request with other whitespace, key order or escapes is the same request.
            fingerprint = idempotency.request_fingerprint("POST", CREATE_PATH, canonical_json(data))
            stored = await idempotency.lookup(
                link, ctx.client_id, "order.create", idempotency_key, fingerprint
            )
            if stored is not None:
                return stored.status, stored.body.encode()
        created = await create_order(link, rt, ctx, request, now)
        item = order_wire(created.order, created.requisite_number, rt.settings.base_url)
        out = dumps({"response": "success", "items": [item]})
        if idempotency_key is not None:
            await idempotency.remember(
                link,
                ctx.client_id,
                "order.create",
                idempotency_key,
                fingerprint,
                idempotency.StoredResponse(200, out.decode()),
                now,
            )
    return 200, out


async def _check(rt: Runtime, req: Incoming) -> Answer:
    status, out = await answer(
        CHECK_PATH, check(rt, req.header(b"api-secret"), req.header(b"content-type") or "", req.body)
    )
    return Answer(status, out, b"application/json")


async def _create(rt: Runtime, req: Incoming) -> Answer:
    work = create(
        rt,
        req.header(b"api-secret"),
        req.header(b"idempotency-key"),
        req.header(b"content-type") or "",
        req.body,
    )
    status, out = await answer(CREATE_PATH, work)
    return Answer(status, out, b"application/json")


def add_scripts(scripts: Scripts) -> None:
    """The FastAPI routes document these two; the dispatch serves them."""
    scripts.add(CHECK_PATH, ["POST"], _check)
    scripts.add(CREATE_PATH, ["POST"], _create)
