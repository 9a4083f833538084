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
