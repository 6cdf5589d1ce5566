from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from greengate.acquiring import (
    PAYOUT_CARDS,
    PURCHASE_CARDS,
    TEST_PHONES,
    THREE_DS_PASSWORD,
    Acquirer,
    Decision,
    ManualAcquirer,
    Outcome,
    SandboxAcquirer,
    approval_codes,
    is_test_card,
)
from greengate.acquiring.sandbox import phone_digits
from greengate.domain.card_rules import CardForm, validate_card_form
from greengate.domain.cards import luhn_valid
from greengate.domain.secret import Secret

DOCS = Path(__file__).resolve().parents[2] / "docs" / "test-cards.md"
PAYMENT_ID = 4242
PAYOUT_ID = 77
REAL_CARD = "4111111111111111"

sandbox: Acquirer = SandboxAcquirer()
manual: Acquirer = ManualAcquirer()


def card(number: str) -> CardForm:
    return validate_card_form(number, "12", "2030", "Test User", "123", date(2025, 1, 1))


def authorize(number: str, *, acquirer: Acquirer = sandbox, testing: bool = True) -> Decision:
    return acquirer.authorize_card(
        payment_id=PAYMENT_ID, amount_minor=10_000, currency="KZT", card=card(number), testing=testing
    )


def pay_out(number: str, *, acquirer: Acquirer = sandbox, testing: bool = True) -> Decision:
    return acquirer.payout(
        payout_id=PAYOUT_ID, amount_minor=10_000, currency="KZT", card_number=number, testing=testing
    )


def expected_codes(text: str) -> tuple[str, str]:
    digest = hashlib.sha256(text.encode()).digest()
    return (
        str(int.from_bytes(digest[:8], "big") % 1_000_000).zfill(6),
        str(int.from_bytes(digest[8:16], "big") % 1_000_000_000_000).zfill(12),
    )


def assert_approved(decision: Decision, codes_of: str) -> None:
    assert decision.outcome is Outcome.APPROVED
    assert (decision.auth_code, decision.rrn) == expected_codes(codes_of)
    assert decision.failure_code is None


def assert_declined(decision: Decision, code: int) -> None:
    assert decision.outcome is Outcome.DECLINED
    assert decision.failure_code == code
    assert decision.failure_description
    assert decision.auth_code is None


# --- purchase cards ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("number", ["4405645000006150", "5475102935853613"])
def test_card_approved_without_3ds(number: str) -> None:
    assert_approved(authorize(number), f"payment:{PAYMENT_ID}")


@pytest.mark.parametrize("number", ["5483185000000293", "4716047261941981"])
def test_3ds_card_approved_with_the_right_password(number: str) -> None:
    assert authorize(number).outcome is Outcome.REQUIRE_3DS

    decision = sandbox.complete_3ds(payment_id=PAYMENT_ID, card_number=number, password="12345678")

    assert_approved(decision, f"payment:{PAYMENT_ID}")


@pytest.mark.parametrize("number", ["5483185000000293", "4716047261941981"])
@pytest.mark.parametrize("password", ["1234567", "123456789", "", " 12345678"])
def test_3ds_card_declined_with_a_wrong_password(number: str, password: str) -> None:
    decision = sandbox.complete_3ds(payment_id=PAYMENT_ID, card_number=number, password=password)

    assert_declined(decision, 10004)


@pytest.mark.parametrize("password", ["12345678", "wrong"])
def test_3ds_failing_card_is_declined_whatever_the_password(password: str) -> None:
    assert authorize("4916307416334310").outcome is Outcome.REQUIRE_3DS

    decision = sandbox.complete_3ds(payment_id=PAYMENT_ID, card_number="4916307416334310", password=password)

    assert_declined(decision, 10004)


@pytest.mark.parametrize(
    ("number", "code", "description"),
    [
        ("5367654276102126", 10001, "contact the issuing bank"),
        ("4939770956154989", 10005, "wrong card data"),
        ("5335215945367703", 10007, "declined for security reasons"),
        ("4916109830832246", 10002, "insufficient funds"),
    ],
)
def test_declining_cards(number: str, code: int, description: str) -> None:
    decision = authorize(number)

    assert_declined(decision, code)
    assert decision.failure_description == description


def test_processing_card_stays_processing_then_resolves_approved() -> None:
    assert authorize("5548398681700148") == Decision(Outcome.PROCESSING)

    assert sandbox.resolve_processing(card_number="5548398681700148") == Decision(Outcome.APPROVED)


def test_every_purchase_outcome_is_reachable_by_a_card_alone() -> None:
    outcomes = {(c.three_ds, c.result.outcome, c.result.failure_code) for c in PURCHASE_CARDS}

    assert outcomes == {
        (False, Outcome.APPROVED, None),
        (True, Outcome.APPROVED, None),
        (True, Outcome.DECLINED, 10004),
        (False, Outcome.DECLINED, 10001),
        (False, Outcome.DECLINED, 10005),
        (False, Outcome.DECLINED, 10007),
        (False, Outcome.DECLINED, 10002),
        (False, Outcome.PROCESSING, None),
    }
    assert len(PURCHASE_CARDS) == 10


def test_spaces_and_dashes_in_a_card_number_are_ignored() -> None:
    decision = sandbox.complete_3ds(
        payment_id=PAYMENT_ID, card_number="5483-1850 0000-0293", password=THREE_DS_PASSWORD
    )

    assert decision.outcome is Outcome.APPROVED


def test_3ds_required_by_the_operator_keeps_the_cards_own_outcome() -> None:
    approved = sandbox.complete_3ds(
        payment_id=PAYMENT_ID, card_number="4405645000006150", password="12345678"
    )
    declined = sandbox.complete_3ds(
        payment_id=PAYMENT_ID, card_number="5367654276102126", password="12345678"
    )

    assert approved.outcome is Outcome.APPROVED
    assert_declined(declined, 10001)


def test_non_test_card_is_declined_in_test_mode() -> None:
    decision = authorize(REAL_CARD)

    assert_declined(decision, 10005)
    assert decision.failure_description == "only test cards are accepted in test mode"


@given(st.text(alphabet="0123456789", min_size=15, max_size=15))
def test_any_luhn_valid_non_test_card_is_declined_in_test_mode(prefix: str) -> None:
    number = next(prefix + d for d in "0123456789" if luhn_valid(prefix + d))
    assume(not is_test_card(number))
    form = CardForm(Secret(number), 12, 2030, "TEST USER", Secret("1234"))

    decision = sandbox.authorize_card(payment_id=1, amount_minor=100, currency="KZT", card=form, testing=True)

    assert decision.outcome is Outcome.DECLINED
    assert decision.failure_code == 10005


def test_payout_card_cannot_pay_for_a_purchase() -> None:
    assert_declined(authorize("4671593866478252"), 10005)


def test_sandbox_refuses_live_payments() -> None:
    assert_declined(authorize("4405645000006150", testing=False), 850)
    assert_declined(pay_out("4671593866478252", testing=False), 850)
    assert_declined(sandbox.start_phone(payment_id=PAYMENT_ID, phone="+77017777777", testing=False), 850)


def test_approval_codes_are_derived_from_the_payment_id() -> None:
    first = authorize("4405645000006150")
    other = sandbox.authorize_card(
        payment_id=PAYMENT_ID + 1, amount_minor=1, currency="KZT", card=card("4405645000006150"), testing=True
    )

    assert (first.auth_code, first.rrn) == approval_codes(PAYMENT_ID)
    assert approval_codes(1) == ("711852", "909517687365")  # the example in docs/test-cards.md
    assert (other.auth_code, other.rrn) != (first.auth_code, first.rrn)


# --- payout cards -----------------------------------------------------------------------------------------


def test_payout_card_success() -> None:
    assert_approved(pay_out("4671593866478252"), f"payout:{PAYOUT_ID}")


@pytest.mark.parametrize(
    ("number", "code"), [("5325349472901311", 10000), ("4556046085041740", 10001), ("5543974702876045", 8888)]
)
def test_payout_card_errors(number: str, code: int) -> None:
    assert_declined(pay_out(number), code)


def test_payout_processing_then_success() -> None:
    assert pay_out("5507841999732294").outcome is Outcome.PROCESSING

    assert sandbox.resolve_processing(card_number="5507841999732294") == Decision(Outcome.APPROVED)


def test_payout_processing_then_error() -> None:
    assert pay_out("4532676596620704").outcome is Outcome.PROCESSING

    assert_declined(sandbox.resolve_processing(card_number="4532676596620704"), 10001)


def test_payout_to_a_purchase_card_or_a_real_card_is_declined() -> None:
    assert_declined(pay_out("4405645000006150"), 10005)
    assert_declined(pay_out(REAL_CARD), 10005)


def test_resolving_a_card_without_a_scripted_resolution_leaves_it_to_the_operator() -> None:
    assert sandbox.resolve_processing(card_number="4405645000006150").outcome is Outcome.PROCESSING
    assert_declined(sandbox.resolve_processing(card_number=REAL_CARD), 10005)


# --- test phones ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("phone", ["+77017777777", "77017777777", "+7 (701) 777-77-77", " +77057777777 "])
def test_test_phone_asks_for_an_otp(phone: str) -> None:
    assert sandbox.start_phone(payment_id=PAYMENT_ID, phone=phone, testing=True) == Decision(
        Outcome.REQUIRE_OTP
    )


@pytest.mark.parametrize(("phone", "otp"), [("+77017777777", "111111"), ("+77057777777", "555555")])
def test_test_phone_approved_with_its_otp(phone: str, otp: str) -> None:
    decision = sandbox.complete_otp(payment_id=PAYMENT_ID, phone=phone, code=otp, attempt=1)

    assert_approved(decision, f"payment:{PAYMENT_ID}")


def test_declining_test_phone_is_declined_after_its_otp() -> None:
    decision = sandbox.complete_otp(payment_id=PAYMENT_ID, phone="+77077777777", code="777777", attempt=1)

    assert_declined(decision, 10001)


def test_otp_of_another_test_phone_is_wrong() -> None:
    decision = sandbox.complete_otp(payment_id=PAYMENT_ID, phone="+77017777777", code="555555", attempt=1)

    assert_declined(decision, 700)
    assert not decision.is_final


def test_three_wrong_otps_give_10003() -> None:
    answers = [
        sandbox.complete_otp(payment_id=PAYMENT_ID, phone="+77017777777", code="000000", attempt=attempt)
        for attempt in (1, 2, 3)
    ]

    assert [a.failure_code for a in answers] == [700, 700, 10003]
    assert answers[2].failure_description == "too many OTP attempts"
    assert [a.is_final for a in answers] == [False, False, True]


def test_right_otp_on_the_third_attempt_is_approved() -> None:
    decision = sandbox.complete_otp(payment_id=PAYMENT_ID, phone="+77017777777", code="111111", attempt=3)

    assert decision.outcome is Outcome.APPROVED


def test_no_otp_is_accepted_after_three_attempts() -> None:
    decision = sandbox.complete_otp(payment_id=PAYMENT_ID, phone="+77017777777", code="111111", attempt=4)

    assert_declined(decision, 10003)


def test_otp_attempts_count_from_one() -> None:
    with pytest.raises(ValueError):
        sandbox.complete_otp(payment_id=PAYMENT_ID, phone="+77017777777", code="111111", attempt=0)


@pytest.mark.parametrize("phone", ["+77011111111", "+4915112345678", "77017777777000"])
def test_other_phone_is_not_accepted(phone: str) -> None:
    assert_declined(sandbox.start_phone(payment_id=PAYMENT_ID, phone=phone, testing=True), 711)


@pytest.mark.parametrize(
    "phone",
    [
        "",
        "+7701777777",
        "+7701777777712345",
        "7701777777a",
        "+7701-call-me",
        "++77017777777",
        "7701７７７７７７７",
    ],
)
def test_malformed_phone_is_wrong_number(phone: str) -> None:
    assert_declined(sandbox.start_phone(payment_id=PAYMENT_ID, phone=phone, testing=True), 701)
    assert_declined(sandbox.complete_otp(payment_id=PAYMENT_ID, phone=phone, code="111111", attempt=1), 701)


def test_phone_digits_keeps_the_country_code_first() -> None:
    assert phone_digits("+7 (707) 777-77-77") == "77077777777"
    assert phone_digits("+7 707") is None


# --- manual acquirer --------------------------------------------------------------------------------------


def test_manual_acquirer_leaves_live_card_payments_to_the_operator() -> None:
    assert manual.name == "manual"
    assert authorize(REAL_CARD, acquirer=manual, testing=False) == Decision(Outcome.PROCESSING)
    assert manual.complete_3ds(payment_id=PAYMENT_ID, card_number=REAL_CARD, password="x").outcome is (
        Outcome.PROCESSING
    )
    assert pay_out(REAL_CARD, acquirer=manual, testing=False).outcome is Outcome.PROCESSING
    assert manual.resolve_processing(card_number=REAL_CARD).outcome is Outcome.PROCESSING


def test_manual_acquirer_has_no_mobile_payments() -> None:
    decision = manual.start_phone(payment_id=PAYMENT_ID, phone="+77017777777", testing=False)

    assert_declined(decision, 850)
    assert decision.failure_description == "no payment system is ready"
    assert_declined(
        manual.complete_otp(payment_id=PAYMENT_ID, phone="+77017777777", code="1", attempt=1), 850
    )


@pytest.mark.parametrize("number", [c.number for c in PURCHASE_CARDS + PAYOUT_CARDS])
def test_manual_acquirer_refuses_test_cards(number: str) -> None:
    for decision in (
        authorize(number, acquirer=manual, testing=False),
        authorize(number, acquirer=manual, testing=True),
        pay_out(number, acquirer=manual, testing=False),
        manual.complete_3ds(payment_id=PAYMENT_ID, card_number=number, password=THREE_DS_PASSWORD),
        manual.resolve_processing(card_number=number),
    ):
        assert_declined(decision, 10005)
        assert decision.failure_description == "test cards are not accepted in live mode"


def test_manual_acquirer_refuses_test_payments_with_real_cards() -> None:
    decision = authorize(REAL_CARD, acquirer=manual, testing=True)

    assert_declined(decision, 10005)
    assert decision.failure_description == "only test cards are accepted in test mode"


# --- the tables -------------------------------------------------------------------------------------------


def test_all_test_card_numbers_are_luhn_valid_and_distinct() -> None:
    numbers = [c.number for c in PURCHASE_CARDS] + [c.number for c in PAYOUT_CARDS]

    assert all(luhn_valid(n) and len(n) == 16 for n in numbers)
    assert len(set(numbers)) == len(numbers) == 16
    assert all(is_test_card(n) for n in numbers)


def test_spec_example_card_is_an_approving_card() -> None:
    (example,) = [c for c in PURCHASE_CARDS if c.masked == "4405-64XX-XXXX-6150"]

    assert (example.three_ds, example.result.outcome, example.brand) == (False, Outcome.APPROVED, "VI")


def test_test_phones_and_otps_are_distinct() -> None:
    assert len({p.number for p in TEST_PHONES}) == len({p.otp for p in TEST_PHONES}) == len(TEST_PHONES) == 3


def test_decision_invariants() -> None:
    with pytest.raises(ValueError):
        Decision(Outcome.DECLINED)
    with pytest.raises(ValueError):
        Decision(Outcome.APPROVED, failure_code=10001, failure_description="x")
    with pytest.raises(ValueError):
        Decision(Outcome.PROCESSING, auth_code="123456")
    with pytest.raises(ValueError):
        Decision(Outcome.APPROVED, auth_code="12345", rrn="123456789012")


def test_docs_list_every_test_card_and_phone_with_its_codes() -> None:
    lines = DOCS.read_text(encoding="utf-8").splitlines()

    def row(key: str) -> str:
        (found,) = [line for line in lines if line.startswith(f"| {key} |")]
        return found

    for test_card in PURCHASE_CARDS + PAYOUT_CARDS:
        text = row(test_card.number)
        assert f"| {test_card.brand} |" in text
        final = test_card.resolution or test_card.result
        if final.failure_code is not None:
            assert f"| {final.failure_code} |" in text
            assert f"| {final.failure_description} |" in text
    for phone in TEST_PHONES:
        text = row(phone.number)
        assert f"| {phone.otp} |" in text
        if phone.result.failure_code is not None:
            assert str(phone.result.failure_code) in text
    assert f"**`{THREE_DS_PASSWORD}`**" in "\n".join(lines)
