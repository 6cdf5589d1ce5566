"""delivery attempts logged before they are sent; outbox indexes for ordered delivery and pruning

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import greengate.store.types

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("delivery_attempts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("finished_at", greengate.store.types.UTCDateTime(timezone=True), nullable=True)
        )
    # Every attempt logged so far was logged once it had ended.
    op.execute("UPDATE delivery_attempts SET finished_at = started_at")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index(
            "ix_outbox_pending_aggregate",
            ["aggregate"],
            unique=False,
            sqlite_where=sa.text("status = 'pending'"),
            postgresql_where=sa.text("status = 'pending'"),
        )
        batch_op.create_index(
            "ix_outbox_done_finished",
            ["finished_at"],
            unique=False,
            sqlite_where=sa.text("status = 'done'"),
            postgresql_where=sa.text("status = 'done'"),
        )


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_outbox_pending_aggregate",
            sqlite_where=sa.text("status = 'pending'"),
            postgresql_where=sa.text("status = 'pending'"),
        )
        batch_op.drop_index(
            "ix_outbox_done_finished",
            sqlite_where=sa.text("status = 'done'"),
            postgresql_where=sa.text("status = 'done'"),
        )
    with op.batch_alter_table("delivery_attempts", schema=None) as batch_op:
        batch_op.drop_column("finished_at")
