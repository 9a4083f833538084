"""The local spool: one encrypted, crash-safe folder per session.

Layout of ``<spool>/<session_id>/``::

    session.db          SQLite (WAL): tables meta, batches, blobs — payloads encrypted
    blobs/ab/abcd…      encrypted content-addressed blobs (encoded frames)

- Events are appended in **batches** (one transaction and one AES-GCM payload per batch; the
  recorder flushes at least every 0.5 s), never one transaction per event. A batch is a
  MessagePack array of schema-v1 events, encrypted with AAD ``"<session_id>:<first_seq>"``.
- ``batches`` keeps in clear only ``first_seq``, ``last_seq``, ``n`` and the ``t_ns`` range (for
  crash recovery and "forget the last N minutes"); keystrokes, titles and pixels are only
  ever stored encrypted — temporary files included (blobs are encrypted before they are written
  to a temp file and renamed).
- Durability: WAL with ``synchronous=NORMAL`` — a committed batch survives ``kill -9`` of the
  recorder; a power loss may lose the last transactions.
- The manifest (:class:`~demotrace.schema.SessionManifest`) is stored encrypted in ``meta``.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec

from ..errors import DecryptionError, SchemaError, SessionNotFound, SpoolCorrupt, SpoolError
from ..schema.events import Event, decode_batch, encode_batch
from ..schema.manifest import SessionManifest
from .crypto import DataKey

DB_NAME = "session.db"
BLOB_DIR = "blobs"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    first_seq INTEGER PRIMARY KEY,
    last_seq INTEGER NOT NULL,
    n INTEGER NOT NULL,
    t_first_ns INTEGER NOT NULL,
    t_last_ns INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS blobs (
    id TEXT PRIMARY KEY,
    format TEXT NOT NULL,
    size INTEGER NOT NULL
);
"""


def _connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    else:
        con = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
    con.execute("PRAGMA busy_timeout=5000")
    return con


def _connect_reader(db: Path) -> sqlite3.Connection:
    """A connection for :class:`SessionReader`: the usual one (:func:`_connect`) when the
    session folder is writable; otherwise (a read-only mount, or a folder this user may not
    write — bug bash 4 F18: ``review list`` failed on such a home) a read-only one that creates
    nothing: ``mode=ro``, which reads a WAL database whose ``-wal`` / ``-shm`` files exist (a
    crashed session), else ``immutable=1`` (a cleanly closed session: SQLite then takes no locks
    and reads no WAL, which nothing can be writing on a folder that cannot be written)."""
    if os.access(db.parent, os.W_OK):
        return _connect(db)
    from urllib.request import pathname2url

    last: sqlite3.Error | None = None
    for query in ("mode=ro", "mode=ro&immutable=1"):
        con = sqlite3.connect(f"file:{pathname2url(str(db))}?{query}", uri=True, check_same_thread=False)
        try:
            con.execute("SELECT COUNT(*) FROM meta").fetchone()
            return con
        except sqlite3.Error as exc:
            last = exc
            con.close()
    assert last is not None
    raise last


def _manifest_aad(session_id: str) -> bytes:
    return f"{session_id}:manifest".encode()


def _batch_aad(session_id: str, first_seq: int) -> bytes:
    return f"{session_id}:{first_seq}".encode()


def _blob_aad(blob_id: str) -> bytes:
    return f"blob:{blob_id}".encode()


@dataclass(frozen=True)
class SessionStats:
    """Counts of one session: ``events`` (total), ``batches``, ``blobs``, ``bytes_on_disk``
    (all files of the session folder), ``t_last_ns`` (newest event time, or ``None``)."""

    events: int
    batches: int
    blobs: int
    bytes_on_disk: int
    t_last_ns: int | None


class _SessionBase:
    def __init__(self, folder: Path, key: DataKey, session_id: str) -> None:
        self.folder = folder
        self.key = key
        self.session_id = session_id
        self._blob_root = folder / BLOB_DIR

    def _blob_path(self, blob_id: str) -> Path:
        if len(blob_id) < 8 or not all(c in "0123456789abcdef" for c in blob_id):
            raise SpoolError(f"invalid blob id {blob_id!r}")
        return self._blob_root / blob_id[:2] / blob_id

    def has_blob(self, blob_id: str) -> bool:
        """True if the blob is stored."""
        return self._blob_path(blob_id).exists()

    def read_blob(self, blob_id: str) -> bytes:
        """Decrypt and return a stored blob (e.g. an encoded WebP frame).

        Raises:
            SpoolError: no such blob. SpoolCorrupt: it fails authentication.
        """
        path = self._blob_path(blob_id)
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise SpoolError(f"blob {blob_id} not found in session {self.session_id}") from exc
        try:
            return self.key.decrypt(data, _blob_aad(blob_id))
        except DecryptionError as exc:
            raise SpoolCorrupt(f"blob {blob_id} of session {self.session_id}: {exc}") from exc


class SessionWriter(_SessionBase):
    """Appends to one session. Thread-safe; normally used by the recorder's writer thread."""

    def __init__(self, folder: Path, key: DataKey, manifest: SessionManifest) -> None:
        super().__init__(folder, key, manifest.session_id)
        self.manifest = manifest
        self._lock = threading.Lock()
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        self._blob_root.mkdir(exist_ok=True)
        os.chmod(self._blob_root, 0o700)
        db = folder / DB_NAME
        try:  # created 0600 before SQLite opens it: its -wal / -shm files take the database
            # file's mode (bug bash 4: they were 0644 while recording). Never open an existing
            # database here: closing a descriptor drops this process's POSIX locks on it.
            os.close(os.open(db, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass
        self._con = _connect(db)
        self._con.executescript(_SCHEMA)
        for f in (db, folder / f"{DB_NAME}-wal", folder / f"{DB_NAME}-shm"):
            if f.exists():
                os.chmod(f, 0o600)
        self._write_manifest()
        row = self._con.execute("SELECT MAX(last_seq) FROM batches").fetchone()
        self.next_seq = 0 if row[0] is None else row[0] + 1

    def _write_manifest(self) -> None:
        payload = self.key.encrypt(msgspec.msgpack.encode(self.manifest), _manifest_aad(self.session_id))
        self._con.execute("INSERT OR REPLACE INTO meta (k, v) VALUES ('manifest', ?)", (payload,))

    def append(self, events: list[Event]) -> None:
        """Durably append a batch of events in one transaction.

        ``events`` must be non-empty with strictly increasing, contiguous ``seq`` continuing
        the session. Raises :class:`SchemaError` otherwise.
        """
        if not events:
            return
        first, last = events[0].seq, events[-1].seq
        if last - first + 1 != len(events):
            raise SchemaError(f"batch seqs {first}..{last} are not contiguous ({len(events)} events)")
        t_first = min(e.t_ns for e in events)
        t_last = max(e.t_ns for e in events)
        payload = self.key.encrypt(encode_batch(events), _batch_aad(self.session_id, first))
        with self._lock:
            self._con.execute(
                "INSERT INTO batches (first_seq, last_seq, n, t_first_ns, t_last_ns, payload)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (first, last, len(events), t_first, t_last, payload),
            )
            self.next_seq = last + 1

    def put_blob(self, blob_id: str, data: bytes, fmt: str) -> bool:
        """Store ``data`` (already encoded, e.g. WebP) under ``blob_id`` unless present.

        The file is encrypted before it touches the disk (temp file + rename). Returns True if
        it was written, False if it was already there (deduplicated).
        """
        path = self._blob_path(blob_id)
        if path.exists():
            return False
        path.parent.mkdir(mode=0o700, exist_ok=True)
        sealed = self.key.encrypt(data, _blob_aad(blob_id))
        tmp = path.with_name(f".{blob_id}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, sealed)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        with self._lock:
            self._con.execute(
                "INSERT OR IGNORE INTO blobs (id, format, size) VALUES (?, ?, ?)",
                (blob_id, fmt, len(data)),
            )
        return True

    def close(self, duration_ns: int | None = None) -> None:
        """Mark the session ended cleanly and close the database (checkpointing the WAL).

        Raises:
            SpoolError: the database could not be updated (e.g. the disk is full — bug bash 4
                got a bare ``sqlite3.OperationalError``); the connection is closed anyway, and
                every batch committed before stays readable (the session then reads as not
                ended, which ``seal`` recovers as a crashed session).
        """
        with self._lock:
            self.manifest.ended = True
            if duration_ns is not None:
                self.manifest.duration_ns = duration_ns
            try:
                self._write_manifest()
                self._con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                raise SpoolError(f"session {self.session_id}: could not finish its database in {self.folder}"
                                 f" ({exc}; disk full?). What was stored before is kept: free space, then"
                                 " `demotrace seal` recovers it") from exc
            finally:
                self._con.close()


class SessionReader(_SessionBase):
    """Reads one session (also one whose recorder crashed: everything committed is valid)."""

    def __init__(self, folder: Path, key: DataKey, session_id: str) -> None:
        super().__init__(folder, key, session_id)
        #: batches the last ``iter_batches(skip_corrupt=True)`` left out: (first_seq, last_seq, error)
        self.skipped: list[tuple[int, int, str]] = []
        db = folder / DB_NAME
        if not db.exists():
            raise SessionNotFound(f"no session {session_id!r} in {folder.parent}")
        try:
            self._con = _connect_reader(db)
            row = self._con.execute("SELECT v FROM meta WHERE k = 'manifest'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise SpoolCorrupt(f"session {session_id}: database unreadable: {exc}") from exc
        if row is None:
            raise SpoolCorrupt(f"session {session_id}: manifest missing")
        try:
            raw = key.decrypt(row[0], _manifest_aad(session_id))
        except DecryptionError as exc:
            raise SpoolCorrupt(f"session {session_id}: manifest: {exc}") from exc
        self.manifest = msgspec.msgpack.decode(raw, type=SessionManifest)

    def close(self) -> None:
        """Close the database connection."""
        self._con.close()

    def __enter__(self) -> "SessionReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def iter_batches(self, *, skip_corrupt: bool = False) -> Iterator[list[Event]]:
        """Yield decrypted batches in ``seq`` order. With ``skip_corrupt``, a batch that fails
        authentication or decoding is left out and recorded in :attr:`skipped` as ``(first_seq,
        last_seq, error)`` instead (bug bash 4: one flipped byte made a 151-batch session
        unusable; ``seal`` now keeps the other 150).

        Raises:
            SpoolCorrupt: a batch fails authentication or decoding (names seq range), unless
                ``skip_corrupt``.
        """
        self.skipped = []
        cur = self._con.execute("SELECT first_seq, last_seq, payload FROM batches ORDER BY first_seq")
        for first, last, payload in cur:
            try:
                plain = self.key.decrypt(payload, _batch_aad(self.session_id, first))
                batch = decode_batch(plain)
            except (DecryptionError, SchemaError) as exc:
                if skip_corrupt:
                    self.skipped.append((first, last, str(exc)))
                    continue
                raise SpoolCorrupt(
                    f"session {self.session_id}: batch seq {first}..{last}: {exc}"
                ) from exc
            yield batch

    def iter_events(self, *, skip_corrupt: bool = False) -> Iterator[Event]:
        """Yield every event in ``seq`` (arrival) order. Consumers that need time order sort by
        ``(t_ns, seq)`` (see :func:`demotrace.schema.sort_key`). ``skip_corrupt``: as
        :meth:`iter_batches`."""
        for batch in self.iter_batches(skip_corrupt=skip_corrupt):
            yield from batch

    def events_since(self, t_ns: int) -> int:
        """Number of stored events whose batch ends at or after ``t_ns`` (approximate, for
        display)."""
        row = self._con.execute("SELECT COALESCE(SUM(n), 0) FROM batches WHERE t_last_ns >= ?", (t_ns,)).fetchone()
        return int(row[0])

    def blob_ids(self) -> list[str]:
        """Ids of all stored blobs."""
        return [r[0] for r in self._con.execute("SELECT id FROM blobs ORDER BY id")]

    def stats(self) -> SessionStats:
        """Counts and size of the session (see :class:`SessionStats`)."""
        n, b, t_last = self._con.execute(
            "SELECT COALESCE(SUM(n), 0), COUNT(*), MAX(t_last_ns) FROM batches"
        ).fetchone()
        blobs = self._con.execute("SELECT COUNT(*) FROM blobs").fetchone()[0]
        size = sum(p.stat().st_size for p in self.folder.rglob("*") if p.is_file())
        return SessionStats(events=int(n), batches=int(b), blobs=int(blobs), bytes_on_disk=size, t_last_ns=t_last)


class Spool:
    """The set of sessions under one spool folder, all encrypted with one :class:`DataKey`."""

    def __init__(self, root: Path, key: DataKey, *, readonly: bool = False) -> None:
        """``readonly`` (keyword, added for bug bash 4 F18; default as before): create and
        change nothing — ``root`` may be missing (no sessions) or on a read-only mount. Otherwise
        ``root`` is created if missing and made 0700 (its mode is only changed when it differs,
        so an existing private spool is not written to by opening it)."""
        self.root = root
        self.key = key
        if readonly:
            return
        if not root.is_dir():
            root.mkdir(parents=True, exist_ok=True)
        if stat.S_IMODE(root.stat().st_mode) != 0o700:
            os.chmod(root, 0o700)

    def _folder(self, session_id: str) -> Path:
        if not session_id or "/" in session_id or session_id.startswith("."):
            raise SessionNotFound(f"invalid session id {session_id!r}")
        return self.root / session_id

    def create(self, manifest: SessionManifest) -> SessionWriter:
        """Start a new session folder.

        Raises:
            SpoolError: a session with that id already exists.
        """
        folder = self._folder(manifest.session_id)
        if folder.exists():
            raise SpoolError(f"session {manifest.session_id} already exists")
        return SessionWriter(folder, self.key, manifest)

    def open(self, session_id: str) -> SessionReader:
        """Open a session for reading.

        Raises:
            SessionNotFound: no such session (fix: ``demotrace sessions list``).
        """
        folder = self._folder(session_id)
        if not folder.is_dir():
            raise SessionNotFound(
                f"no session {session_id!r} in {self.root}; see `demotrace sessions list`"
            )
        return SessionReader(folder, self.key, session_id)

    def session_ids(self) -> list[str]:
        """Ids of every session folder, oldest first (ids sort by start time)."""
        if not self.root.exists():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / DB_NAME).exists())

    def forget_after(self, session_id: str, t_ns: int) -> tuple[int, int]:
        """Destroy every event of a session with ``t_ns >= t_ns`` (monotonic ns since session
        start) and every blob no remaining event references; return ``(events_removed,
        blobs_removed)``. Added for ``demotrace review forget`` (additive; nothing else changes).

        Batches wholly after the cut are deleted; a batch straddling it is re-encrypted with
        only its earlier events (same ``first_seq``, so its AAD still binds it). SQLite's
        ``secure_delete`` zeroes freed pages and the WAL is truncated, so no ciphertext of the
        forgotten data stays in the database files. A recorder still writing this session
        should be paused first (its later events are not affected).

        Raises:
            SessionNotFound: no such session. SpoolCorrupt: a batch fails authentication.
        """
        from ..schema.events import Frame

        folder = self._folder(session_id)
        if not (folder / DB_NAME).exists():
            raise SessionNotFound(f"no session {session_id!r} in {self.root}")
        con = _connect(folder / DB_NAME)
        try:
            con.execute("PRAGMA secure_delete=ON")
            removed = 0
            con.execute("BEGIN IMMEDIATE")
            rows = con.execute(
                "SELECT first_seq, last_seq, n, t_first_ns, t_last_ns, payload FROM batches WHERE t_last_ns >= ?",
                (t_ns,),
            ).fetchall()
            for first, last, n, t_first, _t_last, payload in rows:
                if t_first >= t_ns:
                    con.execute("DELETE FROM batches WHERE first_seq = ?", (first,))
                    removed += n
                    continue
                try:
                    events = decode_batch(self.key.decrypt(payload, _batch_aad(session_id, first)))
                except (DecryptionError, SchemaError) as exc:
                    con.execute("ROLLBACK")
                    raise SpoolCorrupt(f"session {session_id}: batch seq {first}..{last}: {exc}") from exc
                keep = [e for e in events if e.t_ns < t_ns]
                removed += len(events) - len(keep)
                con.execute("DELETE FROM batches WHERE first_seq = ?", (first,))
                # re-store what is kept as batches of contiguous seqs (each its own AAD)
                runs: list[list[Event]] = []
                for e in keep:
                    if runs and runs[-1][-1].seq + 1 == e.seq:
                        runs[-1].append(e)
                    else:
                        runs.append([e])
                for part in runs:
                    con.execute(
                        "INSERT INTO batches (first_seq, last_seq, n, t_first_ns, t_last_ns, payload)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        (part[0].seq, part[-1].seq, len(part), min(e.t_ns for e in part),
                         max(e.t_ns for e in part),
                         self.key.encrypt(encode_batch(part), _batch_aad(session_id, part[0].seq))),
                    )
            con.execute("COMMIT")
            referenced: set[str] = set()
            for (first, payload) in con.execute("SELECT first_seq, payload FROM batches"):
                try:
                    evs = decode_batch(self.key.decrypt(payload, _batch_aad(session_id, first)))
                except (DecryptionError, SchemaError) as exc:
                    raise SpoolCorrupt(f"session {session_id}: batch seq {first}: {exc}") from exc
                referenced.update(e.blob for e in evs if isinstance(e, Frame))
            blobs_removed = 0
            base = _SessionBase(folder, self.key, session_id)
            for (bid,) in con.execute("SELECT id FROM blobs").fetchall():
                if bid in referenced:
                    continue
                try:
                    base._blob_path(bid).unlink()
                except FileNotFoundError:
                    pass
                con.execute("DELETE FROM blobs WHERE id = ?", (bid,))
                blobs_removed += 1
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return removed, blobs_removed
        finally:
            con.close()

    def delete(self, session_id: str) -> None:
        """Delete a session's folder entirely (events, blobs, WAL files)."""
        folder = self._folder(session_id)
        if not folder.is_dir():
            raise SessionNotFound(f"no session {session_id!r} in {self.root}")
        shutil.rmtree(folder)
