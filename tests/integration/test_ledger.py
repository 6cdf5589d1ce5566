"""The ledger on the real database: posting, locking, the check, and the postings that payments,
refunds and exchange orders make as they change status."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, text, update

from greengate.clock import utcnow
from greengate.domain import ledger as L
from greengate.domain.ledger import InsufficientBalance, LedgerConflict
from greengate.domain.payments import NewPayment, PaymentStatus
from greengate.runtime import Runtime
from greengate.services import ledger, payment_flow
from greengate.services.exchange_orders import complete_order, confirm_paid
from greengate.services.fees import fee_for, set_fee
from greengate.services.merchants import create_merchant
from greengate.services.payments import init_payment, lock_payment, transition
from greengate.store.models import LedgerAccount, LedgerEntry, LedgerTransaction, Merchant, Payment
from greengate.worker.merchant_callbacks import callback_params
from tests.support.exchange import create_order, make_client, make_direction, make_requisites
from tests.support.processes import greengate_env

TXID = "0e3e2357e806b6cdb1f70b54c3a3a17b6714ee1f0e68bebb44a74b1efd512098"


async def make_merchant(rt: Runtime, name: str = "Shop") -> int:
    async with rt.db.transaction() as session:
        merchant, _ = await create_merchant(session, rt.keyring, name=name, mode="test", now=utcnow())
        return merchant.id


async def pay(rt: Runtime, merchant_id: int, amount: int, currency: str = "KZT", **kw: object) -> int:
    """A test payment created and approved by the operator's test button; returns its id."""
    async with rt.db.transaction() as session:
        merchant = await session.get(Merchant, merchant_id)
        assert merchant is not None
        req = NewPayment(amount=amount, currency=currency, description="goods", **kw)  # type: ignore[arg-type]
        payment = await init_payment(session, rt, merchant, req, utcnow())
    async with rt.db.transaction() as session:
        await payment_flow.test_action(session, payment.id, "approve", now=utcnow(), actor="operator:test")
    return payment.id


async def refund(rt: Runtime, payment_id: int, amount: int) -> None:
    async with rt.db.transaction() as session:
        payment = await lock_payment(session, payment_id)
        await transition(
            session,
            payment,
            PaymentStatus.REVOKED,
            actor="merchant",
            now=utcnow(),
            changes={"refunded_amount": payment.refunded_amount + amount},
        )


async def available(rt: Runtime, merchant_id: int, currency: str = "KZT", book: L.Book = L.Book.TEST) -> int:
    """The merchant's available balance in `book`: the test book, where test payments post."""
    async with rt.db.transaction() as session:
        return await ledger.balance(session, L.merchant_owner(merchant_id), "available", currency, book)


async def problems(rt: Runtime) -> list[str]:
    async with rt.db.transaction() as session:
        return await ledger.check(session)


async def transactions_of(rt: Runtime, object_type: str) -> list[LedgerTransaction]:
    async with rt.db.transaction() as session:
        rows = await session.scalars(
            select(LedgerTransaction)
            .where(LedgerTransaction.object_type == object_type)
            .order_by(LedgerTransaction.id)
        )
        return list(rows)


# --- posting ---------------------------------------------------------------------------------


async def test_post_is_idempotent_per_object_and_reason(rt: Runtime) -> None:
    m = await make_merchant(rt)
    draft = L.payment_succeeded(m, 10_000, "KZT", fee=0)
    async with rt.db.transaction() as session:
        first = await ledger.post(session, draft, object_type="payment", object_id="1", now=utcnow())
    async with rt.db.transaction() as session:
        again = await ledger.post(session, draft, object_type="payment", object_id="1", now=utcnow())
    assert again.id == first.id
    assert await available(rt, m, book=L.Book.LIVE) == 10_000
    assert len(await transactions_of(rt, "payment")) == 1


async def test_post_refuses_the_same_movement_with_different_legs(rt: Runtime) -> None:
    m = await make_merchant(rt)
    async with rt.db.transaction() as session:
        await ledger.post(
            session, L.payment_succeeded(m, 100, "KZT", 0), object_type="payment", object_id="1", now=utcnow()
        )
    with pytest.raises(LedgerConflict):
        async with rt.db.transaction() as session:
            await ledger.post(
                session,
                L.payment_succeeded(m, 200, "KZT", 0),
                object_type="payment",
                object_id="1",
                now=utcnow(),
            )


async def test_concurrent_posts_to_one_account_keep_the_cache_equal_to_the_entries(rt: Runtime) -> None:
    m = await make_merchant(rt)

    async def one(i: int) -> None:
        async with rt.db.transaction() as session:
            await ledger.post(
                session,
                L.payment_succeeded(m, 1_000 + i, "KZT", fee=10),
                object_type="payment",
                object_id=str(i),
                now=utcnow(),
            )

    # The accounts do not exist yet: the first posts also race to create them.
    await asyncio.gather(*(one(i) for i in range(20)))
    assert await available(rt, m, book=L.Book.LIVE) == sum(1_000 + i - 10 for i in range(20))
    assert await problems(rt) == []
    async with rt.db.transaction() as session:
        n = await session.scalar(select(func.count()).select_from(LedgerAccount))
    assert n == 4  # clearing, available, fees, fee_income


async def test_the_same_movement_posted_concurrently_is_recorded_once(rt: Runtime) -> None:
    m = await make_merchant(rt)
    draft = L.payment_succeeded(m, 2_500, "KZT", fee=0)

    async def one() -> int:
        async with rt.db.transaction() as session:
            tx = await ledger.post(session, draft, object_type="payment", object_id="42", now=utcnow())
            return tx.id

    ids = await asyncio.gather(*(one() for _ in range(8)))
    assert len(set(ids)) == 1
    assert await available(rt, m, book=L.Book.LIVE) == 2_500
    assert await problems(rt) == []


async def test_concurrent_refunds_and_payments_of_one_merchant_settle_without_deadlock(rt: Runtime) -> None:
    m = await make_merchant(rt)
    async with rt.db.transaction() as session:
        await set_fee(session, m, payment_system="*", percent="1", fixed=0, currency="KZT", now=utcnow())
    first = [await pay(rt, m, 10_000) for _ in range(8)]
    # Refunds lock the merchant's account before the gateway's; payments must take the same order.
    await asyncio.gather(*(refund(rt, p, 5_000) for p in first), *(pay(rt, m, 10_000) for _ in range(8)))
    assert await available(rt, m) == 16 * 9_900 - 8 * 5_000
    assert await problems(rt) == []


async def test_ensure_available_refuses_an_overdraft(rt: Runtime) -> None:
    m = await make_merchant(rt)
    async with rt.db.transaction() as session:
        await ledger.post(
            session, L.payment_succeeded(m, 100, "KZT", 0), object_type="payment", object_id="1", now=utcnow()
        )
    async with rt.db.transaction() as session:
        assert await ledger.ensure_available(session, m, "KZT", 100, L.Book.LIVE) == 100
        with pytest.raises(InsufficientBalance) as exc:
            await ledger.ensure_available(session, m, "KZT", 101, L.Book.LIVE)
        with pytest.raises(InsufficientBalance, match="test book"):
            await ledger.ensure_available(session, m, "KZT", 1, L.Book.TEST)
    assert exc.value.code == "insufficient_balance"


async def test_post_itself_refuses_to_make_a_merchant_account_negative(rt: Runtime) -> None:
    m = await make_merchant(rt)
    with pytest.raises(InsufficientBalance):
        async with rt.db.transaction() as session:
            await ledger.post(
                session,
                L.payment_refunded(m, 1, "KZT"),
                object_type="payment_refund",
                object_id="1:1",
                now=utcnow(),
            )
    assert await transactions_of(rt, "payment_refund") == []


# --- the check -------------------------------------------------------------------------------


async def test_check_detects_a_tampered_cached_balance(rt: Runtime) -> None:
    m = await make_merchant(rt)
    await pay(rt, m, 5_000)
    assert await problems(rt) == []
    async with rt.db.transaction() as session:
        await session.execute(
            update(LedgerAccount)
            .where(LedgerAccount.owner == L.merchant_owner(m), LedgerAccount.kind == "available")
            .values(credits_posted=LedgerAccount.credits_posted + 1)
        )
    found = await problems(rt)
    assert len(found) == 1
    assert f"merchant:{m} available KZT" in found[0] and "differ from its entries" in found[0]


async def test_check_detects_an_unbalanced_transaction(rt: Runtime) -> None:
    m = await make_merchant(rt)
    await pay(rt, m, 5_000)
    async with rt.db.transaction() as session:
        tx = await session.scalar(select(LedgerTransaction))
        account = await session.scalar(select(LedgerAccount).where(LedgerAccount.kind == "acquirer_clearing"))
        assert tx is not None and account is not None
        session.add(
            LedgerEntry(
                transaction_id=tx.id,
                account_id=account.id,
                debit=1,
                credit=0,
                currency="KZT",
                created_at=utcnow(),
            )
        )
    found = await problems(rt)
    assert any(
        f"transaction {tx.id} (payment.succeeded payment" in p and "does not balance" in p for p in found
    )


async def greengate(database_url: str, workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "greengate.cli", *args],
        env=greengate_env(database_url),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_ledger_check_command_exits_1_with_problems_and_0_when_ok(
    rt: Runtime, database_url: str, tmp_path: Path
) -> None:
    m = await make_merchant(rt)
    await pay(rt, m, 5_000)

    async def run(*args: str) -> subprocess.CompletedProcess[str]:
        return await greengate(database_url, tmp_path, "ledger", *args)

    ok = await run("check")
    assert (ok.returncode, ok.stdout.splitlines()) == (0, ["live book: OK", "test book: OK"]), ok.stderr
    listed = await run("balances", "--merchant", str(m), "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == [
        {"book": "test", "owner": f"merchant:{m}", "kind": "available", "currency": "KZT", "balance": "50.00"}
    ]
    async with rt.db.transaction() as session:
        await session.execute(
            text("UPDATE ledger_accounts SET debits_posted = debits_posted + 7 WHERE kind = :kind"),
            {"kind": "acquirer_clearing"},
        )
    bad = await run("check")
    assert bad.returncode == 1
    assert bad.stdout.splitlines()[:2] == ["live book: OK", "test book: 1 problem"], bad.stdout
    assert "gateway acquirer_clearing KZT" in bad.stdout


# --- payments --------------------------------------------------------------------------------


async def test_approved_payment_posts_a_balanced_transaction_with_the_fee(rt: Runtime) -> None:
    m = await make_merchant(rt)
    async with rt.db.transaction() as session:
        await set_fee(
            session, m, payment_system="BANKCARD", percent="2.5", fixed=1_000, currency="KZT", now=utcnow()
        )
        await set_fee(session, m, payment_system="*", percent="9", fixed=0, currency="KZT", now=utcnow())
    payment_id = await pay(rt, m, 100_000)  # 1000.00 KZT: 2.5 % + 10.00 = 35.00
    [tx] = await transactions_of(rt, "payment")
    assert (tx.reason, tx.object_id) == ("payment.succeeded", str(payment_id))
    async with rt.db.transaction() as session:
        legs = await ledger.entries_of(session, tx.id)
        payment = await session.get(Payment, payment_id)
    assert sum(d for _, d, _ in legs) == sum(c for _, _, c in legs) == 100_000 + 3_500
    assert payment is not None and payment.fee_amount == 3_500
    assert await available(rt, m) == 96_500
    async with rt.db.transaction() as session:
        assert await ledger.balance(session, "gateway", "fee_income", "KZT", L.Book.TEST) == 3_500
        assert await ledger.balance(session, "gateway", "acquirer_clearing", "KZT", L.Book.TEST) == 100_000
        assert await ledger.balance(session, "gateway", "acquirer_clearing", "KZT", L.Book.LIVE) == 0
    params = dict(callback_params(payment, None, kind="result", result="1", can_reject=True))
    assert (params["pg_amount"], params["pg_net_amount"]) == ("1000.00", "965.00")
    assert await problems(rt) == []


async def test_merchant_fee_command_sets_the_fee_in_major_units(
    rt: Runtime, database_url: str, tmp_path: Path
) -> None:
    m = await make_merchant(rt)
    args = ["merchant", "fee", str(m), "--payment-system", "BANKCARD", "--percent", "2.5", "--fixed", "10"]
    done = await greengate(database_url, tmp_path, *args, "--currency", "KZT")
    assert done.returncode == 0, done.stderr
    assert "2.5% + 10.00" in done.stdout
    async with rt.db.transaction() as session:
        assert await fee_for(session, m, "BANKCARD", 100_000, "KZT") == 3_500
    refused = await greengate(database_url, tmp_path, *args, "--currency", "KZT", "--percent", "150")
    assert refused.returncode == 1 and "percent" in refused.stderr


async def test_fee_rule_for_the_payment_system_wins_over_the_default(rt: Runtime) -> None:
    m = await make_merchant(rt)
    async with rt.db.transaction() as session:
        await set_fee(session, m, payment_system="*", percent="1", fixed=0, currency="KZT", now=utcnow())
        await set_fee(
            session, m, payment_system="MOBILE_COMMERCE", percent="3", fixed=0, currency="KZT", now=utcnow()
        )
        assert await fee_for(session, m, "BANKCARD", 10_000, "KZT") == 100
        assert await fee_for(session, m, "MOBILE_COMMERCE", 10_000, "KZT") == 300
        assert await fee_for(session, m, "BANKCARD", 10_000, "RUB") == 0


async def test_two_step_payment_authorisation_waits_in_pending(rt: Runtime) -> None:
    m = await make_merchant(rt)
    await pay(rt, m, 20_000, two_step=True)
    async with rt.db.transaction() as session:
        assert await ledger.balance(session, L.merchant_owner(m), "pending", "KZT", L.Book.TEST) == 20_000
    assert await available(rt, m) == 0
    [tx] = await transactions_of(rt, "payment")
    assert tx.reason == "payment.authorized"


async def test_rejected_result_reverses_the_payment_with_its_fee(rt: Runtime) -> None:
    m = await make_merchant(rt)
    async with rt.db.transaction() as session:
        await set_fee(session, m, payment_system="*", percent="2", fixed=30, currency="KZT", now=utcnow())
    payment_id = await pay(rt, m, 7_000)  # fee 1.70: the merchant nets 68.30
    async with rt.db.transaction() as session:
        assert await payment_flow.refund_rejected_result(
            session, payment_id, reason="out of stock", now=utcnow()
        )
    [tx] = await transactions_of(rt, "payment_refund")
    assert (tx.reason, tx.object_id) == ("payment.reversed", f"{payment_id}:7000")
    async with rt.db.transaction() as session:
        assert await ledger.balance(session, L.GATEWAY, "fee_income", "KZT", L.Book.TEST) == 0
    assert await available(rt, m) == 0
    assert await problems(rt) == []


async def test_refund_beyond_the_available_balance_is_refused_and_changes_nothing(rt: Runtime) -> None:
    m = await make_merchant(rt)
    async with rt.db.transaction() as session:
        await set_fee(session, m, payment_system="*", percent="0", fixed=100, currency="KZT", now=utcnow())
    payment_id = await pay(rt, m, 7_000)  # the merchant nets 6 900; the fee is not returned on refund
    with pytest.raises(InsufficientBalance):
        await refund(rt, payment_id, 7_000)
    async with rt.db.transaction() as session:
        payment = await session.get(Payment, payment_id)
    assert payment is not None and (payment.status, payment.refunded_amount) == ("ok", 0)
    assert await available(rt, m) == 6_900


async def test_partial_refunds_each_post_once(rt: Runtime) -> None:
    m = await make_merchant(rt)
    payment_id = await pay(rt, m, 10_000)
    await refund(rt, payment_id, 3_000)
    await refund(rt, payment_id, 2_000)
    assert [t.object_id for t in await transactions_of(rt, "payment_refund")] == [
        f"{payment_id}:3000",
        f"{payment_id}:5000",
    ]
    assert await available(rt, m) == 5_000


# --- exchange orders -------------------------------------------------------------------------


async def test_exchange_order_paid_and_completed_post_both_ledgers(
    rt: Runtime, app_client: httpx.AsyncClient
) -> None:
    client = await make_client(rt)
    await make_direction(rt)
    await make_requisites(rt, 1)
    created = await create_order(app_client, client, "9999")
    assert created.status_code == 200, created.text
    order_id = int(created.json()["items"][0]["order_id"])
    async with rt.db.transaction() as session:
        order = await confirm_paid(session, rt, order_id, now=utcnow(), actor="operator:test")
        fiat, sat, rate = order.paid_amount, order.amount_receivable, order.exchange_rate
    [paid] = await transactions_of(rt, "exchange_order")
    assert (paid.reason, paid.object_id, paid.rate) == ("exchange.order_paid", str(order_id), rate)
    async with rt.db.transaction() as session:
        await complete_order(session, rt, order_id, txid=TXID, now=utcnow(), actor="operator:test")
    async with rt.db.transaction() as session:
        got = {(b.owner, b.kind, b.currency): b.balance for b in await ledger.balances(session)}
    assert got == {
        ("gateway", "acquirer_clearing", "RUB"): fiat,
        ("gateway", "exchange_fiat", "RUB"): fiat,
        ("gateway", "exchange_btc", "BTC"): sat,
        ("gateway", "exchange_btc_liability", "BTC"): 0,
        ("gateway", "payout_clearing", "BTC"): sat,
    }
    assert [t.reason for t in await transactions_of(rt, "exchange_order")] == [
        "exchange.order_paid",
        "exchange.order_completed",
    ]
    assert await problems(rt) == []


# --- any sequence of payments and refunds keeps the books -----------------------------------

STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("pay"), st.integers(min_value=100, max_value=5_000_000)),
        st.tuples(st.just("refund"), st.integers(min_value=0, max_value=10), st.integers(1, 100)),
    ),
    min_size=1,
    max_size=8,
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    steps=STEPS,
    basis_points=st.integers(min_value=0, max_value=500),
    fixed=st.integers(min_value=0, max_value=500),
)
async def test_payments_and_refunds_keep_the_books_consistent(
    rt: Runtime, steps: list[tuple[object, ...]], basis_points: int, fixed: int
) -> None:
    m = await make_merchant(rt, "Property shop")
    async with rt.db.transaction() as session:
        percent = str(Decimal(basis_points) / 100)
        await set_fee(
            session, m, payment_system="*", percent=percent, fixed=fixed, currency="KZT", now=utcnow()
        )
    paid: list[tuple[int, int]] = []  # (payment id, amount)
    refunded: dict[int, int] = {}
    expected = 0
    for step in steps:
        if step[0] == "pay":
            amount = int(step[1])  # type: ignore[call-overload]
            paid.append((await pay(rt, m, amount), amount))
            # Half a minor unit rounds up: (2x + 1) // 2 in integers.
            fee = min(amount, (amount * basis_points * 2 + 10_000) // 20_000 + fixed)
            expected += amount - fee
        elif paid:
            payment_id, amount = paid[int(step[1]) % len(paid)]  # type: ignore[call-overload]
            left = amount - refunded.get(payment_id, 0)
            part = max(1, left * int(step[2]) // 100)  # type: ignore[call-overload]
            if left == 0:
                continue
            try:
                await refund(rt, payment_id, part)
            except InsufficientBalance:
                assert part > expected
                continue
            refunded[payment_id] = refunded.get(payment_id, 0) + part
            expected -= part
    assert await available(rt, m) == expected
    assert await problems(rt) == []


async def test_balances_command_labels_the_books_and_shows_live_money_alone_when_asked(
    rt: Runtime, database_url: str, tmp_path: Path
) -> None:
    m = await make_merchant(rt)
    await pay(rt, m, 5_000)  # a test payment
    async with rt.db.transaction() as session:
        await ledger.post(
            session,
            L.payment_succeeded(m, 700, "KZT", 0),
            object_type="payment",
            object_id="live-1",
            now=utcnow(),
        )

    text_out = await greengate(database_url, tmp_path, "ledger", "balances", "--merchant", str(m))
    live_only = await greengate(
        database_url, tmp_path, "ledger", "balances", "--merchant", str(m), "--book", "live"
    )
    capped = await greengate(
        database_url, tmp_path, "merchant", "cap", str(m), "--currency", "KZT", "--max", "40"
    )

    lines = text_out.stdout.splitlines()
    assert lines[0].split() == ["BOOK", "OWNER", "KIND", "CURRENCY", "BALANCE"]
    assert lines[1].split() == ["live", f"merchant:{m}", "available", "KZT", "7.00"]
    assert lines[2].split() == ["TEST", f"merchant:{m}", "available", "KZT", "50.00"]
    assert lines[3].startswith("TEST: ") and "not real" in lines[3]
    assert [line.split()[0] for line in live_only.stdout.splitlines()] == ["BOOK", "live"]
    assert capped.stdout.strip() == f"merchant {m} cap in KZT: 40.00 (its own)", capped.stderr
    refused = await greengate(
        database_url, tmp_path, "merchant", "cap", str(m), "--currency", "KZT", "--max", "2e3"
    )
    assert refused.returncode == 1
