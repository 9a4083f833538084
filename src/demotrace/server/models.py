"""SQLAlchemy 2 models of the collector's metadata database (SQLite or PostgreSQL).

No table holds a person's identity in clear: persons are known by ``subject_id`` =
HMAC-SHA256(pseudonym secret, identity) (see :mod:`.keys`). Bundle manifests are stored
encrypted under the person's data key; blob bytes live in the blob store, encrypted likewise.

The schema is created and upgraded only by the Alembic migrations in ``migrations/``
(``0001_initial``, ``0002_policies_consent_episodes``,
``0003_audit_cadence_session_tombstones``, ``0004_pending_blob_deletes`` and
``0005_device_last_upload_portal_sessions`` mirror these classes); tests check the two agree.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ROLES = ("device", "person", "curator", "admin", "auditor")
"""Every credential role (DESIGN.md §8.8). ``device`` may only upload for its person."""


class Base(DeclarativeBase):
    """Declarative base of the collector models."""


class Person(Base):
    """A person known only by pseudonym. ``erased_at`` is set by erasure (the row stays so that
    the person's audit entries keep a referent; nothing else about them remains)."""

    __tablename__ = "persons"
    subject_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    erased_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class PersonKey(Base):
    """A person's data key wrapped by the master key (``wrapped`` = KeyManager output).
    Deleting the row is crypto-shredding. ``key_id``: random public id of the key (names the
    key in blob names; unlinkable to the subject once the row is gone)."""

    __tablename__ = "person_keys"
    subject_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32), unique=True)
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Credential(Base):
    """A bearer credential ``dtc_<id>_<secret>``; only SHA-256(secret) is stored.

    ``last_upload_day``: for a device credential, the UTC **day** of its latest commit, written
    at commit time and never recomputed from bundles, so a person deleting or erasing their
    sessions changes nothing an admin's fleet view shows (issue 5 bug bash: the derived value
    leaked deletions). ``NULL``: no commit yet (or not a device)."""

    __tablename__ = "credentials"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    subject_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    label: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_upload_day: Mapped[date | None] = mapped_column(Date, nullable=True)


class PortalSession(Base):
    """A portal sign-in session (cookie ``dt_portal`` = ``dts_<id>_<secret>``; see
    :mod:`.auth`): only SHA-256(secret) is stored. It acts as ``credential_id`` (the credential
    the person signed in with, or the one a one-time code was exchanged for) until
    ``expires_at``; ``revoked_at`` is set on logout and when the credential is revoked (a
    revoked credential also refuses its sessions on every lookup)."""

    __tablename__ = "portal_sessions"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    credential_id: Mapped[str] = mapped_column(String(32), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class EnrollmentCode(Base):
    """A one-time code ``dte_<id>_<secret>`` that an admin hands out; exchanging it yields a
    credential of ``role`` (bound to ``subject_id`` for device/person)."""

    __tablename__ = "enrollment_codes"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    subject_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    credential_id: Mapped[str | None] = mapped_column(String(32), nullable=True)


class Bundle(Base):
    """One uploaded bundle of one person. ``bundle_id`` = sha256 of the canonical manifest;
    unique per person, so the same bundle uploaded twice is stored once. ``state``: "open"
    until every blob arrived and the client committed, then "committed"."""

    __tablename__ = "bundles"
    __table_args__ = (UniqueConstraint("subject_id", "bundle_id", name="uq_bundle_subject"),)
    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    bundle_id: Mapped[str] = mapped_column(String(64), index=True)
    subject_id: Mapped[str] = mapped_column(String(64), index=True)
    device_id: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16), default="open")
    platform: Mapped[str] = mapped_column(String(64), default="")
    manifest_ct: Mapped[bytes] = mapped_column(LargeBinary)
    n_blobs: Mapped[int] = mapped_column(Integer)
    total_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    committed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Blob(Base):
    """A blob of one person, stored once however many bundles name it. ``stored_name`` is the
    blob-store object name (keyed by the person's data key, see :mod:`.keys`)."""

    __tablename__ = "blobs"
    __table_args__ = (UniqueConstraint("subject_id", "sha256", name="uq_blob_subject"),)
    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subject_id: Mapped[str] = mapped_column(String(64), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    stored_name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class BundleBlob(Base):
    """Membership of a blob (by sha256) in a bundle, with the role the manifest gave it."""

    __tablename__ = "bundle_blobs"
    bundle_pk: Mapped[int] = mapped_column(
        ForeignKey("bundles.pk", ondelete="CASCADE"), primary_key=True
    )
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    path: Mapped[str] = mapped_column(String(500), default="")


class Dataset(Base):
    """A derived dataset built from bundles (registered by a curator). Erasure of any member
    sets ``needs_rebuild`` with the reason."""

    __tablename__ = "datasets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_by: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    needs_rebuild: Mapped[bool] = mapped_column(Boolean, default=False)
    rebuild_reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class DatasetMember(Base):
    """A bundle of one subject that went into a dataset."""

    __tablename__ = "dataset_members"
    dataset_id: Mapped[int] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True
    )
    subject_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    bundle_id: Mapped[str] = mapped_column(String(64), primary_key=True)


class AuditEntry(Base):
    """One access-log entry; ``entry_hash`` = SHA-256 over ``prev_hash`` and the canonical
    JSON of the other fields (see :mod:`.audit`). Never updated or deleted by the service.
    Index ``(actor_id, ts)``: the bulk-read alert counts one curator's recent reads."""

    __tablename__ = "audit_entries"
    __table_args__ = (Index("ix_audit_entries_actor_ts", "actor_id", "ts"),)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    ts: Mapped[str] = mapped_column(String(40))
    actor_role: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    subject_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    resource: Mapped[str] = mapped_column(String(500))
    purpose: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[int] = mapped_column(Integer)
    prev_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """Single row (id 1): the newest entry's ``seq`` and hash; locked to append in order."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    entry_hash: Mapped[str] = mapped_column(String(64))


class AuditCheckpoint(Base):
    """An Ed25519 signature over (``seq``, ``entry_hash``, ``ts``, ``every``) of the entry at
    ``seq``. ``every``: the checkpoint cadence (entries) in force when it was signed, covered
    by the signature; ``NULL`` on checkpoints signed before migration 0003 (message v1)."""

    __tablename__ = "audit_checkpoints"
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    entry_hash: Mapped[str] = mapped_column(String(64))
    ts: Mapped[str] = mapped_column(String(40))
    key_id: Mapped[str] = mapped_column(String(16))
    signature: Mapped[str] = mapped_column(String(128))
    every: Mapped[int | None] = mapped_column(Integer, nullable=True)


class SessionTombstone(Base):
    """A session its person deleted (portal) or erased: no content, only ``session_key`` =
    hex HMAC-SHA256 under the pseudonym secret of ``"session-tombstone\\0" + subject_id +
    "\\0" + session_id`` (see :meth:`.keys.Pseudonymiser.session_key`), so a device that
    re-uploads the same session is refused (409) while the table alone does not reveal which
    session it was. Kept on erasure (the subject id is already a pseudonym)."""

    __tablename__ = "session_tombstones"
    subject_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    deleted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PendingBlobDelete(Base):
    """A blob object of an ERASED person still to be deleted from the blob store (the outbox of
    :meth:`.service.Collector.erase`): queued in the erasure's transaction, removed once the
    object is deleted; a failed delete keeps it (``attempts``, ``last_error``: the store's
    message, no content) for :meth:`.service.Collector.retry_pending_deletes` (start-up and
    every erasure). Harmless while it waits: the person's key is already destroyed, so the
    object cannot be decrypted. ``stored_name``: the object's name in the blob store (keyed by
    the destroyed key, so no later upload reuses it)."""

    __tablename__ = "pending_blob_deletes"
    stored_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    subject_id: Mapped[str] = mapped_column(String(64))
    queued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(500), nullable=True)


class PolicyVersion(Base):
    """A capture-policy version an admin uploaded (the TOML of
    :class:`demotrace.privacy.policy.Policy`). Versions are immutable once stored; exactly one
    row has ``is_current`` (the one devices fetch). ``notice_sha256``: hex SHA-256 of the
    stripped notice text (:func:`demotrace.privacy.policy.notice_digest`), what a device's
    consent record names. ``uploaded_by``: the admin credential id (or ``"built-in"``)."""

    __tablename__ = "policy_versions"
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    toml_text: Mapped[str] = mapped_column(Text)
    notice: Mapped[str] = mapped_column(Text)
    notice_sha256: Mapped[str] = mapped_column(String(64))
    is_current: Mapped[bool] = mapped_column(Boolean, default=False)
    uploaded_by: Mapped[str] = mapped_column(String(64))
    uploaded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ConsentRecord(Base):
    """A consent record as carried by a person's sealed bundles (made on the device by
    ``demotrace enroll``; :class:`demotrace.privacy.consent.ConsentRecord`): ``policy_version``,
    ``notice_sha256``, ``accepted_utc`` (ISO-8601 UTC, as written on the device).
    ``first_seen_at``: when the first bundle carrying it arrived. Deleted on erasure."""

    __tablename__ = "consent_records"
    subject_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    policy_version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    accepted_utc: Mapped[str] = mapped_column(String(40), primary_key=True)
    notice_sha256: Mapped[str] = mapped_column(String(64))
    first_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DeletedEpisode(Base):
    """Tombstone of an episode its person deleted: the episode's events and frames were
    removed from the bundle (see :mod:`.episodes`); this row keeps only the span, so the
    portal can say what was deleted. ``t_start_ns`` / ``t_end_ns``: session-relative
    nanoseconds. Deleted with the bundle and on erasure."""

    __tablename__ = "deleted_episodes"
    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subject_id: Mapped[str] = mapped_column(String(64), index=True)
    bundle_id: Mapped[str] = mapped_column(String(64))
    t_start_ns: Mapped[int] = mapped_column(BigInteger)
    t_end_ns: Mapped[int] = mapped_column(BigInteger)
    n_steps: Mapped[int] = mapped_column(Integer)
    deleted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
