"""``demotrace server --workers 2`` as a real subprocess, on SQLite and on the harness
PostgreSQL: two devices enroll and upload concurrently (one bundle of each device twice at the
same time), every bundle is stored and committed exactly once, the hash-chained access log
written by both worker processes verifies with ``demotrace audit verify`` (with a short
checkpoint cadence, so both workers sign checkpoints), both worker processes answered upload
requests, and SIGTERM stops the supervisor and every worker (no orphans).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest_pg import free_port
from sqlalchemy import create_engine, text

from demotrace.server.db import normalise_url
from demotrace.server.wire import write_local_bundle
from demotrace.upload import UploadClient

EXE = str(Path(sys.executable).parent / "demotrace")
EVERY = 7  # checkpoint cadence (entries): small, so checkpoints fall on both workers
DEVICES, BUNDLES, FRAMES, FRAME_BYTES = 2, 4, 5, 20_000


def _children(pid: int) -> set[int]:
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        out |= {int(x) for x in (task / "children").read_text().split()}
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    """Running (a zombie or a vanished pid counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def server(tmp_path: Path, db_url: str) -> Iterator[tuple[subprocess.Popen[bytes], str, Path, str]]:
    """``demotrace server --workers 2`` on a free port; yields (process, url, data dir, db)."""
    data = tmp_path / "srv"
    port = free_port()
    proc = subprocess.Popen(
        [EXE, "server", "--data-dir", str(data), "--database-url", db_url, "--port", str(port),
         "--workers", "2", "--checkpoint-every", str(EVERY), "--rate", "100000",
         "--debug-worker-header"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited {proc.returncode}: {proc.stderr.read().decode()}")  # type: ignore[union-attr]
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("server --workers 2 did not answer /healthz within 60 s")
            time.sleep(0.1)
        yield proc, url, data, db_url
    finally:
        if proc.poll() is None:
            kids = _children(proc.pid)
            proc.kill()
            proc.wait(10)
            for k in kids:
                if _alive(k):
                    os.kill(k, signal.SIGKILL)
        proc.stderr.close()  # type: ignore[union-attr]


class _Recorder(httpx.HTTPTransport):
    """Real HTTP transport that notes which worker pid answered each upload request."""

    def __init__(self, seen: set[str], lock: threading.Lock,
                 connection: list[tuple[bool, str | None]] | None = None) -> None:
        super().__init__()
        self.seen, self.lock = seen, lock
        self.connection = connection if connection is not None else []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        r = super().handle_request(request)
        pid = r.headers.get("x-demotrace-worker")
        commit = request.url.path.endswith("/commit") or request.url.params.get("commit") == "true"
        with self.lock:
            if pid:
                self.seen.add(pid)
            self.connection.append((commit, r.headers.get("connection")))
        return r


def test_two_workers_ingest_audit_and_sigterm(server: tuple[subprocess.Popen[bytes], str, Path, str],
                                              tmp_path: Path) -> None:
    proc, url, data, db_url = server
    workers = _children(proc.pid)
    spawned = {p for p in workers if "multiprocessing.spawn" in _cmdline(p)}
    assert len(spawned) == 2, f"expected 2 worker processes under {proc.pid}, got {workers}"

    tokens = []
    for d in range(DEVICES):
        r = subprocess.run([EXE, "admin", "enroll-code", "--person", f"worker{d}@example.org",
                            "--data-dir", str(data), "--database-url", db_url],
                           capture_output=True, text=True, check=True)
        with UploadClient(url) as c:
            tokens.append(c.enroll(r.stdout.strip(), f"device-{d}"))

    rng = random.Random(5)
    plan: list[tuple[int, Path]] = []
    for d in range(DEVICES):
        for b in range(BUNDLES):
            files = {f"frames/{f:05d}.webp": rng.randbytes(FRAME_BYTES) for f in range(FRAMES)}
            files["events/0.msgpack"] = rng.randbytes(3000)
            root = write_local_bundle(tmp_path / "dev" / f"{d}-{b}", files,
                                      session_id=f"w-{d}-{b}", platform="linux-x11").root
            plan.append((d, root))
    # the first bundle of each device is uploaded twice at the same time
    jobs = plan + [p for p in plan if p[1].name.endswith("-0")]
    assert len(jobs) == DEVICES * BUNDLES + DEVICES

    seen: set[str] = set()
    connection: list[tuple[bool, str | None]] = []  # (was it a commit, its Connection header)
    lock = threading.Lock()
    errors: list[str] = []
    results: list[str] = []
    start = threading.Barrier(len(jobs))

    def upload(d: int, root: Path) -> None:
        try:
            with UploadClient(url, tokens[d], transport=_Recorder(seen, lock, connection)) as c:
                start.wait(30)
                r = c.upload_path(root, delete_local=False)
            with lock:
                results.append(r.bundle_id)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            with lock:
                errors.append(f"{root.name}: {exc!r}")

    threads = [threading.Thread(target=upload, args=j) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert len(results) == len(jobs)
    n_bundles = DEVICES * BUNDLES
    assert len(set(results)) == n_bundles

    eng = create_engine(normalise_url(db_url))
    try:
        with eng.connect() as con:
            rows = con.execute(text("SELECT bundle_id, state FROM bundles")).all()
            commits = con.execute(text(
                "SELECT resource FROM audit_entries WHERE action = 'device.commit'")).scalars().all()
            n_blobs = con.execute(text("SELECT count(*) FROM blobs")).scalar_one()
    finally:
        eng.dispose()
    # every bundle stored once, committed
    assert sorted(r.bundle_id for r in rows) == sorted(set(results))
    assert {r.state for r in rows} == {"committed"}
    # each bundle: FRAMES distinct random frames + 1 events file, never shared between bundles
    assert n_blobs == n_bundles * (FRAMES + 1)
    # one device.commit entry per commit request: each bundle at least once, the concurrent
    # duplicates at most once more each (a repeated commit is idempotent and logged)
    assert {c.removeprefix("bundle:") for c in commits} == set(results)
    assert n_bundles <= len(commits) <= len(jobs)

    # a commit's answer closes the connection (the device's next upload is accepted by
    # whichever worker is free); no other answer does
    assert any(c for c, _ in connection) and any(not c for c, _ in connection)
    assert {h for c, h in connection if c} == {"close"}, connection
    assert {h for c, h in connection if not c} <= {None, "keep-alive"}, connection

    # both worker processes answered upload requests, and they are the supervisor's workers
    assert {int(p) for p in seen} == spawned, f"answered by {seen}, workers {spawned}"

    r = subprocess.run([EXE, "audit", "verify", "--data-dir", str(data), "--database-url", db_url,
                        "--checkpoint-every", str(EVERY)], capture_output=True, text=True,
                       check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "audit log OK" in r.stdout

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [p for p in workers if _alive(p)] == []


def test_worker_config_hand_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The parent's settings reach a worker unchanged; bad hand-overs are named errors."""
    from demotrace.errors import ConfigError
    from demotrace.server.app import create_app_from_env
    from demotrace.server.config import CONFIG_ENV, ServerConfig

    c = ServerConfig.from_env(tmp_path / "d", rate_per_s=3.0, rate_burst=15, checkpoint_every=9,
                              database_url="sqlite:////nowhere/x.db")
    back = ServerConfig.from_json(c.to_json())
    assert back == c
    assert (back.data_dir, back.rate_per_s, back.checkpoint_every) == (tmp_path / "d", 3.0, 9)
    with pytest.raises(ConfigError, match="unknown setting.*colour"):
        ServerConfig.from_json('{"data_dir": "/x", "colour": 1}')
    with pytest.raises(ConfigError, match=f"{CONFIG_ENV}: not JSON"):
        ServerConfig.from_json("{")
    with pytest.raises(ConfigError, match="checkpoint_every must be positive, got 0"):
        ServerConfig.from_json('{"data_dir": "/x", "checkpoint_every": 0}')
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    with pytest.raises(ConfigError, match=f"{CONFIG_ENV} is not set"):
        create_app_from_env()
