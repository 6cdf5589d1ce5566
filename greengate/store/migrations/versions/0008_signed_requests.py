"""replayed signed requests get their first answer; salts are no longer tracked

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import greengate.store.types

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "signed_requests",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("merchant_id", sa.BigInteger(), nullable=False),
        sa.Column("script", sa.String(length=100), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("created_at", greengate.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signed_requests")),
        sa.UniqueConstraint(
            "merchant_id", "script", "digest", name=op.f("uq_signed_requests_merchant_id_script_digest")
        ),
    )
    op.drop_table("merchant_salts")


def downgrade() -> None:
    op.create_table(
        "merchant_salts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("merchant_id", sa.BigInteger(), nullable=False),
        sa.Column("salt", sa.String(length=100), nullable=False),
        sa.Column("seen_at", greengate.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_merchant_salts")),
        sa.UniqueConstraint("merchant_id", "salt", name=op.f("uq_merchant_salts_merchant_id")),
    )
    with op.batch_alter_table("merchant_salts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_merchant_salts_seen_at"), ["seen_at"], unique=False)
    op.drop_table("signed_requests")
