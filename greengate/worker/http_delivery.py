"""One HTTP delivery of a callback: the target checked at send time, no redirects, bounded bodies."""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx

from greengate.services.callback_targets import ForbiddenTarget, resolve_public_address

MAX_RESPONSE_BYTES = 64_000


@dataclass(frozen=True)
class DeliveryOutcome:
    status_code: int | None
    body: str
    error: str | None
    duration_ms: int


async def _pinned(url: str, allow_private: bool) -> tuple[str, dict[str, str], dict[str, str]]:
    """Resolve once, check, and connect to that address, so DNS cannot change between check and use."""
    if allow_private:
        return url, {}, {}
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = await resolve_public_address(host, port)
    literal = f"[{address}]" if ":" in address else address
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    host_header = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc)), {"Host": host_header}, {"sni_hostname": host}


async def deliver(
    client: httpx.AsyncClient,
    *,
    method: str,
    url: str,
    headers: dict[str, str],
    content: bytes | None = None,
    allow_private: bool,
) -> DeliveryOutcome:
    started = time.monotonic()

    def elapsed() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        target, extra_headers, extensions = await _pinned(url, allow_private)
        response = await client.request(
            method, target, headers={**headers, **extra_headers}, content=content, extensions=extensions
        )
    except ForbiddenTarget as exc:
        return DeliveryOutcome(None, "", f"refused target: {exc}", elapsed())
    except (httpx.InvalidURL, ValueError) as exc:
        # No request can be built for this URL (bad IDNA host, port out of range, ...): record it as a
        # failed attempt so the retry schedule applies instead of the job failing without an outcome.
        return DeliveryOutcome(None, "", f"invalid target {url!r}: {exc}", elapsed())
    except httpx.TimeoutException:
        return DeliveryOutcome(None, "", "timeout", elapsed())
    except httpx.HTTPError as exc:
        return DeliveryOutcome(None, "", f"{type(exc).__name__}: {exc}", elapsed())
    body = response.content[:MAX_RESPONSE_BYTES].decode("utf-8", "replace")
    return DeliveryOutcome(response.status_code, body, None, elapsed())
