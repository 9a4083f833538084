"""The access log: append-only, hash-chained, with Ed25519-signed checkpoints (DESIGN.md §8.9).

Entry hash (hex SHA-256)::

    entry_hash = SHA256( prev_hash + "\\n" + canonical_json(fields) )
    fields     = {seq, ts, actor_role, actor_id, action, subject_id, resource, purpose, status}
    canonical_json = JSON, keys sorted, separators (",", ":"), UTF-8
    prev_hash of seq 1 = 64 × "0"

Every ``checkpoint_every`` entries (and on every export) the service signs
``"demotrace-audit-checkpoint/1\\n{seq}\\n{entry_hash}\\n{ts}"`` with its Ed25519 key. A chain
alone detects an edited, removed or reordered entry unless the attacker rewrites every later
hash; the signed checkpoints catch that too (the attacker has no signing key), and a removed
tail is caught when a checkpoint covers it. :func:`verify` needs only the export document
(and, to pin the key, the public key obtained out of band): ``demotrace audit verify FILE``.

The export document (``format`` = ``"demotrace-audit-export/1"``) holds ``public_key`` (hex of
the 32 raw Ed25519 bytes), ``key_id``, ``entries`` (in ``seq`` order) and ``checkpoints``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError as SAIntegrityError
from sqlalchemy.orm import Session

from ..errors import ConfigError
from .errors import AuditVerifyError
from .keys import read_secret_file
from .models import AuditCheckpoint, AuditEntry, AuditHead

GENESIS = "0" * 64
EXPORT_FORMAT = "demotrace-audit-export/1"
FIELDS = ("seq", "ts", "actor_role", "actor_id", "action", "subject_id", "resource", "purpose",
          "status")
PURPOSE_AGENT_TRAINING = "agent-training"
"""The only purpose a curator may state (DESIGN.md §2.4)."""


def canonical(fields: Mapping[str, Any]) -> bytes:
    """Canonical JSON of the hashed fields (keys sorted, compact, UTF-8)."""
    return json.dumps({k: fields[k] for k in FIELDS}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode()


def entry_hash(prev_hash: str, fields: Mapping[str, Any]) -> str:
    """Hex SHA-256 of ``prev_hash + "\\n" + canonical(fields)``."""
    return hashlib.sha256(prev_hash.encode() + b"\n" + canonical(fields)).hexdigest()


def checkpoint_message(seq: int, ehash: str, ts: str) -> bytes:
    """The bytes a checkpoint signature covers."""
    return f"demotrace-audit-checkpoint/1\n{seq}\n{ehash}\n{ts}".encode()


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
    def from_file(cls, path: Path, *, create: bool = False) -> "Signer":
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
    """Appends entries and signs checkpoints in the caller's transaction."""

    def __init__(self, signer: Signer, checkpoint_every: int = 100) -> None:
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
        return their ``seq`` numbers. Signs a checkpoint whenever ``seq`` crosses a multiple of
        ``checkpoint_every``."""
        head = s.execute(select(AuditHead).where(AuditHead.id == 1).with_for_update()).scalar_one()
        seqs = []
        for a in accesses:
            fields = {"seq": head.seq + 1, "ts": now_ts(), "actor_role": actor_role[:16],
                      "actor_id": actor_id[:64], "action": a.action[:64],
                      "subject_id": a.subject_id[:64] if a.subject_id else None,
                      "resource": a.resource[:500],
                      "purpose": a.purpose[:64] if a.purpose else None, "status": status}
            h = entry_hash(head.entry_hash, fields)
            s.add(AuditEntry(**fields, prev_hash=head.entry_hash, entry_hash=h))
            head.seq, head.entry_hash = fields["seq"], h
            seqs.append(head.seq)
            if head.seq % self.checkpoint_every == 0:
                self._sign(s, head.seq, h)
        s.flush()
        return seqs

    def _sign(self, s: Session, seq: int, ehash: str) -> None:
        if s.get(AuditCheckpoint, seq) is not None:
            return
        ts = now_ts()
        s.add(AuditCheckpoint(seq=seq, entry_hash=ehash, ts=ts, key_id=self.signer.key_id,
                              signature=self.signer.sign(checkpoint_message(seq, ehash, ts))))

    def checkpoint(self, s: Session) -> int:
        """Sign a checkpoint at the current head (if any entry exists); return its seq."""
        head = s.execute(select(AuditHead).where(AuditHead.id == 1).with_for_update()).scalar_one()
        if head.seq:
            self._sign(s, head.seq, head.entry_hash)
        return head.seq


def entry_dict(e: AuditEntry) -> dict[str, Any]:
    """An entry as a plain dict (export shape)."""
    return {**{k: getattr(e, k) for k in FIELDS}, "prev_hash": e.prev_hash,
            "entry_hash": e.entry_hash}


def export_document(s: Session, public_raw: bytes, key_id: str) -> dict[str, Any]:
    """The whole log as an export document (module docstring), entries in ``seq`` order."""
    entries = [entry_dict(e) for e in s.scalars(select(AuditEntry).order_by(AuditEntry.seq))]
    cps = [{"seq": c.seq, "entry_hash": c.entry_hash, "ts": c.ts, "key_id": c.key_id,
            "signature": c.signature}
           for c in s.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.seq))]
    return {"format": EXPORT_FORMAT, "public_key": public_raw.hex(), "key_id": key_id,
            "entries": entries, "checkpoints": cps}


@dataclass(frozen=True)
class VerifyReport:
    """Result of a successful :func:`verify`: ``entries`` checked, ``checkpoints`` whose
    signature held, ``last_signed_seq`` (newest entry covered by a signature) and
    ``unsigned_tail`` (entries after it: intact as a chain, but not yet signed)."""

    entries: int
    checkpoints: int
    last_signed_seq: int
    unsigned_tail: int


def verify(doc: Mapping[str, Any], *, trusted_public_key: bytes | None = None) -> VerifyReport:
    """Check an export document: every entry hash, the chain links, ``seq`` contiguity from 1,
    every checkpoint signature and that each checkpoint matches the entry at its ``seq``.

    ``trusted_public_key``: raw 32-byte key obtained out of band; when given, the document's
    key must equal it.

    Raises:
        AuditVerifyError: lists every problem found (edited, removed, reordered entries, bad or
            foreign signatures, checkpoints beyond the end).
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
    last_signed = 0
    cps = list(doc.get("checkpoints", []))
    for c in cps:
        try:
            seq = int(c["seq"])
            pub.verify(bytes.fromhex(c["signature"]),
                       checkpoint_message(seq, c["entry_hash"], c["ts"]))
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
            last_signed = max(last_signed, seq)
    if problems:
        raise AuditVerifyError(problems)
    return VerifyReport(entries=len(entries), checkpoints=len(cps), last_signed_seq=last_signed,
                        unsigned_tail=len(entries) - last_signed)
