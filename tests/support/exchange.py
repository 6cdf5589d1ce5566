"""Arranging exchange scenarios through the real services."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from greengate.clock import utcnow
from greengate.runtime import Runtime
from greengate.services.directions import DirectionChanges, create_direction
from greengate.services.merchants import create_merchant, update_exchange_settings
from greengate.services.requisites import add_requisite
from greengate.store.models import Base, ExchangeOrder

WALLET = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"
TESTNET_WALLET = "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx"


@dataclass
class Client:
    merchant_id: int
    api_secret: str
    webhook_secret: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Api-Secret": self.api_secret}


async def make_client(rt: Runtime, name: str = "Exchange office", **exchange_settings: Any) -> Client:
    async with rt.db.transaction() as session:
        merchant, creds = await create_merchant(session, rt.keyring, name=name, mode="test", now=utcnow())
        if exchange_settings:
            await update_exchange_settings(
                session,
                merchant,
                network=rt.settings.btc_network,
                now=utcnow(),
                allow_private_callbacks=True,
                **exchange_settings,
            )
    return Client(creds.merchant_id, creds.api_secret, creds.webhook_secret)


async def make_direction(
    rt: Runtime, payment_method: str = "card", currency: str = "RUB", **changes: Any
) -> int:
    defaults: dict[str, Any] = {
        "min_amount": "300",
        "max_amount": "150000000",
        "commission_percent": "17",
        "order_ttl": 30,
        "fullname": "Банковская карта RUB на Bitcoin BTC",
        "rate_source": "fixed",
    }
    defaults.update(changes)
    async with rt.db.transaction() as session:
        direction = await create_direction(
            session,
            payment_method=payment_method,
            from_currency=currency,
            changes=DirectionChanges(**defaults),
            now=utcnow(),
        )
        return direction.id


async def make_requisites(rt: Runtime, count: int, payment_method: str = "card", **limits: Any) -> list[int]:
    ids = []
    async with rt.db.transaction() as session:
        for i in range(count):
            req = await add_requisite(
                session,
                rt.keyring,
                payment_method=payment_method,
                number=f"22007001{i:08d}",
                bank="Bank",
                holder="HOLDER",
                daily_limit=limits.get("daily_limit"),
                turnover_limit=limits.get("turnover_limit"),
                now=utcnow(),
            )
            ids.append(req.id)
    return ids


async def create_order(
    client: httpx.AsyncClient,
    who: Client,
    amount: Any = "9999",
    method: str = "card",
    wallet: str = WALLET,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return await client.post(
        "/api/v2/order/create",
        json={"payment_method": method, "wallet": wallet, "from_amount": amount},
        headers={**who.headers, **(headers or {})},
    )


async def check(client: httpx.AsyncClient, who: Client, ids: Any) -> list[dict[str, Any]]:
    response = await client.post("/api/v2/order/check", json={"order_id": ids}, headers=who.headers)
    assert response.status_code == 200, response.text
    orders: list[dict[str, Any]] = response.json()["data"]["orders"]
    return orders


def exact_json(response: httpx.Response) -> Any:
    """The response body with JSON numbers kept as exact Decimals (never floats)."""
    return json.loads(response.text, parse_float=Decimal)


async def load_order(rt: Runtime, order_id: int | str) -> ExchangeOrder:
    async with rt.db.transaction() as session:
        order = await session.get(ExchangeOrder, int(order_id))
    assert order is not None, f"order {order_id} not in the database"
    return order


async def table_contents(rt: Runtime) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in primary-key order: equal snapshots mean nothing was written."""
    contents: dict[str, list[tuple[Any, ...]]] = {}
    async with rt.db.transaction() as session:
        for table in Base.metadata.sorted_tables:
            rows = await session.execute(select(table).order_by(*table.primary_key.columns))
            contents[table.name] = [tuple(row) for row in rows]
    return contents


async def empty_tables(database_url: str) -> None:
    """Delete every row, children first. On PostgreSQL this is several times faster than TRUNCATE for
    the handful of rows a test leaves; ids keep counting up, which no test relies on."""
    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            for table in reversed(Base.metadata.sorted_tables):
                await conn.execute(table.delete())
    finally:
        await engine.dispose()
