"""Audit checkpoints record the cadence they were signed under; tombstones of deleted or
erased sessions (issue 5, bug bash items 1 and 3).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``audit_checkpoints.every`` (NULL on checkpoints signed before this revision) and
    the ``session_tombstones`` table (additive only)."""
    with op.batch_alter_table("audit_checkpoints") as b:
        b.add_column(sa.Column("every", sa.Integer(), nullable=True))
    op.create_table(
        "session_tombstones",
        sa.Column("subject_id", sa.String(64), primary_key=True),
        sa.Column("session_key", sa.String(64), primary_key=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    """Drop what :func:`upgrade` added."""
    op.drop_table("session_tombstones")
    with op.batch_alter_table("audit_checkpoints") as b:
        b.drop_column("every")
