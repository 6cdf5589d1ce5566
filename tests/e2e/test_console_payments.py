"""Console payments, callbacks, ledger and dashboard over HTTP: the test buttons, the delivery log,
redelivery and the books."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, datetime, timedelta

import httpx
import pytest
from sqlalchemy import func, select, update

from greengate.clock import utcnow
from greengate.domain.card_rules import validate_card_form
from greengate.runtime import Runtime
from greengate.services import payment_flow
from greengate.store.models import AuditEvent, DeliveryAttempt, OutboxMessage, Payment, Refund
from greengate.web.console.rendering import mask_cards, readable_body
from greengate.worker.loop import Worker
from tests.support.console import ConsoleClient, flash_of, signed_in
from tests.support.merchant_api import CallbackServer, Shop, make_shop

APPROVED = "4405645000006150"


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
async def shop(rt: Runtime, app_client: httpx.AsyncClient) -> Shop:
    return await make_shop(rt, app_client)


@pytest.fixture
def server(shop: Shop) -> Iterator[CallbackServer]:
    with CallbackServer(shop.secret) as s:
        yield s


@pytest.fixture
async def operator(app_client: httpx.AsyncClient, rt: Runtime) -> ConsoleClient:
    return await signed_in(app_client, rt, "operator")


async def drain(worker: Worker) -> None:
    for _ in range(50):
        if await worker.run_once() == 0:
            return
    raise AssertionError("the worker never became idle")


async def payment(rt: Runtime, payment_id: int) -> Payment:
    async with rt.db.transaction() as session:
        found = await session.get(Payment, payment_id)
    assert found is not None
    return found


async def new_payment(shop: Shop, server: CallbackServer, **fields: str) -> int:
    return await shop.init_ok(
        pg_amount="1500.50",
        pg_currency="KZT",
        pg_order_id=fields.pop("order_id", "A-1"),
        pg_result_url=server.url("/shop/result.php"),
        **fields,
    )


async def test_approve_button_drives_a_test_payment_to_ok_and_its_result_callback_is_delivered(
    rt: Runtime, shop: Shop, server: CallbackServer, operator: ConsoleClient
) -> None:
    payment_id = await new_payment(shop, server)
    page = await operator.get(f"/admin/payments/{payment_id}")
    assert "data-action=test-approve" in page.text

    response = await operator.post(f"/admin/payments/{payment_id}/test", {"action": "approve"})

    assert response.status_code == 303
    assert (await payment(rt, payment_id)).status == "ok"
    await drain(Worker(rt))
    [callback] = server.received("/shop/result.php")
    assert callback.get("pg_result") == "1" and callback.verifies(shop.secret)
    page = await operator.get(f"/admin/payments/{payment_id}")
    assert 'data-payment-status="ok"' in page.text
    assert 'data-callback-status="done"' in page.text
    async with rt.db.transaction() as session:
        event = await session.scalar(select(AuditEvent).where(AuditEvent.action == "payment.test.approve"))
    assert event is not None and '"new"' in (event.before or "") and '"ok"' in (event.after or "")


async def test_decline_button_fails_the_payment_with_the_code(
    rt: Runtime, shop: Shop, server: CallbackServer, operator: ConsoleClient
) -> None:
    payment_id = await new_payment(shop, server)

    await operator.post(f"/admin/payments/{payment_id}/test", {"action": "decline", "code": "10005"})

    found = await payment(rt, payment_id)
    assert (found.status, found.failure_code) == ("failed", 10005)


async def test_require_3ds_and_expire_buttons(
    rt: Runtime, shop: Shop, server: CallbackServer, operator: ConsoleClient
) -> None:
    payment_id = await new_payment(shop, server)

    await operator.post(f"/admin/payments/{payment_id}/test", {"action": "require-3ds"})
    assert (await payment(rt, payment_id)).require_3ds
    await operator.post(f"/admin/payments/{payment_id}/test", {"action": "expire"})

    assert (await payment(rt, payment_id)).status == "expired"


@pytest.mark.parametrize("kind", ["refund", "chargeback"])
async def test_refund_and_chargeback_buttons_return_the_whole_payment(
    rt: Runtime, shop: Shop, server: CallbackServer, operator: ConsoleClient, kind: str
) -> None:
    payment_id = await new_payment(shop, server)
    await operator.post(f"/admin/payments/{payment_id}/test", {"action": "approve"})
    assert f"data-action=test-{kind}" in (await operator.get(f"/admin/payments/{payment_id}")).text

    await operator.post(f"/admin/payments/{payment_id}/test", {"action": kind})

    found = await payment(rt, payment_id)
    assert (found.status, found.refunded_amount) == ("revoked", 150050)
    async with rt.db.transaction() as session:
        refunds = [(r.kind, r.amount) for r in await session.scalars(select(Refund))]
    assert refunds == [(kind, 150050)]
    assert (await operator.get(f"/admin/payments/{payment_id}")).text.count("data-refund=") == 1


async def test_live_payments_have_no_test_buttons_and_refuse_them(
    rt: Runtime, app_client: httpx.AsyncClient, operator: ConsoleClient
) -> None:
    live = await make_shop(rt, app_client, name="Live", mode="live")
    payment_id = await live.init_ok(pg_amount="10", pg_currency="KZT", pg_order_id="L-1")

    page = await operator.get(f"/admin/payments/{payment_id}")
    await operator.post(f"/admin/payments/{payment_id}/test", {"action": "approve"})

    assert "data-action=" not in page.text.split("data-logout")[1]
    assert (await payment(rt, payment_id)).status == "new"
    assert "test payments only" in flash_of((await operator.get(f"/admin/payments/{payment_id}")).text)


async def test_viewer_cannot_press_test_buttons(
    rt: Runtime, app_client: httpx.AsyncClient, shop: Shop, server: CallbackServer
) -> None:
    payment_id = await new_payment(shop, server)
    viewer = await signed_in(app_client, rt, "viewer")

    response = await viewer.post(f"/admin/payments/{payment_id}/test", {"action": "approve"})

    assert response.status_code == 403
    assert (await payment(rt, payment_id)).status == "new"


async def test_payment_list_filters(
    rt: Runtime, shop: Shop, server: CallbackServer, operator: ConsoleClient
) -> None:
    small = await new_payment(shop, server, order_id="S-1")
    large = await shop.init_ok(pg_amount="90000", pg_currency="KZT", pg_order_id="L-9")
    await operator.post(f"/admin/payments/{small}/test", {"action": "approve"})
    today = date.today().isoformat()

    by_status = await operator.get("/admin/payments", status="ok")
    by_amount = await operator.get("/admin/payments", amount_min="10000", currency="KZT")
    by_order = await operator.get("/admin/payments", order_id="L-9")
    by_merchant_and_day = await operator.get(
        "/admin/payments", merchant=str(shop.merchant_id), date_from=today, date_to=today
    )
    other_day = await operator.get("/admin/payments", date_to="2001-01-01")

    assert f'data-payment="{small}"' in by_status.text and f'data-payment="{large}"' not in by_status.text
    assert f'data-payment="{large}"' in by_amount.text and f'data-payment="{small}"' not in by_amount.text
    assert f'data-payment="{large}"' in by_order.text and f'data-payment="{small}"' not in by_order.text
    assert by_merchant_and_day.text.count("data-payment=") == 2
    assert "data-payment=" not in other_day.text


async def test_a_dead_callback_is_redelivered_from_the_console(
    rt: Runtime, shop: Shop, server: CallbackServer, operator: ConsoleClient
) -> None:
    server.answer("/shop/result.php", "500")
    payment_id = await new_payment(shop, server)
    await operator.post(f"/admin/payments/{payment_id}/test", {"action": "approve"})
    clock = Clock()
    worker = Worker(rt, clock=clock)
    for _ in range(6):  # the test schedule retries after 1, 2 and 5 s, then gives up
        await drain(worker)
        clock.advance(10)
    dead = await operator.get("/admin/callbacks", status="dead")
    async with rt.db.transaction() as session:
        message = await session.scalar(select(OutboxMessage).where(OutboxMessage.target_url.is_not(None)))
    assert message is not None and message.status == "dead"
    assert f'data-callback="{message.id}"' in dead.text
    detail = await operator.get(f"/admin/callbacks/{message.id}")
    assert detail.text.count("data-attempt=") == 4 and "Internal Server Error" in detail.text
    server.answer("/shop/result.php", "ok")

    response = await operator.post("/admin/callbacks/redeliver", [("ids", str(message.id))])
    await drain(worker)

    assert response.status_code == 303
    async with rt.db.transaction() as session:
        message = await session.get(OutboxMessage, message.id)
        attempts = list(
            await session.scalars(
                select(DeliveryAttempt)
                .where(DeliveryAttempt.outbox_id == message.id)
                .order_by(DeliveryAttempt.id)
            )
        )
        audit = await session.scalar(select(AuditEvent).where(AuditEvent.action == "callback.redeliver"))
    assert message is not None and message.status == "done"
    assert attempts[-1].succeeded and len(attempts) == 5
    assert audit is not None
    assert len(server.received("/shop/result.php")) == 5


async def test_redelivering_one_callback_from_its_page(
    rt: Runtime, shop: Shop, server: CallbackServer, operator: ConsoleClient
) -> None:
    payment_id = await new_payment(shop, server)
    await operator.post(f"/admin/payments/{payment_id}/test", {"action": "approve"})
    worker = Worker(rt)
    await drain(worker)
    async with rt.db.transaction() as session:
        message_id = await session.scalar(
            select(OutboxMessage.id).where(OutboxMessage.target_url.is_not(None))
        )

    await operator.post(f"/admin/callbacks/{message_id}/redeliver")
    await drain(worker)

    assert len(server.received("/shop/result.php")) == 2


async def test_callback_bodies_never_show_a_full_card_number(
    rt: Runtime, shop: Shop, server: CallbackServer, operator: ConsoleClient
) -> None:
    payment_id = await new_payment(shop, server)
    card = validate_card_form(APPROVED, "12", "2030", "Test User", "123", date.today())
    async with rt.db.transaction() as session:
        await payment_flow.submit_card(session, rt, payment_id, card, utcnow())
    await drain(Worker(rt))
    async with rt.db.transaction() as session:
        message_id = await session.scalar(
            select(OutboxMessage.id).where(OutboxMessage.target_url.is_not(None))
        )
        attempt = await session.scalar(select(DeliveryAttempt))
        assert attempt is not None
        attempt.response_body = f"echo pg_card={APPROVED}"  # as if the shop echoed the full number back

    page = await operator.get(f"/admin/callbacks/{message_id}")

    assert APPROVED not in page.text
    assert "440564XXXXXX6150" in page.text


def test_mask_cards_masks_luhn_valid_numbers_only() -> None:
    assert mask_cards(f"pan={APPROVED}&id=1234567890123") == "pan=440564XXXXXX6150&id=1234567890123"
    assert mask_cards("card 4405 6450 0000 6150.") == "card 440564XXXXXX6150."
    assert mask_cards("date 2026-11-23 11:42:09") == "date 2026-11-23 11:42:09"


def test_form_bodies_are_shown_one_field_a_line() -> None:
    assert (
        readable_body("pg_amount=1.00&pg_description=Two+mugs")
        == "pg_amount = 1.00\npg_description = Two mugs"
    )
    assert readable_body("<response/>") == "<response/>"


async def test_ledger_page_shows_balances_transactions_and_the_check(
    rt: Runtime, shop: Shop, server: CallbackServer, operator: ConsoleClient
) -> None:
    payment_id = await new_payment(shop, server)
    await operator.post(f"/admin/payments/{payment_id}/test", {"action": "approve"})

    page = await operator.get("/admin/ledger")
    merchant_only = await operator.get("/admin/ledger", merchant=str(shop.merchant_id))

    assert 'data-ledger-check="ok"' in page.text
    assert f"merchant:{shop.merchant_id}" in page.text and "1500.50 KZT" in page.text
    assert "data-ledger-tx=" in page.text and f"payment {payment_id}" in page.text
    assert f'data-balance="test:merchant:{shop.merchant_id}:available:KZT"' in page.text  # a test payment
    assert f'data-balance="live:merchant:{shop.merchant_id}' not in page.text
    balances = merchant_only.text.split("<h2>Transactions")[0].split('data-book-heading="live"')[1]
    assert "gateway" not in balances


async def test_dashboard_counts_todays_payments_and_callbacks(
    rt: Runtime, shop: Shop, server: CallbackServer, operator: ConsoleClient
) -> None:
    first = await new_payment(shop, server, order_id="D-1")
    await new_payment(shop, server, order_id="D-2")
    await operator.post(f"/admin/payments/{first}/test", {"action": "approve"})

    page = await operator.get("/admin/")

    assert "1500.50 KZT" in page.text and "1 successful test payment(s), not real money" in page.text
    assert ">ok</span> 1<" in page.text and ">new</span> 1<" in page.text
    assert "data-backlog>1<" in page.text


def chart_values(html: str, chart: str, series: str | None = None) -> dict[str, str]:
    """data-day → data-value of the marks in one dashboard chart."""
    section = re.search(rf'<section class="card" data-chart="{chart}"[^>]*>(.*?)</section>', html, re.S)
    assert section is not None, f"no {chart} chart"
    where = rf'data-series="{series}" ' if series else ""
    marks = re.findall(rf'data-day="([\d-]+)" {where}data-value="(\d+)"', section.group(1))
    return dict(marks)


async def test_dashboard_draws_fourteen_days_of_volume_success_and_callbacks(
    rt: Runtime, shop: Shop, server: CallbackServer, operator: ConsoleClient
) -> None:
    paid_today = await new_payment(shop, server, order_id="C-1")
    declined_today = await new_payment(shop, server, order_id="C-2")
    paid_earlier = await new_payment(shop, server, order_id="C-3")
    too_old = await new_payment(shop, server, order_id="C-4")
    for paid in (paid_today, paid_earlier, too_old):
        await operator.post(f"/admin/payments/{paid}/test", {"action": "approve"})
    await operator.post(f"/admin/payments/{declined_today}/test", {"action": "decline", "code": "10005"})
    server.answer("/shop/result.php", "500")
    await Worker(rt).run_once()
    async with rt.db.transaction() as session:
        failed_attempts = await session.scalar(
            select(func.count()).select_from(DeliveryAttempt).where(DeliveryAttempt.succeeded.is_(False))
        )
    assert failed_attempts
    now = utcnow()
    three_days_ago, twenty_days_ago = now - timedelta(days=3), now - timedelta(days=20)
    async with rt.db.transaction() as session:
        await session.execute(
            update(Payment).where(Payment.id == paid_earlier).values(created_at=three_days_ago)
        )
        await session.execute(update(Payment).where(Payment.id == too_old).values(created_at=twenty_days_ago))

    page = await operator.get("/admin/")

    today, earlier = now.strftime("%m-%d"), three_days_ago.strftime("%m-%d")
    volume = chart_values(page.text, "volume")
    assert len(volume) == 14
    assert volume[today] == "150050" and volume[earlier] == "150050"
    assert sum(int(v) for v in volume.values()) == 2 * 150050  # the 20-day-old payment is left out
    success = chart_values(page.text, "success", "payments")
    assert success == {today: "50", earlier: "100"}
    assert chart_values(page.text, "callbacks", "failed") == {today: str(failed_attempts)}
    assert "<script" not in page.text.split('data-chart="volume"')[1].split("<h2>Balances")[0]
    assert "http" not in "".join(re.findall(r"<svg[^>]*>", page.text)).replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )


async def test_payment_list_names_each_payments_merchant(
    rt: Runtime, app_client: httpx.AsyncClient, shop: Shop, server: CallbackServer, operator: ConsoleClient
) -> None:
    tea = await make_shop(rt, app_client, name="Tea & <Co>")
    ours = await new_payment(shop, server, order_id="N-1")
    theirs = await tea.init_ok(pg_amount="10", pg_currency="KZT", pg_order_id="N-2")

    page = await operator.get("/admin/payments")

    rows = dict(re.findall(r'<tr data-payment="(\d+)">(.*?)</tr>', page.text, re.S))
    assert f'<a href="/admin/merchants/{tea.merchant_id}">Tea &amp; &lt;Co&gt;</a>' in rows[str(theirs)]
    assert f'<a href="/admin/merchants/{shop.merchant_id}">Shop</a>' in rows[str(ours)]
