"""Two gateway nodes and two workers against one PostgreSQL through PgBouncer in transaction pooling
mode, under mixed load, while one node and one worker are killed: nothing acknowledged is lost or
duplicated, every callback event arrives with one id, and the ledger balances."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import func, select

from bench.pgbouncer import PgBouncer, find_pgbouncer
from greengate.clock import utcnow
from greengate.domain import ledger as ledger_domain
from greengate.runtime import Runtime
from greengate.services import ledger
from greengate.services.exchange_orders import CALLBACK, confirm_paid
from greengate.services.merchants import create_merchant
from greengate.services.payments import RESULT_CALLBACK
from greengate.services.payouts import RESULT_CALLBACK as PAYOUT_CALLBACK
from greengate.services.refunds import REFUND_CALLBACK
from greengate.store.models import ExchangeOrder, OutboxMessage, Payment, Payout, Refund
from tests.conftest import is_postgres
from tests.support.exchange import Client, create_order, make_client, make_direction, make_requisites
from tests.support.merchant_api import Answer, CallbackServer, Shop, send, signed
from tests.support.processes import GREENGATE, GreengateProcess, Processes
from tests.support.servers import Receiver

APPROVED = "4405645000006150"
PAYOUT_SUCCESS = "4671593866478252"
ROUNDS = 3
START_TIMEOUT = 240.0  # a loaded machine can take minutes to start four interpreters
CALLBACK_KINDS = (CALLBACK, RESULT_CALLBACK, REFUND_CALLBACK, PAYOUT_CALLBACK)
T = TypeVar("T")


@pytest.fixture
def pgbouncer(database_url: str, tmp_path: Path) -> Iterator[PgBouncer]:
    if not is_postgres(database_url):
        pytest.skip("PgBouncer pools PostgreSQL connections; this run uses SQLite")
    executable, why = find_pgbouncer()
    if executable is None:
        pytest.skip(why)
    try:
        bouncer = PgBouncer(executable, database_url, tmp_path / "pgbouncer", pool_size=12)
    except RuntimeError as exc:
        pytest.skip(f"pgbouncer did not start: {exc}")
    yield bouncer
    bouncer.stop()


@pytest.fixture
def processes(pgbouncer: PgBouncer, tmp_path: Path, clean_db: None) -> Iterator[Processes]:
    procs = Processes(pgbouncer.url, tmp_path)
    yield procs
    procs.close()


def free_ports(n: int) -> list[int]:
    import socket

    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class Node:
    proc: GreengateProcess
    client: httpx.AsyncClient
    alive: bool = True


@dataclass
class Ledger:
    """What the load acknowledged (answered as done), by kind."""

    orders: set[int] = field(default_factory=set)
    order_keys: dict[str, int] = field(default_factory=dict)
    payments: dict[str, int] = field(default_factory=dict)  # pg_order_id -> payment id
    paid: set[int] = field(default_factory=set)
    refunded: set[int] = field(default_factory=set)
    payouts: dict[str, int] = field(default_factory=dict)  # pg_order_id -> payout id
    paid_out: set[int] = field(default_factory=set)
    canceled: set[int] = field(default_factory=set)
    confirmed: set[int] = field(default_factory=set)
    # Writes whose answer never came (their node died): done or not, they must not be done twice.
    unsure: set[str] = field(default_factory=set)
    unsure_refunds: set[int] = field(default_factory=set)


class Cluster:
    def __init__(
        self, nodes: list[Node], rt: Runtime, who: Client, merchant_id: int, secret: str, payout_secret: str
    ) -> None:
        self.nodes = nodes
        self.rt = rt
        self.who = who
        self.merchant_id = merchant_id
        self.secret = secret
        self.payout_secret = payout_secret
        self.acked = Ledger()
        self._turn = 0

    def node(self) -> Node:
        """The next live node, round robin (a load balancer's choice)."""
        live = [n for n in self.nodes if n.alive]
        self._turn += 1
        return live[self._turn % len(live)]

    async def attempt(self, work: Callable[[httpx.AsyncClient], Awaitable[T]], *, retry: bool) -> T | None:
        """Run `work(client)` on a live node. When the node dies under it the answer is lost: a request
        safe to repeat (a read, a create under an Idempotency-Key) goes again to another node, as a
        client behind a load balancer sends it; any other is left unanswered (None)."""
        for _ in range(len(self.nodes) + 1):
            node = self.node()
            try:
                return await work(node.client)
            except httpx.TransportError:
                node.alive = False  # as a load balancer's health check takes a dead node out
                if not retry:
                    return None
        raise AssertionError("no node answered")

    async def order(self, confirm: bool, cancel: bool) -> None:
        key = uuid.uuid4().hex

        async def create(client: httpx.AsyncClient) -> httpx.Response:
            for _ in range(100):
                response = await create_order(client, self.who, headers={"Idempotency-Key": key})
                if response.status_code != 409:
                    return response
                await asyncio.sleep(0.1)  # the first try's transaction is still being rolled back
            return response

        response = await self.attempt(create, retry=True)
        assert response is not None and response.status_code == 200, response.text if response else None
        order_id = int(response.json()["items"][0]["order_id"])
        assert self.acked.order_keys.setdefault(key, order_id) == order_id
        self.acked.orders.add(order_id)

        async def check(client: httpx.AsyncClient) -> httpx.Response:
            return await client.post(
                "/api/v2/order/check", json={"order_id": [order_id]}, headers=self.who.headers
            )

        checked = await self.attempt(check, retry=True)
        assert checked is not None and checked.status_code == 200, checked
        assert [o["order_id"] for o in checked.json()["data"]["orders"]] == [str(order_id)]
        if cancel:

            async def do_cancel(client: httpx.AsyncClient) -> httpx.Response:
                return await client.post(
                    "/api/v2/order/cancel", json={"order_id": [order_id]}, headers=self.who.headers
                )

            canceled = await self.attempt(do_cancel, retry=True)
            assert canceled is not None and canceled.status_code == 200, canceled
            data = canceled.json()["data"]
            # A retried cancel finds the order canceled already by the first attempt.
            assert data["cancel"] or data["failed"][0]["order_status"] == "canceled", data
            self.acked.canceled.add(order_id)
        elif confirm:
            async with self.rt.db.transaction() as session:
                await confirm_paid(session, self.rt, order_id, now=utcnow(), actor="operator:test")
            self.acked.confirmed.add(order_id)

    async def payment(self, refund: bool, result_url: str, refund_url: str) -> None:
        order = f"P-{uuid.uuid4().hex[:12]}"

        async def init(client: httpx.AsyncClient) -> Answer:
            shop = Shop(client, self.merchant_id, self.secret)
            return await shop.init(
                pg_order_id=order, pg_amount="250", pg_result_url=result_url, pg_refund_url=refund_url
            )

        answer = await self.attempt(init, retry=False)
        if answer is None:
            self.acked.unsure.add(order)
            return
        answer.assert_ok(self.secret)
        payment_id = int(answer["pg_payment_id"])
        self.acked.payments[order] = payment_id
        path = urlsplit(answer["pg_redirect_url"]).path

        async def pay(client: httpx.AsyncClient) -> httpx.Response:
            form = {"number": APPROVED, "exp": "12/30", "holder": "Ivan Petrov", "cvc": "739"}
            return await client.post(f"{path}/card", data=form)

        paid = await self.attempt(pay, retry=False)
        if paid is None:
            return
        assert paid.status_code == 303, paid.text
        self.acked.paid.add(payment_id)
        if refund:

            async def revoke(client: httpx.AsyncClient) -> Answer:
                shop = Shop(client, self.merchant_id, self.secret)
                return await shop.call("revoke.php", {"pg_payment_id": str(payment_id)})

            refunded = await self.attempt(revoke, retry=False)
            if refunded is None:
                self.acked.unsure_refunds.add(payment_id)
                return
            refunded.assert_ok(self.secret)
            self.acked.refunded.add(payment_id)

    async def payout(self, post_link: str) -> None:
        order = f"O-{uuid.uuid4().hex[:12]}"

        async def register(client: httpx.AsyncClient) -> Answer:
            values = {
                "pg_merchant_id": str(self.merchant_id),
                "pg_amount": "150",
                "pg_order_id": order,
                "pg_user_id": "user-1",
                "pg_description": "Prize",
                "pg_post_link": post_link,
            }
            params = signed("reg2nonreg", list(values.items()), self.payout_secret)
            return Answer.read(await send(client, "/api/reg2nonreg", params, "form"), "reg2nonreg")

        answer = await self.attempt(register, retry=False)
        if answer is None:
            self.acked.unsure.add(order)
            return
        answer.assert_ok(self.payout_secret)
        payout_id = int(answer["pg_payment_id"])
        self.acked.payouts[order] = payout_id
        path = urlsplit(answer["pg_redirect_url"]).path

        async def card(client: httpx.AsyncClient) -> httpx.Response:
            return await client.post(f"{path}/card", data={"number": PAYOUT_SUCCESS})

        done = await self.attempt(card, retry=False)
        if done is None:
            return
        assert done.status_code == 303, done.text
        self.acked.paid_out.add(payout_id)


async def fund(rt: Runtime, merchant_id: int, amount: int) -> None:
    async with rt.db.transaction() as session:
        await ledger.post(
            session,
            # The shop is in test mode: its payouts draw on the test book.
            ledger_domain.payment_succeeded(merchant_id, amount, "KZT", 0, book=ledger_domain.Book.TEST),
            object_type="test_funding",
            object_id=f"{merchant_id}:cluster",
            now=utcnow(),
        )


async def wait_started(procs: list[tuple[GreengateProcess, str | None]]) -> None:
    def ready(proc: GreengateProcess, url: str | None) -> None:
        if url is not None:
            proc.wait_http(url, timeout=START_TIMEOUT)
            return
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:  # a worker has no port: it must at least stay up
            assert proc.running(), proc.output()
            time.sleep(0.2)

    await asyncio.gather(*(asyncio.to_thread(ready, p, u) for p, u in procs))


async def outbox_settled(rt: Runtime) -> bool:
    async with rt.db.transaction() as session:
        rows = await session.execute(
            select(OutboxMessage.status, func.count())
            .where(OutboxMessage.kind.in_(CALLBACK_KINDS))
            .group_by(OutboxMessage.status)
        )
        return {status for status, _ in rows} <= {"done"}


async def test_two_nodes_and_two_workers_through_pgbouncer_survive_kills(
    pgbouncer: PgBouncer, processes: Processes, rt: Runtime, tmp_path: Path
) -> None:
    with (
        Receiver() as hooks,
        CallbackServer("") as shop_server,
    ):
        who = await make_client(rt, webhook_url=hooks.url)
        await make_direction(rt)
        await make_requisites(rt, 40)
        async with rt.db.transaction() as session:
            merchant, creds = await create_merchant(
                session, rt.keyring, name="Shop", mode="test", now=utcnow()
            )
        await fund(rt, merchant.id, 10_000_000)
        shop_server.secret = creds.secret_key
        with CallbackServer(creds.payout_secret) as payout_server:
            env = processes.env(
                database_pooler="pgbouncer",
                db_pool_size="4",
                worker_claim_timeout_seconds="3",
            )
            ports = free_ports(2)
            servers = [
                processes.start("serve", "--host", "127.0.0.1", "--port", str(p), "--no-worker", env=env)
                for p in ports
            ]
            workers = [processes.start("worker", env=env) for _ in range(2)]
            await wait_started(
                [(s, f"http://127.0.0.1:{p}/readyz") for s, p in zip(servers, ports, strict=True)]
                + [(w, None) for w in workers]
            )
            clients = [httpx.AsyncClient(base_url=f"http://127.0.0.1:{p}", timeout=60) for p in ports]
            nodes = [Node(s, c) for s, c in zip(servers, clients, strict=True)]
            cluster = Cluster(nodes, rt, who, merchant.id, creds.secret_key, creds.payout_secret)
            result_url = shop_server.url("/shop/result.php")
            refund_url = shop_server.url("/shop/refund.php")
            post_link = payout_server.url("/shop/payout.php")

            def round_of_load(r: int) -> list[object]:
                return [
                    *(cluster.order(confirm=i % 3 == 0, cancel=i % 3 == 1) for i in range(6)),
                    *(
                        cluster.payment(refund=i % 2 == 0, result_url=result_url, refund_url=refund_url)
                        for i in range(3)
                    ),
                    cluster.payout(post_link),
                ]

            try:
                await asyncio.gather(*round_of_load(0))  # type: ignore[arg-type]

                async def kill_midway() -> None:
                    await asyncio.sleep(0.3)
                    await asyncio.to_thread(nodes[1].proc.kill)
                    nodes[1].alive = False
                    await asyncio.to_thread(workers[0].kill)

                await asyncio.gather(kill_midway(), *round_of_load(1))  # type: ignore[arg-type]
                await asyncio.gather(*round_of_load(2))  # type: ignore[arg-type]

                deadline = time.monotonic() + 120
                while not await outbox_settled(rt):
                    assert workers[1].running(), workers[1].output()
                    assert time.monotonic() < deadline, "callbacks not all delivered"
                    await asyncio.sleep(0.2)
            finally:
                for c in clients:
                    await c.aclose()
            assert not servers[1].running() and not workers[0].running()
            assert servers[0].running(), servers[0].output()

            acked = cluster.acked
            async with rt.db.transaction() as session:
                orders = dict((await session.execute(select(ExchangeOrder.id, ExchangeOrder.status))).all())
                payments = (await session.execute(select(Payment.id, Payment.order_id, Payment.status))).all()
                payouts = (await session.execute(select(Payout.id, Payout.order_id, Payout.status))).all()
                refunds = (await session.execute(select(Refund.payment_id))).scalars().all()
                callbacks = (
                    await session.execute(
                        select(OutboxMessage.id, OutboxMessage.kind, OutboxMessage.aggregate).where(
                            OutboxMessage.kind.in_(CALLBACK_KINDS)
                        )
                    )
                ).all()

            # Orders: each acknowledged create exists once (a create retried on the other node under
            # the same Idempotency-Key answered the same order); no order exists beyond them.
            assert len(acked.orders) == len(acked.order_keys) == ROUNDS * 6
            assert set(orders) == acked.orders
            assert {o for o, s in orders.items() if s == "canceled"} == acked.canceled
            assert {o for o, s in orders.items() if s == "payed"} == acked.confirmed
            # Payments and payouts: every acknowledged one exists once, with its merchant order id.
            # Writes whose answer was lost may or may not exist, but never twice.
            by_order: defaultdict[str, list[int]] = defaultdict(list)
            for payment_id, order_id, _ in payments:
                by_order[order_id].append(payment_id)
            assert set(by_order) <= set(acked.payments) | acked.unsure
            assert all(len(ids) == 1 for ids in by_order.values()), by_order
            for order_id, payment_id in acked.payments.items():
                assert by_order[order_id] == [payment_id]
            statuses = {p: s for p, _, s in payments}
            assert all(statuses[p] == "ok" for p in acked.paid - acked.refunded - acked.unsure_refunds)
            assert len(refunds) == len(set(refunds))  # each refund is a full one, once
            assert acked.refunded <= set(refunds) <= acked.refunded | acked.unsure_refunds
            payout_orders: defaultdict[str, list[int]] = defaultdict(list)
            payout_status = {}
            for payout_id, order_id, status in payouts:
                payout_orders[order_id].append(payout_id)
                payout_status[payout_id] = status
            assert set(payout_orders) <= set(acked.payouts) | acked.unsure
            assert all(len(ids) == 1 for ids in payout_orders.values()), payout_orders
            for order_id, payout_id in acked.payouts.items():
                assert payout_orders[order_id] == [payout_id]
            assert all(payout_status[p] == "ok" for p in acked.paid_out)

            # Exchange callbacks: every event arrived, and a webhook id always names the same event
            # (a redelivery shows the order as it is now, but the status change it reports stays).
            events: defaultdict[str, set[tuple[str, str, str]]] = defaultdict(set)
            for request in hooks.requests:
                body = request.json()
                event = (body["data"]["order_id"], body["data"]["order_status"], body["created_at"])
                events[request.headers["webhook-id"]].add(event)
            exchange_events = {f"msg_{i}" for i, kind, _ in callbacks if kind == CALLBACK}
            assert set(events) == exchange_events
            assert all(len(e) == 1 for e in events.values()), "a webhook id carried two different events"
            assert len({e for found in events.values() for e in found}) == len(exchange_events)
            # Merchant callbacks: a result per paid payment, a refund callback per refund, a result
            # per payout.
            results = {int(c["pg_payment_id"]) for c in shop_server.received("/shop/result.php")}
            assert results >= acked.paid
            refund_calls = {int(c["pg_payment_id"]) for c in shop_server.received("/shop/refund.php")}
            assert refund_calls == set(refunds)
            payout_calls = {int(c["pg_payment_id"]) for c in payout_server.received("/shop/payout.php")}
            assert payout_calls >= acked.paid_out
            assert payout_calls == {p for p, s in payout_status.items() if s == "ok"}

        ledger_check = await asyncio.to_thread(
            subprocess.run,
            [*GREENGATE, "ledger", "check"],
            env=env,
            capture_output=True,
            cwd=tmp_path,
            timeout=300,
        )
        assert (ledger_check.returncode, ledger_check.stdout.strip()) == (
            0,
            b"live book: OK\ntest book: OK",
        ), ledger_check
