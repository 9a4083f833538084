"""The canonical ``pyautogui`` column runs as-is on the recorded screen, with real pyautogui on
a real X server, even when the stored frame is downscaled.

Screen: the 1280x800 Xvfb of the ``xvfb`` fixture; the frame is stored at 320x200 (the
recorder's ``--frame-scale 0.25``). The Tk test app's window is at (300, 100), its red button
at (10, 10) inside it, 120x40 (tests/apps/tkapp.py) → root (310, 110, 120, 40), centre
(370, 130). By hand: the column must say ``pyautogui.click(x=370, y=130)`` (screen pixels);
the image pixels (92.5, 32.5) would miss the button. OSWorld's CLICK has the same numbers.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
from helpers_x11 import read_line, tk_app
from PIL import Image

from demotrace.export import get_exporter, write_dataset
from demotrace.schema import Action, Episode, Observation, Rect, Step

EID = "20261130T031500Z-0e0e0e-0"


def test_canonical_code_clicks_the_recorded_button(xvfb, tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (320, 200), (200, 30, 30)).save(buf, format="PNG")
    obs = Observation(blob="f", format="png", bounds=Rect(0, 0, 1280, 800), width=320, height=200,
                      captured_t_ns=0, gap_ns=100)
    steps = [Step(index=0, observation=obs, action=Action(type="click", t_start_ns=100, t_end_ns=150,
                                                          x=370, y=130, button="left", count=1)),
             Step(index=1, observation=obs, action=Action(type="done", t_start_ns=200, t_end_ns=200))]
    episode = Episode(episode_id=EID, session_id=EID[:-2], index=0, instruction="Press the red button",
                      status="success", segmented_by="task_marker", t_start_ns=0, t_end_ns=200,
                      steps=steps, screen=Rect(0, 0, 1280, 800))
    ds = tmp_path / "ds"
    write_dataset(ds, [(episode, {"f": buf.getvalue()}.__getitem__)])
    code = pq.read_table(ds / "data", columns=["pyautogui"]).column("pyautogui").to_pylist()[0]
    assert code == "pyautogui.click(x=370, y=130)"

    get_exporter("osworld").run(ds, tmp_path / "ow")
    first = json.loads((tmp_path / "ow" / EID / "traj.jsonl").read_text().splitlines()[0])
    assert first["action"] == {"action_type": "CLICK", "parameters": {"button": "left", "x": 370, "y": 130,
                                                                      "num_clicks": 1}}

    with tk_app(xvfb.env, "Exec target", 300, 100) as app:
        assert app.info["widgets"]["button"] == [310, 110, 120, 40]
        (tmp_path / "xauth").write_bytes(b"")  # python-xlib wants an Xauthority file; Xvfb has no auth
        env = dict(xvfb.env, XAUTHORITY=str(tmp_path / "xauth"))
        run = subprocess.run([sys.executable, "-c", "import pyautogui\npyautogui.FAILSAFE = False\n" + code],
                             env=env, capture_output=True, text=True, timeout=60, check=False)
        assert run.returncode == 0, run.stderr
        read_line(app.proc, "CLICKED")
