"""Device last-upload day on the credential row and portal sign-in sessions (issue 5 bug bash:
fleet health leaked a person's deletions; the portal cookie was the raw credential).

- ``credentials.last_upload_day`` (DATE, nullable): the UTC day of the device's latest commit,
  written at commit time. Back-filled once here from the bundles committed so far (what the
  fleet view showed before this revision); from now on it is never recomputed.
- ``portal_sessions``: hashed portal session tokens with expiry and revocation.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _day(t: object) -> date | None:
    if t is None:
        return None
    if isinstance(t, str):  # SQLite without type affinity hands back text
        t = datetime.fromisoformat(t)
    assert isinstance(t, datetime)
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).astimezone(UTC).date()


def upgrade() -> None:
    """Add the column (back-filled) and the table (additive only)."""
    with op.batch_alter_table("credentials") as b:
        b.add_column(sa.Column("last_upload_day", sa.Date(), nullable=True))
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT device_id, MAX(committed_at) FROM bundles "
                                "WHERE state = 'committed' GROUP BY device_id")).all()
    for device_id, last in rows:
        bind.execute(sa.text("UPDATE credentials SET last_upload_day = :d WHERE id = :i"),
                     {"d": _day(last), "i": device_id})
    op.create_table(
        "portal_sessions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("credential_id", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_portal_sessions_credential_id", "portal_sessions", ["credential_id"])


def downgrade() -> None:
    """Drop what :func:`upgrade` added."""
    op.drop_index("ix_portal_sessions_credential_id", "portal_sessions")
    op.drop_table("portal_sessions")
    with op.batch_alter_table("credentials") as b:
        b.drop_column("last_upload_day")
