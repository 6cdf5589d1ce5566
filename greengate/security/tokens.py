"""Random credentials and how they are stored and compared."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets


def new_api_secret() -> str:
    return "gg_" + secrets.token_urlsafe(32)


def new_secret_key() -> str:
    return secrets.token_urlsafe(24)


def new_webhook_secret() -> str:
    # Standard Webhooks format: "whsec_" + base64 of the raw HMAC key.
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def webhook_key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


def hash_api_secret(secret: str) -> str:
    # API secrets are 256-bit random tokens, so a fast hash suffices and keeps lookups indexable;
    # human passwords use argon2 instead.
    return hashlib.sha256(secret.encode()).hexdigest()


def constant_time_equals(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
