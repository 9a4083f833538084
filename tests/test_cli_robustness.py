"""Expected mistakes at the command line end in one ``error: …`` line and exit code 1, never a
traceback (the OSError boundary in ``demotrace.cli.main``); ``replay`` refuses to overwrite.

Runs the installed console script as a subprocess, since the boundary is in ``main()``
(CliRunner calls the Typer app and would keep the exception)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from demotrace.paths import Paths
from demotrace.schema import (
    FocusChange,
    Frame,
    Marker,
    PointerDown,
    PointerUp,
    Rect,
    SessionManifest,
)
from demotrace.spool import DataKey, Spool

DEMOTRACE = str(Path(sys.executable).parent / "demotrace")
SID = "20261130T091500Z-aaaaaa"
EPISODE = f"{SID}-0"  # the one task marked in the session below
S = 1_000_000_000


def _sealed_home(home: Path) -> None:
    """A home with one sealed session: one task (``click once``) with one click on a frame."""
    from demotrace.privacy.policy import default_policy
    from demotrace.privacy.seal import seal_session

    paths = Paths(home).ensure()
    spool = Spool(paths.spool, DataKey.load_or_create(paths.key_file))
    w = spool.create(SessionManifest(session_id=SID, started_utc="2026-11-30T09:15:00.000Z", timezone="UTC (+00:00)",
                                     platform="linux-x11", backend="x11", recorder_version="0.1.0"))
    buf = io.BytesIO()
    Image.new("RGB", (64, 40), (200, 200, 200)).save(buf, "PNG")
    blob = w.key.content_id(buf.getvalue())
    w.put_blob(blob, buf.getvalue(), "png")
    w.append([
        Marker(seq=0, t_ns=0, name="session_start"),
        FocusChange(seq=1, t_ns=S, app_id="XTerm", title="bash"),
        Marker(seq=2, t_ns=2 * S, name="task_start", instruction="click once"),
        Frame(seq=3, t_ns=3 * S, blob=blob, monitor=-1, bounds=Rect(0, 0, 64, 40), width=64, height=40, scale=1.0,
              captured_t_ns=3 * S - 10, reason="pointer_down"),
        PointerDown(seq=4, t_ns=3 * S, x=10, y=20, button="left"),
        PointerUp(seq=5, t_ns=3 * S + 50_000_000, x=10, y=20, button="left"),
        Marker(seq=6, t_ns=4 * S, name="task_end", status="success"),
        Marker(seq=7, t_ns=5 * S, name="session_stop"),
    ])
    w.close(duration_ns=5 * S)
    seal_session(paths, spool, SID, default_policy())


def _run(cwd: Path, *args: str, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DEMOTRACE_HOME"}
    if home is not None:
        env["DEMOTRACE_HOME"] = str(home)
    return subprocess.run([DEMOTRACE, *args], cwd=cwd, env=env, check=False, capture_output=True, text=True, timeout=120)


def _error(res: subprocess.CompletedProcess[str]) -> str:
    """The one error line; asserts exit code 1 and no traceback."""
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    return lines[0]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cwd with ``home/`` (one sealed session), ``ds/`` (its dataset) and ``afile`` (a file)."""
    tmp = tmp_path_factory.mktemp("robust")
    _sealed_home(tmp / "home")
    res = _run(tmp, "build", "--home", "home", "--out", "ds")
    assert res.returncode == 0, res.stderr
    ids = [json.loads(line)["episode_id"] for line in (tmp / "ds" / "episodes.jsonl").read_text().splitlines()]
    assert ids == [EPISODE]
    (tmp / "afile").write_text("not a folder\n")
    return tmp


@pytest.fixture(scope="module")
def ro(work: Path) -> Iterator[Path]:
    """A read-only tmpfs mount (root ignores file modes, so only a read-only mount refuses it)."""
    mnt = work / "ro"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(mnt)], check=True, capture_output=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_build_out_errors(work: Path, ro: Path) -> None:
    assert _error(_run(work, "build", "--home", "home", "--out", "/proc/x")) == \
        "error: cannot create folder /proc/x: No such file or directory"
    line = _error(_run(work, "build", "--home", "home", "--out", "afile/sub"))
    assert line.startswith("error: cannot create folder afile/sub") and "Not a directory" in line
    assert "a part of this path is a file, not a folder" in line
    assert _error(_run(work, "build", "--home", "home", "--out", "ro/ds")) == \
        "error: cannot create folder ro/ds: Read-only file system; choose a writable folder"


def test_export_out_errors(work: Path) -> None:
    exp = ("export", "--format", "agentnet", "--dataset", "ds", "--out")
    assert _error(_run(work, *exp, "/proc/x")) == "error: cannot create folder /proc/x: No such file or directory"
    assert _error(_run(work, *exp, "afile")) == \
        "error: output afile is a file, not a folder; choose another --out (a folder)"
    assert (work / "afile").read_text() == "not a folder\n"


def test_replay_out_errors_and_overwrite(work: Path, ro: Path) -> None:
    rep = ("replay", EPISODE, "--dataset", "ds", "--out")
    assert _error(_run(work, *rep, "/proc/r.html")) == "error: cannot write /proc/r.html: No such file or directory"
    assert _error(_run(work, *rep, "afile/r.html")) == \
        "error: cannot create folder afile: File exists; a file of that name is in the way; choose another path"
    assert _error(_run(work, *rep, "ds")) == "error: --out ds is a directory; give a file name, e.g. ds/replay.html"
    assert _error(_run(work, *rep, "ro/r.html")) == \
        "error: cannot write ro/r.html: Read-only file system; choose a writable folder"
    page = work / "mine.html"
    page.write_text("my notes\n")
    assert _error(_run(work, *rep, "mine.html")) == \
        "error: mine.html already exists; choose another --out or pass --overwrite to replace it"
    assert page.read_text() == "my notes\n"
    res = _run(work, *rep, "mine.html", "--overwrite")
    assert res.returncode == 0, res.stderr
    assert "click once" in page.read_text()


def test_enroll_read_only_home(work: Path, ro: Path) -> None:
    res = _run(work, "enroll", "--yes", home=ro / "home")
    assert _error(res).startswith(f"error: {ro} is not writable (Read-only file system): `demotrace enroll` has to"
                                  f" write to the demotrace home {ro / 'home'}. Nothing was changed."), res.stderr
    assert "We record" not in res.stdout and "notice" not in res.stdout.lower()  # refused before the notice


def test_device_enroll_rejects_bad_server_url_at_once(tmp_path: Path) -> None:
    from demotrace.errors import ConfigError
    from demotrace.upload import UploadClient, check_server_url

    expected = "expected https://host:port or http://127.0.0.1:port"
    res = _run(tmp_path, "device", "enroll", "--server", "notaurl", "--code", "abc", home=tmp_path / "h")
    assert _error(res) == f"error: invalid server URL 'notaurl': {expected}"
    assert not (tmp_path / "h" / "collector.json").exists()
    for bad in ("ftp://host:21", "https://", "http://collector.example:8470"):
        with pytest.raises(ConfigError, match=f"invalid server URL '{bad}'"):
            check_server_url(bad)
    with pytest.raises(ConfigError, match="invalid server URL 'http://127.0.0.1:99999': Port out of range"):
        UploadClient("http://127.0.0.1:99999")
    assert check_server_url("https://collector.example:8470/") == "https://collector.example:8470"
    assert check_server_url("http://127.0.0.2:9") == "http://127.0.0.2:9"
    assert check_server_url("http://[::1]:9") == "http://[::1]:9"


def _spool_sessions(home: Path) -> list[str]:
    spool = home / "spool"
    return sorted(p.name for p in spool.iterdir() if p.is_dir()) if spool.is_dir() else []


def _record(home: Path, display: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["DEMOTRACE_HOME"] = str(home)
    if display is not None:
        env["DISPLAY"] = display
    return subprocess.run([DEMOTRACE, "record", "--duration", "1"], env=env, check=False, capture_output=True,
                          text=True, timeout=120)


def _free_display() -> str:
    n = 150
    while Path(f"/tmp/.X11-unix/X{n}").exists() or Path(f"/tmp/.X{n}-lock").exists():
        n += 1
    return f":{n}"


@pytest.fixture
def enrolled(tmp_path: Path) -> Path:
    home = tmp_path / "rechome"
    res = _run(tmp_path, "enroll", "--yes", home=home)
    assert res.returncode == 0, res.stderr
    return home


def test_record_bad_display_leaves_no_session(enrolled: Path) -> None:
    free = _free_display()
    for display, expect in (("", "$DISPLAY is not set"), ("garbage", "cannot open X display 'garbage'"),
                            (free, f"cannot open X display '{free}'")):
        res = _record(enrolled, display)
        assert res.returncode == 1, (display, res.stdout, res.stderr)
        assert "Traceback" not in res.stderr and expect in res.stderr.replace("\n", " "), (display, res.stderr)
        assert _spool_sessions(enrolled) == [], display


def test_record_display_without_record_extension_leaves_no_session(enrolled: Path) -> None:
    proc = subprocess.Popen(["Xvfb", "-displayfd", "1", "-extension", "RECORD", "-screen", "0", "320x200x24",
                             "-nolisten", "tcp"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        number = proc.stdout.readline().decode().strip()
        assert number.isdigit(), "Xvfb did not start"
        res = _record(enrolled, f":{number}")
        assert res.returncode == 1, (res.stdout, res.stderr)
        assert f"X display ':{number}' has no RECORD extension" in res.stderr.replace("\n", " "), res.stderr
        assert _spool_sessions(enrolled) == []
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_record_bad_policy_leaves_no_session(enrolled: Path, xvfb) -> None:
    policy = enrolled / "policy.toml"
    policy.write_text('version = 3\nnotice = "We record clicks."\n[scope.deny.mine]\ntitle_patterns = ["(unclosed"]\n')
    res = _record(enrolled, xvfb.display)
    assert res.returncode == 1 and "Traceback" not in res.stderr, (res.stdout, res.stderr)
    assert "policy.toml" in res.stderr
    assert _spool_sessions(enrolled) == []
    policy.write_bytes(b'version = 3\nnotice = "\xff\xfe not UTF-8"\n')
    res = _record(enrolled, xvfb.display)
    assert res.returncode == 1 and "Traceback" not in res.stderr, (res.stdout, res.stderr)
    assert "policy.toml" in res.stderr
    assert _spool_sessions(enrolled) == []


def test_upload_names_what_is_wrong_with_the_path(tmp_path: Path) -> None:
    """`upload /nonexistent` said "is not a bundle: manifest.json missing" (sealed bundles have
    none); `upload junk` with only a SEALED file said "no session 'junk' in .". Checked before
    any request (the collector URL below has no server)."""
    home = tmp_path / "h"
    home.mkdir()
    (home / "collector.json").write_text(json.dumps({"url": "http://127.0.0.1:9", "credential": "x", "ca": None}))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "SEALED").write_text("demotrace-sealed-bundle 1\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "afile").write_text("x")
    layouts = ("a sealed bundle from `demotrace seal` (<home>/sealed/<session id>/ with SEALED and session.db)"
               " or a generic bundle (manifest.json and blobs/)")
    cases = {
        "/nonexistent": f"/nonexistent does not exist; give a bundle folder: {layouts}",
        "junk": "junk has a SEALED marker but no session.db: it is not a complete sealed bundle",
        "empty": f"empty is not a bundle folder: it has neither SEALED nor manifest.json; give {layouts}",
        "afile": f"afile is a file, not a bundle folder; give {layouts}",
    }
    for arg, want in cases.items():
        res = _run(tmp_path, "upload", arg, home=home)
        err = " ".join(res.stderr.split())
        assert res.returncode == 1 and "Traceback" not in err, (arg, res.stderr)
        assert f"failed {arg}: {want}" in err, (arg, err)
        assert "is not a bundle: manifest.json missing" not in err and "no session 'junk' in" not in err


def test_record_with_a_damaged_consent_file_says_damaged_and_where(tmp_path: Path) -> None:
    home = tmp_path / "h"
    home.mkdir()
    (home / "consent.json").write_text('{"policy_version": 1, "notice_sha')  # cut short by a crash / full disk
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "DEMOTRACE_HOME")}
    env.update(DEMOTRACE_HOME=str(home), COLUMNS="400")
    res = subprocess.run([DEMOTRACE, "record", "--duration", "1"], env=env, capture_output=True, text=True, timeout=120,
                         check=False)
    line = _error(res)
    assert line.startswith(f"error: your consent record {home / 'consent.json'} is damaged: it is not valid JSON"), line
    assert "needs your consent first" not in line and "demotrace enroll" in line
    assert _spool_sessions(home) == []


@pytest.mark.parametrize(("option", "value", "why"), [
    ("--frame-scale", "nan", "must be a finite number, got nan"),
    ("--frame-scale", "inf", "must be a finite number, got inf"),
    ("--grab-hz", "nan", "must be a finite number, got nan"),
    ("--grab-hz", "31", "must be in [0.1, 30], got 31"),
    ("--duration", "nan", "must be a finite number, got nan"),
    ("--duration", "-inf", "must be a finite number, got -inf"),
])
def test_record_refuses_nan_and_inf_float_options(enrolled: Path, xvfb, option: str, value: str, why: str) -> None:  # type: ignore[no-untyped-def]
    """Bug bash: `record --frame-scale nan` passed every range check (comparisons with nan are
    false), stored a session and then failed every frame encode (0 frames)."""
    env = {k: v for k, v in os.environ.items() if k != "DEMOTRACE_HOME"}
    env.update(DISPLAY=xvfb.display, COLUMNS="200", DEMOTRACE_ATSPI="0")
    res = subprocess.run([DEMOTRACE, "record", "--no-indicator", "--duration", "1", option, value,
                          "--home", str(enrolled)], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 2 and "Traceback" not in res.stderr, (res.stdout, res.stderr)
    err = " ".join(res.stderr.replace("│", " ").split())
    assert f"Invalid value for '{option}': {why}" in err, err
    assert _spool_sessions(enrolled) == []


def test_seal_replace_without_ids_names_the_missing_ids(work: Path) -> None:
    """Bug bash: `seal --replace` with no session id said "nothing to seal"."""
    res = _run(work, "seal", "--replace", home=work / "home")
    assert res.returncode == 2, (res.stdout, res.stderr)
    err = " ".join(res.stderr.replace("│", " ").split())
    assert "Invalid value for '--replace': --replace seals named sessions again and needs their ids" in err, err
    assert "nothing to seal" not in err


def test_max_shard_mb_below_one_refused(tmp_path: Path) -> None:
    """Bug bash 2: `build --max-shard-mb -5` silently wrote 1-byte shards (one file per row group)."""
    env = {k: v for k, v in os.environ.items() if k != "DEMOTRACE_HOME"}
    env.update(COLUMNS="200", DEMOTRACE_HOME=str(tmp_path / "home"))
    res = subprocess.run([DEMOTRACE, "build", "--out", "ds", "--max-shard-mb", "-5"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 2 and "Traceback" not in res.stderr, (res.stdout, res.stderr)
    err = " ".join(res.stderr.replace("│", " ").split())
    assert "Invalid value for '--max-shard-mb': must be >= 1, got -5" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv", [
    ("build", "--out", "ds", "--max-shard-mb", "nan"),
    ("server", "--data-dir", "srv", "--rate", "nan"),
    ("admin", "enroll-code", "--person", "a@example.org", "--data-dir", "srv", "--ttl-hours", "inf"),
])
def test_other_float_options_refuse_nan_and_inf(tmp_path: Path, argv: tuple[str, ...]) -> None:
    """`build --max-shard-mb nan` ended in a traceback (int(nan)); --rate / --ttl-hours took it."""
    env = {k: v for k, v in os.environ.items() if k != "DEMOTRACE_HOME"}
    env.update(COLUMNS="200", DEMOTRACE_HOME=str(tmp_path / "home"))
    res = subprocess.run([DEMOTRACE, *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
                         check=False)
    assert res.returncode == 2 and "Traceback" not in res.stderr, (res.stdout, res.stderr)
    err = " ".join(res.stderr.replace("│", " ").split())
    assert f"Invalid value for '{argv[-2]}': must be a finite number, got {argv[-1]}" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing created
