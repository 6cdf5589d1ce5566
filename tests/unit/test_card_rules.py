from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from greengate.domain.card_rules import CardForm, CardFormError, card_brand, validate_card_form
from greengate.domain.errors import InvalidRequest
from greengate.domain.secret import Secret

TODAY = date(2025, 6, 15)
VISA = "4405645000006150"
AMEX = "378282246310005"


def form(
    number: str = VISA,
    exp_month: str = "09",
    exp_year: str = "27",
    holder: str = "Ivan Petrov",
    cvc: str = "123",
    today: date = TODAY,
) -> CardForm:
    return validate_card_form(number, exp_month, exp_year, holder, cvc, today)


def error_of(**fields: Any) -> CardFormError:
    with pytest.raises(CardFormError) as caught:
        form(**fields)
    return caught.value


def test_valid_form_gives_normalised_card() -> None:
    card = form(
        number="4405 6450 0000 6150", exp_month="9", exp_year="2027", holder="  ivan   o'brien-smith "
    )

    assert card.pan == Secret("4405645000006150")
    assert (card.exp_month, card.exp_year) == (9, 2027)
    assert card.holder == "IVAN O'BRIEN-SMITH"
    assert card.cvc.reveal() == "123"
    assert card.masked == "4405-64XX-XXXX-6150"
    assert card.brand == "VI"
    assert card.exp_text == "09/27"


def test_two_digit_year_is_in_this_century() -> None:
    assert form(exp_month="12", exp_year="30").exp_year == 2030


def test_card_form_error_is_an_invalid_request_with_card_data_code() -> None:
    error = error_of(number="4405645000006151")

    assert isinstance(error, InvalidRequest)
    assert error.code == "invalid_card_data"
    assert error.field == "number"


@pytest.mark.parametrize(
    "number",
    [
        "4405645000006151",
        "44056450000",
        "44056450000061500000",
        "4405-6450-0000-6150",
        "4405645000００6150",
        "",
    ],
)
def test_number_must_be_12_to_19_luhn_valid_digits(number: str) -> None:
    assert error_of(number=number).field == "number"


@pytest.mark.parametrize("number", ["401288888886", "4000000000000000006"])
def test_twelve_and_nineteen_digit_numbers_are_accepted(number: str) -> None:
    assert form(number=number).pan.reveal() == number


@pytest.mark.parametrize("month", ["0", "00", "13", "1a", "", "123", "-1"])
def test_expiry_month_must_be_01_to_12(month: str) -> None:
    assert error_of(exp_month=month).field == "exp_month"


@pytest.mark.parametrize("year", ["2", "202", "20277", "2k", ""])
def test_expiry_year_must_have_2_or_4_digits(year: str) -> None:
    assert error_of(exp_year=year).field == "exp_year"


def test_card_is_valid_through_the_end_of_its_expiry_month() -> None:
    assert form(exp_month="06", exp_year="25", today=date(2025, 6, 30)).exp_text == "06/25"


@pytest.mark.parametrize(
    ("month", "year", "field"),
    [
        ("05", "25", "exp_month"),
        ("05", "2025", "exp_month"),
        ("12", "24", "exp_year"),
        ("07", "2024", "exp_year"),
    ],
)
def test_expired_card_is_refused(month: str, year: str, field: str) -> None:
    error = error_of(exp_month=month, exp_year=year)

    assert error.field == field
    assert "expired" in error.message


@pytest.mark.parametrize(
    "holder",
    [
        "IVAN",
        "  Ivan  ",
        "",
        "   ",
        "Иван Петров",
        "Ivan Petrov2",
        "R2 D2",
        "Ivan_Petrov Smith",
        "Ivan - Petrov",
        "A " + "B" * 99,
    ],
)
def test_holder_must_be_two_latin_words_of_at_most_100_chars(holder: str) -> None:
    assert error_of(holder=holder).field == "holder"


def test_holder_of_exactly_100_chars_is_accepted() -> None:
    holder = "A " + "B" * 98

    assert form(holder=holder).holder == holder


def test_holder_accepts_dots_hyphens_and_apostrophes() -> None:
    assert form(holder="j. r. r. tolkien-d'arcy").holder == "J. R. R. TOLKIEN-D'ARCY"


@pytest.mark.parametrize("cvc", ["12", "12345", "1234", "12a", "", "１２３"])
def test_cvc_must_have_three_digits(cvc: str) -> None:
    assert error_of(cvc=cvc).field == "cvc"


def test_amex_cvc_has_four_digits() -> None:
    assert form(number=AMEX, cvc="1234").cvc.reveal() == "1234"
    assert error_of(number=AMEX, cvc="123").field == "cvc"


def test_first_invalid_field_is_reported() -> None:
    assert error_of(number="1", exp_month="13", holder="x", cvc="").field == "number"


@pytest.mark.parametrize(
    ("number", "brand"),
    [
        ("4405645000006150", "VI"),
        ("5100000000000000", "MC"),
        ("5599999999999999", "MC"),
        ("2221000000000000", "MC"),
        ("2720990000000000", "MC"),
        ("2721000000000000", "XX"),
        ("2220990000000000", "XX"),
        ("340000000000000", "AE"),
        ("370000000000000", "AE"),
        ("2200000000000000", "MI"),
        ("2204990000000000", "MI"),
        ("2205000000000000", "XX"),
        ("6200000000000000", "UP"),
        ("5000000000000000", "XX"),
        ("5600000000000000", "XX"),
        ("6011000000000000", "XX"),
        ("3530000000000000", "XX"),
        ("", "XX"),
    ],
)
def test_brand_detection(number: str, brand: str) -> None:
    assert card_brand(number) == brand


def test_cvc_and_full_number_never_appear_in_repr_or_str() -> None:
    card = form(cvc="987")

    for text in (repr(card), str(card), f"{card}", repr([card])):
        assert "987" not in text
        assert VISA not in text
    assert "4405-64XX-XXXX-6150" in repr(card)


@given(st.text(alphabet="0123456789", min_size=3, max_size=3))
def test_any_three_digit_cvc_is_kept_secret(cvc: str) -> None:
    card = form(cvc=cvc)

    assert card.cvc.reveal() == cvc
    assert repr(card.cvc) == "Secret('********')"
