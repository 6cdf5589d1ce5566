"""Operator console accounts: argon2-hashed passwords and roles."""

from __future__ import annotations

from datetime import datetime

from argon2 import PasswordHasher
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from greengate.domain.errors import InvalidRequest
from greengate.services.audit import record_audit
from greengate.store.models import AdminUser

ROLES = ("admin", "operator", "viewer")
MIN_PASSWORD_LENGTH = 10
_hasher = PasswordHasher()


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
