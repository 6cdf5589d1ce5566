"""GREENGATE_MAX_REQUEST_BYTES for every route, counted as the bytes arrive.

The limit sits in front of routing and authentication: a declared Content-Length over the limit is
refused before the application runs; a chunked body (or a form with many large fields) is counted
chunk by chunk as the application reads it, and the first chunk that would cross the limit is never
handed over. The refusal is a 413 in the format of the API the path belongs to; the application then
sees the client as gone, and whatever it still tries to send is dropped.
"""

from __future__ import annotations

from enum import Enum

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from greengate.api.exchange.wire import dumps, error_body
from greengate.api.merchant.codec import PayloadTooLarge, render_xml
from greengate.api.merchant.errors import pg_error_code
from greengate.domain.errors import InvalidRequest
from greengate.domain.params import Params
from greengate.metrics import REQUESTS_REFUSED

log = structlog.get_logger(__name__)


class Surface(Enum):
    EXCHANGE = "exchange"
    MERCHANT = "merchant"
    PAGES = "pages"


# Merchant API paths that are not scripts ending in ".php".
_MERCHANT_PREFIXES = ("/api/payment_status", "/api/reg2nonreg", "/api/reg2reg", "/v1/merchant/")


def surface_of(path: str) -> Surface:
    """Which API a path belongs to, for answering a refusal in that API's format."""
    if path.startswith("/api/v2/") or path == "/api/v2":
        return Surface.EXCHANGE
    if path.endswith(".php") or path.startswith(_MERCHANT_PREFIXES):
        return Surface.MERCHANT
    return Surface.PAGES


def too_large_response(path: str, limit: int) -> tuple[bytes, bytes]:
    """(content type, body) of the 413 for a path."""
    message = f"request body is larger than {limit} bytes"
    surface = surface_of(path)
    if surface is Surface.EXCHANGE:
        return b"application/json", dumps(error_body(InvalidRequest(message, code="payload_too_large")))
    if surface is Surface.MERCHANT:
        error = PayloadTooLarge(message)
        fields: Params = [
            ("pg_status", "error"),
            ("pg_error_code", str(pg_error_code(error))),
            ("pg_error_description", message),
        ]
        return b"text/xml; charset=utf-8", render_xml(fields)
    page = (
        "<!doctype html><html lang=en><meta charset=utf-8><title>Request too large</title>"
        f"<h1>Request too large</h1><p>The request body is larger than {limit} bytes.</p></html>"
    )
    return b"text/html; charset=utf-8", page.encode()


class BodyLimitMiddleware:
    """Refuses a request body larger than `limit` bytes with a 413, whatever its framing."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        declared = _declared_length(scope)
        if declared is not None and declared > self.limit:
            await self._refuse(path, send, "declared")
            return

        received = 0
        refused = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    refused = True
                    if not started:
                        await self._refuse(path, send, "streamed")
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 went out; the application's own answer goes nowhere
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not refused:
                raise
            # The application failed on the cut-off body after the 413 was sent: nothing to add.

    async def _refuse(self, path: str, send: Send, how: str) -> None:
        REQUESTS_REFUSED.labels(surface_of(path).value, "body_too_large").inc()
        log.info("request_body_too_large", path=path, limit=self.limit, how=how)
        content_type, body = too_large_response(path, self.limit)
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", content_type),
                    (b"content-length", b"%d" % len(body)),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            text = value.strip()
            return int(text) if text.isdigit() else None
    return None
