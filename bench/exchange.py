"""Exchange API throughput against PostgreSQL's own ceiling on the same machine.

One command: a fresh database, migrations, seed data, `greengate serve` as a subprocess, an HTTP/1.1
keep-alive load generator in a separate process driving POST /api/v2/order/create and then
POST /api/v2/order/check, and pgbench running the equivalent bare SQL transactions on the same
database at the same concurrency. Prints req/s, p50, p99 and errors next to pgbench's tps and writes
the figures to bench/results/exchange-<timestamp>.json. The server and the database are removed at
the end, whatever happens. The machinery is in bench/harness.py.

    .venv/bin/python -m bench.exchange [--duration S] [--concurrency C]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
from dataclasses import dataclass

from bench.harness import (
    BenchRun,
    Comparison,
    Rejected,
    Workload,
    arg_parser,
    excerpt,
    parse_args,
    post_bytes,
)

WALLET = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"
# Exchange API requests a minute allowed to the bench client: far more than any run sends.
BENCH_REQUESTS_PER_MINUTE = 100_000_000
# Whole range of the seeded direction (300 .. 150 000 000 RUB), in kopecks.
MIN_MINOR, MAX_MINOR = 30_000, 15_000_000_000
CREATE_TARGET, CHECK_TARGET = 0.25, 0.15
# With --sqlite (durable, 16 connections): absolute targets; raw SQLite is shown beside them.
SQLITE_CREATE_RPS, SQLITE_P99_MS = 1000.0, 100.0


@dataclass
class CreateOrders(Workload):
    """POST /api/v2/order/create with a random amount over the direction's whole range."""

    api_secret: str
    name = "create"
    flag_label = "without requisites"

    def request(self, rng: random.Random, host: str, port: int) -> bytes:
        minor = rng.randint(MIN_MINOR, MAX_MINOR)
        amount = f"{minor // 100}.{minor % 100:02d}"
        body = f'{{"payment_method":"card","wallet":"{WALLET}","from_amount":"{amount}"}}'
        return post_bytes(
            host, port, "/api/v2/order/create", "application/json", body.encode(),
            f"Api-Secret: {self.api_secret}\r\n",
        )  # fmt: skip

    def judge(self, status: int, body: bytes) -> bool:
        """200 with the created order; True (flagged) when it got no requisite (status unconfirmed)."""
        if status != 200:
            raise Rejected(f"HTTP {status}: {excerpt(body)}")
        try:
            order = json.loads(body)["items"][0]
            if not str(order["order_id"]).isdigit():
                raise ValueError("order_id")
            return bool(order["order_status"] != "awaiting")
        except (ValueError, KeyError, IndexError, TypeError):
            raise Rejected(f"HTTP 200 without an order: {excerpt(body)}") from None


@dataclass
class CheckOrders(Workload):
    """POST /api/v2/order/check with one existing order id, picked at random."""

    api_secret: str
    ids: list[int]
    name = "check"

    def request(self, rng: random.Random, host: str, port: int) -> bytes:
        body = f'{{"order_id":["{rng.choice(self.ids)}"]}}'
        return post_bytes(
            host, port, "/api/v2/order/check", "application/json", body.encode(),
            f"Api-Secret: {self.api_secret}\r\n",
        )  # fmt: skip

    def judge(self, status: int, body: bytes) -> bool:
        if status != 200:
            raise Rejected(f"HTTP {status}: {excerpt(body)}")
        if b'"order_id"' not in body:
            raise Rejected(f"HTTP 200 without the order: {excerpt(body)}")
        return False

    def problem(self) -> str | None:
        return None if self.ids else "no order ids to check"


def seed_requisites(run: BenchRun, count: int) -> tuple[int, int]:
    """Card requisites through the same service the `requisite add` command calls, in one transaction
    (50 CLI starts would take a minute)."""
    from greengate.clock import utcnow
    from greengate.runtime import Runtime
    from greengate.services.requisites import add_requisite

    async def work() -> list[int]:
        rt = Runtime.create(run.settings())
        try:
            async with rt.db.transaction() as session:
                ids = []
                for i in range(count):
                    req = await add_requisite(
                        session,
                        rt.keyring,
                        payment_method="card",
                        number=f"22007001{i:08d}",
                        bank="Bench bank",
                        holder="BENCH HOLDER",
                        daily_limit=None,
                        turnover_limit=None,
                        now=utcnow(),
                        actor="bench",
                    )
                    ids.append(req.id)
                return ids
        finally:
            await rt.close()

    ids = asyncio.run(work())
    return min(ids), max(ids)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = arg_parser("python -m bench.exchange", __doc__ or "")
    p.add_argument("--requisites", type=int, default=50, help="card requisites to seed")
    p.add_argument(
        "--unique-span", type=int, default=10_000, help="direction's unique-amount span, minor units"
    )
    args = parse_args(p, argv)
    if not 0 <= args.unique_span <= 10_000:
        p.error("--unique-span must be between 0 and 10000")
    if not 1 <= args.requisites <= 1000:
        p.error("--requisites must be between 1 and 1000")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    with BenchRun("exchange", args) as run:
        run.create_database()
        run.cli("migrate")
        merchant = json.loads(run.cli("merchant", "create", "--name", "Bench exchange office", "--json"))
        # A limit the load cannot reach: the request limit still runs on every request (its cost is
        # part of what is measured) but never refuses one.
        run.cli(
            "merchant", "update", str(merchant["merchant_id"]),
            "--exchange-requests-per-minute", str(BENCH_REQUESTS_PER_MINUTE),
        )  # fmt: skip
        direction = json.loads(
            run.cli(
                "direction", "create",
                "--payment-method", "card",
                "--currency", "RUB",
                "--min", "300",
                "--max", "150000000",
                "--commission", "17",
                "--rate-source", "fixed",
                "--unique-amounts",
                "--unique-span", str(args.unique_span),
                "--json",
            )
        )  # fmt: skip
        req_lo, req_hi = seed_requisites(run, args.requisites)

        run.start_server()
        run.prime(CreateOrders(merchant["api_secret"]))
        create = run.load(CreateOrders(merchant["api_secret"]))
        run.settle(after="create")
        # Every order the client owns, including those whose answers came after the window closed.
        ids = run.ids("exchange_orders", merchant["merchant_id"])
        check = run.load(CheckOrders(merchant["api_secret"], ids))

        clients = run.prepare_pgbench()
        write = run.pgbench(
            "write",
            clients,
            {
                "merchant_id": merchant["merchant_id"],
                "direction_id": direction["id"],
                "req_lo": req_lo,
                "req_hi": req_hi,
            },
        )
        if args.sqlite:
            read = run.pgbench("read", clients, {})
            # The absolute p99 target holds at full load already; the half-load rows only report.
            rows = [
                Comparison(create, write, 0.0, SQLITE_CREATE_RPS, SQLITE_P99_MS, half_max_p99_ms=None),
                Comparison(check, read, 0.0, half_max_p99_ms=None),
            ]
        else:
            max_id = int(run.fetchval("SELECT coalesce(max(id), 1) FROM bench_orders"))
            read = run.pgbench("read", clients, {"max_id": max_id})
            rows = [Comparison(create, write, CREATE_TARGET), Comparison(check, read, CHECK_TARGET)]
        return run.finish(rows, clients, {"requisites": args.requisites, "unique_span": args.unique_span})


if __name__ == "__main__":
    sys.exit(main())
