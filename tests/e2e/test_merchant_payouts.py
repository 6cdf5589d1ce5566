"""Payouts to cards over real HTTP: api/reg2nonreg with the recipient's hosted page, api/reg2reg to a
saved card, api/payment_status, the payout test cards (processing ones resolved by the worker), the
ledger reservation, pg_post_link callbacks, idempotency and the operator's test buttons."""

from __future__ import annotations

import asyncio
import hashlib
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import func, select

from greengate.clock import utcnow
from greengate.domain import ledger as ledger_domain
from greengate.domain.card_rules import validate_card_form
from greengate.domain.ledger import Book
from greengate.runtime import Runtime
from greengate.services import ledger, payouts, saved_cards
from greengate.services.merchants import create_merchant
from greengate.store.models import Merchant, OutboxMessage, Payout
from greengate.worker.loop import Worker
from tests.support.merchant_api import (
    Answer,
    CallbackServer,
    Shop,
    send,
    signed,
    table_counts,
)
from tests.support.processes import greengate_env

SUCCESS = "4671593866478252"
ERROR_10000 = "5325349472901311"
ERROR_10001 = "4556046085041740"
ERROR_8888 = "5543974702876045"
PROCESSING_THEN_SUCCESS = "5507841999732294"
PROCESSING_THEN_ERROR = "4532676596620704"
PURCHASE_CARD = "4405645000006150"
FUNDS = 1_000_000  # 10 000.00 KZT
_funding = count(1)
SCRIPT = Path(sys.executable).parent / "greengate"
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "greengate.cli"]


@dataclass
class PayoutShop:
    """A merchant calling the payout scripts, signed with its payout secret."""

    client: httpx.AsyncClient
    merchant_id: int
    payout_secret: str
    secret_key: str

    async def call(
        self,
        script: str,
        fields: dict[str, Any],
        *,
        secret: str | None = None,
        transport: str = "form",
        headers: dict[str, str] | None = None,
    ) -> Answer:
        values = {"pg_merchant_id": str(self.merchant_id), **fields}
        params = signed(script, [(k, str(v)) for k, v in values.items()], secret or self.payout_secret)
        if headers:
            response = await self.client.post(f"/api/{script}", data=dict(params), headers=headers)
        else:
            response = await send(self.client, f"/api/{script}", params, transport)
        return Answer.read(response, script)

    async def reg2nonreg(self, **fields: Any) -> Answer:
        values: dict[str, Any] = {
            "pg_amount": "1500",
            "pg_order_id": "PO-1",
            "pg_user_id": "user-7",
            "pg_description": "Выигрыш",
        }
        values.update(fields)
        return await self.call("reg2nonreg", {k: v for k, v in values.items() if v is not None})

    async def status(self, **fields: Any) -> Answer:
        return (await self.call("payment_status", fields)).assert_ok(self.payout_secret)


@pytest.fixture
async def shop(rt: Runtime, app_client: httpx.AsyncClient) -> PayoutShop:
    async with rt.db.transaction() as session:
        merchant, creds = await create_merchant(
            session, rt.keyring, name="Payout Shop", mode="test", now=utcnow()
        )
    shop = PayoutShop(app_client, merchant.id, creds.payout_secret, creds.secret_key)
    await fund(rt, shop.merchant_id, FUNDS)
    return shop


@pytest.fixture
def server(shop: PayoutShop) -> Iterator[CallbackServer]:
    with CallbackServer(shop.payout_secret) as s:
        yield s


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


async def fund(
    rt: Runtime, merchant_id: int, amount: int, currency: str = "KZT", book: Book = Book.TEST
) -> None:
    """Credit the merchant's available balance in `book` as a settled payment would (the ledger's
    own recipe); test-mode merchants pay out of the test book."""
    async with rt.db.transaction() as session:
        await ledger.post(
            session,
            ledger_domain.payment_succeeded(merchant_id, amount, currency, 0, book=book),
            object_type="test_funding",
            object_id=f"{merchant_id}:{next(_funding)}",
            now=utcnow(),
        )


async def balances(
    rt: Runtime, merchant_id: int, currency: str = "KZT", book: Book = Book.TEST
) -> tuple[int, int, int]:
    """(available, reserved, the gateway's payout clearing) in `book`."""
    owner = ledger_domain.merchant_owner(merchant_id)
    async with rt.db.transaction() as session:
        return (
            await ledger.balance(session, owner, "available", currency, book),
            await ledger.balance(session, owner, "reserved", currency, book),
            await ledger.balance(session, "gateway", "payout_clearing", currency, book),
        )


async def drain(worker: Worker) -> int:
    total = 0
    for _ in range(50):
        claimed = await worker.run_once()
        if claimed == 0:
            return total
        total += claimed
    raise AssertionError("the worker never became idle")


def token_of(answer: Answer) -> str:
    url = urlsplit(answer["pg_redirect_url"])
    assert (url.scheme, url.netloc) == ("http", "testserver")
    match = re.fullmatch(r"/payout/([A-Za-z0-9_-]{20,})", url.path)
    assert match, url.path
    return match.group(1)


async def enter_card(client: httpx.AsyncClient, answer: Answer, number: str) -> httpx.Response:
    return await client.post(f"/payout/{token_of(answer)}/card", data={"number": number})


async def payout_row(rt: Runtime, payout_id: int) -> Payout:
    async with rt.db.transaction() as session:
        payout = await session.get(Payout, payout_id)
        assert payout is not None
        return payout


def auth_code(payout_id: int) -> str:
    digest = hashlib.sha256(f"payout:{payout_id}".encode()).digest()
    return f"{int.from_bytes(digest[:8], 'big') % 10**6:06d}"


# --- reg2nonreg and the hosted page ---------------------------------------------------------------


@pytest.mark.parametrize("transport", ["form", "query", "pg_xml", "json", "multipart"])
async def test_reg2nonreg_reserves_the_amount_and_answers_the_page_url(
    rt: Runtime, shop: PayoutShop, app_client: httpx.AsyncClient, transport: str
) -> None:
    answer = await shop.call(
        "reg2nonreg",
        {"pg_amount": "1500.5", "pg_order_id": "PO-1", "pg_user_id": "u1", "pg_description": "Prize"},
        transport=transport,
    )
    answer.assert_ok(shop.payout_secret)
    assert [name for name, _ in answer.params] == [
        "pg_status",
        "pg_payment_id",
        "pg_redirect_url",
        "pg_salt",
        "pg_sig",
    ]
    assert await balances(rt, shop.merchant_id) == (FUNDS - 150_050, 150_050, 0)
    page = await app_client.get(answer["pg_redirect_url"])
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "1\u00a0500,50\u00a0KZT" in page.text and 'name="number"' in page.text
    status = await shop.status(pg_payment_id=answer["pg_payment_id"])
    assert (status["pg_transaction_status"], status["pg_payment_status"]) == ("partial", "waiting")
    assert (status["pg_amount"], status["pg_currency"], status["pg_order_id"]) == ("1500.50", "KZT", "PO-1")


async def test_success_card_pays_out_completes_the_ledger_and_calls_back(
    rt: Runtime, shop: PayoutShop, app_client: httpx.AsyncClient, server: CallbackServer
) -> None:
    answer = (await shop.reg2nonreg(pg_post_link=server.url("/shop/payout.php"), shop_ref="r-9")).assert_ok(
        shop.payout_secret
    )
    payout_id = int(answer["pg_payment_id"])
    back = await enter_card(app_client, answer, "4671 5938 6647 8252")
    assert back.status_code == 303 and back.headers["location"] == f"/payout/{token_of(answer)}"
    page = await app_client.get(back.headers["location"])
    assert 'data-result="success"' in page.text and "4671-59XX-XXXX-8252" in page.text
    assert SUCCESS not in page.text
    assert await balances(rt, shop.merchant_id) == (FUNDS - 150_000, 0, 150_000)
    status = await shop.status(pg_order_id="PO-1")
    assert (status["pg_transaction_status"], status["pg_payment_status"]) == ("ok", "success")
    assert (status["pg_card_hash"], status["pg_error_code"]) == ("4671-59XX-XXXX-8252", "0")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", status["pg_payment_date"])

    await drain(Worker(rt))
    [callback] = server.received()
    assert callback.method == "POST" and callback.script == "payout.php"
    assert callback.verifies(shop.payout_secret) and not callback.verifies(shop.secret_key)
    assert callback["pg_payment_id"] == str(payout_id) and callback["pg_order_id"] == "PO-1"
    assert (callback["pg_status"], callback["pg_result"], callback["pg_error_code"]) == ("ok", "1", "0")
    assert (callback["pg_amount"], callback["pg_currency"]) == ("1500.00", "KZT")
    assert callback["pg_card_hash"] == "4671-59XX-XXXX-8252" and callback["shop_ref"] == "r-9"
    assert (await payout_row(rt, payout_id)).auth_code == auth_code(payout_id)
    async with rt.db.transaction() as session:
        assert await ledger.check(session) == []


@pytest.mark.parametrize(("number", "code"), [(ERROR_10000, 10000), (ERROR_10001, 10001), (ERROR_8888, 8888)])
async def test_error_cards_fail_the_payout_and_release_the_reservation(
    rt: Runtime,
    shop: PayoutShop,
    app_client: httpx.AsyncClient,
    server: CallbackServer,
    number: str,
    code: int,
) -> None:
    answer = (await shop.reg2nonreg(pg_post_link=server.url("/shop/payout.php"))).assert_ok(
        shop.payout_secret
    )
    await enter_card(app_client, answer, number)
    page = await app_client.get(f"/payout/{token_of(answer)}?lang=en")
    assert 'data-result="failure"' in page.text and f"<dd data-failure-code>{code}</dd>" in page.text
    assert await balances(rt, shop.merchant_id) == (FUNDS, 0, 0)
    status = await shop.status(pg_payment_id=answer["pg_payment_id"])
    assert (status["pg_transaction_status"], status["pg_failure_code"]) == ("failed", str(code))
    # The payer-facing code is pg_failure_code only; the API code is the family's 470.
    assert status["pg_error_code"] == "470" and status["pg_failure_description"]
    await drain(Worker(rt))
    [callback] = server.received()
    assert (callback["pg_status"], callback["pg_result"], callback["pg_error_code"]) == (
        "error",
        "0",
        str(code),
    )
    assert callback.verifies(shop.payout_secret)


@pytest.mark.parametrize(
    ("number", "final", "code"),
    [(PROCESSING_THEN_SUCCESS, "ok", None), (PROCESSING_THEN_ERROR, "failed", "10001")],
)
async def test_processing_cards_stay_processing_until_the_operator_resolves_them(
    rt: Runtime,
    shop: PayoutShop,
    app_client: httpx.AsyncClient,
    server: CallbackServer,
    number: str,
    final: str,
    code: str | None,
) -> None:
    answer = (await shop.reg2nonreg(pg_post_link=server.url("/shop/payout.php"))).assert_ok(
        shop.payout_secret
    )
    await enter_card(app_client, answer, number)
    page = await app_client.get(f"/payout/{token_of(answer)}")
    assert 'data-result="processing"' in page.text and 'http-equiv="refresh"' in page.text
    status = await shop.status(pg_payment_id=answer["pg_payment_id"])
    assert (status["pg_transaction_status"], status["pg_payment_status"]) == ("pending", "process")
    assert await balances(rt, shop.merchant_id) == (FUNDS - 150_000, 150_000, 0)

    # Nothing happens to a test payout by itself: not a few seconds later, not a day later.
    clock = Clock()
    worker = Worker(rt, clock=clock)
    for step in (0, 6, 3600, 86400):
        clock.advance(step)
        await drain(worker)
    assert (await shop.status(pg_payment_id=answer["pg_payment_id"]))["pg_transaction_status"] == "pending"
    assert server.received() == []
    async with rt.db.transaction() as session:
        kinds = set(await session.scalars(select(OutboxMessage.kind)))
        assert kinds <= {payouts.EXPIRE_JOB}, kinds  # no job resolves it behind the operator's back
        payout = await payouts.test_action(
            session, int(answer["pg_payment_id"]), "resolve", now=utcnow(), actor="operator:test", rt=rt
        )
        assert payout.status == final
    await drain(worker)

    status = await shop.status(pg_payment_id=answer["pg_payment_id"])
    assert status["pg_transaction_status"] == final and status.get("pg_failure_code") == code
    expected = (FUNDS - 150_000, 0, 150_000) if final == "ok" else (FUNDS, 0, 0)
    assert await balances(rt, shop.merchant_id) == expected
    [callback] = server.received()
    assert callback["pg_status"] == ("ok" if final == "ok" else "error")
    page = await app_client.get(f"/payout/{token_of(answer)}")
    assert ('data-result="success"' if final == "ok" else 'data-result="failure"') in page.text


async def test_purchase_card_and_non_test_card_are_declined_in_test_mode(
    rt: Runtime, shop: PayoutShop, app_client: httpx.AsyncClient
) -> None:
    first = (await shop.reg2nonreg(pg_order_id="A")).assert_ok(shop.payout_secret)
    second = (await shop.reg2nonreg(pg_order_id="B")).assert_ok(shop.payout_secret)
    await enter_card(app_client, first, PURCHASE_CARD)
    await enter_card(app_client, second, "4111111111111111")
    for answer in (first, second):
        status = await shop.status(pg_payment_id=answer["pg_payment_id"])
        assert (status["pg_transaction_status"], status["pg_failure_code"]) == ("failed", "10005")
    assert await balances(rt, shop.merchant_id) == (FUNDS, 0, 0)


@pytest.mark.parametrize(
    ("number", "error"),
    [
        ("", "err_number_format"),
        ("4671 5938", "err_number_format"),
        ("4671593866478253", "err_number_invalid"),
    ],
)
async def test_malformed_card_number_shows_the_form_again_and_changes_nothing(
    rt: Runtime, shop: PayoutShop, app_client: httpx.AsyncClient, number: str, error: str
) -> None:
    answer = (await shop.reg2nonreg()).assert_ok(shop.payout_secret)
    before = await table_counts(rt)
    page = await enter_card(app_client, answer, number)
    assert page.status_code == 400 and 'data-error-for="number"' in page.text
    assert 'aria-invalid="true"' in page.text
    assert await table_counts(rt) == before
    assert (await shop.status(pg_payment_id=answer["pg_payment_id"]))["pg_transaction_status"] == "partial"


async def test_second_card_submit_does_not_pay_twice(
    rt: Runtime, shop: PayoutShop, app_client: httpx.AsyncClient
) -> None:
    answer = (await shop.reg2nonreg()).assert_ok(shop.payout_secret)
    await enter_card(app_client, answer, SUCCESS)
    again = await enter_card(app_client, answer, ERROR_10000)
    assert again.status_code == 303
    assert (await shop.status(pg_payment_id=answer["pg_payment_id"]))["pg_transaction_status"] == "ok"
    assert await balances(rt, shop.merchant_id) == (FUNDS - 150_000, 0, 150_000)


@pytest.mark.parametrize("lang", ["ru", "en", "kk"])
async def test_page_speaks_the_requested_language(
    shop: PayoutShop, app_client: httpx.AsyncClient, lang: str
) -> None:
    answer = (await shop.reg2nonreg(pg_language=lang)).assert_ok(shop.payout_secret)
    page = await app_client.get(answer["pg_redirect_url"])
    title = {"ru": "Получение выплаты", "en": "Receive a payout", "kk": "Төлемді алу"}[lang]
    assert f'<html lang="{lang}">' in page.text and title in page.text
    assert "<script" in page.text and "nonce-" in page.headers["content-security-policy"]
    assert (await app_client.get("/payout/not-a-token")).status_code == 404


async def test_time_limit_expires_the_payout_and_releases_the_money(
    rt: Runtime, shop: PayoutShop, app_client: httpx.AsyncClient, server: CallbackServer
) -> None:
    limit = (utcnow() + timedelta(minutes=10)).strftime("%Y-%m-%d %H:%M:%S")
    answer = (
        await shop.reg2nonreg(pg_order_time_limit=limit, pg_post_link=server.url("/shop/payout.php"))
    ).assert_ok(shop.payout_secret)
    clock = Clock()
    worker = Worker(rt, clock=clock)
    await drain(worker)
    assert (await shop.status(pg_payment_id=answer["pg_payment_id"]))["pg_transaction_status"] == "partial"
    clock.advance(11 * 60)
    await drain(worker)
    status = await shop.status(pg_payment_id=answer["pg_payment_id"])
    assert (status["pg_transaction_status"], status["pg_failure_code"]) == ("incomplete", "360")
    assert await balances(rt, shop.merchant_id) == (FUNDS, 0, 0)
    [callback] = server.received()
    assert (callback["pg_status"], callback["pg_error_code"]) == ("error", "360")
    page = await app_client.get(answer["pg_redirect_url"])
    assert 'data-result="expired"' in page.text and 'name="number"' not in page.text


# --- errors: each answers pg_status=error with the spec's code, signed, and writes nothing --------


@pytest.mark.parametrize(
    ("fields", "code", "names"),
    [
        ({"pg_amount": None}, 200, "pg_amount"),
        ({"pg_amount": "0"}, 200, "pg_amount"),
        ({"pg_amount": "-5"}, 200, "pg_amount"),
        ({"pg_amount": "10.001"}, 200, "pg_amount"),
        ({"pg_amount": "1e3"}, 200, "pg_amount"),
        ({"pg_order_id": None}, 200, "pg_order_id"),
        ({"pg_order_id": "x" * 51}, 200, "pg_order_id"),
        ({"pg_currency": "XYZ"}, 200, "pg_currency"),
        ({"pg_post_link": "ftp://shop/payout"}, 200, "pg_post_link"),
        ({"pg_back_link": "not a url"}, 200, "pg_back_link"),
        ({"pg_order_time_limit": "2020-01-01 00:00:00"}, 200, "pg_order_time_limit"),
        ({"pg_order_time_limit": "tomorrow"}, 200, "pg_order_time_limit"),
        ({"pg_testing_mode": "yes"}, 200, "pg_testing_mode"),
        ({"pg_language": "de"}, 200, "pg_language"),
        ({"pg_amount": "10000.01"}, 600, "insufficient test balance"),
    ],
)
async def test_bad_reg2nonreg_request_is_refused_and_writes_nothing(
    rt: Runtime, shop: PayoutShop, fields: dict[str, Any], code: int, names: str
) -> None:
    before = await table_counts(rt)
    answer = await shop.reg2nonreg(**fields)
    answer.assert_error(code, shop.payout_secret, names)
    assert await table_counts(rt) == before


async def test_insufficient_balance_names_the_available_amount(rt: Runtime, shop: PayoutShop) -> None:
    answer = await shop.reg2nonreg(pg_amount="10000.01")
    answer.assert_error(600, shop.payout_secret, "10000.00 KZT available")
    (await shop.reg2nonreg(pg_amount="10000")).assert_ok(shop.payout_secret)
    (await shop.reg2nonreg(pg_amount="0.01", pg_order_id="PO-2")).assert_error(600, shop.payout_secret)


async def test_payment_secret_does_not_sign_payouts(rt: Runtime, shop: PayoutShop) -> None:
    before = await table_counts(rt)
    answer = await shop.call("reg2nonreg", {"pg_amount": "10", "pg_order_id": "X"}, secret=shop.secret_key)
    answer.assert_error(100, shop.payout_secret)
    assert await table_counts(rt) == before
    unknown = await shop.call("reg2nonreg", {"pg_merchant_id": "999999", "pg_amount": "1"})
    unknown.assert_error(101, None)


async def test_status_of_an_unknown_payout_is_340(shop: PayoutShop) -> None:
    (await shop.call("payment_status", {"pg_payment_id": "424242"})).assert_error(340, shop.payout_secret)
    (await shop.call("payment_status", {"pg_order_id": "nope"})).assert_error(340, shop.payout_secret)
    (await shop.call("payment_status", {})).assert_error(200, shop.payout_secret, "pg_payment_id")


async def test_payouts_of_another_merchant_are_not_found(
    rt: Runtime, shop: PayoutShop, app_client: httpx.AsyncClient
) -> None:
    answer = (await shop.reg2nonreg()).assert_ok(shop.payout_secret)
    async with rt.db.transaction() as session:
        merchant, creds = await create_merchant(session, rt.keyring, name="Other", mode="test", now=utcnow())
    other = PayoutShop(app_client, merchant.id, creds.payout_secret, creds.secret_key)
    found = await other.call("payment_status", {"pg_payment_id": answer["pg_payment_id"]})
    found.assert_error(340, other.payout_secret)


# --- idempotency -----------------------------------------------------------------------------------


async def test_same_order_id_returns_the_first_answer(rt: Runtime, shop: PayoutShop) -> None:
    first = (await shop.reg2nonreg()).assert_ok(shop.payout_secret)
    again = (await shop.reg2nonreg()).assert_ok(shop.payout_secret)
    assert again["pg_payment_id"] == first["pg_payment_id"]
    assert again["pg_redirect_url"] == first["pg_redirect_url"]
    assert again["pg_salt"] != first["pg_salt"]
    assert await balances(rt, shop.merchant_id) == (FUNDS - 150_000, 150_000, 0)
    before = await table_counts(rt)
    (await shop.reg2nonreg(pg_amount="20")).assert_error(200, shop.payout_secret, "pg_order_id")
    assert await table_counts(rt) == before


@pytest.mark.parametrize("by", ["param", "header"])
async def test_idempotency_key_returns_the_first_answer(rt: Runtime, shop: PayoutShop, by: str) -> None:
    fields = {"pg_amount": "100", "pg_order_id": "K-1"}
    headers = {"Idempotency-Key": "key-1"} if by == "header" else None
    if by == "param":
        fields["pg_idempotency_key"] = "key-1"
    first = (await shop.call("reg2nonreg", fields, headers=headers)).assert_ok(shop.payout_secret)
    again = (await shop.call("reg2nonreg", fields, headers=headers)).assert_ok(shop.payout_secret)
    assert again["pg_payment_id"] == first["pg_payment_id"]
    before = await table_counts(rt)
    changed = await shop.call("reg2nonreg", {**fields, "pg_amount": "200"}, headers=headers)
    changed.assert_error(600, shop.payout_secret, "Idempotency-Key")
    assert await table_counts(rt) == before
    assert await balances(rt, shop.merchant_id) == (FUNDS - 10_000, 10_000, 0)


async def test_concurrent_duplicates_create_one_payout(rt: Runtime, shop: PayoutShop) -> None:
    answers = await asyncio.gather(*(shop.reg2nonreg(pg_order_id="RACE") for _ in range(6)))
    ids = {answer.assert_ok(shop.payout_secret)["pg_payment_id"] for answer in answers}
    assert len(ids) == 1
    async with rt.db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(Payout)) == 1
    assert await balances(rt, shop.merchant_id) == (FUNDS - 150_000, 150_000, 0)


async def test_concurrent_payouts_never_overdraw(rt: Runtime, shop: PayoutShop) -> None:
    answers = await asyncio.gather(
        *(shop.reg2nonreg(pg_order_id=f"C-{i}", pg_amount="3000") for i in range(5))
    )
    assert sorted(answer.status for answer in answers) == ["error", "error", "ok", "ok", "ok"]
    assert await balances(rt, shop.merchant_id) == (FUNDS - 900_000, 900_000, 0)


# --- reg2reg ---------------------------------------------------------------------------------------


async def saved_payout_card(
    rt: Runtime, merchant_id: int, user_id: str, number: str
) -> saved_cards.SavedCard:
    async with rt.db.transaction() as session:
        merchant = await session.get(Merchant, merchant_id)
        assert merchant is not None
        card = await saved_cards.start_add(
            session,
            rt,
            merchant,
            saved_cards.AddCardRequest(user_id=user_id, post_link=None, back_link=None),
            utcnow(),
            purpose="payout",
        )
        form = validate_card_form(number, "12", "2030", "CARD HOLDER", "123", date.today())
        card = await saved_cards.submit_card(session, rt, card, form, utcnow())
        assert card.status == "active"
        return card


async def test_reg2reg_pays_out_to_a_saved_card(
    rt: Runtime, shop: PayoutShop, server: CallbackServer
) -> None:
    card = await saved_payout_card(rt, shop.merchant_id, "user-7", SUCCESS)
    answer = await shop.call(
        "reg2reg",
        {
            "pg_amount": "2500",
            "pg_order_id": "R-1",
            "pg_user_id": "user-7",
            "pg_card_id": str(card.id),
            "pg_description": "Cashback",
            "pg_post_link": server.url("/shop/payout.php"),
        },
    )
    answer.assert_ok(shop.payout_secret)
    assert answer["pg_order_id"] == "R-1" and answer["pg_payment_status"] == "success"
    assert (answer["pg_card_hash"], answer["pg_payment_amount"]) == ("4671-59XX-XXXX-8252", "2500.00")
    assert (answer["pg_error_code"], answer["pg_balance"]) == ("0", "7500.00")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", answer["pg_payment_date"])
    assert await balances(rt, shop.merchant_id) == (FUNDS - 250_000, 0, 250_000)
    await drain(Worker(rt))
    [callback] = server.received()
    assert callback["pg_status"] == "ok" and callback.verifies(shop.payout_secret)
    by_token = await shop.call(
        "reg2reg",
        {"pg_amount": "1", "pg_order_id": "R-2", "pg_user_id": "user-7", "pg_card_token_to": card.token},
    )
    assert by_token.assert_ok(shop.payout_secret)["pg_balance"] == "7499.00"


@pytest.mark.parametrize(
    ("number", "status", "payment_status", "code"),
    [
        (ERROR_10000, "error", "error", "470"),
        (ERROR_8888, "error", "error", "470"),
        (PROCESSING_THEN_SUCCESS, "ok", "process", "0"),
    ],
)
async def test_reg2reg_answers_the_payouts_outcome(
    rt: Runtime, shop: PayoutShop, number: str, status: str, payment_status: str, code: str
) -> None:
    card = await saved_payout_card(rt, shop.merchant_id, "user-7", number)
    fields = {"pg_amount": "100", "pg_order_id": "R-1", "pg_user_id": "user-7", "pg_card_id": str(card.id)}
    answer = await shop.call("reg2reg", fields)
    assert answer.verifies(shop.payout_secret)
    assert [n for n, _ in answer.params].count("pg_status") == 1
    assert (answer["pg_status"], answer["pg_payment_status"], answer["pg_error_code"]) == (
        status,
        payment_status,
        code,
    )
    if code != "0":  # the payer-facing code only in pg_failure_code
        assert answer["pg_failure_code"] == {ERROR_10000: "10000", ERROR_8888: "8888"}[number]
    again = await shop.call("reg2reg", fields)
    assert again.params[:-2] == answer.params[:-2]  # the first answer, signed anew


async def test_reg2reg_with_an_unknown_card_is_340_and_writes_nothing(rt: Runtime, shop: PayoutShop) -> None:
    card = await saved_payout_card(rt, shop.merchant_id, "user-7", SUCCESS)
    before = await table_counts(rt)
    for fields in (
        {"pg_user_id": "someone-else", "pg_card_id": str(card.id)},
        {"pg_user_id": "user-7", "pg_card_id": "999999"},
        {"pg_user_id": "user-7", "pg_card_token_to": "no-such-token"},
    ):
        answer = await shop.call("reg2reg", {"pg_amount": "1", "pg_order_id": "R-9", **fields})
        answer.assert_error(340, shop.payout_secret)
    missing = await shop.call("reg2reg", {"pg_amount": "1", "pg_order_id": "R-9", "pg_user_id": "user-7"})
    missing.assert_error(200, shop.payout_secret, "pg_card_token_to")
    assert await table_counts(rt) == before


# --- test buttons ---------------------------------------------------------------------------------


async def test_decline_button_fails_a_processing_payout_with_the_chosen_code(
    rt: Runtime, shop: PayoutShop, app_client: httpx.AsyncClient
) -> None:
    answer = (await shop.reg2nonreg()).assert_ok(shop.payout_secret)
    await enter_card(app_client, answer, PROCESSING_THEN_SUCCESS)
    payout_id = int(answer["pg_payment_id"])
    async with rt.db.transaction() as session:
        payout = await payouts.test_action(session, payout_id, "decline", now=utcnow(), actor="t", code=10007)
        assert payout.status == "failed"
    status = await shop.status(pg_payment_id=str(payout_id))
    assert (status["pg_transaction_status"], status["pg_failure_code"]) == ("failed", "10007")
    assert await balances(rt, shop.merchant_id) == (FUNDS, 0, 0)
    with pytest.raises(Exception, match="cannot be changed"):
        async with rt.db.transaction() as session:
            await payouts.test_action(session, payout_id, "approve", now=utcnow(), actor="t")
    with pytest.raises(Exception, match="cannot be changed"):
        async with rt.db.transaction() as session:
            await payouts.test_action(session, payout_id, "resolve", now=utcnow(), actor="t", rt=rt)


async def test_resolve_needs_a_processing_payout(rt: Runtime, shop: PayoutShop) -> None:
    answer = (await shop.reg2nonreg()).assert_ok(shop.payout_secret)  # no card yet
    with pytest.raises(Exception, match="only a processing payout"):
        async with rt.db.transaction() as session:
            await payouts.test_action(
                session, int(answer["pg_payment_id"]), "resolve", now=utcnow(), actor="t", rt=rt
            )
    assert (await shop.status(pg_payment_id=answer["pg_payment_id"]))["pg_transaction_status"] == "partial"


async def test_cli_payout_action_approves_declines_and_resolves(
    rt: Runtime, shop: PayoutShop, app_client: httpx.AsyncClient, database_url: str, tmp_path: Path
) -> None:
    first = (await shop.reg2nonreg(pg_order_id="CLI-1")).assert_ok(shop.payout_secret)
    second = (await shop.reg2nonreg(pg_order_id="CLI-2")).assert_ok(shop.payout_secret)
    third = (await shop.reg2nonreg(pg_order_id="CLI-3")).assert_ok(shop.payout_secret)
    await enter_card(app_client, third, PROCESSING_THEN_ERROR)

    async def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(
            subprocess.run,
            [*COMMAND, *args],
            env=greengate_env(database_url),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )

    done = await cli("payout", "action", first["pg_payment_id"], "approve")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"test payout {first['pg_payment_id']}: ok"
    declined = await cli("payout", "action", second["pg_payment_id"], "decline", "--code", "10000")
    assert declined.returncode == 0 and declined.stdout.strip().endswith(": failed"), declined.stderr
    refused = await cli("payout", "action", second["pg_payment_id"], "approve")
    assert refused.returncode == 1 and "state_forbids" in refused.stderr
    wrong = await cli("payout", "action", second["pg_payment_id"], "refund")
    assert wrong.returncode == 1
    resolved = await cli("payout", "action", third["pg_payment_id"], "resolve")
    assert resolved.returncode == 0, resolved.stderr
    assert resolved.stdout.strip() == f"test payout {third['pg_payment_id']}: failed"
    assert (await shop.status(pg_order_id="CLI-1"))["pg_transaction_status"] == "ok"
    assert (await shop.status(pg_order_id="CLI-2"))["pg_failure_code"] == "10000"
    assert (await shop.status(pg_order_id="CLI-3"))["pg_failure_code"] == "10001"
    assert await balances(rt, shop.merchant_id) == (FUNDS - 150_000, 0, 150_000)


# --- callbacks --------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST", "XML"])
async def test_callback_is_retried_until_the_shop_answers(
    rt: Runtime, shop: PayoutShop, app_client: httpx.AsyncClient, server: CallbackServer, method: str
) -> None:
    async with rt.db.transaction() as session:
        merchant = await session.get(Merchant, shop.merchant_id)
        assert merchant is not None
        merchant.request_method = method
    server.answer("/shop/payout.php", "500", "unsigned", "ok")
    answer = (await shop.reg2nonreg(pg_post_link=server.url("/shop/payout.php"))).assert_ok(
        shop.payout_secret
    )
    await enter_card(app_client, answer, SUCCESS)
    clock = Clock()
    worker = Worker(rt, clock=clock)
    for _ in range(3):
        await drain(worker)
        clock.advance(10)
    callbacks = server.received()
    assert len(callbacks) == 3
    assert all(c.verifies(shop.payout_secret) for c in callbacks)
    assert len({c["pg_salt"] for c in callbacks}) == 3
    if method == "GET":
        assert callbacks[0].method == "GET"
    elif method == "XML":
        assert callbacks[0].pg_xml is not None
    async with rt.db.transaction() as session:
        row = await session.scalar(select(OutboxMessage).where(OutboxMessage.kind == payouts.RESULT_CALLBACK))
    assert row is not None and (row.status, row.attempts) == ("done", 3)


async def test_funds_from_a_real_test_payment_pay_out(rt: Runtime, app_client: httpx.AsyncClient) -> None:
    async with rt.db.transaction() as session:
        merchant, creds = await create_merchant(session, rt.keyring, name="Fresh", mode="test", now=utcnow())
    payer_shop = Shop(app_client, merchant.id, creds.secret_key)
    payment_id = await payer_shop.init_ok(pg_amount="700", pg_order_id="PAY-1")
    from greengate.services import payment_flow

    card = validate_card_form(PURCHASE_CARD, "12", "2030", "TEST USER", "123", date.today())
    async with rt.db.transaction() as session:
        assert (await payment_flow.submit_card(session, rt, payment_id, card, utcnow())).status == "ok"
    shop = PayoutShop(app_client, merchant.id, creds.payout_secret, creds.secret_key)
    (await shop.reg2nonreg(pg_amount="700.01")).assert_error(600, shop.payout_secret)
    answer = (await shop.reg2nonreg(pg_amount="700")).assert_ok(shop.payout_secret)
    await enter_card(app_client, answer, SUCCESS)
    assert await balances(rt, merchant.id) == (0, 0, 70_000)


def test_time_limit_is_read_as_utc() -> None:
    from greengate.api.merchant.payouts import parse_payout
    from greengate.domain.payouts import PayoutKind

    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    req = parse_payout(
        [("pg_amount", "1"), ("pg_order_id", "x"), ("pg_order_time_limit", "2026-11-24 08:30:00")],
        PayoutKind.TO_NEW_CARD,
        now,
        None,
    )
    assert req.expires_at == datetime(2026, 11, 24, 8, 30, tzinfo=UTC)


async def test_live_payout_waits_for_the_operator(rt: Runtime, app_client: httpx.AsyncClient) -> None:
    async with rt.db.transaction() as session:
        merchant, creds = await create_merchant(session, rt.keyring, name="Live", mode="live", now=utcnow())
    live = PayoutShop(app_client, merchant.id, creds.payout_secret, creds.secret_key)
    await fund(rt, merchant.id, FUNDS, book=Book.LIVE)
    await fund(rt, merchant.id, FUNDS)  # test money, for its test payouts
    test_card = (await live.reg2nonreg(pg_order_id="L-1")).assert_ok(live.payout_secret)
    await enter_card(app_client, test_card, SUCCESS)
    assert (await live.status(pg_order_id="L-1"))["pg_failure_code"] == "10005"  # no test cards in live mode
    answer = (await live.reg2nonreg(pg_order_id="L-2")).assert_ok(live.payout_secret)
    await enter_card(app_client, answer, "4111111111111111")
    clock = Clock()
    clock.advance(600)
    await drain(Worker(rt, clock=clock))
    status = await live.status(pg_order_id="L-2")
    assert (status["pg_transaction_status"], status["pg_testing_mode"]) == ("pending", "0")
    with pytest.raises(Exception, match="no answer"):  # the manual acquirer has none: the operator decides
        async with rt.db.transaction() as session:
            await payouts.test_action(
                session, int(answer["pg_payment_id"]), "resolve", now=utcnow(), actor="operator:test", rt=rt
            )
    async with rt.db.transaction() as session:
        payout = await payouts.test_action(
            session, int(answer["pg_payment_id"]), "approve", now=utcnow(), actor="operator:test"
        )
        assert payout.status == "ok"
    assert await balances(rt, merchant.id, book=Book.LIVE) == (FUNDS - 150_000, 0, 150_000)
    assert await balances(rt, merchant.id) == (FUNDS, 0, 0)
    sandbox = (await live.reg2nonreg(pg_order_id="L-3", pg_testing_mode="1")).assert_ok(live.payout_secret)
    await enter_card(app_client, sandbox, SUCCESS)
    assert (await live.status(pg_order_id="L-3"))["pg_transaction_status"] == "ok"
