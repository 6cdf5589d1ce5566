"""Where callbacks may go: http(s) URLs that do not resolve to loopback or private ranges."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from greengate.domain.errors import InvalidRequest


class ForbiddenTarget(Exception):
    pass


def validate_callback_url(url: str, *, allow_private: bool) -> str:
    """Syntax and literal-address check at configuration time; DNS is checked again at send time."""
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise InvalidRequest("callback URL is not a valid URL", code="invalid_url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest("callback URL must be an absolute http(s) URL", code="invalid_url")
    if len(url) > 2000:
        raise InvalidRequest("callback URL is too long", code="invalid_url")
    if not allow_private:
        try:
            address = ipaddress.ip_address(parts.hostname)
        except ValueError:
            address = None
        if address is not None and not address.is_global:
            raise InvalidRequest(
                "callback URL points to a private or loopback address", code="forbidden_callback_target"
            )
    return url.strip()


async def resolve_public_address(host: str, port: int) -> str:
    """Resolve the host now; refuse it if any answer is private, loopback, link-local or reserved."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ForbiddenTarget(f"cannot resolve {host}: {exc}") from None
    addresses = [str(info[4][0]) for info in infos]
    for address in addresses:
        if not ipaddress.ip_address(address).is_global:
            raise ForbiddenTarget(f"{host} resolves to non-public address {address}")
    if not addresses:
        raise ForbiddenTarget(f"{host} has no address")
    return addresses[0]
