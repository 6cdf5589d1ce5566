"""payouts to cards

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import greengate.store.types

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "payouts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("merchant_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("order_id", sa.String(length=50), nullable=False),
        sa.Column("user_id", sa.String(length=100), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=8), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("testing", sa.Boolean(), nullable=False),
        sa.Column("language", sa.String(length=4), nullable=False),
        sa.Column("request_method", sa.String(length=8), nullable=False),
        sa.Column("post_link", sa.String(length=2000), nullable=True),
        sa.Column("back_link", sa.String(length=2000), nullable=True),
        sa.Column("access_token", sa.String(length=64), nullable=False),
        sa.Column("saved_card_id", sa.BigInteger(), nullable=True),
        sa.Column("card_enc", sa.Text(), nullable=True),
        sa.Column("card_masked", sa.String(length=40), nullable=True),
        sa.Column("card_brand", sa.String(length=4), nullable=True),
        sa.Column("acquirer", sa.String(length=40), nullable=True),
        sa.Column("auth_code", sa.String(length=12), nullable=True),
        sa.Column("rrn", sa.String(length=20), nullable=True),
        sa.Column("failure_code", sa.Integer(), nullable=True),
        sa.Column("failure_description", sa.Text(), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("first_answer", sa.Text(), nullable=False),
        sa.Column("extra_params", sa.Text(), nullable=False),
        sa.Column("expires_at", greengate.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", greengate.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", greengate.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("paid_at", greengate.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_payouts_merchant_id_merchants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payouts")),
        sa.UniqueConstraint("access_token", name=op.f("uq_payouts_access_token")),
        sa.UniqueConstraint("merchant_id", "order_id", name="uq_payouts_merchant_order"),
    )
    with op.batch_alter_table("payouts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_payouts_status"), ["status"], unique=False)

    op.create_table(
        "payout_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("payout_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("from_status", sa.String(length=16), nullable=True),
        sa.Column("to_status", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("at", greengate.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["payout_id"], ["payouts.id"], name=op.f("fk_payout_events_payout_id_payouts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payout_events")),
    )
    with op.batch_alter_table("payout_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_payout_events_payout_id"), ["payout_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("payout_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payout_events_payout_id"))

    op.drop_table("payout_events")
    with op.batch_alter_table("payouts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payouts_status"))

    op.drop_table("payouts")
