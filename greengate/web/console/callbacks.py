"""Callback deliveries: the log of every attempt with request and response bodies (card numbers
masked), and redelivery of one or many callbacks through `outbox.requeue`."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncSession

from greengate.clock import utcnow
from greengate.services import outbox
from greengate.services.audit import record_audit
from greengate.store.models import DeliveryAttempt, OutboxMessage
from greengate.web.console import filters
from greengate.web.console.auth import Console, ConsoleRoute, action, page, perform
from greengate.web.console.rendering import paginate, render

router = APIRouter(route_class=ConsoleRoute)
STATUSES = (outbox.PENDING, outbox.DONE, outbox.DEAD, "failing")
MAX_REDELIVER = 500


def _is_callback() -> ColumnElement[bool]:
    # Callbacks go somewhere; scheduled jobs (expiry, payouts) in the same table have no target.
    return OutboxMessage.target_url.is_not(None)


@router.get("/admin/callbacks")
async def callback_list(request: Request, console: Console = Depends(page())) -> Response:
    f = {name: filters.text(request, name) for name in ("status", "merchant", "kind", "aggregate")}
    stmt = select(OutboxMessage).where(_is_callback()).order_by(OutboxMessage.id.desc())
    if f["status"] == "failing":
        stmt = stmt.where(OutboxMessage.status == outbox.PENDING, OutboxMessage.attempts > 0)
    elif f["status"] in STATUSES:
        stmt = stmt.where(OutboxMessage.status == f["status"])
    if (merchant := filters.integer(request, "merchant")) is not None:
        stmt = stmt.where(OutboxMessage.merchant_id == merchant)
    if f["kind"]:
        stmt = stmt.where(OutboxMessage.kind == f["kind"])
    if f["aggregate"]:
        stmt = stmt.where(OutboxMessage.aggregate == f["aggregate"])
    async with console.rt.db.transaction() as session:
        rows = await paginate(session, stmt, request)
    return render(request, "callbacks.html", console, page=rows, f=f, statuses=STATUSES)


@router.get("/admin/callbacks/{message_id}")
async def callback_page(message_id: int, request: Request, console: Console = Depends(page())) -> Response:
    async with console.rt.db.transaction() as session:
        message = await session.scalar(
            select(OutboxMessage).where(OutboxMessage.id == message_id, _is_callback())
        )
        if message is None:
            return render(request, "not_found.html", console, status_code=404, what=f"callback {message_id}")
        attempts = list(
            await session.scalars(
                select(DeliveryAttempt)
                .where(DeliveryAttempt.outbox_id == message_id)
                .order_by(DeliveryAttempt.id)
            )
        )
    return render(request, "callback.html", console, message=message, attempts=attempts)


async def _redeliver(session: AsyncSession, console: Console, ids: list[int]) -> str:
    wanted = sorted(set(ids))[:MAX_REDELIVER]
    callbacks = list(
        await session.scalars(select(OutboxMessage.id).where(OutboxMessage.id.in_(wanted), _is_callback()))
    )
    now = utcnow()
    count = await outbox.requeue(session, callbacks, now) if callbacks else 0
    await record_audit(
        session,
        actor=console.actor,
        action="callback.redeliver",
        obj=("outbox", ",".join(map(str, callbacks))[:60] or "-"),
        before=None,
        after={"requested": callbacks, "requeued": count},
        now=now,
    )
    skipped = len(wanted) - count
    note = f" ({skipped} still pending or unknown, left as they are)" if skipped else ""
    return f"{count} callback(s) queued for redelivery{note}."


@router.post("/admin/callbacks/redeliver")
async def callback_redeliver_many(console: Console = Depends(action("callbacks"))) -> Response:
    ids = [int(v) for v in console.values("ids") if (v.isascii() and v.isdigit()) and len(v) < 19]

    async def work(session: AsyncSession) -> str:
        return await _redeliver(session, console, ids)

    back = console.value("back")
    return await perform(console, work, back if back.startswith("/admin/callbacks") else "/admin/callbacks")


@router.post("/admin/callbacks/{message_id}/redeliver")
async def callback_redeliver(message_id: int, console: Console = Depends(action("callbacks"))) -> Response:
    async def work(session: AsyncSession) -> str:
        return await _redeliver(session, console, [message_id])

    return await perform(console, work, f"/admin/callbacks/{message_id}")
