"""Ledger postings: accounts, balanced transactions, the recipes, and the fee formula."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greengate.domain import ledger as L
from greengate.domain.errors import DomainError
from greengate.domain.ledger import AccountKey, InvalidPosting, Kind, Posting, build_transaction
from greengate.services.fees import compute_fee, parse_percent

M = 7
CLEARING = L.gateway_account(Kind.ACQUIRER_CLEARING, "KZT")
AVAILABLE = L.merchant_account(M, Kind.AVAILABLE, "KZT")
PENDING = L.merchant_account(M, Kind.PENDING, "KZT")
FEES = L.merchant_account(M, Kind.FEES, "KZT")
FEE_INCOME = L.gateway_account(Kind.FEE_INCOME, "KZT")


def balances_after(*drafts: L.LedgerTransactionDraft) -> dict[AccountKey, int]:
    state: dict[AccountKey, tuple[int, int]] = {}
    for draft in drafts:
        state = L.apply(state, draft)
    return {key: L.normal_balance(key.kind, d, c) for key, (d, c) in state.items()}


def per_currency_totals(draft: L.LedgerTransactionDraft) -> dict[str, tuple[int, int]]:
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for p in draft.postings:
        totals[p.currency][0] += p.debit
        totals[p.currency][1] += p.credit
    return {cur: (d, c) for cur, (d, c) in totals.items()}


# --- accounts and build_transaction ----------------------------------------------------------


def test_account_key_refuses_unknown_owner_and_kinds_of_the_other_owner() -> None:
    with pytest.raises(InvalidPosting):
        AccountKey("merchant:abc", "available", "KZT")
    with pytest.raises(InvalidPosting):
        AccountKey("gateway", "available", "KZT")
    with pytest.raises(InvalidPosting):
        AccountKey("merchant:1", "fee_income", "KZT")


def test_account_key_refuses_unknown_currency() -> None:
    with pytest.raises(DomainError) as exc:
        AccountKey("merchant:1", "available", "XXX")
    assert exc.value.code == "unsupported_currency"


def test_exchange_accounts_keep_btc_and_fiat_apart() -> None:
    with pytest.raises(InvalidPosting):
        AccountKey("gateway", "exchange_btc_liability", "RUB")
    with pytest.raises(InvalidPosting):
        AccountKey("gateway", "exchange_fiat", "BTC")


def test_build_transaction_refuses_unbalanced_legs() -> None:
    with pytest.raises(InvalidPosting, match="does not balance in KZT"):
        build_transaction("test.move", [Posting(CLEARING, debit=100), Posting(AVAILABLE, credit=99)])


def test_build_transaction_balances_per_currency_not_in_total() -> None:
    rub = L.gateway_account(Kind.ACQUIRER_CLEARING, "RUB")
    with pytest.raises(InvalidPosting, match="does not balance"):
        build_transaction("test.move", [Posting(CLEARING, debit=100), Posting(rub, credit=100)])


@pytest.mark.parametrize(
    ("debit", "credit"),
    [(0, 0), (-5, 0), (0, -5), (5, 5)],
)
def test_build_transaction_refuses_legs_that_are_not_one_positive_side(debit: int, credit: int) -> None:
    with pytest.raises(InvalidPosting):
        build_transaction(
            "test.move",
            [Posting(CLEARING, debit=debit, credit=credit), Posting(AVAILABLE, debit=credit, credit=debit)],
        )


def test_build_transaction_refuses_non_integer_amounts() -> None:
    with pytest.raises(InvalidPosting, match="integer"):
        build_transaction("test.move", [Posting(CLEARING, debit=True), Posting(AVAILABLE, credit=True)])
    with pytest.raises(InvalidPosting, match="integer"):
        build_transaction(
            "test.move",
            [Posting(CLEARING, debit=Decimal(1)), Posting(AVAILABLE, credit=1)],  # type: ignore[arg-type]
        )


def test_build_transaction_needs_two_legs_and_a_reason_code() -> None:
    with pytest.raises(InvalidPosting, match="two legs"):
        build_transaction("test.move", [Posting(CLEARING, debit=1)])
    with pytest.raises(InvalidPosting, match="reason"):
        build_transaction("Not a code", [Posting(CLEARING, debit=1), Posting(AVAILABLE, credit=1)])


def test_sign_convention_reports_each_kind_on_its_normal_side() -> None:
    assert L.normal_balance("acquirer_clearing", debits=100, credits=30) == 70
    assert L.normal_balance("available", debits=30, credits=100) == 70
    assert L.normal_balance("available", debits=100, credits=30) == -70


# --- recipes ---------------------------------------------------------------------------------


def test_payment_succeeded_credits_the_merchant_net_and_the_gateway_the_fee() -> None:
    draft = L.payment_succeeded(M, 100_000, "KZT", fee=2_510)
    assert draft.reason == "payment.succeeded"
    assert balances_after(draft) == {
        CLEARING: 100_000,
        AVAILABLE: 97_490,
        FEES: 0,  # a pass-through: its credit turnover is the fee charged
        FEE_INCOME: 2_510,
    }
    assert draft.changes()[FEES] == (2_510, 2_510)


def test_payment_succeeded_without_fee_has_no_fee_legs_and_a_full_fee_no_merchant_leg() -> None:
    assert {p.account for p in L.payment_succeeded(M, 500, "KZT", fee=0).postings} == {CLEARING, AVAILABLE}
    assert AVAILABLE not in {p.account for p in L.payment_succeeded(M, 500, "KZT", fee=500).postings}


def test_payment_succeeded_refuses_a_fee_above_the_amount() -> None:
    with pytest.raises(InvalidPosting):
        L.payment_succeeded(M, 500, "KZT", fee=501)
    with pytest.raises(InvalidPosting):
        L.payment_succeeded(M, 0, "KZT", fee=0)


def test_two_step_authorisation_waits_in_pending_then_partial_capture_returns_the_rest() -> None:
    auth = L.payment_authorized(M, 10_000, "KZT")
    assert balances_after(auth) == {CLEARING: 10_000, PENDING: 10_000}
    capture = L.payment_captured(M, authorized=10_000, captured=6_000, currency="KZT", fee=100)
    after = balances_after(auth, capture)
    assert after[PENDING] == 0
    assert after[AVAILABLE] == 5_900
    assert after[FEE_INCOME] == 100
    assert after[CLEARING] == 6_000


def test_capture_cannot_exceed_the_authorisation() -> None:
    with pytest.raises(InvalidPosting):
        L.payment_captured(M, authorized=100, captured=101, currency="KZT", fee=0)


def test_void_returns_the_authorisation_to_the_acquirer() -> None:
    after = balances_after(L.payment_authorized(M, 700, "KZT"), L.payment_voided(M, 700, "KZT"))
    assert after == {CLEARING: 0, PENDING: 0}


def test_refund_moves_available_back_to_the_acquirer_and_keeps_the_fee() -> None:
    after = balances_after(L.payment_succeeded(M, 1_000, "KZT", fee=30), L.payment_refunded(M, 400, "KZT"))
    assert after[AVAILABLE] == 570
    assert after[CLEARING] == 600
    assert after[FEE_INCOME] == 30


@pytest.mark.parametrize("fee", [0, 30, 1_000])
def test_reversal_is_the_exact_reverse_of_a_payment_with_its_fee(fee: int) -> None:
    succeeded = L.payment_succeeded(M, 1_000, "KZT", fee=fee)
    reversed_ = L.payment_reversed(M, 1_000, "KZT", fee=fee)
    assert reversed_.reason == "payment.reversed"
    swapped = sorted((p.account, p.credit, p.debit) for p in succeeded.postings)
    assert sorted((p.account, p.debit, p.credit) for p in reversed_.postings) == swapped
    assert all(v == 0 for v in balances_after(succeeded, reversed_).values())


@pytest.mark.parametrize(("fee", "refunded"), [(30, 400), (30, 990), (0, 999)])
def test_reversal_after_partial_refunds_takes_back_the_rest_and_returns_the_fee(
    fee: int, refunded: int
) -> None:
    after = balances_after(
        L.payment_succeeded(M, 1_000, "KZT", fee=fee),
        L.payment_refunded(M, refunded, "KZT"),
        L.payment_reversed(M, 1_000, "KZT", fee=fee, refunded=refunded),
    )
    assert all(v == 0 for v in after.values()), after


def test_reversal_of_a_partial_capture_undoes_the_capture() -> None:
    after = balances_after(
        L.payment_authorized(M, 10_000, "KZT"),
        L.payment_captured(M, authorized=10_000, captured=6_000, currency="KZT", fee=100),
        L.payment_reversed(M, 6_000, "KZT", fee=100),
    )
    assert all(v == 0 for v in after.values()), after


def test_reversal_refuses_nothing_left_or_a_fee_above_the_amount() -> None:
    with pytest.raises(InvalidPosting):
        L.payment_reversed(M, 1_000, "KZT", fee=0, refunded=1_000)
    with pytest.raises(InvalidPosting):
        L.payment_reversed(M, 1_000, "KZT", fee=1_001)


def test_payout_reserve_then_complete_or_release() -> None:
    paid = L.payment_succeeded(M, 1_000, "KZT", fee=0)
    reserved = L.payout_reserved(M, 800, "KZT")
    reserve = L.merchant_account(M, Kind.RESERVED, "KZT")
    payout = L.gateway_account(Kind.PAYOUT_CLEARING, "KZT")
    done = balances_after(paid, reserved, L.payout_completed(M, 800, "KZT"))
    assert (done[AVAILABLE], done[reserve], done[payout]) == (200, 0, 800)
    back = balances_after(paid, reserved, L.payout_released(M, 800, "KZT"))
    assert (back[AVAILABLE], back[reserve]) == (1_000, 0)


def test_exchange_order_paid_records_both_ledgers_and_the_rate() -> None:
    draft = L.exchange_order_paid(999_900, "RUB", 256_657, rate="3233561.44")
    assert draft.rate == "3233561.44"
    assert per_currency_totals(draft) == {"RUB": (999_900, 999_900), "BTC": (256_657, 256_657)}
    after = balances_after(draft, L.exchange_order_completed(256_657))
    assert after == {
        L.gateway_account(Kind.ACQUIRER_CLEARING, "RUB"): 999_900,
        L.gateway_account(Kind.EXCHANGE_FIAT, "RUB"): 999_900,
        L.gateway_account(Kind.EXCHANGE_BTC, "BTC"): 256_657,
        L.gateway_account(Kind.EXCHANGE_BTC_LIABILITY, "BTC"): 0,
        L.gateway_account(Kind.PAYOUT_CLEARING, "BTC"): 256_657,
    }


def test_exchange_order_is_paid_in_fiat() -> None:
    with pytest.raises(InvalidPosting):
        L.exchange_order_paid(100, "BTC", 100, rate="1")


# --- any sequence of recipes balances --------------------------------------------------------

CURRENCIES = st.sampled_from(["KZT", "RUB", "USD"])
AMOUNTS = st.integers(min_value=1, max_value=10**12)
MERCHANTS = st.integers(min_value=1, max_value=3)


@st.composite
def recipe(draw: st.DrawFn) -> tuple[str, L.LedgerTransactionDraft]:
    m, cur, amount = draw(MERCHANTS), draw(CURRENCIES), draw(AMOUNTS)
    fee = draw(st.integers(min_value=0, max_value=amount))
    captured = draw(st.integers(min_value=1, max_value=amount))
    choices = {
        "succeeded": lambda: L.payment_succeeded(m, amount, cur, fee),
        "authorized": lambda: L.payment_authorized(m, amount, cur),
        "captured": lambda: L.payment_captured(m, amount, captured, cur, min(fee, captured)),
        "voided": lambda: L.payment_voided(m, amount, cur),
        "refunded": lambda: L.payment_refunded(m, amount, cur),
        "reversed": lambda: L.payment_reversed(m, amount, cur, fee, refunded=min(captured, amount - 1)),
        "payout_reserved": lambda: L.payout_reserved(m, amount, cur),
        "payout_completed": lambda: L.payout_completed(m, amount, cur),
        "payout_released": lambda: L.payout_released(m, amount, cur),
        "exchange_paid": lambda: L.exchange_order_paid(amount, cur, fee, rate="1.5"),
        "exchange_completed": lambda: L.exchange_order_completed(amount),
    }
    name = draw(st.sampled_from(sorted(choices)))
    return name, choices[name]()


@given(st.lists(recipe(), min_size=1, max_size=30))
@settings(max_examples=200)
def test_any_recipe_sequence_balances_per_currency(steps: list[tuple[str, L.LedgerTransactionDraft]]) -> None:
    state: dict[AccountKey, tuple[int, int]] = {}
    for _, draft in steps:
        for debits, credits in per_currency_totals(draft).values():
            assert debits == credits
        for p in draft.postings:
            assert (p.debit > 0) != (p.credit > 0)
        state = L.apply(state, draft)
    whole: dict[str, int] = defaultdict(int)
    for key, (d, c) in state.items():
        whole[key.currency] += d - c
    assert all(v == 0 for v in whole.values())


@given(st.lists(st.tuples(st.booleans(), AMOUNTS, st.integers(min_value=0, max_value=10_000)), max_size=30))
def test_merchant_available_is_successes_less_refunds_less_fees(
    steps: list[tuple[bool, int, int]],
) -> None:
    state: dict[AccountKey, tuple[int, int]] = {}
    expected = 0
    for is_payment, amount, basis_points in steps:
        if is_payment:
            fee = min(amount, amount * basis_points // 10_000)
            state = L.apply(state, L.payment_succeeded(M, amount, "KZT", fee))
            expected += amount - fee
        elif amount <= expected:  # the service refuses an overdraft
            state = L.apply(state, L.payment_refunded(M, amount, "KZT"))
            expected -= amount
    d, c = state.get(AVAILABLE, (0, 0))
    assert L.normal_balance("available", d, c) == expected


# --- the fee formula -------------------------------------------------------------------------


def test_fee_rounds_half_up_to_minor_units() -> None:
    assert compute_fee(1, Decimal("50"), 0) == 1  # 0.5 → 1 (half up, not to even)
    assert compute_fee(3, Decimal("50"), 0) == 2  # 1.5 → 2
    assert compute_fee(5, Decimal("50"), 0) == 3  # 2.5 → 3, where half-even would give 2
    assert compute_fee(100_000, Decimal("2.5"), 1_000) == 3_500
    assert compute_fee(1_999, Decimal("1"), 0) == 20  # 19.99 → 20


def test_fee_never_exceeds_the_amount() -> None:
    assert compute_fee(500, Decimal("10"), 1_000) == 500
    assert compute_fee(0, Decimal("10"), 1_000) == 0


def test_fee_percent_is_strict_decimal_text() -> None:
    assert parse_percent("2.5") == Decimal("2.5")
    for bad in ("101", "-1", "1e2", "2.12345", "NaN"):
        with pytest.raises(DomainError):
            parse_percent(bad)
