"""Merchant API throughput against PostgreSQL's own ceiling on the same machine.

One command: a fresh database, migrations, a merchant created through the CLI, `greengate serve` as a
subprocess, an HTTP/1.1 keep-alive load generator in a separate process driving init_payment.php and
then get_status2.php (signed pg_* forms, a fresh pg_salt each), and pgbench running the equivalent bare
SQL transactions on the same database at the same concurrency. Prints req/s, p50, p99 and errors next
to pgbench's tps and writes the figures to bench/results/merchant-<timestamp>.json. The server and the
database are removed at the end, whatever happens. The machinery is in bench/harness.py.

    .venv/bin/python -m bench.merchant [--duration S] [--concurrency C]
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass
from urllib.parse import urlencode

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
from greengate.domain.signature import with_signature

FORM = "application/x-www-form-urlencoded"
# Amounts in KZT (the default currency), whole tenge: 1 .. 100 000.
MIN_AMOUNT, MAX_AMOUNT = 1, 100_000
INIT_TARGET, STATUS_TARGET = 0.30, 0.20
# With --sqlite (durable, 16 connections): absolute targets; raw SQLite is shown beside them.
SQLITE_INIT_RPS, SQLITE_P99_MS = 500.0, 100.0
OK = b"<pg_status>ok</pg_status>"


def signed_form(script: str, fields: list[tuple[str, str]], secret: str, rng: random.Random) -> bytes:
    """The fields with a fresh pg_salt and their pg_sig, as an urlencoded body."""
    salt = f"{rng.getrandbits(96):024x}"
    return urlencode(with_signature(script, list(fields), secret, salt)).encode()


@dataclass
class InitPayments(Workload):
    """POST /init_payment.php: a new payment with its own pg_order_id and a random amount."""

    merchant_id: int
    secret_key: str
    name = "init_payment"

    def request(self, rng: random.Random, host: str, port: int) -> bytes:
        fields = [
            ("pg_merchant_id", str(self.merchant_id)),
            ("pg_order_id", f"bench-{rng.getrandbits(64):016x}"),
            ("pg_amount", str(rng.randint(MIN_AMOUNT, MAX_AMOUNT))),
            ("pg_currency", "KZT"),
            ("pg_description", "Bench order"),
            ("pg_result_url", "https://shop.example/result.php"),
        ]
        body = signed_form("init_payment.php", fields, self.secret_key, rng)
        return post_bytes(host, port, "/init_payment.php", FORM, body)

    def judge(self, status: int, body: bytes) -> bool:
        if status != 200 or OK not in body or b"<pg_payment_id>" not in body:
            raise Rejected(f"HTTP {status}: {excerpt(body)}")
        return False


@dataclass
class GetStatus(Workload):
    """POST /get_status2.php with the pg_payment_id of an existing payment, picked at random."""

    merchant_id: int
    secret_key: str
    ids: list[int]
    name = "get_status2"

    def request(self, rng: random.Random, host: str, port: int) -> bytes:
        fields = [
            ("pg_merchant_id", str(self.merchant_id)),
            ("pg_payment_id", str(rng.choice(self.ids))),
        ]
        body = signed_form("get_status2.php", fields, self.secret_key, rng)
        return post_bytes(host, port, "/get_status2.php", FORM, body)

    def judge(self, status: int, body: bytes) -> bool:
        if status != 200 or OK not in body or b"<pg_transaction_status>" not in body:
            raise Rejected(f"HTTP {status}: {excerpt(body)}")
        return False

    def problem(self) -> str | None:
        return None if self.ids else "no payment ids to read"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(arg_parser("python -m bench.merchant", __doc__ or ""), argv)
    with BenchRun("merchant", args) as run:
        run.create_database()
        run.cli("migrate")
        merchant = json.loads(run.cli("merchant", "create", "--name", "Bench shop", "--json"))
        merchant_id, secret_key = int(merchant["merchant_id"]), merchant["secret_key"]

        run.start_server()
        run.prime(InitPayments(merchant_id, secret_key))
        init = run.load(InitPayments(merchant_id, secret_key))
        run.settle(after="init_payment")
        # Every payment of the merchant, including those whose answers came after the window closed.
        ids = run.ids("payments", merchant_id)
        status = run.load(GetStatus(merchant_id, secret_key, ids))

        clients = run.prepare_pgbench()
        write = run.pgbench("write", clients, {"merchant_id": merchant_id})
        if args.sqlite:
            read = run.pgbench("read", clients, {})
            # The absolute p99 target holds at full load already; the half-load rows only report.
            rows = [
                Comparison(init, write, 0.0, SQLITE_INIT_RPS, SQLITE_P99_MS, half_max_p99_ms=None),
                Comparison(status, read, 0.0, half_max_p99_ms=None),
            ]
        else:
            max_id = int(run.fetchval("SELECT coalesce(max(id), 1) FROM bench_payments"))
            read = run.pgbench("read", clients, {"max_id": max_id})
            rows = [Comparison(init, write, INIT_TARGET), Comparison(status, read, STATUS_TARGET)]
        return run.finish(rows, clients, {})


if __name__ == "__main__":
    sys.exit(main())
