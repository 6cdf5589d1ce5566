"""Merchant API wire details real clients meet, over HTTP: answers are not requests, transport errors are
signed when the merchant is legible, unknown pg_ parameters are refused, aliases and unknown paths."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy import select

from greengate.clock import utcnow
from greengate.runtime import Runtime
from greengate.services.payments import expire_payment
from greengate.store.models import RecurringProfile
from greengate.worker.loop import Worker
from tests.e2e.test_card_storage import USER, CardShop, add_card, charge_fields, listed, new_shop
from tests.e2e.test_merchant_payouts import fund
from tests.e2e.test_merchant_replay import APPROVED, pay
from tests.support.merchant_api import (
    Answer,
    CallbackServer,
    Shop,
    make_shop,
    make_sig,
    send,
    signed,
    table_counts,
)


@pytest.fixture
async def shop(rt: Runtime, app_client: httpx.AsyncClient) -> Shop:
    return await make_shop(rt, app_client)


@pytest.fixture
async def card_shop(rt: Runtime, app_client: httpx.AsyncClient) -> CardShop:
    return await new_shop(rt, app_client)


# --- answers are not requests --------------------------------------------------------------------


@pytest.mark.parametrize("field", ["pg_status", "pg_error_code", "pg_error_description", "pg_redirect_url"])
async def test_a_request_with_answer_fields_is_refused(rt: Runtime, shop: Shop, field: str) -> None:
    before = await table_counts(rt)
    answer = await shop.call("init_payment.php", {"pg_amount": "100", "pg_description": "x", field: "ok"})
    answer.assert_error(100, shop.secret, field)
    assert await table_counts(rt) == before


async def test_an_error_answer_posted_back_does_not_run_the_script(rt: Runtime, card_shop: CardShop) -> None:
    """The error answer to a wrongly signed request is signed with the merchant's key (clients verify
    it), yet posting it back to the same script is refused and acts nothing."""
    path = card_shop.path("cardstorage/remove")
    bad = [("pg_user_id", USER), ("pg_card_id", "1"), ("pg_salt", "1"), ("pg_sig", "0" * 32)]
    error = Answer.read(await send(card_shop.client, path, bad), "remove")
    error.assert_error(100, card_shop.secret)
    before = await table_counts(rt)
    echoed = Answer.read(await send(card_shop.client, path, error.params), "remove")
    echoed.assert_error(100, card_shop.secret, "pg_status")
    assert await table_counts(rt) == before


# --- transport errors ---------------------------------------------------------------------------


BROKEN_XML = "<request><pg_merchant_id>{mid}</pg_merchant_id><pg_amount>100</request>"


@pytest.mark.parametrize("transport", ["xml", "pg_xml", "json", "query"])
async def test_a_transport_error_is_signed_when_the_merchant_is_legible(shop: Shop, transport: str) -> None:
    mid = shop.merchant_id
    if transport == "xml":
        response = await shop.client.post(
            "/init_payment.php",
            content=BROKEN_XML.format(mid=mid).encode(),
            headers={"Content-Type": "text/xml"},
        )
    elif transport == "pg_xml":
        response = await shop.client.post(
            "/init_payment.php",
            content=urlencode({"pg_xml": BROKEN_XML.format(mid=mid)}).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    elif transport == "json":
        response = await shop.client.post(
            "/init_payment.php",
            content=f'{{"pg_merchant_id": "{mid}", "pg_amount": '.encode(),
            headers={"Content-Type": "application/json"},
        )
    else:
        response = await shop.client.get(f"/init_payment.php?pg_merchant_id={mid}&pg_description=%FF")
    Answer.read(response, "init_payment.php").assert_error(200, shop.secret)


async def test_a_transport_error_on_a_merchant_path_is_signed(card_shop: CardShop) -> None:
    response = await card_shop.client.post(
        card_shop.path("cardstorage/list"), content=b"<request><x>", headers={"Content-Type": "text/xml"}
    )
    Answer.read(response, "list").assert_error(200, card_shop.secret)


async def test_a_transport_error_without_a_merchant_is_unsigned(shop: Shop) -> None:
    response = await shop.client.post(
        "/init_payment.php", content=b"<request><x>", headers={"Content-Type": "text/xml"}
    )
    Answer.read(response, "init_payment.php").assert_error(200, None)


async def test_a_wrong_signature_answer_still_verifies(shop: Shop) -> None:
    message = [(n, v) for n, v in shop.message("get_status2.php", {"pg_payment_id": "1"}) if n != "pg_sig"]
    message.append(("pg_sig", "f" * 32))
    (await shop.send_raw("get_status2.php", message)).assert_error(100, shop.secret)
    unsigned = signed("get_status2.php", [("pg_merchant_id", "999999"), ("pg_payment_id", "1")], "x")
    (await shop.send_raw("get_status2.php", unsigned)).assert_error(101, None)


@pytest.mark.parametrize("salt", [None, "", "s" * 101])
async def test_a_salt_is_required_and_bounded(rt: Runtime, shop: Shop, salt: str | None) -> None:
    params = [("pg_merchant_id", str(shop.merchant_id)), ("pg_amount", "100"), ("pg_description", "x")]
    if salt is not None:
        params.append(("pg_salt", salt))
    message = [*params, ("pg_sig", make_sig("init_payment.php", params, shop.secret))]
    before = await table_counts(rt)
    (await shop.send_raw("init_payment.php", message)).assert_error(200, shop.secret, "pg_salt")
    assert await table_counts(rt) == before


# --- unknown pg_ parameters ------------------------------------------------------------------------


async def test_a_renamed_signed_parameter_in_a_payment_link_is_refused(rt: Runtime, shop: Shop) -> None:
    """The payer renames pg_currency in a merchant-signed payment.php link: names are not signed."""
    message = shop.message("payment.php", {"pg_amount": "10", "pg_currency": "USD", "pg_description": "x"})
    tampered = [("pg_cz" if name == "pg_currency" else name, value) for name, value in message]
    before = await table_counts(rt)
    page = await shop.client.get(f"/payment.php?{httpx.QueryParams(tampered)}")
    assert page.status_code == 400
    assert "pg_cz" in page.text
    answer = await shop.send_raw("init_payment.php", shop.message("init_payment.php", tampered[:-2]))
    answer.assert_error(200, shop.secret, "pg_cz")
    assert await table_counts(rt) == before


SCRIPTS = [
    ("init_payment.php", {"pg_amount": "100", "pg_description": "x"}),
    ("get_status.php", {"pg_payment_id": "1"}),
    ("get_status2.php", {"pg_payment_id": "1"}),
    ("get_status3.php", {"pg_payment_id": "1"}),
    ("cancel.php", {"pg_payment_id": "1"}),
    ("revoke.php", {"pg_payment_id": "1"}),
    ("do_capture.php", {"pg_payment_id": "1"}),
    ("make_recurring_payment.php", {"pg_recurring_profile": "1", "pg_amount": "1", "pg_description": "x"}),
    ("ps_list.php", {"pg_amount": "100"}),
]


@pytest.mark.parametrize(("script", "fields"), SCRIPTS, ids=[s for s, _ in SCRIPTS])
async def test_every_script_refuses_an_unknown_pg_parameter(
    rt: Runtime, shop: Shop, script: str, fields: dict[str, str]
) -> None:
    before = await table_counts(rt)
    answer = await shop.call(script, {**fields, "pg_amount_x": "1"})
    answer.assert_error(200, shop.secret, "pg_amount_x")
    assert await table_counts(rt) == before


@pytest.mark.parametrize(
    ("endpoint", "payout"),
    [
        ("cardstorage/add", False),
        ("cardstorage/list", False),
        ("cardstorage/remove", False),
        ("cardstoragepayout/list", True),
        ("card/init", False),
        ("card/direct", False),
    ],
)
async def test_card_scripts_refuse_an_unknown_pg_parameter(
    rt: Runtime, card_shop: CardShop, endpoint: str, payout: bool
) -> None:
    answer = await card_shop.call(endpoint, {"pg_user_id": USER, "pg_cardx": "1"}, payout=payout)
    answer.assert_error(200, card_shop.payout_secret if payout else card_shop.secret, "pg_cardx")


@pytest.mark.parametrize("script", ["reg2nonreg", "reg2reg", "payment_status"])
async def test_payout_scripts_refuse_an_unknown_pg_parameter(card_shop: CardShop, script: str) -> None:
    params = card_shop.message(script, {"pg_order_id": "1", "pg_amountt": "5"}, payout=True)
    answer = Answer.read(await send(card_shop.client, f"/api/{script}", params), script)
    answer.assert_error(200, card_shop.payout_secret, "pg_amountt")


async def test_client_library_parameters_and_shop_parameters_are_accepted(shop: Shop) -> None:
    fields = {
        "pg_amount": "100",
        "pg_description": "x",
        "pg_param1": "a",
        "pg_payment_route": "frame",
        "pg_tripleg_1_date": "2026-12-01",
        "pg_alfaclick_client_id": "42",
        "cart_id": "7",
        "PG_LOOKALIKE": "shop's own",
    }
    (await shop.call("init_payment.php", fields)).assert_ok(shop.secret)


# --- pg_redirect_url_type, aliases, unknown paths ------------------------------------------------


@pytest.mark.parametrize(
    ("system", "kind"),
    [(None, "need data"), ("BANKCARD", "payment system"), ("MOBILE_COMMERCE", "payment system")],
)
async def test_redirect_url_type_says_whether_the_method_is_chosen(
    shop: Shop, system: str | None, kind: str
) -> None:
    answer = await shop.init(pg_payment_system=system)
    assert answer.assert_ok(shop.secret)["pg_redirect_url_type"] == kind


@pytest.mark.parametrize("path", ["/init_payment", "/api/init_payment.php", "/api/init_payment"])
@pytest.mark.parametrize("signed_as", ["init_payment.php", "alias"])
async def test_init_payment_answers_under_the_aliases_clients_use(
    shop: Shop, path: str, signed_as: str
) -> None:
    script = path.rpartition("/")[2] if signed_as == "alias" else signed_as
    params = shop.message(script, {"pg_amount": "100", "pg_description": "alias"})
    answer = Answer.read(await send(shop.client, path, params), script).assert_ok(shop.secret)
    status = await shop.status(int(answer["pg_payment_id"]))
    assert status["pg_payment_id"] == answer["pg_payment_id"]
    listed = shop.message("get_status2", {"pg_payment_id": str(answer["pg_payment_id"])})
    Answer.read(await send(shop.client, "/get_status2", listed), "get_status2").assert_ok(shop.secret)


@pytest.mark.parametrize("path", ["/nope.php", "/init_paymentt.php", "/v1/merchant/{mid}/cardstorage/nope"])
async def test_an_unknown_path_answers_signed_xml(shop: Shop, path: str) -> None:
    path = path.format(mid=shop.merchant_id)
    script = path.rpartition("/")[2]
    params = shop.message(script, {"pg_amount": "1"})
    for transport in ("form", "query"):
        answer = Answer.read(await send(shop.client, path, params, transport), script)
        answer.assert_error(600, shop.secret, "unknown script")
    anonymous = await shop.client.get(path)
    Answer.read(anonymous, script).assert_error(600, None if "merchant" not in path else shop.secret)


async def test_other_surfaces_keep_their_own_not_found(shop: Shop) -> None:
    exchange = await shop.client.get("/api/v2/nope")
    assert exchange.status_code == 404
    assert exchange.headers["content-type"].startswith("application/json")


# --- phone, shop parameters, refund currency ---------------------------------------------------


@pytest.mark.parametrize("phone", ["phone-number", "+7 701 777", "123", "7" * 16])
async def test_a_malformed_phone_is_701_at_init(rt: Runtime, shop: Shop, phone: str) -> None:
    before = await table_counts(rt)
    (await shop.init(pg_user_phone=phone)).assert_error(701, shop.secret, "pg_user_phone")
    assert await table_counts(rt) == before
    (await shop.init(pg_user_phone="+77017777777")).assert_ok(shop.secret)


async def test_shop_parameters_are_capped_at_64_kb(rt: Runtime, shop: Shop) -> None:
    before = await table_counts(rt)
    big = {f"cart_{n}": "x" * 1000 for n in range(70)}
    (await shop.init(**big)).assert_error(200, shop.secret, "65536")
    assert await table_counts(rt) == before
    fits = {f"cart_{n}": "x" * 1000 for n in range(60)}
    (await shop.init(**fits)).assert_ok(shop.secret)


async def test_revoke_refuses_another_currency(rt: Runtime, shop: Shop) -> None:
    payment_id = await shop.init_ok(pg_amount="100", pg_currency="KZT")
    await pay(rt, payment_id)
    before = await table_counts(rt)
    answer = await shop.call(
        "revoke.php", {"pg_payment_id": str(payment_id), "pg_refund_amount": "10", "pg_currency": "USD"}
    )
    answer.assert_error(200, shop.secret, "pg_currency")
    assert await table_counts(rt) == before
    same = {"pg_payment_id": str(payment_id), "pg_refund_amount": "10", "pg_currency": "kzt"}
    (await shop.call("revoke.php", same)).assert_ok(shop.secret)


# --- repeated pg_order_id ----------------------------------------------------------------------

ORDER = {"pg_order_id": "O-1", "pg_amount": "100", "pg_currency": "KZT", "pg_description": "Coffee"}


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"pg_amount": "101"}, "pg_amount"),
        ({"pg_currency": "USD"}, "pg_currency"),
        ({"pg_description": "Tea"}, "pg_description"),
        ({"pg_success_url": "https://shop.example/ok"}, "pg_success_url"),
        ({"pg_amount": "5", "pg_result_url": "https://shop.example/r"}, "pg_amount, pg_result_url"),
    ],
)
async def test_a_repeated_order_id_with_other_parameters_names_the_conflict(
    rt: Runtime, shop: Shop, change: dict[str, str], named: str
) -> None:
    first = await shop.init_ok(**ORDER)
    before = await table_counts(rt)
    answer = await shop.init(**{**ORDER, **change})
    answer.assert_error(200, shop.secret, named)
    assert str(first) in answer.description and "O-1" in answer.description
    assert await table_counts(rt) == before


async def test_a_repeated_order_id_with_the_same_parameters_is_the_same_payment(shop: Shop) -> None:
    first = await shop.init_ok(**ORDER)
    assert await shop.init_ok(**ORDER) == first  # another salt, the same request
    assert await shop.init_ok(**ORDER, pg_idempotency_key="k-2") == first


async def test_concurrent_identical_inits_all_get_the_same_payment(rt: Runtime, shop: Shop) -> None:
    async def one(n: int) -> Answer:
        return await shop.init(**ORDER, pg_idempotency_key=f"key-{n}")

    answers = await asyncio.gather(*(one(n) for n in range(12)))
    ids = {answer.assert_ok(shop.secret)["pg_payment_id"] for answer in answers}
    assert len(ids) == 1


# --- card storage answers ------------------------------------------------------------------------


async def test_payout_card_add_answers_a_payment_id(card_shop: CardShop) -> None:
    fields = {
        "pg_user_id": USER,
        "pg_post_link": "https://shop.example/card.php",
        "pg_back_link": "https://shop.example/back.php",
    }
    answer = await card_shop.ok("cardstoragepayout/add", fields, payout=True)
    assert str(answer["pg_payment_id"]).isdigit()
    checked = await card_shop.ok("cardstorage/add", fields)
    assert str(checked["pg_payment_id"]).isdigit()


async def test_card_list_shows_the_recurring_profile_of_a_card(rt: Runtime, card_shop: CardShop) -> None:
    with CallbackServer(card_shop.secret) as server:
        await add_card(card_shop, server, APPROVED)
    [listed_card] = await listed(card_shop)
    assert listed_card["pg_recurring_profile_id"] == ""
    fields = charge_fields(
        listed_card["pg_card_id"], pg_recurring_start="1", pg_recurring_lifetime="3", pg_order_id="rec-1"
    )
    init = await card_shop.ok("card/init", fields)
    direct = await card_shop.ok("card/direct", {"pg_payment_id": str(init["pg_payment_id"])})
    assert direct["pg_payment_status"] == "success", direct.params
    async with rt.db.transaction() as session:
        profile = await session.scalar(
            select(RecurringProfile.id).where(RecurringProfile.payment_id == int(init["pg_payment_id"]))
        )
    assert profile is not None
    [again] = await listed(card_shop)
    assert again["pg_recurring_profile_id"] == str(profile)


async def test_a_payout_to_a_purchase_only_card_is_refused_clearly(rt: Runtime, card_shop: CardShop) -> None:
    await fund(rt, card_shop.merchant_id, 1_000_000)
    with CallbackServer(card_shop.secret) as server:
        await add_card(card_shop, server, APPROVED)
    [card] = await listed(card_shop)
    fields = {"pg_amount": "100", "pg_order_id": "P-1", "pg_user_id": USER, "pg_card_id": card["pg_card_id"]}
    params = card_shop.message("reg2reg", fields, payout=True)
    answer = Answer.read(await send(card_shop.client, "/api/reg2reg", params), "reg2reg")
    assert answer.verifies(card_shop.payout_secret)
    assert (answer["pg_status"], answer["pg_error_code"], answer["pg_failure_code"]) == (
        "error",
        "470",
        "10005",
    )
    assert "for purchases" in answer["pg_error_description"]


# --- result callbacks of payments that end without success ---------------------------------------


@pytest.mark.parametrize("ending", ["cancel", "expire"])
async def test_a_payment_that_ends_unpaid_sends_one_result_with_pg_result_0(
    rt: Runtime, shop: Shop, ending: str
) -> None:
    with CallbackServer(shop.secret) as server:
        payment_id = await shop.init_ok(pg_result_url=server.url("/shop/result.php"), pg_lifetime="300")
        if ending == "cancel":
            (await shop.call("cancel.php", {"pg_payment_id": str(payment_id)})).assert_ok(shop.secret)
            code = "400"
        else:
            async with rt.db.transaction() as session:
                assert await expire_payment(session, payment_id, utcnow() + timedelta(seconds=301))
            code = "360"
        worker = Worker(rt, clock=lambda: utcnow() + timedelta(seconds=400))  # past the lifetime
        for _ in range(20):
            if await worker.run_once() == 0:
                break
        [result] = server.received("/shop/result.php")
    assert result.verifies(shop.secret)
    assert (result["pg_result"], result["pg_failure_code"]) == ("0", code)
    assert result["pg_failure_description"]
    assert result["pg_payment_id"] == str(payment_id)
