"""Demo data for a first run: a test-mode exchange client, the two spec directions, sandbox
requisites and an admin account."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import select

from greengate.clock import utcnow
from greengate.runtime import Runtime
from greengate.services.admin_users import create_admin
from greengate.services.directions import DirectionChanges, create_direction
from greengate.services.merchants import create_merchant
from greengate.services.requisites import add_requisite
from greengate.store.models import AdminUser, Direction, Merchant

DEMO_MERCHANT = "Demo exchange office"
DEMO_ADMIN = "admin@greengate.local"
DIRECTIONS = [
    (
        "card",
        "RUB",
        DirectionChanges(
            min_amount="300",
            max_amount="150000000",
            commission_percent="17",
            order_ttl=30,
            fullname="Банковская карта RUB на Bitcoin BTC",
        ),
    ),
    (
        "kzt",
        "KZT",
        DirectionChanges(
            min_amount="2000",
            max_amount="50000000",
            commission_percent="17.9",
            order_ttl=30,
            fullname="Банковская карта KZT на Bitcoin BTC",
        ),
    ),
]
REQUISITES = [
    ("card", "2200700123456781", "Sandbox Bank", "IVAN PETROV"),
    ("card", "2200700123456799", "Sandbox Bank", "MARIA IVANOVA"),
    ("card", "2200700123456807", "Sandbox Bank", "OLEG SMIRNOV"),
    ("kzt", "4400430123456782", "Sandbox Bank KZ", "AIGERIM NURLANOVA"),
    ("kzt", "4400430123456790", "Sandbox Bank KZ", "DAUREN SADYKOV"),
]


async def seed(rt: Runtime) -> dict[str, Any] | None:
    """Make the demo data and return its credentials; None when it was made before (its secrets are
    never issued again, so clients set up with them keep working)."""
    now = utcnow()
    out: dict[str, Any] = {}
    async with rt.db.transaction() as session:
        if await session.scalar(select(Merchant.id).where(Merchant.name == DEMO_MERCHANT)) is not None:
            return None
        merchant, creds = await create_merchant(
            session, rt.keyring, name=DEMO_MERCHANT, mode="test", now=now, actor="demo"
        )
        out["merchant"] = {
            "merchant_id": creds.merchant_id,
            "secret_key": creds.secret_key,
            "api_secret": creds.api_secret,
            "payout_secret": creds.payout_secret,
            "webhook_secret": creds.webhook_secret,
            "mode": merchant.mode,
        }
        existing = set(await session.scalars(select(Direction.payment_method)))
        for method, currency, changes in DIRECTIONS:
            if method not in existing:
                await create_direction(
                    session,
                    payment_method=method,
                    from_currency=currency,
                    changes=changes,
                    now=now,
                    actor="demo",
                )
                for m, number, bank, holder in REQUISITES:
                    if m == method:
                        await add_requisite(
                            session,
                            rt.keyring,
                            payment_method=m,
                            number=number,
                            bank=bank,
                            holder=holder,
                            daily_limit=None,
                            turnover_limit=None,
                            now=now,
                            actor="demo",
                        )
        out["directions"] = [m for m, _, _ in DIRECTIONS]
        admin = await session.scalar(select(AdminUser).where(AdminUser.email == DEMO_ADMIN))
        if admin is None:
            password = secrets.token_urlsafe(12)
            await create_admin(
                session, email=DEMO_ADMIN, password=password, role="admin", now=now, actor="demo"
            )
            out["admin"] = {"email": DEMO_ADMIN, "password": password}
    return out
