"""Collector integrity fixes from the new-user bug bash (issue 5): declared sizes checked
against stored blobs, bundles without their required parts refused, deleted or erased sessions
refused on re-upload (tombstones holding only a keyed hash), case-insensitive bearer scheme,
the chunked 413 wording, erase needs a confirmation body, and the `demotrace server` start-up
errors (unreachable database, port in use) plus --master-key-file. Storage tests run on SQLite
and on the harness PostgreSQL."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest_pg import Stack, free_port, make_stack, sha
from sqlalchemy import text

from demotrace.server.wire import BlobRef, BundleManifest, write_local_bundle
from demotrace.upload import RetryPolicy, SessionRefused, UploadClient

DT = [str(Path(sys.executable).with_name("demotrace"))]  # the installed console script
CONFIRM = {"confirm": "erase everything"}


def manifest(session: str | None, files: dict[str, bytes], **sizes: int) -> BundleManifest:
    return BundleManifest(session_id=session, platform="linux-x11", blobs=[
        BlobRef(sha256=sha(d), size=sizes.get(p.replace("/", "_").replace(".", "_"), len(d)), path=p)
        for p, d in files.items()])


def upload(st: Stack, token: str, m: BundleManifest, files: dict[str, bytes]) -> httpx.Response:
    """Manifest, every missing blob, commit; returns the commit answer."""
    h = st.h(token)
    r = st.client.post("/v1/bundles", content=m.canonical(), headers=h)
    assert r.status_code == 200, r.text
    by_sha = {sha(d): d for d in files.values()}
    for s in r.json()["missing"]:
        assert st.client.put(f"/v1/bundles/{m.bundle_id}/blobs/{s}", content=by_sha[s],
                             headers=h).status_code == 200
    return st.client.post(f"/v1/bundles/{m.bundle_id}/commit", headers=h)


def test_declared_size_must_match_the_stored_blob(stack: Stack) -> None:
    """A manifest naming an already-stored blob (sha256 of "hello", 5 bytes) with size
    999999999 is refused; nothing of it is listed and no total is inflated."""
    dev = stack.token("device", "ann@example.org")
    files = {"events/0.msgpack": b"hello"}
    assert upload(stack, dev, manifest("ann-1", files), files).status_code == 200
    liar = manifest("ann-2", files, events_0_msgpack=999999999)
    r = stack.client.post("/v1/bundles", content=liar.canonical(), headers=stack.h(dev))
    assert r.status_code == 422
    d = r.json()["detail"]
    assert sha(b"hello") in d and "999999999" in d and "5 bytes" in d, d
    person = stack.token("person", "ann@example.org")
    listed = stack.client.get("/v1/me/bundles", headers=stack.h(person)).json()
    assert [(b["n_blobs"], b["total_bytes"]) for b in listed] == [(1, 5)]
    r = stack.client.post(f"/v1/bundles/{liar.bundle_id}/commit", headers=stack.h(dev))
    assert r.status_code == 404  # never registered


@pytest.mark.parametrize("size", [100000000000000000000, (1 << 30) + 1])
def test_a_blob_size_beyond_the_limit_is_a_clear_422(stack: Stack, size: int) -> None:
    """Bug bash 3: a declared size of 10**20 bytes was a 500 (OverflowError into SQLite); a
    size over 1 GiB (no frame or event batch comes near) is refused before any row exists."""
    dev = stack.token("device", "cal@example.org")
    body = ('{"session_id": "cal-1", "blobs": [{"sha256": "%s", "size": %d, "path": "frames/a"}]}'
            % ("ab" * 32, size)).encode()
    r = stack.client.post("/v1/bundles", content=body, headers=stack.h(dev))
    assert r.status_code == 422, r.text
    assert "blobs[0].size" in r.json()["detail"] and "limit" in r.json()["detail"]
    health = stack.client.get("/v1/admin/health", headers=stack.h(stack.token("admin"))).json()
    assert health["backlog"]["open_uploads"] == 0


@pytest.mark.parametrize("body, expect", [
    (b"{}", "no session_id"),
    (b'{"session_id": "  "}', "no session_id"),
    (b'{"session_id": "bo-1", "blobs": []}', "lists no blobs"),
])
def test_bundles_without_their_required_parts_are_refused(stack: Stack, body: bytes,
                                                          expect: str) -> None:
    dev = stack.token("device", "bo@example.org")
    r = stack.client.post("/v1/bundles", content=body, headers=stack.h(dev))
    assert r.status_code == 422 and expect in r.json()["detail"], r.text
    bid = hashlib.sha256(BundleManifest(**__import__("json").loads(body)).canonical()).hexdigest()
    assert stack.client.post(f"/v1/bundles/{bid}/commit", headers=stack.h(dev)).status_code == 404
    person = stack.token("person", "bo@example.org")
    assert stack.client.get("/v1/me/bundles", headers=stack.h(person)).json() == []


@pytest.mark.parametrize("paths, lacking", [
    (("frames/a",), "lacks the session manifest (session.json) and event batches (events/…)"),
    (("session.json", "frames/a"), "lacks event batches (events/…)"),
    (("events/0.msgpack", "frames/a"), "lacks the session manifest (session.json)"),
])
def test_sealed_sessions_need_their_manifest_and_events(stack: Stack, paths: tuple[str, ...],
                                                        lacking: str) -> None:
    dev = stack.token("device", "bo@example.org")
    m = BundleManifest(session_id="bo-2", meta={"kind": "sealed-session", "schema_version": 1},
                       blobs=[BlobRef(sha256=sha(p.encode()), size=len(p), path=p)
                              for p in paths])
    r = stack.client.post("/v1/bundles", content=m.canonical(), headers=stack.h(dev))
    assert r.status_code == 422 and lacking in r.json()["detail"], r.text


def tombstone_keys(st: Stack) -> list[tuple[str, str]]:
    with st.collector.db.engine.connect() as c:
        return sorted((r[0], r[1]) for r in c.execute(text(
            "SELECT subject_id, session_key FROM session_tombstones")))


def expected_key(st: Stack, person: str, session: str) -> tuple[str, str]:
    """Test-side HMAC under the pseudonym secret file (the documented formula)."""
    secret = (st.config.data_dir / "keys" / "pseudonym.key").read_bytes()
    sid = st.subject(person)
    msg = b"session-tombstone\0" + sid.encode() + b"\0" + session.encode()
    return sid, hmac.new(secret, msg, hashlib.sha256).hexdigest()


class ViaTestClient(httpx.BaseTransport):
    """Hands the upload client's requests to the in-process app (the real ASGI stack)."""

    def __init__(self, st: Stack) -> None:
        self.st = st

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        r = self.st.client.request(request.method, request.url.raw_path.decode(),
                                   content=request.read(), headers=dict(request.headers))
        return httpx.Response(r.status_code, content=r.content,
                              headers={"content-type": r.headers.get("content-type", "")})


def client_for(st: Stack, token: str) -> UploadClient:
    return UploadClient("http://127.0.0.1:8470", token, transport=ViaTestClient(st),
                        sleep=lambda s: None, retry=RetryPolicy(attempts=5))


def test_deleted_and_erased_sessions_are_not_created_again(stack: Stack,
                                                           tmp_path: Path) -> None:
    dev = stack.token("device", "cy@example.org")
    person = stack.token("person", "cy@example.org")
    hp = stack.h(person)
    one = write_local_bundle(tmp_path / "one", {"events/0.msgpack": b"cy events 1"},
                             session_id="cy-session-1", platform="linux-x11")
    with client_for(stack, dev) as c:
        bid = c.upload(one).bundle_id
    assert stack.client.delete(f"/v1/me/bundles/{bid}", headers=hp).status_code == 200
    assert tombstone_keys(stack) == [expected_key(stack, "cy@example.org", "cy-session-1")]
    # the same bundle again, and a re-sealed one (other bytes, same session): refused, once
    resealed = write_local_bundle(tmp_path / "two", {"events/0.msgpack": b"cy events 1'"},
                                  session_id="cy-session-1", platform="linux-x11")
    for b in (one, resealed):
        with client_for(stack, dev) as c, pytest.raises(SessionRefused) as ei:
            c.upload(b, delete_local=True)
        assert "cy-session-1" in str(ei.value) and "deleted by its person" in str(ei.value)
        assert c.requests == 1 and c.retries == 0  # reported, not retried
        assert b.root.exists()  # the device keeps its copy
    assert stack.client.get("/v1/me/bundles", headers=hp).json() == []
    # erasure tombstones every remaining session, with no session id in clear
    other = write_local_bundle(tmp_path / "three", {"events/0.msgpack": b"cy events 2"},
                               session_id="cy-session-2", platform="linux-x11")
    with client_for(stack, dev) as c:
        c.upload(other)
    assert stack.client.post("/v1/me/erase", headers=hp, json=CONFIRM).status_code == 200
    assert tombstone_keys(stack) == sorted([
        expected_key(stack, "cy@example.org", "cy-session-1"),
        expected_key(stack, "cy@example.org", "cy-session-2")])
    r = stack.client.post("/v1/bundles", content=other.manifest.canonical(), headers=stack.h(dev))
    assert r.status_code == 409 and "cy-session-2" in r.json()["detail"]
    # another person's session of the same name is unaffected
    dev2 = stack.token("device", "dee@example.org")
    r = stack.client.post("/v1/bundles", content=other.manifest.canonical(),
                          headers=stack.h(dev2))
    assert r.status_code == 200


def test_bearer_scheme_is_case_insensitive(stack: Stack) -> None:
    admin = stack.token("admin")
    for scheme in ("bearer", "BEARER", "Bearer"):
        r = stack.client.get("/v1/admin/health", headers={"authorization": f"{scheme} {admin}"})
        assert r.status_code == 200, (scheme, r.text)
    r = stack.client.get("/v1/admin/health", headers={"authorization": f"Basic {admin}"})
    assert r.status_code == 401


def test_erase_needs_a_confirmation_body(stack: Stack) -> None:
    dev = stack.token("device", "eve@example.org")
    files = {"events/0.msgpack": b"eve events"}
    assert upload(stack, dev, manifest("eve-1", files), files).status_code == 200
    hp = stack.h(stack.token("person", "eve@example.org"))
    for kw in ({}, {"json": {"confirm": "yes"}}, {"json": {}}):
        r = stack.client.post("/v1/me/erase", headers=hp, **kw)
        assert r.status_code == 422, r.text
        assert "erase everything" in str(r.json()["detail"])
        assert len(stack.client.get("/v1/me/bundles", headers=hp).json()) == 1  # nothing lost
    r = stack.client.post("/v1/me/erase", headers=hp, json=CONFIRM)
    assert r.status_code == 200 and r.json()["bundles_deleted"] == 1


def test_chunked_body_over_the_limit_names_the_limit(tmp_path: Path) -> None:
    st = make_stack(tmp_path / "srv", f"sqlite:///{tmp_path / 'm.db'}", max_body_bytes=1000)
    try:
        dev = st.token("device", "fay@example.org")

        def chunks() -> Iterator[bytes]:
            for _ in range(3):
                yield b"y" * 400

        r = st.client.put(f"/v1/bundles/{'a' * 64}/blobs/{'b' * 64}", content=chunks(),
                          headers=st.h(dev))
        assert r.status_code == 413
        assert r.json()["detail"].startswith(
            "request body (chunked) exceeds the limit of 1000 bytes"), r.json()
    finally:
        st.client.close()
        st.collector.close()


# -- `demotrace server` start-up ----------------------------------------------------------------

def run_server(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DT, "server", *args], capture_output=True, text=True, check=False,
                          timeout=timeout, env={**os.environ, "COLUMNS": "200"})


def test_unreachable_postgresql_is_one_clear_line(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    r = run_server("--data-dir", str(tmp_path / "d"), "--port", str(free_port()),
                   "--database-url", f"postgresql://nouser:s3cret@127.0.0.1:{port}/x")
    assert r.returncode == 1
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert f"nouser:***@127.0.0.1:{port}/x" in lines[0] and "s3cret" not in r.stderr
    assert "refused" in lines[0].lower() and "Traceback" not in r.stderr


def test_port_in_use_is_reported_before_announcing_the_collector(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = run_server("--data-dir", str(tmp_path / "d"), "--port", str(port))
    assert r.returncode == 1
    assert "collector on" not in r.stderr and "Traceback" not in r.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in r.stderr and "in use" in r.stderr, r.stderr


@contextlib.contextmanager
def served(data: Path, *args: str) -> Iterator[str]:
    """`demotrace server` on SQLite at 127.0.0.1:<free port> until the block ends; its URL."""
    port = free_port()
    p = subprocess.Popen([*DT, "server", "--data-dir", str(data), "--port", str(port), *args],
                         stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert p.poll() is None, p.stderr.read() if p.stderr else ""
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.1)
        yield url
    finally:
        p.terminate()
        p.communicate(timeout=30)  # reaps it and closes the stderr pipe


def test_master_key_file_option(tmp_path: Path) -> None:
    key = tmp_path / "secrets" / "master.key"
    with served(tmp_path / "d", "--master-key-file", str(key)):
        assert key.stat().st_size == 32 and key.stat().st_mode & 0o777 == 0o600
        assert not (tmp_path / "d" / "keys" / "master.key").exists()


def test_cli_upload_reports_a_deleted_session_and_keeps_the_bundle(tmp_path: Path) -> None:
    data, home = tmp_path / "d", tmp_path / "home"
    env = {**os.environ, "DEMOTRACE_HOME": str(home), "COLUMNS": "200"}

    def dt(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*DT, *args], capture_output=True, text=True, env=env,
                              timeout=60, check=False)

    with served(data) as url:
        code = dt("admin", "enroll-code", "--person", "gus@example.org", "--data-dir",
                  str(data)).stdout.strip()
        assert dt("device", "enroll", "--server", url, "--code", code).returncode == 0
        pcode = dt("admin", "enroll-code", "--role", "person", "--person", "gus@example.org",
                   "--data-dir", str(data)).stdout.strip()
        person = httpx.post(url + "/v1/enroll", json={"code": pcode}).json()["credential"]
        b = write_local_bundle(tmp_path / "b", {"events/0.msgpack": b"gus events"},
                               session_id="gus-1", platform="linux-x11")
        r = dt("upload", "--keep", str(b.root))
        assert r.returncode == 0 and "committed" in r.stdout, r.stderr
        r2 = httpx.delete(f"{url}/v1/me/bundles/{b.manifest.bundle_id}",
                          headers={"authorization": f"Bearer {person}"})
        assert r2.status_code == 200
        r = dt("upload", str(b.root))
        out = " ".join(r.stderr.split())
        assert r.returncode == 1 and "refused" in out and "gus-1" in out, out
        assert "was deleted by its person" in out and "not retried" in out
        assert (b.root / "manifest.json").exists()  # the device keeps its copy


def test_cli_uploads_of_one_home_run_one_at_a_time(tmp_path: Path) -> None:
    """Bug bash 3: two `demotrace upload` of one home at once raced for the same bundles (the
    loser failed with "No such file or directory" although its bundle was committed). An
    upload waits while another holds ``<home>/upload.lock`` (held here by the test itself with
    flock, as a running upload would), says so, and then runs."""
    import fcntl

    data, home = tmp_path / "d", tmp_path / "home"
    env = {**os.environ, "DEMOTRACE_HOME": str(home), "COLUMNS": "200"}
    with served(data) as url:
        code = subprocess.run([*DT, "admin", "enroll-code", "--person", "hal@example.org",
                               "--data-dir", str(data)], capture_output=True, text=True,
                              env=env, check=True).stdout.strip()
        subprocess.run([*DT, "device", "enroll", "--server", url, "--code", code], env=env,
                       check=True, capture_output=True)
        b = write_local_bundle(tmp_path / "b", {"events/0.msgpack": b"hal events"},
                               session_id="hal-1", platform="linux-x11")
        fd = os.open(home / "upload.lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        p = subprocess.Popen([*DT, "upload", str(b.root)], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(1.5)
            assert p.poll() is None  # waiting for the lock
            assert (b.root / "manifest.json").exists()
        finally:
            os.close(fd)  # releases the lock
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        assert "another `demotrace upload` is running for this home; waiting" in " ".join(err.split())
        assert "committed" in out and not b.root.exists()


def test_unreadable_tls_files_are_reported_before_announcing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a PEM certificate\n")
    r = run_server("--data-dir", str(tmp_path / "d"), "--port", str(free_port()),
                   "--cert", str(bad), "--key", str(bad))
    assert r.returncode == 1
    assert "collector on" not in r.stderr and "Traceback" not in r.stderr
    assert f"cannot load TLS certificate {bad}" in " ".join(r.stderr.split()), r.stderr
