"""One contract test suite for every blob-store backend (the aw-core pattern), plus the key
helpers (envelope encryption, pseudonyms, key-file permissions).

Backends: the local folder (``file://``) and real S3 (``s3://bucket/prefix``) on the SeaweedFS
S3 gateway the session fixture ``s3_server`` of ``tests/conftest_s3.py`` starts (one server for
the whole test session; each S3 case gets its own key prefix through ``s3_env``, so the cases
never see each other's objects). Every contract test runs against both; a missing or broken
SeaweedFS fails the S3 cases (never skips them)."""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

import pytest

from demotrace.errors import ConfigError, DecryptionError, KeyMissing
from demotrace.server.blobs import (
    BlobStore,
    FileBlobStore,
    S3BlobStore,
    open_blob_store,
)
from demotrace.server.errors import BlobStoreError, NotFound
from demotrace.server.keys import (
    DataCipher,
    LocalKeyManager,
    Pseudonymiser,
    read_secret_file,
)


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    """The store under test: a fresh folder, or a fresh prefix in the session's S3 bucket
    (endpoint and credentials only from the standard AWS variables ``s3_env`` sets)."""
    if request.param == "file":
        st = open_blob_store((tmp_path / "blobs").as_uri())
        assert isinstance(st, FileBlobStore)
        return st
    env = request.getfixturevalue("s3_env")
    st = open_blob_store(env.url)
    assert isinstance(st, S3BlobStore) and st.endpoint_url == env.server.endpoint_url
    return st


N1 = "a" * 64
N2 = "0123456789abcdef" * 4


def test_put_get_exists_delete_names(store: BlobStore) -> None:
    assert list(store.names()) == []
    assert not store.exists(N1)
    store.put(N1, b"first")
    store.put(N2, b"")
    assert store.get(N1) == b"first" and store.get(N2) == b""
    assert store.exists(N1)
    assert sorted(store.names()) == sorted([N1, N2])
    store.put(N1, b"replaced")
    assert store.get(N1) == b"replaced"
    assert store.size_total() == len(b"replaced")
    assert store.delete(N1) is True
    assert store.delete(N1) is False
    with pytest.raises(NotFound):
        store.get(N1)
    assert list(store.names()) == [N2]


@pytest.mark.parametrize("bad", ["../etc/passwd", "ABCDEF0123456789", "a/b" * 10, "short", ""])
def test_names_that_could_escape_are_refused(store: BlobStore, bad: str) -> None:
    with pytest.raises(BlobStoreError, match="invalid blob name"):
        store.put(bad, b"x")


def test_large_object_roundtrip(store: BlobStore) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    store.put(N1, data)
    assert hashlib.sha256(store.get(N1)).digest() == hashlib.sha256(data).digest()


def test_file_store_is_private_and_leaves_no_temp_files(tmp_path: Path) -> None:
    st = FileBlobStore(tmp_path / "b")
    st.put(N1, b"x" * 100)
    assert (tmp_path / "b").stat().st_mode & 0o077 == 0
    assert [p.name for p in (tmp_path / "b" / N1[:2]).iterdir()] == [N1]
    assert (tmp_path / "b" / N1[:2] / N1).stat().st_mode & 0o077 == 0


def test_put_many_stores_every_object(store: BlobStore) -> None:
    """A batch larger than the folder store's open-file budget (so it runs in several
    chunks), objects of different sizes incl. empty: each reads back as written."""
    items = [(hashlib.sha256(b"%d" % i).hexdigest(), os.urandom(i * 37 % 5000)) for i in range(150)]
    store.put_many(items)
    assert sorted(store.names()) == sorted(n for n, _ in items)
    for n, data in items[::7]:
        assert store.get(n) == data


def test_file_store_put_many_is_durable_and_leaves_no_temp_files(tmp_path: Path) -> None:
    """Folder store: after a batch every object is under its final name only (no temporary
    file), private, and the store's durability path ran fsync on each object and folder —
    counted with a wrapper around ``os.fsync`` (the calls themselves are real)."""
    import demotrace.server.blobs as blobs_mod

    st = FileBlobStore(tmp_path / "b")
    items = [(hashlib.sha256(b"x%d" % i).hexdigest(), b"y" * (100 + i)) for i in range(70)]
    real, synced = os.fsync, []

    def counting(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real(fd)

    blobs_mod.os.fsync = counting  # type: ignore[assignment]
    try:
        st.put_many(items)
    finally:
        blobs_mod.os.fsync = real  # type: ignore[assignment]
    files = [p for p in (tmp_path / "b").rglob("*") if p.is_file()]
    assert sorted(p.name for p in files) == sorted(n for n, _ in items)
    assert all(p.stat().st_mode & 0o077 == 0 for p in files)
    inodes = {p.stat().st_ino for p in files} | {p.parent.stat().st_ino for p in files}
    assert inodes <= set(synced)  # every object and every folder holding one was fsynced


def test_file_store_put_many_failure_names_the_object_and_keeps_nothing_half_written(
        tmp_path: Path) -> None:
    """One object of a batch cannot be created (a plain file sits where its sub-folder goes):
    BlobStoreError names that object; no temporary file of the batch is left behind."""
    st = FileBlobStore(tmp_path / "b")
    bad = "ee" + "0" * 62
    (tmp_path / "b" / "ee").write_bytes(b"not a folder")
    items = [(hashlib.sha256(b"%d" % i).hexdigest(), b"z" * 10) for i in range(5)]
    items.insert(3, (bad, b"w" * 10))
    with pytest.raises(BlobStoreError, match=f"cannot write blob {bad}"):
        st.put_many(items)
    leftovers = [p.name for p in (tmp_path / "b").rglob(".tmp-*")]
    assert leftovers == []


def test_unknown_blob_url_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="unknown scheme 'ftp'"):
        open_blob_store("ftp://x/y")
    with pytest.raises(ConfigError, match="no bucket"):
        open_blob_store("s3:///prefix")


# -- keys -----------------------------------------------------------------------------------------
def test_master_key_file_rules(tmp_path: Path) -> None:
    p = tmp_path / "keys" / "master.key"
    with pytest.raises(KeyMissing):
        LocalKeyManager.from_file(p)
    LocalKeyManager.from_file(p, create=True)
    assert p.stat().st_mode & 0o777 == 0o600 and p.stat().st_size == 32
    os.chmod(p, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        LocalKeyManager.from_file(p)
    os.chmod(p, 0o600)
    p.write_bytes(b"short")
    with pytest.raises(ConfigError, match="5 bytes"):
        read_secret_file(p)


def test_wrapped_keys_are_bound_to_their_subject() -> None:
    km = LocalKeyManager(b"m" * 32)
    dk = os.urandom(32)
    w = km.wrap(dk, "subject-a")
    assert km.unwrap(w, "subject-a") == dk
    with pytest.raises(DecryptionError):
        km.unwrap(w, "subject-b")  # a wrapped key moved to another person does not open
    with pytest.raises(DecryptionError):
        LocalKeyManager(b"n" * 32).unwrap(w, "subject-a")
    assert dk not in w and "m" * 8 not in repr(km)


def test_data_cipher_roundtrip_and_names() -> None:
    c = DataCipher(b"k" * 32, "kid")
    ct = c.encrypt(b"pixels", b"aad")
    assert len(ct) == len(b"pixels") + 12 + 16
    assert c.decrypt(ct, b"aad") == b"pixels"
    with pytest.raises(DecryptionError):
        c.decrypt(ct, b"other aad")
    name = c.object_name("ab" * 32)
    assert len(name) == 64 and name != "ab" * 32
    assert DataCipher(b"j" * 32, "kid").object_name("ab" * 32) != name


def test_pseudonyms_are_keyed_hmac_of_the_normalised_identity() -> None:
    secret = b"s" * 32
    ps = Pseudonymiser(secret)
    expect = hmac.new(secret, b"alice@example.org", hashlib.sha256).hexdigest()
    assert ps.subject_id("alice@example.org") == expect
    assert ps.subject_id("  Alice@Example.ORG ") == expect
    assert Pseudonymiser(b"t" * 32).subject_id("alice@example.org") != expect
    with pytest.raises(ConfigError, match="empty"):
        ps.subject_id("   ")


_KILLED_PUT = """
import os, signal, sys
from pathlib import Path
from demotrace.server import blobs
store = blobs.FileBlobStore(Path(sys.argv[1]))
def die(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)  # killed between writing the temporary file and its rename
blobs.os.replace = die
store.put("ab" + "0" * 62, b"partial frame bytes" * 1000)
"""


def test_a_killed_put_leaves_a_temporary_file_the_collector_removes_at_start_up(tmp_path: Path) -> None:
    """kill -9 of a writer between its temporary file and the rename (the real put code, killed
    from inside os.replace) leaves ``<shard>/.tmp-*``; a collector starting 10+ minutes later
    removes it, keeps a younger one (another worker may be writing it) and every object."""
    import signal
    import subprocess
    import sys

    from demotrace.server.config import ServerConfig
    from demotrace.server.service import Collector

    cfg = ServerConfig(data_dir=tmp_path / "srv")
    c = Collector(cfg)
    root = Path(c.blobs.root)  # type: ignore[attr-defined]
    c.blobs.put("cd" + "1" * 62, b"a stored object")
    c.close()
    p = subprocess.run([sys.executable, "-c", _KILLED_PUT, str(root)], capture_output=True, timeout=60)
    assert p.returncode == -signal.SIGKILL, p.stderr
    (left,) = list((root / "ab").glob(".tmp-*"))
    young = root / "cd" / f".tmp-{'cd' + '2' * 62}-abcdef"
    young.write_bytes(b"being written")
    odd = root / "cd" / ".tmp-dir"  # not made by a put (bug bash 6: a folder stopped start-up)
    odd.mkdir()
    old = os.stat(left).st_mtime - 601
    os.utime(left, (old, old))
    os.utime(odd, (old, old))
    c = Collector(cfg)
    try:
        assert not left.exists()
        assert young.exists() and odd.is_dir()
        assert c.blobs.get("cd" + "1" * 62) == b"a stored object"
        assert not c.blobs.exists("ab" + "0" * 62)
    finally:
        c.close()
