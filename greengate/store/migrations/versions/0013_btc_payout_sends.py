"""btc payout sends recorded before the node is called

Revision ID: 0013
Revises: 0012
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import greengate.store.types

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "btc_payout_sends",
        sa.Column("order_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("started_at", greengate.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", greengate.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["order_id"], ["exchange_orders.id"], name=op.f("fk_btc_payout_sends_order_id_exchange_orders")),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_btc_payout_sends")),
    )


def downgrade() -> None:
    op.drop_table("btc_payout_sends")
