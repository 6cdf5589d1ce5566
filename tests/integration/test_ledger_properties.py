"""The books hold whatever merchants do: for any random sequence of payments, refunds, captures and
payouts, run through the services the HTTP handlers and hosted pages use, `greengate ledger check`
finds nothing and the merchant's available balance is successes − refunds − fees − payouts."""

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
from greengate.services.merchants import create_merchant
from greengate.services.payments import cancel_payment, init_payment, lock_payment
from greengate.store.models import Merchant
from tests.support.processes import greengate_env

APPROVED = "4405645000006150"
PAYOUT_OK = "4671593866478252"
PAYOUT_DECLINED = "5325349472901311"  # error 10000
_orders = count(1)

AMOUNT = st.integers(min_value=100, max_value=2_000_000)
PICK = st.integers(min_value=0, max_value=20)  # which earlier payment (modulo how many fit)
SHARE = st.integers(min_value=1, max_value=100)  # percent of what is left; 100 = all of it
STEP = st.one_of(
    st.tuples(st.just("pay"), AMOUNT),
    st.tuples(st.just("authorise"), AMOUNT),
    st.tuples(st.just("capture"), PICK, SHARE),
    st.tuples(st.just("cancel"), PICK),
    st.tuples(st.just("refund"), PICK, SHARE),
    st.tuples(st.just("payout"), AMOUNT, st.booleans()),
)


@dataclass
class Paid:
    payment_id: int
    two_step: bool
    amount: int
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


async def _new_payment(rt: Runtime, merchant_id: int, amount: int, two_step: bool) -> int:
    async with rt.db.transaction() as session:
        merchant = await session.get(Merchant, merchant_id)
        assert merchant is not None
        req = NewPayment(amount=amount, currency="KZT", description="goods", two_step=two_step)
        payment = await init_payment(session, rt, merchant, req, utcnow())
    card = validate_card_form(APPROVED, "12", "2030", "Test User", "123", date.today())
    async with rt.db.transaction() as session:  # the hosted page's card form
        status = (await payment_flow.submit_card(session, rt, payment.id, card, utcnow())).status
    assert status == "ok"
    return payment.id


async def _payout(rt: Runtime, merchant_id: int, amount: int, number: str) -> str:
    """api/reg2nonreg, then the recipient's card on the hosted page; the payout's final status."""
    now = utcnow()
    req = NewPayout(
        kind=PayoutKind.TO_NEW_CARD,
        amount=amount,
        currency="KZT",
        order_id=f"PO-{next(_orders)}",
        description="prize",
        expires_at=now + timedelta(hours=1),
    )
    async with rt.db.transaction() as session:
        merchant = await session.get(Merchant, merchant_id)
        assert merchant is not None
        created = await payouts.create_payout(session, rt, merchant, req, fingerprint=req.order_id, now=now)
    async with rt.db.transaction() as session:
        payout = await payouts.submit_card(
            session, rt, created.payout.id, Secret(number), mask_number(number), "VI", utcnow()
        )
        return payout.status


async def _run(
    rt: Runtime, merchant_id: int, steps: list[tuple[object, ...]], pct: Decimal, fixed: int
) -> Model:
    model = Model()
    paid: list[Paid] = []
    for step in steps:
        kind = step[0]
        event(str(kind))
        if kind in ("pay", "authorise"):
            amount = int(step[1])  # type: ignore[call-overload]
            two_step = kind == "authorise"
            row = Paid(await _new_payment(rt, merchant_id, amount, two_step), two_step, amount)
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
        else:
            amount, succeeds = int(step[1]), bool(step[2])  # type: ignore[call-overload]
            try:
                status = await _payout(rt, merchant_id, amount, PAYOUT_OK if succeeds else PAYOUT_DECLINED)
            except payouts.PayoutInsufficientBalance:
                assert amount > model.available, (amount, model)
                continue
            assert status == ("ok" if succeeds else "failed")
            if succeeds:
                model.payouts += amount
        assert model.available >= 0
    return model


async def _available(rt: Runtime, merchant_id: int) -> int:
    async with rt.db.transaction() as session:
        return await ledger.balance(session, L.merchant_owner(merchant_id), "available", "KZT")


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
    steps=st.lists(STEP, min_size=1, max_size=12),
    basis_points=st.integers(min_value=0, max_value=500),
    fixed=st.integers(min_value=0, max_value=300),
)
@example(  # runs first: every kind of step, and the operator's command at its end
    steps=[
        ("pay", 50_000),
        ("authorise", 30_000),
        ("capture", 0, 60),
        ("refund", 1, 50),
        ("authorise", 9_000),
        ("cancel", 0),
        ("payout", 20_000, True),
        ("payout", 5_000, False),
        ("refund", 0, 100),
        ("payout", 900_000, True),  # more than is there: refused
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

    model = await _run(rt, merchant.id, steps, pct, fixed)

    assert await _available(rt, merchant.id) == model.available, model
    async with rt.db.transaction() as session:
        assert await ledger.check(session) == []
    if not _command_ran:  # once per run (the explicit example): the operator's command agrees
        _command_ran.append(True)
        result = await _ledger_check_command(database_url, tmp_path)
        assert (result.returncode, result.stdout.strip()) == (0, "OK"), result.stdout + result.stderr
