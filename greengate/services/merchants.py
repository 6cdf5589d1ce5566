"""Merchants and exchange clients: creation, credentials, authentication."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from greengate.domain.bitcoin_address import Network, parse_address
from greengate.domain.errors import InvalidRequest, NotFound
from greengate.security.encryption import Keyring
from greengate.security.tokens import (
    hash_api_secret,
    new_api_secret,
    new_secret_key,
    new_webhook_secret,
)
from greengate.services.audit import record_audit
from greengate.services.callback_targets import validate_callback_url
from greengate.store.models import Merchant

MODES = ("test", "live")


@dataclass(frozen=True)
class MerchantCredentials:
    merchant_id: int
    secret_key: str
    api_secret: str
    payout_secret: str
    webhook_secret: str


def column_aad(merchant_id: int, column: str) -> str:
    return f"merchants:{merchant_id}:{column}"


async def create_merchant(
    session: AsyncSession,
    keyring: Keyring,
    *,
    name: str,
    mode: str,
    now: datetime,
    actor: str = "cli",
) -> tuple[Merchant, MerchantCredentials]:
    name = name.strip()
    if not name:
        raise InvalidRequest("merchant name must not be empty", field="name")
    if mode not in MODES:
        raise InvalidRequest(f"mode must be one of {', '.join(MODES)}", field="mode")
    merchant = Merchant(name=name, mode=mode, active=True, created_at=now, updated_at=now)
    session.add(merchant)
    await session.flush()  # the id is part of each secret's associated data
    creds = _issue_credentials(keyring, merchant)
    await record_audit(
        session,
        actor=actor,
        action="merchant.create",
        obj=("merchant", merchant.id),
        before=None,
        after={"name": name, "mode": mode},
        now=now,
    )
    return merchant, creds


def _issue_credentials(keyring: Keyring, merchant: Merchant) -> MerchantCredentials:
    creds = MerchantCredentials(
        merchant_id=merchant.id,
        secret_key=new_secret_key(),
        api_secret=new_api_secret(),
        payout_secret=new_secret_key(),
        webhook_secret=new_webhook_secret(),
    )
    merchant.api_secret_hash = hash_api_secret(creds.api_secret)
    merchant.secret_key_enc = keyring.encrypt(creds.secret_key, column_aad(merchant.id, "secret_key"))
    merchant.payout_secret_enc = keyring.encrypt(
        creds.payout_secret, column_aad(merchant.id, "payout_secret")
    )
    merchant.webhook_secret_enc = keyring.encrypt(
        creds.webhook_secret, column_aad(merchant.id, "webhook_secret")
    )
    return creds


async def rotate_credentials(
    session: AsyncSession, keyring: Keyring, merchant: Merchant, *, now: datetime, actor: str = "cli"
) -> MerchantCredentials:
    """New secrets for every credential; the old ones stop working when this commits."""
    creds = _issue_credentials(keyring, merchant)
    merchant.updated_at = now
    await record_audit(
        session,
        actor=actor,
        action="merchant.rotate_credentials",
        obj=("merchant", merchant.id),
        before=None,
        after={"rotated": ["secret_key", "api_secret", "payout_secret", "webhook_secret"]},
        now=now,
    )
    return creds


# The active merchant holding an API secret, by the SHA-256 of the secret (a 256-bit token): the
# database compares digests, never the secret. Built once; `api_secret_hash` is bound per use.
ACTIVE_SECRET_OWNER = and_(
    Merchant.api_secret_hash == bindparam("api_secret_hash"), Merchant.active.is_(True)
)
_BY_API_SECRET = select(Merchant).where(ACTIVE_SECRET_OWNER)


def api_secret_digest(api_secret: str) -> str | None:
    """The digest to bind to `ACTIVE_SECRET_OWNER`; None when no secret of that shape can match."""
    if not api_secret or len(api_secret) > 200:
        return None
    return hash_api_secret(api_secret)


async def authenticate_api_secret(session: AsyncSession, api_secret: str) -> Merchant | None:
    digest = api_secret_digest(api_secret)
    if digest is None:
        return None
    return await session.scalar(_BY_API_SECRET, {"api_secret_hash": digest})


async def get_merchant(session: AsyncSession, merchant_id: int, *, lock: bool = False) -> Merchant:
    stmt = select(Merchant).where(Merchant.id == merchant_id)
    if lock:
        stmt = stmt.with_for_update()
    merchant = await session.scalar(stmt)
    if merchant is None:
        raise NotFound(f"merchant {merchant_id} not found", code="unknown_merchant")
    return merchant


def webhook_secret(keyring: Keyring, merchant: Merchant) -> str | None:
    if merchant.webhook_secret_enc is None:
        return None
    return keyring.decrypt(merchant.webhook_secret_enc, column_aad(merchant.id, "webhook_secret"))


def secret_key(keyring: Keyring, merchant: Merchant) -> str:
    assert merchant.secret_key_enc is not None
    return keyring.decrypt_kept(merchant.secret_key_enc, column_aad(merchant.id, "secret_key"))


def payout_secret(keyring: Keyring, merchant: Merchant) -> str:
    assert merchant.payout_secret_enc is not None
    return keyring.decrypt_kept(merchant.payout_secret_enc, column_aad(merchant.id, "payout_secret"))


async def set_request_limit(
    session: AsyncSession, merchant: Merchant, per_minute: int, *, now: datetime, actor: str = "cli"
) -> None:
    """The client's own Exchange API requests a minute: 0 is no limit, a negative value returns it to
    GREENGATE_EXCHANGE_REQUESTS_PER_MINUTE."""
    before = {"exchange_requests_per_minute": merchant.exchange_requests_per_minute}
    merchant.exchange_requests_per_minute = per_minute if per_minute >= 0 else None
    merchant.updated_at = now
    await record_audit(
        session,
        actor=actor,
        action="merchant.request_limit",
        obj=("merchant", merchant.id),
        before=before,
        after={"exchange_requests_per_minute": merchant.exchange_requests_per_minute},
        now=now,
    )


async def update_exchange_settings(
    session: AsyncSession,
    merchant: Merchant,
    *,
    network: Network,
    now: datetime,
    allow_private_callbacks: bool,
    webhook_url: str | None = None,
    default_wallet: str | None = None,
    actor: str = "cli",
) -> Merchant:
    """Set the client's callback URL and default payout wallet ("" clears either)."""
    before = {"webhook_url": merchant.webhook_url, "default_wallet": merchant.default_wallet}
    if webhook_url is not None:
        merchant.webhook_url = (
            validate_callback_url(webhook_url, allow_private=allow_private_callbacks) if webhook_url else None
        )
    if default_wallet is not None:
        if default_wallet:
            try:
                parse_address(default_wallet, network)
            except ValueError as exc:
                raise InvalidRequest(f"default wallet: {exc}", code="invalid_wallet") from None
        merchant.default_wallet = default_wallet or None
    merchant.updated_at = now
    after = {"webhook_url": merchant.webhook_url, "default_wallet": merchant.default_wallet}
    await record_audit(
        session,
        actor=actor,
        action="merchant.update",
        obj=("merchant", merchant.id),
        before=before,
        after=after,
        now=now,
    )
    return merchant


@dataclass(frozen=True)
class MerchantApiSettings:
    """Merchant API defaults; None leaves a setting as it is, "" clears a URL."""

    mode: str | None = None
    active: bool | None = None
    check_url: str | None = None
    result_url: str | None = None
    refund_url: str | None = None
    capture_url: str | None = None
    success_url: str | None = None
    failure_url: str | None = None
    request_method: str | None = None
    check_enabled: bool | None = None


CALLBACK_URL_FIELDS = ("check_url", "result_url", "refund_url", "capture_url")
BROWSER_URL_FIELDS = ("success_url", "failure_url")


async def update_merchant_settings(
    session: AsyncSession,
    merchant: Merchant,
    changes: MerchantApiSettings,
    *,
    now: datetime,
    allow_private_callbacks: bool,
    actor: str = "cli",
) -> Merchant:
    fields = ("mode", "active", *CALLBACK_URL_FIELDS, *BROWSER_URL_FIELDS, "request_method", "check_enabled")
    before = {name: getattr(merchant, name) for name in fields}
    if changes.mode is not None:
        if changes.mode not in MODES:
            raise InvalidRequest(f"mode must be one of {', '.join(MODES)}", field="mode")
        merchant.mode = changes.mode
    if changes.active is not None:
        merchant.active = changes.active
    for name in (*CALLBACK_URL_FIELDS, *BROWSER_URL_FIELDS):
        value = getattr(changes, name)
        if value is None:
            continue
        if value and name in CALLBACK_URL_FIELDS:
            value = validate_callback_url(value, allow_private=allow_private_callbacks)
        elif value:
            value = validate_callback_url(value, allow_private=True)  # the payer's browser goes there
        setattr(merchant, name, value or None)
    if changes.request_method is not None:
        method = changes.request_method.upper()
        if method not in ("GET", "POST", "XML"):
            raise InvalidRequest("request method must be GET, POST or XML", field="request_method")
        merchant.request_method = method
    if changes.check_enabled is not None:
        merchant.check_enabled = changes.check_enabled
    merchant.updated_at = now
    await record_audit(
        session,
        actor=actor,
        action="merchant.update",
        obj=("merchant", merchant.id),
        before=before,
        after={name: getattr(merchant, name) for name in fields},
        now=now,
    )
    return merchant
