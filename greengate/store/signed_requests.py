"""Statements for applied signed requests (`signed_requests`): find the first answer, record one."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, bindparam, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from greengate.store.db import table_of
from greengate.store.links import Link, as_link
from greengate.store.merchants import MERCHANTS, Joined, merchant_statement
from greengate.store.models import SignedRequest

_TABLE = table_of(SignedRequest)
_FIND = select(_TABLE.c.answer).where(
    _TABLE.c.merchant_id == bindparam("merchant_id"),
    _TABLE.c.script == bindparam("script"),
    _TABLE.c.digest == bindparam("digest"),
)
# A state-changing script reads the answer its request got already (if it was applied) with its
# merchant: `stored_answer`, bound by `:script` and `:digest`.
STORED_ANSWER = Joined(
    _TABLE,
    and_(
        _TABLE.c.merchant_id == MERCHANTS.c.id,
        _TABLE.c.script == bindparam("script"),
        _TABLE.c.digest == bindparam("digest"),
    ),
    (_TABLE.c.answer.label("stored_answer"),),
)
MERCHANT_AND_ANSWER = merchant_statement(STORED_ANSWER)
_INSERT = insert(_TABLE).values(
    {name: bindparam(name) for name in ("merchant_id", "script", "digest", "answer", "created_at")}
)


async def find_answer(conn: Link | AsyncSession, merchant_id: int, script: str, digest: str) -> str | None:
    row = await as_link(conn).row(_FIND, {"merchant_id": merchant_id, "script": script, "digest": digest})
    return None if row is None else str(row["answer"])


async def record(
    conn: Link | AsyncSession, merchant_id: int, script: str, digest: str, answer: str, now: datetime
) -> None:
    await as_link(conn).execute(
        _INSERT,
        {"merchant_id": merchant_id, "script": script, "digest": digest, "answer": answer, "created_at": now},
    )
