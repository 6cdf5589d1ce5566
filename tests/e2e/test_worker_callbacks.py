"""The worker delivering exchange callbacks from the outbox to a real HTTP receiver, and its jobs."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, update

from greengate.api.exchange import webhooks
from greengate.app import create_app
from greengate.clock import utcnow
from greengate.runtime import Runtime
from greengate.services.exchange_orders import CALLBACK, EXPIRE_JOB, complete_order, confirm_paid
from greengate.services.requisites import set_requisite_active
from greengate.settings import Settings
from greengate.store.models import DeliveryAttempt, ExchangeOrder, OrderEvent, OutboxMessage
from greengate.worker.loop import Worker
from tests.conftest import make_settings
from tests.support.exchange import Client, check, create_order, make_client, make_direction, make_requisites
from tests.support.servers import Receiver, Recorded, callback_events

TXID = "a1" * 32


class Clock:
    """A worker clock the test moves by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


async def drain(worker: Worker, limit: int = 100) -> int:
    """run_once until nothing due is left; returns how many rows were claimed in total."""
    total = 0
    for _ in range(limit):
        claimed = await worker.run_once()
        if claimed == 0:
            return total
        total += claimed
    raise AssertionError("the worker never became idle")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


async def outbox_rows(rt: Runtime, kind: str = CALLBACK) -> list[OutboxMessage]:
    async with rt.db.transaction() as session:
        return list(
            await session.scalars(
                select(OutboxMessage).where(OutboxMessage.kind == kind).order_by(OutboxMessage.id)
            )
        )


async def attempts_of(rt: Runtime, outbox_id: int) -> list[DeliveryAttempt]:
    async with rt.db.transaction() as session:
        return list(
            await session.scalars(
                select(DeliveryAttempt)
                .where(DeliveryAttempt.outbox_id == outbox_id)
                .order_by(DeliveryAttempt.attempt)
            )
        )


async def new_order(app_client: httpx.AsyncClient, who: Client, amount: str = "9999") -> str:
    response = await create_order(app_client, who, amount)
    assert response.status_code == 200, response.text
    order_id: str = response.json()["items"][0]["order_id"]
    return order_id


def assert_signed(who: Client, request: Recorded) -> None:
    assert request.method == "POST"
    assert request.path == "/hooks/greengate"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["webhook-id"].startswith("msg_")
    assert webhooks.verify(who.webhook_secret, request.headers, request.body)
    # The signature covers the body: a changed body must not verify.
    assert not webhooks.verify(who.webhook_secret, request.headers, request.body.replace(b"9999", b"9998"))


async def test_each_status_change_is_delivered_once_and_signed(
    app_client: httpx.AsyncClient, rt: Runtime, receiver: Receiver
) -> None:
    who = await make_client(rt, webhook_url=receiver.url)
    await make_direction(rt)
    await make_requisites(rt, 2)
    worker = Worker(rt, name="w1")

    canceled = await new_order(app_client, who)
    completed = await new_order(app_client, who)
    await drain(worker)
    response = await app_client.post(
        "/api/v2/order/cancel", json={"order_id": [canceled]}, headers=who.headers
    )
    assert response.json()["data"]["cancel"] == [{"order_id": canceled, "order_status": "canceled"}]
    await drain(worker)
    async with rt.db.transaction() as session:
        await confirm_paid(session, rt, int(completed), now=utcnow(), actor="test")
    await drain(worker)
    async with rt.db.transaction() as session:
        await complete_order(session, rt, int(completed), txid=TXID, now=utcnow(), actor="test")
    await drain(worker)
    await drain(worker)  # nothing new: a delivered callback is never sent again

    requests = receiver.requests
    events = list(callback_events(requests))
    assert [s for o, s in events if o == canceled] == ["awaiting", "canceled"]
    assert [s for o, s in events if o == completed] == ["awaiting", "payed", "completed"]
    assert len(requests) == 5
    assert len({r.headers["webhook-id"] for r in requests}) == 5
    for request in requests:
        assert_signed(who, request)
        body = request.json()
        assert body["type"] == "order.status_changed"
        assert body["data"]["amount_payable"] == "9999"
        assert body["data"]["amount_receivable"] == "0.00256657"
    last = requests[-1].json()["data"]
    assert last == {**(await check(app_client, who, [completed]))[0], "order_status": "completed"}
    assert all(m.status == "done" and m.attempts == 1 for m in await outbox_rows(rt))


async def test_failed_deliveries_are_retried_on_schedule_with_a_stable_id(
    app_client: httpx.AsyncClient, rt: Runtime, receiver: Receiver
) -> None:
    assert rt.settings.callback_retry_schedule == [1, 2, 5]
    receiver.script[:] = [500, 500]
    who = await make_client(rt, webhook_url=receiver.url)
    await make_direction(rt)
    await make_requisites(rt, 1)
    await new_order(app_client, who)
    clock = Clock()
    worker = Worker(rt, name="w1", clock=clock)

    await drain(worker)
    assert len(receiver.requests) == 1
    clock.advance(0.5)
    await drain(worker)
    assert len(receiver.requests) == 1, "retried before the first backoff (1 s) passed"
    clock.advance(0.6)
    await drain(worker)
    assert len(receiver.requests) == 2
    clock.advance(1.5)
    await drain(worker)
    assert len(receiver.requests) == 2, "retried before the second backoff (2 s) passed"
    clock.advance(0.6)
    await drain(worker)
    clock.advance(60)
    await drain(worker)

    requests = receiver.requests
    assert len(requests) == 3
    assert len({r.headers["webhook-id"] for r in requests}) == 1
    assert len({r.body for r in requests}) == 1
    for request in requests:
        assert_signed(who, request)
    (message,) = await outbox_rows(rt)
    assert (message.status, message.attempts, message.last_error) == ("done", 3, None)
    attempts = await attempts_of(rt, message.id)
    assert [(a.attempt, a.status_code, a.succeeded) for a in attempts] == [
        (1, 500, False),
        (2, 500, False),
        (3, 200, True),
    ]
    assert all(a.request_body == requests[0].body.decode() for a in attempts)


async def test_a_target_that_keeps_failing_ends_dead(
    app_client: httpx.AsyncClient, rt: Runtime, receiver: Receiver
) -> None:
    receiver.answer(500)
    who = await make_client(rt, webhook_url=receiver.url)
    await make_direction(rt)
    await make_requisites(rt, 1)
    await new_order(app_client, who)
    clock = Clock()
    worker = Worker(rt, name="w1", clock=clock)

    for _ in range(10):
        await drain(worker)
        clock.advance(6)

    (message,) = await outbox_rows(rt)
    assert message.status == "dead"
    assert message.attempts == 4  # the first try and one per schedule step
    assert message.last_error == "HTTP 500"
    assert len(receiver.requests) == 4
    assert [a.status_code for a in await attempts_of(rt, message.id)] == [500] * 4


@pytest.fixture
async def strict_rt(
    database_url: str, tmp_path: Path, app_client: httpx.AsyncClient
) -> AsyncIterator[Runtime]:
    """A second runtime on the same database that refuses private callback targets."""
    rt = Runtime.create(make_settings(database_url, tmp_path, callback_allow_private=False))
    yield rt
    await rt.close()


async def test_private_target_is_refused_at_send_time(
    app_client: httpx.AsyncClient, rt: Runtime, strict_rt: Runtime, receiver: Receiver
) -> None:
    who = await make_client(rt, webhook_url=receiver.url)
    await make_direction(rt)
    await make_requisites(rt, 1)
    await new_order(app_client, who)

    await drain(Worker(strict_rt, name="strict"))

    assert receiver.requests == []
    (message,) = await outbox_rows(rt)
    assert message.status == "pending" and message.attempts == 1
    (attempt,) = await attempts_of(rt, message.id)
    assert attempt.status_code is None and not attempt.succeeded
    assert attempt.error is not None and attempt.error.startswith("refused target")
    assert "127.0.0.1" in attempt.error


async def test_an_unsendable_target_is_recorded_retried_and_ends_dead(
    app_client: httpx.AsyncClient, rt: Runtime, strict_rt: Runtime
) -> None:
    # Well-formed enough to be configured, but no request can ever be built for it.
    who = await make_client(rt, webhook_url="http://callbacks..example.com/hook")
    await make_direction(rt)
    await make_requisites(rt, 1)
    await new_order(app_client, who)
    clock = Clock()
    worker = Worker(strict_rt, name="strict", clock=clock)

    for _ in range(6):
        await drain(worker)
        clock.advance(6)

    (message,) = await outbox_rows(rt)
    assert (message.status, message.attempts) == ("dead", 4)
    attempts = await attempts_of(rt, message.id)
    assert len(attempts) == 4
    for attempt in attempts:
        assert attempt.status_code is None and not attempt.succeeded
        assert attempt.error and "callbacks..example.com" in attempt.error


async def test_ttl_autocancels_through_the_outbox_job(
    app_client: httpx.AsyncClient, rt: Runtime, receiver: Receiver
) -> None:
    who = await make_client(rt, webhook_url=receiver.url)
    await make_direction(rt, order_ttl=30)
    await make_requisites(rt, 2)
    order_id = await new_order(app_client, who)
    paid_id = await new_order(app_client, who)
    async with rt.db.transaction() as session:
        await confirm_paid(session, rt, int(paid_id), now=utcnow(), actor="test")
        order = await session.get(ExchangeOrder, int(order_id))
        assert order is not None
        expires_at = order.expires_at

    await drain(Worker(rt, name="early", clock=Clock(expires_at - timedelta(seconds=1))))
    assert (await check(app_client, who, [order_id]))[0]["order_status"] == "awaiting"
    jobs = await outbox_rows(rt, EXPIRE_JOB)
    assert [(j.status, j.aggregate) for j in jobs] == [
        ("pending", f"order:{order_id}"),
        ("pending", f"order:{paid_id}"),
    ]
    assert jobs[0].due_at == expires_at

    late = expires_at + timedelta(minutes=1)  # both orders' TTL has passed
    await drain(Worker(rt, name="late", clock=Clock(late)))

    statuses = [o["order_status"] for o in await check(app_client, who, [order_id, paid_id])]
    assert statuses == ["autocanceled", "payed"]  # a payed order never expires
    assert [s for o, s in callback_events(receiver.requests) if o == order_id] == ["awaiting", "autocanceled"]
    assert [s for o, s in callback_events(receiver.requests) if o == paid_id] == ["awaiting", "payed"]
    assert [j.status for j in await outbox_rows(rt, EXPIRE_JOB)] == ["done", "done"]
    async with rt.db.transaction() as session:
        event = await session.scalar(
            select(OrderEvent).where(
                OrderEvent.order_id == int(order_id), OrderEvent.to_status == "autocanceled"
            )
        )
    assert event is not None and event.actor == "worker"


async def test_a_stale_claim_is_taken_over(
    app_client: httpx.AsyncClient, rt: Runtime, receiver: Receiver
) -> None:
    who = await make_client(rt, webhook_url=receiver.url)
    await make_direction(rt)
    await make_requisites(rt, 1)
    await new_order(app_client, who)
    (message,) = await outbox_rows(rt)
    now = utcnow()

    async def claim(until: datetime) -> None:
        async with rt.db.transaction() as session:
            await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == message.id)
                .values(claimed_by="dead-worker", claimed_until=until)
            )

    await claim(now + timedelta(minutes=1))
    assert await drain(Worker(rt, name="w2")) == 0, "a live claim must not be taken"
    assert receiver.requests == []

    await claim(now - timedelta(seconds=1))
    assert await drain(Worker(rt, name="w2")) == 1

    assert len(receiver.requests) == 1
    (message,) = await outbox_rows(rt)
    assert (message.status, message.claimed_by, message.attempts) == ("done", "w2", 1)


@pytest.fixture
async def worker_runtimes(settings: Settings, app_client: httpx.AsyncClient) -> AsyncIterator[list[Runtime]]:
    """Two runtimes (own engines and pools) on the same database, as two worker processes have."""
    small_batches = settings.model_copy(update={"worker_batch_size": 1})
    runtimes = [Runtime.create(small_batches) for _ in range(2)]
    yield runtimes
    for rt in runtimes:
        await rt.close()


async def test_two_workers_never_deliver_one_message_twice(
    app_client: httpx.AsyncClient, rt: Runtime, worker_runtimes: list[Runtime]
) -> None:
    with Receiver() as receiver:
        who = await make_client(rt, webhook_url=receiver.url)
        await make_direction(rt)
        await make_requisites(rt, 30)
        ids = [await new_order(app_client, who) for _ in range(30)]
        workers = [Worker(r, name=f"w{i}") for i, r in enumerate(worker_runtimes)]
        for r in worker_runtimes:  # connect first, so both start claiming at the same moment
            async with r.db.transaction() as session:
                await session.execute(select(1))
        claimed = await asyncio.gather(*(drain(w) for w in workers))

    hits = Counter(r.headers["webhook-id"] for r in receiver.requests)
    assert len(hits) == 30
    assert max(hits.values()) == 1, [h for h, n in hits.items() if n > 1]
    assert sorted(o for o, _ in callback_events(receiver.requests)) == sorted(ids)
    assert sum(claimed) == 30 and all(claimed), claimed  # both took part
    async with rt.db.transaction() as session:
        n_attempts = len(list(await session.scalars(select(DeliveryAttempt))))
    assert n_attempts == 30


async def test_unconfirmed_order_gets_a_requisite_once_one_is_available(
    app_client: httpx.AsyncClient, rt: Runtime, receiver: Receiver
) -> None:
    who = await make_client(rt, webhook_url=receiver.url)
    await make_direction(rt)
    worker = Worker(rt, name="w1")
    order_id = await new_order(app_client, who)
    assert (await check(app_client, who, [order_id]))[0]["wallet_payment"] == ""
    assert await worker.assign_requisites() == 0

    (disabled,) = await make_requisites(rt, 1)
    async with rt.db.transaction() as session:
        await set_requisite_active(session, disabled, False, now=utcnow())
    assert await worker.assign_requisites() == 0
    order = (await check(app_client, who, [order_id]))[0]
    assert (order["order_status"], order["wallet_payment"]) == ("unconfirmed", "")

    async with rt.db.transaction() as session:
        await set_requisite_active(session, disabled, True, now=utcnow())
    assert await worker.assign_requisites() == 1
    await drain(worker)

    order = (await check(app_client, who, [order_id]))[0]
    assert (order["order_status"], order["wallet_payment"]) == ("awaiting", "2200700100000000")
    assert [s for _, s in callback_events(receiver.requests)] == ["unconfirmed", "awaiting"]
    assert await worker.assign_requisites() == 0


async def test_the_app_runs_the_worker_in_process(settings: Settings, clean_db: None) -> None:
    """`serve` on the embedded default: the lifespan starts the worker loop, which delivers on its own."""
    app = create_app(settings, run_worker=True)
    with Receiver() as receiver:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                rt: Runtime = app.state.runtime
                who = await make_client(rt, webhook_url=receiver.url)
                await make_direction(rt)
                await make_requisites(rt, 1)
                order_id = await new_order(client, who)
                await asyncio.to_thread(receiver.server.wait_for, lambda seen: len(seen) >= 1, 10.0)
    assert list(callback_events(receiver.requests)) == [(order_id, "awaiting")]
