"""A read-only demotrace home (bug bash 4 F18): the reading commands work, the writing ones
say which path cannot be written, exit 1 without a traceback, and change nothing.

What is really exercised: the tests run as root, and root ignores file modes (``chmod -R a-w``
would not stop a single write), so the home is a **read-only bind mount** of a normal folder
(``mount --bind`` + ``mount -o remount,bind,ro``): the kernel refuses every write under it with
EROFS, for root too — the same refusal a person meets on a read-only disk or a home shared
read-only from a backup. A fixture that cannot mount fails the test (never skips). ``build`` (reads sealed bundles,
writes only ``--out``) works on it too. Not exercised:
a folder without write permission for a non-root user (EACCES), which takes the same code paths
(``os.access(W_OK)`` and the EACCES / EPERM branch of ``writable_paths``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from demotrace.paths import Paths
from demotrace.privacy.policy import default_policy
from demotrace.privacy.seal import seal_session
from demotrace.schema import (
    FocusChange,
    Marker,
    PointerDown,
    PointerUp,
    SessionManifest,
)
from demotrace.spool import DataKey, Spool

DEMOTRACE = str(Path(sys.executable).parent / "demotrace")
ENDED = "20261130T091500Z-aaaaaa"
CRASHED = "20261130T101500Z-bbbbbb"
S = 1_000_000_000


def _manifest(sid: str, start: str) -> SessionManifest:
    return SessionManifest(session_id=sid, started_utc=start, timezone="UTC (+00:00)", platform="linux-x11",
                           backend="x11", recorder_version="0.1.0")


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def homes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(the writable source home, the same home through a read-only bind mount). Sessions:
    ENDED — 7 events over 3 s (one task, one click), closed and sealed; CRASHED — 3 events, its recorder killed before closing
    (``session.db-wal`` / ``-shm`` left behind, the batch only in the WAL)."""
    tmp = tmp_path_factory.mktemp("rohome")
    src = tmp / "src" / "home"
    paths = Paths(src).ensure()
    spool = Spool(paths.spool, DataKey.load_or_create(paths.key_file))
    w = spool.create(_manifest(ENDED, "2026-11-30T09:15:00.000Z"))
    w.append([Marker(seq=0, t_ns=0, name="session_start"), FocusChange(seq=1, t_ns=S, app_id="XTerm", title="bash"),
              Marker(seq=2, t_ns=2 * S, name="task_start", instruction="list files"),
              PointerDown(seq=3, t_ns=2 * S + S // 2, x=10, y=20, button="left"),
              PointerUp(seq=4, t_ns=2 * S + S // 2 + 50_000_000, x=10, y=20, button="left"),
              Marker(seq=5, t_ns=2 * S + 8 * S // 10, name="task_end", status="success"),
              Marker(seq=6, t_ns=3 * S, name="session_stop")])
    w.close(duration_ns=3 * S)
    seal_session(paths, spool, ENDED, default_policy())
    crash = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from demotrace.schema import KeyDown, KeyUp, Marker, SessionManifest
        from demotrace.spool import DataKey, Spool
        spool = Spool(Path({str(paths.spool)!r}), DataKey.load(Path({str(paths.key_file)!r})))
        w = spool.create(SessionManifest(session_id={CRASHED!r}, started_utc="2026-11-30T10:15:00.000Z",
                         timezone="UTC (+00:00)", platform="linux-x11", backend="x11", recorder_version="0.1.0"))
        w.append([Marker(seq=0, t_ns=0, name="session_start"), KeyDown(seq=1, t_ns=10**9, key="a", code="KeyA", text="a"),
                  KeyUp(seq=2, t_ns=2 * 10**9, key="a", code="KeyA")])
        os._exit(0)  # killed: never closed
    """)
    res = subprocess.run([sys.executable, "-c", crash], capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    assert (paths.spool / CRASHED / "session.db-wal").stat().st_size > 0
    ro = tmp / "ro"
    ro.mkdir()
    for argv in (["mount", "--bind", str(src.parent), str(ro)], ["mount", "-o", "remount,bind,ro", str(ro)]):
        res = subprocess.run(argv, capture_output=True, text=True, check=False)
        assert res.returncode == 0, f"{argv}: {res.stderr} (root and mount(8) are needed for this test)"
    try:
        probe = ro / "home" / "probe"
        with pytest.raises(OSError, match="Read-only file system"):
            probe.write_text("x")  # the mount refuses root too
        yield src, ro / "home"
    finally:
        subprocess.run(["umount", str(ro)], check=False)


def _run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DEMOTRACE_HOME=str(home), COLUMNS="400")
    return subprocess.run([DEMOTRACE, *args], env=env, capture_output=True, text=True, timeout=120, check=False)


def test_reading_commands_work_on_a_read_only_home(homes: tuple[Path, Path]) -> None:
    src, home = homes
    before = _tree(src)
    res = _run(home, "review", "list")
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    rows = {line.split()[0]: line.split() for line in res.stdout.splitlines() if line.startswith("2026")}
    # ENDED: 7 events, 3.0 s, 0 frames, 1 episode (its task); sealed
    assert rows[ENDED][3:8] == ["3.0", "7", "0", "1", "yes"], res.stdout
    # CRASHED: its 3 events read from the WAL the killed recorder left
    assert rows[CRASHED][3:6] == ["2.0", "3", "0"], res.stdout
    show = _run(home, "review", "show", ENDED)
    assert show.returncode == 0, show.stderr
    assert "instruction: list files" in show.stdout
    sl = _run(home, "sessions", "list")
    assert sl.returncode == 0, sl.stderr
    assert {line.split()[0]: line.split()[-1] for line in sl.stdout.splitlines() if line.startswith("2026")} == \
        {ENDED: "ended", CRASHED: "crashed"}
    ss = _run(home, "sessions", "show", CRASHED)
    assert ss.returncode == 0 and "events: 3" in ss.stdout, ss.stderr
    ps = _run(home, "policy", "show")
    assert ps.returncode == 0 and "Raw recordings are destroyed after 7 days." in ps.stdout, ps.stderr
    assert _tree(src) == before  # nothing created or changed (not even through the writable source)


def test_build_reads_a_read_only_home(homes: tuple[Path, Path], tmp_path: Path) -> None:
    src, home = homes
    before = _tree(src)
    res = _run(home, "build", "--out", str(tmp_path / "ds"))
    assert res.returncode == 0, res.stderr
    lines = (tmp_path / "ds" / "episodes.jsonl").read_text().splitlines()
    assert [json.loads(line)["episode_id"] for line in lines] == [f"{ENDED}-0"]  # its one task
    assert _tree(src) == before


@pytest.mark.parametrize("argv", [("seal",), ("review", "forget", "--last", "10m"), ("review", "delete", ENDED),
                                  ("review", "purge"), ("exclusions", "add", "app", "keepassxc"),
                                  ("record", "--duration", "1"), ("enroll", "--yes"), ("upload",)])
def test_writing_commands_name_the_read_only_home(homes: tuple[Path, Path], argv: tuple[str, ...]) -> None:
    src, home = homes
    before = _tree(src)
    res = _run(home, *argv)
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    cmd = " ".join(w for w in argv[:2] if w.isalpha())
    assert res.stderr.startswith(f"error: {home} is not writable (Read-only file system): `demotrace {cmd}` has"
                                 f" to write to the demotrace home {home}. Nothing was changed."), res.stderr
    assert "work on a read-only home" in res.stderr
    assert res.stdout == "", res.stdout  # refused first: no notice shown for a consent it cannot keep
    assert _tree(src) == before
