"""Unfinished uploads are bounded per device and expire (bug bash 3: open uploads never expired
and their number per device was unbounded), on SQLite and a real PostgreSQL.

- A device with ``MAX_OPEN_UPLOADS_PER_DEVICE`` open bundles cannot register another (409 naming
  the device); resuming one of them still works, and another device of the same person is not
  affected.
- At start-up, bundles still open ``OPEN_UPLOAD_TTL`` after they began are removed with the blob
  objects no other bundle of the person names; a blob a committed bundle shares stays readable,
  a recent open upload stays, and the removal is in the access log.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest_pg import sha
from sqlalchemy import select, update

from demotrace.server import service
from demotrace.server.config import ServerConfig
from demotrace.server.errors import ConflictError
from demotrace.server.models import AuditEntry, Blob, Bundle
from demotrace.server.service import Collector
from demotrace.server.wire import BlobRef, BundleManifest


def _manifest(files: dict[str, bytes], session_id: str) -> BundleManifest:
    return BundleManifest(session_id=session_id, platform="linux-x11", meta={},
                          blobs=[BlobRef(sha256=sha(d), size=len(d), path=p) for p, d in files.items()])


def test_open_uploads_per_device_are_bounded(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "MAX_OPEN_UPLOADS_PER_DEVICE", 3)
    c = Collector(ServerConfig(data_dir=tmp_path / "srv", database_url=db_url))
    try:
        sid = c.pseudonyms.subject_id("ada@example.org")
        ms = [_manifest({"frames/0.png": f"ada {i}".encode() * 50}, f"ada-{i}") for i in range(4)]
        for m in ms[:3]:
            assert c.begin(sid, "dev-a", m).state == "open"
        with pytest.raises(ConflictError, match="device dev-a has 3 unfinished uploads"):
            c.begin(sid, "dev-a", ms[3])
        assert c.begin(sid, "dev-a", ms[0]).state == "open"  # resuming is not a new upload
        assert c.begin(sid, "dev-b", ms[3]).state == "open"  # another device of the person
        # finishing one frees a place
        data = f"ada {0}".encode() * 50
        c.put_blobs_and_commit(sid, ms[0].bundle_id, [(sha(data), data)], actor_id="dev-a")
        assert c.begin(sid, "dev-a", _manifest({"frames/9.png": b"ada nine" * 50}, "ada-9")).state == "open"
    finally:
        c.close()


def test_unfinished_uploads_expire_at_start_up(tmp_path: Path, db_url: str) -> None:
    cfg = ServerConfig(data_dir=tmp_path / "srv", database_url=db_url)
    c = Collector(cfg)
    shared = b"shared frame" * 40
    own = b"only in the stale upload" * 40
    recent = b"recent upload" * 40
    try:
        sid = c.pseudonyms.subject_id("bo@example.org")
        done = _manifest({"frames/0.png": shared}, "bo-1")
        c.begin(sid, "dev", done)
        c.put_blobs_and_commit(sid, done.bundle_id, [(sha(shared), shared)], actor_id="dev")
        stale = _manifest({"frames/0.png": shared, "frames/1.png": own, "frames/2.png": b"never sent" * 40}, "bo-2")
        c.begin(sid, "dev", stale)
        c.put_blobs(sid, stale.bundle_id, [(sha(own), own)])  # one of its two new blobs arrived
        fresh = _manifest({"frames/0.png": recent, "frames/1.png": b"not yet" * 40}, "bo-3")
        c.begin(sid, "dev", fresh)
        c.put_blobs(sid, fresh.bundle_id, [(sha(recent), recent)])
        with c.db.session() as s:
            names = {b.sha256: b.stored_name for b in s.scalars(select(Blob).where(Blob.subject_id == sid))}
            s.execute(update(Bundle).where(Bundle.bundle_id == stale.bundle_id)
                      .values(created_at=datetime.now(UTC) - timedelta(days=7, minutes=1)))
            s.execute(update(Bundle).where(Bundle.bundle_id == fresh.bundle_id)
                      .values(created_at=datetime.now(UTC) - timedelta(days=6, hours=23)))
        assert c.blobs.exists(names[sha(own)])
    finally:
        c.close()

    c = Collector(cfg)  # start-up: the sweep runs
    try:
        with c.db.session() as s:
            states = {b.bundle_id: b.state for b in s.scalars(select(Bundle).where(Bundle.subject_id == sid))}
            left = set(s.scalars(select(Blob.sha256).where(Blob.subject_id == sid)))
            log = [(e.action, e.resource) for e in s.scalars(select(AuditEntry).where(AuditEntry.subject_id == sid))]
        assert states == {done.bundle_id: "committed", fresh.bundle_id: "open"}
        assert left == {sha(shared), sha(recent)}
        assert not c.blobs.exists(names[sha(own)])  # the object is gone, not just its row
        assert c.blobs.exists(names[sha(shared)]) and c.blobs.exists(names[sha(recent)])
        assert c.read_blob(sid, done.bundle_id, sha(shared)) == shared
        assert ("upload.expire", "unfinished bundles:1") in log
        # the device may upload that session again: no tombstone
        assert sorted(c.begin(sid, "dev", stale).missing) == sorted([sha(own), sha(b"never sent" * 40)])
    finally:
        c.close()
