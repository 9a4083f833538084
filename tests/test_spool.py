"""The encrypted spool: round trip, crash safety, tamper detection, no plaintext on disk."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from demotrace.errors import ConfigError, KeyMissing, SchemaError, SessionNotFound, SpoolCorrupt
from demotrace.schema import FocusChange, KeyDown, Marker, PointerDown, SessionManifest
from demotrace.spool import DataKey, Spool, new_session_id


def _manifest(sid: str) -> SessionManifest:
    return SessionManifest(session_id=sid, started_utc="2026-11-30T00:00:00Z", timezone="UTC",
                           platform="test", backend="test", recorder_version="0")


def test_round_trip_and_stats(tmp_path: Path) -> None:
    key = DataKey.create(tmp_path / "key")
    spool = Spool(tmp_path / "spool", key)
    sid = new_session_id()
    w = spool.create(_manifest(sid))
    evs = [
        Marker(seq=0, t_ns=0, name="session_start"),
        FocusChange(seq=1, t_ns=5, title="Zürich 🦆 report", app_id="XTerm", window_id=42),
        KeyDown(seq=2, t_ns=10, key="é", code="Unidentified", text="é"),
    ]
    w.append(evs[:2])
    w.append(evs[2:])
    assert w.put_blob(key.content_id(b"pixels"), b"WEBPDATA", "webp") is True
    assert w.put_blob(key.content_id(b"pixels"), b"WEBPDATA", "webp") is False  # dedup
    w.close(duration_ns=10)
    r = spool.open(sid)
    assert list(r.iter_events()) == evs
    assert r.manifest.ended and r.manifest.duration_ns == 10
    st = r.stats()
    assert (st.events, st.batches, st.blobs, st.t_last_ns) == (3, 2, 1, 10)
    assert r.read_blob(key.content_id(b"pixels")) == b"WEBPDATA"
    assert spool.session_ids() == [sid]


def test_non_contiguous_batch_rejected(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s", DataKey.create(tmp_path / "key"))
    w = spool.create(_manifest("a"))
    with pytest.raises(SchemaError, match="not contiguous"):
        w.append([Marker(seq=0, t_ns=0, name="pause"), Marker(seq=5, t_ns=1, name="resume")])


def test_key_file_mode_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "k" / "key"
    DataKey.create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        DataKey.create(path)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        DataKey.load(path)
    with pytest.raises(KeyMissing):
        DataKey.load(tmp_path / "nope")
    assert "***" in repr(DataKey(b"\0" * 32))


def test_wrong_key_and_tampering_detected(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s", DataKey.create(tmp_path / "key"))
    w = spool.create(_manifest("a"))
    w.append([KeyDown(seq=0, t_ns=0, key="x", code="KeyX", text="x")])
    w.close()
    other = Spool(tmp_path / "s", DataKey(os.urandom(32)))
    with pytest.raises(SpoolCorrupt, match="manifest"):
        other.open("a")
    import sqlite3

    con = sqlite3.connect(tmp_path / "s" / "a" / "session.db")
    payload = bytearray(con.execute("SELECT payload FROM batches").fetchone()[0])
    payload[-1] ^= 1
    con.execute("UPDATE batches SET payload = ?", (bytes(payload),))
    con.commit()
    con.close()
    with pytest.raises(SpoolCorrupt, match="batch seq 0..0"):
        list(spool.open("a").iter_events())
    with pytest.raises(SessionNotFound, match="sessions list"):
        spool.open("missing")


def test_no_plaintext_on_disk(tmp_path: Path) -> None:
    secret_title = "Quarterly-plan-ZEBRA-7731"
    typed = "hunter2-typed-secret"
    key = DataKey.create(tmp_path / "key")
    spool = Spool(tmp_path / "s", key)
    w = spool.create(_manifest("a"))
    w.append([FocusChange(seq=0, t_ns=0, title=secret_title)] +
             [KeyDown(seq=i + 1, t_ns=i, key=c, code="Unidentified", text=c) for i, c in enumerate(typed)] +
             [Marker(seq=len(typed) + 1, t_ns=99, name="task_start", instruction=secret_title)])
    w.put_blob(key.content_id(secret_title.encode()), secret_title.encode() * 10, "png")
    # no close(): leave the WAL as a crashed recorder would
    for p in (tmp_path / "s").rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            assert secret_title.encode() not in data, p
            assert secret_title.encode("utf-16-le") not in data, p
            # key_down events are stored one character per event: check the text fields too
            assert b"hunter2" not in data, p


def test_kill_9_keeps_committed_batches(tmp_path: Path) -> None:
    """A writer process killed with SIGKILL after N committed batches: all N readable."""
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        from pathlib import Path
        from demotrace.schema import KeyDown, SessionManifest
        from demotrace.spool import DataKey, Spool
        key = DataKey.load(Path({str(tmp_path / 'key')!r}))
        w = Spool(Path({str(tmp_path / 's')!r}), key).create(SessionManifest(
            session_id="k", started_utc="x", timezone="UTC", platform="t", backend="t",
            recorder_version="0"))
        for b in range(50):
            w.append([KeyDown(seq=b * 10 + i, t_ns=b * 10 + i, key="a", code="KeyA", text="a")
                      for i in range(10)])
        print("committed", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    DataKey.create(tmp_path / "key")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    assert "committed" in proc.stdout
    r = Spool(tmp_path / "s", DataKey.load(tmp_path / "key")).open("k")
    seqs = [e.seq for e in r.iter_events()]
    assert seqs == list(range(500))
    assert r.manifest.ended is False


def test_blob_shard_folders_are_owner_only(tmp_path: Path) -> None:
    key = DataKey.create(tmp_path / "key")
    w = Spool(tmp_path / "s", key).create(_manifest("m"))
    blob_id = key.content_id(b"frame")
    w.put_blob(blob_id, b"data", "png")
    shard = tmp_path / "s" / "m" / "blobs" / blob_id[:2]
    assert stat.S_IMODE(shard.stat().st_mode) == 0o700
    assert stat.S_IMODE((shard / blob_id).stat().st_mode) == 0o600


def test_session_database_and_its_wal_files_are_owner_only_while_written(tmp_path: Path) -> None:
    """Bug bash 4: session.db-wal / -shm were 0644 (umask 022) while recording. Checked with a
    permissive umask, while the writer is open (the WAL exists)."""
    old = os.umask(0o022)
    try:
        w = Spool(tmp_path / "s", DataKey.create(tmp_path / "key")).create(_manifest("m"))
        w.append([Marker(seq=0, t_ns=0, name="session_start")])
        folder = tmp_path / "s" / "m"
        files = sorted(p.name for p in folder.iterdir() if p.name.startswith("session.db"))
        assert files == ["session.db", "session.db-shm", "session.db-wal"], files
        modes = {name: stat.S_IMODE((folder / name).stat().st_mode) for name in files}
        assert modes == dict.fromkeys(files, 0o600), modes
        w.close(duration_ns=0)
    finally:
        os.umask(old)


def test_missing_key_with_existing_sessions_is_never_replaced(tmp_path: Path) -> None:
    """Deleting the key must not lead `record` to make a new one (that would orphan the data)."""
    from typer.testing import CliRunner

    from demotrace.cli import app
    from demotrace.cli.common import open_spool
    from demotrace.errors import KeyLost

    home = tmp_path / "home"
    paths, spool = open_spool(str(home), create_key=True)
    spool.create(_manifest("old")).close()
    (home / "key").unlink()
    with pytest.raises(KeyLost, match="Restore the key file"):
        open_spool(str(home), create_key=True)
    assert not (home / "key").exists()
    result = CliRunner().invoke(app, ["sessions", "list", "--home", str(home)])
    assert result.exit_code != 0
    assert isinstance(result.exception, KeyLost)
    # with no data at all, a reader just says there is nothing yet
    empty = tmp_path / "empty"
    result = CliRunner().invoke(app, ["sessions", "list", "--home", str(empty)])
    assert result.exit_code == 0 and "no sessions yet" in result.output


def test_close_on_a_full_disk_is_a_clear_error_and_keeps_what_was_stored(tmp_path: Path) -> None:
    """Bug bash 4 (disk full while recording): `demotrace stop` ended in a bare
    sqlite3.OperationalError from the WAL checkpoint. A full disk is made real for one process
    with RLIMIT_FSIZE (no file may grow past its current size; SIGXFSZ ignored, so writes fail
    with EFBIG): close raises SpoolError naming the session and the cause, and the 10 events
    committed before read back from a new reader (the session reads as not ended)."""
    script = textwrap.dedent(f"""
        import resource, signal, sqlite3
        from pathlib import Path
        from demotrace.errors import SpoolError
        from demotrace.schema import Marker, SessionManifest
        from demotrace.spool import DataKey, Spool
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        tmp = Path({str(tmp_path)!r})
        w = Spool(tmp / "s", DataKey.create(tmp / "key")).create(
            SessionManifest(session_id="m", started_utc="2026-11-30T01:00:00Z", timezone="UTC",
                            platform="test", backend="synthetic", recorder_version="0"))
        w.append([Marker(seq=i, t_ns=i, name="session_start") for i in range(10)])
        folder = tmp / "s" / "m"
        limit = max(f.stat().st_size for f in folder.iterdir() if f.is_file())
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        try:
            w.append([Marker(seq=10 + i, t_ns=10 + i, name="pause", reason="x" * 4000) for i in range(50)])
            print("append stored")
        except sqlite3.Error as exc:
            print("append failed", type(exc).__name__)
        try:
            w.close(duration_ns=5)
            print("closed")
        except SpoolError as exc:
            print("SpoolError:", exc)
    """)
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "append failed" in p.stdout, p.stdout
    line = next(x for x in p.stdout.splitlines() if x.startswith("SpoolError:"))
    assert "session m: could not finish its database" in line and "disk full?" in line, line
    r = Spool(tmp_path / "s", DataKey.load(tmp_path / "key")).open("m")
    assert [e.seq for e in r.iter_events()] == list(range(10))
    assert r.manifest.ended is False
