"""Console exchange work over HTTP: directions, requisites, orders and their actions, transfers."""

from __future__ import annotations

import json

import httpx
import pytest
from sqlalchemy import select

from greengate.clock import utcnow
from greengate.runtime import Runtime
from greengate.services.requisites import requisite_numbers
from greengate.services.transfers import TransferInput, record_transfer
from greengate.store.models import AuditEvent, Direction, IncomingTransfer, OrderEvent, Requisite
from tests.support.console import ConsoleClient, flash_of, signed_in
from tests.support.exchange import create_order, load_order, make_client, make_direction, make_requisites

TXID = "a" * 64


@pytest.fixture
async def operator(app_client: httpx.AsyncClient, rt: Runtime) -> ConsoleClient:
    return await signed_in(app_client, rt, "operator")


async def awaiting_order(app_client: httpx.AsyncClient, rt: Runtime, amount: str = "9999") -> int:
    if not await _has_direction(rt):
        await make_direction(rt)
        await make_requisites(rt, 2)
    client = await make_client(rt)
    response = await create_order(app_client, client, amount)
    assert response.status_code == 200, response.text
    return int(response.json()["items"][0]["order_id"])


async def _has_direction(rt: Runtime) -> bool:
    async with rt.db.transaction() as session:
        return await session.scalar(select(Direction.id).limit(1)) is not None


async def test_confirming_and_completing_an_order(
    app_client: httpx.AsyncClient, rt: Runtime, operator: ConsoleClient
) -> None:
    order_id = await awaiting_order(app_client, rt)

    page = await operator.get(f"/admin/orders/{order_id}")
    assert 'data-action="confirm-paid"' in page.text
    await operator.post(f"/admin/orders/{order_id}/confirm")
    assert (await load_order(rt, order_id)).status == "payed"
    await operator.post(f"/admin/orders/{order_id}/complete", {"txid": TXID})

    order = await load_order(rt, order_id)
    assert order.status == "completed" and order.txid == TXID
    page = await operator.get(f"/admin/orders/{order_id}")
    assert 'data-order-status="completed"' in page.text
    assert 'data-event="payed"' in page.text and 'data-event="completed"' in page.text
    async with rt.db.transaction() as session:
        actions = list(
            await session.scalars(select(AuditEvent.action).where(AuditEvent.object_type == "exchange_order"))
        )
        actors = set(await session.scalars(select(OrderEvent.actor).where(OrderEvent.order_id == order_id)))
    assert actions == ["order.confirm_paid", "order.complete"]
    assert any(a.startswith("admin:operator-") for a in actors)


async def test_confirming_at_a_different_amount_reprices_the_order(
    app_client: httpx.AsyncClient, rt: Runtime, operator: ConsoleClient
) -> None:
    order_id = await awaiting_order(app_client, rt)
    before = await load_order(rt, order_id)

    await operator.post(f"/admin/orders/{order_id}/confirm", {"amount": "5000"})

    order = await load_order(rt, order_id)
    assert order.paid_amount == 500000 and order.amount_receivable < before.amount_receivable


async def test_a_bad_txid_is_refused_and_the_order_stays_paid(
    app_client: httpx.AsyncClient, rt: Runtime, operator: ConsoleClient
) -> None:
    order_id = await awaiting_order(app_client, rt)
    await operator.post(f"/admin/orders/{order_id}/confirm")

    await operator.post(f"/admin/orders/{order_id}/complete", {"txid": "not-a-txid"})

    assert (await load_order(rt, order_id)).status == "payed"
    assert flash_of((await operator.get(f"/admin/orders/{order_id}")).text).startswith("error:")


async def test_canceling_an_open_order(
    app_client: httpx.AsyncClient, rt: Runtime, operator: ConsoleClient
) -> None:
    order_id = await awaiting_order(app_client, rt)

    await operator.post(f"/admin/orders/{order_id}/cancel")

    assert (await load_order(rt, order_id)).status == "canceled"


async def test_a_paid_order_cannot_be_canceled(
    app_client: httpx.AsyncClient, rt: Runtime, operator: ConsoleClient
) -> None:
    order_id = await awaiting_order(app_client, rt)
    await operator.post(f"/admin/orders/{order_id}/confirm")

    await operator.post(f"/admin/orders/{order_id}/cancel")

    assert (await load_order(rt, order_id)).status == "payed"
    assert "cannot move from payed to canceled" in flash_of(
        (await operator.get(f"/admin/orders/{order_id}")).text
    )


async def test_order_list_filters_by_status_and_search(
    app_client: httpx.AsyncClient, rt: Runtime, operator: ConsoleClient
) -> None:
    first = await awaiting_order(app_client, rt, "1000")
    second = await awaiting_order(app_client, rt, "2000")
    await operator.post(f"/admin/orders/{first}/cancel")

    canceled = await operator.get("/admin/orders", status="canceled")
    by_id = await operator.get("/admin/orders", q=str(second))
    today = await operator.get(
        "/admin/orders", date_from=utcnow().date().isoformat(), date_to=utcnow().date().isoformat()
    )

    assert f'data-order="{first}"' in canceled.text and f'data-order="{second}"' not in canceled.text
    assert f'data-order="{second}"' in by_id.text and f'data-order="{first}"' not in by_id.text
    assert today.text.count("data-order=") == 2


async def test_viewer_sees_no_order_actions_and_is_refused_them(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    order_id = await awaiting_order(app_client, rt)
    viewer = await signed_in(app_client, rt, "viewer")

    page = await viewer.get(f"/admin/orders/{order_id}")
    response = await viewer.post(f"/admin/orders/{order_id}/confirm")

    assert "data-action" not in page.text
    assert response.status_code == 403
    assert (await load_order(rt, order_id)).status == "awaiting"


async def test_adding_limiting_and_disabling_a_requisite(rt: Runtime, operator: ConsoleClient) -> None:
    await make_direction(rt)

    await operator.post(
        "/admin/requisites",
        {
            "payment_method": "card",
            "number": "2200 7001 0000 0042",
            "bank": "Green Bank",
            "daily_limit": "50000",
        },
    )
    async with rt.db.transaction() as session:
        req = await session.scalar(select(Requisite))
    assert req is not None and req.daily_limit == 5000000 and req.number_masked == "2200-70XX-XXXX-0042"
    await operator.post(f"/admin/requisites/{req.id}/limits", {"daily_limit": "", "turnover_limit": "100000"})
    await operator.post(f"/admin/requisites/{req.id}/active", {"active": "0"})

    async with rt.db.transaction() as session:
        req = await session.get(Requisite, req.id)
    assert req is not None and (req.daily_limit, req.turnover_limit, req.active) == (None, 10000000, False)
    page = await operator.get("/admin/requisites")
    assert "2200700100000042" not in page.text and "2200-70XX-XXXX-0042" in page.text


async def test_requisite_turnover_is_shown(
    app_client: httpx.AsyncClient, rt: Runtime, operator: ConsoleClient
) -> None:
    await awaiting_order(app_client, rt, "9999")

    page = await operator.get("/admin/requisites")

    assert "9999.00 RUB" in page.text


async def test_admin_updates_a_direction_and_sees_its_live_rate(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    direction_id = await make_direction(rt)
    admin = await signed_in(app_client, rt, "admin")

    await admin.post(
        f"/admin/directions/{direction_id}",
        {
            "status": "0",
            "order_ttl": "45",
            "commission_percent": "12.5",
            "max_amount": "200000",
            "unique_amounts_shown": "1",
        },
    )

    async with rt.db.transaction() as session:
        d = await session.get(Direction, direction_id)
    assert d is not None and (d.status, d.order_ttl, d.commission_percent, d.max_amount) == (
        0,
        45,
        "12.5",
        20000000,
    )
    page = await admin.get("/admin/directions")
    assert "3233561.44 RUB/BTC" in page.text
    async with rt.db.transaction() as session:
        event = await session.scalar(select(AuditEvent).where(AuditEvent.action == "direction.update"))
    assert event is not None and json.loads(event.before or "{}")["status"] == 1


async def test_admin_creates_a_direction(app_client: httpx.AsyncClient, rt: Runtime) -> None:
    admin = await signed_in(app_client, rt, "admin")

    await admin.post(
        "/admin/directions",
        {
            "payment_method": "kzt",
            "from_currency": "KZT",
            "min_amount": "1000",
            "max_amount": "500000",
            "commission_percent": "5",
            "order_ttl": "20",
            "rate_source": "fixed",
        },
    )

    assert 'data-direction="kzt"' in (await admin.get("/admin/directions")).text


async def test_matching_an_unmatched_transfer_pays_the_order(
    app_client: httpx.AsyncClient, rt: Runtime, operator: ConsoleClient
) -> None:
    order_id = await awaiting_order(app_client, rt, "9999")
    order = await load_order(rt, order_id)
    assert order.requisite_id is not None
    async with rt.db.transaction() as session:
        numbers = await requisite_numbers(session, rt.keyring, {order.requisite_id})
        transfer = await record_transfer(
            session,
            rt,
            TransferInput(numbers[order.requisite_id], 12345, "RUB", "bank-1", utcnow()),
            utcnow(),
            "test",
        )
    transfer_id = transfer.id
    assert transfer.status == "review"  # another amount for the requisite's only open order
    listing = await operator.get("/admin/transfers")
    assert f'data-transfer="{transfer_id}"' in listing.text

    await operator.post(f"/admin/transfers/{transfer_id}/match", {"order_id": str(order_id)})

    async with rt.db.transaction() as session:
        row = await session.get(IncomingTransfer, transfer_id)
    assert row is not None and (row.status, row.order_id) == ("matched", order_id)
    paid = await load_order(rt, order_id)
    assert paid.status == "payed" and paid.paid_amount == 12345
