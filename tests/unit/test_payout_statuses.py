"""The payout state machine and what it does to the merchant's money: whatever sequence of attempted
transitions happens, the reservation made at creation is settled exactly once, and the ledger
recipes applied along the way never leave the merchant with more or less than it should have."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from greengate.domain import ledger
from greengate.domain.errors import IllegalTransition
from greengate.domain.payouts import (
    FINAL,
    PAYMENT_STATUS,
    RESULT_STATUS,
    TRANSACTION_STATUS,
    LedgerEffect,
    PayoutStatus,
    can_transition,
    check_transition,
)

S = PayoutStatus
MERCHANT = 7


@pytest.mark.parametrize(
    ("current", "target", "effect"),
    [
        (S.NEW, S.PROCESSING, None),
        (S.NEW, S.OK, LedgerEffect.COMPLETED),
        (S.NEW, S.FAILED, LedgerEffect.RELEASED),
        (S.NEW, S.EXPIRED, LedgerEffect.RELEASED),
        (S.PROCESSING, S.OK, LedgerEffect.COMPLETED),
        (S.PROCESSING, S.FAILED, LedgerEffect.RELEASED),
    ],
)
def test_allowed_transitions_and_their_ledger_effect(
    current: PayoutStatus, target: PayoutStatus, effect: LedgerEffect | None
) -> None:
    assert check_transition(current, target) is effect


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (S.PROCESSING, S.EXPIRED),
        (S.PROCESSING, S.NEW),
        (S.PROCESSING, S.PROCESSING),
        (S.OK, S.FAILED),
        (S.FAILED, S.OK),
        (S.EXPIRED, S.OK),
        (S.OK, S.OK),
        (S.NEW, S.NEW),
    ],
)
def test_other_transitions_are_errors(current: PayoutStatus, target: PayoutStatus) -> None:
    with pytest.raises(IllegalTransition) as info:
        check_transition(current, target)
    assert (info.value.current, info.value.target) == (current.value, target.value)


def test_every_status_reads_on_the_wire() -> None:
    for table in (TRANSACTION_STATUS, PAYMENT_STATUS, RESULT_STATUS):
        assert set(table) == set(PayoutStatus)
    assert {RESULT_STATUS[s] for s in FINAL} == {"ok", "error"}


@given(
    st.integers(min_value=1, max_value=10**12),
    st.integers(min_value=0, max_value=10**12),
    st.lists(st.sampled_from(list(PayoutStatus)), max_size=12),
)
def test_any_walk_settles_the_reservation_exactly_once(
    amount: int, extra: int, targets: list[PayoutStatus]
) -> None:
    available = ledger.merchant_account(MERCHANT, ledger.Kind.AVAILABLE, "KZT")
    reserved = ledger.merchant_account(MERCHANT, ledger.Kind.RESERVED, "KZT")
    clearing = ledger.gateway_account(ledger.Kind.PAYOUT_CLEARING, "KZT")
    funded = amount + extra
    books = {available: (0, funded)}
    books = ledger.apply(books, ledger.payout_reserved(MERCHANT, amount, "KZT"))
    status, history, effects = S.NEW, [S.NEW], []
    for target in targets:
        if not can_transition(status, target):
            with pytest.raises(IllegalTransition):
                check_transition(status, target)
            continue
        effect = check_transition(status, target)
        if effect is LedgerEffect.COMPLETED:
            books = ledger.apply(books, ledger.payout_completed(MERCHANT, amount, "KZT"))
        elif effect is LedgerEffect.RELEASED:
            books = ledger.apply(books, ledger.payout_released(MERCHANT, amount, "KZT"))
        if effect is not None:
            effects.append(effect)
        status = target
        history.append(status)

    def balance(key: ledger.AccountKey) -> int:
        debits, credits = books.get(key, (0, 0))
        return ledger.normal_balance(key.kind, debits, credits)

    # Final statuses absorb; nothing returns to new; processing happens at most once.
    for earlier, _later in itertools.pairwise(history):
        assert earlier not in FINAL
    assert history.count(S.NEW) == 1 and history.count(S.PROCESSING) <= 1
    assert len(effects) == (1 if status in FINAL else 0)
    # Money: reserved while open, then either paid out or given back; never negative, never created.
    assert balance(reserved) == (0 if status in FINAL else amount)
    assert balance(available) == (funded if status in (S.FAILED, S.EXPIRED) else extra)
    assert balance(clearing) == (amount if status is S.OK else 0)
    assert balance(available) + balance(reserved) + balance(clearing) == funded
