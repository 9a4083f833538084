"""Blob objects of an erased person whose deletion failed, kept for a retry (issue 5 loose
end: erasure answers 200 even when the blob store is down; see
:meth:`demotrace.server.service.Collector.retry_pending_deletes`).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the ``pending_blob_deletes`` table (additive only)."""
    op.create_table(
        "pending_blob_deletes",
        sa.Column("stored_name", sa.String(128), primary_key=True),
        sa.Column("subject_id", sa.String(64), nullable=False),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(500), nullable=True),
    )


def downgrade() -> None:
    """Drop what :func:`upgrade` added."""
    op.drop_table("pending_blob_deletes")
