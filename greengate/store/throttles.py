"""SQL for the throttle counters: one row per (scope, subject, fixed window), bumped atomically."""

from __future__ import annotations

from sqlalchemy import Table, delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from greengate.store.db import dialect_name
from greengate.store.models import Merchant, ThrottleCounter

T: Table = ThrottleCounter.__table__  # type: ignore[assignment]


async def bump(session: AsyncSession, scope: str, subject: str, window_start: int, by: int = 1) -> int:
    """Add `by` hits and return the window's hits: one INSERT ... ON CONFLICT DO UPDATE, so concurrent
    processes (and nodes on PostgreSQL) never lose a hit."""
    insert = pg_insert if dialect_name(session) == "postgresql" else sqlite_insert
    stmt = (
        insert(T)
        .values(scope=scope, subject=subject, window_start=window_start, hits=by)
        .on_conflict_do_update(
            index_elements=[T.c.scope, T.c.subject, T.c.window_start], set_={"hits": T.c.hits + by}
        )
        .returning(T.c.hits)
    )
    return int((await session.execute(stmt)).scalar_one())


async def hits(session: AsyncSession, scope: str, subject: str, window_start: int) -> int:
    value = await session.scalar(
        select(T.c.hits).where(T.c.scope == scope, T.c.subject == subject, T.c.window_start == window_start)
    )
    return int(value or 0)


async def subjects_at_least(
    session: AsyncSession, scope: str, prefix: str, window_start: int, at_least: int
) -> list[str]:
    rows = await session.scalars(
        select(T.c.subject).where(
            T.c.scope == scope,
            func.substr(T.c.subject, 1, len(prefix)) == prefix,
            T.c.window_start == window_start,
            T.c.hits >= at_least,
        )
    )
    return list(rows)


async def clear(session: AsyncSession, scope: str, prefix: str) -> None:
    await session.execute(
        delete(T).where(T.c.scope == scope, func.substr(T.c.subject, 1, len(prefix)) == prefix)
    )


async def sweep(session: AsyncSession, older_than: int) -> None:
    """Forget windows that ended before `older_than` (epoch seconds)."""
    await session.execute(delete(T).where(T.c.window_start < older_than))


async def client_request_limit(session: AsyncSession, api_secret_hash: str) -> tuple[int, int | None] | None:
    """(client id, its own requests-a-minute setting) of the client holding the secret."""

    row = (
        await session.execute(
            select(Merchant.id, Merchant.exchange_requests_per_minute).where(
                Merchant.api_secret_hash == api_secret_hash
            )
        )
    ).first()
    return None if row is None else (int(row[0]), row[1])
