"""Console payouts (test buttons), refunds and saved cards over HTTP."""

from __future__ import annotations

from itertools import count

import httpx
import pytest
from sqlalchemy import select

from greengate.clock import utcnow
from greengate.domain import ledger as ledger_domain
from greengate.runtime import Runtime
from greengate.services import ledger
from greengate.services.merchants import create_merchant
from greengate.store.models import AuditEvent, Payout
from tests.support.console import ConsoleClient, signed_in
from tests.support.merchant_api import Answer, signed

_funding = count(1)


@pytest.fixture
async def operator(app_client: httpx.AsyncClient, rt: Runtime) -> ConsoleClient:
    return await signed_in(app_client, rt, "operator")


async def make_payout(rt: Runtime, app_client: httpx.AsyncClient, order_id: str = "PO-1") -> int:
    """A test-mode reg2nonreg payout of 1500 KZT waiting for the recipient's card."""
    async with rt.db.transaction() as session:
        merchant, creds = await create_merchant(
            session, rt.keyring, name="Payouts", mode="test", now=utcnow()
        )
        await ledger.post(
            session,
            ledger_domain.payment_succeeded(merchant.id, 1_000_000, "KZT", 0, book=ledger_domain.Book.TEST),
            object_type="test_funding",
            object_id=f"{merchant.id}:{next(_funding)}",
            now=utcnow(),
        )
    fields = {
        "pg_merchant_id": str(merchant.id),
        "pg_amount": "1500",
        "pg_order_id": order_id,
        "pg_user_id": "user-7",
        "pg_description": "Prize",
    }
    params = signed("reg2nonreg", list(fields.items()), creds.payout_secret)
    Answer.read(await app_client.post("/api/reg2nonreg", data=dict(params)), "reg2nonreg").assert_ok(
        creds.payout_secret
    )
    async with rt.db.transaction() as session:
        payout_id = await session.scalar(select(Payout.id).where(Payout.order_id == order_id))
    assert payout_id is not None
    return payout_id


@pytest.mark.parametrize(("button", "status"), [("approve", "ok"), ("decline", "failed")])
async def test_payout_test_buttons(
    rt: Runtime, app_client: httpx.AsyncClient, operator: ConsoleClient, button: str, status: str
) -> None:
    payout_id = await make_payout(rt, app_client)
    page = await operator.get(f"/admin/payouts/{payout_id}")
    assert f'data-action="payout-{button}"' in page.text or f"data-action=payout-{button}" in page.text

    await operator.post(f"/admin/payouts/{payout_id}/test", {"action": button})

    async with rt.db.transaction() as session:
        payout = await session.get(Payout, payout_id)
        audit = await session.scalar(select(AuditEvent).where(AuditEvent.action == f"payout.test.{button}"))
    assert payout is not None and payout.status == status
    assert audit is not None
    page = await operator.get(f"/admin/payouts/{payout_id}")
    assert (
        f'data-payout-status="{status}"' in page.text
        and "data-action=" not in page.text.split("</header>")[1]
    )


async def test_resolve_button_ends_a_processing_test_payout_as_its_card_says(
    rt: Runtime, app_client: httpx.AsyncClient, operator: ConsoleClient
) -> None:
    payout_id = await make_payout(rt, app_client)
    async with rt.db.transaction() as session:
        token = (await session.get(Payout, payout_id)).access_token  # type: ignore[union-attr]
    # 5507841999732294: processing, then paid out (docs/test-cards.md).
    await app_client.post(f"/payout/{token}/card", data={"number": "5507841999732294"})
    page = await operator.get(f"/admin/payouts/{payout_id}")
    assert 'data-payout-status="processing"' in page.text and "data-action=payout-resolve" in page.text

    await operator.post(f"/admin/payouts/{payout_id}/test", {"action": "resolve"})

    async with rt.db.transaction() as session:
        payout = await session.get(Payout, payout_id)
    assert payout is not None and payout.status == "ok"


async def test_payout_list_filters(
    rt: Runtime, app_client: httpx.AsyncClient, operator: ConsoleClient
) -> None:
    payout_id = await make_payout(rt, app_client)

    hit = await operator.get(
        "/admin/payouts", status="new", order_id="PO-1", amount_min="1000", currency="KZT"
    )
    miss = await operator.get("/admin/payouts", amount_min="2000", currency="KZT")

    assert f'data-payout="{payout_id}"' in hit.text
    assert "data-payout=" not in miss.text


async def test_viewer_cannot_press_payout_buttons(rt: Runtime, app_client: httpx.AsyncClient) -> None:
    payout_id = await make_payout(rt, app_client)
    viewer = await signed_in(app_client, rt, "viewer")

    assert (await viewer.post(f"/admin/payouts/{payout_id}/test", {"action": "approve"})).status_code == 403


@pytest.mark.parametrize("path", ["/admin/refunds", "/admin/cards", "/admin/payouts"])
async def test_operation_lists_render_for_a_viewer(
    rt: Runtime, app_client: httpx.AsyncClient, path: str
) -> None:
    viewer = await signed_in(app_client, rt, "viewer")

    response = await viewer.get(path, status="active", kind="refund", merchant="1", date_from="2020-01-01")

    assert response.status_code == 200 and "data-page=" in response.text
