"""Operator console accounts: argon2-hashed passwords and roles."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from greengate.domain.errors import InvalidRequest, NotFound
from greengate.metrics import THROTTLES_ENGAGED
from greengate.services.audit import record_audit
from greengate.services.throttles import Rule, window_of
from greengate.store import throttles as throttle_store
from greengate.store.models import AdminUser

ROLES = ("admin", "operator", "viewer")
MIN_PASSWORD_LENGTH = 10
# Lockout: this many wrong passwords in a row lock the account for LOCK_DURATION.
MAX_FAILED_LOGINS = 5
LOCK_DURATION = timedelta(minutes=15)
# Counted per (account, address) in the shared throttle counters, in fixed windows of LOCK_DURATION.
LOCK_RULE = Rule("console_lock", MAX_FAILED_LOGINS, int(LOCK_DURATION.total_seconds()))
_hasher = PasswordHasher()
# Verified against when the e-mail is unknown, so a miss costs the same time as a wrong password.
_DUMMY_HASH = _hasher.hash("greengate-no-such-user")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


async def create_admin(
    session: AsyncSession, *, email: str, password: str, role: str, now: datetime, actor: str = "cli"
) -> AdminUser:
    email = email.strip().lower()
    if "@" not in email or len(email) > 200:
        raise InvalidRequest("email must be an e-mail address", field="email")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidRequest(f"password must be at least {MIN_PASSWORD_LENGTH} characters", field="password")
    if role not in ROLES:
        raise InvalidRequest(f"role must be one of {', '.join(ROLES)}", field="role")
    if await session.scalar(select(AdminUser.id).where(AdminUser.email == email)) is not None:
        raise InvalidRequest(f"admin {email} already exists", code="duplicate_admin")
    user = AdminUser(
        email=email,
        password_hash=hash_password(password),
        role=role,
        active=True,
        failed_logins=0,
        created_at=now,
    )
    session.add(user)
    await session.flush()
    await record_audit(
        session,
        actor=actor,
        action="admin.create",
        obj=("admin_user", user.id),
        before=None,
        after={"email": email, "role": role},
        now=now,
    )
    return user


@dataclass(frozen=True)
class LoginOutcome:
    user: AdminUser | None  # set when the password was right and the account may sign in
    locked_until: datetime | None = None  # set when the account is (now) locked


def lock_subject(email: str, address: str) -> str:
    return f"{email.strip().lower()[:200]}|{address}"


async def authenticate(
    session: AsyncSession, *, email: str, password: str, now: datetime, address: str
) -> LoginOutcome:
    """Check a console sign-in. Wrong passwords count towards a lockout of the account *from that
    address* (so nobody elsewhere can lock a real admin out); while it holds, the right password from
    that address is refused too. The caller commits either way."""
    subject = lock_subject(email, address)
    start, left = window_of(LOCK_RULE, now)
    if await throttle_store.hits(session, LOCK_RULE.scope, subject, start) >= MAX_FAILED_LOGINS:
        return LoginOutcome(None, now + timedelta(seconds=left))
    user = await session.scalar(
        select(AdminUser).where(AdminUser.email == email.strip().lower()).with_for_update()
    )
    if user is None or not user.active or not _verify(user.password_hash, password):
        if user is None or not user.active:
            _verify(_DUMMY_HASH, password)
        if await throttle_store.bump(session, LOCK_RULE.scope, subject, start) < MAX_FAILED_LOGINS:
            return LoginOutcome(None)
        locked_until = now + timedelta(seconds=left)
        THROTTLES_ENGAGED.labels(LOCK_RULE.scope).inc()
        if user is not None:
            user.locked_until = max(locked_until, user.locked_until or locked_until)
        await record_audit(
            session,
            actor=f"system:{email.strip().lower()[:100]}",
            action="admin.locked",
            obj=("admin_user", user.id if user is not None else "unknown"),
            before=None,
            after={"locked_until": locked_until, "after_failures": MAX_FAILED_LOGINS, "address": address},
            now=now,
        )
        return LoginOutcome(None, locked_until)
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    await throttle_store.clear(session, LOCK_RULE.scope, subject)
    user.failed_logins, user.last_login_at = 0, now
    return LoginOutcome(user)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _snapshot(user: AdminUser) -> dict[str, object]:
    return {"role": user.role, "active": user.active, "locked_until": user.locked_until}


async def update_admin(
    session: AsyncSession,
    admin_id: int,
    *,
    now: datetime,
    actor: str,
    role: str | None = None,
    active: bool | None = None,
    unlock: bool = False,
) -> AdminUser:
    """Change an account's role, enable or disable it, or lift its lockout."""
    user = await session.scalar(select(AdminUser).where(AdminUser.id == admin_id).with_for_update())
    if user is None:
        raise NotFound(f"admin user {admin_id} not found")
    before = _snapshot(user)
    if role is not None:
        if role not in ROLES:
            raise InvalidRequest(f"role must be one of {', '.join(ROLES)}", field="role")
        user.role = role
    if active is not None:
        user.active = active
    if unlock:
        user.failed_logins, user.locked_until = 0, None
        await throttle_store.clear(session, LOCK_RULE.scope, lock_subject(user.email, ""))
    await record_audit(
        session,
        actor=actor,
        action="admin.unlock" if unlock else "admin.update",
        obj=("admin_user", user.id),
        before=before,
        after=_snapshot(user),
        now=now,
    )
    return user
