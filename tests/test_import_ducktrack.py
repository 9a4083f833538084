"""DuckTrack / AgentNetTool importer: the real example (hand-checked values), a synthetic
folder with video (frames checked by colour), side files, malformed input and the CLI."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
from PIL import Image

from demotrace.build import BuildSettings, episodes_from_session, reduce_events
from demotrace.errors import MalformedInputError
from demotrace.importers import DuckTrackConfig, import_ducktrack
from demotrace.importers.ducktrack import map_key
from demotrace.schema import PointerDown, Rect, Wheel
from demotrace.spool import DataKey, Spool

S = 1_000_000_000


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool", DataKey.create(tmp_path / "key"))


# Hand-derived from events.jsonl (read line by line; t relative to the first line,
# 150160.965463208 s; coordinates in logical points, the import scales by 2 on this macOS laptop).
HAND_CLICKS = [  # (t_s of the first press, x_pt, y_pt, count)
    (0.568, 1319.11328125, 65.06640625, 1), (3.687, 660.12890625, 629.375, 1),
    (6.726, 726.57421875, 680.12109375, 1), (9.382, 715.67578125, 519.90625, 1),
    (12.082, 1236.765625, 478.3671875, 1), (15.543, 510.17578125, 399.90625, 1),
    (16.952, 456.95703125, 398.15234375, 3),       # presses at 177.918, 178.055, 178.178
    (17.548, 476.69140625, 391.46875, 1),          # 0.34 s later but 21 pt away: new click
    (18.831, 386.92578125, 438.2109375, 1), (20.198, 687.55078125, 516.296875, 1),
    (22.248, 808.125, 310.5, 1),
    (22.628, 808.125, 318.4296875, 1),             # 0.38 s later, 7.9 pt = 15.9 px away
    (25.014, 438.40234375, 564.16015625, 1), (27.189, 627.40234375, 178.5078125, 1),
    (28.584, 663.234375, 372.7109375, 1), (31.087, 1173.0234375, 10.80859375, 1),
    (32.425, 1178.6875, 50.45703125, 1),
]
HAND_DRAGS = [  # (t_s, press pt, release pt)
    (14.341, (363.3359375, 359.7578125), (564.01171875, 403.203125)),
    (18.974, (386.92578125, 438.2109375), (687.55078125, 516.296875)),  # second press of a double click
    (26.540, (370.61328125, 173.984375), (627.40234375, 178.5078125)),
]


def test_real_ducktrack_example_hand_checked(shared_data: Path, spool: Spool):
    folder = shared_data / "ducktrack-example"
    res = import_ducktrack(folder, spool, name="example")
    assert res.scale == 2.0 and res.frames == 0 and res.skipped == 0
    assert res.events == 13401 + 3                       # every line + start, screen, stop
    with spool.open(res.session_id) as reader:
        assert reader.manifest.platform == "darwin" and reader.manifest.extra["name"] == "example"
        events = list(reader.iter_events())
        downs = [e for e in events if isinstance(e, PointerDown)]
        assert len(downs) == 22 and downs[0].t_ns == round((150161.533522208 - 150160.965463208) * 1e9)
        assert (downs[0].x, downs[0].y) == (1319.11328125 * 2, 65.06640625 * 2)
        assert sum(isinstance(e, Wheel) for e in events) == 140
        (ep,) = list(episodes_from_session(reader, BuildSettings()))
    acts = [s.action for s in ep.steps]
    clicks = [(round(a.t_start_ns / S, 3), a.x, a.y, a.count) for a in acts if a.type == "click"]
    assert clicks == [(t, x * 2, y * 2, c) for t, x, y, c in HAND_CLICKS]
    drags = [(round(a.t_start_ns / S, 3), (a.x, a.y), (a.x2, a.y2)) for a in acts if a.type == "drag"]
    assert drags == [(t, (p[0] * 2, p[1] * 2), (q[0] * 2, q[1] * 2)) for t, p, q in HAND_DRAGS]
    typed = [(a.type, a.text, a.keys) for a in acts if a.type in ("type", "key", "hotkey")]
    assert typed == [("type", "wikipedia", tuple("wikipedia")), ("key", None, ("enter",)),
                     ("type", "transformer model", tuple("transformer model"))]
    scrolls = [a for a in acts if a.type == "scroll"]
    assert sum(a.dy for a in scrolls) == -140 and all(a.dx == 0 for a in scrolls)
    # first burst: 7 ticks at 168.915–169.115 and 6 at 169.365–169.525 (0.25 s pause, 10 px away)
    assert scrolls[0].dy == -13 and round(scrolls[0].t_start_ns / S, 3) == 7.950
    assert acts[-1].type == "done" and ep.status == "unknown"
    assert ep.screen == Rect(0, 0, 1512 * 2, 982 * 2) and ep.episode_id == f"{res.session_id}-0"


def test_pynput_key_names():
    assert map_key("w") == ("w", "KeyW", "w", None)
    assert map_key("enter") == ("Enter", "Enter", None, None)
    assert map_key(None, "Key.shift_r") == ("Shift", "ShiftRight", None, None)
    assert map_key(None, "'A'") == ("A", "KeyA", "A", None)
    assert map_key("space") == (" ", "Space", " ", None)
    assert map_key("\x03") == ("\x03", "KeyC", None, None)
    assert map_key(None, "<65>") == ("Unidentified", "Unidentified", None, 65)
    # AgentNetTool: Option+T on macOS reports "'†'" with the physical key's name "t"
    assert map_key("t", "'†'") == ("†", "KeyT", "†", None)
    assert map_key("a", "<0>") == ("a", "KeyA", None, 0)


COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]   # one per second


def _make_video(path: Path, fps: int = 10, size=(160, 96)) -> None:
    import av

    with av.open(str(path), "w") as out:
        st = out.add_stream("mpeg4", rate=fps)
        st.width, st.height = size
        st.pix_fmt = "yuv420p"
        st.time_base = Fraction(1, fps)
        for i in range(len(COLOURS) * fps):
            img = Image.new("RGB", size, COLOURS[i // fps])
            frame = av.VideoFrame.from_image(img)
            frame.pts = i
            for pkt in st.encode(frame):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)


def _write_folder(folder: Path, lines: list, meta_extra: dict | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"system": "Linux", "screen_width": 80, "screen_height": 48, "scroll_direction": 1,
            "start_time": "2026-01-01 10:00:00", "video_start_timestamp": 1000.0}
    meta.update(meta_extra or {})
    (folder / "metadata.json").write_text(json.dumps(meta))
    (folder / "events.jsonl").write_text("".join(
        (ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines))


def _dominant(data: bytes) -> tuple[int, int, int]:
    img = Image.open(io.BytesIO(data)).convert("RGB")
    return img.getpixel((img.width // 2, img.height // 2))


def test_video_frames_before_each_action(tmp_path: Path, spool: Spool):
    folder = tmp_path / "rec"
    _write_folder(folder, [
        {"time_stamp": 1000.2, "action": "move", "x": 10, "y": 10},
        {"time_stamp": 1001.55, "action": "click", "x": 10, "y": 10, "button": "left", "pressed": True},
        {"time_stamp": 1001.6, "action": "click", "x": 10, "y": 10, "button": "left", "pressed": False},
        {"time_stamp": 1002.0, "action": "click", "x": 40, "y": 20, "button": "left", "pressed": True},
        {"time_stamp": 1002.05, "action": "click", "x": 40, "y": 20, "button": "left", "pressed": False},
        {"time_stamp": 1003.05, "action": "press", "name": "a"},
        {"time_stamp": 1003.1, "action": "release", "name": "a"},
    ])
    (folder / "top_window.jsonl").write_text(json.dumps({"time_stamp": 1000.3, "top_window_name": "Notes"}) + "\n")
    (folder / "element.jsonl").write_text(json.dumps({"time_stamp": 1001.99, "a11y_tree": {
        "AXRole": "AXButton", "AXTitle": "OK", "AXFrame": {"x": 30, "y": 15, "w": 20, "h": 10}}}) + "\n")
    _make_video(folder / "screen.mp4")
    res = import_ducktrack(folder, spool)
    # video 160 px wide over 80 logical points → scale 2
    assert res.scale == 2.0 and res.frames == 3
    with spool.open(res.session_id) as reader:
        assert reader.manifest.source == "agentnettool"
        (ep,) = list(episodes_from_session(reader))
        steps = ep.steps
        assert [s.action.type for s in steps] == ["click", "click", "type", "done"]
        # click at 1001.55: newest frame before is pts 1.5 s (second 1: green), captured at
        # 1001.5 − 1000.2 = 1.3 s after the session start
        o1 = steps[0].observation
        assert o1.captured_t_ns == 1_300_000_000 and o1.gap_ns == 50_000_000
        assert _dominant(reader.read_blob(o1.blob))[1] > 200
        # click at 1002.0: the frame at pts 2.0 (blue) is NOT strictly before → pts 1.9, green
        o2 = steps[1].observation
        assert o2.captured_t_ns == 1_700_000_000 and _dominant(reader.read_blob(o2.blob))[1] > 200
        # key at 1003.05 → pts 3.0, white
        assert all(c > 200 for c in _dominant(reader.read_blob(steps[2].observation.blob)))
        assert (steps[0].action.x, steps[0].action.y) == (20, 20)
        assert steps[0].action.context.title == "Notes"
        assert steps[1].action.target.name == "OK" and steps[1].action.target.bounds.x == 60
        assert steps[0].action.target is None


def test_malformed_line_aborts_and_keeps_other_sessions(tmp_path: Path, spool: Spool, shared_data: Path):
    good = tmp_path / "good"
    _write_folder(good, [{"time_stamp": 1.0, "action": "press", "name": "a"}])
    kept = import_ducktrack(good, spool, config=DuckTrackConfig(video=False))
    bad = tmp_path / "bad"
    _write_folder(bad, [
        {"time_stamp": 1.0, "action": "move", "x": 1, "y": 1},
        {"time_stamp": 1.1, "action": "move", "x": 2, "y": 2},
        '{"time_stamp": 1.2, "action": "click", "x": 3',
        {"time_stamp": 1.3, "action": "move", "x": 4, "y": 4},
    ])
    with pytest.raises(MalformedInputError, match=r"events\.jsonl: line 3: not valid JSON"):
        import_ducktrack(bad, spool)
    assert spool.session_ids() == [kept.session_id]
    res = import_ducktrack(bad, spool, config=DuckTrackConfig(skip_bad_lines=True))
    assert res.skipped == 1 and res.events == 3 + 3 and res.skipped_lines[0].startswith("events.jsonl line 3: not valid JSON")
    unknown = tmp_path / "unknown"
    _write_folder(unknown, [{"time_stamp": 1.0, "action": "teleport"}])
    with pytest.raises(MalformedInputError, match=r"line 1: unknown action 'teleport'"):
        import_ducktrack(unknown, spool)
    with pytest.raises(MalformedInputError, match="events.jsonl: missing"):
        import_ducktrack(tmp_path / "missing", spool)
    (tmp_path / "nometa").mkdir()
    (tmp_path / "nometa" / "events.jsonl").write_text("")
    with pytest.raises(MalformedInputError, match="metadata.json: missing"):
        import_ducktrack(tmp_path / "nometa", spool)


def test_cli_import_prints_session_id(tmp_path: Path, shared_data: Path, dt_home: Path):
    folder = tmp_path / "cli"
    _write_folder(folder, [
        {"time_stamp": 5.0, "action": "press", "name": "h"},
        {"time_stamp": 5.1, "action": "release", "name": "h"},
        {"time_stamp": 5.2, "action": "press", "name": "i"},
        {"time_stamp": 5.3, "action": "release", "name": "i"},
    ])
    exe = Path(sys.executable).with_name("demotrace")
    out = subprocess.run([str(exe), "import", str(folder), "--name", "greeting"], capture_output=True,
                         text=True, env=dict(os.environ, DEMOTRACE_HOME=str(dt_home)), timeout=120)
    assert out.returncode == 0, out.stderr
    sid = out.stdout.strip().splitlines()[-1]
    spool = Spool(dt_home / "spool", DataKey.load(dt_home / "key"))
    with spool.open(sid) as reader:
        assert reader.manifest.extra["name"] == "greeting"
        acts = list(reduce_events(reader.iter_events()))
    assert [(a.type, a.text) for a in acts] == [("type", "hi")]
    bad = subprocess.run([str(exe), "import", str(tmp_path / "nowhere")], capture_output=True, text=True,
                         env=dict(os.environ, DEMOTRACE_HOME=str(dt_home)), timeout=120)
    assert bad.returncode == 1 and "events.jsonl: missing" in bad.stderr.replace("\n", "")


def test_scale_must_be_finite(tmp_path: Path, spool: Spool, dt_home: Path):
    from demotrace.errors import ConfigError

    folder = tmp_path / "f"
    _write_folder(folder, [{"time_stamp": 1.0, "action": "press", "name": "a"}])
    for bad in (float("nan"), float("inf"), 0.0):
        with pytest.raises(ConfigError, match="scale must be a finite number > 0"):
            import_ducktrack(folder, spool, config=DuckTrackConfig(scale=bad, video=False))
    assert spool.session_ids() == []
    exe = Path(sys.executable).with_name("demotrace")
    for arg in ("nan", "inf"):
        res = subprocess.run([str(exe), "import", str(folder), "--scale", arg], check=False, capture_output=True, text=True,
                             env=dict(os.environ, DEMOTRACE_HOME=str(dt_home)), timeout=120)
        assert res.returncode == 1 and "Traceback" not in res.stderr
        assert f"error: --scale must be a finite number > 0, got {arg}" in res.stderr
    assert not (dt_home / "spool").is_dir() or not any((dt_home / "spool").iterdir())


def test_huge_numbers_are_bad_lines_not_overflow(tmp_path: Path, spool: Spool):
    folder = tmp_path / "huge"
    _write_folder(folder, [
        {"time_stamp": 1.0, "action": "move", "x": 1, "y": 1},
        '{"time_stamp": 1e308, "action":"move","x":1e308,"y":-1e308}',
        {"time_stamp": 1.5, "action": "move", "x": 2, "y": 2},
        # x fits, but x × scale 2 overflows to inf
        {"time_stamp": 1.6, "action": "click", "x": 1e308, "y": 1, "button": "left", "pressed": True},
    ])
    with pytest.raises(MalformedInputError, match=r"huge/events\.jsonl: line 2: time_stamp 1e\+308 is out of range"):
        import_ducktrack(folder, spool, config=DuckTrackConfig(video=False))
    assert spool.session_ids() == []
    res = import_ducktrack(folder, spool, config=DuckTrackConfig(video=False, skip_bad_lines=True, scale=2.0))
    # lines 2 and 4 skipped; lines 1 and 3 kept + session_start, screen_config, session_stop
    assert res.skipped == 2 and res.events == 2 + 3
    assert res.skipped_lines[0].startswith("events.jsonl line 2: time_stamp 1e+308 is out of range")
    assert res.skipped_lines[1].startswith("events.jsonl line 4: field 'x' = 1e+308 is out of range")
    with spool.open(res.session_id) as reader:
        moves = [(e.t_ns, e.x, e.y) for e in reader.iter_events() if type(e).__name__ == "PointerMove"]
    assert moves == [(0, 2.0, 2.0), (500_000_000, 4.0, 4.0)]


def test_binary_junk_names_line_1(tmp_path: Path, spool: Spool):
    folder = tmp_path / "junk"
    _write_folder(folder, [])
    # three lines (split at \n; \x1a is not whitespace, so none is blank)
    (folder / "events.jsonl").write_bytes(b"\x00\xff\xfe\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xd8\xff")
    with pytest.raises(MalformedInputError, match=r"junk/events\.jsonl: line 1: not valid JSON text"):
        import_ducktrack(folder, spool, config=DuckTrackConfig(video=False))
    with pytest.raises(MalformedInputError,
                       match=r"no valid events: all 3 non-empty line\(s\) are bad \(first: events\.jsonl line 1: not valid JSON text"):
        import_ducktrack(folder, spool, config=DuckTrackConfig(video=False, skip_bad_lines=True))
    assert spool.session_ids() == []


def test_backward_timestamps_are_kept_and_counted(tmp_path: Path, dt_home: Path):
    folder = tmp_path / "back"
    _write_folder(folder, [
        {"time_stamp": 10.0, "action": "press", "name": "a"},
        {"time_stamp": 10.1, "action": "release", "name": "a"},
        {"time_stamp": 4.0, "action": "press", "name": "b"},     # jumps back 6.1 s
        {"time_stamp": 4.1, "action": "release", "name": "b"},
        {"time_stamp": 3.0, "action": "press", "name": "c"},     # back again
        {"time_stamp": 3.1, "action": "release", "name": "c"},
    ])
    exe = Path(sys.executable).with_name("demotrace")
    out = subprocess.run([str(exe), "import", str(folder)], check=False, capture_output=True, text=True,
                         env=dict(os.environ, DEMOTRACE_HOME=str(dt_home), COLUMNS="200"), timeout=120)
    assert out.returncode == 0, out.stderr
    assert "imported 9 events, 0 frames (scale 1), 2 time_stamp(s) earlier than the line before (kept as recorded)" \
        in out.stderr
    sid = out.stdout.strip().splitlines()[-1]
    spool = Spool(dt_home / "spool", DataKey.load(dt_home / "key"))
    with spool.open(sid) as reader:
        assert reader.manifest.extra["backward_timestamps"] == "2"
        keys = [(e.t_ns, e.key) for e in reader.iter_events() if type(e).__name__ == "KeyDown"]
    assert keys == [(0, "a"), (-6 * S, "b"), (-7 * S, "c")]
