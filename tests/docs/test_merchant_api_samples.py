"""Every answer shown in the Merchant API reference is one the gateway gives: each marked sample is
run against the running app and its answer compared with the page, field by field (see
tests/support/doc_samples.py for how samples are marked)."""

from __future__ import annotations

from urllib.parse import urlsplit
from xml.etree.ElementTree import Element

import httpx
import pytest
from defusedxml.ElementTree import fromstring

from greengate.runtime import Runtime
from tests.support.doc_samples import Sample, Step, all_samples
from tests.support.merchant_api import Answer, Shop, make_shop

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
    }
)
SAMPLES = all_samples("merchant-api")
RUN = [s for s in SAMPLES if s.steps]
CARD_HOLDER, CARD_EXPIRY, CARD_CVC = "TEST USER", "12/30", "123"


def differences(shown: Element, got: Element, path: str = "") -> list[str]:
    """Where the gateway's answer differs from the page's: element names and order everywhere, and the
    text of every element whose value is not volatile."""
    here = f"{path}/{shown.tag}"
    if shown.tag != got.tag:
        return [f"{here}: the gateway answers <{got.tag}>"]
    shown_children, got_children = list(shown), list(got)
    shown_tags, got_tags = [c.tag for c in shown_children], [c.tag for c in got_children]
    if shown_tags != got_tags:
        return [f"{here}: children {got_tags}, the page shows {shown_tags}"]
    if not shown_children:
        if shown.tag in VOLATILE or (shown.text or "").strip() == (got.text or "").strip():
            return []
        return [f"{here}: {got.text!r}, the page shows {shown.text!r}"]
    return [d for a, b in zip(shown_children, got_children, strict=True) for d in differences(a, b, here)]


def test_every_answer_in_the_reference_is_run_or_says_why_not() -> None:
    unmarked = [s.id for s in SAMPLES if s.answer is None]
    assert unmarked == []
    assert len(RUN) >= 10


class Run:
    def __init__(self, client: httpx.AsyncClient, shop: Shop) -> None:
        self.client, self.shop = client, shop
        self.values = {"merchant_id": str(shop.merchant_id)}

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

    async def request(self, step: Step) -> Answer:
        script, *rest = step.words
        params = self.params(tuple(rest))
        if step.kind == "unsigned":
            return await self.shop.send_raw(script, list(params.items()))
        return await self.shop.call(script, params)


@pytest.mark.parametrize("sample", RUN, ids=[s.id for s in RUN])
async def test_reference_sample_answer_matches_the_gateway(
    app_client: httpx.AsyncClient, rt: Runtime, sample: Sample
) -> None:
    shop = await make_shop(rt, app_client)
    run = Run(app_client, shop)
    answer: Answer | None = None
    for step in sample.steps:
        if step.kind == "payment":
            await run.payment(step)
        else:
            answer = await run.request(step)
    assert answer is not None and sample.answer is not None

    shown = fromstring(sample.answer.strip().encode())
    got = fromstring(answer.response.content)
    assert differences(shown, got) == [], answer.response.text
    if shown.find("pg_sig") is not None:
        assert answer.verifies(shop.secret), "the answer's signature does not verify"
