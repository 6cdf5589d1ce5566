"""Callback delivery against endpoints that misbehave: a dribbling answer holds only its own
delivery, a huge answer is cut without being downloaded, and short claims with timing-out endpoints
never make two workers send one callback twice. Delivered rows are pruned by age."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select, update

from greengate.clock import utcnow
from greengate.runtime import Runtime
from greengate.services.exchange_orders import CALLBACK, EXPIRE_JOB
from greengate.settings import Settings
from greengate.store.models import DeliveryAttempt, ExchangeOrder, OutboxMessage
from greengate.worker.http_delivery import MAX_RESPONSE_BYTES, OutgoingRequest, deliver
from greengate.worker.loop import Worker
from tests.support.exchange import create_order, load_order, make_client, make_direction, make_requisites
from tests.support.hostile import Dribbler, Flood, Silent
from tests.support.servers import Receiver


async def new_order(app_client: httpx.AsyncClient, who: object) -> int:
    response = await create_order(app_client, who)  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    return int(response.json()["items"][0]["order_id"])


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within: float = 60.0) -> None:
    """Poll `check` until it holds; the bound is generous and only there to end a broken run."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.05)


async def rows(rt: Runtime, kind: str = CALLBACK) -> list[OutboxMessage]:
    async with rt.db.transaction() as session:
        return list(
            await session.scalars(
                select(OutboxMessage).where(OutboxMessage.kind == kind).order_by(OutboxMessage.id)
            )
        )


async def all_attempts(rt: Runtime) -> list[DeliveryAttempt]:
    async with rt.db.transaction() as session:
        return list(await session.scalars(select(DeliveryAttempt).order_by(DeliveryAttempt.id)))


@pytest.fixture
async def worker_runtime(settings: Settings, app_client: httpx.AsyncClient) -> AsyncIterator[Runtime]:
    """A worker's own runtime that waits a long time for an answer: the dribbler is never cut off
    while the test looks at what else goes on."""
    runtime = Runtime.create(settings.model_copy(update={"callback_timeout_seconds": 300.0}))
    yield runtime
    await runtime.close()


async def test_a_dribbling_endpoint_holds_neither_other_callbacks_nor_expiry(
    app_client: httpx.AsyncClient, rt: Runtime, worker_runtime: Runtime
) -> None:
    with Dribbler(every=0.2) as dribbler, Receiver() as fast_receiver:
        slow = await make_client(rt, "Slow office", webhook_url=dribbler.url)
        fast = await make_client(rt, "Fast office", webhook_url=fast_receiver.url)
        quiet = await make_client(rt, "Quiet office")
        await make_direction(rt)
        await make_requisites(rt, 3)
        stop = asyncio.Event()
        running = asyncio.create_task(Worker(worker_runtime, name="w").run(stop))
        try:
            slow_order = await new_order(app_client, slow)
            await asyncio.to_thread(dribbler.wait_requests, 1)
            # The attempt is on record while its answer is still coming in.
            [under_way] = await all_attempts(rt)
            assert (under_way.finished_at, under_way.succeeded, under_way.attempt) == (None, False, 1)
            assert f'"order_id":"{slow_order}"' in under_way.request_body.replace(" ", "")

            stale = await new_order(app_client, quiet)
            past = utcnow() - timedelta(seconds=1)
            async with rt.db.transaction() as session:
                await session.execute(
                    update(ExchangeOrder).where(ExchangeOrder.id == stale).values(expires_at=past)
                )
                await session.execute(
                    update(OutboxMessage)
                    .where(OutboxMessage.kind == EXPIRE_JOB, OutboxMessage.aggregate == f"order:{stale}")
                    .values(due_at=past)
                )
            fast_order = await new_order(app_client, fast)

            await asyncio.to_thread(fast_receiver.server.wait_for, lambda seen: len(seen) == 1, 60.0)

            async def expired() -> bool:
                return (await load_order(rt, stale)).status == "autocanceled"

            await eventually(expired, "the stale order is autocanceled")
            # Both happened while the slow endpoint was still being served its first answer.
            assert dribbler.open_requests == 1 and dribbler.requests == 1
            assert fast_receiver.requests[0].json()["data"]["order_id"] == str(fast_order)
            assert [a.finished_at for a in await all_attempts(rt) if a.outbox_id == under_way.outbox_id] == [
                None
            ]
        finally:
            dribbler.release.set()
            stop.set()
            await asyncio.wait_for(running, timeout=60)
    [slow_attempt] = [a for a in await all_attempts(rt) if a.outbox_id == under_way.outbox_id]
    assert slow_attempt.finished_at is not None and not slow_attempt.succeeded and slow_attempt.error


async def test_a_huge_answer_is_cut_at_the_limit_and_not_downloaded(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    with Flood(size=400_000_000) as flood:
        outcome = await deliver(
            rt.http,
            OutgoingRequest("POST", flood.url, {"Content-Type": "application/json"}, content=b"{}"),
            allow_private=True,
            deadline=60.0,
        )
        assert outcome.status_code == 200 and outcome.error is None
        assert outcome.body == "<" * MAX_RESPONSE_BYTES

        who = await make_client(rt, webhook_url=flood.url)
        await make_direction(rt)
        await make_requisites(rt, 1)
        await new_order(app_client, who)
        worker = Worker(rt, name="w")
        while await worker.run_once():
            pass
        assert flood.requests == 2
    # Both times the connection was dropped after the limit: what the endpoint got out before it
    # noticed is what fits in the sockets' buffers, a small part of the 400 MB.
    assert flood.bytes_sent < 2 * 20_000_000, flood.bytes_sent
    [message] = await rows(rt)
    [attempt] = await all_attempts(rt)
    assert (message.status, attempt.succeeded, attempt.status_code) == ("done", True, 200)
    assert set(attempt.response_body) == {"<"}


@pytest.fixture
async def short_claim_runtimes(
    settings: Settings, app_client: httpx.AsyncClient
) -> AsyncIterator[list[Runtime]]:
    """Two workers whose claims (1 s) are shorter than one delivery's deadline (2.5 s)."""
    short = settings.model_copy(
        update={
            "worker_claim_timeout_seconds": 1,
            "callback_timeout_seconds": 2.5,
            "callback_retry_schedule": [3600],
        }
    )
    runtimes = [Runtime.create(short) for _ in range(2)]
    yield runtimes
    for runtime in runtimes:
        await runtime.close()


async def test_two_workers_with_short_claims_send_each_callback_once_and_log_every_send(
    app_client: httpx.AsyncClient, rt: Runtime, short_claim_runtimes: list[Runtime]
) -> None:
    silent = [Silent() for _ in range(6)]
    with Receiver() as healthy, silent[0], silent[1], silent[2], silent[3], silent[4], silent[5]:
        await make_direction(rt)
        await make_requisites(rt, 12)
        for i, endpoint in enumerate(silent):
            await new_order(app_client, await make_client(rt, f"Dead office {i}", webhook_url=endpoint.url))
        good = await make_client(rt, "Healthy office", webhook_url=healthy.url)
        good_orders = [await new_order(app_client, good) for _ in range(6)]

        stop = asyncio.Event()
        workers = [Worker(r, name=f"w{i}") for i, r in enumerate(short_claim_runtimes)]
        running = [asyncio.create_task(w.run(stop)) for w in workers]
        try:

            async def settled() -> bool:
                messages = await rows(rt)
                logged = await all_attempts(rt)
                return (
                    all(m.attempts >= 1 for m in messages)
                    and all(a.finished_at is not None for a in logged)
                    and len(healthy.requests) >= 6
                )

            await eventually(settled, "every callback attempted once and every attempt finished")
            # Longer than several claims: a duplicate send would show up now.
            await asyncio.sleep(3.0)
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*running), timeout=60)
        sent_to_silent = sum(endpoint.requests for endpoint in silent)

    hits = Counter(r.headers["webhook-id"] for r in healthy.requests)
    assert len(hits) == 6 and set(hits.values()) == {1}, hits
    assert sorted(int(r.json()["data"]["order_id"]) for r in healthy.requests) == good_orders
    messages = await rows(rt)
    logged = await all_attempts(rt)
    # Every request that left the gateway is on record, and nothing is on record twice.
    assert len(logged) == sent_to_silent + 6 == 12
    per_message = Counter(a.outbox_id for a in logged)
    assert all(per_message[m.id] == m.attempts == 1 for m in messages)
    assert sorted((a.succeeded, a.error) for a in logged) == [(False, "timeout")] * 6 + [(True, None)] * 6


def pruned_total() -> float:
    return REGISTRY.get_sample_value("greengate_outbox_pruned_total") or 0.0


async def test_delivered_rows_and_their_logs_are_pruned_by_age_in_batches(
    app_client: httpx.AsyncClient, settings: Settings, rt: Runtime
) -> None:
    with Receiver() as receiver:
        receiver.script[:] = [500]  # the first order's callback fails once, then goes through
        who = await make_client(rt, webhook_url=receiver.url)
        await make_direction(rt)
        await make_requisites(rt, 7)
        for _ in range(7):
            await new_order(app_client, who)
        worker = Worker(rt, name="w")
        for _ in range(20):
            await worker.run_once()
            if all(m.status == "done" for m in await rows(rt)):
                break
            async with rt.db.transaction() as session:  # the retry is due at once
                await session.execute(
                    update(OutboxMessage).where(OutboxMessage.kind == CALLBACK).values(due_at=utcnow())
                )
    messages = await rows(rt)
    assert [m.status for m in messages] == ["done"] * 7
    assert sorted(m.attempts for m in messages) == [1] * 6 + [2]
    assert len(await all_attempts(rt)) == 8
    now = utcnow()
    old, recent = messages[:5], messages[5:]
    async with rt.db.transaction() as session:
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_([m.id for m in old]))
            .values(finished_at=now - timedelta(days=8))
        )
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == recent[0].id)
            .values(status="dead", finished_at=now - timedelta(days=30))
        )
    expiry_jobs = await rows(rt, EXPIRE_JOB)
    pruner = Worker(
        Runtime(
            settings.model_copy(update={"outbox_keep_delivered_hours": 24, "outbox_prune_batch_size": 2}),
            rt.db,
            rt.keyring,
            rt.http,
        ),
        name="pruner",
    )
    before = pruned_total()
    await pruner.housekeeping()

    assert pruned_total() - before == 5
    left = await rows(rt)
    assert [m.id for m in left] == [m.id for m in recent]  # the failed one stays for the operator
    assert {a.outbox_id for a in await all_attempts(rt)} == {m.id for m in recent}
    assert [m.id for m in await rows(rt, EXPIRE_JOB)] == [m.id for m in expiry_jobs]  # pending jobs stay
    assert await pruner.prune_delivered() == 0
