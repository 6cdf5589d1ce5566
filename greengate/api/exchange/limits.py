"""The Exchange API's request limit per client and throttle of failed authentication per address.

Runs in front of every /api/v2 route, the fast order endpoints included: an address with too many
failed authentications in the current window is refused before its secret is looked at; a known
client past its requests a minute is refused before the endpoint runs. Both answer 429 in the
spec's error shape with Retry-After. A 401 from any route counts as a failure of the address.

Neither check asks the database on the common request (see `greengate.services.throttles` for the
slack that buys). A client's own requests-a-minute setting is looked up by its secret's digest once
per `CLIENT_TTL_SECONDS` per process, so a changed setting or a removed client takes effect within
that; a secret no client holds is not remembered (its request fails authentication anyway)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from greengate.api.dispatch import client_address
from greengate.api.exchange.wire import dumps, error_body
from greengate.clock import utcnow
from greengate.domain.errors import Unavailable
from greengate.metrics import REQUESTS_REFUSED
from greengate.runtime import Runtime
from greengate.services import throttles
from greengate.services.merchants import api_secret_digest
from greengate.settings import Settings
from greengate.store import throttles as store

log = structlog.get_logger(__name__)
PREFIX = "/api/v2/"
CLIENT_SCOPE = "exchange_client"
FAILURE_SCOPE = "auth_fail_exchange"
CLIENT_TTL_SECONDS = 5.0
CLIENTS_KEPT = 10_000


def failure_rule(settings: Settings, scope: str) -> throttles.Rule:
    return throttles.Rule(scope, settings.auth_failures_per_address, settings.auth_failure_window_seconds)


class ExchangeLimits:
    def __init__(self, app: ASGIApp, runtime: Callable[[], Runtime]) -> None:
        self.app = app
        self.runtime = runtime
        # Secret digest -> (monotonic seconds looked up, client id, its own requests a minute).
        self._clients: OrderedDict[str, tuple[float, int, int | None]] = OrderedDict()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        rt = self.runtime()
        now = utcnow()
        address = client_address(scope)
        failures = failure_rule(rt.settings, FAILURE_SCOPE)
        verdict = await throttles.check_failures(rt.db, failures, address, now)
        if not verdict.allowed:
            REQUESTS_REFUSED.labels("exchange", "auth_throttled").inc()
            await _too_many(send, verdict.retry_after, "too many failed authentications from this address")
            return
        secret = _header(scope, b"api-secret")
        digest = api_secret_digest(secret) if secret else None
        if digest is not None:
            client = await self._client(rt, digest)
            if client is not None:
                client_id, own_limit = client
                limit = rt.settings.exchange_requests_per_minute if own_limit is None else own_limit
                rule = throttles.Rule(CLIENT_SCOPE, limit, 60)
                verdict = await throttles.count_request(rt.db, rule, str(client_id), now)
                if not verdict.allowed:
                    REQUESTS_REFUSED.labels("exchange", "rate_limited").inc()
                    await _too_many(send, verdict.retry_after, f"more than {limit} requests a minute")
                    return

        status = 0

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, receive, watch)
        if status == 401:
            after = await throttles.count_failure(rt.db, failures, address, utcnow())
            if not after.allowed:
                log.warning("exchange_auth_throttled", address=address)

    async def _client(self, rt: Runtime, digest: str) -> tuple[int, int | None] | None:
        """(client id, its own requests a minute) of the secret's holder, remembered a few seconds."""
        kept = self._clients.get(digest)
        clock = time.monotonic()
        if kept is not None and clock - kept[0] < CLIENT_TTL_SECONDS:
            return kept[1], kept[2]
        async with rt.db.sessions() as session:
            client = await store.client_request_limit(session, digest)
        if client is None:
            self._clients.pop(digest, None)
            return None
        self._clients[digest] = (clock, *client)
        self._clients.move_to_end(digest)
        while len(self._clients) > CLIENTS_KEPT:
            self._clients.popitem(last=False)
        return client


async def _too_many(send: Send, retry_after: int, message: str) -> None:
    body = dumps(error_body(Unavailable(message, code="rate_limited")))
    await send(
        {
            "type": "http.response.start",
            "status": 429,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
                (b"retry-after", str(retry_after).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None
