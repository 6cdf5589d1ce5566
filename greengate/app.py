"""The ASGI application: both APIs, hosted pages, health, readiness and metrics."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from greengate import __version__
from greengate import log as logging_setup
from greengate.api.dispatch import Dispatch, Scripts, incoming_of
from greengate.api.exchange import orders as exchange_orders_api
from greengate.api.exchange import routes as exchange_routes
from greengate.api.exchange.limits import ExchangeLimits
from greengate.api.exchange.wire import error_body
from greengate.api.merchant import routes as merchant_routes
from greengate.api.merchant.protocol import is_merchant_path, unknown_script
from greengate.body_limit import BodyLimitMiddleware
from greengate.domain.errors import NotFound
from greengate.metrics import HTTP_LATENCY, HTTP_REQUESTS, render
from greengate.runtime import Runtime
from greengate.security.tokens import constant_time_equals
from greengate.services import keys, throttles
from greengate.settings import Settings, get_settings
from greengate.store.migrate import current_revision, head_revision
from greengate.web import api_docs, checkout, console, exchange_pages
from greengate.web.checkout import card_storage as card_storage_pages
from greengate.web.checkout import payout_pages
from greengate.worker.loop import Worker

log = structlog.get_logger(__name__)


class ObservabilityMiddleware:
    """Request id, access metrics; pure ASGI so it adds little to the hot paths."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        # A correlation id for the logs, not a secret: the cheap generator will do.
        request_id = f"{random.getrandbits(64):016x}"
        structlog.contextvars.bind_contextvars(request_id=request_id)

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            HTTP_REQUESTS.labels(scope["method"], path, str(status)).inc()
            HTTP_LATENCY.labels(path).observe(time.perf_counter() - started)
            structlog.contextvars.clear_contextvars()


class Gateway(FastAPI):
    """The application. The scripts of both APIs are served by the lean dispatch, everything else goes
    through FastAPI; the body limit, the Exchange API's limits and the access metrics stand in front of
    both."""

    front: ASGIApp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.front(scope, receive, send)

    async def _framework(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None, *, run_worker: bool = False) -> FastAPI:
    settings = settings or get_settings()
    logging_setup.configure(settings.log_level, settings.log_json)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt = Runtime.create(settings)
        app.state.runtime = rt
        try:
            await keys.prepare(rt)
        except keys.KeyProblem as problem:  # /readyz answers 503 with the code while it lasts
            log.error("encryption keys cannot serve the database", code=problem.code, detail=problem.message)
        except Exception as exc:
            log.error("encryption keys not checked: database unavailable", error=repr(exc))
        stop = asyncio.Event()
        worker_task = asyncio.create_task(Worker(rt).run(stop)) if run_worker else None
        # Writes the request counts this process holds: a quiet client's last batch, all at shutdown.
        flusher = asyncio.create_task(throttles.keep_flushing(rt.db, stop))
        try:
            yield
        finally:
            stop.set()
            if worker_task is not None:
                await worker_task
            await flusher
            await rt.close()

    app = Gateway(
        title="greengate",
        version=__version__,
        description="Self-hosted payment gateway: Exchange API (fiat → BTC) and Merchant API.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    scripts = Scripts()
    exchange_orders_api.add_scripts(scripts)
    merchant_routes.add_scripts(scripts)
    runtime = lambda: app.state.runtime  # noqa: E731
    app.front = ObservabilityMiddleware(
        BodyLimitMiddleware(
            ExchangeLimits(Dispatch(scripts, app._framework, runtime), runtime), settings.max_request_bytes
        )
    )
    app.include_router(exchange_routes.router)
    app.include_router(exchange_pages.router)
    app.include_router(checkout.router)
    app.include_router(card_storage_pages.router)
    app.include_router(payout_pages.router)
    app.include_router(console.router)
    app.include_router(api_docs.router)
    api_docs.mount_guide(app, settings.docs_site_dir)
    exchange_routes.add_unknown_path_routes(app)  # last: it takes only what no other route serves

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path == "/api" or request.url.path.startswith("/api/"):
            err = NotFound("unknown endpoint", code="not_found") if exc.status_code == 404 else None
            body: dict[str, Any] = (
                error_body(err)
                if err
                else {"response": "error", "result": "false", "error": str(exc.detail), "code": "http_error"}
            )
            return JSONResponse(body, status_code=exc.status_code)
        if exc.status_code in (404, 405) and is_merchant_path(request.url.path):
            answer = await unknown_script(request.app.state.runtime, await incoming_of(request))
            return Response(answer.body, status_code=answer.status, media_type=answer.content_type.decode())
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    @app.get(
        "/healthz",
        tags=["Operations"],
        summary="Liveness",
        responses={200: {"content": {"application/json": {"example": {"status": "ok"}}}}},
    )
    async def healthz() -> dict[str, str]:
        """The process answers. Touches nothing else: use /readyz to know whether it can serve."""
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["Operations"],
        summary="Readiness",
        response_class=JSONResponse,
        responses={
            200: {"content": {"application/json": {"example": {"status": "ok", "migrations": "0007"}}}},
            503: {
                "description": "The database is unreachable or its schema is not at this version's head",
                "content": {
                    "application/json": {
                        "example": {"status": "unavailable", "migrations": {"current": None, "head": "0007"}}
                    }
                },
            },
        },
    )
    async def readyz(request: Request) -> Response:
        """Ready to serve: the database answers and its migrations are at this version's head."""
        rt: Runtime = request.app.state.runtime
        try:
            async with rt.db.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            current = await current_revision(rt.db.engine)
        except Exception as exc:  # the detail goes to the log, never to the caller
            log.warning("readiness: database unavailable", error=repr(exc))
            return _unready("database_unavailable")
        head = head_revision(rt.settings.database_url)
        if current != head:
            return _unready("migrations_pending", migrations={"current": current, "head": head})
        try:
            async with rt.db.transaction() as session:
                problem = await keys.verify(session, rt.keyring, keys.key_source(rt.settings))
        except Exception as exc:
            log.warning("readiness: encryption keys not checked", error=repr(exc))
            return _unready("database_unavailable")
        if problem is not None:
            log.warning("readiness: encryption keys", code=problem.code, detail=problem.message)
            return _unready(problem.code)
        return JSONResponse({"status": "ok", "migrations": current})

    @app.get(
        "/metrics",
        tags=["Operations"],
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"description": "Prometheus text exposition format", "content": {"text/plain": {}}}},
    )
    async def metrics(request: Request) -> Response:
        """Request counts and latencies, callback delivery, worker and business counters."""
        if settings.metrics_address:
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        if settings.metrics_token:
            given = request.headers.get("authorization", "")
            if not constant_time_equals(given, f"Bearer {settings.metrics_token}"):
                return JSONResponse(
                    {"detail": "metrics need a bearer token"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
        body, content_type = render()
        return Response(body, media_type=content_type)

    return app


def _unready(reason: str, **extra: Any) -> Response:
    return JSONResponse({"status": "unavailable", "reason": reason, **extra}, status_code=503)


def app_factory() -> FastAPI:
    """Entry point for server processes spawned by `greengate serve --workers N`."""
    return create_app(get_settings(), run_worker=False)


def app_factory_with_worker() -> FastAPI:
    return create_app(get_settings(), run_worker=True)
