"""Initial collector schema: persons, keys, credentials, enrollment codes, bundles, blobs,
datasets, access log.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create every table of schema version 0001."""
    op.create_table(
        "persons",
        sa.Column("subject_id", sa.String(64), primary_key=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("erased_at", TS, nullable=True),
    )
    op.create_table(
        "person_keys",
        sa.Column("subject_id", sa.String(64), primary_key=True),
        sa.Column("key_id", sa.String(32), nullable=False, unique=True),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "credentials",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("subject_id", sa.String(64), nullable=True),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
    )
    op.create_index("ix_credentials_subject_id", "credentials", ["subject_id"])
    op.create_table(
        "enrollment_codes",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("subject_id", sa.String(64), nullable=True),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("used_at", TS, nullable=True),
        sa.Column("credential_id", sa.String(32), nullable=True),
    )
    op.create_table(
        "bundles",
        sa.Column("pk", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("bundle_id", sa.String(64), nullable=False),
        sa.Column("subject_id", sa.String(64), nullable=False),
        sa.Column("device_id", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("platform", sa.String(64), nullable=False),
        sa.Column("manifest_ct", sa.LargeBinary(), nullable=False),
        sa.Column("n_blobs", sa.Integer(), nullable=False),
        sa.Column("total_bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("committed_at", TS, nullable=True),
        sa.UniqueConstraint("subject_id", "bundle_id", name="uq_bundle_subject"),
    )
    op.create_index("ix_bundles_bundle_id", "bundles", ["bundle_id"])
    op.create_index("ix_bundles_subject_id", "bundles", ["subject_id"])
    op.create_table(
        "blobs",
        sa.Column("pk", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("subject_id", sa.String(64), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("stored_name", sa.String(200), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("subject_id", "sha256", name="uq_blob_subject"),
    )
    op.create_index("ix_blobs_subject_id", "blobs", ["subject_id"])
    op.create_table(
        "bundle_blobs",
        sa.Column("bundle_pk", sa.Integer(), sa.ForeignKey("bundles.pk", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("path", sa.String(500), nullable=False),
    )
    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("created_by", sa.String(32), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("needs_rebuild", sa.Boolean(), nullable=False),
        sa.Column("rebuild_reason", sa.Text(), nullable=True),
    )
    op.create_table(
        "dataset_members",
        sa.Column("dataset_id", sa.Integer(), sa.ForeignKey("datasets.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("subject_id", sa.String(64), primary_key=True),
        sa.Column("bundle_id", sa.String(64), primary_key=True),
    )
    op.create_table(
        "audit_entries",
        sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("ts", sa.String(40), nullable=False),
        sa.Column("actor_role", sa.String(16), nullable=False),
        sa.Column("actor_id", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("subject_id", sa.String(64), nullable=True),
        sa.Column("resource", sa.String(500), nullable=False),
        sa.Column("purpose", sa.String(64), nullable=True),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("entry_hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_audit_entries_subject_id", "audit_entries", ["subject_id"])
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("entry_hash", sa.String(64), nullable=False),
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("entry_hash", sa.String(64), nullable=False),
        sa.Column("ts", sa.String(40), nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
    )


def downgrade() -> None:
    """Drop every table (development only: destroys all collector data)."""
    for name in ("audit_checkpoints", "audit_head", "audit_entries", "dataset_members",
                 "datasets", "bundle_blobs", "blobs", "bundles", "enrollment_codes",
                 "credentials", "person_keys", "persons"):
        op.drop_table(name)
