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
