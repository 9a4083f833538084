"""Uploads over a real loopback socket to a real ``demotrace server`` subprocess: random network
faults, the server killed mid-upload and restarted, TLS, and the CLI flow. The result must be
exactly one stored copy of every bundle and nothing lost (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import random
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest_pg import free_port, sha
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import create_engine, text

from demotrace.server.errors import UploadError
from demotrace.server.wire import LocalBundle, write_local_bundle
from demotrace.upload import RetryPolicy, UploadClient

DEMOTRACE = str(Path(sys.executable).parent / "demotrace")
PURPOSE = {"purpose": "agent-training"}


class ServerProc:
    """``demotrace server`` as a subprocess on 127.0.0.1:``port``."""

    def __init__(self, data_dir: Path, db_url: str, tls: tuple[Path, Path] | None = None) -> None:
        self.data_dir, self.db_url, self.tls = data_dir, db_url, tls
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: Any = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def cli(self, *args: str) -> str:
        r = subprocess.run([DEMOTRACE, *args, "--data-dir", str(self.data_dir),
                            "--database-url", self.db_url], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    def code(self, role: str = "device", person: str | None = None) -> str:
        """A one-time code made in-process on the server's database (the CLI path is
        exercised by the TLS test; a subprocess per code would cost seconds)."""
        from demotrace.server import auth
        from demotrace.server.config import ServerConfig
        from demotrace.server.db import Database
        from demotrace.server.keys import Pseudonymiser

        cfg = ServerConfig(data_dir=self.data_dir, database_url=self.db_url)
        sid = Pseudonymiser.from_file(cfg.pseudonym_key_path).subject_id(person) if person else None
        db = Database(self.db_url, run_migrations=False)
        try:
            with db.session() as s:
                return auth.create_enrollment_code(s, role, subject_id=sid, created_by="test",
                                                   ttl_s=600)[0]
        finally:
            db.dispose()

    def start(self) -> None:
        cmd = [DEMOTRACE, "server", "--data-dir", str(self.data_dir), "--database-url",
               self.db_url, "--port", str(self.port), "--rate", "10000"]
        if self.tls:
            cmd += ["--cert", str(self.tls[0]), "--key", str(self.tls[1])]
        if self.log is None:
            self.log = open(self.data_dir / "server.log", "ab")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.log)
        verify: Any = ssl.create_default_context(cafile=str(self.tls[0])) if self.tls else True
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {(self.data_dir / 'server.log').read_text()}")
            try:
                if httpx.get(self.url + "/healthz", verify=verify, timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("server did not answer /healthz within 60 s")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.log is not None:
            self.log.close()


@pytest.fixture
def server(tmp_path: Path, db_url: str) -> Iterator[ServerProc]:
    s = ServerProc(tmp_path / "srv", db_url)
    s.data_dir.mkdir()
    try:
        yield s
    finally:
        s.stop()


class FaultyTransport(httpx.BaseTransport):
    """A real HTTP transport that fails at random points: before the request leaves
    (connect error) or after the server processed it (the response is lost)."""

    def __init__(self, p_before: float, p_after: float, seed: int) -> None:
        self.inner = httpx.HTTPTransport()
        self.rng = random.Random(seed)
        self.p_before, self.p_after = p_before, p_after
        self.injected = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.rng.random() < self.p_before:
            self.injected += 1
            raise httpx.ConnectError("injected: connection refused", request=request)
        resp = self.inner.handle_request(request)
        if self.rng.random() < self.p_after:
            resp.read()
            resp.close()
            self.injected += 1
            raise httpx.ReadError("injected: connection reset after the server answered",
                                  request=request)
        return resp

    def close(self) -> None:
        self.inner.close()


def make_bundles(root: Path, n: int, blobs_each: int, seed: int) -> list[LocalBundle]:
    rng = random.Random(seed)
    shared = b"frame shared by every bundle " * 40
    out = []
    for i in range(n):
        files = {f"frames/{j}.png": rng.randbytes(rng.randint(100, 40_000))
                 for j in range(blobs_each)}
        files["frames/shared.png"] = shared
        files["events/0.msgpack"] = f"events of session {i}".encode()
        out.append(write_local_bundle(root / f"b{i}", files, session_id=f"s{i}",
                                      platform="linux-x11"))
    return out


def stored_counts(db_url: str) -> tuple[int, int, int]:
    eng = create_engine(db_url.replace("postgresql+psycopg", "postgresql+psycopg"))
    try:
        with eng.connect() as c:
            nb = c.execute(text("SELECT count(*) FROM bundles WHERE state='committed'")).scalar()
            nall = c.execute(text("SELECT count(*) FROM bundles")).scalar()
            nblob = c.execute(text("SELECT count(*) FROM blobs")).scalar()
    finally:
        eng.dispose()
    return int(nb), int(nall), int(nblob)


def objects(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "blobs").rglob("*") if p.is_file()]


def enroll(server: ServerProc, code: str, label: str = "") -> str:
    with UploadClient(server.url) as c:
        return c.enroll(code, label)


def curator_check(server: ServerProc, bundles: list[tuple[str, dict[str, bytes]]]) -> None:
    cur = enroll(server, server.code("curator"))
    with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {cur}"}) as c:
        listing = c.get("/v1/curator/bundles", params=PURPOSE).json()
        assert sorted(b["bundle_id"] for b in listing) == sorted(b for b, _ in bundles)
        sid = listing[0]["subject_id"]
        for bid, files in bundles:
            for data in files.values():
                r = c.get(f"/v1/curator/subjects/{sid}/bundles/{bid}/blobs/{sha(data)}",
                          params=PURPOSE)
                assert r.status_code == 200 and r.content == data


def test_random_network_faults_lose_nothing_and_store_once(server: ServerProc,
                                                            tmp_path: Path) -> None:
    server.start()
    code = server.code("device", "gus@example.org")
    token = enroll(server, code, "gus-laptop")
    bundles = make_bundles(tmp_path / "dev", n=4, blobs_each=6, seed=7)
    originals = [(b.manifest.bundle_id, {r.path: b.read_blob(r.sha256) for r in b.manifest.blobs})
                 for b in bundles]
    copies = [shutil.copytree(b.root, tmp_path / "copy" / b.root.name) for b in bundles]
    t = FaultyTransport(p_before=0.25, p_after=0.25, seed=11)
    client = UploadClient(server.url, token, transport=t, sleep=lambda s: None,
                          retry=RetryPolicy(attempts=40), seed=3, batch_bytes=60_000)
    with client:
        receipts = [client.upload(b, delete_local=True) for b in bundles]
    assert t.injected >= 10  # the faults really happened
    assert all(r.deleted_local and not b.root.exists() for r, b in zip(receipts, bundles))
    distinct = {sha(d) for _, files in originals for d in files.values()}
    assert len(distinct) == 4 * 8 - 3  # the shared frame counts once
    assert stored_counts(server.db_url) == (4, 4, len(distinct))
    assert len(objects(server.data_dir)) == len(distinct)
    # the same bundles again: acknowledged, nothing sent, still stored once
    with UploadClient(server.url, token) as again:
        for c in copies:
            r = again.upload_path(c)
            assert r.sent_blobs == 0 and Path(c).exists()
    assert stored_counts(server.db_url) == (4, 4, len(distinct))
    curator_check(server, originals)


def audit_rows(db_url: str, action: str) -> list[dict[str, Any]]:
    eng = create_engine(db_url)
    try:
        with eng.connect() as c:
            return [dict(r) for r in c.execute(text(
                "SELECT seq, actor_role, actor_id, subject_id, resource, status "
                "FROM audit_entries WHERE action = :a ORDER BY seq"), {"a": action}).mappings()]
    finally:
        eng.dispose()


def test_concurrent_devices_commit_once_each_and_the_chain_verifies(server: ServerProc,
                                                                    tmp_path: Path) -> None:
    """Four devices upload at once (their last batch commits); every commit has exactly one
    access-log entry naming its bundle and device, and ``audit verify`` passes."""
    server.start()
    people = [f"p{i}@example.org" for i in range(4)]
    tokens = [enroll(server, server.code("device", p)) for p in people]
    plans = [make_bundles(tmp_path / f"dev{i}", n=2, blobs_each=5, seed=20 + i)
             for i in range(4)]

    def run(i: int) -> int:
        with UploadClient(server.url, tokens[i], batch_bytes=50_000) as c:
            return sum(c.upload(b).sent_blobs for b in plans[i])

    with ThreadPoolExecutor(4) as ex:  # .result() re-raises a device's error here
        sent = [f.result(timeout=120) for f in [ex.submit(run, i) for i in range(4)]]
    # a bundle: 5 frames + the shared frame + events; the second bundle of the same person
    # does not send the shared frame again
    assert sent == [7 + 6] * 4
    want = {(tokens[i].split("_")[1], f"bundle:{b.manifest.bundle_id}")
            for i in range(4) for b in plans[i]}
    rows = audit_rows(server.db_url, "device.commit")
    assert len(rows) == 8 and {(r["actor_id"], r["resource"]) for r in rows} == want
    assert all(r["status"] == 200 and r["actor_role"] == "device" for r in rows)
    assert stored_counts(server.db_url)[:2] == (8, 8)
    assert server.cli("audit", "verify").startswith("audit log OK: 8 entries")


class KillingTransport(httpx.BaseTransport):
    """Kills the server (SIGKILL) while the ``kill_at``-th blob PUT is in flight."""

    def __init__(self, server: ServerProc, kill_at: int) -> None:
        self.inner = httpx.HTTPTransport()
        self.server, self.kill_at, self.puts = server, kill_at, 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            self.puts += 1
            if self.puts == self.kill_at:
                threading.Timer(0.002, self.server.kill).start()
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def test_server_killed_mid_upload_then_restarted_resumes(server: ServerProc,
                                                         tmp_path: Path) -> None:
    server.start()
    code = server.code("device", "hal@example.org")
    token = enroll(server, code)
    [bundle] = make_bundles(tmp_path / "dev", n=1, blobs_each=12, seed=5)
    original = {r.path: bundle.read_blob(r.sha256) for r in bundle.manifest.blobs}
    n = len(bundle.manifest.blobs)
    with UploadClient(server.url, token, transport=KillingTransport(server, kill_at=5),
                      sleep=lambda s: None, retry=RetryPolicy(attempts=3), batch_bytes=0) as c:
        with pytest.raises(UploadError, match="gave up"):
            c.upload(bundle, delete_local=True)
    assert bundle.root.exists()  # not acknowledged → kept
    server.start()  # same data, same port
    with UploadClient(server.url, token, batch_bytes=0) as c:
        r = c.upload(bundle, delete_local=True)
    assert r.n_blobs == n == 14 and r.deleted_local
    assert 14 - 5 <= r.sent_blobs <= 14 - 3  # resumed: what arrived before the kill is not resent
    assert stored_counts(server.db_url) == (1, 1, 14)
    assert len(objects(server.data_dir)) == 14
    curator_check(server, [(r.bundle_id, original)])


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "demotrace test collector")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    c, k = tmp / "cert.pem", tmp / "key.pem"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    os.chmod(k, 0o600)
    return c, k


def test_cli_flow_over_tls(tmp_path: Path) -> None:
    """admin enroll-code → device enroll (TLS, pinned CA) → upload → the bundle is on the
    server and gone from the device; plain HTTP to the TLS port fails."""
    cert, key = _self_signed(tmp_path)
    srv = ServerProc(tmp_path / "srv", f"sqlite:///{tmp_path / 'srv' / 'c.db'}", tls=(cert, key))
    srv.data_dir.mkdir()
    home = tmp_path / "home"
    env = {**os.environ, "DEMOTRACE_HOME": str(home)}
    try:
        srv.start()
        code = srv.cli("admin", "enroll-code", "--person", "ivy@example.org")
        r = subprocess.run([DEMOTRACE, "device", "enroll", "--server", srv.url, "--code", code,
                            "--ca", str(cert), "--label", "ivy-desktop"],
                           capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 0, r.stderr
        assert (home / "collector.json").stat().st_mode & 0o777 == 0o600
        b = write_local_bundle(tmp_path / "bundle", {"frames/1.png": b"ivy frame" * 100},
                               session_id="ivy-1", platform="linux-x11")
        r = subprocess.run([DEMOTRACE, "upload", str(b.root)], capture_output=True, text=True,
                           env=env, timeout=60)
        assert r.returncode == 0, r.stderr
        # the FULL bundle id (sha256 of the manifest, 64 hex digits): the API takes only that
        assert f"committed {b.manifest.bundle_id} (" in r.stdout, r.stdout
        assert len(b.manifest.bundle_id) == 64 and "local copy deleted" in r.stdout
        assert not b.root.exists()
        assert stored_counts(srv.db_url)[0] == 1
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{srv.port}/healthz", timeout=2)
    finally:
        srv.stop()


def test_sealed_bundle_from_the_privacy_layer_uploads_intact(tmp_path: Path) -> None:
    """A session sealed by `demotrace seal` (privacy layer) → upload → the curator reads back
    the same events and frames the device's BundleReader sees."""
    import msgspec
    from PIL import Image
    from privacy_corpus import Builder

    from demotrace.paths import Paths
    from demotrace.privacy.bundle import open_bundle, sealed_root
    from demotrace.privacy.pipeline import RedactionPipeline, SecretLayer
    from demotrace.privacy.policy import default_policy
    from demotrace.privacy.seal import seal_session
    from demotrace.schema.events import decode_batch
    from demotrace.spool import DataKey, Spool

    paths = Paths(tmp_path / "home").ensure()
    spool = Spool(paths.spool, DataKey.create(paths.key_file))
    b = Builder(spool.key)
    b.focus("xterm", "notes")
    b.type_text("hello world")
    b.frame(Image.new("RGB", (64, 48), (30, 120, 200)))
    b.type_text("more")
    b.frame(Image.new("RGB", (64, 48), (200, 40, 40)))
    b.write(spool, "s1")
    # OCR stays on (it keeps frames); only the secret detectors run as text layers, to keep
    # the test fast (Presidio's start-up is the privacy tests' business)
    pipe = RedactionPipeline(default_policy(), text_layers=[SecretLayer()])
    from demotrace.privacy import record_consent

    record_consent(paths, default_policy())  # the collector refuses a bundle without consent
    seal_session(paths, spool, "s1", default_policy(), pipeline=pipe)
    pipe.close()
    with open_bundle(paths, "s1") as b:
        want_events = list(b.iter_events())
        want_frames = {bid: b.read_blob(bid) for bid in b.blob_ids()}
        want_platform = b.manifest.platform
    assert want_events and want_frames

    srv = ServerProc(tmp_path / "srv", f"sqlite:///{tmp_path / 'srv' / 'c.db'}")
    srv.data_dir.mkdir()
    try:
        srv.start()
        token = enroll(srv, srv.code("device", "jo@example.org"))
        with UploadClient(srv.url, token) as c:
            r = c.upload_path(sealed_root(paths) / "s1", delete_local=True, home=paths.home)
        assert r.deleted_local and not (sealed_root(paths) / "s1").exists()
        cur = enroll(srv, srv.code("curator"))
        with httpx.Client(base_url=srv.url, headers={"authorization": f"Bearer {cur}"}) as h:
            [row] = h.get("/v1/curator/bundles", params=PURPOSE).json()
            assert row["platform"] == want_platform
            base = f"/v1/curator/subjects/{row['subject_id']}/bundles/{row['bundle_id']}"
            m = h.get(base, params=PURPOSE).json()
            assert m["session_id"] == "s1" and m["meta"]["kind"] == "sealed-session"
            got_events = []
            got_frames = {}
            for ref in m["blobs"]:
                data = h.get(f"{base}/blobs/{ref['sha256']}", params=PURPOSE).content
                assert sha(data) == ref["sha256"]
                if ref["path"].startswith("events/"):
                    got_events.extend(decode_batch(data))
                elif ref["path"].startswith("frames/"):
                    got_frames[ref["path"][len("frames/"):]] = data
                elif ref["path"] == "session.json":
                    assert msgspec.json.decode(data)["session_id"] == "s1"
        assert sorted(got_events, key=lambda e: e.seq) == want_events
        assert got_frames == want_frames
    finally:
        srv.stop()


def _batch(*blobs: bytes) -> bytes:
    """A blob batch body framed by hand (64 hex sha256, 16 decimal size digits, bytes)."""
    return b"".join(sha(d).encode() + str(len(d)).zfill(16).encode() + d for d in blobs)


def test_last_batch_commits_with_its_log_entry_or_says_what_is_missing(stack: Any) -> None:
    """``POST …/blobs?commit=true``: stores the batch and commits in one transaction with one
    ``device.commit`` entry; with a blob missing elsewhere it answers 409 naming it and keeps
    the batch; a retry of the committing request changes nothing stored."""
    from typer.testing import CliRunner

    from demotrace.cli import app as cli_app
    from demotrace.server.wire import BlobRef, BundleManifest

    admin = stack.token("admin")
    code = stack.client.post("/v1/admin/enrollment-codes", headers=stack.h(admin),
                             json={"role": "device", "person": "lee@example.org"}).json()["code"]
    enrolled = stack.client.post("/v1/enroll", json={"code": code}).json()
    dev = stack.h(enrolled["credential"])
    a, b, ev = b"A" * 5000, b"B" * 7000, b"events of lee"
    m = BundleManifest(session_id="lee-1", platform="linux-x11", blobs=[
        BlobRef(sha256=sha(d), size=len(d), path=p)
        for p, d in (("frames/a", a), ("frames/b", b), ("events/0", ev))])
    r = stack.client.post("/v1/bundles", content=m.canonical(), headers=dev)
    assert sorted(r.json()["missing"]) == sorted(sha(d) for d in (a, b, ev))
    url = f"/v1/bundles/{m.bundle_id}/blobs"
    assert stack.client.post(url, content=_batch(a), headers=dev).json() == {"stored": 1, "new": 1}
    # "last" batch, but b never sent: 409 names b; ev is kept; nothing committed, nothing logged
    r = stack.client.post(url, params={"commit": "true"}, content=_batch(ev), headers=dev)
    assert r.status_code == 409 and r.json()["missing"] == [sha(b)]
    assert stack.client.post("/v1/bundles", content=m.canonical(),
                             headers=dev).json()["missing"] == [sha(b)]
    sid = stack.subject("lee@example.org")

    def log() -> list[tuple[str, str, str, int]]:
        with stack.collector.db.engine.connect() as c:
            return [tuple(x) for x in c.execute(text(
                "SELECT actor_id, subject_id, resource, status FROM audit_entries "
                "WHERE action = 'device.commit' ORDER BY seq"))]

    assert log() == []
    r = stack.client.post(url, params={"commit": "true"}, content=_batch(b), headers=dev)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["stored"], body["new"]) == (1, 1)
    assert body["commit"]["state"] == "committed" and body["commit"]["n_blobs"] == 3
    assert body["commit"]["total_bytes"] == 5000 + 7000 + len(ev)
    entry = (enrolled["credential_id"], sid, f"bundle:{m.bundle_id}", 200)
    assert log() == [entry]
    # the response was lost, the device sends the same request again: acknowledged again
    # (and logged again), nothing new stored
    r = stack.client.post(url, params={"commit": "true"}, content=_batch(b), headers=dev)
    assert r.status_code == 200 and r.json()["new"] == 0
    assert r.json()["commit"]["committed_at"] == body["commit"]["committed_at"]
    assert log() == [entry, entry]
    with stack.collector.db.engine.connect() as c:
        rows = c.execute(text("SELECT stored_name, size FROM blobs WHERE subject_id = :s"),
                         {"s": sid}).all()
    assert sorted(size for _, size in rows) == sorted([5000, 7000, len(ev)])
    root = stack.config.data_dir / "blobs"
    for name, size in rows:  # every row's object is on disk, AES-GCM: 12 nonce + 16 tag bytes
        assert (root / name[:2] / name).stat().st_size == size + 28
    v = CliRunner().invoke(cli_app, ["audit", "verify", "--data-dir", str(stack.config.data_dir),
                                     "--database-url", stack.config.db_url])
    assert v.exit_code == 0 and "audit log OK" in v.output, v.output

