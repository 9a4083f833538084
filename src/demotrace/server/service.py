"""The collector's operations, independent of HTTP: ingest (manifest → missing blobs → blob →
commit), reads, deletion, export, erasure, datasets and k-anonymous aggregates.

Every blob and manifest is encrypted under its person's data key before it is stored
(AES-256-GCM, associated data binds it to subject and sha256 / bundle id). Erasure
(:meth:`Collector.erase`) destroys the key first, in the same transaction that deletes the rows
and marks derived datasets, then deletes the blob objects: whatever copy of an object survives
(a backup, a failed delete) can no longer be decrypted.

Failed blob deletes during erasure do not fail the erasure: the objects to delete are queued in
``pending_blob_deletes`` (:class:`~.models.PendingBlobDelete`) in the erasure's own
transaction, each is removed from the queue once deleted, and what the store refused stays
queued, is reported in the answer (``blob_deletes_pending`` and a ``note``) and in the access
log (action ``erase.blob_delete_pending``, actor role ``system``), and is retried by
:meth:`Collector.retry_pending_deletes` at start-up and at every erasure.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError as SAIntegrityError
from sqlalchemy.orm import Session

from ..errors import DecryptionError
from . import policies
from .audit import Access, AuditLog, Signer, export_document
from .auth import CredentialCache, revoke
from .blobs import BlobStore, open_blob_store
from .config import ServerConfig
from .db import Database
from .ingest_sql import BundleRef, IngestSql
from .errors import (
    BlobStoreError,
    ConflictError,
    IntegrityError,
    KeyDestroyed,
    NotFound,
)
from .keys import DataCipher, Keyring, LocalKeyManager, Pseudonymiser
from .models import (
    AuditEntry,
    Blob,
    Bundle,
    BundleBlob,
    ConsentRecord,
    Credential,
    Dataset,
    DatasetMember,
    DeletedEpisode,
    PendingBlobDelete,
    Person,
    SessionTombstone,
)
from .wire import BundleManifest, parse_manifest

log = logging.getLogger(__name__)

#: Consecutive failed blob deletes after which an erasure (or retry sweep) stops trying and
#: leaves the rest queued: an unreachable store then costs a few client retry rounds, not one
#: per object (the S3 client's own retries come first, see :class:`.blobs.S3BlobStore`).
DELETE_GIVE_UP_AFTER = 3
#: Open (unfinished) uploads one device may have at a time; registering another bundle beyond
#: it is refused (409). A device resumes an interrupted upload of the same bundle (found again,
#: not counted twice) and uploads one bundle after another, so only a broken or hostile client
#: comes near it: the bound keeps such a client from filling the server with half uploads.
MAX_OPEN_UPLOADS_PER_DEVICE = 100
#: An upload still unfinished this long after it began is removed at the next start-up
#: (:meth:`Collector.expire_open_uploads`): 7 days, the device's default raw-data retention
#: (docs/privacy.md) — a device that has not finished by then is not coming back for it.
OPEN_UPLOAD_TTL = timedelta(days=7)

def _manifest_aad(subject_id: str, bundle_id: str) -> bytes:
    return f"manifest:{subject_id}:{bundle_id}".encode()


def _blob_aad(subject_id: str, sha256: str) -> bytes:
    return f"blob:{subject_id}:{sha256}".encode()


@dataclass(frozen=True)
class BeginResult:
    """Answer to a manifest: the ``bundle_id``, its ``state`` ("open"/"committed") and the
    sha256 of every blob the server still lacks (in manifest order)."""

    bundle_id: str
    state: str
    missing: list[str]


class Collector:
    """Everything the routes need: config, database, blob store, keys, pseudonyms, audit log."""

    def __init__(self, config: ServerConfig, *, db: Database | None = None,
                 blobs: BlobStore | None = None, sweep_pending: bool = True) -> None:
        """``sweep_pending``: expire stale unfinished uploads (:meth:`expire_open_uploads`),
        retry queued blob deletes (:meth:`retry_pending_deletes`) and remove partial blob files
        of killed writers (:meth:`BlobStore.sweep_temporaries`) now; ``demotrace server
        --workers N`` sweeps once in the parent and passes ``False`` in every worker."""
        config.ensure_dirs()
        self.config = config
        self.db = db or Database(config.db_url)
        self.blobs = blobs or open_blob_store(config.blobs_url,
                                              s3_endpoint_url=config.s3_endpoint_url)
        self.sql = IngestSql(self.db.dialect)
        self.keyring = Keyring(LocalKeyManager.from_file(config.master_key_path, create=True))
        self.pseudonyms = Pseudonymiser.from_file(config.pseudonym_key_path, create=True)
        self.signer = Signer.from_file(config.audit_key_path, create=True)
        self.audit = AuditLog(self.signer, config.checkpoint_every)
        self.auth_cache = CredentialCache()
        with self.db.session() as s:
            AuditLog.ensure_head(s)
            policies.ensure_builtin(s)
        if sweep_pending:
            self.expire_open_uploads()
            self.retry_pending_deletes()
            left = self.blobs.sweep_temporaries()
            if left:
                log.warning("removed %d partial blob file(s) left by a killed writer (older than 10 min)", left)

    def close(self) -> None:
        """Release database connections."""
        self.db.dispose()

    # -- ingest -----------------------------------------------------------------------------
    # Durability rule of the ingest path: a ``blobs`` row is inserted only after its object is
    # durable in the blob store (``BlobStore.put_many``: written, fsynced, renamed, folder fsynced),
    # so the row may be committed asynchronously; the bundle commit is the one synchronous
    # PostgreSQL commit, and since the WAL is sequential it also makes every earlier
    # asynchronous commit durable. The commit's access-log entry is appended in that same
    # transaction: one WAL flush per bundle, and no acknowledged commit without its entry.
    def begin(self, subject_id: str, device_id: str, manifest: BundleManifest) -> BeginResult:
        """Register a bundle (or find it again) and list the blobs still missing. Idempotent:
        a committed bundle answers ``state="committed"`` with nothing missing.

        Raises:
            IntegrityError / ConflictError: as :meth:`_check_new_bundle`; ConflictError also
                when three concurrent registrations of the same bundle kept colliding, or
                when the device already has :data:`MAX_OPEN_UPLOADS_PER_DEVICE` open bundles.
        """
        bid = manifest.bundle_id
        q = self.sql
        for _attempt in range(3):
            try:
                with self.db.session() as s:
                    conn = s.connection()
                    b = q.bundle(conn, subject_id, bid)
                    if b is not None and b.state == "committed":
                        return BeginResult(bid, "committed", [])
                    if b is not None:
                        return BeginResult(bid, b.state, q.missing(conn, subject_id, b.pk))
                    stored = self._check_new_bundle(s, subject_id, manifest)
                    if q.open_uploads(conn, subject_id, device_id) >= MAX_OPEN_UPLOADS_PER_DEVICE:
                        raise ConflictError(
                            f"device {device_id} has {MAX_OPEN_UPLOADS_PER_DEVICE} unfinished "
                            "uploads: finish them (`demotrace upload` resumes each) before "
                            "starting another; unfinished uploads are removed "
                            f"{OPEN_UPLOAD_TTL.days} days after they began")
                    policies.check_consent(s, manifest.meta, subject_id)
                    q.async_commit(conn)
                    cipher = self.keyring.get(s, subject_id, create=True)
                    pk = q.insert_bundle(
                        conn, subject_id=subject_id, bundle_id=bid, device_id=device_id,
                        platform=manifest.platform[:64],
                        manifest_ct=cipher.encrypt(manifest.canonical(), _manifest_aad(subject_id, bid)),
                        n_blobs=len(manifest.blobs), total_bytes=manifest.total_bytes,
                        now=datetime.now(UTC))
                    q.insert_members(conn, pk, ((r.sha256, r.size, r.path) for r in manifest.blobs))
                    return BeginResult(bid, "open", [r.sha256 for r in manifest.blobs
                                                     if r.sha256 not in stored])
            except SAIntegrityError:
                continue  # a concurrent begin of the same bundle won; read its row
        raise ConflictError(f"bundle {bid} is being registered concurrently; retry")

    def _check_new_bundle(self, s: Session, subject_id: str, manifest: BundleManifest) -> set[str]:
        """Refuse a new bundle without its required parts, whose declared blob sizes contradict
        blobs already stored for this person, or of a session the person deleted or erased;
        return the sha256 of its blobs the person already stored (not to be sent again).

        Raises:
            IntegrityError (422): no ``session_id``, no blob, a ``sealed-session`` bundle
                (:mod:`.wire` layout 1) without ``session.json`` or any ``events/`` batch, or a
                declared size differs from the stored blob with that sha256 (``total_bytes``
                would be false).
            ConflictError (409): a tombstone names this session (:class:`.models.SessionTombstone`).
        """
        if not (manifest.session_id or "").strip():
            raise IntegrityError("bundle manifest has no session_id: a bundle must name the "
                                 "recording session it was sealed from")
        if not manifest.blobs:
            raise IntegrityError("bundle manifest lists no blobs: a bundle must carry its "
                                 "session's parts (session manifest, event batches, frames)")
        if manifest.meta.get("kind") == "sealed-session":
            paths = [r.path for r in manifest.blobs]
            lacking = [what for what, ok in (
                ("the session manifest (session.json)", "session.json" in paths),
                ("event batches (events/…)", any(p.startswith("events/") for p in paths)))
                if not ok]
            if lacking:
                raise IntegrityError(f"sealed-session bundle of session {manifest.session_id[:64]} "
                                     f"lacks {' and '.join(lacking)}")
        conn = s.connection()
        key = self.pseudonyms.session_key(subject_id, manifest.session_id)
        if self.sql.tombstoned(conn, subject_id, key):
            raise ConflictError(f"session {manifest.session_id[:64]} was deleted by its person "
                                "(portal deletion or erasure); the collector will not store it "
                                "again")
        declared = {r.sha256: r.size for r in manifest.blobs}
        stored = self.sql.stored_sizes(conn, subject_id, list(declared))
        for h, size in stored.items():
            if declared[h] != size:
                raise IntegrityError(f"bundle manifest: blob {h} declares {declared[h]} "
                                     f"bytes, but the stored blob with this sha256 has "
                                     f"{size} bytes")
        return set(stored)

    def _tombstone(self, s: Session, subject_id: str, session_ids: set[str]) -> None:
        """Record (keyed hashes of) deleted sessions so they cannot be uploaded again."""
        now = datetime.now(UTC)
        for sid in session_ids:
            key = self.pseudonyms.session_key(subject_id, sid)
            if s.get(SessionTombstone, (subject_id, key)) is None:
                s.add(SessionTombstone(subject_id=subject_id, session_key=key, deleted_at=now))

    def _session_ids(self, s: Session, bundles: list[Any]) -> set[str]:
        """Session ids named by these bundles' manifests (decrypted; the key must exist)."""
        out: set[str] = set()
        for b in bundles:
            try:
                m = json.loads(self._cipher(s, b.subject_id).decrypt(
                    b.manifest_ct, _manifest_aad(b.subject_id, b.bundle_id)))
            except KeyDestroyed:
                continue
            except DecryptionError:
                # a manifest that does not authenticate must not block a deletion or an
                # erasure (bug bash 3); its session just gets no tombstone
                log.warning("bundle %s: manifest does not decrypt; its session is not "
                            "tombstoned", b.bundle_id)
                continue
            if m.get("session_id"):
                out.add(str(m["session_id"]))
        return out

    def _bundle(self, s: Session, subject_id: str, bundle_id: str, *, must: bool = True) -> Any:
        b = s.scalars(select(Bundle).where(Bundle.subject_id == subject_id,
                                           Bundle.bundle_id == bundle_id)).one_or_none()
        if b is None and must:
            raise NotFound(f"no bundle {bundle_id} for this person")
        return b

    def put_blob(self, subject_id: str, bundle_id: str, sha256: str, data: bytes) -> bool:
        """Store one blob of an open bundle after checking its size and sha256; return
        whether it was new (False: already stored, nothing written).

        Raises:
            NotFound: no such bundle for this person, or the blob is not in its manifest.
            IntegrityError: size or sha256 of ``data`` differ from the manifest.
        """
        return self.put_blobs(subject_id, bundle_id, [(sha256, data)]) == 1

    def put_blobs(self, subject_id: str, bundle_id: str,
                  blobs: list[tuple[str, bytes]]) -> int:
        """Store several blobs of one open bundle in one transaction (the batch form of
        :meth:`put_blob`, same checks); return how many were new. All or nothing: one bad blob
        refuses the whole batch before anything is written. The objects are durable (fsynced)
        before their rows are inserted.

        Raises:
            NotFound / IntegrityError: as :meth:`put_blob`, naming the first offending blob.
        """
        if not blobs:
            return 0
        with self.db.session() as s:
            conn = s.connection()
            self.sql.async_commit(conn)
            b = self._ingest_bundle(conn, subject_id, bundle_id, blobs)
            return self._store_blobs(s, subject_id, b, blobs, all_members=False)[0]

    def put_blobs_and_commit(self, subject_id: str, bundle_id: str,
                             blobs: list[tuple[str, bytes]], *,
                             actor_id: str) -> tuple[int, dict[str, Any]]:
        """:meth:`put_blobs` followed by :meth:`commit` in ONE transaction (one synchronous
        commit, with the ``device.commit`` access-log entry of ``actor_id``); returns
        ``(new blobs, commit receipt)``. Used for the last blob batch of an upload.

        Raises:
            NotFound / IntegrityError: as :meth:`put_blobs` (nothing stored).
            ConflictError: blobs outside this batch still missing (``missing`` lists them);
                the batch itself IS stored (its transaction is committed first).
        """
        with self.db.session() as s:
            conn = s.connection()
            b = self._ingest_bundle(conn, subject_id, bundle_id, blobs)
            new, missing = self._store_blobs(s, subject_id, b, blobs,
                                             all_members=b.state != "committed")
            if missing:
                self.sql.async_commit(conn)  # keep the batch; nothing is acknowledged as committed
            else:
                out = self._commit_locked(s, b, subject_id, actor_id)
        if missing:
            raise self._missing_error(bundle_id, missing)
        return new, out

    def _ingest_bundle(self, conn: Any, subject_id: str, bundle_id: str,
                       blobs: list[tuple[str, bytes]]) -> BundleRef:
        """The person's bundle an upload names. Raises NotFound (naming the first blob of the
        batch, if any)."""
        b = self.sql.bundle(conn, subject_id, bundle_id)
        if b is None:
            what = f" listing blob {blobs[0][0]}" if blobs else ""
            raise NotFound(f"no bundle {bundle_id}{what} for this person")
        return b

    def _store_blobs(self, s: Session, subject_id: str, b: BundleRef,
                     blobs: list[tuple[str, bytes]], *, all_members: bool) -> tuple[int, list[str]]:
        """Check ``blobs`` against bundle ``b``'s manifest (membership, size, sha256), store the
        ones the person lacks (encrypted, durable before their rows exist); return ``(new
        blobs, missing)`` where ``missing`` (only with ``all_members``, else ``[]``) lists the
        bundle's members still not stored after this batch. One query reads the batch's (or,
        with ``all_members``, every) member with its stored flag."""
        conn = s.connection()
        rows = {r.sha256: r for r in self.sql.members(
            conn, subject_id, b.pk, None if all_members else [h for h, _ in blobs])}
        for h, data in blobs:
            r = rows.get(h)
            if r is None:
                raise NotFound(f"no bundle {b.bundle_id} listing blob {h} for this person")
            if len(data) != r.size:
                raise IntegrityError(f"blob {h}: received {len(data)} bytes, manifest "
                                     f"says {r.size}")
            if hashlib.sha256(data).hexdigest() != h:
                raise IntegrityError(f"blob {h}: content does not match its sha256 "
                                     "(corrupted in transit?)")
        todo = {h: d for h, d in blobs if not rows[h].stored}
        missing = ([r.sha256 for r in rows.values() if not r.stored and r.sha256 not in todo]
                   if all_members else [])
        if not todo:
            return 0, missing
        cipher = self.keyring.get(s, subject_id, create=True)
        # a concurrent retry may write the same object: same name, same plaintext, and the
        # store replaces atomically, so either copy is right
        names = {h: cipher.object_name(h) for h in todo}
        self.blobs.put_many([(names[h], cipher.encrypt(d, _blob_aad(subject_id, h)))
                             for h, d in todo.items()])  # durable BEFORE the rows exist
        # a concurrent retry that stored some of them already wins (unique subject_id +
        # sha256); the count is what this call added
        return self.sql.insert_blobs(conn, subject_id, datetime.now(UTC),
                                     [(h, len(d), names[h]) for h, d in todo.items()]), missing

    @staticmethod
    def _missing_error(bundle_id: str, missing: list[str]) -> ConflictError:
        err = ConflictError(f"bundle {bundle_id}: {len(missing)} blob(s) not uploaded yet; "
                            "PUT them, then commit again")
        err.missing = missing  # type: ignore[attr-defined]
        return err

    def _commit_locked(self, s: Session, b: BundleRef, subject_id: str,
                       actor_id: str | None) -> dict[str, Any]:
        conn = s.connection()
        at = b.committed_at
        if b.state != "committed":
            now = datetime.now(UTC)
            if self.sql.mark_committed(conn, b.pk, now):
                at = now
                # the fleet view's "last upload": the day, kept on the device's row (never
                # recomputed from bundles, so a person's later deletion changes nothing there)
                self.sql.note_upload_day(conn, b.device_id, now.date())
            else:  # a concurrent commit of the same bundle won: its time stands
                again = self.sql.bundle(conn, subject_id, b.bundle_id)
                at = again.committed_at if again is not None else now
        if actor_id is not None:
            # last statement of the transaction: the chain head stays locked only for the
            # commit's own WAL flush
            self.audit.append(s, actor_role="device", actor_id=actor_id, status=200,
                              accesses=[Access("device.commit", subject_id,
                                               f"bundle:{b.bundle_id}")])
        if at is not None and at.tzinfo is None:
            at = at.replace(tzinfo=UTC)  # SQLite hands stored UTC times back without a zone
        return {"bundle_id": b.bundle_id, "state": "committed", "n_blobs": b.n_blobs,
                "total_bytes": b.total_bytes, "committed_at": at.isoformat() if at else None}

    def commit(self, subject_id: str, bundle_id: str, *,
               actor_id: str | None = None) -> dict[str, Any]:
        """Mark an open bundle committed once every blob is stored. Idempotent. With
        ``actor_id`` (the device credential), the ``device.commit`` access-log entry is
        appended in the same transaction.

        Raises:
            NotFound: no such bundle for this person.
            ConflictError: blobs still missing (the message counts them, ``missing`` lists).
        """
        with self.db.session() as s:
            conn = s.connection()
            b = self._ingest_bundle(conn, subject_id, bundle_id, [])
            if b.state != "committed":
                missing = self.sql.missing(conn, subject_id, b.pk)
                if missing:
                    raise self._missing_error(bundle_id, missing)
            return self._commit_locked(s, b, subject_id, actor_id)

    # -- reads ------------------------------------------------------------------------------
    def list_bundles(self, subject_id: str | None = None) -> list[dict[str, Any]]:
        """Committed bundles (of one subject, or of everyone for a curator), newest first."""
        with self.db.session() as s:
            q = select(Bundle).where(Bundle.state == "committed")
            if subject_id is not None:
                q = q.where(Bundle.subject_id == subject_id)
            rows = s.scalars(q.order_by(Bundle.committed_at.desc(), Bundle.pk.desc())).all()
            return [{"subject_id": b.subject_id, "bundle_id": b.bundle_id,
                     "platform": b.platform, "n_blobs": b.n_blobs,
                     "total_bytes": b.total_bytes,
                     "committed_at": b.committed_at.isoformat() if b.committed_at else None}
                    for b in rows]

    def _cipher(self, s: Session, subject_id: str) -> DataCipher:
        return self.keyring.get(s, subject_id)

    def read_manifest(self, subject_id: str, bundle_id: str) -> dict[str, Any]:
        """The decrypted manifest of a committed bundle.

        Raises:
            NotFound: no such committed bundle. KeyDestroyed: the person was erased.
        """
        with self.db.session() as s:
            b = self._bundle(s, subject_id, bundle_id)
            if b.state != "committed":
                raise NotFound(f"bundle {bundle_id} is not committed")
            plain = self._cipher(s, subject_id).decrypt(b.manifest_ct,
                                                        _manifest_aad(subject_id, bundle_id))
        return json.loads(plain)  # type: ignore[no-any-return]

    def read_blob(self, subject_id: str, bundle_id: str, sha256: str) -> bytes:
        """The decrypted bytes of a blob of a committed bundle.

        Raises:
            NotFound: bundle, membership or blob missing. KeyDestroyed: person erased.
        """
        with self.db.session() as s:
            b = self._bundle(s, subject_id, bundle_id)
            if b.state != "committed" or s.get(BundleBlob, (b.pk, sha256)) is None:
                raise NotFound(f"blob {sha256} not in committed bundle {bundle_id}")
            blob = s.scalars(select(Blob).where(Blob.subject_id == subject_id,
                                                Blob.sha256 == sha256)).one_or_none()
            if blob is None:
                raise NotFound(f"blob {sha256} not stored")
            cipher = self._cipher(s, subject_id)
            name = blob.stored_name
        try:
            return cipher.decrypt(self.blobs.get(name), _blob_aad(subject_id, sha256))
        except DecryptionError as exc:
            # the stored object was altered or replaced inside the blob store (HTTP 502): name
            # the blob, never its bytes
            log.error("stored blob %s of bundle %s (object %s) fails authentication: altered "
                      "in the blob store", sha256, bundle_id, name)
            raise DecryptionError(f"stored blob {sha256} of bundle {bundle_id} fails its "
                                  f"integrity check ({exc}: object {name} in {self.blobs!r} "
                                  "was altered or replaced); restore it from a backup") from exc

    # -- deletion, export, erasure --------------------------------------------------------------
    def _mark_datasets(self, s: Session, subject_id: str, bundle_id: str | None,
                       reason: str) -> int:
        q = select(DatasetMember.dataset_id).where(DatasetMember.subject_id == subject_id)
        if bundle_id is not None:
            q = q.where(DatasetMember.bundle_id == bundle_id)
        ids = set(s.scalars(q))
        for ds in s.scalars(select(Dataset).where(Dataset.id.in_(ids))):
            ds.needs_rebuild = True
            ds.rebuild_reason = (ds.rebuild_reason + "; " if ds.rebuild_reason else "") + reason
        dq = delete(DatasetMember).where(DatasetMember.subject_id == subject_id)
        if bundle_id is not None:
            dq = dq.where(DatasetMember.bundle_id == bundle_id)
        s.execute(dq)
        return len(ids)

    def delete_bundle(self, subject_id: str, bundle_id: str) -> dict[str, Any]:
        """Delete one bundle of a person, its blobs no other bundle of theirs uses, and mark
        datasets that contained it for rebuild; a tombstone of its session refuses re-uploads.

        Raises:
            NotFound: no such bundle.
        """
        with self.db.session() as s:
            b = self._bundle(s, subject_id, bundle_id)
            self._tombstone(s, subject_id, self._session_ids(s, [b]))
            s.execute(delete(DeletedEpisode).where(DeletedEpisode.subject_id == subject_id,
                                                   DeletedEpisode.bundle_id == bundle_id))
            names = self._drop_bundle(s, b)
            marked = self._mark_datasets(s, subject_id, bundle_id,
                                         f"bundle {bundle_id[:12]} deleted by its person")
        for n in names:
            self.blobs.delete(n)
        return {"bundle_id": bundle_id, "deleted": True, "blobs_deleted": len(names),
                "datasets_marked": marked}

    @staticmethod
    def _drop_bundle(s: Session, b: Bundle) -> list[str]:
        """Delete bundle ``b``'s rows and the rows of its blobs no other bundle of the same
        person names; return those blobs' object names (the caller deletes the objects once the
        transaction has committed)."""
        shas = set(s.scalars(select(BundleBlob.sha256).where(BundleBlob.bundle_pk == b.pk)))
        s.execute(delete(BundleBlob).where(BundleBlob.bundle_pk == b.pk))
        s.delete(b)
        s.flush()
        still = set(s.scalars(select(BundleBlob.sha256).join(Bundle).where(
            Bundle.subject_id == b.subject_id, BundleBlob.sha256.in_(shas))))
        gone = s.scalars(select(Blob).where(Blob.subject_id == b.subject_id,
                                            Blob.sha256.in_(shas - still))).all()
        for g in gone:
            s.delete(g)
        return [g.stored_name for g in gone]

    def export_person(self, subject_id: str) -> bytes:
        """A zip of everything stored about the person: ``bundles/<id>/manifest.json``,
        ``bundles/<id>/blobs/<sha256>``, ``access-log.json`` (entries about them) and
        ``consent.json`` (their consent records with each notice text)."""
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for b in self.list_bundles(subject_id):
                bid = b["bundle_id"]
                m = self.read_manifest(subject_id, bid)
                z.writestr(f"bundles/{bid}/manifest.json", json.dumps(m, indent=1))
                for ref in m.get("blobs", []):
                    z.writestr(f"bundles/{bid}/blobs/{ref['sha256']}",
                               self.read_blob(subject_id, bid, ref["sha256"]))
            z.writestr("access-log.json", json.dumps(self.access_log(subject_id), indent=1))
            with self.db.session() as s:
                consents = policies.person_consents(s, subject_id)
            z.writestr("consent.json", json.dumps(consents, indent=1))
        return buf.getvalue()

    def erase(self, subject_id: str, *, audit_as: tuple[str, str, str] | None = None) -> dict[str, Any]:
        """Erase a person: tombstone their sessions (keyed hashes only, so a device cannot
        upload them again), destroy their data key (crypto-shredding), delete their bundles and
        blobs, mark every dataset that contained them for rebuild, queue their blob objects in
        ``pending_blob_deletes`` (all in one transaction), then delete the objects and
        (SQLite) checkpoint the WAL so the destroyed key leaves no copy there.

        Returns ``{"erased", "key_destroyed", "bundles_deleted", "blobs_deleted",
        "blob_deletes_pending", "datasets_marked"}`` (+ ``"note"`` when deletes are pending).
        A blob store that fails to delete does NOT fail the erasure (the key is gone, so the
        objects are unreadable): the objects it refused stay queued, are logged
        (``erase.blob_delete_pending``) and retried by :meth:`retry_pending_deletes`.

        ``audit_as = (role, credential id, action)``: the erasure's access-log entry, appended in
        the erasure's own transaction — an erasure is never committed without its entry (bug
        bash 3: a kill -9 between the erasure's commit and the request's log write left none).

        Raises:
            database errors only (nothing is erased then: one transaction).
        """
        self.retry_pending_deletes()
        with self.db.session() as s:
            self._tombstone(s, subject_id, self._session_ids(s, list(s.scalars(
                select(Bundle).where(Bundle.subject_id == subject_id)))))
            had_key = self.keyring.destroy(s, subject_id)
            names = list(s.scalars(select(Blob.stored_name).where(Blob.subject_id == subject_id)))
            pks = list(s.scalars(select(Bundle.pk).where(Bundle.subject_id == subject_id)))
            if pks:
                s.execute(delete(BundleBlob).where(BundleBlob.bundle_pk.in_(pks)))
            s.execute(delete(Bundle).where(Bundle.subject_id == subject_id))
            s.execute(delete(Blob).where(Blob.subject_id == subject_id))
            marked = self._mark_datasets(s, subject_id, None, "a member was erased")
            p = s.get(Person, subject_id)
            if p is not None:
                p.erased_at = datetime.now(UTC)
            s.execute(delete(ConsentRecord).where(ConsentRecord.subject_id == subject_id))
            s.execute(delete(DeletedEpisode).where(DeletedEpisode.subject_id == subject_id))
            self._queue_deletes(s, subject_id, names)
            if audit_as is not None:
                role, actor_id, action = audit_as
                self.audit.append(s, actor_role=role, actor_id=actor_id, status=200,
                                  accesses=[Access(action, subject_id, "all")])
        done, failed = self._delete_queued(names)
        left = self._settle_deletes(done, failed, action="erase.blob_delete_pending")
        self.db.checkpoint_wal()
        out: dict[str, Any] = {
            "erased": True, "key_destroyed": had_key, "bundles_deleted": len(pks),
            "blobs_deleted": len(done), "blob_deletes_pending": left.get(subject_id, 0),
            "datasets_marked": marked}
        if out["blob_deletes_pending"]:
            out["note"] = (f"your data key is destroyed and every record removed, so nothing "
                           f"stored can be read; {out['blob_deletes_pending']} encrypted blob "
                           "object(s) could not be deleted from the blob store yet and will be "
                           "deleted automatically when it is reachable again")
        return out

    # -- the erasure outbox (pending_blob_deletes) -------------------------------------------------
    def _queue_deletes(self, s: Session, subject_id: str, names: list[str]) -> None:
        """Queue blob objects of an erased person for deletion (in the caller's transaction)."""
        now = datetime.now(UTC)
        for i in range(0, len(names), 1000):
            chunk = names[i:i + 1000]
            have = set(s.scalars(select(PendingBlobDelete.stored_name).where(
                PendingBlobDelete.stored_name.in_(chunk))))
            s.add_all(PendingBlobDelete(stored_name=n, subject_id=subject_id, queued_at=now,
                                        attempts=0) for n in chunk if n not in have)

    def _delete_queued(self, names: list[str]) -> tuple[list[str], dict[str, str]]:
        """Delete these objects; return ``(deleted or already absent, {name: error})``. Stops
        after :data:`DELETE_GIVE_UP_AFTER` consecutive failures (the rest count as failed with
        the last error: an unreachable store is not asked once per object)."""
        done: list[str] = []
        failed: dict[str, str] = {}
        streak, last = 0, ""
        for n in names:
            if streak >= DELETE_GIVE_UP_AFTER:
                failed[n] = f"not tried: {last}"
                continue
            try:
                self.blobs.delete(n)
            except BlobStoreError as exc:
                streak, last = streak + 1, str(exc)[:400]
                failed[n] = last
                continue
            streak = 0
            done.append(n)
        return done, failed

    def _settle_deletes(self, done: list[str], failed: dict[str, str], *,
                        action: str) -> dict[str, int]:
        """Drop deleted objects from the queue, count an attempt on the failed ones, and log
        one access-log entry per person with objects still pending (actor ``system``); return
        ``{subject_id: objects still pending}`` (for the persons in ``failed``)."""
        left: dict[str, int] = {}
        with self.db.session() as s:
            for i in range(0, len(done), 1000):
                s.execute(delete(PendingBlobDelete).where(
                    PendingBlobDelete.stored_name.in_(done[i:i + 1000])))
            rows = list(failed)
            for i in range(0, len(rows), 1000):
                for r in s.scalars(select(PendingBlobDelete).where(
                        PendingBlobDelete.stored_name.in_(rows[i:i + 1000]))):
                    r.attempts += 1
                    r.last_error = failed[r.stored_name][:500]
                    left[r.subject_id] = left.get(r.subject_id, 0) + 1
            if left:
                for sid, n in left.items():
                    log.warning("erasure of subject %s: %d blob object(s) could not be deleted "
                                "from %r (queued for retry): %s", sid[:12], n, self.blobs,
                                next(iter(failed.values())))
                self.audit.append(s, actor_role="system", actor_id="collector", status=503,
                                  accesses=[Access(action, sid, f"blobs:{n} queued for deletion "
                                                   "retry (blob store failed)")
                                            for sid, n in sorted(left.items())])
        return left

    def expire_open_uploads(self, now: datetime | None = None) -> dict[str, int]:
        """Remove every bundle still open :data:`OPEN_UPLOAD_TTL` after it was registered: its
        rows, and the blobs no other bundle of the same person names (rows first, then the
        objects, as :meth:`delete_bundle`). No tombstone: the device may upload the session
        again. Run at start-up only (``sweep_pending``; with ``--workers N`` once, in the
        parent, before any worker serves), so no upload races it for a shared blob. Logged as
        one system access-log entry per person. Returns ``{"bundles": n, "blobs": m}``.

        Raises:
            BlobStoreError: an object could not be deleted (its row is already gone; the
                next start-up does not see it again — logged, not retried).
        """
        cutoff = (now or datetime.now(UTC)) - OPEN_UPLOAD_TTL
        names: list[str] = []
        n_bundles = 0
        with self.db.session() as s:
            old = s.scalars(select(Bundle).where(Bundle.state == "open",
                                                 Bundle.created_at < cutoff)).all()
            per_person: dict[str, list[str]] = {}
            for b in old:
                per_person.setdefault(b.subject_id, []).append(b.bundle_id)
                names += self._drop_bundle(s, b)
                n_bundles += 1
            if per_person:
                self.audit.append(s, actor_role="system", actor_id="collector", status=200,
                                  accesses=[Access("upload.expire", sid, f"unfinished bundles:{len(ids)}")
                                            for sid, ids in sorted(per_person.items())])
        for n in names:
            try:
                self.blobs.delete(n)
            except BlobStoreError as exc:
                log.warning("expired upload: blob object %s not deleted: %s", n, exc)
        if n_bundles:
            log.info("removed %d upload(s) left unfinished for %d days (%d blob objects)",
                     n_bundles, OPEN_UPLOAD_TTL.days, len(names))
        return {"bundles": n_bundles, "blobs": len(names)}

    def retry_pending_deletes(self, limit: int = 10_000) -> dict[str, int]:
        """Retry deleting queued objects of erased persons (up to ``limit``, oldest first).
        Called at start-up and by every :meth:`erase`; never raises for blob-store failures
        (they stay queued and are logged: ``erase.blob_delete_retry_failed``). Returns
        ``{"deleted": n, "pending": m}`` (``m``: objects still queued after this round)."""
        with self.db.session() as s:
            rows = s.execute(select(PendingBlobDelete.stored_name, PendingBlobDelete.subject_id)
                             .order_by(PendingBlobDelete.queued_at)
                             .limit(limit)).all()
        if not rows:
            return {"deleted": 0, "pending": 0}
        done, failed = self._delete_queued([r.stored_name for r in rows])
        self._settle_deletes(done, failed, action="erase.blob_delete_retry_failed")
        if done:
            log.info("erasure outbox: deleted %d queued blob object(s)", len(done))
        with self.db.session() as s:
            pending = s.scalar(select(func.count()).select_from(PendingBlobDelete)) or 0
        return {"deleted": len(done), "pending": int(pending)}

    def access_log(self, subject_id: str) -> list[dict[str, Any]]:
        """Every access-log entry that names this subject, oldest first."""
        with self.db.session() as s:
            rows = s.scalars(select(AuditEntry).where(AuditEntry.subject_id == subject_id)
                             .order_by(AuditEntry.seq)).all()
            return [{"seq": e.seq, "ts": e.ts, "actor_role": e.actor_role, "action": e.action,
                     "resource": e.resource, "purpose": e.purpose, "status": e.status}
                    for e in rows]

    # -- datasets and aggregates ----------------------------------------------------------------
    def register_dataset(self, name: str, created_by: str,
                         members: list[tuple[str, str]]) -> dict[str, Any]:
        """Record that dataset ``name`` was built from these (subject_id, bundle_id) pairs.

        Raises:
            NotFound: a member is not a committed bundle. ConflictError: the name is taken.
        """
        try:
            with self.db.session() as s:
                for sid, bid in members:
                    b = self._bundle(s, sid, bid)
                    if b.state != "committed":
                        raise NotFound(f"bundle {bid} is not committed")
                ds = Dataset(name=name[:200], created_by=created_by, created_at=datetime.now(UTC),
                             needs_rebuild=False)
                s.add(ds)
                s.flush()
                s.add_all(DatasetMember(dataset_id=ds.id, subject_id=sid, bundle_id=bid)
                          for sid, bid in set(members))
                return {"id": ds.id, "name": ds.name, "members": len(set(members))}
        except SAIntegrityError as exc:
            raise ConflictError(f"a dataset named {name!r} exists") from exc

    def list_datasets(self) -> list[dict[str, Any]]:
        """Datasets with their rebuild flag (no per-person figures)."""
        with self.db.session() as s:
            return [{"id": d.id, "name": d.name, "created_at": d.created_at.isoformat(),
                     "needs_rebuild": d.needs_rebuild, "rebuild_reason": d.rebuild_reason}
                    for d in s.scalars(select(Dataset).order_by(Dataset.id))]

    def stats(self) -> dict[str, Any]:
        """Committed bundles grouped by platform; a group is shown only with at least
        ``k_min_persons`` distinct persons (else counted in ``suppressed_groups``)."""
        k = self.config.k_min_persons
        with self.db.session() as s:
            rows = s.execute(
                select(Bundle.platform, func.count(func.distinct(Bundle.subject_id)),
                       func.count(Bundle.pk), func.coalesce(func.sum(Bundle.total_bytes), 0))
                .where(Bundle.state == "committed").group_by(Bundle.platform)).all()
        groups = [{"platform": p, "persons": n, "bundles": nb, "total_bytes": int(tb)}
                  for p, n, nb, tb in sorted(rows) if n >= k]
        return {"k_min_persons": k, "groups": groups,
                "suppressed_groups": sum(1 for r in rows if r[1] < k)}

    def fleet_health(self) -> dict[str, Any]:
        """Fleet-level figures for admins: credentials by role and state, database and blob
        backends, audit head; data volumes only when at least ``k_min_persons`` persons hold
        data (never per person or per device)."""
        k = self.config.k_min_persons
        with self.db.session() as s:
            creds = s.execute(select(Credential.role, Credential.revoked_at.is_(None),
                                     func.count()).group_by(Credential.role,
                                                            Credential.revoked_at.is_(None))).all()
            persons = s.scalar(select(func.count(func.distinct(Bundle.subject_id)))
                               .where(Bundle.state == "committed")) or 0
            nb, tb = s.execute(select(func.count(Bundle.pk),
                                      func.coalesce(func.sum(Bundle.total_bytes), 0))
                               .where(Bundle.state == "committed")).one()
            audit_seq = s.scalar(select(func.max(AuditEntry.seq))) or 0
        by_role: dict[str, dict[str, int]] = {}
        for role, active, n in creds:
            by_role.setdefault(role, {"active": 0, "revoked": 0})["active" if active else "revoked"] += n
        volumes = ({"persons_with_data": persons, "bundles": nb, "total_bytes": int(tb)}
                   if persons >= k else None)
        return {"status": "ok", "database": self.db.dialect, "blob_store": self.blobs.scheme,
                "credentials": by_role, "audit_entries": audit_seq, "k_min_persons": k,
                "volumes": volumes}

    def revoke(self, credential_id: str) -> None:
        """Revoke a credential and drop this process's credential cache.

        Raises:
            NotFound: no such credential.
        """
        with self.db.session() as s:
            revoke(s, credential_id)
        self.auth_cache.clear()

    def audit_export(self) -> dict[str, Any]:
        """Verify the stored log, sign a checkpoint at the head, then return the export
        document up to that checkpoint (entries appended meanwhile wait for the next export).

        Raises:
            AuditVerifyError: the stored log does not verify; nothing is signed (HTTP 500).
        """
        with self.db.session() as s:
            upto = self.audit.checkpoint(s)
        with self.db.session() as s:
            return export_document(s, self.signer.public_raw, self.signer.key_id, upto=upto,
                                   checkpoint_every=self.audit.checkpoint_every)

    def parse_manifest(self, body: bytes) -> BundleManifest:
        """Parse an uploaded manifest (errors: :class:`~demotrace.errors.SchemaError`)."""
        return parse_manifest(body, where="uploaded manifest")
