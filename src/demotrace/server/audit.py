"""The access log: append-only, hash-chained, with Ed25519-signed checkpoints (DESIGN.md §8.9).

Entry hash (hex SHA-256)::

    entry_hash = SHA256( prev_hash + "\\n" + canonical_json(fields) )
    fields     = {seq, ts, actor_role, actor_id, action, subject_id, resource, purpose, status}
    canonical_json = JSON, keys sorted, separators (",", ":"), UTF-8
    prev_hash of seq 1 = 64 × "0"

Checkpoints are REQUIRED at a fixed cadence: the service signs one whenever ``seq`` reaches a
multiple of ``checkpoint_every`` (the server setting ``--checkpoint-every`` /
``DEMOTRACE_AUDIT_CHECKPOINT_EVERY``, default 100 entries) and one at the head on every export.
A checkpoint signs (message v2)::

    "demotrace-audit-checkpoint/2\\n{seq}\\n{entry_hash}\\n{ts}\\n{every}"

where ``every`` is the cadence in force, so an attacker cannot claim a longer one. (Checkpoints
signed before schema revision 0003 have no ``every`` and sign message v1, the same without the
last line.) :func:`verify` fails when

- an entry's hash, a chain link or ``seq`` contiguity is wrong (edited, removed, reordered);
- a checkpoint's signature is invalid, its entry is missing or differs (log rewritten);
- two consecutive checkpoints (or the start and the first one) are further apart than the
  cadence (a checkpoint was deleted), or the log ends a whole cadence or more past its newest
  checkpoint (the checkpoints after it were deleted);
- an export's last entry is not covered by a checkpoint (every export signs one there);
- ``audit_head`` (database check) names a different newest entry than the log ends with (the
  unsigned tail was deleted);
- an ``anchor`` (a checkpoint the verifier kept from an earlier export) is not extended by
  this log (entries at or before it were removed or rewritten).

The service never signs over a chain it cannot verify: the cadence checkpoint first re-checks
the entries since the previous checkpoint (and skips signing if they do not verify, which
:func:`verify` then reports as a missing checkpoint); an export first verifies the whole stored
log and refuses (:class:`~.errors.AuditVerifyError`) if it fails.

Residual risk (docs/operations.md "Access log"): whoever holds the signing key can sign a
forged log; an attacker with write access to the database alone can still drop or alter
entries newer than the newest checkpoint while keeping ``audit_head`` consistent (fewer than
one cadence of entries), or rewrite a log that never reached its first checkpoint — only an
anchor kept outside the collector catches a rollback to an earlier signed state.

The export document (``format`` = ``"demotrace-audit-export/1"``) holds ``public_key`` (hex of
the 32 raw Ed25519 bytes), ``key_id``, ``checkpoint_every`` (the exporting server's cadence;
informational, the signed per-checkpoint ``every`` is what counts), ``entries`` (in ``seq``
order) and ``checkpoints`` (each ``{seq, entry_hash, ts, key_id, signature, every}``). An
anchor file is one such checkpoint (or a whole earlier export, whose newest checkpoint is used).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError as SAIntegrityError
from sqlalchemy.orm import Session

from ..errors import ConfigError
from .errors import AuditVerifyError
from .keys import read_secret_file
from .models import AuditCheckpoint, AuditEntry, AuditHead

GENESIS = "0" * 64
_HEAD_FOR_UPDATE = text("SELECT seq, entry_hash FROM audit_head WHERE id = 1 FOR UPDATE")
_HEAD_READ = text("SELECT seq, entry_hash FROM audit_head WHERE id = 1")  # SQLite: BEGIN IMMEDIATE
_INSERT_ENTRY = text(
    "INSERT INTO audit_entries (seq, ts, actor_role, actor_id, action, subject_id, resource, "
    "purpose, status, prev_hash, entry_hash) VALUES (:seq, :ts, :actor_role, :actor_id, :action, "
    ":subject_id, :resource, :purpose, :status, :prev_hash, :entry_hash)")
_SET_HEAD = text("UPDATE audit_head SET seq = :seq, entry_hash = :entry_hash WHERE id = 1")
EXPORT_FORMAT = "demotrace-audit-export/1"
FIELDS = ("seq", "ts", "actor_role", "actor_id", "action", "subject_id", "resource", "purpose",
          "status")
PURPOSE_AGENT_TRAINING = "agent-training"
"""The only purpose a curator may state (DESIGN.md §2.4)."""
DEFAULT_CHECKPOINT_EVERY = 100
"""Default checkpoint cadence (entries): at most this many entries are ever unsigned."""

log = logging.getLogger(__name__)


def canonical(fields: Mapping[str, Any]) -> bytes:
    """Canonical JSON of the hashed fields (keys sorted, compact, UTF-8)."""
    return json.dumps({k: fields[k] for k in FIELDS}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode()


def entry_hash(prev_hash: str, fields: Mapping[str, Any]) -> str:
    """Hex SHA-256 of ``prev_hash + "\\n" + canonical(fields)``."""
    return hashlib.sha256(prev_hash.encode() + b"\n" + canonical(fields)).hexdigest()


def checkpoint_message(seq: int, ehash: str, ts: str, every: int | None = None) -> bytes:
    """The bytes a checkpoint signature covers: message v2 with the cadence ``every``
    (entries), or v1 (``every`` is ``None``: checkpoints signed before schema 0003)."""
    if every is None:
        return f"demotrace-audit-checkpoint/1\n{seq}\n{ehash}\n{ts}".encode()
    return f"demotrace-audit-checkpoint/2\n{seq}\n{ehash}\n{ts}\n{int(every)}".encode()


def now_ts() -> str:
    """UTC wall-clock time, ISO 8601 with microseconds (display and ordering aid only)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


class Signer:
    """The Ed25519 checkpoint key (PKCS#8 PEM file, mode 0600). ``key_id`` = first 16 hex
    digits of SHA-256 of the raw public key."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_raw = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.key_id = hashlib.sha256(self.public_raw).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"Signer(key_id={self.key_id!r})"

    @classmethod
    def from_file(cls, path: Path, *, create: bool = False) -> Signer:
        """Load the PEM key; with ``create``, generate it (0600, ``O_EXCL``) when absent.

        Raises:
            KeyMissing / ConfigError: as :func:`~.keys.read_secret_file` (mode, absence), or the
                file is not an Ed25519 PEM key.
        """
        if not path.exists() and create:
            pem = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption())
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(pem)
            except FileExistsError:
                pass
        size = path.stat().st_size if path.exists() else 0
        data = read_secret_file(path, size)
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except ValueError as exc:
            raise ConfigError(f"audit signing key {path} is not a PEM private key") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"audit signing key {path} is not an Ed25519 key")
        return cls(key)

    def sign(self, msg: bytes) -> str:
        """Hex Ed25519 signature of ``msg``."""
        return self._key.sign(msg).hex()


@dataclass(frozen=True)
class Access:
    """What one request did, for the log: ``action`` (e.g. ``"curator.read_blob"``), the
    ``subject_id`` whose data it touched (``None`` if none), ``resource`` (path or id),
    ``purpose`` as stated by the caller."""

    action: str
    subject_id: str | None
    resource: str
    purpose: str | None = None


class AuditLog:
    """Appends entries and signs checkpoints in the caller's transaction.

    ``checkpoint_every``: the required cadence (entries, module docstring); a checkpoint is
    signed whenever ``seq`` reaches a multiple of it."""

    def __init__(self, signer: Signer, checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY) -> None:
        if checkpoint_every < 1:
            raise ConfigError(f"audit checkpoint cadence must be >= 1 entry, got {checkpoint_every}")
        self.signer = signer
        self.checkpoint_every = checkpoint_every

    @staticmethod
    def ensure_head(s: Session) -> None:
        """Create the head row (seq 0, genesis hash) if absent. Safe to race."""
        if s.get(AuditHead, 1) is None:
            try:
                with s.begin_nested():
                    s.add(AuditHead(id=1, seq=0, entry_hash=GENESIS))
            except SAIntegrityError:
                pass

    def append(self, s: Session, *, actor_role: str, actor_id: str, status: int,
               accesses: Iterable[Access]) -> list[int]:
        """Append one entry per access (locks the head row until the transaction ends);
        return their ``seq`` numbers. Signs a checkpoint whenever ``seq`` reaches a multiple of
        ``checkpoint_every`` — unless the entries since the previous checkpoint fail to verify
        (then nothing is signed, logged at ERROR, and :func:`verify` reports the gap)."""
        # fixed-text Core statements on the session's connection (no ORM objects: this runs on
        # every request that touches personal data, and on every bundle commit)
        conn = s.connection()
        lock = _HEAD_FOR_UPDATE if conn.dialect.name == "postgresql" else _HEAD_READ
        seq, prev = conn.execute(lock).one()
        seqs = []
        for a in accesses:
            fields = {"seq": seq + 1, "ts": now_ts(), "actor_role": actor_role[:16],
                      "actor_id": actor_id[:64], "action": a.action[:64],
                      "subject_id": a.subject_id[:64] if a.subject_id else None,
                      "resource": a.resource[:500],
                      "purpose": a.purpose[:64] if a.purpose else None, "status": status}
            h = entry_hash(prev, fields)
            conn.execute(_INSERT_ENTRY, {**fields, "prev_hash": prev, "entry_hash": h})
            seq, prev = fields["seq"], h
            seqs.append(seq)
            if seq % self.checkpoint_every == 0:
                problems = self._segment_problems(s, seq, h)
                if problems:
                    log.error("audit log: NOT signing the checkpoint at seq %d: %s", seq,
                              "; ".join(problems))
                else:
                    self._sign(s, seq, h)
        if seqs:
            conn.execute(_SET_HEAD, {"seq": seq, "entry_hash": prev})
        s.flush()
        return seqs

    def _segment_problems(self, s: Session, seq: int, ehash: str) -> list[str]:
        """Check the entries after the previous checkpoint up to ``seq`` (at most about one
        cadence of rows): previous checkpoint's signature and entry, chain links, hashes, gap."""
        s.flush()
        prev = s.scalars(select(AuditCheckpoint).where(AuditCheckpoint.seq < seq)
                         .order_by(AuditCheckpoint.seq.desc()).limit(1)).first()
        start, link = 0, GENESIS
        allowed = self.checkpoint_every
        problems: list[str] = []
        if prev is not None:
            start, link = prev.seq, prev.entry_hash
            allowed = max(allowed, prev.every or 0)
            try:
                Ed25519PublicKey.from_public_bytes(self.signer.public_raw).verify(
                    bytes.fromhex(prev.signature),
                    checkpoint_message(prev.seq, prev.entry_hash, prev.ts, prev.every))
            except (InvalidSignature, ValueError):
                problems.append(f"checkpoint {prev.seq}: signature invalid")
        if seq - start > allowed:
            problems.append(f"{seq - start} entries since the previous checkpoint (seq {start}), "
                            f"more than the cadence of {allowed}: a checkpoint was removed")
            return problems
        t = AuditEntry.__table__  # Core rows: no ORM objects on the ingest path
        rows = s.execute(select(t).where(t.c.seq >= max(start, 1), t.c.seq <= seq)
                         .order_by(t.c.seq)).mappings().all()
        if prev is not None:
            if not rows or rows[0]["seq"] != start or rows[0]["entry_hash"] != prev.entry_hash:
                problems.append(f"entry {start} differs from its signed checkpoint")
            rows = rows[1:]
        if [r["seq"] for r in rows] != list(range(start + 1, seq + 1)):
            problems.append(f"entries {start + 1}..{seq} are not contiguous")
        for r in rows:
            if r["prev_hash"] != link or entry_hash(link, r) != r["entry_hash"]:
                problems.append(f"seq {r['seq']}: does not verify (edited or re-chained)")
                break
            link = r["entry_hash"]
        if not problems and link != ehash:
            problems.append(f"seq {seq}: head hash does not match the stored entry")
        return problems

    def _sign(self, s: Session, seq: int, ehash: str) -> None:
        if s.get(AuditCheckpoint, seq) is not None:
            return
        ts = now_ts()
        every = self.checkpoint_every
        s.add(AuditCheckpoint(seq=seq, entry_hash=ehash, ts=ts, key_id=self.signer.key_id,
                              every=every,
                              signature=self.signer.sign(checkpoint_message(seq, ehash, ts,
                                                                            every))))

    def checkpoint(self, s: Session) -> int:
        """Verify the whole stored log up to the current head (entries, checkpoints, cadence,
        ``audit_head``), then sign a checkpoint at that head (if any entry exists); return its
        seq (the export covers entries up to it).

        Raises:
            AuditVerifyError: the stored log does not verify — nothing is signed, so a forged
                chain never gets a genuine signature.
        """
        # verified WITHOUT the head lock (appends go on; entries after this head are left for
        # the next export), then locked only to sign, serialised with the cadence signing
        seq, ehash = read_head(s) or (0, GENESIS)
        doc = export_document(s, self.signer.public_raw, self.signer.key_id, upto=seq,
                              checkpoint_every=self.checkpoint_every)
        verify(doc, trusted_public_key=self.signer.public_raw, head=(seq, ehash),
               checkpoint_every=self.checkpoint_every, require_signed_end=False)
        if seq:
            s.execute(select(AuditHead.id).where(AuditHead.id == 1).with_for_update())
            self._sign(s, seq, ehash)
        return seq


def entry_dict(e: AuditEntry) -> dict[str, Any]:
    """An entry as a plain dict (export shape)."""
    return {**{k: getattr(e, k) for k in FIELDS}, "prev_hash": e.prev_hash,
            "entry_hash": e.entry_hash}


def checkpoint_dict(c: AuditCheckpoint) -> dict[str, Any]:
    """A checkpoint as a plain dict (export and anchor shape)."""
    return {"seq": c.seq, "entry_hash": c.entry_hash, "ts": c.ts, "key_id": c.key_id,
            "signature": c.signature, "every": c.every}


def export_document(s: Session, public_raw: bytes, key_id: str, *, upto: int | None = None,
                    checkpoint_every: int | None = None) -> dict[str, Any]:
    """The log as an export document (module docstring), entries in ``seq`` order; with
    ``upto``, only entries and checkpoints with ``seq <= upto``."""
    qe = select(AuditEntry).order_by(AuditEntry.seq)
    qc = select(AuditCheckpoint).order_by(AuditCheckpoint.seq)
    if upto is not None:
        qe = qe.where(AuditEntry.seq <= upto)
        qc = qc.where(AuditCheckpoint.seq <= upto)
    entries = [entry_dict(e) for e in s.scalars(qe)]
    cps = [checkpoint_dict(c) for c in s.scalars(qc)]
    return {"format": EXPORT_FORMAT, "public_key": public_raw.hex(), "key_id": key_id,
            "checkpoint_every": checkpoint_every, "entries": entries, "checkpoints": cps}


def read_head(s: Session) -> tuple[int, str] | None:
    """``(seq, entry_hash)`` of the ``audit_head`` row, or ``None`` if there is none."""
    h = s.connection().execute(_HEAD_READ).first()  # never a stale ORM copy: appends use Core
    return None if h is None else (int(h[0]), str(h[1]))


def load_anchor(data: Mapping[str, Any], *, where: str = "anchor") -> dict[str, Any]:
    """The checkpoint an anchor file holds: a checkpoint dict, or an earlier export document
    (its newest checkpoint).

    Raises:
        ConfigError: neither shape, or an export without checkpoints (names ``where``).
    """
    if data.get("format") == EXPORT_FORMAT:
        cps = list(data.get("checkpoints") or [])
        if not cps:
            raise ConfigError(f"{where}: the export holds no checkpoint to anchor to")
        return dict(max(cps, key=lambda c: int(c["seq"])))
    if not all(k in data for k in ("seq", "entry_hash", "ts", "signature")):
        raise ConfigError(f"{where}: not a checkpoint (needs seq, entry_hash, ts, signature) "
                          "nor an audit export")
    return dict(data)


@dataclass(frozen=True)
class VerifyReport:
    """Result of a successful :func:`verify`: ``entries`` checked, ``checkpoints`` whose
    signature held, ``last_signed_seq`` (newest entry covered by a signature),
    ``unsigned_tail`` (entries after it: intact as a chain, not yet signed, fewer than one
    cadence), ``newest_checkpoint`` (dict, to keep as the next anchor; ``None`` if none) and
    ``anchor_seq`` (the anchored seq this log extends; ``None`` without an anchor)."""

    entries: int
    checkpoints: int
    last_signed_seq: int
    unsigned_tail: int
    newest_checkpoint: dict[str, Any] | None = None
    anchor_seq: int | None = None


def _cp_every(c: Mapping[str, Any]) -> int | None:
    e = c.get("every")
    return None if e is None else int(e)


def verify(doc: Mapping[str, Any], *, trusted_public_key: bytes | None = None,
           anchor: Mapping[str, Any] | None = None, head: tuple[int, str] | None = None,
           checkpoint_every: int | None = None, require_signed_end: bool = True) -> VerifyReport:
    """Check an export document against the rules of the module docstring.

    - ``trusted_public_key``: raw 32-byte key obtained out of band; the document's key must
      equal it (and the anchor must be signed by it).
    - ``anchor``: a checkpoint dict kept from an earlier export (:func:`load_anchor`); the
      log must contain its entry with the same hash.
    - ``head``: ``(seq, entry_hash)`` of ``audit_head`` (database check); must name the last
      entry.
    - ``checkpoint_every``: the cadence (entries) to assume where no signed checkpoint states
      one (no checkpoint at all, or only v1 checkpoints); ``None`` → the document's
      ``checkpoint_every`` if any, else :data:`DEFAULT_CHECKPOINT_EVERY`.
    - ``require_signed_end``: the last entry must be covered by a checkpoint (true of every
      export; the database check passes ``False``: its tail is legitimately unsigned).

    Raises:
        AuditVerifyError: lists every problem found.
    """
    problems: list[str] = []
    if doc.get("format") != EXPORT_FORMAT:
        raise AuditVerifyError([f"not an audit export (format {doc.get('format')!r})"])
    try:
        pub_raw = bytes.fromhex(doc["public_key"])
        pub = Ed25519PublicKey.from_public_bytes(pub_raw)
    except (KeyError, ValueError) as exc:
        raise AuditVerifyError([f"public key unreadable: {exc}"]) from exc
    if trusted_public_key is not None and pub_raw != trusted_public_key:
        problems.append("the export's public key is not the trusted key")
    if checkpoint_every is None:
        checkpoint_every = int(doc.get("checkpoint_every") or DEFAULT_CHECKPOINT_EVERY)
    entries = list(doc.get("entries", []))
    prev = GENESIS
    by_seq: dict[int, str] = {}
    for i, e in enumerate(entries, start=1):
        try:
            seq = int(e["seq"])
            if seq != i:
                problems.append(f"position {i}: seq {seq} found where {i} was expected "
                                "(entry removed, inserted or reordered)")
            if e["prev_hash"] != prev:
                problems.append(f"seq {seq}: prev_hash does not link to the previous entry")
            h = entry_hash(e["prev_hash"], e)
            if h != e["entry_hash"]:
                problems.append(f"seq {seq}: content does not match its hash (entry edited)")
            by_seq[seq] = e["entry_hash"]
            prev = e["entry_hash"]
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(f"position {i}: malformed entry ({exc!r})")
    n = len(entries)
    cps = list(doc.get("checkpoints", []))
    good: list[tuple[int, int | None, dict[str, Any]]] = []
    for c in cps:
        try:
            seq = int(c["seq"])
            pub.verify(bytes.fromhex(c["signature"]),
                       checkpoint_message(seq, c["entry_hash"], c["ts"], _cp_every(c)))
        except InvalidSignature:
            problems.append(f"checkpoint {c.get('seq')}: signature invalid")
            continue
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(f"checkpoint {c.get('seq')}: malformed ({exc!r})")
            continue
        if seq not in by_seq:
            problems.append(f"checkpoint {seq}: signed entry is missing (log truncated or "
                            "entries removed)")
        elif by_seq[seq] != c["entry_hash"]:
            problems.append(f"checkpoint {seq}: entry hash differs from the signed one "
                            "(log rewritten)")
        else:
            good.append((seq, _cp_every(c), dict(c)))
    good.sort(key=lambda t: t[0])
    # cadence: consecutive checkpoints at most one cadence apart (the larger of the two
    # signed cadences, so a changed setting is not a false alarm)
    last_seq, last_every = 0, None
    for seq, every, _c in good:
        stated = [x for x in (last_every, every) if x is not None]
        allowed = max(stated) if stated else checkpoint_every
        if seq - last_seq > allowed:
            problems.append(f"entries {last_seq + 1}..{seq}: {seq - last_seq} entries between "
                            f"signed checkpoints, more than the cadence of {allowed} "
                            "(a required checkpoint is missing)")
        last_seq, last_every = seq, every
    tail_every = max(x for x in (last_every, checkpoint_every) if x is not None)
    if require_signed_end and n and last_seq != n:
        problems.append(f"the last entry (seq {n}) is not covered by a signed checkpoint; "
                        "every export signs one there (entries appended, removed or re-chained "
                        "after the export)")
    elif n - last_seq >= tail_every:
        problems.append(f"the log ends {n - last_seq} entries after its newest signed checkpoint "
                        f"(seq {last_seq}); the cadence of {tail_every} requires one at seq "
                        f"{last_seq + tail_every} (checkpoints deleted or log rewritten)")
    if head is not None:
        hseq, hhash = int(head[0]), head[1]
        if hseq != n or (n and by_seq.get(n) != hhash) or (not n and hhash != GENESIS):
            problems.append(f"audit_head records seq {hseq} (hash {hhash[:16]}…) but the log "
                            f"ends at seq {n}: entries were removed from the end or the log "
                            "was rewritten")
    anchor_seq = None
    if anchor is not None:
        try:
            anchor_seq = int(anchor["seq"])
            pub.verify(bytes.fromhex(anchor["signature"]),
                       checkpoint_message(anchor_seq, anchor["entry_hash"], anchor["ts"],
                                          _cp_every(anchor)))
        except InvalidSignature:
            problems.append(f"anchor checkpoint {anchor.get('seq')}: signature invalid under "
                            "this key")
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(f"anchor checkpoint: malformed ({exc!r})")
        else:
            if anchor_seq not in by_seq:
                problems.append(f"the log ends at seq {n}, before the anchored checkpoint "
                                f"{anchor_seq}: it does not extend the anchor (entries removed)")
            elif by_seq[anchor_seq] != anchor["entry_hash"]:
                problems.append(f"entry {anchor_seq} differs from the anchored checkpoint: the "
                                "log was rewritten since the anchor was taken")
    if problems:
        raise AuditVerifyError(problems)
    return VerifyReport(entries=n, checkpoints=len(cps), last_signed_seq=last_seq,
                        unsigned_tail=n - last_seq, newest_checkpoint=good[-1][2] if good else None,
                        anchor_seq=anchor_seq)
