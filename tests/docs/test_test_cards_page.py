"""docs/test-cards.md is what the sandbox does: every purchase card in its table is paid on the hosted
page and the outcome read back with get_status2.php, compared with the row."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import pytest

from greengate.runtime import Runtime
from tests.support.doc_samples import DOCS
from tests.support.merchant_api import Shop, make_shop

PAGE = DOCS / "test-cards.md"
PASSWORD = "12345678"


@dataclass(frozen=True)
class Row:
    number: str
    three_ds: bool
    outcome: str
    code: str
    description: str


def purchase_cards() -> list[Row]:
    text = PAGE.read_text()
    table = text.split("## Purchase cards", 1)[1].split("\n\n", 2)[1]
    rows = []
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        number, _brand, three_ds, outcome, code, description = cells
        rows.append(Row(number, three_ds == "yes", outcome, code, description))
    return rows


CARDS = purchase_cards()


def test_the_page_lists_the_purchase_cards() -> None:
    assert len(CARDS) >= 10
    assert all(re.fullmatch(r"\d{16}", row.number) for row in CARDS)
    assert f"**`{PASSWORD}`**" in PAGE.read_text()


async def pay(client: httpx.AsyncClient, shop: Shop, number: str, password: str | None) -> dict[str, str]:
    answer = (await shop.call("init_payment.php", {"pg_amount": "100", "pg_description": "Cards"})).assert_ok(
        shop.secret
    )
    page = urlsplit(str(answer["pg_redirect_url"])).path
    form = {"number": number, "exp": "12/30", "holder": "TEST USER", "cvc": "123"}
    assert (await client.post(f"{page}/card", data=form)).status_code == 303
    if password is not None:
        assert (await client.post(f"{page}/3ds", data={"password": password})).status_code == 303
    status = await shop.status(int(answer["pg_payment_id"]))
    return {name: str(value) for name, value in status.params}


@pytest.mark.parametrize("row", CARDS, ids=[row.number for row in CARDS])
async def test_purchase_card_does_what_the_page_says(
    app_client: httpx.AsyncClient, rt: Runtime, row: Row
) -> None:
    shop = await make_shop(rt, app_client)

    status = await pay(app_client, shop, row.number, PASSWORD if row.three_ds else None)

    if row.outcome.startswith("declined"):
        assert status["pg_transaction_status"] == "failed"
        assert (status["pg_failure_code"], status["pg_failure_description"]) == (row.code, row.description)
    elif row.outcome.startswith("processing"):
        assert status["pg_transaction_status"] == "pending"
    else:
        assert row.outcome.startswith("approved")
        assert status["pg_transaction_status"] == "ok"
        assert status["pg_card_pan"].endswith(row.number[-4:])


@pytest.mark.parametrize("row", [r for r in CARDS if r.three_ds and r.outcome.startswith("approved")])
async def test_wrong_3ds_password_declines_as_the_page_says(
    app_client: httpx.AsyncClient, rt: Runtime, row: Row
) -> None:
    shop = await make_shop(rt, app_client)
    code = re.match(r"(\d+) on a wrong password", row.code)
    assert code is not None

    status = await pay(app_client, shop, row.number, "00000000")

    assert status["pg_transaction_status"] == "failed"
    assert (status["pg_failure_code"], status["pg_failure_description"]) == (code.group(1), row.description)


async def test_any_other_card_is_declined_as_the_page_says(
    app_client: httpx.AsyncClient, rt: Runtime
) -> None:
    said = re.search(
        r"declined in test mode with `pg_failure_code` \*\*(\d+)\*\*\n\(\"([^\"]+)\"\)", PAGE.read_text()
    )
    assert said is not None
    shop = await make_shop(rt, app_client)

    status = await pay(app_client, shop, "4111111111111111", None)

    assert (status["pg_failure_code"], status["pg_failure_description"]) == said.groups()
