"""Observation alignment and episode segmentation, expected values worked out by hand."""

from __future__ import annotations

from pathlib import Path

from demotrace.build import BuildSettings, episodes_from_events, episodes_from_session
from demotrace.schema import (Element, FocusChange, Frame, KeyDown, KeyUp, Marker, PointerDown, PointerUp, Rect,
                              SessionManifest)
from demotrace.spool import DataKey, Spool

MS = 1_000_000
S = 1_000_000_000


class Rec:
    def __init__(self) -> None:
        self.events: list = []

    def add(self, cls, t_ms, **kw):
        self.events.append(cls(seq=len(self.events), t_ns=int(t_ms * MS), **kw))

    def click(self, t, x=10.0, y=10.0):
        self.add(PointerDown, t, x=x, y=y, button="left")
        self.add(PointerUp, t + 50, x=x, y=y, button="left")

    def frame(self, written_ms, captured_ms, blob):
        self.add(Frame, written_ms, blob=blob, monitor=-1, bounds=Rect(0, 0, 1280, 800), width=1280,
                 height=800, scale=1.0, captured_t_ns=int(captured_ms * MS), reason="test", format="png")

    def marker(self, t, name, **kw):
        self.add(Marker, t, name=name, **kw)


def test_observation_is_newest_frame_strictly_before_action_even_if_written_late():
    r = Rec()
    r.frame(150, 100, "f100")
    r.frame(1010, 1000, "f1000")       # captured exactly at the press: not "before" it
    r.click(1000)
    r.frame(1120, 1100, "f1100")       # after the press
    r.frame(1500, 900, "f900")         # captured before the press, written 500 ms late
    (ep,) = episodes_from_events(r.events, "s")
    click, done = ep.steps
    assert click.observation.blob == "f900" and click.observation.gap_ns == 100 * MS
    assert click.observation.captured_t_ns == 900 * MS
    # terminal step at the session end (t of the last event, 1500 ms): newest frame before it
    assert done.action.type == "done" and done.observation.blob == "f1100"


def test_no_frame_before_action_is_flagged_not_filled_with_a_later_one():
    r = Rec()
    r.click(100)
    r.frame(300, 200, "later")
    (ep,) = episodes_from_events(r.events, "s")
    assert ep.steps[0].observation is None and ep.steps[0].flags == ("no_observation",)


def test_task_markers_make_an_episode_with_instruction_and_status():
    r = Rec()
    r.click(0)                                           # before the task: its own episode
    r.marker(1000, "task_start", instruction="Rename the file")
    r.click(2000)
    r.click(3000, x=200)
    r.marker(4000, "task_end", status="success")
    r.marker(5000, "task_start", instruction="Close the window")
    r.click(6000)
    r.marker(7000, "task_end", status="abandoned")
    eps = list(episodes_from_events(r.events, "sess"))
    assert [e.episode_id for e in eps] == ["sess-0", "sess-1", "sess-2"]
    assert [(e.instruction, e.status, e.segmented_by) for e in eps] == [
        (None, "unknown", "task_marker"),
        ("Rename the file", "success", "task_marker"),
        ("Close the window", "abandoned", "task_marker"),
    ]
    assert [s.action.type for s in eps[1].steps] == ["click", "click", "done"]
    assert [s.index for s in eps[1].steps] == [0, 1, 2]
    assert eps[1].t_start_ns == 1000 * MS and eps[1].t_end_ns == 4000 * MS
    assert eps[1].steps[-1].action.source_seqs == (7,)   # the task_end marker
    assert [s.action.type for s in eps[2].steps] == ["click", "fail"]
    assert eps[0].steps[-1].action.flags == ("status_unknown",)


def test_segmentation_without_markers_idle_gap_pause_private_gap_session_end():
    r = Rec()
    r.click(0)
    r.click(200_000)                                     # 200 s idle > 120 s → new episode
    r.marker(201_000, "pause")
    r.marker(230_000, "resume")
    r.click(231_000)
    r.marker(232_000, "private_gap", reason="excluded app", duration_ns=5 * S)
    r.click(240_000)
    eps = list(episodes_from_events(r.events, "x"))
    assert [(e.segmented_by, e.status, e.instruction, len(e.steps)) for e in eps] == [
        ("idle_gap", "unknown", None, 2), ("pause", "unknown", None, 2),
        ("private_gap", "unknown", None, 2), ("session_end", "unknown", None, 2)]
    assert eps[0].steps[-1].action.t_start_ns == 200_000 * MS
    assert all(e.steps[-1].action.type == "done" for e in eps)


def test_pause_inside_task_does_not_split_it():
    r = Rec()
    r.marker(0, "task_start", instruction="t")
    r.click(100)
    r.marker(200, "pause")
    r.marker(300, "resume")
    r.click(400)
    r.marker(500, "task_end", status="failure")
    (ep,) = list(episodes_from_events(r.events, "x"))
    assert [s.action.type for s in ep.steps] == ["click", "click", "fail"]


def test_episodes_from_a_real_encrypted_spool_session(tmp_path: Path):
    key = DataKey.create(tmp_path / "key")
    spool = Spool(tmp_path / "spool", key)
    m = SessionManifest(session_id="20261130T000000Z-abcdef", started_utc="2026-11-30T00:00:00Z",
                        timezone="UTC", platform="linux-x11", backend="test", recorder_version="0")
    w = spool.create(m)
    r = Rec()
    r.frame(60, 50, "ab" * 16)
    r.marker(80, "task_start", instruction="Click OK")
    r.click(100, x=640, y=400)
    r.marker(300, "task_end", status="success")
    w.append(r.events)
    w.close()
    with spool.open(m.session_id) as reader:
        (ep,) = list(episodes_from_session(reader, BuildSettings()))
    assert ep.episode_id == "20261130T000000Z-abcdef-0" and ep.instruction == "Click OK"
    click = ep.steps[0]
    assert (click.action.type, click.action.x, click.action.y) == ("click", 640, 400)
    assert click.observation.blob == "ab" * 16 and click.observation.gap_ns == 50 * MS


# -- end to end: a real `demotrace record` session (Xvfb, X11 backend, xdotool, a Tk app) -------

import io
import signal
import subprocess
import sys
import time

APP = Path(__file__).resolve().parent / "apps" / "rec_colour_app.py"
DEMOTRACE = str(Path(sys.executable).parent / "demotrace")


def test_episode_from_a_real_recording_observation_before_the_click(xvfb, dt_home: Path):
    """The Tk app's button is green until clicked, then red: the click's observation must show
    green (taken before the press), the typing's red; the task markers make the episode."""
    from PIL import Image

    from demotrace.errors import ControlError
    from demotrace.paths import Paths
    from demotrace.recorder.control import call

    env = dict(xvfb.env, COLUMNS="200", DEMOTRACE_HOME=str(dt_home))
    app = subprocess.Popen([sys.executable, str(APP), "Form", "100", "100"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert app.stdout.readline().strip() == "READY"
    rec = None
    try:
        subprocess.run([DEMOTRACE, "enroll", "--yes"], env=env, check=True, capture_output=True, timeout=60)
        rec = subprocess.Popen([DEMOTRACE, "record", "--no-indicator"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while True:
            assert rec.poll() is None, rec.communicate()
            try:
                if call(Paths(dt_home).control_socket, "status", timeout=2).get("state") == "recording":
                    break
            except ControlError:
                pass
            assert time.monotonic() < deadline, "recorder did not start"
            time.sleep(0.05)
        subprocess.run([DEMOTRACE, "task", "start", "Press the green button, then type hi"], env=env,
                       check=True, capture_output=True, timeout=60)
        subprocess.run(["xdotool", "mousemove", "250", "150"], env=env, check=True, timeout=30)
        time.sleep(0.4)
        subprocess.run(["xdotool", "click", "1"], env=env, check=True, timeout=30)
        assert app.stdout.readline().strip() == "CLICKED"
        time.sleep(0.4)
        subprocess.run(["xdotool", "type", "--delay", "60", "hi"], env=env, check=True, timeout=30)
        time.sleep(0.6)
        subprocess.run([DEMOTRACE, "task", "end", "--status", "success"], env=env, check=True,
                       capture_output=True, timeout=60)
        rec.send_signal(signal.SIGINT)
        out, err = rec.communicate(timeout=60)
        assert rec.returncode == 0, err
    finally:
        if rec is not None and rec.poll() is None:
            rec.kill()
        app.kill()
        app.communicate()
    spool = Spool(dt_home / "spool", DataKey.load(dt_home / "key"))
    (sid,) = spool.session_ids()
    with spool.open(sid) as reader:
        eps = list(episodes_from_session(reader))
        task = [e for e in eps if e.instruction is not None]
        assert len(task) == 1, [(e.instruction, [s.action.type for s in e.steps]) for e in eps]
        ep = task[0]
        assert ep.status == "success" and ep.segmented_by == "task_marker"
        assert [s.action.type for s in ep.steps] == ["click", "type", "done"]
        click, typed, _done = ep.steps
        assert (click.action.x, click.action.y, click.action.count) == (250, 150, 1)
        assert typed.action.text == "hi"
        assert click.action.context.app_id == "Dtrecapp"

        def pixel(obs, x, y):
            img = Image.open(io.BytesIO(reader.read_blob(obs.blob))).convert("RGB")
            sx, sy = img.width / obs.bounds.width, img.height / obs.bounds.height
            return img.getpixel((int((x - obs.bounds.x) * sx), int((y - obs.bounds.y) * sy)))

        for step in (click, typed):
            o = step.observation
            assert o is not None and o.captured_t_ns < step.action.t_start_ns
            assert o.gap_ns == step.action.t_start_ns - o.captured_t_ns
        g = pixel(click.observation, 250, 130)
        assert g[1] > 150 and g[0] < 60, f"observation before the click is not green: {g}"
        r = pixel(typed.observation, 250, 130)
        assert r[0] > 150 and r[1] < 60, f"observation before typing is not red: {r}"


def _typed(r, t, text):
    for i, ch in enumerate(text):
        code = f"Key{ch.upper()}"
        r.add(KeyDown, t + 20 * i, key=ch, code=code, text=ch)
        r.add(KeyUp, t + 20 * i + 10, key=ch, code=code, text=ch)


def _steps(r):
    (ep,) = episodes_from_events(sorted(r.events, key=lambda e: e.t_ns), "s")
    return [s.action for s in ep.steps if s.action.type != "done"]


def test_target_element_must_belong_to_the_focused_windows_process():
    """Bug bash (GTK run): `type 'ZZtail99'` typed into XTerm carried the GTK app's AT-SPI
    ``text`` element (pid 1363) as target: the newest element when the run closed, 0.5 s old.
    With both pids known, the element's ``attributes["pid"]`` must equal the focus pid."""
    r = Rec()
    gtk_box = Rect(100, 100, 200, 30)
    r.add(FocusChange, 0, window_id=11, app_id="Gform.py", title="form", pid=1363)
    r.add(Element, 100, role="text", name="Name", bounds=gtk_box, source="atspi", attributes={"pid": "1363"})
    _typed(r, 150, "ab")                                          # into the GTK entry: its element
    r.add(FocusChange, 500, window_id=22, app_id="XTerm", title="bash", pid=2000)
    _typed(r, 600, "zz")                                          # into XTerm (no AT-SPI there)
    r.add(FocusChange, 900, window_id=11, app_id="Gform.py", title="form", pid=1363)  # closes the run
    acts = _steps(r)
    assert [(a.type, a.text) for a in acts] == [("type", "ab"), ("type", "zz")]
    assert acts[0].target is not None and acts[0].target.name == "Name" and acts[0].target.bounds == gtk_box
    assert acts[1].target is None                                 # GTK pid 1363 != XTerm pid 2000


def test_target_element_without_pid_must_arrive_after_focus_moved():
    """A pid unknown on either side: the element must have arrived at or after focus last moved
    to another window (less 0.3 s: a click's DOM element carries the click's time, the window
    manager's focus follows it); a title change of the same window is no move, nor is a
    focus_change without window id (the browser extension's tab switch / navigation)."""
    r = Rec()
    r.add(FocusChange, 0, window_id=22, app_id="XTerm", title="bash", pid=2000)
    # 0.4 s before the focus move: more than the 0.3 s a click's element may precede it
    r.add(Element, 100, role="text", name="before", bounds=Rect(0, 0, 50, 50), source="atspi")
    r.add(FocusChange, 500, window_id=33, app_id="Other", title="t1", pid=None)
    _typed(r, 600, "q")                                           # element predates the focus move
    r.add(FocusChange, 900, window_id=33, app_id="Other", title="t2", pid=None)  # title only: closes the run
    r.add(Element, 1000, role="push button", name="OK", bounds=Rect(400, 400, 80, 30), source="atspi")
    r.add(FocusChange, 1100, window_id=33, app_id="Other", title="t3", pid=None)  # title only
    r.add(FocusChange, 1150, url="https://example.org/b", title="b", pid=None)  # extension: same window
    r.click(1200, x=420.0, y=410.0)                               # arrived after the move at 500 ms
    # a click into a browser window: its DOM element (click time 2000) precedes the WM's focus
    # change (2050) by less than 0.3 s
    r.add(Element, 2000, role="link", name="Reports", bounds=Rect(600, 100, 80, 20), source="dom")
    r.add(FocusChange, 2050, window_id=44, app_id="Chromium", title="Shop", pid=None)
    r.click(2000, x=610.0, y=105.0)
    acts = _steps(r)
    assert [(a.type, a.text) for a in acts] == [("type", "q"), ("click", None), ("click", None)]
    assert acts[0].target is None
    assert acts[1].target is not None and acts[1].target.name == "OK"
    assert acts[2].target is not None and acts[2].target.name == "Reports"
