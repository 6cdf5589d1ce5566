"""Hypothesis-generated, correctly signed requests against every Merchant API script in every
transport: never a 5xx, always an XML answer, and a refused request writes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
import pytest_asyncio
from defusedxml import ElementTree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from greengate.app import create_app
from greengate.clock import utcnow
from greengate.domain.signature import script_name_from_url
from greengate.runtime import Runtime
from greengate.services.merchants import create_merchant
from tests.conftest import make_settings
from tests.support.exchange import empty_tables
from tests.support.merchant_api import TRANSPORTS, send, signed, table_counts

# Script paths; "{m}" is the merchant id; True: signed with the payout secret.
SCRIPTS: list[tuple[str, bool]] = [
    ("/init_payment.php", False),
    ("/payment.php", False),
    ("/get_status.php", False),
    ("/get_status2.php", False),
    ("/get_status3.php", False),
    ("/cancel.php", False),
    ("/ps_list.php", False),
    ("/revoke.php", False),
    ("/do_capture.php", False),
    ("/make_recurring_payment.php", False),
    ("/api/reg2nonreg", True),
    ("/api/reg2reg", True),
    ("/api/payment_status", True),
    ("/v1/merchant/{m}/cardstorage/add", False),
    ("/v1/merchant/{m}/cardstorage/add2", False),
    ("/v1/merchant/{m}/cardstorage/list", False),
    ("/v1/merchant/{m}/cardstorage/remove", False),
    ("/v1/merchant/{m}/cardstoragepayout/add", True),
    ("/v1/merchant/{m}/cardstoragepayout/list", True),
    ("/v1/merchant/{m}/cardstoragepayout/remove", True),
    ("/v1/merchant/{m}/card/init", False),
    ("/v1/merchant/{m}/card/direct", False),
    ("/v1/merchant/{m}/card/pay", False),
]
NAMES = [
    "pg_amount",
    "pg_currency",
    "pg_description",
    "pg_order_id",
    "pg_payment_id",
    "pg_card_id",
    "pg_card_token",
    "pg_user_id",
    "pg_lifetime",
    "pg_recurring_profile",
    "pg_refund_amount",
    "pg_clearing_amount",
    "pg_payment_system",
    "pg_testing_mode",
    "pg_result_url",
    "pg_user_phone",
    "pg_user_contact_email",
    "pg_encoding",
    "pg_language",
    "pg_card_number",
    "pg_post_link",
]
VALUES = st.one_of(
    st.text(max_size=24),
    st.sampled_from(["1", "0", "-1", "100.005", "1e5", "NaN", "²", "٣", "9" * 30, "RUB", "XXX", "", " "]),
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
)
FIELDS = st.lists(st.tuples(st.sampled_from(NAMES), VALUES), max_size=6)


@dataclass
class World:
    http: httpx.AsyncClient
    rt: Runtime
    merchant_id: int
    secret: str
    payout_secret: str


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    await empty_tables(database_url)
    app = create_app(make_settings(database_url, tmp_path_factory.mktemp("fuzz-merchant")))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            rt: Runtime = app.state.runtime
            async with rt.db.transaction() as session:
                _, creds = await create_merchant(session, rt.keyring, name="Fuzz", mode="test", now=utcnow())
            yield World(http, rt, creds.merchant_id, creds.secret_key, creds.payout_secret)


pytestmark = pytest.mark.asyncio(loop_scope="module")
TRIED = {"merchant api": 0}


@pytest.mark.parametrize(("path", "payout"), SCRIPTS, ids=[p for p, _ in SCRIPTS])
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(fields=FIELDS, transport=st.sampled_from(TRANSPORTS))
async def test_signed_random_requests_never_give_5xx_nor_write_on_refusal(
    world: World, path: str, payout: bool, fields: list[tuple[str, str]], transport: str
) -> None:
    TRIED["merchant api"] += 1
    url = path.replace("{m}", str(world.merchant_id))
    secret = world.payout_secret if payout else world.secret
    params = [("pg_merchant_id", str(world.merchant_id)), *fields]
    message = signed(script_name_from_url(url), params, secret)
    before = await table_counts(world.rt)
    response = await send(world.http, url, message, transport)
    assert response.status_code < 500, (url, transport, fields, response.text[:300])
    if response.status_code in (302, 303, 307):
        return  # payment.php and card/pay send the payer on to the payment page
    if response.headers["content-type"].startswith("text/html"):
        assert response.status_code == 400  # payment.php's own error page
        refused = True
    else:
        root = ElementTree.fromstring(response.content)
        refused = root.findtext("pg_status") in ("error", "rejected")
    if refused:
        assert await table_counts(world.rt) == before, (url, transport, fields)
