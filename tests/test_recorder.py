"""The recorder: ring selection, frame triggers, batching (pure logic, real spool), and
end-to-end recordings on the real Xvfb with the real X11 backend and xdotool."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from demotrace.capture import RawFrame
from demotrace.errors import ConfigError
from demotrace.recorder import ActionDetector, BatchWriter, FrameRing, RecorderSettings, parse_hotkey
from demotrace.schema import KeyDown, Marker, PointerDown, Rect, SessionManifest
from demotrace.spool import DataKey, Spool

MS = 1_000_000
S = 1_000_000_000


def _raw(t_ns: int, fill: int = 0) -> RawFrame:
    return RawFrame(pixels=bytes([fill]) * 16, width=2, height=2, bounds=Rect(0, 0, 2, 2), monitor=-1, captured_ns=t_ns)


# -- ring: the observation rule ----------------------------------------------------------------

def test_ring_newest_strictly_before() -> None:
    ring = FrameRing(max_age_ns=2 * S, max_frames=10)
    for t in (100, 200, 300):
        ring.push(_raw(t))
    assert ring.newest_before(300).captured_ns == 200  # a grab finishing at the event time is not "before"
    assert ring.newest_before(301).captured_ns == 300
    assert ring.newest_before(250).captured_ns == 200
    assert ring.newest_before(100) is None
    assert ring.newest().captured_ns == 300


def test_ring_bounds_age_count_and_keeps_newest() -> None:
    ring = FrameRing(max_age_ns=1 * S, max_frames=3)
    for t in (0, 100 * MS, 200 * MS, 300 * MS):
        ring.push(_raw(t))
    assert [ring.newest_before(t).captured_ns for t in (S,)] == [300 * MS]
    assert len(ring) == 3  # count cap
    ring.push(_raw(5 * S))  # 4.7 s after the others: they expire, the newest stays
    assert len(ring) == 1 and ring.newest_before(6 * S).captured_ns == 5 * S
    ring.push(_raw(4 * S))  # older than the newest: ignored
    assert len(ring) == 1
    ring.clear()
    assert ring.newest() is None


# -- action detector: which frames are kept ----------------------------------------------------

def _kd(key: str, mods: tuple[str, ...] = (), repeat: bool = False) -> dict[str, object]:
    return {"key": key, "code": "X", "modifiers": mods, "is_repeat": repeat}


def test_detector_pre_action_and_settle_frames() -> None:
    d = ActionDetector(RecorderSettings())  # typing gap 0.5 s, scroll gap 0.5 s, settle 0.4 s
    t0 = 10 * S
    reqs = d.on_event("pointer_down", t0, {"x": 1, "y": 2, "button": "left"})
    assert [(r.reason, r.before_ns) for r in reqs] == [("pointer_down", t0)]
    assert d.on_event("pointer_up", t0 + 50 * MS, {}) == []
    assert d.on_event("pointer_move", t0 + 60 * MS, {}) == []
    # a typing run "ab" then a pause of 0.6 s then "c": two runs -> two key frames
    t1 = t0 + 1 * S
    assert [r.reason for r in d.on_event("key_down", t1, _kd("a"))] == ["key"]
    assert d.on_event("key_down", t1 + 200 * MS, _kd("b")) == []
    assert d.on_event("key_down", t1 + 250 * MS, _kd("b", repeat=True)) == []
    assert d.on_event("key_down", t1 + 300 * MS, _kd("Shift")) == []
    assert d.on_event("key_down", t1 + 350 * MS, _kd("Backspace")) == []
    # settle 0.5 s after the last key (t1+350ms) -> due at t1+850ms, not before
    assert d.next_deadline() == t1 + 850 * MS
    assert d.due(t1 + 849 * MS) == []
    assert [(r.reason, r.before_ns) for r in d.due(t1 + 850 * MS)] == [("settle", None)]
    assert d.due(t1 + 2 * S) == []
    t2 = t1 + 950 * MS  # 0.6 s after the last key: new run
    assert [(r.reason, r.before_ns) for r in d.on_event("key_down", t2, _kd("c"))] == [("key", t2)]
    # Enter and Ctrl+C are actions of their own, and the next printable key starts a new run
    assert [r.reason for r in d.on_event("key_down", t2 + 10 * MS, _kd("Enter"))] == ["key"]
    assert [r.reason for r in d.on_event("key_down", t2 + 20 * MS, _kd("d"))] == ["key"]
    assert [r.reason for r in d.on_event("key_down", t2 + 30 * MS, _kd("c", ("Control",)))] == ["hotkey"]
    assert [r.reason for r in d.on_event("key_down", t2 + 40 * MS, _kd("E", ("Shift",)))] == ["key"]
    # wheel: first of a burst only; 0.5 s quiet starts a new burst
    t3 = t2 + 5 * S
    assert [r.reason for r in d.on_event("wheel", t3, {})] == ["wheel"]
    assert d.on_event("wheel", t3 + 100 * MS, {}) == []
    assert d.on_event("wheel", t3 + 590 * MS, {}) == []  # 0.49 s after the previous
    assert [r.reason for r in d.on_event("wheel", t3 + 1100 * MS, {})] == ["wheel"]
    assert d.next_deadline() == t3 + 1500 * MS  # settle 0.4 s after the last wheel
    assert [r.reason for r in d.on_event("focus_change", t3 + 2 * S, {})] == ["focus_change"]
    # at the end of a session a pending settle is taken at once
    assert [r.reason for r in d.take_pending()] == ["settle"]
    assert d.take_pending() == [] and d.next_deadline() is None


def test_hotkey_parsing() -> None:
    assert parse_hotkey("Control+Alt+Shift+P") == (frozenset({"Control", "Alt", "Shift"}), "p")
    assert parse_hotkey("ctrl+alt+p") == (frozenset({"Control", "Alt"}), "p")
    with pytest.raises(ConfigError, match="unknown modifier 'Hyper'"):
        parse_hotkey("Hyper+P")
    with pytest.raises(ConfigError, match="non-modifier key"):
        parse_hotkey("Control+Shift")
    with pytest.raises(ConfigError, match="frame_scale"):
        RecorderSettings(frame_scale=0.3)
    with pytest.raises(ConfigError, match="flush_interval_s"):
        RecorderSettings(flush_interval_s=0)


# -- batching into the real spool --------------------------------------------------------------

def test_batch_writer_seq_relative_time_and_batches(tmp_path: Path) -> None:
    key = DataKey.create(tmp_path / "key")
    spool = Spool(tmp_path / "spool", key)
    w = spool.create(SessionManifest(session_id="s1", started_utc="2026-11-30T00:00:00Z", timezone="UTC",
                                     platform="test", backend="test", recorder_version="0"))
    start = 1_000 * S
    bw = BatchWriter(w, start, flush_interval_ns=500 * MS)
    assert bw.flush_deadline() is None
    bw.add(Marker, start, {"name": "session_start"})
    bw.add(PointerDown, start + 7 * MS, {"x": 10.0, "y": 20.0, "button": "left"})
    assert bw.add(PointerDown, start, {"bogus": 1}) is None  # malformed: counted, no seq used
    assert bw.malformed == 1
    assert bw.flush() == 2
    bw.add(KeyDown, start + 9 * MS, {"key": "a", "code": "KeyA", "text": "a"})
    assert not bw.flush_due(time.monotonic_ns())
    assert bw.flush_due(time.monotonic_ns() + 500 * MS)
    assert bw.flush() == 1
    assert bw.flush() == 0
    w.close(duration_ns=bw.last_t_ns)
    with spool.open("s1") as r:
        batches = list(r.iter_batches())
        events = list(r.iter_events())
    assert [len(b) for b in batches] == [2, 1]
    assert events == [
        Marker(seq=0, t_ns=0, name="session_start"),
        PointerDown(seq=1, t_ns=7 * MS, x=10.0, y=20.0, button="left"),
        KeyDown(seq=2, t_ns=9 * MS, key="a", code="KeyA", text="a"),
    ]
    assert bw.stored == 3 and bw.stored_by_kind == {"marker": 1, "pointer_down": 1, "key_down": 1}
    assert bw.delays.n == 3


# -- end to end: the real CLI, the real X11 backend, Xvfb, xdotool -------------------------------

import io
import json
import os
import re
import signal
import subprocess
import sys

from helpers_x11 import DEMOTRACE, recorder_status, start_recorder, stop_recorder, wait_for

from demotrace.paths import Paths
from demotrace.schema import Frame, KeyUp, PointerUp
from demotrace.schema.events import Event

APP = Path(__file__).resolve().parent / "apps" / "rec_colour_app.py"
GREEN = (0, 200, 0)
RED = (200, 0, 0)


def _close(rgb: tuple[int, ...], want: tuple[int, int, int], tol: int = 40) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(rgb[:3], want))


def _start_app(xvfb, title: str, x: int, y: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, str(APP), title, str(x), str(y)], env=xvfb.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.strip() == "READY", f"test app did not start: {line!r} {proc.stderr.read() if proc.poll() is not None else ''}"
    return proc


def _env(xvfb) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return dict(xvfb.env, COLUMNS="200")


def _xdo(xvfb, *args: str) -> None:
    subprocess.run(["xdotool", *args], env=xvfb.env, check=True, timeout=30)


def _cli(home: Path, *args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*DEMOTRACE, *args, "--home", str(home)], capture_output=True, text=True,
                          timeout=60, env=env or dict(os.environ, COLUMNS="200"))
    if check:
        assert proc.returncode == 0, f"demotrace {args} failed: {proc.stdout}\n{proc.stderr}"
    return proc


def _open(home: Path, sid: str | None = None):
    from demotrace.spool import DataKey, Spool

    spool = Spool(Paths(home).spool, DataKey.load(Paths(home).key_file))
    ids = spool.session_ids()
    assert len(ids) == 1, ids
    return spool, spool.open(sid or ids[0])


def _pixel(reader, frame: Frame, x: int, y: int) -> tuple[int, ...]:
    from PIL import Image

    img = Image.open(io.BytesIO(reader.read_blob(frame.blob))).convert("RGB")
    assert (img.width, img.height) == (frame.width, frame.height)
    return img.getpixel((int((x - frame.bounds.x) * frame.scale), int((y - frame.bounds.y) * frame.scale)))


INDICATOR_REC = (0xC0, 0x39, 0x2B)
INDICATOR_PAUSED = (0x7F, 0x8C, 0x8D)


def _wait_screen_pixel(xvfb, x: int, y: int, want: tuple[int, int, int], timeout: float = 8.0) -> None:
    import mss

    with mss.MSS(display=xvfb.display) as sct:
        deadline = time.monotonic() + timeout
        while True:
            shot = sct.grab({"left": x, "top": y, "width": 1, "height": 1})
            rgb = shot.pixel(0, 0)
            if _close(rgb, want, tol=10):
                return
            assert time.monotonic() < deadline, f"screen pixel ({x}, {y}) is {rgb}, expected {want}"
            time.sleep(0.1)


def _all_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def _assert_no_plaintext(root: Path, secrets: list[str]) -> None:
    files = _all_files(root)
    assert files
    for p in files:
        data = p.read_bytes()
        for s in secrets:
            for enc in ("utf-8", "utf-16-le", "utf-16-be"):
                assert s.encode(enc) not in data, f"{s!r} ({enc}) in plaintext in {p}"


def test_record_click_type_task_and_show(xvfb, dt_home: Path) -> None:
    title = "Quarterly ☃ Zürich 🦆 report"
    typed = "secret words qx"  # lower case only: xdotool sends one key press per character
    instruction = "Fill the quarterly form for Ödön"
    app = _start_app(xvfb, title, 100, 100)
    try:
        # no window manager on this display: give the app the input focus explicitly (a WM would),
        # so the recorder's first focus_change names it whatever an earlier test left focused
        _xdo(xvfb, "search", "--onlyvisible", "--sync", "--name", "^Quarterly ", "windowfocus", "--sync", "%1")
        t_begin = time.monotonic()
        rec = start_recorder(_env(xvfb), dt_home, enroll=True)  # with the REC indicator
        _cli(dt_home, "task", "start", instruction)
        _xdo(xvfb, "mousemove", "250", "150")
        time.sleep(0.4)
        _xdo(xvfb, "click", "1")
        assert app.stdout.readline().strip() == "CLICKED"
        time.sleep(0.3)
        _xdo(xvfb, "type", "--delay", "40", typed)
        time.sleep(0.8)  # settle frame after typing (0.5 s)
        # while recording: no plaintext anywhere, WAL and temp files included
        _assert_no_plaintext(dt_home, [typed, "secret words", title, "Zürich", instruction])
        _cli(dt_home, "task", "end", "--status", "success")
        # the indicator turns grey "PAUSED" while paused, red again on resume (read off the screen)
        _cli(dt_home, "pause")
        _wait_screen_pixel(xvfb, xvfb.width - 10, 12, INDICATOR_PAUSED)
        _cli(dt_home, "resume")
        _wait_screen_pixel(xvfb, xvfb.width - 10, 12, INDICATOR_REC)
        status = json.loads(_cli(dt_home, "status", "--json").stdout)
        assert status["state"] == "recording" and status["events_dropped"] == 0
        live = _cli(dt_home, "sessions", "list").stdout
        assert re.search(rf"{status['session_id']}.*recording", live), live
        busy = _cli(dt_home, "sessions", "delete", status["session_id"], "--yes", check=False)
        assert busy.returncode == 1 and "is being recorded; stop it first" in busy.stderr
        out, _err = stop_recorder(rec)
        t_total = time.monotonic() - t_begin
    finally:
        app.kill()
        app.communicate()
    spool, r = _open(dt_home)
    sid = r.session_id
    assert f"session id: {sid}" in out
    events: list[Event] = list(r.iter_events())
    assert [e.seq for e in events] == list(range(len(events)))  # seq: arrival order, no gaps
    markers = [(e.name, e.instruction, e.status) for e in events if isinstance(e, Marker)]
    assert markers == [("session_start", None, None), ("task_start", instruction, None),
                       ("task_end", None, "success"), ("pause", None, None), ("resume", None, None),
                       ("session_stop", None, None)]
    assert isinstance(events[0], Marker) and events[0].t_ns == 0
    downs = [e for e in events if isinstance(e, PointerDown)]
    ups = [e for e in events if isinstance(e, PointerUp)]
    assert [(d.x, d.y, d.button) for d in downs] == [(250, 150, "left")]
    assert [(u.x, u.y, u.button) for u in ups] == [(250, 150, "left")]
    kd = [e for e in events if isinstance(e, KeyDown)]
    ku = [e for e in events if isinstance(e, KeyUp)]
    assert "".join(k.text or "" for k in kd) == typed
    assert len(kd) == len(ku) == len(typed)
    # the frame kept for the click was captured before it and shows the button still green
    frames = [e for e in events if isinstance(e, Frame)]
    click_frames = [f for f in frames if f.reason == "pointer_down"]
    assert len(click_frames) == 1
    cf = click_frames[0]
    assert cf.captured_t_ns < downs[0].t_ns
    # default: half resolution, JPEG (since 2026-11-30; WebP before); bounds = the whole desktop,
    # so coordinates map by x * 0.5
    assert (cf.scale, cf.format, cf.width, cf.height) == (0.5, "jpeg", xvfb.width // 2, xvfb.height // 2)
    assert r.read_blob(cf.blob)[:3] == b"\xff\xd8\xff"
    assert cf.bounds == Rect(0, 0, xvfb.width, xvfb.height)
    assert _close(_pixel(r, cf, 250, 150), GREEN), _pixel(r, cf, 250, 150)
    # ...while the settle frame after typing shows it red (the click happened)
    settle = [f for f in frames if f.reason == "settle" and f.captured_t_ns > kd[-1].t_ns]
    assert settle and _close(_pixel(r, settle[0], 250, 150), RED)
    # the first key of the typing run has its pre-action frame
    key_frames = [f for f in frames if f.reason == "key"]
    assert key_frames and key_frames[0].captured_t_ns < kd[0].t_ns
    # the REC indicator is in the frames, top-right (documented: frames show what the person saw)
    assert _close(_pixel(r, cf, xvfb.width - 10, 12), INDICATOR_REC)
    # the final screens: one frame at task end and one at stop, each the newest ring frame
    # captured before its marker (not older than the settle grab after typing): button red
    by_name = {e.name: e for e in events if isinstance(e, Marker)}
    for reason, marker in (("task_end", "task_end"), ("session_stop", "session_stop")):
        final = [f for f in frames if f.reason == reason]
        assert len(final) == 1, (reason, [f.reason for f in frames])
        assert settle[0].captured_t_ns <= final[0].captured_t_ns < by_name[marker].t_ns
        assert _close(_pixel(r, final[0], 250, 150), RED)
    r.close()
    _assert_no_plaintext(dt_home, [typed, "secret words", title, "Zürich", instruction])

    # sessions show: counts computed from what was driven
    show = _cli(dt_home, "sessions", "show", sid).stdout

    def count(kind: str) -> int:
        m = re.search(rf"│\s*{kind}\s*│\s*(\d+)\s*│", show)
        assert m, f"{kind} missing in:\n{show}"
        return int(m.group(1))

    assert count("pointer_down") == 1 and count("pointer_up") == 1
    assert count("key_down") == len(typed) and count("key_up") == len(typed)
    assert count("marker") == 6
    assert "pauses: 1" in show
    assert count("frame") == len(frames)
    assert f"'{instruction}': success" in show
    assert "state: ended" in show
    assert re.search(r"^apps: .*Dtrecapp", show, re.M), show
    m = re.search(r"duration: (\d+):(\d\d):(\d\d)", show)
    dur = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + int(m.group(3))
    assert 2 <= dur <= t_total + 1
    size = sum(p.stat().st_size for p in _all_files(Paths(dt_home).spool / sid))
    assert f"({size} bytes)" in show
    listing = _cli(dt_home, "sessions", "list").stdout
    assert sid in listing and "ended" in listing
    # delete
    _cli(dt_home, "sessions", "delete", sid, "--yes")
    assert not (Paths(dt_home).spool / sid).exists()
    gone = _cli(dt_home, "sessions", "show", sid, check=False)
    assert gone.returncode == 1 and "sessions list" in gone.stderr


def test_pause_resume_hotkey_and_control_errors(xvfb, dt_home: Path) -> None:
    rec = start_recorder(_env(xvfb), dt_home, "--no-indicator", enroll=True)
    try:
        _xdo(xvfb, "type", "--delay", "30", "ab")
        _cli(dt_home, "pause")
        again = _cli(dt_home, "pause", check=False)
        assert again.returncode == 1 and "already paused" in again.stderr
        _xdo(xvfb, "type", "--delay", "30", "xyz")
        _xdo(xvfb, "mousemove", "400", "300", "click", "1")
        _cli(dt_home, "resume")
        _xdo(xvfb, "type", "--delay", "30", "cd")
        _xdo(xvfb, "key", "ctrl+alt+shift+p")  # the global pause hotkey
        _xdo(xvfb, "type", "--delay", "30", "uvw")
        _xdo(xvfb, "key", "ctrl+alt+shift+p")
        _xdo(xvfb, "type", "--delay", "30", "ef")
        time.sleep(0.3)
        bad = _cli(dt_home, "task", "end", "--status", "success", check=False)
        assert bad.returncode == 1 and "no task is open" in bad.stderr
        bad = _cli(dt_home, "task", "end", "--status", "meh", check=False)
        assert bad.returncode == 1 and "success, failure or abandoned" in bad.stderr
        # malformed control messages to the real recorder: error replies, and it keeps recording
        from demotrace.recorder import ControlClient

        with ControlClient(Paths(dt_home).control_socket) as c:
            assert "not JSON" in c.send_raw(b"{oops\n")["error"]
            assert "non-empty 'instruction'" in c.request("task_start", instruction=5)["error"]
            assert "non-empty 'instruction'" in c.request("task_start")["error"]
            assert "unknown command 'rm'" in c.request("rm")["error"]
            assert c.request("status")["state"] == "recording"
        second = _cli(dt_home, "record", "--duration", "1", "--no-indicator", check=False)
        assert second.returncode == 1 and f"already running for this home (pid {rec.pid})" in second.stderr
        _cli(dt_home, "stop")
        out, err = rec.communicate(timeout=60)
        assert rec.returncode == 0, err
        assert "session id:" in out
    finally:
        if rec.poll() is None:
            rec.kill()
            rec.communicate()
    _spool, r = _open(dt_home)
    events = list(r.iter_events())
    r.close()
    assert "".join(e.text or "" for e in events if isinstance(e, KeyDown)) == "abcdef"
    assert not [e for e in events if isinstance(e, (PointerDown, PointerUp))]
    markers = [(e.name, e.reason) for e in events if isinstance(e, Marker)]
    assert markers == [("session_start", None), ("pause", "control"), ("resume", "control"),
                       ("pause", "hotkey"), ("resume", "hotkey"), ("session_stop", None)]
    # nothing captured inside a pause: no input event and no frame grabbed between pause and resume
    spans = []
    marks = [e for e in events if isinstance(e, Marker)]
    for a, b in zip(marks, marks[1:]):
        if a.name == "pause":
            spans.append((a.t_ns, b.t_ns))
    assert len(spans) == 2
    for e in events:
        when = e.captured_t_ns if isinstance(e, Frame) else e.t_ns
        if not isinstance(e, Marker):
            assert not any(lo < when < hi for lo, hi in spans), e


def test_kill_9_keeps_every_flushed_event(xvfb, dt_home: Path) -> None:
    rec = start_recorder(_env(xvfb), dt_home, "--no-indicator", enroll=True)
    letters = "abcdefghijklmnopqrstuvwxyz"
    driven: list[tuple[float, str]] = []
    try:
        for i in range(60):
            ch = letters[i % 26]
            _xdo(xvfb, "key", ch)
            driven.append((time.monotonic(), ch))
            time.sleep(0.03)
        t_kill = time.monotonic()
        rec.send_signal(signal.SIGKILL)
        rec.communicate(timeout=30)
    finally:
        if rec.poll() is None:
            rec.kill()
    # the WAL is still there (no clean close): no plaintext in it either
    _assert_no_plaintext(dt_home, [letters[:10]])
    import sqlite3

    _spool, r = _open(dt_home)
    db = Paths(dt_home).spool / r.session_id / "session.db"
    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert r.manifest.ended is False
    events = list(r.iter_events())
    batches = r.stats().batches
    r.close()
    # batched: at most one transaction per writer tick (0.25 s) plus control markers, never per event
    span_s = driven[-1][0] - driven[0][0]
    assert batches <= span_s / 0.25 + 6 and batches * 3 < len(events), (batches, len(events), span_s)
    assert [e.seq for e in events] == list(range(len(events)))
    stored = "".join(e.text or "" for e in events if isinstance(e, KeyDown))
    all_driven = "".join(ch for _, ch in driven)
    assert all_driven.startswith(stored), (stored, all_driven)  # a prefix, no gaps
    # everything driven more than one flush interval (0.5 s, + 0.2 s delivery slack) before the kill
    must = "".join(ch for t, ch in driven if t < t_kill - 0.7)
    assert len(must) > 20 and stored.startswith(must), (len(must), len(stored))
    listing = _cli(dt_home, "sessions", "list").stdout
    assert "crashed" in listing
    st = _cli(dt_home, "status", check=False)
    assert st.returncode == 1 and "no recorder running; start one with `demotrace record`" in st.stderr


def test_overflow_is_counted_and_reported_loudly(xvfb, dt_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a tiny queue limit the writer "falls behind": events beyond it are dropped, counted,
    and reported by check_health and status — never silently (real backend, real input)."""
    from demotrace.capture import get_backend
    from demotrace.recorder import Recorder, new_manifest
    from demotrace.spool import DataKey, Spool, new_session_id

    monkeypatch.setenv("DISPLAY", xvfb.display)
    from demotrace.privacy import load_policy, record_consent

    record_consent(Paths(dt_home), load_policy(Paths(dt_home)))  # `demotrace record` needs consent (issue 4)
    key = DataKey.load_or_create(Paths(dt_home).key_file)
    spool = Spool(Paths(dt_home).spool, key)
    backend = get_backend()
    rec = Recorder(backend, spool.create(new_manifest(new_session_id(), backend)),
                   RecorderSettings(queue_limit=3, flush_interval_s=2.0, pause_hotkey=None))
    rec.start()
    try:
        time.sleep(0.3)
        _xdo(xvfb, "type", "--delay", "1", "abcdefghijklmnopqrst")  # 40 events within ~0.1 s
        deadline = time.monotonic() + 10
        while rec.status()["events_dropped"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        st = rec.status()
        assert st["events_dropped"] > 0
        assert any(p.startswith(f"LOST {st['events_dropped']} input events") for p in st["problems"]), st["problems"]
    finally:
        summary = rec.stop()
    assert summary.dropped > 0 and any("LOST" in p for p in summary.problems)
    with spool.open(rec.session_id) as r:
        events = list(r.iter_events())
    kd = [e for e in events if isinstance(e, KeyDown)]
    ku = [e for e in events if isinstance(e, KeyUp)]
    assert len(kd) + len(ku) + summary.dropped >= 40  # every driven key event is stored or counted
    assert [e.seq for e in events] == list(range(len(events)))


def test_clicking_the_indicator_pauses(xvfb, dt_home: Path) -> None:
    """The REC indicator is a real window: clicking it pauses, clicking again resumes."""
    rec = start_recorder(_env(xvfb), dt_home, enroll=True)
    try:
        _wait_screen_pixel(xvfb, xvfb.width - 10, 12, INDICATOR_REC)
        for want, colour in (("paused", INDICATOR_PAUSED), ("recording", INDICATOR_REC)):
            _xdo(xvfb, "mousemove", str(xvfb.width - 10), "12", "click", "1")
            wait_for(lambda: recorder_status(dt_home)["state"] == want, 10, f"the indicator click to switch to {want}")
            _wait_screen_pixel(xvfb, xvfb.width - 10, 12, colour)
        stop_recorder(rec)
    finally:
        if rec.poll() is None:
            rec.kill()
            rec.communicate()
    _spool, r = _open(dt_home)
    markers = [e.name for e in r.iter_events() if isinstance(e, Marker)]
    r.close()
    assert markers == ["session_start", "pause", "resume", "session_stop"]
