"""Exchange API routes (/api/v2): JSON in, JSON out, the spec's error shape for every failure."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import structlog
from fastapi import APIRouter, Header, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.routing import Match

from greengate.api.exchange import orders, schemas
from greengate.api.exchange.wire import direction_wire, dumps, error_body, error_status
from greengate.clock import utcnow
from greengate.domain.errors import DomainError, InvalidRequest, NotFound, Unauthorized, Unavailable
from greengate.domain.money import parse_amount
from greengate.runtime import Runtime
from greengate.security.tokens import constant_time_equals
from greengate.services.directions import list_directions
from greengate.services.exchange_orders import (
    cancel_orders,
)
from greengate.services.merchants import authenticate_api_secret
from greengate.services.rates import current_rate
from greengate.services.transfers import TransferInput, record_transfer
from greengate.store.models import Merchant

log = structlog.get_logger(__name__)
JSON = "application/json"


def json_response(data: Any, status: int = 200) -> Response:
    return Response(dumps(data), status_code=status, media_type=JSON)


def error_response(error: DomainError) -> Response:
    return json_response(error_body(error), error_status(error))


class ExchangeRoute(APIRoute):
    """Renders every failure of an Exchange API route in the spec's error shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except DomainError as exc:
                return error_response(exc)
            except RequestValidationError as exc:
                first = exc.errors()[0] if exc.errors() else {}
                where = ".".join(str(p) for p in first.get("loc", ()))
                return error_response(InvalidRequest(f"{where}: {first.get('msg', 'invalid')}"))
            except Exception:
                log.exception("exchange_api_unhandled", path=request.url.path)
                return error_response(
                    Unavailable("internal error; the request was not applied", code="internal_error")
                )

        return guarded


router = APIRouter(prefix="/api/v2", route_class=ExchangeRoute, tags=["Exchange API"])
# A security scheme rather than a plain header, so that OpenAPI describes it and Swagger UI's
# "Authorize" sends it; a missing header still reaches the route, which answers in the API's shape.
ApiSecret = Security(
    APIKeyHeader(
        name="Api-Secret",
        scheme_name="ApiSecret",
        description="The client's API secret, as printed by `greengate merchant create`",
        auto_error=False,
    )
)


def _rt(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


async def _json(request: Request, rt: Runtime) -> tuple[bytes, dict[str, Any]]:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > rt.settings.max_request_bytes:
        raise InvalidRequest("request body is too large", code="payload_too_large")
    body = await request.body()
    return body, orders.json_object(rt, request.headers.get("content-type", ""), body)


async def _receive_body(request: Request, rt: Runtime) -> None:
    """Take in the whole body before a transaction opens, so a client sending it slowly holds no
    database connection (nor, on SQLite, the write lock); `_json` then reads Starlette's cached copy."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > rt.settings.max_request_bytes:
        return  # `_json` refuses it without reading it
    await request.body()


async def _merchant(session: AsyncSession, api_secret: str | None) -> Merchant:
    if not api_secret:
        raise Unauthorized("Api-Secret header is required", code="missing_api_secret")
    merchant = await authenticate_api_secret(session, api_secret)
    if merchant is None:
        raise Unauthorized("Api-Secret is not valid", code="invalid_api_secret")
    return merchant


@router.get("/directions", response_model=list[schemas.DirectionOut], responses=schemas.ERRORS)
async def get_directions(request: Request, api_secret: str | None = ApiSecret) -> Response:
    """Directions visible to the client, with the rate an order created now would lock."""
    rt = _rt(request)
    now = utcnow()
    async with rt.db.transaction() as session:
        await _merchant(session, api_secret)
        items = []
        for direction in await list_directions(session):
            try:
                course = (await current_rate(session, rt, direction, now)).rate
            except DomainError:
                course = None
            items.append(direction_wire(direction, course))
    return json_response(items)


@router.post(
    "/order/create",
    response_model=schemas.CreateOrderOut,
    responses=schemas.ERRORS,
    openapi_extra=schemas.json_body(schemas.CreateOrderIn),
)
async def post_order_create(
    request: Request,
    api_secret: str | None = ApiSecret,
    idempotency_key: str | None = Header(default=None, alias="Idempotency-Key"),
) -> Response:
    """Create an order: lock the rate, assign requisites (or leave it unconfirmed until one frees up)."""
    body = await request.body()
    ctype = request.headers.get("content-type", "")
    work = orders.create(_rt(request), api_secret, idempotency_key, ctype, body)
    status, out = await orders.answer(request.url.path, work)
    return Response(out, status_code=status, media_type=JSON)


@router.post(
    "/order/check",
    response_model=schemas.CheckOut,
    responses=schemas.ERRORS,
    openapi_extra=schemas.json_body(schemas.OrderIdsIn),
)
async def post_order_check(request: Request, api_secret: str | None = ApiSecret) -> Response:
    """The client's own orders among the ids; others' and unknown ids are simply absent."""
    body = await request.body()
    ctype = request.headers.get("content-type", "")
    status, out = await orders.answer(request.url.path, orders.check(_rt(request), api_secret, ctype, body))
    return Response(out, status_code=status, media_type=JSON)


@router.post(
    "/order/cancel",
    response_model=schemas.CancelOut,
    responses=schemas.ERRORS,
    openapi_extra=schemas.json_body(schemas.OrderIdsIn),
)
async def post_order_cancel(request: Request, api_secret: str | None = ApiSecret) -> Response:
    """Cancel the client's unconfirmed or awaiting orders; report the others as failed."""
    rt = _rt(request)
    now = utcnow()
    await _receive_body(request, rt)
    async with rt.db.transaction() as session:
        merchant = await _merchant(session, api_secret)
        _, data = await _json(request, rt)
        ids, others = orders.order_ids(data)
        outcomes = await cancel_orders(session, rt, merchant, ids, now)
    canceled = [{"order_id": str(o.order_id), "order_status": o.status} for o in outcomes if o.canceled]
    failed = [
        {"order_id": str(o.order_id), "order_status": o.status, "error": "order can no longer be canceled"}
        for o in outcomes
        if not o.canceled
    ]
    # Ids that name none of the client's orders (another client's look the same): failed, not found.
    found = {o.order_id for o in outcomes}
    unknown = [str(i) for i in sorted(set(ids) - found)] + list(dict.fromkeys(others))
    failed += [{"order_id": i, "order_status": "", "error": "order not found"} for i in unknown]
    return json_response({"result": "true", "data": {"cancel": canceled, "failed": failed}})


def _operator(rt: Runtime, authorization: str | None) -> str:
    token = rt.settings.operator_token
    if not token:
        raise Unauthorized(
            "the incoming-transfer endpoint is disabled (no operator token set)", code="disabled"
        )
    given = (authorization or "").removeprefix("Bearer ").strip()
    if not given or not constant_time_equals(given, token):
        raise Unauthorized("operator token is missing or wrong", code="invalid_operator_token")
    return "operator:api"


def _received_at(data: dict[str, Any], now: datetime) -> datetime:
    raw = data.get("received_at")
    if raw is None:
        return now
    if not isinstance(raw, str):
        raise InvalidRequest("received_at must be 'YYYY-MM-DD HH:MM:SS'", field="received_at")
    try:
        return datetime.strptime(raw, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        raise InvalidRequest("received_at must be 'YYYY-MM-DD HH:MM:SS'", field="received_at") from None


@router.post(
    "/internal/transfers",
    response_model=schemas.TransferOut,
    responses=schemas.ERRORS,
    openapi_extra=schemas.json_body(schemas.TransferIn),
    tags=["Operator"],
)
async def post_incoming_transfer(
    request: Request, authorization: str | None = Header(default=None, description="Bearer <operator token>")
) -> Response:
    """An incoming transfer to a requisite (from the operator's bank feed): matched to its order or kept."""
    rt = _rt(request)
    actor = _operator(rt, authorization)
    now = utcnow()
    _, data = await _json(request, rt)
    currency = orders.text_field(data, "currency", max_length=8).upper()
    external_id = data.get("external_id")
    if external_id is not None and (not isinstance(external_id, str) or not 0 < len(external_id) <= 100):
        raise InvalidRequest("external_id must be a string of 1-100 characters", field="external_id")
    if data.get("amount") is None:
        raise InvalidRequest("amount is required", code="missing_field", field="amount")
    amount = parse_amount(data.get("amount"), currency, field="amount")
    if amount <= 0:
        raise InvalidRequest("amount must be greater than 0", field="amount")
    transfer = TransferInput(
        requisite_number=orders.text_field(data, "requisite", max_length=40),
        amount=amount,
        currency=currency,
        external_id=external_id,
        received_at=_received_at(data, now),
    )
    async with rt.db.transaction() as session:
        row = await record_transfer(session, rt, transfer, now, actor)
        await session.flush()
        body = {
            "transfer_id": row.id,
            "status": row.status,
            "order_id": str(row.order_id) if row.order_id else None,
            "note": row.note,
        }
    return json_response(body)


# Every method, so that an unknown path under /api/ is answered here whatever the method.
ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


async def unknown_api_path(request: Request) -> Response:
    """Any path under /api/ that no route serves, in the Exchange API's error shape: 405 for a known path
    asked with another method, 404 otherwise (a trailing slash too: it is not redirected)."""
    # A route that knows the path but not the method matches partially.
    known_path = any(
        route.matches(request.scope)[0] is Match.PARTIAL
        for route in request.app.router.routes
        if getattr(route, "endpoint", None) is not unknown_api_path
    )
    path = request.url.path
    if known_path:
        error = InvalidRequest(f"{request.method} is not allowed on {path}", code="method_not_allowed")
        return json_response(error_body(error), 405)
    hint = " (without the trailing slash?)" if path.endswith("/") and path != "/api/" else ""
    return error_response(NotFound(f"unknown endpoint {path}{hint}", code="not_found"))


def add_unknown_path_routes(app: Any) -> None:
    """Register `unknown_api_path` after every other route, so that it serves only what they do not."""
    for path in ("/api", "/api/{rest:path}"):
        app.add_api_route(path, unknown_api_path, methods=ANY_METHOD, include_in_schema=False)
