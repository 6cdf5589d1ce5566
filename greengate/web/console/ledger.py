"""The ledger: balances per owner, account and currency, the transaction list, the invariant check."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import select

from greengate.services import ledger
from greengate.store.models import LedgerAccount, LedgerEntry, LedgerTransaction
from greengate.web.console import filters
from greengate.web.console.auth import Console, ConsoleRoute, page
from greengate.web.console.rendering import paginate, render

router = APIRouter(route_class=ConsoleRoute)


@router.get("/admin/ledger")
async def ledger_page(request: Request, console: Console = Depends(page())) -> Response:
    merchant = filters.integer(request, "merchant")
    f = {name: filters.text(request, name) for name in ("merchant", "reason", "object_type", "object_id")}
    stmt = select(LedgerTransaction).order_by(LedgerTransaction.id.desc())
    if f["reason"]:
        stmt = stmt.where(LedgerTransaction.reason == f["reason"])
    if f["object_type"]:
        stmt = stmt.where(LedgerTransaction.object_type == f["object_type"])
    if f["object_id"]:
        stmt = stmt.where(LedgerTransaction.object_id == f["object_id"])
    async with console.rt.db.transaction() as session:
        balances = await ledger.balances(session, merchant)
        checked = await ledger.check_books(session)
        transactions = await paginate(session, stmt, request, size=25)
        ids = [t.id for t in transactions.items]
        rows: Any = (
            await session.execute(
                select(LedgerEntry, LedgerAccount)
                .join(LedgerAccount, LedgerAccount.id == LedgerEntry.account_id)
                .where(LedgerEntry.transaction_id.in_(ids))
                .order_by(LedgerEntry.id)
            )
            if ids
            else []
        )
        entries: dict[int, list[tuple[LedgerEntry, LedgerAccount]]] = {}
        for entry, account in rows:
            entries.setdefault(entry.transaction_id, []).append((entry, account))
    return render(
        request,
        "ledger.html",
        console,
        books=[
            ("live", "Live book", [b for b in balances if b.book == "live"]),
            ("test", "Test book — test payments' money, not real", [b for b in balances if b.book == "test"]),
        ],
        checked=checked,
        problems=[line for lines in checked.values() for line in lines],
        page=transactions,
        entries=entries,
        f=f,
    )
