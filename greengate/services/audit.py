"""Audit log: who changed what, with the state before and after."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from greengate.store.models import AuditEvent


async def record_audit(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    obj: tuple[str, object],
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    now: datetime,
) -> None:
    session.add(
        AuditEvent(
            actor=actor,
            action=action,
            object_type=obj[0],
            object_id=str(obj[1]),
            before=None if before is None else json.dumps(before, default=str, ensure_ascii=False),
            after=None if after is None else json.dumps(after, default=str, ensure_ascii=False),
            at=now,
        )
    )
