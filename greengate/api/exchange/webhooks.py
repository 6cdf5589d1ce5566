"""Exchange callbacks on the wire: Standard Webhooks headers with an HMAC-SHA256 signature."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime

from greengate.security.tokens import webhook_key


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(webhook_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, outbox_id: int, now: datetime, body: bytes) -> dict[str, str]:
    message_id = f"msg_{outbox_id}"  # stable across retries so receivers can deduplicate
    timestamp = int(now.timestamp())
    return {
        "Content-Type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, message_id, timestamp, body),
        "User-Agent": "greengate-webhooks/1",
    }


def verify(secret: str, headers_: dict[str, str], body: bytes) -> bool:
    expected = sign(secret, headers_["webhook-id"], int(headers_["webhook-timestamp"]), body)
    return any(hmac.compare_digest(expected, given) for given in headers_["webhook-signature"].split())
