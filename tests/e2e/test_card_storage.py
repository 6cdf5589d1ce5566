"""Card storage over HTTP: cardstorage/add(2) and its card page (3-D Secure included), the result to
pg_post_link, list and remove, payout cards, paying with a saved card (card/init → card/pay or
card/direct), the PAN encrypted at rest under rotatable keys, and refused requests writing nothing."""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
import structlog
from sqlalchemy import select, update

from greengate.app import create_app
from greengate.clock import utcnow
from greengate.domain.errors import NotFound
from greengate.runtime import Runtime
from greengate.security.encryption import Keyring
from greengate.services import keys, ledger, saved_cards
from greengate.services.merchants import create_merchant
from greengate.store.models import Payment, PaymentAttempt, SavedCard
from greengate.worker.loop import Worker
from tests.conftest import TEST_KEYS, is_postgres, make_settings
from tests.support.merchant_api import (
    Answer,
    Callback,
    CallbackServer,
    Params,
    as_params,
    send,
    signed,
    table_counts,
    verify_sig,
)
from tests.support.processes import greengate_env

APPROVED = "4405645000006150"
THREE_DS = "5483185000000293"
THREE_DS_FAILS = "4916307416334310"
DECLINED = "5367654276102126"  # 10001
PROCESSING = "5548398681700148"
PAYOUT_CARD = "4671593866478252"
CVC = "739"
USER = "user-42"
SCRIPT = Path(sys.executable).parent / "greengate"
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "greengate.cli"]


@dataclass
class CardShop:
    """A merchant's integration of card storage: ids, both secrets, a client to the gateway."""

    client: httpx.AsyncClient
    merchant_id: int
    secret: str
    payout_secret: str

    def message(self, script: str, fields: Mapping[str, Any] | Params, *, payout: bool = False) -> Params:
        params = as_params(fields)
        if not any(name == "pg_merchant_id" for name, _ in params):
            params = [("pg_merchant_id", str(self.merchant_id)), *params]
        return signed(script, params, self.payout_secret if payout else self.secret)

    def path(self, endpoint: str) -> str:
        return f"/v1/merchant/{self.merchant_id}/{endpoint}"

    async def call(
        self,
        endpoint: str,
        fields: Mapping[str, Any] | Params,
        *,
        transport: str = "form",
        payout: bool = False,
    ) -> Answer:
        script = endpoint.rpartition("/")[2]
        params = self.message(script, fields, payout=payout)
        return Answer.read(await send(self.client, self.path(endpoint), params, transport), script)

    async def ok(self, endpoint: str, fields: Mapping[str, Any] | Params, **kw: Any) -> Answer:
        return (await self.call(endpoint, fields, **kw)).assert_ok(
            self.payout_secret if kw.get("payout") else self.secret
        )


async def new_shop(rt: Runtime, client: httpx.AsyncClient, name: str = "Card Shop") -> CardShop:
    async with rt.db.transaction() as session:
        _, creds = await create_merchant(session, rt.keyring, name=name, mode="test", now=utcnow())
    return CardShop(client, creds.merchant_id, creds.secret_key, creds.payout_secret)


@pytest.fixture
async def shop(rt: Runtime, app_client: httpx.AsyncClient) -> CardShop:
    return await new_shop(rt, app_client)


@pytest.fixture
def server(shop: CardShop) -> Iterator[CallbackServer]:
    with CallbackServer(shop.secret) as s:
        yield s


async def drain(rt: Runtime) -> None:
    worker = Worker(rt)
    for _ in range(50):
        if await worker.run_once() == 0:
            return
    raise AssertionError("the worker never became idle")


def card(
    number: str = APPROVED, exp: str = "12/30", holder: str = "Ivan Petrov", cvc: str = CVC
) -> dict[str, str]:
    return {"number": number, "exp": exp, "holder": holder, "cvc": cvc}


def add_fields(server: CallbackServer, **extra: str) -> dict[str, str]:
    return {
        "pg_user_id": USER,
        "pg_post_link": server.url("/shop/card.php"),
        "pg_back_link": "https://shop.example/cards/back.php?from=gg",
        **extra,
    }


def page_path(answer: Answer) -> str:
    url = str(answer["pg_redirect_url"])
    assert url.startswith("http://testserver/cards/"), url
    return urlsplit(url).path


async def submit(client: httpx.AsyncClient, path: str, data: dict[str, str]) -> httpx.Response:
    """A page step: a 303 back to the page, followed."""
    response = await client.post(path, data=data)
    assert response.status_code == 303, response.text
    return await client.get(response.headers["location"])


def result_of(page: httpx.Response) -> str | None:
    found = re.search(r'data-result="([a-z-]+)"', page.text)
    return found.group(1) if found else None


def form_of(page: httpx.Response) -> str | None:
    found = re.search(r'data-form="([a-z0-9]+)"', page.text)
    return found.group(1) if found else None


async def add_card(
    shop: CardShop,
    server: CallbackServer,
    number: str = APPROVED,
    *,
    password: str | None = None,
    **extra: str,
) -> tuple[Answer, httpx.Response]:
    """cardstorage/add, then the payer fills the page (and the 3-D Secure password when given)."""
    answer = await shop.ok("cardstorage/add", add_fields(server, **extra))
    path = page_path(answer)
    page = await submit(shop.client, f"{path}/card", card(number))
    if password is not None:
        assert form_of(page) == "3ds", page.text
        page = await submit(shop.client, f"{path}/3ds", {"password": password})
    return answer, page


async def saved(rt: Runtime, card_id: int | str) -> SavedCard:
    async with rt.db.transaction() as session:
        row = await session.get(SavedCard, int(card_id))
        assert row is not None
        return row


async def payment_row(rt: Runtime, payment_id: int | str) -> Payment:
    async with rt.db.transaction() as session:
        row = await session.get(Payment, int(payment_id))
        assert row is not None
        return row


def mentions_cvc(text: str) -> bool:
    """The CVC next to its name, or as a form value written back (a bare 3-digit number may be anything)."""
    return re.search(rf'cvc[^0-9A-Za-z]{{0,8}}{CVC}|value="{CVC}"', text, re.IGNORECASE) is not None


def card_results(server: CallbackServer) -> list[Callback]:
    return server.received("/shop/card.php")


async def listed(shop: CardShop, user: str = USER) -> list[dict[str, str]]:
    answer = await shop.ok("cardstorage/list", {"pg_user_id": user})
    return [dict(value) for name, value in answer.params if name == "card"]


async def saved_card_id(shop: CardShop, server: CallbackServer, number: str = APPROVED, **kw: Any) -> str:
    await add_card(shop, server, number, **kw)
    cards = await listed(shop)
    return cards[-1]["pg_card_id"]


# ---------------------------------------------------------------------------------------------
# Adding a card


@pytest.mark.parametrize("transport", ["form", "query", "pg_xml", "json", "multipart"])
async def test_add_answers_a_signed_card_page_by_every_transport(
    rt: Runtime, shop: CardShop, server: CallbackServer, transport: str
) -> None:
    answer = await shop.ok("cardstorage/add", add_fields(server, pg_order_id="c-1"), transport=transport)

    assert answer["pg_type"] == "init"
    assert answer["pg_merchant_id"] == str(shop.merchant_id)
    assert answer["pg_order_id"] == "c-1"
    payment = await payment_row(rt, answer["pg_payment_id"])
    assert payment.two_step and 100 <= payment.amount <= 10_000 and payment.status == "new"
    page = await shop.client.get(page_path(answer))
    assert page.status_code == 200 and form_of(page) == "card"
    assert 'name="cvc"' in page.text


async def test_add2_is_the_same_script_under_its_own_name(shop: CardShop, server: CallbackServer) -> None:
    answer = await shop.ok("cardstorage/add2", add_fields(server))
    assert answer["pg_type"] == "init" and "pg_payment_id" in answer


async def test_approved_card_is_saved_the_hold_released_and_the_shop_told(
    rt: Runtime, shop: CardShop, server: CallbackServer
) -> None:
    answer, page = await add_card(shop, server, APPROVED, pg_order_id="c-7")

    assert result_of(page) == "success"
    assert "4405-64XX-XXXX-6150" in page.text and APPROVED not in page.text
    back = re.search(r'id="return-link"[^>]*href="([^"]+)"', page.text)
    assert back is not None
    back_url = back.group(1).replace("&amp;", "&")
    query = parse_qsl(urlsplit(back_url).query)
    assert ("from", "gg") in query and ("pg_status", "success") in query
    assert verify_sig("back.php", query, shop.secret)
    # The verification hold is voided at once; the ledger stays balanced.
    payment = await payment_row(rt, answer["pg_payment_id"])
    assert payment.status == "revoked" and payment.refunded_amount == payment.amount
    async with rt.db.transaction() as session:
        assert await ledger.check(session) == []
        attempts = list(
            await session.scalars(select(PaymentAttempt).where(PaymentAttempt.payment_id == payment.id))
        )
    assert [a.card_enc for a in attempts] == [None]  # the saved card holds the only copy
    await drain(rt)
    [callback] = card_results(server)
    assert callback.verifies(shop.secret)
    assert callback["pg_status"] == "success" and callback["pg_card_hash"] == "4405-64XX-XXXX-6150"
    assert callback["pg_user_id"] == USER and callback["pg_order_id"] == "c-7"
    row = await saved(rt, callback["pg_card_id"])
    assert row.status == "active" and callback["pg_card_token"] == row.token
    assert APPROVED not in callback.body.decode()


async def test_three_ds_card_is_saved_after_the_checkout_password_page(
    rt: Runtime, shop: CardShop, server: CallbackServer
) -> None:
    answer = await shop.ok("cardstorage/add", add_fields(server))
    path = page_path(answer)
    page = await submit(shop.client, f"{path}/card", card(THREE_DS))
    assert form_of(page) == "3ds" and "5483-18XX-XXXX-0293" in page.text
    assert "data-test-hint" in page.text

    page = await submit(shop.client, f"{path}/3ds", {"password": "12345678"})

    assert result_of(page) == "success"
    cards = await listed(shop)
    assert [c["pg_card_hash"] for c in cards] == ["5483-18XX-XXXX-0293"]


@pytest.mark.parametrize(
    ("number", "password", "code"),
    [(THREE_DS_FAILS, "12345678", "10004"), (THREE_DS, "wrong", "10004"), (DECLINED, None, "10001")],
)
async def test_card_that_fails_verification_is_not_saved_and_the_shop_gets_the_error(
    rt: Runtime, shop: CardShop, server: CallbackServer, number: str, password: str | None, code: str
) -> None:
    _, page = await add_card(shop, server, number, password=password)

    assert result_of(page) == "failure"
    assert f"data-failure-code>{code}<" in page.text
    assert await listed(shop) == []
    await drain(rt)
    [callback] = card_results(server)
    assert callback.verifies(shop.secret)
    assert callback["pg_status"] == "error" and callback["pg_failure_code"] == code
    assert callback["pg_card_id"] == "" and callback["pg_card_token"] == ""


async def test_a_card_the_acquirer_cannot_decide_at_once_is_not_saved(
    rt: Runtime, shop: CardShop, server: CallbackServer
) -> None:
    answer, page = await add_card(shop, server, PROCESSING)

    assert result_of(page) == "failure"
    assert (await payment_row(rt, answer["pg_payment_id"])).status == "canceled"
    assert await listed(shop) == []


async def test_card_form_error_comes_back_with_the_field_and_changes_nothing(
    rt: Runtime, shop: CardShop, server: CallbackServer
) -> None:
    answer = await shop.ok("cardstorage/add", add_fields(server))
    before = await table_counts(rt)

    response = await shop.client.post(f"{page_path(answer)}/card", data=card(cvc="1", holder="Ivan Petrov"))

    assert response.status_code == 400
    assert 'data-error-for="cvc"' in response.text
    assert await table_counts(rt) == before


async def test_page_past_its_lifetime_fails_the_card_with_360(
    rt: Runtime, shop: CardShop, server: CallbackServer
) -> None:
    answer = await shop.ok("cardstorage/add", add_fields(server))
    async with rt.db.transaction() as session:
        await session.execute(
            update(SavedCard)
            .values(expires_at=utcnow() - timedelta(seconds=1))
            .execution_options(synchronize_session=False)
        )

    page = await shop.client.get(page_path(answer))

    assert result_of(page) == "failure" and "data-failure-code>360<" in page.text
    assert (await payment_row(rt, answer["pg_payment_id"])).status == "expired"
    response = await shop.client.post(f"{page_path(answer)}/card", data=card())
    assert response.status_code == 303  # a stale submit lands on the result
    assert await listed(shop) == []


async def test_worker_fails_a_card_page_left_unfinished_and_tells_the_shop(
    rt: Runtime, shop: CardShop, server: CallbackServer
) -> None:
    answer = await shop.ok("cardstorage/add", add_fields(server))
    worker = Worker(rt, clock=lambda: utcnow() + timedelta(hours=1, seconds=5))

    for _ in range(10):
        if await worker.run_once() == 0:
            break

    [callback] = card_results(server)
    assert callback["pg_status"] == "error" and callback["pg_failure_code"] == "360"
    assert (await payment_row(rt, answer["pg_payment_id"])).status == "expired"
    page = await shop.client.get(page_path(answer))
    assert result_of(page) == "failure"


async def test_unknown_page_token_is_not_found(shop: CardShop) -> None:
    response = await shop.client.get("/cards/no-such-token")
    assert response.status_code == 404


# ---------------------------------------------------------------------------------------------
# Refused requests: signed error with the spec's code, nothing written


@pytest.mark.parametrize(
    ("fields", "code", "names"),
    [
        ({"pg_user_id": ""}, 200, "pg_user_id"),
        ({"pg_post_link": "ftp://shop.example/x"}, 200, "pg_post_link"),
        ({"pg_back_link": ""}, 200, "pg_back_link"),
        ({"pg_order_id": "x" * 51}, 200, "pg_order_id"),
        ({"pg_currency": "XXX"}, 200, "pg_currency"),
        ({"pg_merchant_id": "999"}, 200, "pg_merchant_id"),
    ],
)
async def test_add_with_bad_parameters_is_refused_and_writes_nothing(
    rt: Runtime, shop: CardShop, server: CallbackServer, fields: dict[str, str], code: int, names: str
) -> None:
    before = await table_counts(rt)
    answer = await shop.call("cardstorage/add", add_fields(server, **fields))
    answer.assert_error(code, shop.secret, names)
    counts = await table_counts(rt)
    assert counts == before
    assert counts["saved_cards"] == 0 and counts["payments"] == 0


async def test_wrong_signature_is_100_and_unknown_merchant_is_101_unsigned(
    rt: Runtime, shop: CardShop, server: CallbackServer
) -> None:
    before = await table_counts(rt)
    params = shop.message("add", add_fields(server))
    params = [(n, "0" * 32 if n == "pg_sig" else v) for n, v in params]
    answer = Answer.read(await send(shop.client, shop.path("cardstorage/add"), params), "add")
    answer.assert_error(100, shop.secret)
    # Payout endpoints take the payout secret: the payment secret is a wrong signature there.
    answer = await shop.call("cardstoragepayout/add", add_fields(server))
    answer.assert_error(100, shop.payout_secret)
    params = shop.message("add", add_fields(server))
    response = await send(shop.client, "/v1/merchant/987654/cardstorage/add", params)
    Answer.read(response, "add").assert_error(101, None)
    assert await table_counts(rt) == before


# ---------------------------------------------------------------------------------------------
# List and remove


async def test_list_shows_one_card_element_per_active_card_of_the_user(
    rt: Runtime, shop: CardShop, server: CallbackServer
) -> None:
    await add_card(shop, server, APPROVED)
    await add_card(shop, server, THREE_DS, password="12345678")
    await add_card(shop, server, DECLINED)
    await add_card(shop, server, APPROVED, pg_user_id="someone-else")

    cards = await listed(shop)

    assert [c["pg_card_hash"] for c in cards] == ["4405-64XX-XXXX-6150", "5483-18XX-XXXX-0293"]
    for c in cards:
        assert set(c) >= {
            "pg_status",
            "pg_merchant_id",
            "pg_card_id",
            "pg_card_token",
            "pg_recurring_profile_id",
            "pg_card_hash",
            "created_at",
        }
        assert c["pg_status"] == "approved" and c["pg_merchant_id"] == str(shop.merchant_id)
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", c["created_at"])
    # The same PAN saved twice gets two unrelated random tokens.
    await add_card(shop, server, APPROVED)
    tokens = [c["pg_card_token"] for c in await listed(shop)]
    assert len(set(tokens)) == 3 and all(len(t) >= 32 and APPROVED not in t for t in tokens)
    other = await new_shop(rt, shop.client, "Other")
    assert await listed(other) == []


async def test_list_without_user_is_200(shop: CardShop) -> None:
    (await shop.call("cardstorage/list", {})).assert_error(200, shop.secret, "pg_user_id")


@pytest.mark.parametrize("by", ["pg_card_id", "pg_card_token"])
async def test_remove_destroys_the_pan_and_kills_the_card(
    rt: Runtime, shop: CardShop, server: CallbackServer, by: str
) -> None:
    await add_card(shop, server)
    [entry] = await listed(shop)

    answer = await shop.ok("cardstorage/remove", {"pg_user_id": USER, by: entry[by]})

    removed = dict(answer["card"])
    assert removed["pg_card_id"] == entry["pg_card_id"] and removed["pg_status"] == "deleted"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", removed["deleted_at"])
    row = await saved(rt, entry["pg_card_id"])
    assert row.pan_enc is None and row.status == "removed"
    assert await listed(shop) == []
    again = await shop.call("cardstorage/remove", {"pg_user_id": USER, by: entry[by]})
    again.assert_error(340, shop.secret)
    init = await shop.call("card/init", charge_fields(entry["pg_card_id"]))
    init.assert_error(340, shop.secret)


async def test_remove_refuses_another_users_card_and_missing_ids(
    rt: Runtime, shop: CardShop, server: CallbackServer
) -> None:
    card_id = await saved_card_id(shop, server)
    before = await table_counts(rt)
    wrong_user = await shop.call("cardstorage/remove", {"pg_user_id": "intruder", "pg_card_id": card_id})
    wrong_user.assert_error(340, shop.secret)
    no_ids = await shop.call("cardstorage/remove", {"pg_user_id": USER})
    no_ids.assert_error(200, shop.secret, "pg_card_id")
    bad_id = await shop.call("cardstorage/remove", {"pg_user_id": USER, "pg_card_id": "1e3"})
    bad_id.assert_error(200, shop.secret, "pg_card_id")
    counts = await table_counts(rt)
    assert counts == before
    assert (await saved(rt, card_id)).status == "active"


async def test_removing_a_card_cancels_its_unpaid_payment_and_wipes_its_attempts(
    rt: Runtime, shop: CardShop, server: CallbackServer
) -> None:
    card_id = await saved_card_id(shop, server, THREE_DS, password="12345678")
    payment_id = (await shop.ok("card/init", charge_fields(card_id)))["pg_payment_id"]
    response = await shop.client.get(pay_link(shop, payment_id))
    assert response.status_code == 303

    await shop.ok("cardstorage/remove", {"pg_user_id": USER, "pg_card_id": card_id})

    assert (await payment_row(rt, payment_id)).status == "canceled"
    async with rt.db.transaction() as session:
        attempts = list(
            await session.scalars(select(PaymentAttempt).where(PaymentAttempt.payment_id == int(payment_id)))
        )
    assert attempts and all(a.card_enc is None for a in attempts)


# ---------------------------------------------------------------------------------------------
# Paying with a saved card


def charge_fields(card_id: str, **extra: str) -> dict[str, str]:
    return {
        "pg_user_id": USER,
        "pg_card_id": card_id,
        "pg_amount": "250.50",
        "pg_description": "Monthly box",
        "pg_order_id": extra.pop("pg_order_id", "box-1"),
        **extra,
    }


def pay_link(shop: CardShop, payment_id: str) -> str:
    params = shop.message("pay", {"pg_payment_id": payment_id})
    return f"{shop.path('card/pay')}?{httpx.QueryParams(params)}"


async def test_direct_payment_with_a_saved_card_is_a_normal_card_payment(
    rt: Runtime, shop: CardShop, server: CallbackServer
) -> None:
    card_id = await saved_card_id(shop, server)
    init = await shop.ok(
        "card/init", charge_fields(card_id, pg_result_url=server.url("/shop/result.php"), shop_ref="r-9")
    )
    payment_id = init["pg_payment_id"]

    answer = await shop.ok("card/direct", {"pg_payment_id": payment_id})

    assert answer["pg_payment_status"] == "success"
    assert answer["pg_card_pan"] == "4405-64XX-XXXX-6150"
    row = await saved(rt, card_id)
    assert answer["pg_card_token"] == row.token
    status = await shop.client.post(
        "/get_status2.php", data=dict(shop.message("get_status2.php", {"pg_payment_id": payment_id}))
    )
    assert "<pg_transaction_status>ok</pg_transaction_status>" in status.text
    payment = await payment_row(rt, payment_id)
    assert payment.amount == 25050 and payment.status == "ok"
    await drain(rt)
    [result] = server.received("/shop/result.php")
    assert result.verifies(shop.secret) and result["pg_result"] == "1"
    assert result["pg_card_pan"] == "4405-64XX-XXXX-6150" and result["shop_ref"] == "r-9"
    assert "pg_card_id" not in result and "pg_card_token" not in result
    async with rt.db.transaction() as session:
        assert await ledger.check(session) == []
    again = await shop.call("card/direct", {"pg_payment_id": payment_id})
    again.assert_error(490, shop.secret)


async def test_get_status3_names_the_saved_card_a_payment_was_made_with(
    rt: Runtime, shop: CardShop, server: CallbackServer
) -> None:
    card_id = await saved_card_id(shop, server)
    payment_id = (await shop.ok("card/init", charge_fields(card_id)))["pg_payment_id"]
    await shop.ok("card/direct", {"pg_payment_id": payment_id})
    other = (await shop.ok("card/init", charge_fields(card_id, pg_order_id="box-2")))["pg_payment_id"]

    token = (await saved(rt, card_id)).token
    for pid in (payment_id, other):  # paid, and not paid yet
        response = await shop.client.post(
            "/get_status3.php", data=dict(shop.message("get_status3.php", {"pg_payment_id": pid}))
        )
        status3 = Answer.read(response, "get_status3.php").assert_ok(shop.secret)
        assert status3["pg_card_token"] == token
    plain = await shop.client.post(
        "/init_payment.php",
        data=dict(shop.message("init_payment.php", {"pg_amount": "10", "pg_description": "x"})),
    )
    plain_id = Answer.read(plain, "init_payment.php").assert_ok(shop.secret)["pg_payment_id"]
    response = await shop.client.post(
        "/get_status3.php", data=dict(shop.message("get_status3.php", {"pg_payment_id": plain_id}))
    )
    assert Answer.read(response, "get_status3.php").assert_ok(shop.secret)["pg_card_token"] == ""


async def test_direct_payment_with_a_card_that_requires_3ds_fails_with_10004(
    rt: Runtime, shop: CardShop, server: CallbackServer
) -> None:
    card_id = await saved_card_id(shop, server, THREE_DS, password="12345678")
    payment_id = (await shop.ok("card/init", charge_fields(card_id)))["pg_payment_id"]

    answer = await shop.ok("card/direct", {"pg_payment_id": payment_id})

    assert answer["pg_payment_status"] == "error" and answer["pg_failure_code"] == "10004"


async def test_a_saved_card_past_its_expiry_is_declined_with_10005(
    rt: Runtime, shop: CardShop, server: CallbackServer
) -> None:
    card_id = await saved_card_id(shop, server)
    async with rt.db.transaction() as session:
        await session.execute(
            update(SavedCard).values(card_exp="01/21").execution_options(synchronize_session=False)
        )
    payment_id = (await shop.ok("card/init", charge_fields(card_id)))["pg_payment_id"]

    answer = await shop.ok("card/direct", {"pg_payment_id": payment_id})

    assert answer["pg_payment_status"] == "error" and answer["pg_failure_code"] == "10005"


async def test_card_pay_sends_the_payer_through_the_checkout_3ds_page(
    rt: Runtime, shop: CardShop, server: CallbackServer
) -> None:
    card_id = await saved_card_id(shop, server, THREE_DS, password="12345678")
    init = await shop.ok("card/init", charge_fields(card_id, pg_success_url="https://shop.example/ok.php"))

    response = await shop.client.get(pay_link(shop, init["pg_payment_id"]))

    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith("http://testserver/pay/")
    page = await shop.client.get(location)
    assert form_of(page) == "3ds" and "5483-18XX-XXXX-0293" in page.text
    page = await submit(shop.client, f"{urlsplit(location).path}/3ds", {"password": "12345678"})
    assert result_of(page) == "success"
    assert 'data-return="get"' in page.text  # the signed way back to pg_success_url
    assert (await payment_row(rt, init["pg_payment_id"])).status == "ok"


async def test_card_pay_without_3ds_lands_on_the_result(
    rt: Runtime, shop: CardShop, server: CallbackServer
) -> None:
    card_id = await saved_card_id(shop, server)
    payment_id = (await shop.ok("card/init", charge_fields(card_id)))["pg_payment_id"]

    response = await shop.client.get(pay_link(shop, payment_id))

    page = await shop.client.get(response.headers["location"])
    assert result_of(page) == "success"
    # Following a fresh link again (the back button) shows the payment as it is; nothing is paid twice.
    again = await shop.client.get(pay_link(shop, payment_id))
    assert again.status_code == 303
    assert (await payment_row(rt, payment_id)).status == "ok"


async def test_card_pay_with_a_bad_signature_is_an_error_page(shop: CardShop, server: CallbackServer) -> None:
    card_id = await saved_card_id(shop, server)
    payment_id = (await shop.ok("card/init", charge_fields(card_id)))["pg_payment_id"]
    link = pay_link(shop, payment_id).replace("pg_sig=", "pg_sig=0")

    response = await shop.client.get(link)

    assert response.status_code == 400 and "Error 100" in response.text


async def test_card_init_by_token_with_idempotency_key_makes_one_payment(
    rt: Runtime, shop: CardShop, server: CallbackServer
) -> None:
    card_id = await saved_card_id(shop, server)
    token = (await saved(rt, card_id)).token
    fields = charge_fields("", pg_card_token=token, pg_idempotency_key="k-1")
    del fields["pg_card_id"]

    first_id = (await shop.ok("card/init", fields))["pg_payment_id"]
    second_id = (await shop.ok("card/init", fields))["pg_payment_id"]

    assert first_id == second_id


@pytest.mark.parametrize(
    ("change", "code", "names"),
    [
        ({"pg_card_id": ""}, 200, "pg_card_id"),
        ({"pg_card_id": "424242"}, 340, None),
        ({"pg_user_id": "intruder"}, 340, None),
        ({"pg_user_id": ""}, 200, "pg_user_id"),
        ({"pg_amount": "-1"}, 200, "pg_amount"),
        ({"pg_amount": "1.001"}, 200, "pg_amount"),
        ({"pg_description": ""}, 200, "pg_description"),
    ],
)
async def test_card_init_with_bad_input_is_refused_and_writes_nothing(
    rt: Runtime, shop: CardShop, server: CallbackServer, change: dict[str, str], code: int, names: str | None
) -> None:
    card_id = await saved_card_id(shop, server)
    before = await table_counts(rt)

    answer = await shop.call("card/init", {**charge_fields(card_id), **change})

    answer.assert_error(code, shop.secret, names)
    counts = await table_counts(rt)
    assert counts == before


async def test_card_direct_on_a_payment_not_made_with_a_saved_card_is_340(
    rt: Runtime, shop: CardShop
) -> None:
    plain = (
        await shop.client.post(
            "/init_payment.php",
            data=dict(shop.message("init_payment.php", {"pg_amount": "10", "pg_description": "plain"})),
        )
    ).text
    payment_id = re.search(r"<pg_payment_id>(\d+)</pg_payment_id>", plain)
    assert payment_id is not None
    before = await table_counts(rt)
    answer = await shop.call("card/direct", {"pg_payment_id": payment_id.group(1)})
    answer.assert_error(340, shop.secret)
    missing = await shop.call("card/direct", {})
    missing.assert_error(200, shop.secret, "pg_payment_id")
    counts = await table_counts(rt)
    assert counts == before


# ---------------------------------------------------------------------------------------------
# Payout cards


@pytest.fixture
def payout_server(shop: CardShop) -> Iterator[CallbackServer]:
    with CallbackServer(shop.payout_secret) as s:
        yield s


async def test_payout_card_is_saved_without_cvc_and_resolves_for_payouts(
    rt: Runtime, shop: CardShop, payout_server: CallbackServer
) -> None:
    answer = await shop.ok("cardstoragepayout/add", add_fields(payout_server), payout=True)
    assert str(answer["pg_payment_id"]).isdigit()  # no check payment: the card's own id
    path = page_path(answer)
    page = await shop.client.get(path)
    assert form_of(page) == "card" and 'name="cvc"' not in page.text

    page = await submit(
        shop.client, f"{path}/card", {"number": PAYOUT_CARD, "exp": "11/31", "holder": "Anna Li"}
    )

    assert result_of(page) == "success"
    await drain(rt)
    [callback] = payout_server.received("/shop/card.php")
    assert callback.verifies(shop.payout_secret) and callback["pg_status"] == "success"
    card_id = callback["pg_card_id"]
    listed_payout = await shop.ok("cardstoragepayout/list", {"pg_user_id": USER}, payout=True)
    assert dict(listed_payout["card"])["pg_card_id"] == card_id
    assert await listed(shop) == []  # not a card to charge
    async with rt.db.transaction() as session:
        resolved = await saved_cards.payout_card(session, rt.keyring, shop.merchant_id, USER, card_id=card_id)
        assert resolved.pan.reveal() == PAYOUT_CARD and PAYOUT_CARD not in repr(resolved)
        assert resolved.masked == "4671-59XX-XXXX-8252" and resolved.token == callback["pg_card_token"]
        by_token = await saved_cards.payout_card(
            session, rt.keyring, shop.merchant_id, USER, token=resolved.token
        )
        assert by_token.card_id == resolved.card_id
        with pytest.raises(NotFound):
            await saved_cards.payout_card(session, rt.keyring, shop.merchant_id, "intruder", card_id=card_id)
    init = await shop.call("card/init", charge_fields(card_id))
    init.assert_error(340, shop.secret)


async def test_payout_card_page_refuses_a_purchase_test_card(
    rt: Runtime, shop: CardShop, payout_server: CallbackServer
) -> None:
    answer = await shop.ok("cardstoragepayout/add", add_fields(payout_server), payout=True)

    page = await submit(
        shop.client, f"{page_path(answer)}/card", {"number": APPROVED, "exp": "11/31", "holder": "Anna Li"}
    )

    assert result_of(page) == "failure" and "data-failure-code>10005<" in page.text


# ---------------------------------------------------------------------------------------------
# Keys and card data


async def test_card_saved_under_an_old_key_still_works_and_rotation_moves_it_to_the_current_key(
    rt: Runtime, shop: CardShop, server: CallbackServer, database_url: str, tmp_path: Path
) -> None:
    card_id = await saved_card_id(shop, server)
    old = Keyring.parse(TEST_KEYS.split(",")[1])  # t0 only: the key before the rotation
    async with rt.db.transaction() as session:
        row = await session.get(SavedCard, int(card_id))
        assert row is not None and row.pan_enc is not None
        row.pan_enc = old.encrypt(APPROVED, saved_cards.pan_aad(row.id))
    assert (await saved(rt, card_id)).pan_enc.startswith("v1:t0:")  # type: ignore[union-attr]
    async with rt.db.transaction() as session:  # the current keyring (t1, t0) still reads it
        resolved = await saved_cards.payout_card(session, rt.keyring, shop.merchant_id, USER, card_id=card_id)
        assert resolved.pan.reveal() == APPROVED

    result = await asyncio.to_thread(
        subprocess.run,
        [*COMMAND, "keys", "rotate"],
        env=greengate_env(database_url),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert "saved_cards.pan_enc: 1 re-encrypted" in result.stdout
    assert "every encrypted value is under key t1" in result.stdout
    row = await saved(rt, card_id)
    assert row.pan_enc is not None and row.pan_enc.startswith("v1:t1:")
    new_only = Keyring.parse(TEST_KEYS.split(",")[0])  # the old key can now be retired
    assert new_only.decrypt(row.pan_enc, saved_cards.pan_aad(row.id)) == APPROVED
    payment_id = (await shop.ok("card/init", charge_fields(card_id)))["pg_payment_id"]
    assert (await shop.ok("card/direct", {"pg_payment_id": payment_id}))["pg_payment_status"] == "success"
    async with rt.db.transaction() as session:
        again = await keys.rotate(session, rt.keyring, now=utcnow())
    assert sum(again.reencrypted.values()) == 0


async def test_pan_and_cvc_never_leave_in_answers_pages_or_callbacks(
    rt: Runtime, shop: CardShop, server: CallbackServer
) -> None:
    texts: list[str] = []
    answer = await shop.ok("cardstorage/add", add_fields(server))
    path = page_path(answer)
    for response in (
        await shop.client.post(f"{path}/card", data=card(THREE_DS, cvc="1")),
        await shop.client.post(f"{path}/card", data=card(THREE_DS)),
        await shop.client.get(path),
        await shop.client.post(f"{path}/3ds", data={"password": "12345678"}),
        await shop.client.get(path),
    ):
        texts.append(response.text + str(response.headers))
    texts.append(str((await shop.ok("cardstorage/list", {"pg_user_id": USER})).params))
    await drain(rt)
    texts += [c.body.decode() + c.raw_query for c in server.received()]
    async with rt.db.transaction() as session:
        row = await session.scalar(select(SavedCard))
    assert row is not None and row.pan_enc is not None
    for text in texts:
        assert THREE_DS not in text and "5483 1850" not in text
        assert not mentions_cvc(text)
    for text in (row.token, row.pan_enc):
        assert THREE_DS not in text and "0293" not in text


@pytest.fixture
async def debug_client(database_url: str, tmp_path: Path, clean_db: None) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(database_url, tmp_path, log_level="DEBUG"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


async def test_pan_and_cvc_never_reach_the_logs(
    debug_client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    rt: Runtime = debug_client.app.state.runtime  # type: ignore[attr-defined]
    shop = await new_shop(rt, debug_client)
    with CallbackServer(shop.secret) as server, structlog.testing.capture_logs() as events:
        await add_card(shop, server, THREE_DS, password="12345678")
        await add_card(shop, server, DECLINED)
        card_id = (await listed(shop))[0]["pg_card_id"]
        payment_id = (await shop.ok("card/init", charge_fields(card_id)))["pg_payment_id"]
        await shop.ok("card/direct", {"pg_payment_id": payment_id})
        await shop.ok("cardstorage/remove", {"pg_user_id": USER, "pg_card_id": card_id})
        await drain(rt)

    logs = "\n".join([caplog.text, *capsys.readouterr(), *(repr(event) for event in events)])
    if not is_postgres(str(rt.settings.database_url)):
        assert "INSERT INTO saved_cards" in logs  # the capture saw the app (aiosqlite logs statements)
    for number in (THREE_DS, DECLINED):
        assert number not in logs and " ".join(number[i : i + 4] for i in range(0, 16, 4)) not in logs
    assert not mentions_cvc(logs)
