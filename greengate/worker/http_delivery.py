"""One HTTP delivery of a callback: the target checked at send time, no redirects, one deadline for
the whole exchange (resolve, connect, send, read) and the answer read as a stream, cut at a limit."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx

from greengate.services.callback_targets import ForbiddenTarget, resolve_public_address

MAX_RESPONSE_BYTES = 64_000


@dataclass(frozen=True)
class OutgoingRequest:
    method: str
    url: str
    headers: dict[str, str]
    content: bytes | None = None


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
    outgoing: OutgoingRequest,
    *,
    allow_private: bool,
    deadline: float,
    limit: int = MAX_RESPONSE_BYTES,
) -> DeliveryOutcome:
    """Send one request and read at most `limit` bytes of the answer, all within `deadline` seconds.

    The answer is read as it arrives and the connection dropped once `limit` bytes are in, so a huge
    or endless answer costs `limit` bytes of memory, never more. A slow answer ends at the deadline
    however it trickles in."""
    method, url, headers, content = outgoing.method, outgoing.url, outgoing.headers, outgoing.content
    started = time.monotonic()

    def elapsed() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        async with asyncio.timeout(deadline):
            target, extra_headers, extensions = await _pinned(url, allow_private)
            # No compressed answers: a small compressed chunk may inflate past any limit.
            sent_headers = {**headers, **extra_headers, "Accept-Encoding": "identity"}
            request = client.build_request(
                method, target, headers=sent_headers, content=content, extensions=extensions
            )
            response = await client.send(request, stream=True)
            try:
                status_code, raw = response.status_code, await _read_capped(response, limit)
            finally:
                await response.aclose()
    except TimeoutError:
        return DeliveryOutcome(None, "", "timeout", elapsed())
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
    return DeliveryOutcome(status_code, raw.decode("utf-8", "replace"), None, elapsed())


async def _read_capped(response: httpx.Response, limit: int) -> bytes:
    """At most `limit` bytes of the answer; the rest is never read."""
    received = bytearray()
    async for chunk in response.aiter_raw():
        received += chunk[: limit - len(received)]
        if len(received) >= limit:
            break
    return bytes(received)
