"""The worker: runs due outbox rows (callbacks, TTL expiry) and periodic jobs (rates, allocation).

Any number of workers may run against PostgreSQL; they coordinate only through the database.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from functools import partial

import structlog
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from greengate.api.exchange import webhooks
from greengate.api.exchange.wire import dumps, order_wire, wire_time
from greengate.clock import utcnow
from greengate.domain.exchange import OrderStatus
from greengate.metrics import OUTBOX_BACKLOG, OUTBOX_RESULTS
from greengate.runtime import Runtime
from greengate.services import (
    captures,
    idempotency,
    outbox,
    payment_flow,
    payments,
    payouts,
    recurring,
    refunds,
)
from greengate.services.exchange_orders import CALLBACK, EXPIRE_JOB, assign_waiting_orders, expire_order
from greengate.services.merchants import secret_key, webhook_secret
from greengate.services.rates import refresh_rates
from greengate.services.requisites import requisite_numbers
from greengate.services.saved_cards import CARD_EXPIRE_JOB, CARD_RESULT_CALLBACK
from greengate.store.db import column_values
from greengate.store.models import ExchangeOrder, Merchant, OutboxMessage, Payment
from greengate.worker import card_storage_callbacks, merchant_callbacks, operation_callbacks, payout_jobs
from greengate.worker.http_delivery import deliver
from greengate.worker.merchant_callbacks import MerchantAnswer

log = structlog.get_logger(__name__)
JOB_RETRY = timedelta(seconds=30)


class Worker:
    def __init__(
        self, rt: Runtime, *, name: str | None = None, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.rt = rt
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.clock = clock
        self._handlers: dict[str, Callable[[outbox.ClaimedMessage], Awaitable[None]]] = {
            EXPIRE_JOB: self._expire,
            CALLBACK: self._exchange_callback,
            payments.EXPIRE_JOB: self._expire_payment,
            payments.CHECK_CALLBACK: self._merchant_callback,
            payments.RESULT_CALLBACK: self._merchant_callback,
            refunds.REFUND_CALLBACK: self._operation_callback,
            captures.CAPTURE_CALLBACK: self._operation_callback,
            payments.AUTO_CAPTURE_JOB: self._auto_capture,
            CARD_RESULT_CALLBACK: self._card_result_callback,
            CARD_EXPIRE_JOB: self._expire_card_page,
            payouts.RESULT_CALLBACK: partial(payout_jobs.deliver_result, self),
            payouts.EXPIRE_JOB: partial(payout_jobs.expire, self),
        }

    async def run_once(self) -> int:
        """Claim one batch of due rows and run them; returns how many were claimed."""
        s = self.rt.settings
        now = self.clock()
        async with self.rt.db.transaction() as session:
            batch = await outbox.claim_due(
                session,
                worker=self.name,
                now=now,
                limit=s.worker_batch_size,
                claim_for=timedelta(seconds=s.worker_claim_timeout_seconds),
            )
        for message in batch:
            handler = self._handlers.get(message.kind)
            try:
                if handler is None:
                    raise RuntimeError(f"no handler for outbox kind {message.kind}")
                await handler(message)
            except Exception as exc:
                log.exception("outbox_job_failed", outbox_id=message.id, kind=message.kind)
                async with self.rt.db.transaction() as session:
                    await outbox.release(
                        session,
                        message.id,
                        self.name,
                        retry_at=self.clock() + JOB_RETRY,
                        error=repr(exc)[:2000],
                    )
        return len(batch)

    async def _expire(self, message: outbox.ClaimedMessage) -> None:
        now = self.clock()
        async with self.rt.db.transaction() as session:
            await expire_order(session, self.rt, int(message.payload["order_id"]), now)
            await outbox.complete(session, message.id, self.name, now)

    async def _expire_payment(self, message: outbox.ClaimedMessage) -> None:
        now = self.clock()
        async with self.rt.db.transaction() as session:
            await payments.expire_payment(session, int(message.payload["payment_id"]), now)
            await outbox.complete(session, message.id, self.name, now)

    async def _merchant_callback(self, message: outbox.ClaimedMessage) -> None:
        is_check = message.kind == payments.CHECK_CALLBACK
        payment_id = int(message.payload["payment_id"])
        status = str(message.payload.get("status", ""))
        # Only the first delivery of a success may be rejected (the merchant then gets its money back).
        can_reject = not is_check and status == "ok" and message.attempts == 0
        async with self.rt.db.transaction() as session:
            payment = await session.get(Payment, payment_id)
            merchant = await session.get(Merchant, message.merchant_id)
            assert payment is not None and merchant is not None
            attempt = await payments.latest_attempt(session, payment_id)
            secret = secret_key(self.rt.keyring, merchant)
            profile = None
            if not is_check and payment.recurring_start:
                profile = await recurring.profile_of_payment(session, payment_id)
        params = merchant_callbacks.callback_params(
            payment,
            attempt,
            kind="check" if is_check else "result",
            result=None if is_check else merchant_callbacks.result_flag(status),
            can_reject=can_reject,
        )
        if profile is not None:
            params += [
                ("pg_recurring_profile_id", str(profile.id)),
                ("pg_recurring_profile_expiry_date", wire_time(profile.expires_at)),
            ]

        async def after(session: AsyncSession, answer: MerchantAnswer, now: datetime) -> None:
            if is_check:
                accepted = answer.delivered and answer.status == "ok"
                reason = answer.description or answer.error or "rejected by the merchant's check"
                await payment_flow.on_check_answer(
                    session, payment_id, accepted=accepted, reason=reason, now=now
                )
            elif answer.delivered:
                await payments.mark_result_delivered(session, payment_id)
                if answer.status == "rejected" and can_reject:
                    await payment_flow.refund_rejected_result(
                        session, payment_id, reason=answer.description or "rejected", now=now
                    )

        await merchant_callbacks.deliver_message(
            self.rt,
            message,
            worker=self.name,
            clock=self.clock,
            method=payment.request_method,
            params=params,
            secret=secret,
            # A check is asked once: no answer in time counts as a refusal.
            retry_schedule=[] if is_check else None,
            after=after,
        )

    async def _card_result_callback(self, message: outbox.ClaimedMessage) -> None:
        await card_storage_callbacks.deliver_card_result(self.rt, message, worker=self.name, clock=self.clock)

    async def _expire_card_page(self, message: outbox.ClaimedMessage) -> None:
        await card_storage_callbacks.expire_card_page(self.rt, message, worker=self.name, clock=self.clock)

    async def _operation_callback(self, message: outbox.ClaimedMessage) -> None:
        await operation_callbacks.deliver(self.rt, message, worker=self.name, clock=self.clock)

    async def _auto_capture(self, message: outbox.ClaimedMessage) -> None:
        now = self.clock()
        async with self.rt.db.transaction() as session:
            await captures.auto_capture(session, int(message.payload["payment_id"]), now)
            await outbox.complete(session, message.id, self.name, now)

    async def _exchange_callback(self, message: outbox.ClaimedMessage) -> None:
        async with self.rt.db.transaction() as session:
            merchant = await session.get(Merchant, message.merchant_id)
            order = await session.get(ExchangeOrder, int(message.payload["order_id"]))
            assert merchant is not None and order is not None
            numbers = await requisite_numbers(session, self.rt.keyring, {order.requisite_id} - {None})  # type: ignore[arg-type]
            secret = webhook_secret(self.rt.keyring, merchant)
        number = numbers.get(order.requisite_id or 0, "")
        data = order_wire(column_values(order), number, self.rt.settings.base_url)
        # The event reports the status it was raised for, even if the order has moved on since.
        data["order_status"] = message.payload["order_status"]
        body = dumps(
            {"type": "order.status_changed", "created_at": wire_time(message.created_at), "data": data}
        )
        started = self.clock()
        headers = webhooks.headers(secret or "", message.id, started, body)
        result = await deliver(
            self.rt.http,
            method="POST",
            url=message.target_url or "",
            headers=headers,
            content=body,
            allow_private=self.rt.settings.callback_allow_private,
        )
        ok = result.status_code is not None and 200 <= result.status_code < 300
        async with self.rt.db.transaction() as session:
            state = await outbox.record_attempt(
                session,
                message,
                worker=self.name,
                started_at=started,
                duration_ms=result.duration_ms,
                succeeded=ok,
                status_code=result.status_code,
                request_body=body.decode(),
                response_body=result.body,
                error=result.error,
                retry_schedule=self.rt.settings.callback_retry_schedule,
                now=self.clock(),
            )
        OUTBOX_RESULTS.labels(kind=message.kind, outcome=state).inc()

    async def refresh_rates(self) -> None:
        await refresh_rates(self.rt, self.clock())

    async def assign_requisites(self) -> int:
        """Backstop for allocation: unconfirmed orders get requisites freed by any route."""
        now = self.clock()
        async with self.rt.db.transaction() as session:
            methods = list(
                await session.scalars(
                    select(ExchangeOrder.payment_method)
                    .where(ExchangeOrder.status == OrderStatus.UNCONFIRMED.value)
                    .distinct()
                )
            )
        total = 0
        for method in methods:
            async with self.rt.db.transaction() as session:
                total += await assign_waiting_orders(session, self.rt, method, now)
        return total

    async def housekeeping(self) -> None:
        now = self.clock()
        async with self.rt.db.transaction() as session:
            await idempotency.purge_expired(
                session, now, timedelta(hours=self.rt.settings.idempotency_ttl_hours)
            )
            backlog = await session.scalar(
                select(func.count()).select_from(OutboxMessage).where(OutboxMessage.status == outbox.PENDING)
            )
        OUTBOX_BACKLOG.set(int(backlog or 0))

    async def run(self, stop: asyncio.Event) -> None:
        s = self.rt.settings
        log.info("worker_started", worker=self.name)
        periodic: list[tuple[float, Callable[[], Awaitable[object]]]] = [
            (float(s.rate_refresh_seconds), self.refresh_rates),
            (5.0, self.assign_requisites),
            (30.0, self.housekeeping),
        ]
        last_run = [float("-inf")] * len(periodic)
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            for i, (every, job) in enumerate(periodic):
                if loop.time() - last_run[i] >= every:
                    last_run[i] = loop.time()
                    try:
                        await job()
                    except Exception:
                        log.exception("periodic_job_failed", job=job.__name__)
            try:
                claimed = await self.run_once()
            except Exception:
                log.exception("outbox_claim_failed")
                claimed = 0
            if claimed == 0:
                try:
                    await asyncio.wait_for(stop.wait(), timeout=s.worker_poll_seconds)
                except TimeoutError:
                    pass
        log.info("worker_stopped", worker=self.name)
