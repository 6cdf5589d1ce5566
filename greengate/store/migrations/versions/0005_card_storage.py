"""saved cards

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import greengate.store.types

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TIME = greengate.store.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "saved_cards",
        sa.Column("id", _ID, nullable=False),
        sa.Column("merchant_id", _ID, nullable=False),
        sa.Column("user_id", sa.String(length=100), nullable=False),
        sa.Column("purpose", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("access_token", sa.String(length=64), nullable=False),
        sa.Column("payment_id", _ID, nullable=True),
        sa.Column("order_id", sa.String(length=50), nullable=True),
        sa.Column("post_link", sa.String(length=2000), nullable=True),
        sa.Column("back_link", sa.String(length=2000), nullable=True),
        sa.Column("request_method", sa.String(length=8), nullable=False),
        sa.Column("language", sa.String(length=4), nullable=False),
        sa.Column("testing", sa.Boolean(), nullable=False),
        sa.Column("pan_enc", sa.Text(), nullable=True),
        sa.Column("card_masked", sa.String(length=40), nullable=True),
        sa.Column("card_brand", sa.String(length=4), nullable=True),
        sa.Column("card_exp", sa.String(length=5), nullable=True),
        sa.Column("card_holder", sa.String(length=100), nullable=True),
        sa.Column("failure_code", sa.Integer(), nullable=True),
        sa.Column("failure_description", sa.Text(), nullable=True),
        sa.Column("expires_at", _TIME, nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.Column("verified_at", _TIME, nullable=True),
        sa.Column("deleted_at", _TIME, nullable=True),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_saved_cards_merchant_id_merchants")
        ),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["payments.id"], name=op.f("fk_saved_cards_payment_id_payments")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_saved_cards")),
        sa.UniqueConstraint("token", name=op.f("uq_saved_cards_token")),
        sa.UniqueConstraint("access_token", name=op.f("uq_saved_cards_access_token")),
    )
    with op.batch_alter_table("saved_cards", schema=None) as batch_op:
        batch_op.create_index("ix_saved_cards_merchant_id_user_id", ["merchant_id", "user_id"], unique=False)

    op.create_table(
        "saved_card_charges",
        sa.Column("payment_id", _ID, nullable=False),
        sa.Column("saved_card_id", _ID, nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["payments.id"], name=op.f("fk_saved_card_charges_payment_id_payments")
        ),
        sa.ForeignKeyConstraint(
            ["saved_card_id"],
            ["saved_cards.id"],
            name=op.f("fk_saved_card_charges_saved_card_id_saved_cards"),
        ),
        sa.PrimaryKeyConstraint("payment_id", name=op.f("pk_saved_card_charges")),
    )
    with op.batch_alter_table("saved_card_charges", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_saved_card_charges_saved_card_id"), ["saved_card_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("saved_card_charges", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_saved_card_charges_saved_card_id"))
    op.drop_table("saved_card_charges")
    with op.batch_alter_table("saved_cards", schema=None) as batch_op:
        batch_op.drop_index("ix_saved_cards_merchant_id_user_id")
    op.drop_table("saved_cards")
