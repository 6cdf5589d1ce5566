"""Operator console sessions, kept as server-side rows.

Why rows rather than signed tokens: a row can be revoked at once (logout, an account disabled,
locked or demoted takes effect on the next request), it carries the session's CSRF token and the
one-shot flash message without growing the cookie, and every `serve` process sees the same state
through the database, with no signing key to distribute or rotate. The cookie holds 256 random
bits; the table stores only their SHA-256, so a read of the table does not yield usable cookies.
A session ends after IDLE_TIMEOUT without requests or ABSOLUTE_TIMEOUT after sign-in.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from greengate.store.models import AdminUser, ConsoleSession

IDLE_TIMEOUT = timedelta(minutes=30)
ABSOLUTE_TIMEOUT = timedelta(hours=12)
# last_seen_at is written at most this often, so browsing does not write on every page.
TOUCH_EVERY = timedelta(seconds=60)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class ActiveSession:
    row: ConsoleSession
    user: AdminUser
    flash: str | None  # the message left by the previous action, now consumed


async def start_session(session: AsyncSession, user: AdminUser, now: datetime) -> str:
    """A new session for a signed-in user; returns the cookie value (shown nowhere else)."""
    await session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at <= now))
    token = secrets.token_urlsafe(32)
    session.add(
        ConsoleSession(
            token_hash=_digest(token),
            admin_user_id=user.id,
            csrf_token=secrets.token_urlsafe(32),
            flash=None,
            created_at=now,
            last_seen_at=now,
            expires_at=now + IDLE_TIMEOUT,
        )
    )
    await session.flush()
    return token


async def load_session(
    session: AsyncSession, token: str | None, now: datetime, *, take_flash: bool
) -> ActiveSession | None:
    """The live session behind a cookie, with its (active) user; None when there is none."""
    if not token or len(token) > 200:
        return None
    found = (
        await session.execute(
            select(ConsoleSession, AdminUser)
            .join(AdminUser, AdminUser.id == ConsoleSession.admin_user_id)
            .where(ConsoleSession.token_hash == _digest(token))
        )
    ).first()
    if found is None:
        return None
    row, user = found
    if row.expires_at <= now or row.created_at + ABSOLUTE_TIMEOUT <= now or not user.active:
        await session.delete(row)
        return None
    flash = row.flash if take_flash else None
    if flash is not None:
        row.flash = None
    if now - row.last_seen_at >= TOUCH_EVERY:
        row.last_seen_at = now
        row.expires_at = min(now + IDLE_TIMEOUT, row.created_at + ABSOLUTE_TIMEOUT)
    return ActiveSession(row, user, flash)


async def set_flash(session: AsyncSession, session_id: int, message: str) -> None:
    row = await session.get(ConsoleSession, session_id)
    if row is not None:
        row.flash = message[:2000]


async def end_session(session: AsyncSession, session_id: int) -> None:
    await session.execute(delete(ConsoleSession).where(ConsoleSession.id == session_id))


async def end_sessions_of(session: AsyncSession, admin_user_id: int) -> None:
    """Sign an account out everywhere (it was disabled or its role changed)."""
    await session.execute(delete(ConsoleSession).where(ConsoleSession.admin_user_id == admin_user_id))
