"""Every answer shown in the Merchant API reference is one the gateway gives: each marked sample is
run against the running app and its answer compared with the page, field by field (see
tests/support/doc_samples.py for how samples are marked)."""

from __future__ import annotations

import re
from itertools import count
from urllib.parse import parse_qsl, urlsplit
from xml.etree.ElementTree import Element

import httpx
import pytest
from defusedxml.ElementTree import fromstring
from sqlalchemy import select

from greengate.clock import utcnow
from greengate.domain import ledger as ledger_domain
from greengate.domain.ledger import Book
from greengate.runtime import Runtime
from greengate.services import ledger
from greengate.store.models import RecurringProfile
from greengate.worker.loop import Worker
from tests.support.doc_samples import (
    PAYOUT_SCRIPTS,
    CallbackSample,
    HttpSample,
    Sample,
    Step,
    all_samples,
    callback_samples,
    http_samples,
)
from tests.support.merchant_api import Answer, CallbackServer, Shop, make_shop, send, signed

# Fields whose values differ from run to run: fresh salts and signatures, ids the database hands out,
# times, and tokens in page links. They must still be present, in the same place.
VOLATILE = frozenset(
    {
        "pg_salt",
        "pg_sig",
        "pg_payment_id",
        "pg_refund_payment_id",
        "pg_create_date",
        "pg_redirect_url",
        "pg_payment_date",
        "created_at",
        "deleted_at",
        "pg_card_token",
        "pg_recurring_profile_expiry_date",
        "pg_capture_date",
    }
)
SAMPLES = all_samples("merchant-api")
CALLBACKS = callback_samples("merchant-api")
PAGES = http_samples("merchant-api")
TOKEN = re.compile(r"/[A-Za-z0-9_-]{20,}$")
RUN = [s for s in SAMPLES if s.steps]
CARD_HOLDER, CARD_EXPIRY, CARD_CVC = "TEST USER", "12/30", "123"
_funding = count(1)


def same_text(tag: str, shown: str, got: str, ids: frozenset[str] = frozenset()) -> bool:
    """Equal, except that where the gateway's text has an id of this run the page may show any id: in an
    id field (`pg_card_id`), or inside a sentence."""
    if shown == got:
        return True
    if not ids or not (tag.endswith("_id") or " " in got):
        return False
    parts = re.split(r"\b(" + "|".join(sorted(ids)) + r")\b", got)
    pattern = "".join(r"\d+" if i % 2 else re.escape(part) for i, part in enumerate(parts))
    return re.fullmatch(pattern, shown) is not None


def differences(shown: Element, got: Element, path: str = "", ids: frozenset[str] = frozenset()) -> list[str]:
    """Where the gateway's answer differs from the page's: element names and order everywhere, and the
    text of every element whose value is not volatile (`ids`: this run's ids, see same_text)."""
    here = f"{path}/{shown.tag}"
    if shown.tag != got.tag:
        return [f"{here}: the gateway answers <{got.tag}>"]
    shown_children, got_children = list(shown), list(got)
    shown_tags, got_tags = [c.tag for c in shown_children], [c.tag for c in got_children]
    if shown_tags != got_tags:
        return [f"{here}: children {got_tags}, the page shows {shown_tags}"]
    if not shown_children:
        if shown.tag in VOLATILE or same_text(
            shown.tag, (shown.text or "").strip(), (got.text or "").strip(), ids
        ):
            return []
        return [f"{here}: {got.text!r}, the page shows {shown.text!r}"]
    return [
        d for a, b in zip(shown_children, got_children, strict=True) for d in differences(a, b, here, ids)
    ]


def test_every_answer_in_the_reference_is_run_or_says_why_not() -> None:
    unmarked = [s.id for s in SAMPLES if s.answer is None]
    assert unmarked == []
    assert len(RUN) >= 10
    assert len(CALLBACKS) >= 2
    assert len(PAGES) >= 2


class Run:
    def __init__(self, client: httpx.AsyncClient, shop: Shop, rt: Runtime) -> None:
        self.client, self.shop, self.rt = client, shop, rt
        self.values = {"merchant_id": str(shop.merchant_id)}

    @property
    def ids(self) -> frozenset[str]:
        return frozenset(v for k, v in self.values.items() if k not in ("card_token", "shop"))

    async def card(self, step: Step) -> None:
        """Save a card as the payer would: cardstorage/add (cardstoragepayout/add with payout=1), then the
        card page; the card's id and token are then this run's {card_id} and {card_token}."""
        given = self.params(step.words)
        number, payout = given.pop("number"), given.pop("payout", "0") == "1"
        holder = given.pop("holder", CARD_HOLDER)
        storage = "cardstoragepayout" if payout else "cardstorage"
        links = {"pg_post_link": "https://shop.example/card.php", "pg_back_link": "https://shop.example/back"}
        answer = await self.send(f"{storage}/add", {**links, **given})
        answer.assert_ok(self.secret_of(answer.script, storage))
        page = urlsplit(str(answer["pg_redirect_url"])).path
        form = {"number": number, "exp": CARD_EXPIRY, "holder": holder}
        if not payout:
            form["cvc"] = CARD_CVC
        assert (await self.client.post(f"{page}/card", data=form)).status_code == 303
        cards = await self.send(f"{storage}/list", {"pg_user_id": given["pg_user_id"]})
        last = cards.response.content
        found = fromstring(last).findall("card")
        assert found, cards.response.text
        self.values["card_id"] = str(found[-1].findtext("pg_card_id"))
        self.values["card_token"] = str(found[-1].findtext("pg_card_token"))

    def secret_of(self, script: str, path: str = "") -> str:
        payout = script in PAYOUT_SCRIPTS or path.startswith("cardstoragepayout")
        return self.shop.payout_secret if payout else self.shop.secret

    async def funds(self, step: Step) -> None:
        (units,) = step.words
        entry = ledger_domain.payment_succeeded(
            self.shop.merchant_id, int(units) * 100, "KZT", 0, book=Book.TEST
        )
        async with self.rt.db.transaction() as session:
            await ledger.post(
                session,
                entry,
                object_type="test_funding",
                object_id=f"{self.shop.merchant_id}:{next(_funding)}",
                now=utcnow(),
            )

    async def payout(self, step: Step) -> None:
        given = self.params(step.words)
        card = given.pop("card", None)
        values = {"pg_amount": "1500", "pg_order_id": "payout-1", "pg_user_id": "user-7", **given}
        answer = (await self.send("reg2nonreg", values)).assert_ok(self.shop.payout_secret)
        self.values["payout_id"] = str(answer["pg_payment_id"])
        if card:
            page = urlsplit(str(answer["pg_redirect_url"])).path
            assert (await self.client.post(f"{page}/card", data={"number": card})).status_code in (200, 303)

    async def send(self, script: str, values: dict[str, str]) -> Answer:
        if "/" in script:  # a card storage endpoint, named by its path under the merchant
            name = script.rpartition("/")[2]
            message = signed(name, list(values.items()), self.secret_of(name, script))
            path = f"/v1/merchant/{self.values['merchant_id']}/{script}"
            return Answer.read(await send(self.client, path, message, "form"), name)
        if script not in PAYOUT_SCRIPTS:
            return await self.shop.call(script, values)
        message = signed(
            script, [("pg_merchant_id", self.values["merchant_id"]), *values.items()], self.shop.payout_secret
        )
        return Answer.read(await send(self.client, f"/api/{script}", message, "form"), script)

    def params(self, words: tuple[str, ...]) -> dict[str, str]:
        out = {}
        for word in words:
            name, _, value = word.partition("=")
            out[name] = value.format(**self.values)
        return out

    async def payment(self, step: Step) -> None:
        given = self.params(step.words)
        card, three_ds = given.pop("card", None), given.pop("3ds", None)
        values = {"pg_amount": "100", "pg_description": "Order", **given}
        answer = (await self.shop.call("init_payment.php", values)).assert_ok(self.shop.secret)
        self.values["payment_id"] = str(answer["pg_payment_id"])
        page = urlsplit(str(answer["pg_redirect_url"])).path
        if card:
            form = {"number": card, "exp": CARD_EXPIRY, "holder": CARD_HOLDER, "cvc": CARD_CVC}
            assert (await self.client.post(f"{page}/card", data=form)).status_code == 303
        if three_ds:
            assert (await self.client.post(f"{page}/3ds", data={"password": three_ds})).status_code == 303
        if given.get("pg_recurring_start") == "1":  # the shop learns it from the result callback
            async with self.rt.db.transaction() as session:
                profile = await session.scalar(
                    select(RecurringProfile.id).where(
                        RecurringProfile.payment_id == int(self.values["payment_id"])
                    )
                )
            assert profile is not None, "the payment started no recurring profile"
            self.values["profile_id"] = str(profile)

    async def request(self, step: Step) -> Answer:
        script, *rest = step.words
        params = self.params(tuple(rest))
        if step.kind == "unsigned":
            return await self.shop.send_raw(script, list(params.items()))
        answer = await self.send(script, params)
        if step.kind == "call" and script not in PAYOUT_SCRIPTS and "pg_payment_id" in answer:
            self.values["payment_id"] = str(answer["pg_payment_id"])  # e.g. the payment card/init made
        return answer


@pytest.mark.parametrize("sample", RUN, ids=[s.id for s in RUN])
async def test_reference_sample_answer_matches_the_gateway(
    app_client: httpx.AsyncClient, rt: Runtime, sample: Sample
) -> None:
    shop = await make_shop(rt, app_client)
    run = Run(app_client, shop, rt)
    answer: Answer | None = None
    for step in sample.steps:
        if step.kind == "funds":
            await run.funds(step)
        elif step.kind == "payment":
            await run.payment(step)
        elif step.kind == "payout":
            await run.payout(step)
        elif step.kind == "card":
            await run.card(step)
        else:
            answer = await run.request(step)
    assert answer is not None and sample.answer is not None

    shown = fromstring(sample.answer.strip().encode())
    got = fromstring(answer.response.content)
    assert differences(shown, got, ids=run.ids) == [], answer.response.text
    if shown.find("pg_sig") is not None:
        secret = run.secret_of(answer.script, sample.steps[-1].words[0])
        assert answer.verifies(secret), "the answer's signature does not verify"


async def drain(worker: Worker) -> None:
    for _ in range(50):
        if await worker.run_once() == 0:
            return
    raise AssertionError("the worker never became idle")


@pytest.mark.parametrize("sample", CALLBACKS, ids=[s.id for s in CALLBACKS])
async def test_reference_callback_is_what_the_gateway_sends(
    app_client: httpx.AsyncClient, rt: Runtime, sample: CallbackSample
) -> None:
    shop = await make_shop(rt, app_client)
    run = Run(app_client, shop, rt)
    with CallbackServer(shop.secret) as receiver:
        run.values["shop"] = receiver.url("").rstrip("/")
        for step in sample.steps:
            if step.kind == "payment":
                await run.payment(step)
            elif step.kind == "receive":
                await drain(Worker(rt))
                received = receiver.received(step.words[0])
            else:
                await run.request(step)
    assert received, f"nothing reached {step.words[0]}"
    callback = received[-1]
    assert callback.verifies(shop.secret), "the callback's signature does not verify"

    shown = parse_qsl(sample.message, keep_blank_values=True)
    got = [(name, str(value)) for name, value in callback.params]
    assert [n for n, _ in got] == [n for n, _ in shown], "the callback's parameters differ from the page's"
    drifted = [
        (name, value, mine)
        for (name, value), (_, mine) in zip(shown, got, strict=True)
        if name not in VOLATILE and not same_text(name, value, mine, run.ids)
    ]
    assert drifted == [], "(name, the page, the gateway)"


def http_differences(shown: str, got: httpx.Response) -> list[str]:
    """The status line, the headers the page shows (a link's host and token aside) and the body."""
    head, _, body = shown.partition("\n\n")
    status, *headers = head.splitlines()
    found = []
    if status != f"HTTP/1.1 {got.status_code} {got.reason_phrase}":
        found.append(f"status {got.status_code} {got.reason_phrase}, the page shows {status!r}")
    for header in headers:
        name, _, value = header.partition(": ")
        mine = got.headers.get(name, "")
        if name.lower() == "location":
            value, mine = TOKEN.sub("/TOKEN", urlsplit(value).path), TOKEN.sub("/TOKEN", urlsplit(mine).path)
        if value != mine:
            found.append(f"{name}: {mine!r}, the page shows {value!r}")
    if body.strip() != got.text.strip():
        found.append(f"body {got.text!r}")
    return found


@pytest.mark.parametrize("sample", PAGES, ids=[s.id for s in PAGES])
async def test_reference_browser_answer_is_what_the_gateway_answers(
    app_client: httpx.AsyncClient, rt: Runtime, sample: HttpSample
) -> None:
    shop = await make_shop(rt, app_client)
    run = Run(app_client, shop, rt)
    for step in sample.steps[:-1]:
        if step.kind == "payment":
            await run.payment(step)
        elif step.kind == "card":
            await run.card(step)
        else:
            await run.request(step)
    script, *rest = sample.steps[-1].words
    values = run.params(tuple(rest))
    if "/" in script:
        path, name = f"/v1/merchant/{shop.merchant_id}/{script}", script.rpartition("/")[2]
    else:
        path, name = f"/{script}", script
    message = signed(name, [("pg_merchant_id", str(shop.merchant_id)), *values.items()], shop.secret)
    got = await send(app_client, path, message, "query")
    assert http_differences(sample.answer, got) == []
