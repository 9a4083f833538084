"""The main job end to end, as CI runs it: ``demotrace demo`` once (its own Xvfb, real Tk
editor / xterm / Tk sign-in form driven by xdotool, recorder, seal, collector upload, build,
exports, replay), then independent checks of what it left.

Expected values come from the driven script, worked out by hand (not from the code's output):
one episode; the steps click (editor), type "Ship the demo on Monday.", hotkey Ctrl+S, click
(xterm), type "echo demo-ok", press Enter, click (form name), type "Ada Example", press Tab,
type the password (redacted), click (Sign in), done → 12 steps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

DEMOTRACE = str(Path(sys.executable).parent / "demotrace")
INSTRUCTION = "Write a meeting note, run echo in a terminal, and sign in to the form"
PASSWORD = "Tq7mRv2KxW9pLz4NcB8hJs3Fd6Yg"
# requested window geometries (x, y, w, h) from the apps / the demo's xterm command line; a WM
# frame adds at most a few dozen pixels of decoration
EDITOR = (20, 20, 620, 360)
FORM = (760, 420, 420, 220)
EXPECTED = [
    ("click", None), ("type", "Ship the demo on Monday."), ("hotkey", None),
    ("click", None), ("type", "echo demo-ok"), ("key", None),
    ("click", None), ("type", "Ada Example"), ("key", None),
    # the password typed after Tab is no step at all: its field is inferred secret at seal time
    ("click", None), ("done", None),
]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo-output"
    env = dict(os.environ, COLUMNS="200")
    env.pop("DEMOTRACE_HOME", None)
    proc = subprocess.run([DEMOTRACE, "demo", "--out", str(out)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return out


def _rows(out: Path) -> list[dict[str, Any]]:
    rows = pq.read_table(out / "dataset" / "data").to_pylist()
    return sorted(rows, key=lambda r: r["step_index"])


def _inside(x: float, y: float, box: tuple[int, int, int, int], slack: int = 40) -> bool:
    bx, by, bw, bh = box
    return bx <= x <= bx + bw + slack and by <= y <= by + bh + slack


def test_dataset_is_the_driven_task(demo: Path) -> None:
    rows = _rows(demo)
    assert {r["episode_id"] for r in rows} == {rows[0]["episode_id"]}  # one episode
    assert len(rows) == len(EXPECTED)
    types = [r["action"]["type"] for r in rows]
    assert types == [t for t, _ in EXPECTED], types
    for r, (_t, text) in zip(rows, EXPECTED):
        if text is not None:
            assert r["action"]["text"] == text
    assert rows[2]["action"]["keys"] == ["ctrl", "s"]
    assert rows[5]["action"]["keys"] == ["enter"] and rows[8]["action"]["keys"] == ["tab"]
    assert all(r["instruction"] == INSTRUCTION for r in rows)
    assert rows[-1]["episode_status"] == "success"
    # clicks land in the window they were aimed at, and the step says which app it was
    x, y = rows[0]["action"]["x"], rows[0]["action"]["y"]
    assert _inside(x, y, EDITOR) and rows[0]["context"]["app_id"].lower() == "demoeditor"
    assert rows[3]["context"]["app_id"] == "XTerm" and rows[3]["context"]["title"] == "Terminal - demotrace demo"
    for i in (6, 9):
        assert _inside(rows[i]["action"]["x"], rows[i]["action"]["y"], FORM)
        assert rows[i]["context"]["app_id"].lower() == "demoform"
    # every step's observation was captured before its action started
    for r in rows[:-1]:
        assert r["observation"] is not None and r["image"] is not None, r["step_index"]
        assert r["observation"]["captured_t_ns"] < r["t_start_ns"], r["step_index"]


def test_the_apps_received_the_input(demo: Path) -> None:
    assert (demo / "app-files" / "notes.txt").read_text() == "Ship the demo on Monday."
    assert json.loads((demo / "app-files" / "form.json").read_text()) == {
        "name": "Ada Example", "password_length": len(PASSWORD)}


def test_password_is_in_no_output_file(demo: Path) -> None:
    needles = [PASSWORD.encode(), PASSWORD.encode("utf-16-le"), PASSWORD[:12].encode()]
    files = [p for p in demo.rglob("*") if p.is_file()]
    assert len(files) > 20
    for p in files:
        data = p.read_bytes()
        assert not any(n in data for n in needles), p
    # the Parquet dataset decoded (its pages may be compressed)
    assert PASSWORD not in json.dumps(_rows(demo), default=repr)
    # the sealed bundle decrypted: every event and every blob
    from demotrace.paths import Paths
    from demotrace.privacy.bundle import bundle_ids, open_bundle
    from demotrace.schema.events import event_to_json

    paths = Paths.from_env(str(demo / "home"))
    ids = bundle_ids(paths)
    assert len(ids) == 1
    with open_bundle(paths, ids[0]) as b:
        events = list(b.iter_events())
        assert events
        for ev in events:
            assert PASSWORD.encode() not in event_to_json(ev)
        for bid in b.blob_ids():
            assert PASSWORD.encode() not in b.read_blob(bid)
        report = b.report
    # the form's visible "Password" label marks the field secret (privacy/field_labels.py):
    # each of its characters' presses is dropped as such (plus the Shift presses xdotool adds)
    assert report["secret_keys_dropped"].get("secret_field_inferred", 0) >= len(PASSWORD), report


def test_exports_load(demo: Path) -> None:
    rows = _rows(demo)
    tasks = [json.loads(ln) for ln in (demo / "export" / "agentnet" / "agentnet.jsonl").read_text().splitlines()]
    assert len(tasks) == 1
    task = tasks[0]
    assert {"task_id", "instruction", "traj"} <= task.keys()
    assert task["instruction"] == INSTRUCTION and len(task["traj"]) == len(EXPECTED)
    for st in task["traj"]:
        assert {"index", "image", "value"} <= st.keys() and "code" in st["value"]
        assert (demo / "export" / "agentnet" / "images" / st["image"]).is_file()
    assert task["traj"][1]["value"]["code"] == "pyautogui.write('Ship the demo on Monday.')"
    assert task["traj"][-1]["value"]["code"] == "computer.terminate(status='success')"
    samples = [json.loads(ln) for ln in (demo / "export" / "sft-chat" / "sft.jsonl").read_text().splitlines()]
    assert len(samples) == len(EXPECTED)
    for s in samples:
        assert {"id", "messages", "images"} <= s.keys()
        assert [m["role"] for m in s["messages"]] == ["system", "user", "assistant"]
        assert INSTRUCTION in s["messages"][1]["content"]
        assert all((demo / "export" / "sft-chat" / i).is_file() for i in s["images"])
    assert samples[4]["messages"][2]["content"] == "pyautogui.write('echo demo-ok')"
    assert rows[0]["episode_id"] in task["task_id"]


def test_replay_page_and_summary(demo: Path) -> None:
    eid = _rows(demo)[0]["episode_id"]
    page = (demo / "replay.html").read_text()
    assert eid in page and INSTRUCTION in page
    assert page.count('class="step"') == len(EXPECTED)
    summary = json.loads((demo / "demo-summary.json").read_text())
    assert summary["episode_id"] == eid and Path(summary["replay"]) == demo / "replay.html"
    # the collector on SQLite holds the uploaded bundle
    import sqlite3

    db = sqlite3.connect(demo / "collector" / "collector.db")
    try:
        assert db.execute("select count(*) from bundles").fetchone()[0] == 1
    finally:
        db.close()


def test_errors_name_the_fix(tmp_path: Path) -> None:
    """A new user's first stumbles get the fix in the message: recording with no display
    points at the desktop session and `demotrace demo`; an unwritable demo folder at --out."""
    env = dict(os.environ, DEMOTRACE_HOME=str(tmp_path / "home"), COLUMNS="300")
    env.pop("DISPLAY", None)
    subprocess.run([DEMOTRACE, "enroll", "--yes"], env=env, capture_output=True, check=True, timeout=60)
    rec = subprocess.run([DEMOTRACE, "record", "--duration", "1"], env=env, capture_output=True, text=True, timeout=60)
    err = " ".join(rec.stderr.split())
    assert rec.returncode == 1 and "DISPLAY" in err and "demotrace demo" in err, rec.stderr
    blocker = tmp_path / "file"
    blocker.write_text("x")
    demo = subprocess.run([DEMOTRACE, "demo", "--out", str(blocker / "out")], env=env, capture_output=True,
                          text=True, timeout=60)
    err = " ".join(demo.stderr.split())
    assert demo.returncode == 1 and "--out" in err and "Traceback" not in err, demo.stderr
