"""Policy versions, consent records per person, deleted-episode tombstones, and an index
for the bulk-read alert (issue 5 items 5 and 7).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Add the tables and the index of schema version 0002 (additive only)."""
    op.create_table(
        "policy_versions",
        sa.Column("version", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("toml_text", sa.Text(), nullable=False),
        sa.Column("notice", sa.Text(), nullable=False),
        sa.Column("notice_sha256", sa.String(64), nullable=False),
        sa.Column("is_current", sa.Boolean(), nullable=False),
        sa.Column("uploaded_by", sa.String(64), nullable=False),
        sa.Column("uploaded_at", TS, nullable=False),
    )
    op.create_table(
        "consent_records",
        sa.Column("subject_id", sa.String(64), primary_key=True),
        sa.Column("policy_version", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("accepted_utc", sa.String(40), primary_key=True),
        sa.Column("notice_sha256", sa.String(64), nullable=False),
        sa.Column("first_seen_at", TS, nullable=False),
    )
    op.create_table(
        "deleted_episodes",
        sa.Column("pk", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("subject_id", sa.String(64), nullable=False),
        sa.Column("bundle_id", sa.String(64), nullable=False),
        sa.Column("t_start_ns", sa.BigInteger(), nullable=False),
        sa.Column("t_end_ns", sa.BigInteger(), nullable=False),
        sa.Column("n_steps", sa.Integer(), nullable=False),
        sa.Column("deleted_at", TS, nullable=False),
    )
    op.create_index("ix_deleted_episodes_subject_id", "deleted_episodes", ["subject_id"])
    op.create_index("ix_audit_entries_actor_ts", "audit_entries", ["actor_id", "ts"])


def downgrade() -> None:
    """Drop what :func:`upgrade` added."""
    op.drop_index("ix_audit_entries_actor_ts", "audit_entries")
    op.drop_index("ix_deleted_episodes_subject_id", "deleted_episodes")
    op.drop_table("deleted_episodes")
    op.drop_table("consent_records")
    op.drop_table("policy_versions")
