"""Fixed-text SQL of the collector's ingest path (manifest → missing blobs → blobs → commit).

Why not the ORM here: a py-spy profile of ``bench/ingest.py`` (server holding the GIL) put
54 % of the server's Python time in the database layer, 39 % in SQLAlchemy's own frames —
ORM identity-map loads, unit-of-work flushes and the cache key computed for every Core
``select()`` on every execution. The ingest path runs a handful of statements per request,
so each is written once as a :func:`sqlalchemy.text` object (its cache key is its string),
executed on the session's Core connection (same transaction, no ORM layer), and the
statements are merged where one round trip can answer two questions (a batch's sizes, which
of its blobs are already stored and the bundle's state in one query; the blobs a new bundle
lacks from the size check's answer instead of a second query).

Lists travel as one parameter so every statement keeps one SQL text whatever the batch size:
a PostgreSQL array (``= ANY(CAST(:shas AS text[]))``, ``unnest(…)``) or, on SQLite, a JSON
array read with ``json_each`` (SQLite ≥ 3.38 has JSON built in; Debian 12 ships 3.40).

Statements are the same questions the ORM code asked before (tests in
``tests/test_server_storage.py`` / ``test_server_upload.py`` run them on both databases).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import BigInteger, Date, DateTime, Integer, LargeBinary, String, bindparam, text
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import TextClause


@dataclass(frozen=True)
class BatchRow:
    """One member of a bundle as :meth:`IngestSql.members` sees it: ``sha256``, declared
    ``size`` (bytes), whether the person already ``stored`` a blob with that sha256."""

    sha256: str
    size: int
    stored: bool


@dataclass(frozen=True)
class BundleRef:
    """The columns of a ``bundles`` row the ingest path needs (``committed_at`` is UTC)."""

    pk: int
    bundle_id: str
    device_id: str
    state: str
    n_blobs: int
    total_bytes: int
    committed_at: datetime | None


_BUNDLE_COLS = "b.pk, b.bundle_id, b.device_id, b.state, b.n_blobs, b.total_bytes, b.committed_at"
_TS = DateTime(timezone=True)


class IngestSql:
    """The statements for one database ``dialect`` (``"postgresql"`` or ``"sqlite"``), built
    once per collector. Every method takes the session's Core :class:`Connection`
    (``session.connection()``) and runs in the caller's transaction."""

    def __init__(self, dialect: str) -> None:
        self.pg = dialect == "postgresql"

        def any_of(name: str) -> str:
            return (f"= ANY(CAST(:{name} AS text[]))" if self.pg
                    else f"IN (SELECT value FROM json_each(:{name}))")

        def t(sql: str, *types: Any) -> TextClause:
            return text(sql).bindparams(*types) if types else text(sql)

        # typed result columns (SQLite hands DATETIME back as text)
        self._bundle = t(f"SELECT {_BUNDLE_COLS} FROM bundles b WHERE b.subject_id = :sid "
                         "AND b.bundle_id = :bid").columns(
            pk=Integer, bundle_id=String, device_id=String, state=String, n_blobs=Integer,
            total_bytes=BigInteger, committed_at=_TS)
        self._tombstone = t("SELECT 1 FROM session_tombstones WHERE subject_id = :sid "
                            "AND session_key = :key")
        self._open_count = t("SELECT count(*) FROM bundles WHERE subject_id = :sid "
                             "AND device_id = :dev AND state = 'open'")
        self._stored_sizes = t(f"SELECT sha256, size FROM blobs WHERE subject_id = :sid "
                               f"AND sha256 {any_of('shas')}")
        self._insert_bundle = t(
            "INSERT INTO bundles (bundle_id, subject_id, device_id, state, platform, manifest_ct, "
            "n_blobs, total_bytes, created_at) VALUES (:bid, :sid, :dev, 'open', :platform, "
            ":manifest_ct, :n_blobs, :total_bytes, :now) RETURNING pk",
            bindparam("manifest_ct", type_=LargeBinary), bindparam("now", type_=_TS))
        if self.pg:
            self._insert_members = t(
                "INSERT INTO bundle_blobs (bundle_pk, sha256, size, path) "
                "SELECT :pk, u.sha256, u.size, u.path FROM unnest(CAST(:shas AS text[]), "
                "CAST(:sizes AS bigint[]), CAST(:paths AS text[])) AS u(sha256, size, path)")
            self._insert_blobs = t(
                "INSERT INTO blobs (subject_id, sha256, size, stored_name, created_at) "
                "SELECT :sid, u.sha256, u.size, u.stored_name, :now FROM unnest("
                "CAST(:shas AS text[]), CAST(:sizes AS bigint[]), CAST(:names AS text[])) "
                "AS u(sha256, size, stored_name) "
                "ON CONFLICT (subject_id, sha256) DO NOTHING RETURNING sha256",
                bindparam("now", type_=_TS))
        else:
            # one JSON array of [sha256, size, text] triples
            self._insert_members = t(
                "INSERT INTO bundle_blobs (bundle_pk, sha256, size, path) "
                "SELECT :pk, json_extract(value, '$[0]'), json_extract(value, '$[1]'), "
                "json_extract(value, '$[2]') FROM json_each(:rows)")
            self._insert_blobs = t(
                "INSERT INTO blobs (subject_id, sha256, size, stored_name, created_at) "
                "SELECT :sid, json_extract(value, '$[0]'), json_extract(value, '$[1]'), "
                "json_extract(value, '$[2]'), :now FROM json_each(:rows) WHERE true "
                "ON CONFLICT (subject_id, sha256) DO NOTHING RETURNING sha256",
                bindparam("now", type_=_TS))
        member_cols = ("SELECT bb.sha256, bb.size, s.sha256 IS NOT NULL AS stored "
                       "FROM bundle_blobs bb LEFT JOIN blobs s "
                       "ON s.subject_id = :sid AND s.sha256 = bb.sha256 WHERE bb.bundle_pk = :pk")
        self._members = t(member_cols)
        self._members_of = t(f"{member_cols} AND bb.sha256 {any_of('shas')}")
        self._missing = t("SELECT bb.sha256 FROM bundle_blobs bb WHERE bb.bundle_pk = :pk AND NOT "
                          "EXISTS (SELECT 1 FROM blobs s WHERE s.subject_id = :sid "
                          "AND s.sha256 = bb.sha256)")
        self._mark_committed = t("UPDATE bundles SET state = 'committed', committed_at = :now "
                                 "WHERE pk = :pk AND state <> 'committed'",
                                 bindparam("now", type_=_TS))
        self._upload_day = t("UPDATE credentials SET last_upload_day = :day WHERE id = :dev "
                             "AND (last_upload_day IS NULL OR last_upload_day < :day)",
                             bindparam("day", type_=Date))
        self._sync_off = text("SET LOCAL synchronous_commit = off") if self.pg else None

    def _list(self, values: Sequence[Any]) -> Any:
        return list(values) if self.pg else json.dumps(list(values))

    # -- reads ----------------------------------------------------------------------------------
    def bundle(self, conn: Connection, subject_id: str, bundle_id: str) -> BundleRef | None:
        """The person's bundle ``bundle_id``, or ``None``."""
        r = conn.execute(self._bundle, {"sid": subject_id, "bid": bundle_id}).first()
        return None if r is None else BundleRef(*r)

    def tombstoned(self, conn: Connection, subject_id: str, session_key: str) -> bool:
        """Whether a session tombstone with this keyed hash exists for the person."""
        return conn.execute(self._tombstone, {"sid": subject_id, "key": session_key}).first() is not None

    def open_uploads(self, conn: Connection, subject_id: str, device_id: str) -> int:
        """How many of the person's bundles registered by ``device_id`` are still open."""
        return int(conn.execute(self._open_count, {"sid": subject_id, "dev": device_id}).scalar_one())

    def stored_sizes(self, conn: Connection, subject_id: str, shas: Sequence[str]) -> dict[str, int]:
        """``{sha256: size}`` of the person's stored blobs among ``shas``."""
        return {h: int(n) for h, n in conn.execute(
            self._stored_sizes, {"sid": subject_id, "shas": self._list(shas)})}

    def members(self, conn: Connection, subject_id: str, pk: int,
                shas: Sequence[str] | None = None) -> list[BatchRow]:
        """Members of bundle ``pk`` (only those in ``shas`` when given) with their declared
        size and whether the person already stored them."""
        if shas is None:
            rows = conn.execute(self._members, {"sid": subject_id, "pk": pk})
        else:
            rows = conn.execute(self._members_of, {"sid": subject_id, "pk": pk,
                                                   "shas": self._list(shas)})
        return [BatchRow(h, int(n), bool(st)) for h, n, st in rows]

    def missing(self, conn: Connection, subject_id: str, pk: int) -> list[str]:
        """sha256 of every member of bundle ``pk`` the person has not stored."""
        return [h for (h,) in conn.execute(self._missing, {"sid": subject_id, "pk": pk})]

    # -- writes ---------------------------------------------------------------------------------
    def async_commit(self, conn: Connection) -> None:
        """PostgreSQL: this transaction commits without waiting for its WAL flush (SQLite:
        nothing)."""
        if self._sync_off is not None:
            conn.execute(self._sync_off)

    def insert_bundle(self, conn: Connection, *, subject_id: str, bundle_id: str, device_id: str,
                      platform: str, manifest_ct: bytes, n_blobs: int, total_bytes: int,
                      now: datetime) -> int:
        """Insert an open bundle; return its ``pk``. Raises SQLAlchemy's IntegrityError if the
        person already has it (a concurrent begin)."""
        return int(conn.execute(self._insert_bundle, {
            "bid": bundle_id, "sid": subject_id, "dev": device_id, "platform": platform,
            "manifest_ct": manifest_ct, "n_blobs": n_blobs, "total_bytes": total_bytes,
            "now": now}).scalar_one())

    def insert_members(self, conn: Connection, pk: int,
                       rows: Iterable[tuple[str, int, str]]) -> None:
        """Insert ``(sha256, size, path)`` members of bundle ``pk``."""
        rows = list(rows)
        if self.pg:
            conn.execute(self._insert_members, {"pk": pk, "shas": [r[0] for r in rows],
                                                "sizes": [r[1] for r in rows],
                                                "paths": [r[2] for r in rows]})
        else:
            conn.execute(self._insert_members, {"pk": pk, "rows": json.dumps(rows)})

    def insert_blobs(self, conn: Connection, subject_id: str, now: datetime,
                     rows: Sequence[tuple[str, int, str]]) -> int:
        """Insert ``(sha256, size, stored_name)`` blobs of the person, skipping those already
        there (a concurrent retry won); return how many this call added."""
        if self.pg:
            params = {"sid": subject_id, "now": now, "shas": [r[0] for r in rows],
                      "sizes": [r[1] for r in rows], "names": [r[2] for r in rows]}
        else:
            params = {"sid": subject_id, "now": now, "rows": json.dumps(list(rows))}
        return len(conn.execute(self._insert_blobs, params).all())

    def mark_committed(self, conn: Connection, pk: int, now: datetime) -> bool:
        """Set bundle ``pk`` committed at ``now`` unless it already is; return whether it changed."""
        return bool(conn.execute(self._mark_committed, {"pk": pk, "now": now}).rowcount)

    def note_upload_day(self, conn: Connection, device_id: str, day: date) -> None:
        """Move the device credential's ``last_upload_day`` forward to ``day`` (never back)."""
        conn.execute(self._upload_day, {"dev": device_id, "day": day})
