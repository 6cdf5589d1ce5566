"""The hosted payment pages over HTTP through the ASGI app: every payer step, the lifetime, the way
back to the shop, and that card data never leaks into a page or a log."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Iterator, MutableMapping
from dataclasses import dataclass
from datetime import timedelta
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import structlog
from sqlalchemy import select, update

from greengate.api.merchant.codec import parse_form_body, parse_query, parse_xml, render_xml
from greengate.app import create_app
from greengate.clock import utcnow
from greengate.domain.params import Params, first
from greengate.domain.signature import new_salt, script_name_from_url, verify, with_signature
from greengate.runtime import Runtime
from greengate.services.merchants import create_merchant
from greengate.settings import Settings
from greengate.store.models import Payment, PaymentAttempt
from greengate.web.checkout import routes as checkout_routes
from greengate.worker.loop import Worker
from tests.conftest import is_postgres, make_settings
from tests.support.servers import LocalServer, Recorded, Reply

APPROVED = "4405645000006150"
THREE_DS = "5483185000000293"
THREE_DS_ALWAYS_FAILS = "4916307416334310"
PROCESSING = "5548398681700148"
TEST_PHONE = "+77017777777"
TEST_OTP = "111111"
CVC = "739"


@dataclass
class Shop:
    merchant_id: int
    secret: str


@dataclass
class Checkout:
    payment_id: int
    path: str  # /pay/{token}


async def make_shop(rt: Runtime, name: str = "Green Shop") -> Shop:
    async with rt.db.transaction() as session:
        merchant, creds = await create_merchant(session, rt.keyring, name=name, mode="test", now=utcnow())
    return Shop(merchant.id, creds.secret_key)


async def start_payment(client: httpx.AsyncClient, shop: Shop, **extra: str) -> Checkout:
    params: Params = [
        ("pg_merchant_id", str(shop.merchant_id)),
        ("pg_amount", extra.pop("amount", "1234.50")),
        ("pg_currency", extra.pop("currency", "KZT")),
        ("pg_description", extra.pop("description", "Order 77: two green mugs")),
        ("pg_order_id", extra.pop("order_id", "order-77")),
    ]
    params += [(f"pg_{name}", value) for name, value in extra.items()]
    response = await client.post(
        "/init_payment.php", data=dict(with_signature("init_payment.php", params, shop.secret, new_salt()))
    )
    answer = parse_xml(response.text)
    assert first(answer, "pg_status") == "ok", response.text
    redirect = first(answer, "pg_redirect_url") or ""
    return Checkout(int(first(answer, "pg_payment_id") or 0), urlsplit(redirect).path)


async def payment_of(rt: Runtime, payment_id: int) -> Payment:
    async with rt.db.transaction() as session:
        payment = await session.get(Payment, payment_id)
        assert payment is not None
        return payment


async def attempts_of(rt: Runtime, payment_id: int) -> list[PaymentAttempt]:
    async with rt.db.transaction() as session:
        return list(
            await session.scalars(select(PaymentAttempt).where(PaymentAttempt.payment_id == payment_id))
        )


def card(
    number: str = APPROVED, exp: str = "12/30", holder: str = "Ivan Petrov", cvc: str = CVC
) -> dict[str, str]:
    return {"number": number, "exp": exp, "holder": holder, "cvc": cvc}


async def follow(client: httpx.AsyncClient, response: httpx.Response) -> httpx.Response:
    """A step's 303 back to the page, followed."""
    assert response.status_code == 303, response.text
    assert response.headers["cache-control"] == "no-store"
    return await client.get(response.headers["location"])


def result_of(page: httpx.Response) -> str | None:
    found = re.search(r'data-result="([a-z-]+)"', page.text)
    return found.group(1) if found else None


def form_of(page: httpx.Response) -> str | None:
    found = re.search(r'data-form="([a-z0-9]+)"', page.text)
    return found.group(1) if found else None


def error_fields(page: httpx.Response) -> list[str]:
    return re.findall(r'data-error-for="([a-z]+)"', page.text)


def failure_code(page: httpx.Response) -> str | None:
    found = re.search(r"data-failure-code>(\d+)<", page.text)
    return found.group(1) if found else None


# ---------------------------------------------------------------------------------------------
# The card form


@pytest.mark.parametrize(
    ("language", "words", "amount"),
    [
        (
            "ru",
            ["Номер карты", "Срок действия", "Владелец карты", "Оплатить", "Осталось времени"],
            "1\u00a0234,50",
        ),
        ("en", ["Card number", "Expiry date", "Cardholder name", "Pay ", "Time left"], "1,234.50"),
        (
            "kk",
            ["Карта нөмірі", "Жарамдылық мерзімі", "Карта иесі", "төлеу", "Қалған уақыт"],
            "1\u00a0234,50",
        ),
    ],
)
async def test_card_form_renders_in_the_payment_language(
    app_client: httpx.AsyncClient, rt: Runtime, language: str, words: list[str], amount: str
) -> None:
    shop = await make_shop(rt, name="Green <Shop> & Co")
    checkout = await start_payment(app_client, shop, language=language, lifetime="3600")

    page = await app_client.get(checkout.path)

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert f'<html lang="{language}">' in page.text
    for word in words:
        assert word in page.text
    assert f"{amount}\u00a0KZT" in page.text
    assert "Green &lt;Shop&gt; &amp; Co" in page.text  # the merchant's name, escaped
    assert "Order 77: two green mugs" in page.text and "order-77" in page.text
    for attribute in ('autocomplete="cc-number"', 'autocomplete="cc-exp"', 'autocomplete="cc-name"'):
        assert attribute in page.text
    assert 'autocomplete="cc-csc"' in page.text
    # Remaining lifetime: text for the payer without JavaScript, a countdown for the rest.
    remaining = int(re.search(r'data-remaining="(\d+)"', page.text).group(1))  # type: ignore[union-attr]
    assert 3590 <= remaining <= 3600
    assert re.search(r'id="countdown"[^>]*>(59:\d\d|1:00:00)<', page.text)
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", page.text)
    # Nothing is loaded from anywhere else.
    assert not re.search(r'(src|href)="(https?:)?//', page.text)
    assert form_of(page) == "card"


async def test_lang_parameter_overrides_the_payment_language_and_sticks(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    checkout = await start_payment(app_client, await make_shop(rt), language="ru")

    page = await app_client.get(checkout.path, params={"lang": "en"})
    assert '<html lang="en">' in page.text and "Card number" in page.text
    assert f'action="{checkout.path}/card?lang=en"' in page.text
    # Links to the two other languages.
    assert f'href="{checkout.path}?lang=ru&amp;method=card"' in page.text
    assert f'href="{checkout.path}?lang=kk&amp;method=card"' in page.text

    response = await app_client.post(f"{checkout.path}/card?lang=en", data=card(number=THREE_DS))
    assert response.headers["location"] == f"{checkout.path}?lang=en"
    page = await follow(app_client, response)
    assert "3-D Secure check" in page.text

    unknown = await app_client.get(checkout.path, params={"lang": "de"})
    assert '<html lang="ru">' in unknown.text


async def test_phone_method_is_one_link_away_and_payment_system_can_select_one(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    shop = await make_shop(rt)
    both = await start_payment(app_client, shop, order_id="both")
    page = await app_client.get(both.path)
    assert 'data-method="card"' in page.text and 'data-method="phone"' in page.text
    phone_page = await app_client.get(both.path, params={"method": "phone"})
    assert form_of(phone_page) == "phone" and 'autocomplete="tel"' in phone_page.text

    card_only = await start_payment(app_client, shop, order_id="card-only", payment_system="BANKCARD")
    page = await app_client.get(card_only.path, params={"method": "phone"})
    assert form_of(page) == "card" and 'data-method="phone"' not in page.text

    phone_only = await start_payment(
        app_client, shop, order_id="phone-only", payment_system="MOBILE_COMMERCE", user_phone="77057777777"
    )
    page = await app_client.get(phone_only.path)
    assert form_of(page) == "phone" and 'value="+77057777777"' in page.text


async def test_unknown_token_is_a_not_found_page(app_client: httpx.AsyncClient, rt: Runtime) -> None:
    for path in ("/pay/no-such-token", "/pay/" + "x" * 300, "/pay/no-such-token/return"):
        page = await app_client.get(path, params={"lang": "en"})
        assert page.status_code == 404
        assert "Payment not found" in page.text
    response = await app_client.post("/pay/no-such-token/card", data=card())
    assert response.status_code == 404


# ---------------------------------------------------------------------------------------------
# Card payments


async def test_approved_card_goes_straight_to_the_success_page(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    checkout = await start_payment(app_client, await make_shop(rt), language="en")

    response = await app_client.post(f"{checkout.path}/card", data=card(exp="1230", holder="ivan  petrov"))
    assert response.headers["location"] == checkout.path
    page = await follow(app_client, response)

    assert result_of(page) == "success"
    assert "Payment successful" in page.text
    assert "4405-64XX-XXXX-6150" in page.text
    payment = await payment_of(rt, checkout.payment_id)
    assert payment.status == "ok"
    [attempt] = await attempts_of(rt, checkout.payment_id)
    assert (attempt.card_holder, attempt.card_exp) == ("IVAN PETROV", "12/30")

    # A repeated submit (back button, second tab) changes nothing and shows where the payment is.
    again = await app_client.post(f"{checkout.path}/card", data=card())
    assert result_of(await follow(app_client, again)) == "success"
    assert len(await attempts_of(rt, checkout.payment_id)) == 1


async def test_three_ds_right_password_pays(app_client: httpx.AsyncClient, rt: Runtime) -> None:
    checkout = await start_payment(app_client, await make_shop(rt), language="en")

    page = await follow(
        app_client, await app_client.post(f"{checkout.path}/card", data=card(number=THREE_DS))
    )
    assert form_of(page) == "3ds"
    assert "Test mode: test password 12345678" in page.text
    assert "5483-18XX-XXXX-0293" in page.text
    assert (await payment_of(rt, checkout.payment_id)).status == "3ds"

    empty = await app_client.post(f"{checkout.path}/3ds", data={"password": ""})
    assert empty.status_code == 400 and error_fields(empty) == ["password"]
    assert (await payment_of(rt, checkout.payment_id)).status == "3ds"

    page = await follow(
        app_client, await app_client.post(f"{checkout.path}/3ds", data={"password": "12345678"})
    )
    assert result_of(page) == "success"
    assert (await payment_of(rt, checkout.payment_id)).status == "ok"


@pytest.mark.parametrize("number", [THREE_DS, THREE_DS_ALWAYS_FAILS])
async def test_three_ds_failure_is_10004(app_client: httpx.AsyncClient, rt: Runtime, number: str) -> None:
    checkout = await start_payment(app_client, await make_shop(rt), language="en")
    await app_client.post(f"{checkout.path}/card", data=card(number=number))

    password = "wrong-one" if number == THREE_DS else "12345678"
    page = await follow(
        app_client, await app_client.post(f"{checkout.path}/3ds", data={"password": password})
    )

    assert result_of(page) == "failure"
    assert failure_code(page) == "10004"
    assert "3-D Secure authentication failed" in page.text
    payment = await payment_of(rt, checkout.payment_id)
    assert (payment.status, payment.failure_code) == ("failed", 10004)


@pytest.mark.parametrize(
    ("number", "code", "reason"),
    [
        ("5367654276102126", 10001, "Обратитесь в банк, выпустивший карту"),
        ("4939770956154989", 10005, "Неверные данные карты"),
        ("5335215945367703", 10007, "Отклонено службой безопасности банка"),
        ("4916109830832246", 10002, "Недостаточно средств"),
        ("4111111111111111", 10005, "Неверные данные карты"),  # not a test card
    ],
)
async def test_declined_cards_show_the_failure_page_with_the_code(
    app_client: httpx.AsyncClient, rt: Runtime, number: str, code: int, reason: str
) -> None:
    checkout = await start_payment(app_client, await make_shop(rt))

    page = await follow(app_client, await app_client.post(f"{checkout.path}/card", data=card(number=number)))

    assert result_of(page) == "failure"
    assert "Оплата не прошла" in page.text
    assert failure_code(page) == str(code)
    assert reason in page.text
    payment = await payment_of(rt, checkout.payment_id)
    assert (payment.status, payment.failure_code) == ("failed", code)


async def test_processing_card_shows_a_self_refreshing_page(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    checkout = await start_payment(app_client, await make_shop(rt), language="kk")

    page = await follow(
        app_client, await app_client.post(f"{checkout.path}/card", data=card(number=PROCESSING))
    )

    assert result_of(page) == "processing"
    assert "Төлем өңделуде" in page.text
    assert f'<meta http-equiv="refresh" content="2;url={checkout.path}">' in page.text
    assert (await payment_of(rt, checkout.payment_id)).status == "pending"


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"number": "4405645000006151"}, "number", "The card number is not valid"),
        ({"number": "4405 6450"}, "number", "The card number must have 12 to 19 digits"),
        ({"exp": "01/20"}, "exp", "The card has expired"),
        ({"exp": "13/30"}, "exp", "Enter the expiry date as MM/YY"),
        ({"exp": "soon"}, "exp", "Enter the expiry date as MM/YY"),
        ({"holder": "IVAN"}, "holder", "Enter the cardholder's first and last name"),
        ({"holder": "Иван Петров"}, "holder", "Enter the name in Latin letters, as printed on the card"),
        ({"holder": ""}, "holder", "Enter the cardholder's name"),
        ({"cvc": "12"}, "cvc", "The CVC must have 3 digits"),
        ({"cvc": "12a"}, "cvc", "The CVC must have 3 digits"),
    ],
)
async def test_invalid_card_data_comes_back_with_the_field_error_and_changes_nothing(
    app_client: httpx.AsyncClient, rt: Runtime, changes: dict[str, str], field: str, message: str
) -> None:
    checkout = await start_payment(app_client, await make_shop(rt), language="en")
    data = card(**changes)

    page = await app_client.post(f"{checkout.path}/card", data=data)

    assert page.status_code == 400
    assert page.headers["cache-control"] == "no-store"
    assert error_fields(page) == [field]
    assert message in unescape(page.text)
    assert f'id="{field}-error"' in page.text and 'aria-invalid="true"' in page.text
    # What the payer typed comes back, except the card number and the CVC.
    if data["holder"]:
        assert f'value="{data["holder"]}"' in page.text
    assert f'value="{data["exp"]}"' in page.text
    assert re.search(r'name="number" type="text" value=""', page.text)
    assert re.search(r'name="cvc" type="password" value=""', page.text)
    assert data["number"] not in page.text and data["number"].replace(" ", "") not in page.text
    payment = await payment_of(rt, checkout.payment_id)
    assert (payment.status, payment.version) == ("new", 1)
    assert await attempts_of(rt, checkout.payment_id) == []


async def test_card_errors_are_translated(app_client: httpx.AsyncClient, rt: Runtime) -> None:
    checkout = await start_payment(app_client, await make_shop(rt), language="kk")
    page = await app_client.post(f"{checkout.path}/card", data=card(cvc="1"))
    assert page.status_code == 400
    assert "CVC 3 саннан тұруы керек" in page.text


# ---------------------------------------------------------------------------------------------
# Mobile commerce


async def test_phone_then_right_otp_pays(app_client: httpx.AsyncClient, rt: Runtime) -> None:
    checkout = await start_payment(app_client, await make_shop(rt), language="en")

    page = await follow(
        app_client, await app_client.post(f"{checkout.path}/phone", data={"phone": "+7 701 777-77-77"})
    )
    assert form_of(page) == "otp"
    assert "+7701*****77" in page.text
    assert 'autocomplete="one-time-code"' in page.text
    assert (await payment_of(rt, checkout.payment_id)).status == "otp"

    page = await follow(app_client, await app_client.post(f"{checkout.path}/otp", data={"code": TEST_OTP}))
    assert result_of(page) == "success"
    payment = await payment_of(rt, checkout.payment_id)
    assert payment.status == "ok"
    [attempt] = await attempts_of(rt, checkout.payment_id)
    assert (attempt.method, attempt.phone) == ("mobile_commerce", "77017777777")


async def test_three_wrong_otp_codes_fail_with_10003(app_client: httpx.AsyncClient, rt: Runtime) -> None:
    checkout = await start_payment(app_client, await make_shop(rt), language="en")
    await app_client.post(f"{checkout.path}/phone", data={"phone": TEST_PHONE})

    malformed = await app_client.post(f"{checkout.path}/otp", data={"code": "12"})
    assert malformed.status_code == 400 and error_fields(malformed) == ["code"]
    assert "Enter the code from the SMS" in malformed.text

    for left in (2, 1):
        page = await follow(
            app_client, await app_client.post(f"{checkout.path}/otp", data={"code": "000000"})
        )
        assert form_of(page) == "otp"
        assert f"Wrong code. Attempts left: {left}." in page.text
    page = await follow(app_client, await app_client.post(f"{checkout.path}/otp", data={"code": "000000"}))

    assert result_of(page) == "failure"
    assert failure_code(page) == "10003"
    assert "Too many wrong confirmation codes" in page.text
    payment = await payment_of(rt, checkout.payment_id)
    assert (payment.status, payment.failure_code) == ("failed", 10003)


@pytest.mark.parametrize(
    ("phone", "message"),
    [
        ("12", "Wrong phone number"),
        ("+7 701 abc", "Wrong phone number"),
        ("", "Wrong phone number"),
        ("+77001234567", "This phone number cannot be used for payment"),
    ],
)
async def test_rejected_phone_comes_back_with_the_field_error(
    app_client: httpx.AsyncClient, rt: Runtime, phone: str, message: str
) -> None:
    checkout = await start_payment(app_client, await make_shop(rt), language="en")

    page = await app_client.post(f"{checkout.path}/phone", data={"phone": phone})

    assert page.status_code == 400
    assert form_of(page) == "phone"
    assert error_fields(page) == ["phone"]
    assert message in page.text
    assert f'value="{phone}"' in page.text
    assert (await payment_of(rt, checkout.payment_id)).status == "new"
    assert await attempts_of(rt, checkout.payment_id) == []


# ---------------------------------------------------------------------------------------------
# Lifetime


async def _age(rt: Runtime, payment_id: int) -> None:
    async with rt.db.transaction() as session:
        await session.execute(
            update(Payment).where(Payment.id == payment_id).values(expires_at=utcnow() - timedelta(seconds=1))
        )


@pytest.mark.parametrize("step", ["new", "3ds", "otp"])
async def test_a_page_past_its_lifetime_expires_the_payment(
    app_client: httpx.AsyncClient, rt: Runtime, step: str
) -> None:
    shop = await make_shop(rt)
    checkout = await start_payment(app_client, shop, language="en")
    if step == "3ds":
        await app_client.post(f"{checkout.path}/card", data=card(number=THREE_DS))
    elif step == "otp":
        await app_client.post(f"{checkout.path}/phone", data={"phone": TEST_PHONE})
    assert (await payment_of(rt, checkout.payment_id)).status == step
    await _age(rt, checkout.payment_id)

    page = await app_client.get(checkout.path)

    assert result_of(page) == "expired"
    assert "The time to pay has run out" in page.text
    assert failure_code(page) == "360"
    payment = await payment_of(rt, checkout.payment_id)
    assert (payment.status, payment.failure_code) == ("expired", 360)
    status = await _status2(app_client, shop, checkout.payment_id)
    assert first(status, "pg_transaction_status") == "incomplete"


async def test_a_step_submitted_after_the_lifetime_lands_on_the_expired_page(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    checkout = await start_payment(app_client, await make_shop(rt))
    await _age(rt, checkout.payment_id)

    page = await follow(app_client, await app_client.post(f"{checkout.path}/card", data=card()))

    assert result_of(page) == "expired"
    assert (await payment_of(rt, checkout.payment_id)).status == "expired"
    assert await attempts_of(rt, checkout.payment_id) == []


async def _status2(client: httpx.AsyncClient, shop: Shop, payment_id: int) -> Params:
    params = with_signature(
        "get_status2.php",
        [("pg_merchant_id", str(shop.merchant_id)), ("pg_payment_id", str(payment_id))],
        shop.secret,
        new_salt(),
    )
    response = await client.post("/get_status2.php", data=dict(params))
    return parse_xml(response.text)


# ---------------------------------------------------------------------------------------------
# The merchant's check, answered by a real HTTP receiver, and the worker delivering it


class MerchantEndpoint:
    """Answers check/result callbacks with signed XML, the way a merchant's site does."""

    def __init__(self, secret: str, status: str = "ok") -> None:
        self.secret = secret
        self.status = status
        self.server = LocalServer(self._respond)
        self.received: list[tuple[str, Params]] = []

    def _respond(self, request: Recorded) -> Reply:
        if request.method == "GET":
            params: Params = list(request.query.items())
        else:
            params = parse_form_body(request.body)
            if [name for name, _ in params] == ["pg_xml"]:
                params = parse_xml(str(params[0][1]))
        script = script_name_from_url(request.path)
        assert verify(script, params, self.secret), "callback signature"
        self.received.append((script, params))
        answer = with_signature(
            script,
            [("pg_status", self.status), ("pg_description", "")],
            self.secret,
            first(params, "pg_salt") or "",
        )
        return Reply(200, render_xml(answer), "text/xml; charset=utf-8")

    def url(self, script: str) -> str:
        return f"{self.server.url}/shop/{script}"


@pytest.fixture
async def merchant_site(rt: Runtime) -> AsyncIterator[tuple[Shop, MerchantEndpoint]]:
    shop = await make_shop(rt)
    endpoint = MerchantEndpoint(shop.secret)
    with endpoint.server:
        yield shop, endpoint


async def drain(worker: Worker) -> None:
    for _ in range(20):
        if await worker.run_once() == 0:
            return
    raise AssertionError("the worker never became idle")


@pytest.mark.parametrize("answer", ["ok", "rejected"])
async def test_with_a_check_url_the_page_waits_for_the_merchant(
    app_client: httpx.AsyncClient, rt: Runtime, merchant_site: tuple[Shop, MerchantEndpoint], answer: str
) -> None:
    shop, endpoint = merchant_site
    endpoint.status = answer
    checkout = await start_payment(
        app_client,
        shop,
        language="en",
        check_url=endpoint.url("check.php"),
        result_url=endpoint.url("result.php"),
        request_method="XML",
    )

    page = await follow(app_client, await app_client.post(f"{checkout.path}/card", data=card()))
    assert result_of(page) == "processing"
    assert 'http-equiv="refresh"' in page.text
    assert (await payment_of(rt, checkout.payment_id)).status == "check"

    await drain(Worker(rt, name="checkout-test"))

    page = await app_client.get(checkout.path)
    scripts = [script for script, _ in endpoint.received]
    if answer == "ok":
        assert result_of(page) == "success"
        assert scripts == ["check.php", "result.php"]
        assert first(endpoint.received[1][1], "pg_result") == "1"
    else:
        assert result_of(page) == "failure"
        assert failure_code(page) == "400"
        assert scripts == ["check.php", "result.php"]
        assert first(endpoint.received[1][1], "pg_result") == "0"
    assert first(endpoint.received[0][1], "pg_card_pan") == "4405-64XX-XXXX-6150"


# ---------------------------------------------------------------------------------------------
# Back to the shop


async def _pay(client: httpx.AsyncClient, checkout: Checkout, number: str = APPROVED) -> httpx.Response:
    return await follow(client, await client.post(f"{checkout.path}/card", data=card(number=number)))


async def test_success_get_return_is_a_signed_303(app_client: httpx.AsyncClient, rt: Runtime) -> None:
    shop = await make_shop(rt)
    checkout = await start_payment(
        app_client, shop, success_url="https://shop.example/done/success.php?basket=9&lang=kk"
    )
    page = await _pay(app_client, checkout)
    assert f'href="{checkout.path}/return"' in page.text and "data-auto" not in page.text

    first_click = await app_client.get(f"{checkout.path}/return")
    second_click = await app_client.get(f"{checkout.path}/return")

    assert first_click.status_code == 303
    location = urlsplit(first_click.headers["location"])
    assert (location.scheme, location.netloc, location.path) == ("https", "shop.example", "/done/success.php")
    params = parse_query(location.query)
    assert [name for name, _ in params] == [
        "basket",
        "lang",
        "pg_order_id",
        "pg_payment_id",
        "pg_salt",
        "pg_sig",
    ]
    assert first(params, "pg_order_id") == "order-77"
    assert first(params, "pg_payment_id") == str(checkout.payment_id)
    assert verify("success.php", params, shop.secret)
    assert not verify("failure.php", params, shop.secret)
    # Each click is signed with a fresh salt.
    assert first(parse_query(urlsplit(second_click.headers["location"]).query), "pg_salt") != first(
        params, "pg_salt"
    )


async def test_success_post_return_is_a_signed_form(app_client: httpx.AsyncClient, rt: Runtime) -> None:
    shop = await make_shop(rt)
    checkout = await start_payment(
        app_client, shop, success_url="https://shop.example/ok", success_url_method="POST"
    )

    page = await _pay(app_client, checkout)

    assert 'action="https://shop.example/ok"' in page.text and 'data-return="post"' in page.text
    assert "data-auto" not in page.text and "<script" not in page.text.split("</main>")[1]
    fields = [
        (unescape(n), unescape(v))
        for n, v in re.findall(r'type="hidden" name="([^"]+)" value="([^"]*)"', page.text)
    ]
    assert [name for name, _ in fields] == ["pg_order_id", "pg_payment_id", "pg_salt", "pg_sig"]
    assert verify("ok", list(fields), shop.secret)
    # The GET way back does not apply to a POST return.
    back = await app_client.get(f"{checkout.path}/return")
    assert back.headers["location"] == checkout.path


@pytest.mark.parametrize("method", ["AUTOGET", "AUTOPOST"])
async def test_failure_auto_return_carries_the_error(
    app_client: httpx.AsyncClient, rt: Runtime, method: str
) -> None:
    shop = await make_shop(rt)
    checkout = await start_payment(
        app_client,
        shop,
        language="en",
        failure_url="https://shop.example/pay/failure.php",
        failure_url_method=method,
        success_url="https://shop.example/pay/success.php",
    )

    page = await _pay(app_client, checkout, number="5367654276102126")

    assert "data-auto" in page.text and "Taking you back to the shop" in page.text
    assert "<noscript>" in page.text and "Return to the shop" in page.text
    nonce = re.search(r"script-src 'nonce-([^']+)'", page.headers["content-security-policy"]).group(1)  # type: ignore[union-attr]
    assert f'<script nonce="{nonce}">' in page.text
    if method == "AUTOGET":
        response = await app_client.get(f"{checkout.path}/return")
        params = parse_query(urlsplit(response.headers["location"]).query)
    else:
        params = [
            (unescape(n), unescape(v))
            for n, v in re.findall(r'type="hidden" name="([^"]+)" value="([^"]*)"', page.text)
        ]
    assert first(params, "pg_error_code") == "10001"
    assert first(params, "pg_error_description") == "contact the issuing bank"
    assert verify("failure.php", params, shop.secret)


async def test_without_return_urls_the_site_url_or_nothing(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    shop = await make_shop(rt)
    with_site = await start_payment(app_client, shop, order_id="a", site_url="https://shop.example/")
    page = await _pay(app_client, with_site)
    assert 'href="https://shop.example/"' in page.text
    assert "pg_sig" not in page.text

    bare = await start_payment(app_client, shop, order_id="b")
    page = await _pay(app_client, bare)
    assert result_of(page) == "success"
    assert "data-return" not in page.text
    assert (await app_client.get(f"{bare.path}/return")).headers["location"] == bare.path


DECLINED = "5367654276102126"


@pytest.mark.parametrize(
    ("urls", "way_back"),
    [
        ({"failure_url": "https://shop.example/pay/failure.php", "site_url": "https://shop.example/"}, "ok"),
        ({"site_url": "https://shop.example/"}, "site"),
        ({}, "close"),
    ],
)
async def test_declined_payment_page_always_offers_a_way_back(
    app_client: httpx.AsyncClient, rt: Runtime, urls: dict[str, str], way_back: str
) -> None:
    checkout = await start_payment(app_client, await make_shop(rt), language="en", **urls)

    page = await _pay(app_client, checkout, number=DECLINED)

    assert result_of(page) == "failure"
    links = re.findall(r'id="return-link" data-return="get" href="([^"]+)"', page.text)
    if way_back == "ok":  # the signed failure URL
        assert links == [f"{checkout.path}/return"]
        back = await app_client.get(links[0])
        assert back.headers["location"].startswith("https://shop.example/pay/failure.php?")
    elif way_back == "site":
        assert links == ["https://shop.example/"]
    else:
        assert links == []
        assert "data-close-page" in page.text
        assert "Close this page and go back to the shop." in page.text
    if way_back != "close":
        assert "data-close-page" not in page.text


async def test_close_this_page_speaks_the_payers_language(app_client: httpx.AsyncClient, rt: Runtime) -> None:
    checkout = await start_payment(app_client, await make_shop(rt), language="kk")

    page = await _pay(app_client, checkout, number=DECLINED)

    assert "Бұл бетті жауып, дүкенге оралыңыз." in page.text


async def test_return_before_the_payment_is_finished_goes_back_to_the_page(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    checkout = await start_payment(app_client, await make_shop(rt), success_url="https://shop.example/ok")
    response = await app_client.get(f"{checkout.path}/return")
    assert response.status_code == 303 and response.headers["location"] == checkout.path


# ---------------------------------------------------------------------------------------------
# Card data never leaks


@pytest.fixture
async def debug_client(database_url: str, tmp_path: Path, clean_db: None) -> AsyncIterator[httpx.AsyncClient]:
    settings: Settings = make_settings(database_url, tmp_path, log_level="DEBUG")
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


@pytest.fixture
def captured_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[MutableMapping[str, Any]]]:
    """Every structlog event of the checkout pages. Loggers are cached on first use, so the module gets
    a fresh one created while the capture is active, whatever ran before."""
    with structlog.testing.capture_logs() as events:
        monkeypatch.setattr(checkout_routes, "log", structlog.get_logger(checkout_routes.__name__))
        yield events


def _mentions(text: str, value: str) -> bool:
    return re.search(rf"(?<![0-9A-Za-z]){re.escape(value)}(?![0-9A-Za-z])", text) is not None


async def test_card_number_and_cvc_appear_in_no_response_and_no_log(
    debug_client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    captured_logs: list[MutableMapping[str, Any]],
) -> None:
    caplog.set_level(logging.DEBUG)
    rt: Runtime = debug_client.app.state.runtime  # type: ignore[attr-defined]
    shop = await make_shop(rt)
    responses: list[httpx.Response] = []
    numbers = (APPROVED, THREE_DS, "5367654276102126", "4405645000006151")

    for index, number in enumerate(numbers):
        checkout = await start_payment(debug_client, shop, order_id=f"leak-{index}")
        responses.append(await debug_client.get(checkout.path))
        for data in (card(number=number, holder="IVAN"), card(number=number, cvc="1"), card(number=number)):
            response = await debug_client.post(f"{checkout.path}/card", data=data)
            responses.append(response)
            if response.status_code == 303:
                responses.append(await debug_client.get(response.headers["location"]))
        responses.append(await debug_client.post(f"{checkout.path}/3ds", data={"password": "nope"}))
        responses.append(await debug_client.get(checkout.path))
        await _age(rt, checkout.payment_id)  # the expiry path logs too
        responses.append(await debug_client.get(checkout.path))

    texts = [r.text + str(r.headers) for r in responses]
    logs = "\n".join([caplog.text, *capsys.readouterr(), *(repr(event) for event in captured_logs)])
    for number in numbers:
        for text in [*texts, logs]:
            assert number not in text
            assert " ".join(number[i : i + 4] for i in range(0, 16, 4)) not in text
    for text in [*texts, logs]:
        assert not _mentions(text, CVC)
    # The capture did see the app's logs, SQL statements included.
    assert "checkout_step_refused" in logs and "checkout_payment_expired" in logs
    if not is_postgres(str(rt.settings.database_url)):
        assert "INSERT INTO payment_attempts" in logs  # aiosqlite logs each statement at DEBUG
    assert any(r.status_code == 400 for r in responses)
    assert any(result_of(r) == "success" for r in responses)


# ---------------------------------------------------------------------------------------------
# pg_timeout_after_payment


def refresh_of(page: httpx.Response) -> str | None:
    found = re.search(r'<meta http-equiv="refresh" content="([^"]+)">', page.text)
    return unescape(found.group(1)) if found else None


@pytest.mark.parametrize("method", ["GET", "AUTOGET"])
async def test_timeout_after_payment_returns_a_get_success_that_long_after(
    app_client: httpx.AsyncClient, rt: Runtime, method: str
) -> None:
    shop = await make_shop(rt)
    checkout = await start_payment(
        app_client,
        shop,
        success_url="https://shop.example/done/success.php",
        success_url_method=method,
        timeout_after_payment="7",
    )
    page = await _pay(app_client, checkout)
    assert result_of(page) == "success"
    # A refresh in the page itself: it works without script, within the page's CSP.
    assert refresh_of(page) == f"7;url={checkout.path}/return"
    assert 'data-redirect-after="7"' in page.text
    assert "<script" not in page.text.split("</main>")[1]
    back = await app_client.get(f"{checkout.path}/return")
    location = urlsplit(back.headers["location"])
    assert (location.netloc, location.path) == ("shop.example", "/done/success.php")
    assert verify("success.php", parse_query(location.query), shop.secret)


@pytest.mark.parametrize(("method", "seconds"), [("POST", "3"), ("AUTOPOST", "0")])
async def test_timeout_after_payment_submits_a_post_success_that_long_after(
    app_client: httpx.AsyncClient, rt: Runtime, method: str, seconds: str
) -> None:
    shop = await make_shop(rt)
    checkout = await start_payment(
        app_client,
        shop,
        success_url="https://shop.example/ok",
        success_url_method=method,
        timeout_after_payment=seconds,
    )
    page = await _pay(app_client, checkout)
    assert refresh_of(page) is None and 'data-return="post"' in page.text
    nonce = re.search(r"script-src 'nonce-([^']+)'", page.headers["content-security-policy"]).group(1)  # type: ignore[union-attr]
    script = page.text.split(f'<script nonce="{nonce}">')[1].split("</script>")[0]
    assert 'getElementById("return-form")' in script and script.strip().endswith(f",{int(seconds) * 1000});")


async def test_timeout_after_payment_is_for_success_only(app_client: httpx.AsyncClient, rt: Runtime) -> None:
    shop = await make_shop(rt)
    checkout = await start_payment(
        app_client,
        shop,
        success_url="https://shop.example/ok",
        failure_url="https://shop.example/failed",
        timeout_after_payment="5",
    )
    page = await _pay(app_client, checkout, number="5367654276102126")
    assert result_of(page) == "failure"
    assert refresh_of(page) is None and "data-redirect-after" not in page.text and "<script" not in page.text


async def test_without_timeout_after_payment_the_payer_clicks(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    checkout = await start_payment(app_client, await make_shop(rt), success_url="https://shop.example/ok")
    page = await _pay(app_client, checkout)
    assert refresh_of(page) is None and "data-redirect-after" not in page.text


@pytest.mark.parametrize("value", ["-1", "3601", "five", "1.5"])
async def test_a_bad_timeout_after_payment_is_refused(
    app_client: httpx.AsyncClient, rt: Runtime, value: str
) -> None:
    shop = await make_shop(rt)
    params: Params = [
        ("pg_merchant_id", str(shop.merchant_id)),
        ("pg_amount", "10"),
        ("pg_description", "x"),
        ("pg_timeout_after_payment", value),
    ]
    response = await app_client.post(
        "/init_payment.php", data=dict(with_signature("init_payment.php", params, shop.secret, new_salt()))
    )
    answer = parse_xml(response.text)
    assert first(answer, "pg_error_code") == "200"
    assert "pg_timeout_after_payment" in (first(answer, "pg_error_description") or "")
    async with rt.db.transaction() as session:
        assert list(await session.scalars(select(Payment))) == []
