"""The books hold whatever merchants do: for any random sequence of payments, refunds, captures,
payouts and switches between test and live mode, run through the services the HTTP handlers and
hosted pages use, `greengate ledger check` finds nothing in either book, and each book's available
balance is its own successes − refunds − fees − payouts. A mode switch moves no money."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from itertools import count
from pathlib import Path

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from greengate.clock import utcnow
from greengate.domain import ledger as L
from greengate.domain.card_rules import validate_card_form
from greengate.domain.cards import mask_number
from greengate.domain.ledger import InsufficientBalance
from greengate.domain.payments import NewPayment
from greengate.domain.payouts import NewPayout, PayoutKind
from greengate.domain.secret import Secret
from greengate.runtime import Runtime
from greengate.services import captures, ledger, payment_flow, payouts, refunds
from greengate.services.fees import compute_fee, set_fee
from greengate.services.merchants import MerchantApiSettings, create_merchant, update_merchant_settings
from greengate.services.payments import cancel_payment, init_payment, lock_payment
from greengate.store.models import Merchant
from tests.support.processes import greengate_env

APPROVED = "4405645000006150"
PAYOUT_OK = "4671593866478252"
PAYOUT_DECLINED = "5325349472901311"  # error 10000
REAL_CARD = "4111111111111111"  # live: the manual acquirer waits for the operator
_orders = count(1)

AMOUNT = st.integers(min_value=100, max_value=2_000_000)
PICK = st.integers(min_value=0, max_value=20)  # which earlier payment (modulo how many fit)
SHARE = st.integers(min_value=1, max_value=100)  # percent of what is left; 100 = all of it
LIVE = st.booleans()  # asks for a live movement; a test-mode merchant makes it a test one all the same
STEP = st.one_of(
    st.tuples(st.just("pay"), AMOUNT, LIVE),
    st.tuples(st.just("authorise"), AMOUNT),
    st.tuples(st.just("capture"), PICK, SHARE),
    st.tuples(st.just("cancel"), PICK),
    st.tuples(st.just("refund"), PICK, SHARE),
    st.tuples(st.just("payout"), AMOUNT, st.booleans(), LIVE),
    st.tuples(st.just("switch")),
)


@dataclass
class Paid:
    payment_id: int
    two_step: bool
    amount: int
    book: L.Book
    settled: int = 0  # what the payer was charged: the amount, or the capture
    refunded: int = 0
    open_authorisation: bool = False


@dataclass
class Model:
    """What the merchant's available balance must be, kept as its parts."""

    successes: int = 0
    refunds: int = 0
    fees: int = 0
    payouts: int = 0

    @property
    def available(self) -> int:
        return self.successes - self.refunds - self.fees - self.payouts


async def _new_payment(rt: Runtime, merchant_id: int, amount: int, two_step: bool, live: bool) -> int:
    """A test payment paid with the sandbox's test card, or a live one the operator approves after the
    manual acquirer took a real card."""
    async with rt.db.transaction() as session:
        merchant = await session.get(Merchant, merchant_id)
        assert merchant is not None
        req = NewPayment(
            amount=amount, currency="KZT", description="goods", two_step=two_step, testing=not live
        )
        payment = await init_payment(session, rt, merchant, req, utcnow())
    assert payment.testing is not live
    card = validate_card_form(REAL_CARD if live else APPROVED, "12", "2030", "Test User", "123", date.today())
    async with rt.db.transaction() as session:  # the hosted page's card form
        status = (await payment_flow.submit_card(session, rt, payment.id, card, utcnow())).status
    if live:
        assert status == "pending"
        async with rt.db.transaction() as session:
            status = (
                await payment_flow.test_action(
                    session, payment.id, "approve", now=utcnow(), actor="operator:t"
                )
            ).status
    assert status == "ok"
    return payment.id


async def _payout(rt: Runtime, merchant_id: int, amount: int, succeeds: bool, live: bool) -> str:
    """api/reg2nonreg, then the recipient's card on the hosted page; the payout's final status. A live
    payout waits for the operator, who approves or declines it."""
    now = utcnow()
    req = NewPayout(
        kind=PayoutKind.TO_NEW_CARD,
        amount=amount,
        currency="KZT",
        order_id=f"PO-{next(_orders)}",
        description="prize",
        expires_at=now + timedelta(hours=1),
        testing=not live,
    )
    async with rt.db.transaction() as session:
        merchant = await session.get(Merchant, merchant_id)
        assert merchant is not None
        created = await payouts.create_payout(session, rt, merchant, req, fingerprint=req.order_id, now=now)
    assert created.payout.testing is not live
    number = REAL_CARD if live else (PAYOUT_OK if succeeds else PAYOUT_DECLINED)
    async with rt.db.transaction() as session:
        payout = await payouts.submit_card(
            session, rt, created.payout.id, Secret(number), mask_number(number), "VI", utcnow()
        )
        if not live:
            return payout.status
    assert payout.status == "processing"
    async with rt.db.transaction() as session:
        action = "approve" if succeeds else "decline"
        payout = await payouts.test_action(
            session, payout.id, action, now=utcnow(), actor="operator:t", rt=rt
        )
        return payout.status


async def _mode(rt: Runtime, merchant_id: int) -> str:
    async with rt.db.transaction() as session:
        merchant = await session.get(Merchant, merchant_id)
        assert merchant is not None
        return merchant.mode


async def _switch(rt: Runtime, merchant_id: int) -> None:
    """The operator switches the merchant between test and live mode."""
    async with rt.db.transaction() as session:
        merchant = await session.get(Merchant, merchant_id)
        assert merchant is not None
        mode = "live" if merchant.mode == "test" else "test"
        await update_merchant_settings(
            session, merchant, MerchantApiSettings(mode=mode), now=utcnow(), allow_private_callbacks=True
        )


async def _run(
    rt: Runtime, merchant_id: int, steps: list[tuple[object, ...]], pct: Decimal, fixed: int
) -> dict[L.Book, Model]:
    models = {book: Model() for book in L.Book}
    paid: list[Paid] = []
    for step in steps:
        kind = step[0]
        event(str(kind))
        live_mode = await _mode(rt, merchant_id) == "live"
        if kind in ("pay", "authorise"):
            amount = int(step[1])  # type: ignore[call-overload]
            two_step = kind == "authorise"
            live = live_mode and kind == "pay" and bool(step[2])
            book = L.Book.LIVE if live else L.Book.TEST
            event(f"{kind} in the {book.value} book")
            model = models[book]
            row = Paid(await _new_payment(rt, merchant_id, amount, two_step, live), two_step, amount, book)
            if two_step:
                row.open_authorisation = True  # waits in pending; nothing is available yet
            else:
                row.settled = amount
                model.successes += amount
                model.fees += compute_fee(amount, pct, fixed)
            paid.append(row)
        elif kind in ("capture", "cancel"):
            waiting = [p for p in paid if p.open_authorisation]
            if not waiting:
                continue
            row = waiting[int(step[1]) % len(waiting)]  # type: ignore[call-overload]
            model = models[row.book]
            async with rt.db.transaction() as session:  # do_capture.php / cancel.php
                payment = await lock_payment(session, row.payment_id)
                if kind == "cancel":
                    await cancel_payment(session, payment, utcnow(), actor="merchant")
                else:
                    share = int(step[2])  # type: ignore[call-overload]
                    amount = None if share == 100 else max(1, row.amount * share // 100)
                    capture = await captures.capture_payment(
                        session, payment, amount, actor="merchant", now=utcnow()
                    )
                    row.settled = capture.amount
                    model.successes += capture.amount
                    model.fees += compute_fee(capture.amount, pct, fixed)
            row.open_authorisation = False
        elif kind == "refund":
            settled = [p for p in paid if p.settled > p.refunded]
            if not settled:
                continue
            row = settled[int(step[1]) % len(settled)]  # type: ignore[call-overload]
            model = models[row.book]
            left, share = row.settled - row.refunded, int(step[2])  # type: ignore[call-overload]
            part = left if share == 100 else max(1, left * share // 100)
            try:
                async with rt.db.transaction() as session:  # revoke.php
                    payment = await lock_payment(session, row.payment_id)
                    refund = await refunds.refund_payment(
                        session, payment, None if share == 100 else part, actor="merchant", now=utcnow()
                    )
                    assert refund.amount == part
            except InsufficientBalance:
                assert part > model.available, (part, model)
                continue
            row.refunded += part
            model.refunds += part
        elif kind == "payout":
            amount, succeeds = int(step[1]), bool(step[2])  # type: ignore[call-overload]
            live = live_mode and bool(step[3])
            model = models[L.Book.LIVE if live else L.Book.TEST]
            try:
                status = await _payout(rt, merchant_id, amount, succeeds, live)
            except payouts.PayoutInsufficientBalance as refused:
                assert amount > model.available, (amount, model)
                assert f"{'live' if live else 'test'} balance" in refused.message
                continue
            assert status == ("ok" if succeeds else "failed")
            if succeeds:
                model.payouts += amount
        else:
            before = {book: await _available(rt, merchant_id, book) for book in L.Book}
            await _switch(rt, merchant_id)
            assert {book: await _available(rt, merchant_id, book) for book in L.Book} == before
        assert all(m.available >= 0 for m in models.values())
    return models


async def _available(rt: Runtime, merchant_id: int, book: L.Book) -> int:
    async with rt.db.transaction() as session:
        return await ledger.balance(session, L.merchant_owner(merchant_id), "available", "KZT", book)


async def _ledger_check_command(database_url: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "greengate.cli", "ledger", "check"],
        env=greengate_env(database_url),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
    )


_command_ran: list[bool] = []


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    steps=st.lists(STEP, min_size=1, max_size=14),
    basis_points=st.integers(min_value=0, max_value=500),
    fixed=st.integers(min_value=0, max_value=300),
)
@example(  # runs first: every kind of step in both books, and the operator's command at its end
    steps=[
        ("pay", 50_000, True),
        ("authorise", 30_000),
        ("capture", 0, 60),
        ("refund", 1, 50),
        ("authorise", 9_000),
        ("cancel", 0),
        ("payout", 20_000, True, True),
        ("payout", 5_000, False, False),
        ("switch",),  # to live: the test money stays in the test book
        ("payout", 1_000, True, True),  # live, with no live money: refused
        ("pay", 40_000, True),
        ("payout", 15_000, True, True),
        ("payout", 2_000, False, True),
        ("payout", 3_000, True, False),  # a test payout of a live merchant draws on test money
        ("refund", 3, 100),
        ("switch",),
        ("payout", 900_000, True, False),  # more than is there: refused
    ],
    basis_points=250,
    fixed=100,
)
async def test_any_sequence_of_payments_refunds_captures_and_payouts_keeps_the_books(
    rt: Runtime,
    database_url: str,
    tmp_path: Path,
    steps: list[tuple[object, ...]],
    basis_points: int,
    fixed: int,
) -> None:
    pct = Decimal(basis_points) / 100
    async with rt.db.transaction() as session:
        merchant, _ = await create_merchant(
            session, rt.keyring, name="Property shop", mode="test", now=utcnow()
        )
        await set_fee(
            session,
            merchant.id,
            payment_system="*",
            percent=str(pct),
            fixed=fixed,
            currency="KZT",
            now=utcnow(),
        )

    models = await _run(rt, merchant.id, steps, pct, fixed)

    for book, model in models.items():
        assert await _available(rt, merchant.id, book) == model.available, (book, model)
    async with rt.db.transaction() as session:
        assert await ledger.check_books(session) == {"live": [], "test": []}
    if not _command_ran:  # once per run (the explicit example): the operator's command agrees
        _command_ran.append(True)
        result = await _ledger_check_command(database_url, tmp_path)
        assert (result.returncode, result.stdout.splitlines()) == (0, ["live book: OK", "test book: OK"]), (
            result.stdout + result.stderr
        )
