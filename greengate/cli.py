"""The `greengate` command: serve, worker, migrate and the operator's commands."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from enum import StrEnum
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from sqlalchemy import select

from greengate import __version__
from greengate.clock import utcnow
from greengate.domain.errors import DomainError
from greengate.domain.money import format_minor, parse_amount
from greengate.runtime import Runtime
from greengate.settings import get_settings
from greengate.store import migrate as migrations

T = TypeVar("T")

# Plain help (no `<bool>` metavars) and plain tracebacks (never a dump of local variables).
PLAIN: dict[str, Any] = {"no_args_is_help": True, "rich_markup_mode": None, "pretty_exceptions_enable": False}
app = typer.Typer(add_completion=False, **PLAIN)
merchant_app = typer.Typer(help="Merchants and exchange clients", **PLAIN)
direction_app = typer.Typer(help="Exchange directions", **PLAIN)
requisite_app = typer.Typer(help="Card requisites that payers transfer to", **PLAIN)
order_app = typer.Typer(help="Exchange orders", **PLAIN)
admin_app = typer.Typer(help="Operator console accounts", **PLAIN)
rates_app = typer.Typer(help="Market rates", **PLAIN)
for sub, name in (
    (merchant_app, "merchant"),
    (direction_app, "direction"),
    (requisite_app, "requisite"),
    (order_app, "order"),
    (admin_app, "admin"),
    (rates_app, "rates"),
):
    app.add_typer(sub, name=name)


def _fail(message: str) -> NoReturn:
    """One line on stderr and exit status 1: what is wrong and what to do."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _prepare_schema() -> None:
    try:
        settings = get_settings()
        if migrations.prepare_schema(settings.database_url, pooler=settings.database_pooler):
            typer.echo("the database was empty: migrations applied", err=True)
    except migrations.DatabaseProblem as problem:
        _fail(problem.message)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"greengate {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit"
    ),
) -> None:
    """greengate payment gateway: serve both APIs, run the worker, operate from the command line."""


def _run(work: Callable[[Runtime], Awaitable[T]], *, check_keys: bool = True, check_schema: bool = True) -> T:
    """Run one operator command against the configured database, once its schema is current and the
    keyring can read its data; domain errors exit with code 1."""
    from greengate.services import keys

    if check_schema:
        _prepare_schema()

    async def main() -> T:
        rt = Runtime.create(get_settings())
        try:
            if check_keys:
                await keys.prepare(rt)
            return await work(rt)
        finally:
            await rt.close()

    try:
        return asyncio.run(main())
    except DomainError as exc:
        _fail(f"{exc.message} ({exc.code})")
    except keys.KeyProblem as problem:
        _fail(problem.message)


def _echo(data: Any, as_json: bool, text: str) -> None:
    typer.echo(json.dumps(data, ensure_ascii=False, indent=None if as_json else 2) if as_json else text)


def _upgrade(url: str, pooler: str) -> None:
    from alembic.util.exc import CommandError

    try:
        migrations.upgrade(url, pooler=pooler)
    except CommandError as exc:  # e.g. a database migrated by a newer release
        _fail(f"cannot migrate the database: {exc}; a newer greengate may have migrated it")


@app.command()
def migrate() -> None:
    """Apply database migrations (back up first: docs/backups.md)."""
    settings = get_settings()
    try:
        migrations.probe(settings.database_url, pooler=settings.database_pooler)
    except migrations.DatabaseProblem as problem:
        _fail(problem.message)
    _upgrade(settings.database_url, settings.database_pooler)
    typer.echo("migrations applied")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on"),
    port: int = typer.Option(8000, help="Port to listen on"),
    workers: int = typer.Option(1, "--workers", min=1, help="Server processes sharing the port"),
    demo: bool = typer.Option(False, "--demo", help="Seed demo data and print its credentials"),
    no_worker: bool = typer.Option(False, "--no-worker", help="Do not run the background worker"),
) -> None:
    """Run the gateway (migrating first) and, unless --no-worker, the worker."""
    import uvicorn

    settings = get_settings()
    try:
        migrations.probe(settings.database_url, pooler=settings.database_pooler)
    except migrations.DatabaseProblem as problem:
        _fail(problem.message)
    _upgrade(settings.database_url, settings.database_pooler)
    _run(_keys_ready, check_schema=False)
    local = local_base_url(host, port)
    if not settings.public_base_url:
        # Links follow the address served: every process this command starts inherits it.
        os.environ["GREENGATE_SERVED_BASE_URL"] = local
        get_settings.cache_clear()
        if host in WILDCARD_HOSTS:
            typer.echo(
                "warning: listening on every interface but GREENGATE_PUBLIC_BASE_URL is not set, so the "
                f"links handed to payers and merchants point at {local}, which only this machine can open; "
                "set GREENGATE_PUBLIC_BASE_URL to the address they reach",
                err=True,
            )
    if demo:
        _demo(get_settings())
    typer.echo(f"greengate {__version__} on {local}  (links handed out: {get_settings().base_url})")
    typer.echo(f"Exchange API: {local}/api/v2/directions  (header Api-Secret)")
    typer.echo(f"API docs:     {local}/docs")
    typer.echo(f"Console:      {local}/admin/")
    worker_proc: subprocess.Popen[bytes] | None = None
    if workers > 1:
        # Metrics from every server process are merged through files in a shared directory.
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="greengate-metrics-"))
        if not no_worker:
            worker_proc = subprocess.Popen([sys.executable, "-m", "greengate.cli", "worker"])
    if settings.metrics_address:
        from greengate.metrics import serve_separately

        serve_separately(settings.metrics_address)
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


WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def local_base_url(host: str, port: int) -> str:
    """An address of the server that works from this machine: a wildcard host becomes loopback."""
    name = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{name}]:{port}" if ":" in name else f"http://{name}:{port}"


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def _demo(settings: Any) -> None:
    """Make the demo data once; later starts say where its credentials were written."""
    from greengate.demo import seed

    path: Path = settings.demo_credentials_file()
    data = _run(seed, check_schema=False)
    if data is None:
        where = (
            f"its credentials are in {path}"
            if path.exists()
            else f"its credentials were written to {path} when it was made, which is gone now "
            "(rotate the demo client's secrets in the console to get new ones)"
        )
        typer.echo(f"Demo data exists already; {where}")
        return
    _write_private(path, json.dumps(data, ensure_ascii=False, indent=2) + "\n")
    typer.echo(f"Demo data made. Its credentials (also in {path}, mode 0600):")
    typer.echo(json.dumps(data, ensure_ascii=False, indent=2))


async def _keys_ready(rt: Runtime) -> None:
    """Nothing to do: `_run` has checked the keyring against the database."""


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
    as_json: bool = typer.Option(False, "--json", help="Print JSON"),
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
    requests_per_minute: int | None = typer.Option(
        None,
        "--exchange-requests-per-minute",
        help="Exchange API requests a minute for this client (0: no limit; -1: the server's default)",
    ),
) -> None:
    """Change a client's exchange settings and a merchant's Merchant API settings."""
    from greengate.services.merchants import (
        MerchantApiSettings,
        get_merchant,
        set_request_limit,
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
            if requests_per_minute is not None:
                await set_request_limit(session, m, requests_per_minute, now=utcnow())
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
def merchant_list(as_json: bool = typer.Option(False, "--json", help="Print JSON")) -> None:
    """List merchants and exchange clients (id, mode, name)."""
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
    as_json: bool = typer.Option(False, "--json", help="Print JSON"),
) -> None:
    """Create an exchange direction (fiat currency to BTC)."""
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
def direction_list(as_json: bool = typer.Option(False, "--json", help="Print JSON")) -> None:
    """List exchange directions with their limits, commission and rate source."""
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
    as_json: bool = typer.Option(False, "--json", help="Print JSON"),
) -> None:
    """Change a direction's status, limits, commission, TTL or rate source."""
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
    as_json: bool = typer.Option(False, "--json", help="Print JSON"),
) -> None:
    """Add a card or phone requisite that payers transfer to (stored encrypted)."""
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
def requisite_list(as_json: bool = typer.Option(False, "--json", help="Print JSON")) -> None:
    """List card requisites (numbers masked) and whether each is handed out."""
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
    """Stop handing a requisite out to new orders."""
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
def order_payout(
    order_id: int,
    wallet_checked: bool = typer.Option(
        False, "--wallet-checked", help="The wallet shows no transaction for an earlier send: send again."
    ),
) -> None:
    """Send the order's BTC through the configured payout backend and complete it."""
    from greengate.services.btc_payouts import pay_out_order

    outcome = _run(
        lambda rt: pay_out_order(rt, order_id, actor="operator:cli", wallet_checked=wallet_checked)
    )
    typer.echo(f"order {order_id}: {outcome}")


# --- payments --------------------------------------------------------------------------------

payment_app = typer.Typer(help="Merchant API payments", **PLAIN)
app.add_typer(payment_app, name="payment")


@payment_app.command("action")
def payment_action(
    payment_id: int,
    action: str = typer.Argument(..., help="approve, decline, require-3ds, expire, refund or chargeback"),
    code: int | None = typer.Option(None, "--code", help="Failure code for decline (default 10001)"),
) -> None:
    """Drive a payment like the console's test buttons.

    Live payments: approve or decline while pending."""
    from greengate.services.payment_flow import test_action

    async def work(rt: Runtime) -> str:
        async with rt.db.transaction() as session:
            payment = await test_action(
                session, payment_id, action, now=utcnow(), actor="operator:cli", code=code
            )
            return ("test " if payment.testing else "") + f"payment {payment_id}: {payment.status}"

    typer.echo(_run(work))


# --- payouts ---------------------------------------------------------------------------------

payout_app = typer.Typer(help="Merchant API payouts to cards", **PLAIN)
app.add_typer(payout_app, name="payout")


@payout_app.command("action")
def payout_action(
    payout_id: int,
    action: str = typer.Argument(
        ..., help="approve, decline, or resolve (a processing test payout ends as its test card says)"
    ),
    code: int | None = typer.Option(None, "--code", help="Failure code for decline (default 10001)"),
) -> None:
    """Approve, decline or resolve a payout like the console's test buttons.

    Live payouts: while processing; nothing ends a processing payout by itself."""
    from greengate.services.payouts import test_action

    async def work(rt: Runtime) -> str:
        async with rt.db.transaction() as session:
            payout = await test_action(
                session, payout_id, action, now=utcnow(), actor="operator:cli", code=code, rt=rt
            )
            return ("test " if payout.testing else "") + f"payout {payout_id}: {payout.status}"

    typer.echo(_run(work))


# --- admins and rates ------------------------------------------------------------------------


@admin_app.command("create")
def admin_create(
    email: str = typer.Option(..., "--email"),
    password: str = typer.Option(..., "--password", prompt=True, hide_input=True),
    role: str = typer.Option("admin", "--role", help="admin, operator or viewer"),
) -> None:
    """Create an operator console account (asks for the password)."""
    from greengate.services.admin_users import create_admin

    async def work(rt: Runtime) -> int:
        async with rt.db.transaction() as session:
            return (await create_admin(session, email=email, password=password, role=role, now=utcnow())).id

    typer.echo(f"admin {email} created (id {_run(work)})")


@rates_app.command("refresh")
def rates_refresh() -> None:
    """Fetch market rates now for every direction that uses them."""
    from greengate.services.rates import refresh_rates

    for key, outcome in _run(lambda rt: refresh_rates(rt, utcnow())).items():
        typer.echo(f"{key}: {outcome}")


# --- fees and ledger -------------------------------------------------------------------------

ledger_app = typer.Typer(help="Double-entry ledger: balances and the consistency check", **PLAIN)
app.add_typer(ledger_app, name="ledger")


@merchant_app.command("fee")
def merchant_fee(
    merchant_id: int,
    currency: str = typer.Option(..., "--currency", help="Currency of the payments the fee applies to"),
    payment_system: str = typer.Option("*", "--payment-system", help="BANKCARD, MOBILE_COMMERCE or * (any)"),
    percent: str = typer.Option("0", "--percent", help="Percent of the amount, e.g. 2.5"),
    fixed: str = typer.Option("0", "--fixed", help="Fixed part in major units, e.g. 10"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON"),
) -> None:
    """Set the gateway's fee on a merchant's payments.

    The percent part is rounded half up, then the fixed part is added."""
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


@merchant_app.command("cap")
def merchant_cap(
    merchant_id: int,
    currency: str = typer.Option(..., "--currency", help="Currency the cap applies to"),
    max_amount: str | None = typer.Option(
        None, "--max", help="Largest payment, refund, capture or payout, in major units, e.g. 50000"
    ),
    clear: bool = typer.Option(False, "--clear", help="Remove the merchant's cap: the gateway's applies"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Set a merchant's cap on one payment, refund, capture or payout.

    The cap can only be below the gateway's own cap for the currency."""
    from greengate.domain.amount_caps import default_cap, parse_cap
    from greengate.services.amount_caps import caps_of, set_cap

    if clear == (max_amount is not None):
        typer.echo("give either --max AMOUNT or --clear", err=True)
        raise typer.Exit(2)
    cur = currency.upper()

    async def work(rt: Runtime) -> dict[str, Any]:
        async with rt.db.transaction() as session:
            cap = None if max_amount is None else parse_cap(max_amount, cur)
            await set_cap(session, merchant_id, cur, cap, utcnow(), actor="operator:cli")
            in_force = (await caps_of(session, merchant_id))[cur]
            return {
                "merchant_id": merchant_id,
                "currency": cur,
                "cap": format_minor(in_force, cur),
                "gateway_cap": format_minor(default_cap(cur), cur),
                "own": cap is not None,
            }

    data = _run(work)
    whose = "its own" if data["own"] else "the gateway's"
    _echo(data, as_json, f"merchant {merchant_id} cap in {cur}: {data['cap']} ({whose})")


@ledger_app.command("check")
def ledger_check() -> None:
    """Recompute each book (live, test) from its entries; exit 1 on any problem.

    Prints OK per book, or each book's problems."""
    from greengate.services.ledger import check_books

    async def work(rt: Runtime) -> dict[str, list[str]]:
        async with rt.db.transaction() as session:
            return await check_books(session)

    try:
        found = _run(work)
    except Exception as exc:  # the check reports; it never ends in a traceback
        typer.echo(f"ledger check could not run: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        raise typer.Exit(1) from None
    failed = False
    for book, lines in found.items():
        label = "both books" if book == "both" else f"{book} book"
        if not lines:
            typer.echo(f"{label}: OK")
            continue
        failed = True
        typer.echo(f"{label}: {len(lines)} problem{'s' if len(lines) != 1 else ''}")
        for line in lines:
            typer.echo(f"  {line}")
    if failed:
        raise typer.Exit(1)


class BookChoice(StrEnum):
    LIVE = "live"
    TEST = "test"
    ALL = "all"


@ledger_app.command("balances")
def ledger_balances(
    merchant: int | None = typer.Option(None, "--merchant", help="Only this merchant's accounts"),
    book: BookChoice = typer.Option(
        BookChoice.ALL, "--book", help="live (real money), test (test payments' money) or all"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON"),
) -> None:
    """Account balances in major units, labelled with their book (live or test).

    Each balance is on its account's normal side.

    Only the live book holds money that can be paid out; the test book's is not real money."""
    from greengate.domain.ledger import Book
    from greengate.services.ledger import balances

    async def work(rt: Runtime) -> list[dict[str, Any]]:
        async with rt.db.transaction() as session:
            rows = await balances(
                session, merchant, book=None if book is BookChoice.ALL else Book(book.value)
            )
        return [
            {
                "book": b.book,
                "owner": b.owner,
                "kind": b.kind,
                "currency": b.currency,
                "balance": format_minor(b.balance, b.currency),
            }
            for b in rows
        ]

    data = _run(work)
    header = {"book": "BOOK", "owner": "OWNER", "kind": "KIND", "currency": "CURRENCY", "balance": "BALANCE"}
    shown = [{**r, "book": "TEST" if r["book"] == "test" else r["book"]} for r in data]
    widths = {k: max(len(str(r[k])) for r in [header, *shown]) for k in header}
    lines = [
        "  ".join(
            str(r[k]).rjust(widths[k]) if k == "balance" else str(r[k]).ljust(widths[k]) for k in header
        ).rstrip()
        for r in [header, *shown]
    ]
    if any(r["book"] == "test" for r in data):
        lines.append(
            "TEST: the test book's money came from test payments; it is not real and is never paid out."
        )
    _echo(data, as_json, "\n".join(lines))


# --- encryption keys -------------------------------------------------------------------------------

keys_app = typer.Typer(help="Encryption keys: status and rotation", **PLAIN)
app.add_typer(keys_app, name="keys")


@keys_app.command("status")
def keys_status(as_json: bool = typer.Option(False, "--json", help="Print JSON")) -> None:
    """Show the keyring against the keys the database needs.

    Exits 1 when the keyring cannot read the data."""
    from greengate.services import keys

    async def work(rt: Runtime) -> tuple[list[keys.KeyState], str]:
        async with rt.db.transaction() as session:
            return await keys.key_states(session, rt.keyring), keys.key_source(rt.settings)

    states, source = _run(work, check_keys=False)
    problem = keys.problem_of(states, source)
    data = {
        "keyring": source,
        "keys": [
            {
                "kid": s.kid,
                "needed_by_database": s.needed,
                "in_keyring": s.in_keyring,
                "matches": s.matches,
                "encrypts_new_data": s.primary,
            }
            for s in states
        ],
        "problem": problem.code if problem else None,
    }
    lines = [f"keyring: {source}"]
    for s in states:
        fields = [
            s.kid,
            "needed" if s.needed else "not needed",
            "in keyring" if s.in_keyring else "MISSING from keyring",
            {True: "same key", False: "DIFFERENT KEY", None: "-"}[s.matches],
        ]
        lines.append("\t".join(fields + (["encrypts new data"] if s.primary else [])))
    lines.append(f"problem: {problem.message}" if problem else "ok")
    _echo(data, as_json, "\n".join(lines))
    if problem:
        raise typer.Exit(1)


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Re-encrypt every encrypted value under the keyring's first key.

    Keys that no data needs any more are then named and may leave the keyring."""
    from greengate.services import keys

    async def work(rt: Runtime) -> tuple[keys.Rotation, str]:
        async with rt.db.transaction() as session:
            return await keys.rotate(session, rt.keyring, now=utcnow()), rt.keyring.primary

    rotation, kid = _run(work)
    for label, count in rotation.reencrypted.items():
        typer.echo(f"{label}: {count} re-encrypted")
    typer.echo(f"every encrypted value is under key {kid}")
    if rotation.retired:
        typer.echo(f"no longer needed, may leave the keyring: {', '.join(rotation.retired)}")


# --- backups -------------------------------------------------------------------------------------


@app.command("backup")
def backup_command(
    path: Path = typer.Argument(..., help="File to write; the keyring that reads it goes to PATH.keys"),
) -> None:
    """Copy the embedded database while the gateway runs, with its keys."""
    from greengate.store import backup

    db = get_settings().sqlite_file()
    if db is None:
        _fail("backup copies the embedded SQLite database; for PostgreSQL use pg_dump (docs/backups.md)")

    async def keyring_spec(rt: Runtime) -> str:
        return rt.keyring.spec()

    spec = _run(keyring_spec)  # the keyring is checked against the database first
    try:
        files = backup.backup(db, spec, path)
    except (backup.BackupError, OSError, sqlite3.Error) as exc:
        _fail(f"backup failed: {exc}")
    typer.echo(f"database copied to {files.database}; its keys to {files.keys} (keep both, apart and safe)")


@app.command("restore")
def restore_command(
    path: Path = typer.Argument(..., help="A file written by `greengate backup` (PATH.keys beside it)"),
    replace: bool = typer.Option(False, "--replace", help="Overwrite an existing database (gateway stopped)"),
) -> None:
    """Put a backup in place of the embedded database, with its keys."""
    from greengate.store import backup

    settings = get_settings()
    db = settings.sqlite_file()
    if db is None:
        _fail("restore writes the embedded SQLite database; for PostgreSQL use pg_restore (docs/backups.md)")
    try:
        files = backup.restore(path, db, replace=replace)
    except (backup.BackupError, OSError, sqlite3.Error) as exc:
        _fail(f"restore failed: {exc}")
    spec = files.keys.read_text().strip()
    if settings.encryption_keys.strip():
        where = "GREENGATE_ENCRYPTION_KEYS"
        if settings.encryption_keys.strip() != spec:
            typer.echo(
                f"note: the backup's keys are in {files.keys}; GREENGATE_ENCRYPTION_KEYS must hold them",
                err=True,
            )
    else:
        key_file = settings.key_file()
        where = str(key_file)
        if key_file.exists() and key_file.read_text().strip() != spec and not replace:
            _fail(f"{key_file} holds other keys than the backup's: pass --replace to overwrite it")
        backup.write_private(key_file, spec + "\n")
    _run(_keys_ready)
    typer.echo(f"restored {files.database} to {db}; keys in {where}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
