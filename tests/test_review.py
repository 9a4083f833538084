"""Review: forget the last N minutes (exactly the events and frames of that window, computed
from what the test wrote), delete, retention purge, episodes."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from demotrace.cli import app
from demotrace.errors import ConfigError, SessionNotFound
from demotrace.paths import Paths
from demotrace.privacy.policy import Policy
from demotrace.privacy.review import delete_session, episodes_of, forget_last, list_sessions, parse_duration, purge_expired
from demotrace.schema import Frame, KeyDown, Marker, PointerDown, PointerMove
from demotrace.schema.events import Event, Rect
from demotrace.spool import DataKey, Spool
from privacy_corpus import manifest

S = 1_000_000_000
T0 = dt.datetime(2026, 11, 30, 1, 0, 0, tzinfo=dt.timezone.utc)


def _png(shade: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (shade, shade, shade)).save(buf, format="PNG")
    return buf.getvalue()


def _write(spool: Spool, sid: str, start: dt.datetime, minutes: int) -> tuple[list[Event], dict[str, bytes]]:
    """One pointer move every 10 s for ``minutes``; a frame every 60 s (at 5 s past) whose
    image is unique per minute, except that minutes 2 and 17 share one image (dedup).
    Batches of 7 events, so cuts fall inside batches."""
    key = spool.key
    evs: list[Event] = []
    blobs: dict[str, bytes] = {}
    seq = 0
    for tenth in range(minutes * 6):
        t = tenth * 10 * S
        evs.append(PointerMove(seq=seq, t_ns=t, x=tenth, y=1.0))
        seq += 1
        if tenth % 6 == 0:
            minute = tenth // 6
            data = _png(2 if minute in (2, 17) else 10 + minute)
            bid = key.content_id(data)
            blobs[bid] = data
            evs.append(Frame(seq=seq, t_ns=t + 5 * S, blob=bid, monitor=0, bounds=Rect(0, 0, 8, 8), width=8,
                             height=8, scale=1.0, captured_t_ns=t + 5 * S, reason="settle", format="png"))
            seq += 1
    w = spool.create(manifest(sid, start.strftime("%Y-%m-%dT%H:%M:%SZ")))
    for bid, data in blobs.items():
        w.put_blob(bid, data, "png")
    for i in range(0, len(evs), 7):
        w.append(evs[i:i + 7])
    w.close(duration_ns=evs[-1].t_ns)
    return evs, blobs


@pytest.fixture
def home(tmp_path: Path) -> tuple[Paths, Spool]:
    paths = Paths(tmp_path).ensure()
    return paths, Spool(paths.spool, DataKey.create(paths.key_file))


def test_forget_last_removes_exactly_that_window(home: tuple[Paths, Spool]) -> None:
    paths, spool = home
    evs, blobs = _write(spool, "a", T0, 20)
    (paths.home / "sealed" / "a").mkdir(parents=True)  # a bundle made from it goes too
    now = T0 + dt.timedelta(minutes=20)
    res = forget_last(paths, spool, dt.timedelta(minutes=10), now=now)
    cut = 10 * 60 * S
    expect_kept = [e for e in evs if e.t_ns < cut]
    # by hand: 60 moves + 10 frames before minute 10; 60 moves + 10 frames after
    assert len(expect_kept) == 70 and len(evs) == 140
    with spool.open("a") as r:
        kept = list(r.iter_events())
        ids = set(r.blob_ids())
    assert kept == expect_kept
    # frames of minutes 10..19 are gone except minute 17's, which shares minute 2's image
    expect_blobs = {e.blob for e in expect_kept if isinstance(e, Frame)}
    assert ids == expect_blobs and len(ids) == 10
    assert res.removed == {"a": (70, 9)}
    on_disk = {p.name for p in (paths.spool / "a" / "blobs").rglob("*") if p.is_file()}
    assert on_disk == expect_blobs
    assert not (paths.home / "sealed" / "a").exists()


def test_forget_spans_sessions_and_leaves_older_ones(home: tuple[Paths, Spool]) -> None:
    paths, spool = home
    old, _ = _write(spool, "old", T0 - dt.timedelta(hours=2), 5)
    new, _ = _write(spool, "new", T0, 4)
    res = forget_last(paths, spool, dt.timedelta(minutes=3), now=T0 + dt.timedelta(minutes=4))
    assert set(res.removed) == {"new"}
    with spool.open("old") as r:
        assert list(r.iter_events()) == old
    with spool.open("new") as r:
        assert list(r.iter_events()) == [e for e in new if e.t_ns < 60 * S]


def test_forget_removes_a_session_that_started_in_the_window_whole(home: tuple[Paths, Spool]) -> None:
    """Bug bash 4: `forget --last 1d` left 0-event sessions with their start times, and `seal`
    turned them into empty bundles. A session that started inside the window is deleted with
    its manifest and bundle; one that started before it keeps its earlier part."""
    paths, spool = home
    _write(spool, "inside", T0, 3)  # 3 minutes: 18 moves + 3 frames (see test_delete_and_list)
    (paths.home / "sealed" / "inside").mkdir(parents=True)
    before, _ = _write(spool, "before", T0 - dt.timedelta(minutes=30), 2)
    res = forget_last(paths, spool, dt.timedelta(minutes=5), now=T0 + dt.timedelta(minutes=4))
    assert spool.session_ids() == ["before"]
    assert not (paths.home / "sealed" / "inside").exists()
    assert res.removed == {"inside": (21, 3)}
    with spool.open("before") as r:
        assert list(r.iter_events()) == before


def test_retention_purge(home: tuple[Paths, Spool]) -> None:
    paths, spool = home
    _write(spool, "eight-days", T0 - dt.timedelta(days=8), 1)
    _write(spool, "six-days", T0 - dt.timedelta(days=6), 1)
    pol = Policy.from_toml('version = 1\nnotice = "n"\n')  # raw_days defaults to 7
    assert purge_expired(paths, spool, pol, now=T0) == ["eight-days"]
    assert spool.session_ids() == ["six-days"]


def test_delete_and_list(home: tuple[Paths, Spool]) -> None:
    paths, spool = home
    _write(spool, "x", T0, 2)
    rows = list_sessions(paths, spool)
    # 2 minutes: 12 moves + 2 frames; last event at 110 s
    assert [(r.session_id, r.events, r.frames, r.duration_s, r.sealed) for r in rows] == [("x", 14, 2, 110.0, False)]
    delete_session(paths, spool, "x")
    assert spool.session_ids() == []
    with pytest.raises(SessionNotFound):
        delete_session(paths, spool, "x")


def test_episodes_from_markers() -> None:
    evs = [
        Marker(seq=0, t_ns=0, name="session_start"),
        PointerDown(seq=1, t_ns=1 * S, x=0, y=0, button="left"),
        Marker(seq=2, t_ns=2 * S, name="task_start", instruction="Rename the file"),
        PointerMove(seq=3, t_ns=3 * S, x=0, y=0),
        Marker(seq=4, t_ns=4 * S, name="task_end", status="success"),
        KeyDown(seq=5, t_ns=5 * S, key="a", code="KeyA", text="a"),
        Marker(seq=6, t_ns=6 * S, name="private_gap", reason="deny:banking:domain", duration_ns=S),
        PointerMove(seq=7, t_ns=8 * S, x=0, y=0),  # moves only: no episode (as the builder)
    ]
    eps = [(e.t_start_ns, e.t_end_ns, e.instruction, e.status) for e in episodes_of(evs)]
    # outside a task an episode starts at its first action (the press at 1 s), as the builder's
    assert eps == [(1 * S, 2 * S, None, None), (2 * S, 4 * S, "Rename the file", "success"),
                   (5 * S, 6 * S, None, None)]


def test_episodes_split_at_idle_gaps_and_abandoned_tasks() -> None:
    """The builder's rules (build/episodes.py), which review now shares: outside a task a gap
    longer than 120 s between two actions starts a new episode; a task_start inside an open task
    ends that one as "abandoned"; a task is not split by its own idle gap. By hand below."""
    evs = [
        KeyDown(seq=0, t_ns=10 * S, key="a", code="KeyA", text="a"),
        KeyDown(seq=1, t_ns=200 * S, key="b", code="KeyB", text="b"),  # 190 s later: new episode
        Marker(seq=2, t_ns=210 * S, name="task_start", instruction="First"),
        PointerDown(seq=3, t_ns=215 * S, x=1, y=1, button="left"),
        Marker(seq=4, t_ns=220 * S, name="task_start", instruction="Second"),
        PointerDown(seq=5, t_ns=225 * S, x=1, y=1, button="left"),
        PointerDown(seq=6, t_ns=600 * S, x=1, y=1, button="left"),  # 375 s idle, inside the task
        Marker(seq=7, t_ns=610 * S, name="task_end", status="success"),
    ]
    eps = [(e.index, e.t_start_ns, e.t_end_ns, e.instruction, e.status) for e in episodes_of(evs)]
    assert eps == [(0, 10 * S, 200 * S, None, None), (1, 200 * S, 210 * S, None, None),
                   (2, 210 * S, 220 * S, "First", "abandoned"), (3, 220 * S, 610 * S, "Second", "success")]


def test_review_episodes_are_the_builders() -> None:
    """Review and `demotrace build` segment a session the same way: same count, times,
    instructions and outcomes as episodes_from_events on one mixed session."""
    from demotrace.build import episodes_from_events
    from demotrace.build.episodes import segments_from_events

    evs = [
        Marker(seq=0, t_ns=0, name="session_start"),
        PointerDown(seq=1, t_ns=1 * S, x=0, y=0, button="left"),
        Marker(seq=2, t_ns=2 * S, name="pause"),
        Marker(seq=3, t_ns=3 * S, name="resume"),
        KeyDown(seq=4, t_ns=4 * S, key="a", code="KeyA", text="a"),
        KeyDown(seq=5, t_ns=300 * S, key="b", code="KeyB", text="b"),
        Marker(seq=6, t_ns=301 * S, name="task_start", instruction="Do it"),
        KeyDown(seq=7, t_ns=302 * S, key="c", code="KeyC", text="c"),
        Marker(seq=8, t_ns=303 * S, name="task_end", status="failure"),
        Marker(seq=9, t_ns=304 * S, name="session_stop"),
    ]
    built = [(e.index, e.t_start_ns, e.t_end_ns, e.instruction, e.status, e.segmented_by, len(e.steps))
             for e in episodes_from_events(evs, "s")]
    segs = [(g.index, g.t_start_ns, g.t_end_ns, g.instruction, g.status, g.segmented_by, g.steps)
            for g in segments_from_events(evs)]
    assert segs == built
    # by hand: [press] pause | [a] idle 296 s | [b] task_start | task [c] task_end
    assert [(i, a, b, st, by) for i, a, b, _in, st, by, _n in segs] == [
        (0, 1 * S, 2 * S, "unknown", "pause"), (1, 4 * S, 300 * S, "unknown", "idle_gap"),
        (2, 300 * S, 301 * S, "unknown", "task_marker"), (3, 301 * S, 303 * S, "failure", "task_marker")]
    assert [e.status for e in episodes_of(evs)] == [None, None, None, "failure"]


def test_parse_duration() -> None:
    assert parse_duration("10m") == dt.timedelta(minutes=10)
    assert parse_duration("1h30m") == dt.timedelta(minutes=90)
    assert parse_duration("45s") == dt.timedelta(seconds=45)
    for bad in ("", "10", "ten minutes", "0m"):
        with pytest.raises(ConfigError):
            parse_duration(bad)


def test_cli_forget_and_list(dt_home: Path) -> None:
    paths = Paths(dt_home).ensure()
    spool = Spool(paths.spool, DataKey.create(paths.key_file))
    start = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(minutes=6)
    evs, _ = _write(spool, "live", start, 6)  # events up to 5:55 after start, i.e. ~5 s ago
    r = CliRunner()
    out = r.invoke(app, ["review", "forget", "--last", "3m5s"])
    assert out.exit_code == 0, out.output
    # cut = 6 min + (up to 1 s truncation + run time) - 3:05 → between 175 s and 180 s after
    # start; the nearest events are the moves at 170 s and 180 s (frames sit at 125 s, 185 s)
    expect = [e for e in evs if e.t_ns < 175 * S]
    with spool.open("live") as rd:
        assert list(rd.iter_events()) == expect
    removed = len(evs) - len(expect)
    assert f"forgot {removed} events and 3 frames" in out.output
    listed = r.invoke(app, ["review", "list"])
    assert listed.exit_code == 0 and "live" in listed.output


def test_pause_inside_a_task_does_not_split_it() -> None:
    """As the dataset builder: a task with a pause in it is one episode (by hand: 1 s … 5 s)."""
    evs = [
        Marker(seq=0, t_ns=1 * S, name="task_start", instruction="File the report"),
        PointerDown(seq=1, t_ns=2 * S, x=5, y=5, button="left"),
        Marker(seq=2, t_ns=3 * S, name="pause"),
        Marker(seq=3, t_ns=4 * S, name="resume"),
        Marker(seq=4, t_ns=5 * S, name="task_end", status="failure"),
    ]
    assert [(e.t_start_ns, e.t_end_ns, e.instruction, e.status) for e in episodes_of(evs)] == [
        (1 * S, 5 * S, "File the report", "failure")]


def test_retention_counts_from_arrival_not_recording(home: tuple[Paths, Spool]) -> None:
    """An import of a 2023 recording that arrived 2 days ago is kept (7-day retention); one that
    arrived 9 days ago goes; an import without the key falls back to its file time (now: kept)."""
    import msgspec

    paths, spool = home
    old = dt.datetime(2023, 5, 1, tzinfo=dt.timezone.utc)
    for sid, arrived in (("fresh", T0 - dt.timedelta(days=2)), ("stale", T0 - dt.timedelta(days=9)), ("legacy", None)):
        m = manifest(sid, old.strftime("%Y-%m-%dT%H:%M:%SZ"))
        extra = {} if arrived is None else {"imported_utc": arrived.strftime("%Y-%m-%dT%H:%M:%SZ")}
        w = spool.create(msgspec.structs.replace(m, backend="import", recorder_version="import", extra=extra))
        w.append([PointerMove(seq=0, t_ns=0, x=0, y=0)])
        w.close(duration_ns=0)
    pol = Policy.from_toml('version = 1\nnotice = "n"\n')
    # legacy's file time is the real now, after T0: at T0 it is 0 days old
    assert purge_expired(paths, spool, pol, now=T0) == ["stale"]
    assert "fresh" in spool.session_ids()
    # legacy (no key) is judged by its file time, i.e. now: kept at the real now
    assert purge_expired(paths, spool, pol) == [] and "legacy" in spool.session_ids()


def test_review_list_never_deletes_and_survives_a_corrupt_session(dt_home: Path) -> None:
    paths = Paths(dt_home).ensure()
    spool = Spool(paths.spool, DataKey.create(paths.key_file))
    _write(spool, "ancient", dt.datetime(2023, 1, 1, tzinfo=dt.timezone.utc), 1)
    _write(spool, "good", dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5), 1)
    (paths.spool / "broken").mkdir()
    (paths.spool / "broken" / "session.db").write_bytes(b"this is not sqlite" * 100)
    r = CliRunner()
    out = r.invoke(app, ["review", "list"])
    assert out.exit_code == 0, out.output
    assert "good" in out.output and "ancient" in out.output and "UNREADABLE" in out.output
    assert "review delete broken" in " ".join(out.output.split())
    assert set(spool.session_ids()) == {"ancient", "good", "broken"}  # listing destroyed nothing
    out = r.invoke(app, ["review", "purge"])
    assert out.exit_code == 0 and "destroyed raw session ancient" in out.output
    assert set(spool.session_ids()) == {"good", "broken"}


def test_cli_bad_inputs_give_clear_errors(dt_home: Path) -> None:
    paths = Paths(dt_home).ensure()
    Spool(paths.spool, DataKey.create(paths.key_file))
    r = CliRunner()
    out = r.invoke(app, ["review", "forget", "--last", "99999999999d"])
    assert isinstance(out.exception, ConfigError) and "too long" in str(out.exception)
    out = r.invoke(app, ["seal", "../../../etc"])
    assert isinstance(out.exception, SessionNotFound) and "invalid session id '../../../etc'" in str(out.exception)
    out = r.invoke(app, ["review", "delete", "../x"])
    assert isinstance(out.exception, SessionNotFound) and "invalid session id" in str(out.exception)


def test_sealed_bundle_is_private(dt_home: Path) -> None:
    """Every folder of a bundle is 0700 and every file 0600 (SEALED and blob shards included)."""
    import os
    import stat

    from demotrace.privacy.policy import default_policy
    from demotrace.privacy.seal import seal_session

    paths = Paths(dt_home).ensure()
    spool = Spool(paths.spool, DataKey.create(paths.key_file))
    os.umask(0o022)
    _write(spool, "s", T0, 1)
    seal_session(paths, spool, "s", default_policy())
    root = paths.home / "sealed" / "s"
    modes = {p.relative_to(root).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}
    assert "SEALED" in modes and any(p.count("/") >= 1 for p in modes)
    for p, mode in modes.items():
        assert mode == (0o700 if (root / p).is_dir() else 0o600), (p, oct(mode))
