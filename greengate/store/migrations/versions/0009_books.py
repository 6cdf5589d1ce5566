"""test and live books, exact account sums, merchant amount caps

Every ledger account gets a book. Entries posted for test payments and test payouts move to the
test book's accounts; everything else stays live. Each account's cached sums are then recomputed
from its entries and stored as two BIGINT halves (hi * 2**62 + lo), which also repairs sums that
had already left 64-bit integers.

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import greengate.store.types

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BASE = 2**62
SPLIT = 2**31  # summing entries in two parts keeps SQLite's SUM() inside 64 bits


def _exact_sums(conn: sa.Connection) -> dict[int, tuple[int, int]]:
    rows = conn.execute(
        sa.text(
            "SELECT account_id, SUM(debit / :s), SUM(debit % :s), SUM(credit / :s), SUM(credit % :s)"
            " FROM ledger_entries GROUP BY account_id"
        ),
        {"s": SPLIT},
    )
    return {
        int(acc): (int(dh) * SPLIT + int(dl), int(ch) * SPLIT + int(cl)) for acc, dh, dl, ch, cl in rows
    }


def _store_sums(conn: sa.Connection) -> None:
    sums = _exact_sums(conn)
    for (acc_id,) in conn.execute(sa.text("SELECT id FROM ledger_accounts")).all():
        debits, credits = sums.get(int(acc_id), (0, 0))
        conn.execute(
            sa.text(
                "UPDATE ledger_accounts SET debits_posted = :dl, debits_posted_hi = :dh,"
                " credits_posted = :cl, credits_posted_hi = :ch WHERE id = :id"
            ),
            {
                "id": acc_id,
                "dl": debits % BASE,
                "dh": debits // BASE,
                "cl": credits % BASE,
                "ch": credits // BASE,
            },
        )


def _test_transactions(conn: sa.Connection) -> list[int]:
    test_payments = {
        str(i) for (i,) in conn.execute(sa.text("SELECT id FROM payments WHERE testing = :t"), {"t": True})
    }
    test_payouts = {
        str(i) for (i,) in conn.execute(sa.text("SELECT id FROM payouts WHERE testing = :t"), {"t": True})
    }
    out = []
    rows = conn.execute(sa.text("SELECT id, object_type, object_id FROM ledger_transactions"))
    for tx_id, object_type, object_id in rows:
        if object_type in ("payment", "payment_refund"):
            testing = object_id.split(":", 1)[0] in test_payments
        elif object_type == "payout":
            testing = object_id in test_payouts
        else:
            testing = False
        if testing:
            out.append(int(tx_id))
    return out


def _move_test_entries(conn: sa.Connection) -> None:
    tx_ids = _test_transactions(conn)
    if not tx_ids:
        return
    now = conn.execute(sa.text("SELECT CURRENT_TIMESTAMP")).scalar()
    for start in range(0, len(tx_ids), 500):
        chunk = tx_ids[start : start + 500]
        accounts = conn.execute(
            sa.text(
                "SELECT DISTINCT a.id, a.owner, a.kind, a.currency FROM ledger_entries e"
                " JOIN ledger_accounts a ON a.id = e.account_id"
                " WHERE a.book = 'live' AND e.transaction_id IN :ids"
            ).bindparams(sa.bindparam("ids", expanding=True)),
            {"ids": chunk},
        ).all()
        for live_id, owner, kind, currency in accounts:
            key = {"o": owner, "k": kind, "c": currency}
            test_id = conn.execute(
                sa.text(
                    "SELECT id FROM ledger_accounts"
                    " WHERE owner = :o AND kind = :k AND currency = :c AND book = 'test'"
                ),
                key,
            ).scalar()
            if test_id is None:
                conn.execute(
                    sa.text(
                        "INSERT INTO ledger_accounts (owner, kind, currency, book, debits_posted,"
                        " credits_posted, debits_posted_hi, credits_posted_hi, debits_pending,"
                        " credits_pending, version, created_at, updated_at)"
                        " VALUES (:o, :k, :c, 'test', 0, 0, 0, 0, 0, 0, 1, :now, :now)"
                    ),
                    {**key, "now": now},
                )
                test_id = conn.execute(
                    sa.text(
                        "SELECT id FROM ledger_accounts"
                        " WHERE owner = :o AND kind = :k AND currency = :c AND book = 'test'"
                    ),
                    key,
                ).scalar()
            conn.execute(
                sa.text(
                    "UPDATE ledger_entries SET account_id = :test"
                    " WHERE account_id = :live AND transaction_id IN :ids"
                ).bindparams(sa.bindparam("ids", expanding=True)),
                {"test": test_id, "live": live_id, "ids": chunk},
            )


def upgrade() -> None:
    op.create_table(
        "merchant_amount_caps",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("merchant_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("currency", sa.String(length=8), nullable=False),
        sa.Column("max_amount", sa.BigInteger(), nullable=False),
        sa.Column("created_at", greengate.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", greengate.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_merchant_amount_caps_merchant_id_merchants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_merchant_amount_caps")),
        sa.UniqueConstraint("merchant_id", "currency", name=op.f("uq_merchant_amount_caps_merchant_id")),
    )
    with op.batch_alter_table("ledger_accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("book", sa.String(length=8), server_default="live", nullable=False))
        batch_op.add_column(
            sa.Column("debits_posted_hi", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("credits_posted_hi", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch_op.drop_constraint("uq_ledger_accounts_owner", type_="unique")
        batch_op.create_unique_constraint("uq_ledger_accounts_key", ["owner", "kind", "currency", "book"])
    conn = op.get_bind()
    _move_test_entries(conn)
    _store_sums(conn)


def downgrade() -> None:
    conn = op.get_bind()
    pairs = conn.execute(
        sa.text(
            "SELECT t.id, l.id FROM ledger_accounts t JOIN ledger_accounts l"
            " ON l.owner = t.owner AND l.kind = t.kind AND l.currency = t.currency AND l.book = 'live'"
            " WHERE t.book = 'test'"
        )
    ).all()
    for test_id, live_id in pairs:
        conn.execute(
            sa.text("UPDATE ledger_entries SET account_id = :live WHERE account_id = :test"),
            {"live": live_id, "test": test_id},
        )
    conn.execute(sa.text("UPDATE ledger_accounts SET book = 'live' WHERE book = 'test' AND id NOT IN :ids")
                 .bindparams(sa.bindparam("ids", expanding=True)), {"ids": [t for t, _ in pairs] or [0]})
    conn.execute(
        sa.text("DELETE FROM ledger_accounts WHERE book = 'test'"),
    )
    sums = _exact_sums(conn)
    for acc_id, (debits, credits) in sums.items():
        conn.execute(
            sa.text("UPDATE ledger_accounts SET debits_posted = :d, credits_posted = :c WHERE id = :id"),
            {"id": acc_id, "d": min(debits, 2**63 - 1), "c": min(credits, 2**63 - 1)},
        )
    with op.batch_alter_table("ledger_accounts", schema=None) as batch_op:
        batch_op.drop_constraint("uq_ledger_accounts_key", type_="unique")
        batch_op.create_unique_constraint("uq_ledger_accounts_owner", ["owner", "kind", "currency"])
        batch_op.drop_column("credits_posted_hi")
        batch_op.drop_column("debits_posted_hi")
        batch_op.drop_column("book")
    op.drop_table("merchant_amount_caps")
