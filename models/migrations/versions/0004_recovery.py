"""recovery: claim heartbeats, waiting rows with backoff, the sweeper's state

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 18:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("judgment", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("claimed_by", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True)
        )
        batch_op.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("queue", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
        batch_op.add_column(sa.Column("queued_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("waiting_since", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("transient_failures", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "reconcile_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("holder", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("broker_epoch", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("sweeps", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("resent", sa.JSON(), nullable=False, server_default="{}"),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("reconcile_state")
    with op.batch_alter_table("judgment", schema=None) as batch_op:
        batch_op.drop_column("transient_failures")
        batch_op.drop_column("waiting_since")
        batch_op.drop_column("retry_at")
        batch_op.drop_column("queued_at")
        batch_op.drop_column("queue")
        batch_op.drop_column("heartbeat_at")
        batch_op.drop_column("claimed_by")
