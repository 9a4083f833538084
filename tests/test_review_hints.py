"""What ``review`` tells the person (bug bash 5 E): the hint for a session whose manifest is
damaged (``seal`` cannot help there: delete it), and the frame count of ``forget`` (frames
removed, not stored images — identical screenshots share one)."""

from __future__ import annotations

import datetime as dt
import io
import sqlite3
from pathlib import Path

from PIL import Image
from privacy_corpus import manifest
from typer.testing import CliRunner

from demotrace.cli import app
from demotrace.paths import Paths
from demotrace.privacy.review import forget_last, list_sessions
from demotrace.schema import Frame, Marker, PointerMove
from demotrace.schema.events import Rect
from demotrace.spool import DataKey, Spool

S = 1_000_000_000


def _png(shade: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (shade, shade, shade)).save(buf, format="PNG")
    return buf.getvalue()


def _session(spool: Spool, sid: str, start: dt.datetime, split: bool = False) -> None:
    """7 events: frames at 5 s and 50 s show the SAME image (stored once), a frame at 55 s
    another one; moves at 20, 52 and 59 s. One batch, or with ``split`` two: seq 0-2, 3-6."""
    same, other = _png(40), _png(200)
    ids = {d: spool.key.content_id(d) for d in (same, other)}

    def frame(seq: int, t: int, data: bytes) -> Frame:
        return Frame(seq=seq, t_ns=t * S, blob=ids[data], monitor=0, bounds=Rect(0, 0, 8, 8), width=8, height=8,
                     scale=1.0, captured_t_ns=t * S, reason="settle", format="png")

    w = spool.create(manifest(sid, start.strftime("%Y-%m-%dT%H:%M:%SZ")))
    for data, bid in ids.items():
        w.put_blob(bid, data, "png")
    evs = [Marker(seq=0, t_ns=0, name="session_start"), frame(1, 5, same), PointerMove(seq=2, t_ns=20 * S, x=1, y=1),
           frame(3, 50, same), PointerMove(seq=4, t_ns=52 * S, x=2, y=2), frame(5, 55, other),
           PointerMove(seq=6, t_ns=59 * S, x=3, y=3)]
    for part in ((evs[:3], evs[3:]) if split else (evs,)):
        w.append(part)
    w.close(duration_ns=59 * S)


def _home(root: Path) -> tuple[Paths, Spool]:
    paths = Paths(root).ensure()
    return paths, Spool(paths.spool, DataKey.load_or_create(paths.key_file))


def test_forget_counts_frames_not_stored_images(tmp_path: Path) -> None:
    paths, spool = _home(tmp_path)
    start = dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC)
    _session(spool, "s1", start)
    # the last 9.5 s of a 60 s session: cut at 50.5 s → the frame at 55 s (its own image) and the
    # move at 52 and 59 s; the frame at 50 s stays
    res = forget_last(paths, spool, dt.timedelta(seconds=9.5), now=start + dt.timedelta(seconds=60))
    assert (res.events, res.frames, res.blobs) == (3, 1, 1)
    # the last 12 s: cut at 48 s → also the frame at 50 s, whose image the kept frame at 5 s shows
    _session(spool, "s2", start - dt.timedelta(hours=1))  # (not in the window: untouched)
    res = forget_last(paths, spool, dt.timedelta(seconds=12), now=start + dt.timedelta(seconds=60))
    assert res.removed == {"s1": (1, 0)} and (res.frames, res.blobs) == (1, 0)
    with spool.open("s1") as r:
        assert [e.seq for e in r.iter_events()] == [0, 1, 2]
        assert r.has_blob(spool.key.content_id(_png(40))) and not r.has_blob(spool.key.content_id(_png(200)))


def test_forget_of_a_whole_session_counts_its_frames(tmp_path: Path) -> None:
    paths, spool = _home(tmp_path)
    start = dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC)
    _session(spool, "s1", start)
    res = forget_last(paths, spool, dt.timedelta(minutes=2), now=start + dt.timedelta(seconds=60))
    assert res.removed == {"s1": (7, 2)} and res.frames == 3 and spool.session_ids() == []


def test_cli_forget_prints_the_frames_removed(dt_home: Path) -> None:
    _paths, spool = _home(dt_home)
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(seconds=60)
    _session(spool, "live", start)
    # cut between 30 s and ~35 s after the start (the time the command takes): frames at 50 and
    # 55 s go (2 frames, 4 events), but only the 55 s image is deleted (the 5 s frame shows the other)
    out = CliRunner().invoke(app, ["review", "forget", "--last", "30s"])
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert text.startswith("forgot 4 events and 2 frames in 1 session(s); 1 stored image(s) deleted"), text


def _flip(db: Path, table: str, where: str) -> None:
    con = sqlite3.connect(db)
    col = "v" if table == "meta" else "payload"
    (blob,) = con.execute(f"SELECT {col} FROM {table} WHERE {where}").fetchone()
    con.execute(f"UPDATE {table} SET {col} = ? WHERE {where}", (bytes([blob[0] ^ 1]) + blob[1:],))
    con.commit()
    con.close()


def test_review_list_hint_for_a_damaged_manifest_says_delete_not_seal(dt_home: Path) -> None:
    paths, spool = _home(dt_home)
    start = dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC)
    _session(spool, "manifest-bad", start)
    _session(spool, "batch-bad", start + dt.timedelta(hours=1), split=True)
    _session(spool, "all-bad", start + dt.timedelta(hours=2))
    _flip(paths.spool / "manifest-bad" / "session.db", "meta", "k = 'manifest'")
    _flip(paths.spool / "batch-bad" / "session.db", "batches", "first_seq = 0")
    _flip(paths.spool / "all-bad" / "session.db", "batches", "first_seq = 0")
    summaries = {s.session_id: s for s in list_sessions(paths, spool)}
    assert summaries["manifest-bad"].cannot_open and not summaries["all-bad"].cannot_open
    # bug bash 6 L1: one damaged batch of two — listed with the other's counts, not as unreadable
    bb = summaries["batch-bad"]
    assert (bb.error, bb.events, bb.frames, bb.damaged) == (None, 4, 2, ((0, 2),))
    out = CliRunner().invoke(app, ["review", "list"])
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    hint = text[text.index("session manifest-bad cannot be opened"):]
    assert "none of its data can be read or sealed" in hint and "`demotrace seal`" not in hint
    assert "the data is unreadable: delete it with `demotrace review delete manifest-bad`" in hint
    assert ("session batch-bad: 1 damaged batch(es) (3 events, seq 0..2) cannot be read; the counts above are of"
            " the rest, and `demotrace seal` seals the rest") in text
    # no batch decrypts: seal refuses such a session, so its hint does not offer it
    bad = text[text.index("session all-bad is unreadable"):]
    assert "`demotrace seal`" not in bad and "`demotrace review delete all-bad`" in bad
    assert set(spool.session_ids()) == {"manifest-bad", "batch-bad", "all-bad"}  # listing destroyed nothing
