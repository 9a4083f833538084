"""Sealed bundles: what ``demotrace seal`` writes and what everything downstream reads.

A sealed bundle is a folder ``<home>/sealed/<session_id>/`` in the spool's own layout
(:mod:`demotrace.spool.store`: ``session.db`` with encrypted batches and manifest, ``blobs/``
with encrypted frames) plus:

- ``report.bin`` — the redaction report (JSON, AES-256-GCM, AAD ``"<session_id>:report"``):
  counts per entity type, items in / out, items dropped and why, policy version, seal time.
  It holds counts only, no content.
- ``SEALED`` — a one-line plain-text marker ``demotrace-sealed-bundle 1`` (no content).

The bundle's session manifest (``SessionManifest.extra``, encrypted with the rest) carries the
person's **consent record** as it was when the session was sealed (DESIGN.md §8.1): string keys
``consent_policy_version``, ``consent_notice_sha256``, ``consent_accepted_utc`` (see
:mod:`demotrace.privacy.consent`). They are added, never required, so bundles sealed before
this existed still open (their :attr:`BundleReader.consent` is ``None``; a collector refuses
them until they are sealed again). ``consent_scope_sha256`` (the record's
:attr:`~demotrace.privacy.consent.ConsentRecord.scope_sha256`, the digest of the effective
capture rules accepted, :attr:`demotrace.privacy.policy.Policy.scope_sha256`) is added when the
record has one; bundles sealed before it was carried, or from a record made before scope
digests existed, lack it, and the collector accepts them without a scope check
(:func:`demotrace.server.policies.check_consent`).

Bundles are encrypted with a **bundle key** derived from the person's data key with HKDF-SHA256
(info ``"demotrace sealed bundle v1"``), so a raw spool batch can never be passed off as sealed
data (different key), and destroying the data key destroys both (crypto-shredding).

:class:`BundleReader` has the same read interface as :class:`demotrace.spool.SessionReader`
(``session_id``, ``manifest``, ``iter_events()``, ``iter_batches()``, ``read_blob(id)``,
``has_blob(id)``, ``blob_ids()``, ``events_since(t_ns)``, ``stats()``, ``close()``, context manager), so the dataset
builder reads sealed bundles instead of the raw spool: nothing but seal and review reads the
raw spool (DESIGN.md §2.3).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import DecryptionError, SessionNotFound, SpoolCorrupt
from ..paths import Paths
from ..schema.events import Event
from ..schema.manifest import SessionManifest
from ..spool import DataKey
from ..spool.store import SessionReader, SessionStats

SEALED_DIR = "sealed"
MARKER = "SEALED"
MARKER_TEXT = "demotrace-sealed-bundle 1\n"
REPORT = "report.bin"
CONSENT_KEYS = ("consent_policy_version", "consent_notice_sha256", "consent_accepted_utc")
"""Keys of the consent record in a sealed session manifest's ``extra`` (module docstring)."""
CONSENT_SCOPE_KEY = "consent_scope_sha256"
"""Optional key: the consent record's scope digest (module docstring)."""


def consent_extra(record: Any) -> dict[str, str]:
    """The manifest ``extra`` entries for a :class:`demotrace.privacy.consent.ConsentRecord`
    (``{}`` for ``None``); ``consent_scope_sha256`` only when the record has a scope digest."""
    if record is None:
        return {}
    out = {"consent_policy_version": str(record.policy_version),
           "consent_notice_sha256": record.notice_sha256,
           "consent_accepted_utc": record.accepted_utc}
    scope = getattr(record, "scope_sha256", None)
    if scope:
        out[CONSENT_SCOPE_KEY] = str(scope)
    return out


def consent_from_extra(extra: dict[str, str]) -> dict[str, Any] | None:
    """The consent record in a manifest's ``extra`` as ``{"policy_version": int,
    "notice_sha256": str, "accepted_utc": str}`` plus ``"scope_sha256": str`` when the bundle
    carries one (the shape of ``consent.json``), or ``None`` when the bundle carries none or an
    unreadable one (fail closed: a collector refuses it). A scope digest is passed on as
    stored; the collector checks its form and value."""
    try:
        version = int(extra["consent_policy_version"])
        digest = str(extra["consent_notice_sha256"])
        accepted = str(extra["consent_accepted_utc"])
    except (KeyError, ValueError, TypeError):
        return None
    if version < 1 or len(digest) != 64 or not accepted:
        return None
    out: dict[str, Any] = {"policy_version": version, "notice_sha256": digest,
                           "accepted_utc": accepted}
    if CONSENT_SCOPE_KEY in extra:
        out["scope_sha256"] = str(extra[CONSENT_SCOPE_KEY])
    return out


def sealed_root(paths: Paths) -> Path:
    """``<home>/sealed`` — the folder of sealed bundles."""
    return paths.home / SEALED_DIR


def bundle_key(paths: Paths) -> DataKey:
    """The bundle key derived from the person's data key file (see module doc).

    Raises:
        KeyMissing / ConfigError: as :meth:`demotrace.spool.DataKey.load` (missing key file or
            unsafe permissions).
    """
    DataKey.load(paths.key_file)  # validates existence, size and mode 0600
    raw = paths.key_file.read_bytes()
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"demotrace sealed bundle v1").derive(raw)
    return DataKey(derived)


def report_aad(session_id: str) -> bytes:
    """Associated data binding a report to its session."""
    return f"{session_id}:report".encode()


class BundleReader:
    """Reads one sealed bundle (same interface as :class:`demotrace.spool.SessionReader`)."""

    def __init__(self, folder: Path, key: DataKey) -> None:
        if not (folder / MARKER).is_file():
            raise SessionNotFound(f"{folder} is not a sealed bundle (no {MARKER} marker); run `demotrace seal`")
        self.folder = folder
        self._reader = SessionReader(folder, key, folder.name)
        self.key = key
        self.session_id: str = folder.name
        self.manifest: SessionManifest = self._reader.manifest

    @property
    def consent(self) -> dict[str, Any] | None:
        """The consent record the bundle was sealed under (see :func:`consent_from_extra`),
        or ``None`` for bundles sealed without one."""
        return consent_from_extra(dict(self.manifest.extra))

    @property
    def report(self) -> dict[str, Any]:
        """The decrypted redaction report (see module doc).

        Raises:
            SpoolCorrupt: missing or fails authentication.
        """
        try:
            data = (self.folder / REPORT).read_bytes()
            return json.loads(self.key.decrypt(data, report_aad(self.session_id)))  # type: ignore[no-any-return]
        except (OSError, DecryptionError, ValueError) as exc:
            raise SpoolCorrupt(f"bundle {self.session_id}: redaction report unreadable: {exc}") from exc

    def iter_batches(self) -> Iterator[list[Event]]:
        """Decrypted batches in ``seq`` order."""
        return self._reader.iter_batches()

    def iter_events(self) -> Iterator[Event]:
        """Every (redacted) event in ``seq`` order."""
        return self._reader.iter_events()

    def read_blob(self, blob_id: str) -> bytes:
        """A redacted, encoded frame (PNG or WebP as the ``Frame.format`` says; sealing re-encodes raw JPEG frames)."""
        return self._reader.read_blob(blob_id)

    def has_blob(self, blob_id: str) -> bool:
        """True if the blob is in the bundle."""
        return self._reader.has_blob(blob_id)

    def events_since(self, t_ns: int) -> int:
        """Number of events whose batch ends at or after ``t_ns`` (approximate, for display)."""
        return self._reader.events_since(t_ns)

    def blob_ids(self) -> list[str]:
        """Ids of every frame blob in the bundle."""
        return self._reader.blob_ids()

    def stats(self) -> SessionStats:
        """Counts and size (see :class:`demotrace.spool.SessionStats`)."""
        return self._reader.stats()

    def close(self) -> None:
        """Close the database."""
        self._reader.close()

    def __enter__(self) -> "BundleReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def bundle_ids(paths: Paths) -> list[str]:
    """Ids of every sealed bundle, oldest first."""
    root = sealed_root(paths)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / MARKER).is_file() and not p.name.startswith("."))


def open_bundle(paths: Paths, session_id: str) -> BundleReader:
    """Open the sealed bundle of ``session_id``.

    Raises:
        SessionNotFound: no such bundle (fix: ``demotrace seal SESSION_ID``).
    """
    if not session_id or "/" in session_id or session_id.startswith("."):
        raise SessionNotFound(f"invalid session id {session_id!r}")
    folder = sealed_root(paths) / session_id
    if not (folder / MARKER).is_file():
        raise SessionNotFound(f"no sealed bundle {session_id!r} in {sealed_root(paths)}; run `demotrace seal {session_id}`")
    return BundleReader(folder, bundle_key(paths))


def delete_bundle(paths: Paths, session_id: str) -> bool:
    """Delete a sealed bundle; True if one existed."""
    folder = sealed_root(paths) / session_id
    if folder.is_dir() and not session_id.startswith(".") and "/" not in session_id:
        shutil.rmtree(folder)
        return True
    return False


_SEALING_RE = re.compile(r"^\.(?P<sid>.+)\.sealing-(?P<pid>\d+)$")


def clean_stale_sealing(paths: Paths) -> list[str]:
    """Remove the temporary folders ``<home>/sealed/.<session_id>.sealing-<pid>`` that a
    killed seal left behind — those whose ``pid`` is no longer a live process (checked with
    ``os.kill(pid, 0)``; a live pid, even another program's, is left alone: fail safe). Listings
    never show them (:func:`~.bundle.bundle_ids` skips dot-folders). Returns the removed names."""
    root = sealed_root(paths)
    if not root.is_dir():
        return []
    gone = []
    for p in root.iterdir():
        m = _SEALING_RE.match(p.name)
        if m is None or not p.is_dir() or int(m.group("pid")) == os.getpid():
            continue
        try:
            os.kill(int(m.group("pid")), 0)
            continue  # alive (or EPERM below): a seal may still be writing it
        except ProcessLookupError:
            pass
        except (PermissionError, OverflowError, ValueError):
            continue
        shutil.rmtree(p, ignore_errors=True)
        gone.append(p.name)
    return gone
