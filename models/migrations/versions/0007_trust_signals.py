"""trust signals: context quality, verdict confidence, calibrations

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("user_context", schema=None) as batch_op:
        batch_op.add_column(sa.Column("quality", sa.JSON(), nullable=True))
    with op.batch_alter_table("judgment", schema=None) as batch_op:
        batch_op.add_column(sa.Column("confidence", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("confidence_raw", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("calibration_version", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("confidence_signals", sa.JSON(), nullable=True))
        batch_op.create_index("ix_judgment_confidence", ["confidence"], unique=False)
    op.create_table(
        "calibration",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(length=200), nullable=False),
        sa.Column("backend", sa.String(length=32), nullable=False),
        sa.Column("model_id", sa.String(length=200), nullable=False),
        sa.Column("model_revision", sa.String(length=100), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("pairs", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("version"),
    )


def downgrade() -> None:
    op.drop_table("calibration")
    with op.batch_alter_table("judgment", schema=None) as batch_op:
        batch_op.drop_index("ix_judgment_confidence")
        batch_op.drop_column("confidence_signals")
        batch_op.drop_column("calibration_version")
        batch_op.drop_column("confidence_raw")
        batch_op.drop_column("confidence")
    with op.batch_alter_table("user_context", schema=None) as batch_op:
        batch_op.drop_column("quality")
