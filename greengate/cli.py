"""The `greengate` command: serve, worker, migrate and the operator's commands."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import typer
from sqlalchemy import select

from greengate.clock import utcnow
from greengate.domain.errors import DomainError
from greengate.domain.money import format_minor, parse_amount
from greengate.runtime import Runtime
from greengate.settings import get_settings
from greengate.store import migrate as migrations

T = TypeVar("T")

app = typer.Typer(help="greengate payment gateway", no_args_is_help=True, add_completion=False)
merchant_app = typer.Typer(help="Merchants and exchange clients", no_args_is_help=True)
direction_app = typer.Typer(help="Exchange directions", no_args_is_help=True)
requisite_app = typer.Typer(help="Card requisites that payers transfer to", no_args_is_help=True)
order_app = typer.Typer(help="Exchange orders", no_args_is_help=True)
admin_app = typer.Typer(help="Operator console accounts", no_args_is_help=True)
rates_app = typer.Typer(help="Market rates", no_args_is_help=True)
for sub, name in (
    (merchant_app, "merchant"),
    (direction_app, "direction"),
    (requisite_app, "requisite"),
    (order_app, "order"),
    (admin_app, "admin"),
    (rates_app, "rates"),
):
    app.add_typer(sub, name=name)


def _run(work: Callable[[Runtime], Awaitable[T]]) -> T:
    """Run one operator command against the configured database; domain errors exit with code 1."""

    async def main() -> T:
        rt = Runtime.create(get_settings())
        try:
            return await work(rt)
        finally:
            await rt.close()

    try:
        return asyncio.run(main())
    except DomainError as exc:
        typer.echo(f"error: {exc.message} ({exc.code})", err=True)
        raise typer.Exit(1) from None


def _echo(data: Any, as_json: bool, text: str) -> None:
    typer.echo(json.dumps(data, ensure_ascii=False, indent=None if as_json else 2) if as_json else text)


@app.command()
def migrate() -> None:
    """Apply database migrations."""
    settings = get_settings()
    migrations.upgrade(settings.database_url, pooler=settings.database_pooler)
    typer.echo("migrations applied")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on"),
    port: int = typer.Option(8000, help="Port to listen on"),
    workers: int = typer.Option(1, "--workers", min=1, help="Server processes sharing the port"),
    demo: bool = typer.Option(False, "--demo", help="Seed demo data and print its credentials"),
    no_worker: bool = typer.Option(False, "--no-worker", help="Do not run the background worker"),
) -> None:
    """Run the gateway (migrations first; the worker runs alongside unless --no-worker)."""
    import uvicorn

    settings = get_settings()
    migrations.upgrade(settings.database_url, pooler=settings.database_pooler)
    if demo:
        from greengate.demo import seed

        data = _run(seed)
        typer.echo("Demo data ready. Keep these; secrets are shown once:")
        typer.echo(json.dumps(data, ensure_ascii=False, indent=2))
        typer.echo(f"Exchange API: http://{host}:{port}/api/v2/directions  (header Api-Secret)")
        typer.echo(f"API docs:     http://{host}:{port}/docs")
        typer.echo(f"Console:      http://{host}:{port}/admin/  (the admin above)")
    worker_proc: subprocess.Popen[bytes] | None = None
    if workers > 1:
        # Metrics from every server process are merged through files in a shared directory.
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="greengate-metrics-"))
        if not no_worker:
            worker_proc = subprocess.Popen([sys.executable, "-m", "greengate.cli", "worker"])
    factory = (
        "greengate.app:app_factory" if (no_worker or workers > 1) else "greengate.app:app_factory_with_worker"
    )
    try:
        uvicorn.run(
            factory,
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=10,
        )
    finally:
        if worker_proc is not None:
            worker_proc.send_signal(signal.SIGTERM)
            worker_proc.wait(timeout=20)


@app.command()
def worker() -> None:
    """Run the background worker: callbacks, TTL expiry, rate refresh."""
    from greengate import log
    from greengate.worker.loop import Worker

    settings = get_settings()
    log.configure(settings.log_level, settings.log_json)

    async def main(rt: Runtime) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Worker(rt).run(stop)

    _run(main)


# --- merchants -------------------------------------------------------------------------------


@merchant_app.command("create")
def merchant_create(
    name: str = typer.Option(..., "--name"),
    mode: str = typer.Option("test", "--mode", help="test or live"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Create a merchant / exchange client and print its credentials once."""
    from greengate.services.merchants import create_merchant

    async def work(rt: Runtime) -> dict[str, Any]:
        async with rt.db.transaction() as session:
            _, creds = await create_merchant(session, rt.keyring, name=name, mode=mode, now=utcnow())
        return {
            "merchant_id": creds.merchant_id,
            "secret_key": creds.secret_key,
            "api_secret": creds.api_secret,
            "payout_secret": creds.payout_secret,
            "webhook_secret": creds.webhook_secret,
        }

    data = _run(work)
    _echo(data, as_json, "\n".join(f"{k}: {v}" for k, v in data.items()))


@merchant_app.command("update")
def merchant_update(
    merchant_id: int,
    webhook_url: str | None = typer.Option(None, "--webhook-url", help='Exchange callback URL ("" clears)'),
    default_wallet: str | None = typer.Option(
        None, "--default-wallet", help='Default BTC payout wallet ("" clears)'
    ),
    mode: str | None = typer.Option(None, "--mode", help="Merchant API mode: test or live"),
    active: bool | None = typer.Option(None, "--active/--inactive", help="Enable or disable the merchant"),
    check_url: str | None = typer.Option(None, "--check-url", help='Default check URL ("" clears)'),
    result_url: str | None = typer.Option(None, "--result-url", help='Default result URL ("" clears)'),
    refund_url: str | None = typer.Option(None, "--refund-url", help='Default refund URL ("" clears)'),
    capture_url: str | None = typer.Option(None, "--capture-url", help='Default capture URL ("" clears)'),
    success_url: str | None = typer.Option(None, "--success-url", help='Default success URL ("" clears)'),
    failure_url: str | None = typer.Option(None, "--failure-url", help='Default failure URL ("" clears)'),
    request_method: str | None = typer.Option(
        None, "--request-method", help="How callbacks are sent by default: GET, POST or XML"
    ),
    check_enabled: bool | None = typer.Option(
        None, "--check-enabled/--check-disabled", help="Send the check request by default"
    ),
) -> None:
    """Change a client's exchange settings and a merchant's Merchant API settings."""
    from greengate.services.merchants import (
        MerchantApiSettings,
        get_merchant,
        update_exchange_settings,
        update_merchant_settings,
    )

    api = MerchantApiSettings(
        mode=mode,
        active=active,
        check_url=check_url,
        result_url=result_url,
        refund_url=refund_url,
        capture_url=capture_url,
        success_url=success_url,
        failure_url=failure_url,
        request_method=request_method,
        check_enabled=check_enabled,
    )

    async def work(rt: Runtime) -> None:
        async with rt.db.transaction() as session:
            m = await get_merchant(session, merchant_id, lock=True)
            if webhook_url is not None or default_wallet is not None or api == MerchantApiSettings():
                await update_exchange_settings(
                    session,
                    m,
                    network=rt.settings.btc_network,
                    now=utcnow(),
                    allow_private_callbacks=rt.settings.callback_allow_private,
                    webhook_url=webhook_url,
                    default_wallet=default_wallet,
                )
            if api != MerchantApiSettings():
                await update_merchant_settings(
                    session,
                    m,
                    api,
                    now=utcnow(),
                    allow_private_callbacks=rt.settings.callback_allow_private,
                )

    _run(work)
    typer.echo(f"merchant {merchant_id} updated")


@merchant_app.command("list")
def merchant_list(as_json: bool = typer.Option(False, "--json")) -> None:
    from greengate.store.models import Merchant

    async def work(rt: Runtime) -> list[dict[str, Any]]:
        async with rt.db.transaction() as session:
            rows = await session.scalars(select(Merchant).order_by(Merchant.id))
            return [
                {
                    "merchant_id": m.id,
                    "name": m.name,
                    "mode": m.mode,
                    "active": m.active,
                    "webhook_url": m.webhook_url,
                    "default_wallet": m.default_wallet,
                }
                for m in rows
            ]

    data = _run(work)
    _echo(data, as_json, "\n".join(f"{m['merchant_id']}\t{m['mode']}\t{m['name']}" for m in data))


# --- directions ------------------------------------------------------------------------------


def _direction_dict(d: Any) -> dict[str, Any]:
    return {
        "id": d.id,
        "payment_method": d.payment_method,
        "from_currency": d.from_currency,
        "status": d.status,
        "order_ttl": d.order_ttl,
        "min_amount": format_minor(d.min_amount, d.from_currency, trim=True),
        "max_amount": format_minor(d.max_amount, d.from_currency, trim=True),
        "comission_percent": d.commission_percent,
        "fullname": d.fullname,
        "rate_source": d.rate_source,
        "unique_amounts": d.unique_amounts,
        "unique_amount_span": d.unique_amount_span,
        "underpay_tolerance_percent": d.underpay_tolerance_percent,
    }


DirectionOpts = dict[str, Any]


@direction_app.command("create")
def direction_create(
    payment_method: str = typer.Option(..., "--payment-method", help="card, kzt, phone, ..."),
    currency: str = typer.Option(..., "--currency", help="Fiat currency, e.g. RUB"),
    min_amount: str = typer.Option(..., "--min"),
    max_amount: str = typer.Option(..., "--max"),
    commission: str = typer.Option("0", "--commission", help="Percent, e.g. 17 or 17.9"),
    ttl: int = typer.Option(30, "--ttl", help="Minutes to pay"),
    fullname: str | None = typer.Option(None, "--fullname"),
    rate_source: str = typer.Option(
        "fixed", "--rate-source", help="fixed, fixed:<rate>, binance, kraken, median"
    ),
    unique_amounts: bool = typer.Option(False, "--unique-amounts/--no-unique-amounts"),
    unique_span: int = typer.Option(100, "--unique-span", help="Max shift in minor units"),
    underpay_tolerance: str = typer.Option("0", "--underpay-tolerance", help="Percent"),
    disabled: bool = typer.Option(False, "--disabled"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    from greengate.services.directions import DirectionChanges, create_direction

    changes = DirectionChanges(
        status=0 if disabled else 1,
        order_ttl=ttl,
        min_amount=min_amount,
        max_amount=max_amount,
        commission_percent=commission,
        fullname=fullname,
        rate_source=rate_source,
        unique_amounts=unique_amounts,
        unique_amount_span=unique_span,
        underpay_tolerance_percent=underpay_tolerance,
    )

    async def work(rt: Runtime) -> dict[str, Any]:
        async with rt.db.transaction() as session:
            d = await create_direction(
                session, payment_method=payment_method, from_currency=currency, changes=changes, now=utcnow()
            )
            return _direction_dict(d)

    data = _run(work)
    _echo(data, as_json, f"direction {data['id']} ({data['payment_method']}) created")


@direction_app.command("list")
def direction_list(as_json: bool = typer.Option(False, "--json")) -> None:
    from greengate.services.directions import list_directions

    async def work(rt: Runtime) -> list[dict[str, Any]]:
        async with rt.db.transaction() as session:
            return [_direction_dict(d) for d in await list_directions(session)]

    data = _run(work)
    _echo(
        data,
        as_json,
        "\n".join(
            f"{d['id']}\t{d['payment_method']}\t{d['from_currency']}\tstatus={d['status']}\t"
            f"{d['min_amount']}-{d['max_amount']}\t{d['comission_percent']}%\t{d['rate_source']}"
            for d in data
        ),
    )


@direction_app.command("update")
def direction_update(
    direction_id: int,
    status: int | None = typer.Option(None, "--status", help="0 off, 1 on"),
    min_amount: str | None = typer.Option(None, "--min"),
    max_amount: str | None = typer.Option(None, "--max"),
    commission: str | None = typer.Option(None, "--commission"),
    ttl: int | None = typer.Option(None, "--ttl"),
    fullname: str | None = typer.Option(None, "--fullname"),
    rate_source: str | None = typer.Option(None, "--rate-source"),
    unique_amounts: bool | None = typer.Option(None, "--unique-amounts/--no-unique-amounts"),
    unique_span: int | None = typer.Option(None, "--unique-span"),
    underpay_tolerance: str | None = typer.Option(None, "--underpay-tolerance"),
    reserve: str | None = typer.Option(None, "--reserve", help="BTC reserve shown in rates.xml"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    from greengate.services.directions import DirectionChanges, update_direction

    changes = DirectionChanges(
        status=status,
        order_ttl=ttl,
        min_amount=min_amount,
        max_amount=max_amount,
        commission_percent=commission,
        fullname=fullname,
        rate_source=rate_source,
        unique_amounts=unique_amounts,
        unique_amount_span=unique_span,
        underpay_tolerance_percent=underpay_tolerance,
        reserve_btc=reserve,
    )

    async def work(rt: Runtime) -> dict[str, Any]:
        async with rt.db.transaction() as session:
            return _direction_dict(await update_direction(session, direction_id, changes, now=utcnow()))

    data = _run(work)
    _echo(data, as_json, f"direction {direction_id} updated")


# --- requisites ------------------------------------------------------------------------------


@requisite_app.command("add")
def requisite_add(
    payment_method: str = typer.Option(..., "--payment-method"),
    number: str = typer.Option(..., "--number", help="Card or phone number"),
    bank: str = typer.Option("", "--bank"),
    holder: str = typer.Option("", "--holder"),
    currency: str = typer.Option("RUB", "--currency", help="Currency of the limits"),
    daily_limit: str | None = typer.Option(None, "--daily-limit"),
    turnover_limit: str | None = typer.Option(None, "--turnover-limit"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    from greengate.services.requisites import add_requisite

    async def work(rt: Runtime) -> dict[str, Any]:
        async with rt.db.transaction() as session:
            r = await add_requisite(
                session,
                rt.keyring,
                payment_method=payment_method,
                number=number,
                bank=bank,
                holder=holder,
                daily_limit=parse_amount(daily_limit, currency, field="daily_limit") if daily_limit else None,
                turnover_limit=parse_amount(turnover_limit, currency, field="turnover_limit")
                if turnover_limit
                else None,
                now=utcnow(),
            )
            return {
                "id": r.id,
                "payment_method": r.payment_method,
                "number": r.number_masked,
                "active": r.active,
            }

    data = _run(work)
    _echo(data, as_json, f"requisite {data['id']} ({data['number']}) added")


@requisite_app.command("list")
def requisite_list(as_json: bool = typer.Option(False, "--json")) -> None:
    from greengate.store.models import Requisite

    async def work(rt: Runtime) -> list[dict[str, Any]]:
        async with rt.db.transaction() as session:
            rows = await session.scalars(select(Requisite).order_by(Requisite.id))
            return [
                {
                    "id": r.id,
                    "payment_method": r.payment_method,
                    "number": r.number_masked,
                    "bank": r.bank,
                    "holder": r.holder,
                    "active": r.active,
                    "daily_limit": r.daily_limit,
                    "turnover_limit": r.turnover_limit,
                }
                for r in rows
            ]

    data = _run(work)
    _echo(
        data,
        as_json,
        "\n".join(
            "\t".join(
                [str(r["id"]), r["payment_method"], r["number"], "active" if r["active"] else "disabled"]
            )
            for r in data
        ),
    )


@requisite_app.command("disable")
def requisite_disable(requisite_id: int) -> None:
    from greengate.services.requisites import set_requisite_active

    async def work(rt: Runtime) -> None:
        async with rt.db.transaction() as session:
            await set_requisite_active(session, requisite_id, False, now=utcnow())

    _run(work)
    typer.echo(f"requisite {requisite_id} disabled")


# --- orders ----------------------------------------------------------------------------------


@order_app.command("confirm-paid")
def order_confirm_paid(
    order_id: int,
    amount: str | None = typer.Option(None, "--amount", help="Accept at this received amount (re-priced)"),
) -> None:
    """Mark an order paid (the operator saw the transfer)."""
    from greengate.services.exchange_orders import confirm_paid, lock_order

    async def work(rt: Runtime) -> str:
        async with rt.db.transaction() as session:
            paid = None
            if amount is not None:
                order = await lock_order(session, order_id)
                paid = parse_amount(amount, order.currency, field="amount")
            order = await confirm_paid(
                session, rt, order_id, now=utcnow(), actor="operator:cli", paid_amount=paid
            )
            return order.status

    typer.echo(f"order {order_id}: {_run(work)}")


@order_app.command("complete")
def order_complete(order_id: int, txid: str = typer.Option(..., "--txid")) -> None:
    """Record the BTC payout transaction and complete the order."""
    from greengate.services.exchange_orders import complete_order

    async def work(rt: Runtime) -> str:
        async with rt.db.transaction() as session:
            order = await complete_order(session, rt, order_id, txid=txid, now=utcnow(), actor="operator:cli")
            return order.status

    typer.echo(f"order {order_id}: {_run(work)}")


@order_app.command("payout")
def order_payout(order_id: int) -> None:
    """Send the order's BTC through the configured payout backend and complete it."""
    from greengate.services.btc_payouts import pay_out_order

    typer.echo(f"order {order_id}: {_run(lambda rt: pay_out_order(rt, order_id, actor='operator:cli'))}")


# --- payments --------------------------------------------------------------------------------

payment_app = typer.Typer(help="Merchant API payments", no_args_is_help=True)
app.add_typer(payment_app, name="payment")


@payment_app.command("action")
def payment_action(
    payment_id: int,
    action: str = typer.Argument(..., help="approve, decline, require-3ds, expire, refund or chargeback"),
    code: int | None = typer.Option(None, "--code", help="Failure code for decline (default 10001)"),
) -> None:
    """Drive a test payment like the console's test buttons (live payments: approve/decline while pending)."""
    from greengate.services.payment_flow import test_action

    async def work(rt: Runtime) -> str:
        async with rt.db.transaction() as session:
            payment = await test_action(
                session, payment_id, action, now=utcnow(), actor="operator:cli", code=code
            )
            return payment.status

    typer.echo(f"payment {payment_id}: {_run(work)}")


# --- payouts ---------------------------------------------------------------------------------

payout_app = typer.Typer(help="Merchant API payouts to cards", no_args_is_help=True)
app.add_typer(payout_app, name="payout")


@payout_app.command("action")
def payout_action(
    payout_id: int,
    action: str = typer.Argument(
        ..., help="approve, decline, or resolve (a processing test payout ends as its test card says)"
    ),
    code: int | None = typer.Option(None, "--code", help="Failure code for decline (default 10001)"),
) -> None:
    """Approve, decline or resolve a payout like the console's test buttons (live payouts: while
    processing; nothing ends a processing payout by itself)."""
    from greengate.services.payouts import test_action

    async def work(rt: Runtime) -> str:
        async with rt.db.transaction() as session:
            payout = await test_action(
                session, payout_id, action, now=utcnow(), actor="operator:cli", code=code, rt=rt
            )
            return payout.status

    typer.echo(f"payout {payout_id}: {_run(work)}")


# --- admins and rates ------------------------------------------------------------------------


@admin_app.command("create")
def admin_create(
    email: str = typer.Option(..., "--email"),
    password: str = typer.Option(..., "--password", prompt=True, hide_input=True),
    role: str = typer.Option("admin", "--role", help="admin, operator or viewer"),
) -> None:
    from greengate.services.admin_users import create_admin

    async def work(rt: Runtime) -> int:
        async with rt.db.transaction() as session:
            return (await create_admin(session, email=email, password=password, role=role, now=utcnow())).id

    typer.echo(f"admin {email} created (id {_run(work)})")


@rates_app.command("refresh")
def rates_refresh() -> None:
    from greengate.services.rates import refresh_rates

    for key, outcome in _run(lambda rt: refresh_rates(rt, utcnow())).items():
        typer.echo(f"{key}: {outcome}")


# --- fees and ledger -------------------------------------------------------------------------

ledger_app = typer.Typer(help="Double-entry ledger: balances and the consistency check", no_args_is_help=True)
app.add_typer(ledger_app, name="ledger")


@merchant_app.command("fee")
def merchant_fee(
    merchant_id: int,
    currency: str = typer.Option(..., "--currency", help="Currency of the payments the fee applies to"),
    payment_system: str = typer.Option("*", "--payment-system", help="BANKCARD, MOBILE_COMMERCE or * (any)"),
    percent: str = typer.Option("0", "--percent", help="Percent of the amount, e.g. 2.5"),
    fixed: str = typer.Option("0", "--fixed", help="Fixed part in major units, e.g. 10"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Set the gateway's fee on a merchant's payments (percent rounded half up, plus the fixed part)."""
    from greengate.services.fees import set_fee

    async def work(rt: Runtime) -> dict[str, Any]:
        cur = currency.upper()
        async with rt.db.transaction() as session:
            row = await set_fee(
                session,
                merchant_id,
                payment_system=payment_system,
                percent=percent,
                fixed=parse_amount(fixed, cur, field="fixed"),
                currency=cur,
                now=utcnow(),
                actor="operator:cli",
            )
            return {
                "merchant_id": merchant_id,
                "payment_system": row.payment_system,
                "currency": row.currency,
                "percent": row.percent,
                "fixed": format_minor(row.fixed, row.currency),
            }

    data = _run(work)
    _echo(
        data,
        as_json,
        f"merchant {merchant_id} fee for {data['payment_system']} in {data['currency']}: "
        f"{data['percent']}% + {data['fixed']}",
    )


@ledger_app.command("check")
def ledger_check() -> None:
    """Recompute every balance from the entries; print OK, or the problems and exit 1."""
    from greengate.services.ledger import check

    async def work(rt: Runtime) -> list[str]:
        async with rt.db.transaction() as session:
            return await check(session)

    problems = _run(work)
    if problems:
        for line in problems:
            typer.echo(line)
        raise typer.Exit(1)
    typer.echo("OK")


@ledger_app.command("balances")
def ledger_balances(
    merchant: int | None = typer.Option(None, "--merchant", help="Only this merchant's accounts"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Account balances on each account's normal side, in major units."""
    from greengate.services.ledger import balances

    async def work(rt: Runtime) -> list[dict[str, Any]]:
        async with rt.db.transaction() as session:
            rows = await balances(session, merchant)
        return [
            {
                "owner": b.owner,
                "kind": b.kind,
                "currency": b.currency,
                "balance": format_minor(b.balance, b.currency),
            }
            for b in rows
        ]

    data = _run(work)
    header = {"owner": "OWNER", "kind": "KIND", "currency": "CURRENCY", "balance": "BALANCE"}
    widths = {k: max(len(str(r[k])) for r in [header, *data]) for k in header}
    lines = [
        "  ".join(
            str(r[k]).rjust(widths[k]) if k == "balance" else str(r[k]).ljust(widths[k]) for k in header
        ).rstrip()
        for r in [header, *data]
    ]
    _echo(data, as_json, "\n".join(lines))


# --- encryption keys -------------------------------------------------------------------------------

keys_app = typer.Typer(help="Encryption keys: re-encrypt stored data", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("rotate-cards")
def keys_rotate_cards() -> None:
    """Re-encrypt saved cards' PANs under the first key of GREENGATE_ENCRYPTION_KEYS."""
    from greengate.services.saved_cards import rotate_card_keys

    async def work(rt: Runtime) -> tuple[int, str]:
        async with rt.db.transaction() as session:
            return await rotate_card_keys(session, rt.keyring), rt.keyring.keys[0][0]

    count, kid = _run(work)
    typer.echo(f"{count} saved cards re-encrypted under key {kid}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
