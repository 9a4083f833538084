"""The S3 blob store against a REAL S3-compatible server (SeaweedFS, started by the ``s3_server``
fixture in ``conftest_s3.py``): the blob-store contract, integrity in transit, clear errors for
bad settings, and the collector end to end with ``blobs = s3://bucket/prefix`` — upload, curator
read, erasure (the bytes left in a versioned bucket open with no key left on the server),
resumed interrupted upload, and the same bundle twice stored once. What is in the bucket is
always listed with boto3 by the test itself."""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest_pg import free_port, make_stack, sha
from conftest_s3 import (
    BUCKET,
    VERSIONED_BUCKET,
    S3Env,
    kill_s3,
    restart_s3,
    start_s3,
    stop_s3,
)
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import create_engine, text
from test_server_upload import (
    PURPOSE,
    KillingTransport,
    ServerProc,
    enroll,
    stored_counts,
)

from demotrace.errors import ConfigError, DecryptionError
from demotrace.server.blobs import S3BlobStore, open_blob_store
from demotrace.server.config import ServerConfig
from demotrace.server.errors import BlobStoreError, NotFound, UploadError
from demotrace.server.wire import LocalBundle, write_local_bundle
from demotrace.upload import RetryPolicy, UploadClient

N1 = "a" * 64
N2 = "0123456789abcdef" * 4


# -- the blob-store contract on real S3 -------------------------------------------------------------
def test_contract_put_get_exists_delete_names(s3_env: S3Env) -> None:
    # endpoint and credentials come only from the standard AWS variables the fixture set
    store = open_blob_store(s3_env.url)
    assert isinstance(store, S3BlobStore) and store.endpoint_url == s3_env.server.endpoint_url
    assert list(store.names()) == [] and not store.exists(N1)
    store.put(N1, b"first")
    store.put(N2, b"")
    assert store.get(N1) == b"first" and store.get(N2) == b""
    assert store.exists(N1) and store.exists(N2)
    # where the objects really are: <prefix>/<name>, with the bytes given
    assert sorted(s3_env.keys()) == sorted([f"{s3_env.prefix}/{N1}", f"{s3_env.prefix}/{N2}"])
    raw = s3_env.client.get_object(Bucket=s3_env.bucket, Key=f"{s3_env.prefix}/{N1}")
    assert raw["Body"].read() == b"first"
    assert sorted(store.names()) == sorted([N1, N2])
    store.put(N1, b"replaced")
    assert store.get(N1) == b"replaced"
    assert store.size_total() == 8  # len(b"replaced") + len(b"")
    assert store.delete(N1) is True
    assert store.delete(N1) is False
    assert list(store.names()) == [N2]
    assert s3_env.keys() == [f"{s3_env.prefix}/{N2}"]


def test_missing_object_is_a_clear_not_found(s3_env: S3Env) -> None:
    store = open_blob_store(s3_env.url)
    with pytest.raises(NotFound, match=rf"blob {N1} not in S3BlobStore\(bucket='{s3_env.bucket}'"):
        store.get(N1)
    assert store.exists(N1) is False
    assert store.delete(N1) is False


def test_other_objects_under_the_prefix_are_not_blobs(s3_env: S3Env) -> None:
    store = open_blob_store(s3_env.url)
    store.put(N1, b"x")
    for key in (f"{s3_env.prefix}/README", f"{s3_env.prefix}/sub/{N2}", f"{s3_env.prefix}x/{N2}"):
        s3_env.client.put_object(Bucket=s3_env.bucket, Key=key, Body=b"other tool")
    assert list(store.names()) == [N1] and store.size_total() == 1


@pytest.mark.parametrize("bad", ["../etc/passwd", "ABCDEF0123456789", "a/b" * 10, "short", ""])
def test_names_that_could_escape_the_prefix_are_refused(s3_env: S3Env, bad: str) -> None:
    store = open_blob_store(s3_env.url)
    with pytest.raises(BlobStoreError, match="invalid blob name"):
        store.put(bad, b"x")
    assert s3_env.keys() == []


def test_large_object_roundtrip(s3_env: S3Env) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    store = open_blob_store(s3_env.url)
    store.put(N1, data)
    assert hashlib.sha256(store.get(N1)).hexdigest() == hashlib.sha256(data).hexdigest()
    [obj] = s3_env.client.list_objects_v2(Bucket=s3_env.bucket,
                                          Prefix=s3_env.prefix + "/")["Contents"]
    assert obj["Size"] == 3 * 1024 * 1024 + 17


def _alter_body_before_signing(request: Any, **_: Any) -> None:
    """A botocore hook: flip the first byte of the request body after the request was built
    (its Content-MD5 computed) but before it is signed and sent — bytes changed in transit."""
    data = request.data
    data = data.read() if hasattr(data, "read") else bytes(data)
    request.data = io.BytesIO(bytes([data[0] ^ 0xFF]) + data[1:])


def test_bytes_altered_in_transit_are_refused_and_nothing_is_stored(
        s3_env: S3Env, monkeypatch: pytest.MonkeyPatch) -> None:
    # botocore's own default checksum (CRC32) off, as some S3-compatible services need: only
    # the store's Content-MD5 stands between an altered body and the bucket.
    monkeypatch.setenv("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
    store = open_blob_store(s3_env.url)
    assert isinstance(store, S3BlobStore)
    store.client.meta.events.register("before-sign.s3.PutObject", _alter_body_before_signing)
    with pytest.raises(BlobStoreError, match=rf"S3 put of s3://{s3_env.bucket}/.*{N1}.*BadDigest"):
        store.put(N1, b"pixels of a frame")
    assert s3_env.keys() == []
    # control: the same alteration without Content-MD5 goes through, so the hook really
    # altered the bytes and the store's checksum is what refused them
    store.client.put_object(Bucket=s3_env.bucket, Key=f"{s3_env.prefix}/{N2}",
                            Body=b"pixels of a frame")
    got = s3_env.client.get_object(Bucket=s3_env.bucket, Key=f"{s3_env.prefix}/{N2}")
    assert got["Body"].read() == bytes([ord("p") ^ 0xFF]) + b"ixels of a frame"


def test_the_collector_identity_has_least_privilege(s3_env: S3Env) -> None:
    """The identity every collector test runs as can read, write and list its bucket and
    nothing else: the store's needs are exactly what docs/operations.md's policy grants."""
    store = open_blob_store(s3_env.url)
    assert isinstance(store, S3BlobStore)
    store.put(N1, b"x")
    assert store.get(N1) == b"x" and list(store.names()) == [N1] and store.delete(N1)
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError, match="AccessDenied"):
        store.client.create_bucket(Bucket="collector-may-not-create")
    with pytest.raises(ConfigError, match="access denied"):
        S3BlobStore("demotrace-other", "p")
    s3_env.client.create_bucket(Bucket="demotrace-other")
    with pytest.raises(ConfigError, match="access denied"):
        open_blob_store("s3://demotrace-other/p")


def test_put_many_stores_every_object_and_names_the_one_that_failed(s3_env: S3Env) -> None:
    store = open_blob_store(s3_env.url)
    assert isinstance(store, S3BlobStore)
    items = [(os.urandom(32).hex(), os.urandom(1000 + i)) for i in range(20)]
    store.put_many(items)
    assert sorted(s3_env.keys()) == sorted(f"{s3_env.prefix}/{n}" for n, _ in items)
    for n, d in items:
        got = s3_env.client.get_object(Bucket=s3_env.bucket, Key=f"{s3_env.prefix}/{n}")
        assert got["Body"].read() == d
    # one object of the next batch is altered on its way: that one is refused and named,
    # the others are stored
    batch = [(os.urandom(32).hex(), os.urandom(500)) for _ in range(6)]
    victim = batch[3][0]

    def alter_victim(request: Any, **kw: Any) -> None:
        if victim in request.url:
            _alter_body_before_signing(request, **kw)

    store.client.meta.events.register("before-sign.s3.PutObject", alter_victim)
    with pytest.raises(BlobStoreError, match=f"{victim}.*BadDigest"):
        store.put_many(batch)
    left = set(s3_env.keys()) - {f"{s3_env.prefix}/{n}" for n, _ in items}
    assert left == {f"{s3_env.prefix}/{n}" for n, _ in batch if n != victim}
    with pytest.raises(BlobStoreError, match="invalid blob name"):
        store.put_many([("0" * 64, b"x"), ("../x", b"y")])
    assert not store.exists("0" * 64)  # names are checked before any request


# -- bad settings: clear errors at start-up -----------------------------------------------------------
def test_bad_s3_settings_are_clear_errors(s3_env: S3Env, monkeypatch: pytest.MonkeyPatch) -> None:
    # (a missing bucket reads as "access denied" to an identity scoped to other buckets, as on
    # AWS; an identity allowed to list every bucket is told it does not exist)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_env.server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_env.server.secret_key)
    with pytest.raises(ConfigError, match="'no-such-bucket-x' at .* does not exist; create it"):
        open_blob_store("s3://no-such-bucket-x/p")
    with pytest.raises(ConfigError, match="bucket name 'Bad_Bucket' is invalid"):
        open_blob_store("s3://Bad_Bucket/p")
    with pytest.raises(ConfigError, match="take no"):
        open_blob_store(f"s3://{s3_env.bucket}/p?endpoint=x")
    with pytest.raises(ConfigError, match="'..' segments"):
        open_blob_store(f"s3://{s3_env.bucket}/a/../b")
    with pytest.raises(ConfigError, match=r"expected http\(s\)://HOST"):
        ServerConfig(data_dir=Path("/nonexistent"), blob_url=s3_env.url, s3_endpoint_url="ftp://h")
    with pytest.raises(ConfigError, match="blob URL is 'file://"):
        ServerConfig(data_dir=Path("/x"), s3_endpoint_url=s3_env.server.endpoint_url)
    # wrong secret: refused by the server's signature check
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(ConfigError, match=rf"'{s3_env.bucket}' at .*: access denied"):
        open_blob_store(s3_env.url)
    # no credentials at all (instance-metadata lookup disabled by the fixture)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    with pytest.raises(ConfigError, match="no credentials; set AWS_ACCESS_KEY_ID"):
        open_blob_store(s3_env.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_env.server.collector_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_env.server.collector_secret)
    # nothing listening at the endpoint
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConfigError, match=f"at {dead}: cannot connect"):
        open_blob_store(s3_env.url, s3_endpoint_url=dead)


# -- the collector with blobs on S3 -------------------------------------------------------------------
def test_collector_checks_uploaded_bytes_before_they_reach_s3(s3_env: S3Env,
                                                              tmp_path: Path) -> None:
    st = make_stack(tmp_path / "srv", f"sqlite:///{tmp_path / 'c.db'}", blob_url=s3_env.url)
    try:
        admin = st.token("admin")
        r = st.client.post("/v1/admin/enrollment-codes", json={"role": "device",
                                                               "person": "kim@example.org"},
                           headers=st.h(admin))
        dev = st.client.post("/v1/enroll", json={"code": r.json()["code"]}).json()["credential"]
        good, bad = b"frame bytes " * 30, b"frame bytez " * 30
        b = write_local_bundle(tmp_path / "b", {"frames/1.png": good}, session_id="k1")
        r = st.client.post("/v1/bundles", content=b.manifest.canonical(), headers=st.h(dev))
        assert r.json()["missing"] == [sha(good)]
        bid = b.manifest.bundle_id
        r = st.client.put(f"/v1/bundles/{bid}/blobs/{sha(good)}", content=bad, headers=st.h(dev))
        assert r.status_code == 422 and "does not match its sha256" in r.text
        assert s3_env.keys() == []  # nothing reached the bucket
        r = st.client.put(f"/v1/bundles/{bid}/blobs/{sha(good)}", content=good, headers=st.h(dev))
        assert r.status_code == 200
        assert st.client.post(f"/v1/bundles/{bid}/commit", headers=st.h(dev)).status_code == 200
        [key] = s3_env.keys()
        stored = s3_env.client.get_object(Bucket=s3_env.bucket, Key=key)["Body"].read()
        assert len(stored) == len(good) + 28 and good not in stored  # AES-GCM: nonce + tag
        sid = st.subject("kim@example.org")
        assert st.collector.read_blob(sid, bid, sha(good)) == good
        # an object altered in the bucket (one bit) is refused on read, never served
        altered = stored[:40] + bytes([stored[40] ^ 1]) + stored[41:]
        s3_env.client.put_object(Bucket=s3_env.bucket, Key=key, Body=altered)
        with pytest.raises(DecryptionError, match="does not authenticate"):
            st.collector.read_blob(sid, bid, sha(good))
    finally:
        st.client.close()
        st.collector.close()


def _hkdf(key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)


def _opens(key: bytes, ct: bytes, aad: bytes | None) -> bool:
    try:
        AESGCM(key).decrypt(ct[:12], ct[12:], aad)
        return True
    except (InvalidTag, ValueError):
        return False


def _person_keys(db_url: str) -> dict[str, bytes]:
    eng = create_engine(db_url)
    try:
        with eng.connect() as c:
            return {r[0]: bytes(r[1]) for r in c.execute(
                text("SELECT subject_id, wrapped FROM person_keys"))}
    finally:
        eng.dispose()


def _unwrap(master: bytes, sid: str, wrapped: bytes) -> bytes:
    """Test-side unwrapping of a data key (AES-256-GCM under HKDF(master), context bound)."""
    aead = AESGCM(_hkdf(master, b"demotrace server key-wrap v1"))
    return aead.decrypt(wrapped[:12], wrapped[12:], b"wrap:" + sid.encode())


def _versions(env: S3Env, bucket: str) -> tuple[dict[str, list[str]], int]:
    """Every object version under the test prefix ({key: [version ids]}) and the number of
    delete markers, listed with boto3."""
    out: dict[str, list[str]] = {}
    markers = 0
    for page in env.client.get_paginator("list_object_versions").paginate(
            Bucket=bucket, Prefix=env.prefix + "/"):
        for v in page.get("Versions", []):
            out.setdefault(v["Key"], []).append(v["VersionId"])
        markers += len(page.get("DeleteMarkers", []))
    return out, markers


def _server(tmp_path: Path, db_url: str, blob_url: str,
            monkeypatch: pytest.MonkeyPatch) -> ServerProc:
    """A ``demotrace server`` subprocess whose blob store is ``blob_url`` (DEMOTRACE_BLOB_URL;
    the S3 endpoint and credentials reach it through the AWS variables ``s3_env`` set)."""
    monkeypatch.setenv("DEMOTRACE_BLOB_URL", blob_url)
    srv = ServerProc(tmp_path / "srv", db_url)
    srv.data_dir.mkdir()
    return srv


def _bundle(root: Path, tag: str, n: int) -> tuple[LocalBundle, dict[str, bytes]]:
    files = {f"frames/{i}.png": f"{tag} frame {i} ".encode() * (50 + i) for i in range(n)}
    files["frames/shared.png"] = b"the same frame in every bundle " * 20
    return write_local_bundle(root, files, session_id=tag, platform="linux-x11"), files


def test_end_to_end_erasure_leaves_only_unreadable_bytes_in_a_versioned_bucket(
        s3_env: S3Env, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """device uploads → curator reads → the person erases → the curator cannot read; the bucket
    keeps old versions of every object (versioning on, as a backup would), and none of them
    opens with any key material left on the server."""
    bucket = VERSIONED_BUCKET
    assert s3_env.client.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    srv = _server(tmp_path, db_url, f"s3://{bucket}/{s3_env.prefix}", monkeypatch)
    try:
        srv.start()
        alice_dev = enroll(srv, srv.code("device", "alice@example.org"))
        bob_dev = enroll(srv, srv.code("device", "bob@example.org"))
        a1, a1_files = _bundle(tmp_path / "a1", "alice-1", 3)
        a2, a2_files = _bundle(tmp_path / "a2", "alice-2", 2)
        with UploadClient(srv.url, alice_dev) as c:
            for b in (a1, a2):
                assert c.upload(b, delete_local=True).deleted_local
        alice_plain = {sha(d): d for d in [*a1_files.values(), *a2_files.values()]}
        assert len(alice_plain) == 3 + 2 + 1  # the shared frame is stored once
        alice_keys = set(_versions(s3_env, bucket)[0])
        assert len(alice_keys) == 6
        b1, _ = _bundle(tmp_path / "b1", "bob-1", 2)
        with UploadClient(srv.url, bob_dev) as c:
            c.upload(b1, delete_local=True)
        bob_keys = set(_versions(s3_env, bucket)[0]) - alice_keys
        assert len(bob_keys) == 3  # bob's copy of the shared frame is his own object

        # the curator reads alice's frames (and each read is logged for her)
        cur = enroll(srv, srv.code("curator"))
        master = (srv.data_dir / "keys" / "master.key").read_bytes()
        pseudonym_key = (srv.data_dir / "keys" / "pseudonym.key").read_bytes()
        a_sid = hmac.new(pseudonym_key, b"alice@example.org", hashlib.sha256).hexdigest()
        with httpx.Client(base_url=srv.url, headers={"authorization": f"Bearer {cur}"}) as h:
            for b, files in ((a1, a1_files), (a2, a2_files)):
                base = f"/v1/curator/subjects/{a_sid}/bundles/{b.manifest.bundle_id}"
                for data in files.values():
                    r = h.get(f"{base}/blobs/{sha(data)}", params=PURPOSE)
                    assert r.status_code == 200 and r.content == data

        # control, before erasure: the test's own decryption opens alice's objects with her key
        a_dk = _unwrap(master, a_sid, _person_keys(srv.db_url)[a_sid])
        a_aead_key = _hkdf(a_dk, b"demotrace server data v1")
        before = {k: s3_env.client.get_object(Bucket=bucket, Key=k)["Body"].read()
                  for k in alice_keys}
        opened = {h for h, plain in alice_plain.items() for ct in before.values()
                  if _opens(a_aead_key, ct, f"blob:{a_sid}:{h}".encode())}
        assert opened == set(alice_plain)

        person = enroll(srv, srv.code("person", "alice@example.org"))
        r = httpx.post(srv.url + "/v1/me/erase", headers={"authorization": f"Bearer {person}"},
                       json={"confirm": "erase everything"})
        assert r.status_code == 200, r.text
        assert r.json()["key_destroyed"] is True and r.json()["blobs_deleted"] == 6

        with httpx.Client(base_url=srv.url, headers={"authorization": f"Bearer {cur}"}) as h:
            base = f"/v1/curator/subjects/{a_sid}/bundles/{a1.manifest.bundle_id}"
            r = h.get(f"{base}/blobs/{sha(a1_files['frames/0.png'])}", params=PURPOSE)
            assert r.status_code in (404, 410)
            assert [x["subject_id"] for x in h.get("/v1/curator/bundles",
                                                   params=PURPOSE).json()] == [
                hmac.new(pseudonym_key, b"bob@example.org", hashlib.sha256).hexdigest()]

        # what the bucket still holds, listed by the test
        current = {o["Key"] for page in s3_env.client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=s3_env.prefix + "/") for o in page.get("Contents", [])}
        assert current == bob_keys
        versions, markers = _versions(s3_env, bucket)
        assert markers == 6 and set(versions) == alice_keys | bob_keys
        leftovers = [s3_env.client.get_object(Bucket=bucket, Key=k, VersionId=v)["Body"].read()
                     for k in alice_keys for v in versions[k]]
        assert len(leftovers) == 6 and sorted(leftovers) == sorted(before.values())

        # every key material still on the server: key files, and every data key the master
        # key still unwraps (bob's), raw and as derived subkeys
        keys_dir = srv.data_dir / "keys"
        remaining = _person_keys(srv.db_url)
        assert a_sid not in remaining and len(remaining) == 1
        material = [p.read_bytes() for p in keys_dir.iterdir() if p.is_file()]
        for sid, wrapped in remaining.items():
            material.append(_unwrap(master, sid, wrapped))
        candidates = []
        for m in material:
            for k in (m[:32], hashlib.sha256(m).digest()):
                candidates += [k, _hkdf(k, b"demotrace server data v1"),
                               _hkdf(k, b"demotrace server key-wrap v1")]
        candidates = [k for k in candidates if len(k) == 32]
        assert len(candidates) >= 4 * 6
        for ct in leftovers:
            for k in candidates:
                for h in alice_plain:
                    assert not _opens(k, ct, f"blob:{a_sid}:{h}".encode())
                assert not _opens(k, ct, None)
            assert not any(plain in ct for plain in alice_plain.values())
    finally:
        srv.stop()


def _count(env: S3Env) -> int:
    return len(env.keys())


def test_interrupted_upload_resumes_and_the_same_bundle_twice_is_stored_once(
        s3_env: S3Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    srv = _server(tmp_path, f"sqlite:///{tmp_path / 'c.db'}", s3_env.url, monkeypatch)
    try:
        srv.start()
        token = enroll(srv, srv.code("device", "hal@example.org"))
        files = {f"frames/{i}.png": os.urandom(2000 + 100 * i) for i in range(12)}
        files["frames/dup.png"] = files["frames/0.png"]  # same bytes twice in one bundle
        files["events/0.msgpack"] = b"events of the session"
        bundle = write_local_bundle(tmp_path / "b", files, session_id="h1", platform="linux-x11")
        copy = shutil.copytree(bundle.root, tmp_path / "copy")
        distinct = len({sha(d) for d in files.values()})
        assert distinct == 13
        with UploadClient(srv.url, token, transport=KillingTransport(srv, kill_at=5),
                          sleep=lambda s: None, retry=RetryPolicy(attempts=3),
                          batch_bytes=0) as c, pytest.raises(UploadError, match="gave up"):
            c.upload(bundle, delete_local=True)
        assert bundle.root.exists()  # not acknowledged → kept on the device
        rows = stored_counts(srv.db_url)[2]
        in_bucket = _count(s3_env)
        assert 3 <= rows <= 5  # what arrived before the kill is recorded ...
        assert rows <= in_bucket <= rows + 1  # ... and in S3 (plus at most the one in flight)
        srv.start()  # same data folder, same bucket, same port
        with UploadClient(srv.url, token, batch_bytes=0) as c:
            r = c.upload(bundle, delete_local=True)
        assert r.deleted_local and r.n_blobs == distinct
        assert r.sent_blobs == distinct - rows  # resumed: nothing recorded is resent
        assert _count(s3_env) == distinct
        # the same bundle again (the device's other copy): acknowledged, nothing sent
        with UploadClient(srv.url, token) as c:
            again = c.upload_path(copy)
        assert again.sent_blobs == 0
        assert _count(s3_env) == distinct
        assert stored_counts(srv.db_url) == (1, 1, distinct)
        cur = enroll(srv, srv.code("curator"))
        with httpx.Client(base_url=srv.url, headers={"authorization": f"Bearer {cur}"}) as h:
            [row] = h.get("/v1/curator/bundles", params=PURPOSE).json()
            base = f"/v1/curator/subjects/{row['subject_id']}/bundles/{row['bundle_id']}"
            for data in files.values():
                assert h.get(f"{base}/blobs/{sha(data)}", params=PURPOSE).content == data
    finally:
        srv.stop()



def test_s3_outage_mid_upload_loses_nothing_and_resumes(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The S3 server dies while a device uploads (SIGKILL between two blob PUTs): the collector
    answers 5xx, the device keeps its bundle; S3 comes back with its data; the next upload
    sends only what S3 lacks, and the bucket ends with exactly one object per distinct blob."""
    s3 = start_s3()
    try:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.collector_key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.collector_secret)
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3.endpoint_url)
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")  # the collector fails fast while S3 is down
        env = S3Env(s3, BUCKET, "outage", s3.client())
        srv = _server(tmp_path, f"sqlite:///{tmp_path / 'c.db'}", env.url, monkeypatch)
        try:
            srv.start()
            token = enroll(srv, srv.code("device", "ola@example.org"))
            files = {f"frames/{i}.png": os.urandom(3000 + i) for i in range(8)}
            bundle = write_local_bundle(tmp_path / "b", files, session_id="o1")

            class S3DiesTransport(httpx.BaseTransport):
                def __init__(self) -> None:
                    self.inner, self.puts = httpx.HTTPTransport(), 0

                def handle_request(self, request: httpx.Request) -> httpx.Response:
                    if request.method == "PUT":
                        self.puts += 1
                        if self.puts == 4:
                            kill_s3(s3)
                    return self.inner.handle_request(request)

                def close(self) -> None:
                    self.inner.close()

            with UploadClient(srv.url, token, transport=S3DiesTransport(), sleep=lambda s: None,
                              retry=RetryPolicy(attempts=2), batch_bytes=0) as c, \
                    pytest.raises(UploadError, match=r"HTTP 5\d\d"):
                c.upload(bundle, delete_local=True)
            assert bundle.root.exists()  # nothing acknowledged, nothing deleted
            assert stored_counts(srv.db_url) == (0, 1, 3)  # 3 blobs stored before the outage
            restart_s3(s3)
            assert len(env.keys()) == 3  # they survived the outage in S3
            with UploadClient(srv.url, token, batch_bytes=0) as c:
                r = c.upload(bundle, delete_local=True)
            assert r.deleted_local and r.sent_blobs == 8 - 3
            assert len(env.keys()) == 8 and stored_counts(srv.db_url) == (1, 1, 8)
            cur = enroll(srv, srv.code("curator"))
            with httpx.Client(base_url=srv.url, headers={"authorization": f"Bearer {cur}"}) as h:
                [row] = h.get("/v1/curator/bundles", params=PURPOSE).json()
                base = f"/v1/curator/subjects/{row['subject_id']}/bundles/{row['bundle_id']}"
                for data in files.values():
                    assert h.get(f"{base}/blobs/{sha(data)}", params=PURPOSE).content == data
        finally:
            srv.stop()
    finally:
        stop_s3(s3)
