"""``demotrace sessions list|show|delete`` on spools written with the real SessionWriter:
ended, crashed and unreadable sessions; errors that name the fix."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from demotrace.cli import app
from demotrace.errors import SessionNotFound
from demotrace.paths import Paths
from demotrace.schema import FocusChange, Frame, KeyDown, KeyUp, Marker, PointerDown, Rect, SessionManifest
from demotrace.spool import DataKey, Spool

S = 1_000_000_000
DEMOTRACE = str(Path(sys.executable).parent / "demotrace")


def _manifest(sid: str) -> SessionManifest:
    return SessionManifest(session_id=sid, started_utc="2026-11-30T09:15:00.000Z", timezone="UTC (+00:00)",
                           platform="linux-x11", backend="x11", recorder_version="0.1.0")


def _write_session(home: Path, sid: str, *, close: bool) -> None:
    paths = Paths(home).ensure()
    spool = Spool(paths.spool, DataKey.load_or_create(paths.key_file))
    w = spool.create(_manifest(sid))
    blob = w.key.content_id(b"pixels-1")
    w.put_blob(blob, b"RIFF....WEBP", "webp")
    evs = [
        Marker(seq=0, t_ns=0, name="session_start"),
        FocusChange(seq=1, t_ns=1 * S, app_id="XTerm", title="bash"),
        Marker(seq=2, t_ns=2 * S, name="task_start", instruction="rename the file"),
        Frame(seq=3, t_ns=3 * S, blob=blob, monitor=-1, bounds=Rect(0, 0, 1280, 800), width=640, height=400,
              scale=0.5, captured_t_ns=3 * S - 10, reason="pointer_down"),
        PointerDown(seq=4, t_ns=3 * S, x=10, y=20, button="left"),
        FocusChange(seq=5, t_ns=4 * S, app_id="Firefox", title="docs"),
        KeyDown(seq=6, t_ns=5 * S, key="a", code="KeyA", text="a"),
        KeyUp(seq=7, t_ns=5 * S + 1, key="a", code="KeyA", text="a"),
        FocusChange(seq=8, t_ns=6 * S, app_id="XTerm", title="bash 2"),
        Frame(seq=9, t_ns=7 * S, blob=blob, monitor=-1, bounds=Rect(0, 0, 1280, 800), width=640, height=400,
              scale=0.5, captured_t_ns=7 * S - 10, reason="settle"),
        Marker(seq=10, t_ns=8 * S, name="task_end", status="failure"),
        Marker(seq=11, t_ns=9 * S, name="pause"),
        Marker(seq=12, t_ns=10 * S, name="resume"),
        Marker(seq=13, t_ns=65 * S, name="session_stop"),
    ]
    w.append(evs[:5])
    w.append(evs[5:])
    if close:
        w.close(duration_ns=65 * S)


def _run(home: Path, *args: str, input: str | None = None):
    return CliRunner().invoke(app, [*args, "--home", str(home)], input=input, env={"COLUMNS": "200"})


def test_show_counts_apps_tasks_duration(tmp_path: Path) -> None:
    home = tmp_path / "h"
    _write_session(home, "20261130T091500Z-aaaaaa", close=True)
    res = _run(home, "sessions", "show", "20261130T091500Z-aaaaaa")
    assert res.exit_code == 0, res.output
    out = res.output
    counts = dict(re.findall(r"│\s*(\w+)\s*│\s*(\d+)\s*│", out))
    assert counts == {"focus_change": "3", "frame": "2", "key_down": "1", "key_up": "1", "marker": "6", "pointer_down": "1"}
    assert "events: 14" in out
    assert "duration: 0:01:05" in out
    assert "apps: XTerm, Firefox" in out
    assert "frames: 2 (1 distinct images)" in out
    assert "'rename the file': failure" in out
    assert "pauses: 1" in out
    assert "state: ended" in out
    size = sum(p.stat().st_size for p in (Paths(home).spool / "20261130T091500Z-aaaaaa").rglob("*") if p.is_file())
    assert f"({size} bytes)" in out


def test_list_ended_crashed_unreadable_and_delete(tmp_path: Path) -> None:
    home = tmp_path / "h"
    _write_session(home, "20261130T091500Z-aaaaaa", close=True)
    _write_session(home, "20261130T101500Z-bbbbbb", close=False)  # recorder died: no clean close
    # a session written with another key cannot be read
    other = Spool(Paths(home).spool, DataKey(os.urandom(32)))
    other.create(_manifest("20261130T111500Z-cccccc")).close()
    res = _run(home, "sessions", "list")
    assert res.exit_code == 0, res.output
    rows = {line.split()[0]: line for line in res.output.splitlines() if line.startswith("2026113")}
    assert set(rows) == {"20261130T091500Z-aaaaaa", "20261130T101500Z-bbbbbb", "20261130T111500Z-cccccc"}
    assert re.search(r"0:01:05\s+14\s+1\s+.*\s+ended", rows["20261130T091500Z-aaaaaa"])
    assert re.search(r"0:01:05\s+14\s+1\s+.*\s+crashed", rows["20261130T101500Z-bbbbbb"])
    assert "unreadable" in rows["20261130T111500Z-cccccc"]
    # delete asks first; "n" keeps the session
    res = _run(home, "sessions", "delete", "20261130T101500Z-bbbbbb", input="n\n")
    assert res.exit_code == 1 and (Paths(home).spool / "20261130T101500Z-bbbbbb").is_dir()
    res = _run(home, "sessions", "delete", "20261130T101500Z-bbbbbb", input="y\n")
    assert res.exit_code == 0 and not (Paths(home).spool / "20261130T101500Z-bbbbbb").exists()
    res = _run(home, "sessions", "delete", "20261130T101500Z-bbbbbb", "--yes")
    assert isinstance(res.exception, SessionNotFound) and "sessions list" in str(res.exception)


def test_errors_name_the_fix(tmp_path: Path) -> None:
    home = tmp_path / "empty"
    env = dict(os.environ, COLUMNS="200")
    out = subprocess.run([DEMOTRACE, "sessions", "list", "--home", str(home)], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0 and "record one with `demotrace record`" in out.stdout
    _write_session(home, "20261130T091500Z-aaaaaa", close=True)
    out = subprocess.run([DEMOTRACE, "sessions", "show", "nope", "--home", str(home)], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 1 and "no session 'nope'" in out.stderr and "demotrace sessions list" in out.stderr
    out = subprocess.run([DEMOTRACE, "pause", "--home", str(home)], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 1 and "no recorder running; start one with `demotrace record`" in out.stderr


def test_list_at_80_columns_keeps_id_start_and_duration_whole(tmp_path: Path) -> None:
    """The id is what a user copies: at 80 columns it, the start and the duration are printed
    whole on the row's first line (the other columns may wrap)."""
    home = tmp_path / "h"
    _write_session(home, "20261130T091500Z-aaaaaa", close=True)
    _write_session(home, "20261130T101500Z-bbbbbb", close=False)
    env = {**os.environ, "COLUMNS": "80"}
    env.pop("DEMOTRACE_HOME", None)
    out = subprocess.run([DEMOTRACE, "sessions", "list", "--home", str(home)], capture_output=True, text=True,
                         env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in out.stdout
    for sid, state in (("20261130T091500Z-aaaaaa", "ended"), ("20261130T101500Z-bbbbbb", "crashed")):
        row = next(line for line in lines if sid in line)
        # both sessions were written with started_utc 2026-11-30T09:15:00.000Z and last event at 65 s
        assert row.split()[:4] == [sid, "2026-11-30", "09:15:00", "0:01:05"], row
        assert row.split()[-1] == state, row


# -- issue #4: review list ids, stale sealing folders, uploaded sessions never sealed again ----

def _cli(home: Path, *args: str, columns: int = 200) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": str(columns), "DEMOTRACE_HOME": str(home)}
    return subprocess.run([DEMOTRACE, *args], capture_output=True, text=True, env=env, timeout=180)


def test_review_list_at_80_columns_never_truncates_session_ids(tmp_path: Path) -> None:
    home = tmp_path / "h"
    ids = ("20261130T091500Z-aaaaaa", "20261130T101500Z-bbbbbb")
    for sid in ids:
        _write_session(home, sid, close=True)
    out = _cli(home, "review", "list", columns=80)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80 and "…" not in out.stdout
    for sid in ids:
        row = next(line for line in lines if sid in line)  # whole, on one line
        # started 09:15 (manifest, shown to the minute), last event at 65 s, 14 events, 2 frames,
        # not sealed
        assert row.split()[:3] == [sid, "2026-11-30", "09:15"], row
        assert row.split()[3:6] == ["65.0", "14", "2"] and row.split()[-1] == "no", row


def test_stale_sealing_folders_are_removed_and_never_listed(tmp_path: Path) -> None:
    """A seal killed mid-way leaves sealed/.<sid>.sealing-<pid>; the next seal removes those of
    dead pids (a live pid's is left: a seal may be writing it) and listings never show them."""
    from demotrace.privacy.bundle import bundle_ids
    from demotrace.privacy.seal import clean_stale_sealing

    home = tmp_path / "h"
    sid = "20261130T091500Z-aaaaaa"
    _write_session(home, sid, close=True)
    sealed = home / "sealed"
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that has exited (and was reaped): not alive
    live = subprocess.Popen(["sleep", "60"])
    try:
        for pid in (dead.pid, live.pid):
            (sealed / f".{sid}.sealing-{pid}" / "blobs").mkdir(parents=True)
        assert bundle_ids(Paths(home)) == []
        listed = _cli(home, "review", "list")
        assert listed.returncode == 0 and "sealing" not in listed.stdout and listed.stdout.count(sid) == 1
        assert clean_stale_sealing(Paths(home)) == [f".{sid}.sealing-{dead.pid}"]
        assert sorted(p.name for p in sealed.iterdir()) == [f".{sid}.sealing-{live.pid}"]
        (sealed / f".{sid}.sealing-{dead.pid}").mkdir()
        # `demotrace seal` cleans up first (then seals: the frames here are not images, dropped)
        res = _cli(home, "seal")
        assert res.returncode == 0, res.stderr
        assert sorted(p.name for p in sealed.iterdir()) == [f".{sid}.sealing-{live.pid}", sid]
        # bug bash 4: a seal killed while re-sealing an already sealed session; the next
        # `seal` has nothing to seal, yet removes it; so does `review delete` of the session
        (sealed / f".{sid}.sealing-{dead.pid}").mkdir()
        res = _cli(home, "seal")
        assert res.returncode == 0 and "nothing to seal" in res.stderr, res.stderr
        assert sorted(p.name for p in sealed.iterdir()) == [f".{sid}.sealing-{live.pid}", sid]
        (sealed / f".{sid}.sealing-{dead.pid}").mkdir()
        res = _cli(home, "review", "delete", sid)
        assert res.returncode == 0, res.stdout + res.stderr
        assert sorted(p.name for p in sealed.iterdir()) == [f".{sid}.sealing-{live.pid}"]
    finally:
        live.kill()
        live.wait()


def _start_collector(tmp: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    """`demotrace server` on SQLite at 127.0.0.1:<free port>; returns (process, url, db url)."""
    import socket
    import time

    import httpx

    data = tmp / "srv"
    data.mkdir()
    db = f"sqlite:///{data / 'c.db'}"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(data / "server.log", "wb")  # noqa: SIM115 (closed with the process below)
    proc = subprocess.Popen([DEMOTRACE, "server", "--data-dir", str(data), "--database-url", db, "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=log)
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, (data / "server.log").read_text()
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url, db
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "collector did not answer /healthz within 60 s"
        time.sleep(0.05)


def _device_code(tmp: Path, db: str) -> str:
    from demotrace.server import auth
    from demotrace.server.config import ServerConfig
    from demotrace.server.db import Database
    from demotrace.server.keys import Pseudonymiser

    cfg = ServerConfig(data_dir=tmp / "srv", database_url=db)
    subject = Pseudonymiser.from_file(cfg.pseudonym_key_path).subject_id("sam@example.org")
    d = Database(db, run_migrations=False)
    try:
        with d.session() as s:
            return auth.create_enrollment_code(s, "device", subject_id=subject, created_by="test", ttl_s=600)[0]
    finally:
        d.dispose()


def test_uploaded_session_is_never_sealed_or_uploaded_again(tmp_path: Path) -> None:
    """Tester's report: upload (bundle deleted) → seal resealed the raw session → upload
    committed a second bundle. Now upload writes a tombstone (bundle id, server ack time) that
    survives the bundle's deletion; seal skips the session with a message, review list says
    "uploaded", and the collector holds one bundle."""
    import json

    from sqlalchemy import create_engine, text

    home = tmp_path / "h"
    sid = "20261130T091500Z-aaaaaa"
    _write_session(home, sid, close=True)
    proc, url, db = _start_collector(tmp_path)
    try:
        for args in (("enroll", "--yes"), ("device", "enroll", "--server", url, "--code", _device_code(tmp_path, db)),
                     ("seal",)):
            res = _cli(home, *args)
            assert res.returncode == 0, (args, res.stdout, res.stderr)
        up = _cli(home, "upload")
        assert up.returncode == 0, up.stderr
        assert "local copy deleted" in up.stdout and not (home / "sealed" / sid).exists()
        engine = create_engine(db)
        with engine.connect() as c:
            rows = c.execute(text("SELECT bundle_id, committed_at FROM bundles")).all()
        assert len(rows) == 1
        tomb = json.loads((home / "uploaded" / f"{sid}.json").read_text())
        assert tomb["session_id"] == sid and tomb["bundle_id"] == rows[0][0]
        assert tomb["committed_at"] and tomb["committed_at"][:10] == str(rows[0][1])[:10]
        assert (home / "uploaded" / f"{sid}.json").stat().st_mode & 0o777 == 0o600

        again = _cli(home, "seal")  # default selection: nothing left to seal
        assert again.returncode == 0 and "nothing to seal" in again.stderr, again.stderr
        assert "1 uploaded session(s) are not sealed again" in " ".join(again.stderr.split())
        named = _cli(home, "seal", sid, "--replace")  # asked by name, even with --replace: refused
        err = " ".join(named.stderr.split())
        assert named.returncode == 1, named.stderr
        assert f"session {sid} was uploaded as bundle {rows[0][0]}" in err and "it is not sealed again" in err
        assert not (home / "sealed" / sid).exists()
        assert "no sealed bundles to upload" in _cli(home, "upload").stdout
        listed = _cli(home, "review", "list")
        row = next(line for line in listed.stdout.splitlines() if sid in line)
        assert row.split()[-1] == "uploaded", row
        with engine.connect() as c:
            assert c.execute(text("SELECT count(*) FROM bundles")).scalar() == 1
        engine.dispose()
    finally:
        proc.terminate()
        proc.wait(10)


def test_policy_emptying_a_builtin_category_warns_in_policy_show_and_device_policy(tmp_path: Path) -> None:
    """Bug bash: an org policy with ``[scope.deny.password_manager] apps = []`` (the floor keeps
    the 13 built-in apps) printed no warning in `device policy --save` nor `policy show`."""
    from test_server_upload import ServerProc, enroll

    from demotrace.upload import Enrollment

    v3 = 'version = 3\nnotice = "v3 notice"\n[scope.deny.password_manager]\napps = []\n'
    (tmp_path / "v3.toml").write_text(v3)
    # the built-in password_manager apps, counted from the shipped TOML (not from the code)
    import tomllib
    from importlib import resources

    builtin = tomllib.loads(resources.files("demotrace.privacy").joinpath("default_policy.toml").read_text())
    n_apps = len(builtin["scope"]["deny"]["password_manager"]["apps"])
    assert n_apps == 13
    warning = (f"scope.deny.password_manager.apps = [] would empty the built-in category; its {n_apps} built-in"
               " entries stay excluded")
    srv = ServerProc(tmp_path / "srv", f"sqlite:///{tmp_path / 'srv' / 'c.db'}")
    srv.data_dir.mkdir()
    home = tmp_path / "device-home"
    home.mkdir()
    env = {**os.environ, "DEMOTRACE_HOME": str(home), "COLUMNS": "300"}
    try:
        srv.start()
        assert srv.cli("admin", "policy-add", str(tmp_path / "v3.toml"), "--current") == \
            "policy version 3 stored, current"
        Enrollment(srv.url, enroll(srv, srv.code("device", "cy@example.org"))).save(home)
        r = subprocess.run([DEMOTRACE, "device", "policy", "--save"], capture_output=True, text=True, env=env,
                           timeout=120, check=False)
        assert r.returncode == 0, r.stderr
        assert warning in " ".join(r.stderr.split()), r.stderr
        assert (home / "policy.toml").read_text() == v3
    finally:
        srv.stop()
    shown = subprocess.run([DEMOTRACE, "policy", "show"], capture_output=True, text=True, env=env, timeout=60,
                           check=False)
    assert shown.returncode == 0, shown.stderr
    assert f"warning: {home / 'policy.toml'}: {warning}" in " ".join(shown.stderr.split()), shown.stderr
    assert "KeePassXC" in shown.stdout  # still excluded
