"""Idempotency keys: a retried create gets the first response, never a second effect.

The key row is written in the business transaction. On PostgreSQL a transaction-scoped advisory
lock on the key tells a concurrent duplicate (409) from a later retry (stored response); SQLite
runs one writer at a time, so a duplicate always sees the first one's outcome.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import BigInteger, bindparam, delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from greengate.domain.errors import BusinessRuleViolation, Conflict, InvalidRequest
from greengate.store.db import table_of
from greengate.store.links import Link, as_link
from greengate.store.models import IdempotencyRecord

MAX_KEY_LENGTH = 200


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: str


def request_fingerprint(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + body).hexdigest()


def validate_key(key: str) -> str:
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise InvalidRequest(
            f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} printable characters", code="invalid_idempotency_key"
        )
    return key


_RECORD = table_of(IdempotencyRecord)
_FIND = select(_RECORD.c.request_hash, _RECORD.c.response_status, _RECORD.c.response_body).where(
    _RECORD.c.merchant_id == bindparam("merchant_id"),
    _RECORD.c.scope == bindparam("scope"),
    _RECORD.c.key == bindparam("key"),
)
_TRY_LOCK = select(func.pg_try_advisory_xact_lock(bindparam("lock_id", type_=BigInteger)).label("locked"))
_INSERT = insert(_RECORD).values(
    {name: bindparam(name) for name in ("merchant_id", "scope", "key", "request_hash", "response_status")}
    | {"response_body": bindparam("response_body"), "created_at": bindparam("created_at")}
)


async def lookup(
    conn: Link | AsyncSession, merchant_id: int, scope: str, key: str, fingerprint: str
) -> StoredResponse | None:
    link = as_link(conn)
    if link.dialect == "postgresql":
        digest = hashlib.sha256(f"{merchant_id}:{scope}:{key}".encode()).digest()
        got = await link.row(_TRY_LOCK, {"lock_id": int.from_bytes(digest[:8], "big", signed=True)})
        if got is None or not got["locked"]:
            raise Conflict(
                "a request with this Idempotency-Key is still being processed", code="idempotency_in_progress"
            )
    row = await link.row(_FIND, {"merchant_id": merchant_id, "scope": scope, "key": key})
    if row is None:
        return None
    if row["request_hash"] != fingerprint:
        raise BusinessRuleViolation(
            "this Idempotency-Key was used with a different request", code="idempotency_mismatch"
        )
    return StoredResponse(row["response_status"], row["response_body"])


async def remember(
    conn: Link | AsyncSession,
    merchant_id: int,
    scope: str,
    key: str,
    fingerprint: str,
    response: StoredResponse,
    now: datetime,
) -> None:
    await as_link(conn).execute(
        _INSERT,
        {
            "merchant_id": merchant_id,
            "scope": scope,
            "key": key,
            "request_hash": fingerprint,
            "response_status": response.status,
            "response_body": response.body,
            "created_at": now,
        },
    )


async def purge_expired(session: AsyncSession, now: datetime, ttl: timedelta) -> int:
    result = await session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.created_at < now - ttl))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
