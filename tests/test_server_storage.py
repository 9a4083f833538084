"""Collector storage: migrations, upload protocol, encryption at rest, erasure, reads,
k-anonymous aggregates — each on SQLite AND on a real PostgreSQL (``db_url`` fixture)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from conftest_pg import Stack, sha
from sqlalchemy import func, inspect, select, text

from demotrace.errors import DecryptionError
from demotrace.server.keys import DataCipher
from demotrace.server.models import Blob, Bundle, PersonKey
from demotrace.server.wire import BlobRef, BundleManifest

PURPOSE = {"purpose": "agent-training"}


def manifest_of(files: dict[str, bytes], platform: str = "linux-x11",
                session: str = "s1") -> BundleManifest:
    return BundleManifest(session_id=session, platform=platform, created_utc="2026-11-30T00:00:00Z",
                          blobs=[BlobRef(sha256=sha(d), size=len(d), path=p)
                                 for p, d in files.items()])


def enroll_device(st: Stack, person: str) -> str:
    """Admin creates a device code for ``person``; the device exchanges it (through the API)."""
    admin = st.token("admin")
    r = st.client.post("/v1/admin/enrollment-codes", json={"role": "device", "person": person},
                       headers=st.h(admin))
    assert r.status_code == 200, r.text
    r = st.client.post("/v1/enroll", json={"code": r.json()["code"], "label": "laptop-1"})
    assert r.status_code == 200, r.text
    assert r.json()["role"] == "device"
    return str(r.json()["credential"])


def upload(st: Stack, dev: str, files: dict[str, bytes], **kw: str) -> str:
    m = manifest_of(files, **kw)
    r = st.client.post("/v1/bundles", content=m.canonical(), headers=st.h(dev))
    assert r.status_code == 200, r.text
    for p, d in files.items():
        if sha(d) in r.json()["missing"]:
            assert st.client.put(f"/v1/bundles/{m.bundle_id}/blobs/{sha(d)}", content=d,
                                 headers=st.h(dev)).status_code == 200
    r = st.client.post(f"/v1/bundles/{m.bundle_id}/commit", headers=st.h(dev))
    assert r.status_code == 200, r.text
    return m.bundle_id


def test_migrations_create_the_schema(stack: Stack) -> None:
    from demotrace.server.db import migrate

    migrate(stack.collector.db.engine)  # a second run is a no-op
    names = set(inspect(stack.collector.db.engine).get_table_names())
    assert names == {"alembic_version", "persons", "person_keys", "credentials",
                     "enrollment_codes", "bundles", "blobs", "bundle_blobs", "datasets",
                     "dataset_members", "audit_entries", "audit_head", "audit_checkpoints",
                     "policy_versions", "consent_records", "deleted_episodes",
                     "session_tombstones", "pending_blob_deletes", "portal_sessions"}
    with stack.collector.db.engine.connect() as c:
        assert c.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0005"


def test_migrations_match_the_models(stack: Stack) -> None:
    """Alembic's autogenerate comparison finds nothing between the migrated database and the
    SQLAlchemy models (a model change without a migration fails here)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from demotrace.server.models import Base

    with stack.collector.db.engine.connect() as c:
        diff = compare_metadata(MigrationContext.configure(c, opts={"compare_type": True}),
                                Base.metadata)
    assert diff == []


def test_upload_protocol_resumes_and_is_idempotent(stack: Stack) -> None:
    dev = enroll_device(stack, "alice@example.org")
    files = {"events/0.msgpack": b"E" * 1000, "frames/1.webp": b"F" * 2500,
             "frames/2.webp": b"G" * 10}
    m = manifest_of(files)
    h = stack.h(dev)
    r = stack.client.post("/v1/bundles", content=m.canonical(), headers=h)
    assert r.status_code == 200
    assert r.json()["state"] == "open"
    assert set(r.json()["missing"]) == {sha(b"E" * 1000), sha(b"F" * 2500), sha(b"G" * 10)}
    # one blob arrives, then the connection "drops": the next manifest lists only two missing
    assert stack.client.put(f"/v1/bundles/{m.bundle_id}/blobs/{sha(b'E' * 1000)}",
                            content=b"E" * 1000, headers=h).json()["new"] is True
    r = stack.client.post("/v1/bundles", content=m.canonical(), headers=h)
    assert set(r.json()["missing"]) == {sha(b"F" * 2500), sha(b"G" * 10)}
    r = stack.client.post(f"/v1/bundles/{m.bundle_id}/commit", headers=h)
    assert r.status_code == 409
    assert set(r.json()["missing"]) == {sha(b"F" * 2500), sha(b"G" * 10)}
    for d in (b"F" * 2500, b"G" * 10, b"G" * 10):  # a repeated PUT is harmless
        assert stack.client.put(f"/v1/bundles/{m.bundle_id}/blobs/{sha(d)}", content=d,
                                headers=h).status_code == 200
    r = stack.client.post(f"/v1/bundles/{m.bundle_id}/commit", headers=h)
    assert r.status_code == 200
    assert r.json()["n_blobs"] == 3 and r.json()["total_bytes"] == 1000 + 2500 + 10
    # the same bundle again: already committed, nothing missing, still stored once
    r = stack.client.post("/v1/bundles", content=m.canonical(), headers=h)
    assert r.json() == {"bundle_id": m.bundle_id, "state": "committed", "missing": []}
    assert stack.client.post(f"/v1/bundles/{m.bundle_id}/commit", headers=h).status_code == 200
    with stack.collector.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Bundle)) == 1
        assert s.scalar(select(func.count()).select_from(Blob)) == 3
    assert len(list(stack.collector.blobs.names())) == 3


def test_blob_checks_and_cross_bundle_dedup(stack: Stack) -> None:
    dev = enroll_device(stack, "alice@example.org")
    h = stack.h(dev)
    shared = b"shared frame bytes"
    m = manifest_of({"a": shared, "b": b"only in first"})
    stack.client.post("/v1/bundles", content=m.canonical(), headers=h)
    url = f"/v1/bundles/{m.bundle_id}/blobs/{sha(shared)}"
    r = stack.client.put(url, content=b"shared frame byteX", headers=h)  # same size, wrong bytes
    assert r.status_code == 422 and "sha256" in r.json()["detail"]
    r = stack.client.put(url, content=b"short", headers=h)
    assert r.status_code == 422 and "5 bytes" in r.json()["detail"]
    r = stack.client.put(f"/v1/bundles/{m.bundle_id}/blobs/{sha(b'other')}", content=b"other",
                         headers=h)
    assert r.status_code == 404
    bad = stack.client.post("/v1/bundles", content=b'{"format":"demotrace-bundle/1","blobs":'
                            b'[{"sha256":"XYZ","size":1}]}', headers=h)
    assert bad.status_code == 422 and "blobs[0].sha256" in bad.json()["detail"]
    upload(stack, dev, {"a": shared, "b": b"only in first"})
    m2 = manifest_of({"a": shared, "c": b"new in second"}, session="s2")
    r = stack.client.post("/v1/bundles", content=m2.canonical(), headers=h)
    assert r.json()["missing"] == [sha(b"new in second")]


def test_stored_bytes_are_encrypted(stack: Stack) -> None:
    marker = b"SYNTHETIC-SECRET-4111111111111111-" * 20
    dev = enroll_device(stack, "alice@example.org")
    upload(stack, dev, {"frames/1.png": marker, "meta.json": b'{"title": "MARKER-TITLE-XYZ"}'},
           session="sess-MARKER-SESSION")
    for f in stack.config.data_dir.rglob("*"):
        if f.is_file():
            content = f.read_bytes()
            assert b"SYNTHETIC-SECRET" not in content, f
            assert b"MARKER-TITLE-XYZ" not in content, f
            assert b"MARKER-SESSION" not in content, f
    names = list(stack.collector.blobs.names())
    assert sha(marker) not in names  # object names do not reveal content hashes


def test_reads_are_scoped_and_purpose_bound(stack: Stack) -> None:
    alice = enroll_device(stack, "alice@example.org")
    bob = enroll_device(stack, "bob@example.org")
    data = b"alice frame"
    bid = upload(stack, alice, {"f": data})
    upload(stack, bob, {"f": b"bob frame"})
    a_person = stack.token("person", "alice@example.org")
    mine = stack.client.get("/v1/me/bundles", headers=stack.h(a_person)).json()
    assert [b["bundle_id"] for b in mine] == [bid]
    assert stack.client.get(f"/v1/me/bundles/{bid}/blobs/{sha(data)}",
                            headers=stack.h(a_person)).content == data
    b_person = stack.token("person", "bob@example.org")
    assert stack.client.get(f"/v1/me/bundles/{bid}", headers=stack.h(b_person)).status_code == 404

    cur = stack.token("curator")
    sid = stack.subject("alice@example.org")
    url = f"/v1/curator/subjects/{sid}/bundles/{bid}/blobs/{sha(data)}"
    r = stack.client.get(url, headers=stack.h(cur))
    assert r.status_code == 400 and "agent-training" in r.json()["detail"]
    r = stack.client.get(url, params={"purpose": "performance-review"}, headers=stack.h(cur))
    assert r.status_code == 403
    r = stack.client.get(url, params=PURPOSE, headers=stack.h(cur))
    assert r.status_code == 200 and r.content == data
    listing = stack.client.get("/v1/curator/bundles", params=PURPOSE, headers=stack.h(cur)).json()
    assert {b["subject_id"] for b in listing} == {sid, stack.subject("bob@example.org")}
    assert all("@" not in json.dumps(b) for b in listing)  # pseudonyms only
    log = stack.client.get("/v1/me/access-log", headers=stack.h(a_person)).json()
    reads = [e for e in log if e["action"] == "curator.read_blob"]
    assert len(reads) == 3  # the refused attempts (400, 403) are logged too
    assert [e["status"] for e in reads] == [400, 403, 200]
    assert reads[-1]["purpose"] == "agent-training" and reads[-1]["actor_role"] == "curator"
    assert any(e["action"] == "curator.list_bundles" for e in log)
    # bob's log does not show alice's blob reads
    blog = stack.client.get("/v1/me/access-log", headers=stack.h(b_person)).json()
    assert not [e for e in blog if e["action"] == "curator.read_blob"]


def test_erasure_crypto_shreds_and_marks_datasets(stack: Stack, tmp_path: Path) -> None:
    marker = b"ALICE-PRIVATE-PIXELS-" * 50
    alice = enroll_device(stack, "alice@example.org")
    bob = enroll_device(stack, "bob@example.org")
    a_bid = upload(stack, alice, {"f": marker})
    b_bid = upload(stack, bob, {"f": b"bob pixels"})
    a_sid, b_sid = stack.subject("alice@example.org"), stack.subject("bob@example.org")
    cur = stack.token("curator")
    r = stack.client.post("/v1/curator/datasets", params=PURPOSE, headers=stack.h(cur), json={
        "name": "mixed", "members": [{"subject_id": a_sid, "bundle_id": a_bid},
                                     {"subject_id": b_sid, "bundle_id": b_bid}]})
    assert r.status_code == 200, r.text
    stack.client.post("/v1/curator/datasets", params=PURPOSE, headers=stack.h(cur), json={
        "name": "bob-only", "members": [{"subject_id": b_sid, "bundle_id": b_bid}]})
    # a "backup" of the blob store and of alice's wrapped key, taken before erasure
    backup = {n: stack.collector.blobs.get(n) for n in stack.collector.blobs.names()}
    with stack.collector.db.session() as s:
        wrapped = s.get(PersonKey, a_sid).wrapped
    assert len(backup) == 2

    person = stack.token("person", "alice@example.org")
    r = stack.client.post("/v1/me/erase", headers=stack.h(person),
                          json={"confirm": "erase everything"})
    assert r.status_code == 200
    assert r.json()["key_destroyed"] is True and r.json()["bundles_deleted"] == 1
    assert r.json()["datasets_marked"] == 1

    url = f"/v1/curator/subjects/{a_sid}/bundles/{a_bid}"
    assert stack.client.get(url, params=PURPOSE, headers=stack.h(cur)).status_code == 404
    ds = {d["name"]: d for d in stack.client.get("/v1/curator/datasets", params=PURPOSE,
                                                 headers=stack.h(cur)).json()}
    assert ds["mixed"]["needs_rebuild"] is True and "erased" in ds["mixed"]["rebuild_reason"]
    assert ds["bob-only"]["needs_rebuild"] is False
    assert len(list(stack.collector.blobs.names())) == 1  # only bob's object remains
    # No key that still exists opens any backed-up object of alice's.
    with stack.collector.db.session() as s:
        assert s.get(PersonKey, a_sid) is None
        remaining = [stack.collector.keyring.get(s, sid) for sid in stack.collector.keyring.subjects(s)]
    still = set(stack.collector.blobs.names())
    alice_obj = [ct for n, ct in backup.items() if n not in still]
    assert len(alice_obj) == 1
    for cipher in remaining:
        assert isinstance(cipher, DataCipher)
        with pytest.raises(DecryptionError):
            cipher.decrypt(alice_obj[0], f"blob:{a_sid}:{sha(marker)}".encode())
    # and the destroyed wrapped key's bytes are nowhere in the data folder (SQLite: the
    # database file itself, with secure_delete and a truncated WAL)
    if stack.collector.db.dialect == "sqlite":
        db_files = [p for p in tmp_path.rglob("meta.db*") if p.is_file()]
        assert db_files
        for p in db_files:
            assert wrapped not in p.read_bytes(), p
    # bob is untouched
    assert stack.client.get(f"/v1/curator/subjects/{b_sid}/bundles/{b_bid}/blobs/{sha(b'bob pixels')}",
                            params=PURPOSE, headers=stack.h(cur)).content == b"bob pixels"


def test_delete_one_bundle_and_export(stack: Stack) -> None:
    dev = enroll_device(stack, "carol@example.org")
    keep = upload(stack, dev, {"k": b"keep me", "s": b"shared"}, session="a")
    drop = upload(stack, dev, {"d": b"drop me", "s": b"shared"}, session="b")
    person = stack.token("person", "carol@example.org")
    r = stack.client.delete(f"/v1/me/bundles/{drop}", headers=stack.h(person))
    assert r.status_code == 200 and r.json()["blobs_deleted"] == 1  # "shared" stays for `keep`
    r = stack.client.get("/v1/me/export", headers=stack.h(person))
    assert r.status_code == 200
    z = zipfile.ZipFile(io.BytesIO(r.content))
    names = set(z.namelist())
    assert f"bundles/{keep}/blobs/{sha(b'keep me')}" in names
    assert f"bundles/{keep}/blobs/{sha(b'shared')}" in names
    assert not any(drop in n for n in names)
    assert z.read(f"bundles/{keep}/blobs/{sha(b'keep me')}") == b"keep me"
    log = json.loads(z.read("access-log.json"))
    assert any(e["action"] == "person.delete_bundle" for e in log)


def test_aggregates_need_ten_persons(stack: Stack) -> None:
    c = stack.collector
    for i in range(9):
        sid = stack.subject(f"p{i}@example.org")
        m = manifest_of({"f": f"frame {i}".encode()}, session=f"s{i}")
        c.begin(sid, "dev", m)
        c.put_blob(sid, m.bundle_id, sha(f"frame {i}".encode()), f"frame {i}".encode())
        c.commit(sid, m.bundle_id)
    # one more bundle by an existing person: still 9 persons
    m = manifest_of({"f": b"extra"}, session="x")
    sid0 = stack.subject("p0@example.org")
    c.begin(sid0, "dev", m)
    c.put_blob(sid0, m.bundle_id, sha(b"extra"), b"extra")
    c.commit(sid0, m.bundle_id)
    cur = stack.token("curator")
    admin = stack.token("admin")
    r = stack.client.get("/v1/curator/stats", params=PURPOSE, headers=stack.h(cur)).json()
    assert r["groups"] == [] and r["suppressed_groups"] == 1
    assert stack.client.get("/v1/admin/health", headers=stack.h(admin)).json()["volumes"] is None
    sid9 = stack.subject("p9@example.org")
    m = manifest_of({"f": b"frame 9"}, session="s9")
    c.begin(sid9, "dev", m)
    c.put_blob(sid9, m.bundle_id, sha(b"frame 9"), b"frame 9")
    c.commit(sid9, m.bundle_id)
    r = stack.client.get("/v1/curator/stats", params=PURPOSE, headers=stack.h(cur)).json()
    total = sum(len(f"frame {i}") for i in range(10)) + len(b"extra")
    assert r["groups"] == [{"platform": "linux-x11", "persons": 10, "bundles": 11,
                            "total_bytes": total}]
    vol = stack.client.get("/v1/admin/health", headers=stack.h(admin)).json()["volumes"]
    assert vol == {"persons_with_data": 10, "bundles": 11, "total_bytes": total}


def test_blob_batches_are_verified_all_or_nothing(stack: Stack) -> None:
    from demotrace.server.wire import BATCH_MEDIA_TYPE, encode_batch_body

    dev = enroll_device(stack, "moe@example.org")
    h = {**stack.h(dev), "content-type": BATCH_MEDIA_TYPE}
    a, b, c = b"A" * 300, b"B" * 5000, b"C" * 7
    m = manifest_of({"a": a, "b": b, "c": c})
    stack.client.post("/v1/bundles", content=m.canonical(), headers=stack.h(dev))
    url = f"/v1/bundles/{m.bundle_id}/blobs"
    # the framing by hand: 64 hex + 16 digits + bytes
    assert encode_batch_body([(sha(c), c)]) == sha(c).encode() + b"0000000000000007" + c
    bad = encode_batch_body([(sha(a), a), (sha(b), b"X" * 5000)])
    r = stack.client.post(url, content=bad, headers=h)
    assert r.status_code == 422 and sha(b) in r.json()["detail"]
    r = stack.client.post("/v1/bundles", content=m.canonical(), headers=stack.h(dev))
    assert len(r.json()["missing"]) == 3  # nothing of the refused batch was kept
    r = stack.client.post(url, content=encode_batch_body([(sha(a), a)])[:-1], headers=h)
    assert r.status_code == 422 and "truncated" in r.json()["detail"]
    r = stack.client.post(url, content=encode_batch_body([(sha(a), a), (sha(b), b)]), headers=h)
    assert r.status_code == 200 and r.json() == {"stored": 2, "new": 2}
    r = stack.client.post(url, content=encode_batch_body([(sha(b), b), (sha(c), c)]), headers=h)
    assert r.json() == {"stored": 2, "new": 1}
    assert stack.client.post(f"/v1/bundles/{m.bundle_id}/commit",
                             headers=stack.h(dev)).status_code == 200
    cur = stack.token("curator")
    sid = stack.subject("moe@example.org")
    assert stack.client.get(f"/v1/curator/subjects/{sid}/bundles/{m.bundle_id}/blobs/{sha(b)}",
                            params=PURPOSE, headers=stack.h(cur)).content == b
