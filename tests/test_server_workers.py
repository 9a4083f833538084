"""``demotrace server --workers 2`` as a real subprocess, on SQLite and on the harness
PostgreSQL: two devices enroll and upload concurrently (one bundle of each device twice at the
same time), every bundle is stored and committed exactly once, the hash-chained access log
written by both worker processes verifies with ``demotrace audit verify`` (with a short
checkpoint cadence, so both workers sign checkpoints), both worker processes answered upload
requests, and SIGTERM stops the supervisor and every worker (no orphans). A worker killed with
SIGKILL is replaced (one stderr line names both pids); a supervisor killed with SIGKILL takes its
workers with it (they get SIGTERM from the kernel), so the port can be bound again at once.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
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


def _workers(pid: int) -> set[int]:
    """The uvicorn worker processes (multiprocessing spawn children) of supervisor ``pid``."""
    return {p for p in _children(pid) if "multiprocessing.spawn" in _cmdline(p)}


def _start(data: Path, db_url: str, port: int) -> subprocess.Popen[bytes]:
    """Start ``demotrace server --workers 2`` (stderr piped, not yet answering)."""
    return subprocess.Popen(
        [EXE, "server", "--data-dir", str(data), "--database-url", db_url, "--port", str(port),
         "--workers", "2", "--checkpoint-every", str(EVERY), "--rate", "100000",
         "--debug-worker-header"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_healthz(proc: subprocess.Popen[bytes], url: str) -> None:
    """Poll ``url``/healthz until 200 (fails if the server exits or 60 s pass)."""
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            pytest.fail(f"server exited {proc.returncode}: {proc.stderr.read().decode()}")  # type: ignore[union-attr]
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            pytest.fail("server --workers 2 did not answer /healthz within 60 s")
        time.sleep(0.1)


def _cleanup(proc: subprocess.Popen[bytes], extra: Iterable[int] = ()) -> None:
    """SIGKILL a server still running, its workers and the pids in ``extra`` (test teardown)."""
    kids = set(extra)
    if proc.poll() is None:
        kids |= _children(proc.pid)
        proc.kill()
        proc.wait(10)
    for k in kids:
        if _alive(k):
            os.kill(k, signal.SIGKILL)
    proc.stderr.close()  # type: ignore[union-attr]


@pytest.fixture
def server(tmp_path: Path, db_url: str) -> Iterator[tuple[subprocess.Popen[bytes], str, Path, str]]:
    """``demotrace server --workers 2`` on a free port; yields (process, url, data dir, db)."""
    data = tmp_path / "srv"
    port = free_port()
    proc = _start(data, db_url, port)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthz(proc, url)
        yield proc, url, data, db_url
    finally:
        _cleanup(proc)


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
    spawned = _workers(proc.pid)
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


def test_worker_replaced_and_supervisor_kill_takes_the_workers(tmp_path: Path) -> None:
    """SIGKILL of one worker: the supervisor replaces it and says so on stderr (both pids).
    SIGKILL of the supervisor: both workers are gone within 10 s, and a new server can bind the
    port and answer /healthz."""
    data, db_url = tmp_path / "srv", f"sqlite:///{tmp_path / 'meta.db'}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _start(data, db_url, port)
    lines: list[str] = []

    def read_stderr() -> None:  # until every writer (supervisor and workers) has closed it
        for raw in proc.stderr:  # type: ignore[union-attr]
            lines.append(raw.decode(errors="replace"))

    reader = threading.Thread(target=read_stderr, daemon=True)
    second: subprocess.Popen[bytes] | None = None
    seen: set[int] = set()
    try:
        reader.start()
        _wait_healthz(proc, url)
        first = _workers(proc.pid)
        seen |= first
        assert len(first) == 2, f"expected 2 worker processes under {proc.pid}, got {first}"

        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while len(_workers(proc.pid) - first) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        now = _workers(proc.pid)
        seen |= now
        new = now - first
        assert len(new) == 1 and now == (first - {victim}) | new, (first, now)
        (replacement,) = new
        want = f"worker {victim} stopped (killed by SIGKILL); replaced by worker {replacement}"
        while not any(want in ln for ln in lines) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any(want in ln for ln in lines), lines

        # the replacement serves (so it has run the app factory, where it ties itself to the
        # supervisor): fresh connections until one is answered by it
        answered: set[int] = set()
        while replacement not in answered and time.monotonic() < deadline:
            r = httpx.get(url + "/healthz", timeout=5, headers={"connection": "close"})
            assert r.status_code == 200
            answered.add(int(r.headers["x-demotrace-worker"]))
        assert replacement in answered, f"answered by {answered}, replacement {replacement}"

        proc.kill()  # the supervisor, SIGKILL: it cannot stop its workers itself
        proc.wait(10)
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in now) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [p for p in now if _alive(p)] == [], "workers outlived their supervisor"
        reader.join(10)  # stderr closes once the last worker has exited
        assert not reader.is_alive()
        assert not any("Traceback" in ln for ln in lines), "".join(lines)

        # the port is free again: a new server binds it and answers
        second = _start(data, db_url, port)
        _wait_healthz(second, url)
        assert httpx.get(url + "/healthz", timeout=5).status_code == 200
        second_workers = _workers(second.pid)
        seen |= second_workers
        assert len(second_workers) == 2
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
        assert [p for p in second_workers if _alive(p)] == []
    finally:
        _cleanup(proc, seen)
        if second is not None:
            _cleanup(second, seen)


def test_worker_ties_itself_to_the_supervisor(tmp_path: Path) -> None:
    """In a worker (``$DEMOTRACE_SERVER_SUPERVISOR_PID`` set): the parent-death signal is
    SIGTERM (15 on Linux, signal(7)) when the parent is the named supervisor; when the parent
    is not (the supervisor died before the worker got going), the factory exits at once with
    status 0 before it reads any config; a malformed pid is a named error."""
    from demotrace.errors import ConfigError
    from demotrace.server.app import SUPERVISOR_PID_ENV, create_app_from_env
    from demotrace.server.config import CONFIG_ENV

    env = {k: v for k, v in os.environ.items() if k != CONFIG_ENV}
    probe = ("import ctypes, sys\n"
             "from demotrace.server.app import _die_with_supervisor\n"
             "_die_with_supervisor()\n"
             "sig = ctypes.c_int(-1)\n"
             "assert ctypes.CDLL(None).prctl(2, ctypes.byref(sig), 0, 0, 0) == 0\n"  # PR_GET_PDEATHSIG
             "print(sig.value)\n")
    r = subprocess.run([sys.executable, "-c", probe], env={**env, SUPERVISOR_PID_ENV: str(os.getpid())},
                       capture_output=True, text=True, timeout=60, check=False)
    assert (r.returncode, r.stdout.strip()) == (0, "15"), r.stderr

    dead = subprocess.Popen(["true"])  # a pid that was a process and is no more
    dead.wait()
    factory = ("from demotrace.server.app import create_app_from_env\n"
               "create_app_from_env()\n"
               "print('app built')\n")
    r = subprocess.run([sys.executable, "-c", factory], env={**env, SUPERVISOR_PID_ENV: str(dead.pid)},
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""  # neither an app nor the "$DEMOTRACE_SERVER_CONFIG is not set" error
    assert f"supervisor {dead.pid} is gone (parent is now {os.getpid()}); exiting" in r.stderr

    for bad in ("", "abc", "-3", "0"):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(SUPERVISOR_PID_ENV, bad)
            with pytest.raises(ConfigError,
                               match=re.escape(f"{SUPERVISOR_PID_ENV}: not a process id: '{bad}'")):
                create_app_from_env()
