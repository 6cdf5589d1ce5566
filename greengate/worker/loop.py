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
from greengate.metrics import OUTBOX_BACKLOG, OUTBOX_PRUNED, OUTBOX_RESULTS
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
    throttles,
)
from greengate.services.exchange_orders import CALLBACK, EXPIRE_JOB, assign_waiting_orders, expire_order
from greengate.services.merchants import secret_key, webhook_secret
from greengate.services.rates import refresh_rates
from greengate.services.requisites import requisite_numbers
from greengate.services.saved_cards import CARD_EXPIRE_JOB, CARD_RESULT_CALLBACK
from greengate.store.db import column_values
from greengate.store.models import ExchangeOrder, Merchant, OutboxMessage, Payment
from greengate.worker import (
    attempts,
    card_storage_callbacks,
    merchant_callbacks,
    operation_callbacks,
    payout_jobs,
)
from greengate.worker.deliveries import Deliveries
from greengate.worker.http_delivery import OutgoingRequest
from greengate.worker.merchant_callbacks import MerchantAnswer

log = structlog.get_logger(__name__)
JOB_RETRY = timedelta(seconds=30)
# Outbox rows that are database work only: they run in their own lane, never queued behind an HTTP
# delivery. Every other kind is a delivery.
JOB_KINDS = frozenset(
    {
        EXPIRE_JOB,
        payments.EXPIRE_JOB,
        payments.AUTO_CAPTURE_JOB,
        CARD_EXPIRE_JOB,
        payouts.EXPIRE_JOB,
    }
)


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
        s = rt.settings
        self.deliveries = Deliveries(
            total=s.callback_concurrency,
            per_target=s.callback_target_concurrency,
            per_merchant=s.callback_merchant_concurrency,
        )

    async def run_once(self) -> int:
        """Run the due jobs, then claim due deliveries and run them to the end; returns how many rows
        were taken (a test's drain runs this until nothing is left)."""
        jobs = await self.run_jobs()
        started = await self.start_deliveries()
        renewer = asyncio.create_task(self._keep_claims())
        try:
            await self.deliveries.wait_idle()
        finally:
            renewer.cancel()
            await asyncio.gather(renewer, return_exceptions=True)
        return jobs + started

    async def run_jobs(self) -> int:
        """One batch of the jobs lane (expiry, auto capture): database work only, never behind a
        delivery."""
        s = self.rt.settings
        now = self.clock()
        async with self.rt.db.transaction() as session:
            batch = await outbox.claim_due(
                session,
                worker=self.name,
                now=now,
                limit=s.worker_batch_size,
                claim_for=timedelta(seconds=s.worker_claim_timeout_seconds),
                kinds=JOB_KINDS,
            )
        for message in batch:
            await self._run(message)
        return len(batch)

    async def start_deliveries(self) -> int:
        """Claim as many due deliveries as there is room for and start them; returns how many started."""
        s = self.rt.settings
        room = min(s.worker_batch_size, self.deliveries.room())
        if room <= 0:
            return 0
        now = self.clock()
        busy_merchants, busy_targets = self.deliveries.busy()
        async with self.rt.db.transaction() as session:
            batch = await outbox.claim_due(
                session,
                worker=self.name,
                now=now,
                limit=room,
                claim_for=timedelta(seconds=s.worker_claim_timeout_seconds),
                except_kinds=JOB_KINDS,
                except_merchants=busy_merchants,
                except_targets=busy_targets,
            )
        # A row already under way here came back only because the clock passed its claim: skip it.
        held = set(self.deliveries.held())
        fresh = [m for m in batch if m.id not in held]
        later = [m for m in fresh if not self.deliveries.start(m, self._run)]
        if later:
            # Over this worker's share for their target or merchant: back to the table at once.
            async with self.rt.db.transaction() as session:
                await outbox.unclaim(session, [m.id for m in later], self.name)
        return len(fresh) - len(later)

    async def renew_claims(self) -> None:
        """Keep the claims of the deliveries under way alive while this worker is."""
        held = self.deliveries.held()
        if not held:
            return
        until = self.clock() + timedelta(seconds=self.rt.settings.worker_claim_timeout_seconds)
        async with self.rt.db.transaction() as session:
            kept = await outbox.renew(session, held, self.name, until=until)
        if lost := set(held) - kept:
            log.warning("outbox_claims_lost", worker=self.name, outbox_ids=sorted(lost))

    async def _run(self, message: outbox.ClaimedMessage) -> None:
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
        # The event reports the order as it was in the status it was raised for, even if the order has
        # moved on since.
        reported = dict(column_values(order), status=message.payload["order_status"])
        data = order_wire(reported, number, self.rt.settings.base_url)
        body = dumps(
            {"type": "order.status_changed", "created_at": wire_time(message.created_at), "data": data}
        )
        headers = webhooks.headers(secret or "", message.id, self.clock(), body)
        request = OutgoingRequest("POST", message.target_url or "", headers, content=body)
        sent = await attempts.send(
            self.rt, message, worker=self.name, clock=self.clock, request=request, logged=body.decode()
        )
        if sent is None:
            return
        started, result = sent
        ok = result.status_code is not None and 200 <= result.status_code < 300
        async with self.rt.db.transaction() as session:
            state = await outbox.record_attempt(
                session,
                message,
                started,
                worker=self.name,
                duration_ms=result.duration_ms,
                succeeded=ok,
                status_code=result.status_code,
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
        s = self.rt.settings
        async with self.rt.db.transaction() as session:
            await idempotency.purge_expired(session, now, timedelta(hours=s.idempotency_ttl_hours))
            backlog = await session.scalar(
                select(func.count()).select_from(OutboxMessage).where(OutboxMessage.status == outbox.PENDING)
            )
        OUTBOX_BACKLOG.set(int(backlog or 0))
        keep = max(86_400, 2 * s.auth_failure_window_seconds)
        await throttles.sweep(self.rt.db, now, keep_seconds=keep)
        await self.prune_delivered()

    async def prune_delivered(self, max_batches: int = 20) -> int:
        """Delete delivered rows (and their attempt logs) older than the configured age, one small
        transaction per batch so no lock is held for long; returns how many rows went."""
        s = self.rt.settings
        cutoff = self.clock() - timedelta(hours=s.outbox_keep_delivered_hours)
        total = 0
        for _ in range(max_batches):
            async with self.rt.db.transaction() as session:
                pruned = await outbox.prune_delivered(
                    session, finished_before=cutoff, limit=s.outbox_prune_batch_size
                )
            OUTBOX_PRUNED.inc(pruned)
            total += pruned
            if pruned < s.outbox_prune_batch_size:
                break
        return total

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
        renewer = asyncio.create_task(self._keep_claims())
        try:
            while not stop.is_set():
                for i, (every, job) in enumerate(periodic):
                    if loop.time() - last_run[i] >= every:
                        last_run[i] = loop.time()
                        try:
                            await job()
                        except Exception:
                            log.exception("periodic_job_failed", job=job.__name__)
                try:
                    # Deliveries run in the background: the jobs lane never waits for them.
                    taken = await self.run_jobs() + await self.start_deliveries()
                except Exception:
                    log.exception("outbox_claim_failed")
                    taken = 0
                if taken == 0:
                    await self.deliveries.wait_change(stop, seconds=s.worker_poll_seconds)
        finally:
            # What is under way ends within its deadline; its outcome is logged before we go.
            await self.deliveries.wait_idle()
            renewer.cancel()
            await asyncio.gather(renewer, return_exceptions=True)
        log.info("worker_stopped", worker=self.name)

    async def _keep_claims(self) -> None:
        every = max(0.2, self.rt.settings.worker_claim_timeout_seconds / 3)
        while True:
            await asyncio.sleep(every)
            try:
                await self.renew_claims()
            except Exception:
                log.exception("outbox_renew_failed")
