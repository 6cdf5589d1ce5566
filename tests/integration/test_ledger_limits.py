"""Account sums at sizes no 64-bit column holds: they stay exact on both databases, a posting beyond
what storage holds is refused clearly without touching anything else, and the check reports damaged
sums instead of crashing."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text

from greengate.clock import utcnow
from greengate.domain import ledger as L
from greengate.domain.payments import NewPayment
from greengate.runtime import Runtime
from greengate.services import ledger, payment_flow
from greengate.services.ledger import LedgerStorageLimit
from greengate.services.merchants import create_merchant
from greengate.services.payments import init_payment
from greengate.store.models import LedgerTransaction, Merchant
from tests.conftest import is_postgres

TEST = L.Book.TEST


async def _merchant(rt: Runtime, name: str) -> int:
    async with rt.db.transaction() as session:
        merchant, _ = await create_merchant(session, rt.keyring, name=name, mode="test", now=utcnow())
        return merchant.id


async def _post_largest(rt: Runtime, merchant_id: int, n: int) -> None:
    """The largest movement one posting may carry, posted through the ledger service."""
    async with rt.db.transaction() as session:
        await ledger.post(
            session,
            L.payment_succeeded(merchant_id, L.MAX_LEG, "KZT", 0, book=TEST),
            object_type="payment",
            object_id=f"huge-{merchant_id}-{n}",
            now=utcnow(),
        )


async def _card_payment(rt: Runtime, merchant_id: int, amount: int) -> str:
    async with rt.db.transaction() as session:
        merchant = await session.get(Merchant, merchant_id)
        assert merchant is not None
        req = NewPayment(amount=amount, currency="KZT", description="goods")
        payment = await init_payment(session, rt, merchant, req, utcnow())
    async with rt.db.transaction() as session:
        done = await payment_flow.test_action(
            session, payment.id, "approve", now=utcnow(), actor="operator:t"
        )
        return done.status


async def _available(rt: Runtime, merchant_id: int) -> int:
    async with rt.db.transaction() as session:
        return await ledger.balance(session, L.merchant_owner(merchant_id), "available", "KZT", TEST)


async def _transactions(rt: Runtime) -> int:
    async with rt.db.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(LedgerTransaction)) or 0)


async def test_sums_beyond_64_bits_stay_exact_and_other_merchants_pay_on(rt: Runtime) -> None:
    big, other = await _merchant(rt, "Big"), await _merchant(rt, "Other")
    for n in range(3):  # past 2**63 on the merchant's account and on the shared clearing account
        await _post_largest(rt, big, n)
    assert await _available(rt, big) == 3 * L.MAX_LEG > 2**63
    async with rt.db.transaction() as session:
        clearing = await ledger.balance(session, L.GATEWAY, "acquirer_clearing", "KZT", TEST)
        assert clearing == 3 * L.MAX_LEG
        assert await ledger.check(session) == []

    assert await _card_payment(rt, other, 12_345) == "ok"
    assert await _available(rt, other) == 12_345
    async with rt.db.transaction() as session:
        clearing = await ledger.balance(session, L.GATEWAY, "acquirer_clearing", "KZT", TEST)
        assert clearing == 3 * L.MAX_LEG + 12_345
        assert await ledger.check(session) == []


async def test_a_posting_larger_than_one_step_of_storage_is_refused_and_writes_nothing(rt: Runtime) -> None:
    m = await _merchant(rt, "Shop")
    clearing = L.gateway_account(L.Kind.ACQUIRER_CLEARING, "KZT", TEST)
    available = L.merchant_account(m, L.Kind.AVAILABLE, "KZT", TEST)
    draft = L.build_transaction(
        "payment.succeeded",
        [
            L.Posting(clearing, debit=L.MAX_LEG),
            L.Posting(clearing, debit=L.MAX_LEG),
            L.Posting(available, credit=L.MAX_LEG),
            L.Posting(available, credit=L.MAX_LEG),
        ],
    )
    before = await _transactions(rt)
    with pytest.raises(LedgerStorageLimit, match=r"more through .* than one posting can hold"):
        async with rt.db.transaction() as session:
            await ledger.post(session, draft, object_type="payment", object_id="x", now=utcnow())
    assert await _transactions(rt) == before
    with pytest.raises(L.AmountTooLarge):
        L.payment_succeeded(m, L.MAX_LEG + 1, "KZT", 0, book=TEST)


async def test_an_account_at_its_storage_limit_refuses_clearly_and_others_are_unaffected(rt: Runtime) -> None:
    full, other = await _merchant(rt, "Full"), await _merchant(rt, "Other")
    await _post_largest(rt, full, 0)
    async with rt.db.transaction() as session:  # as if centuries of turnover had filled the high half
        await session.execute(
            text(
                "UPDATE ledger_accounts SET credits_posted_hi = :hi"
                " WHERE owner = :owner AND kind = 'available' AND book = 'test'"
            ),
            {"hi": ledger.MAX_HI, "owner": L.merchant_owner(full)},
        )
    before = await _transactions(rt)
    with pytest.raises(LedgerStorageLimit, match="at their storage limit") as refused:
        await _post_largest(rt, full, 1)
    assert f"merchant:{full}/available/KZT" in refused.value.message
    assert await _transactions(rt) == before

    assert await _card_payment(rt, other, 5_000) == "ok"
    assert await _available(rt, other) == 5_000
    async with rt.db.transaction() as session:
        found = await ledger.check_books(session)
    assert found["live"] == [] and "both" not in found
    assert [line for line in found["test"] if f"merchant:{full} available KZT" in line], found


async def test_check_reports_a_sum_stored_as_a_float_instead_of_crashing(
    rt: Runtime, database_url: str
) -> None:
    if is_postgres(database_url):
        pytest.skip("a BIGINT column on PostgreSQL cannot hold a float")
    m = await _merchant(rt, "Old")
    assert await _card_payment(rt, m, 1_000) == "ok"
    async with rt.db.transaction() as session:  # what an older version let SQLite store on overflow
        await session.execute(
            text("UPDATE ledger_accounts SET debits_posted = 9.3e18 WHERE kind = 'acquirer_clearing'")
        )
    async with rt.db.transaction() as session:
        found = await ledger.check_books(session)
    assert any("not exact integers" in line for line in found["test"]), found
