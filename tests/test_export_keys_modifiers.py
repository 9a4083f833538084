"""Held modifiers, auto-repeat counts, empty typing and screen-pixel coordinates through the
canonical dataset and every trainer format.

One episode on a 1280x800 screen at (0, 0) whose only frame is stored downscaled to 64x40
(scale 1/20), so image pixels, screen pixels and 0–1 coordinates all differ. Expected values by
hand:

- step 0: Ctrl-click at (256, 200): screen pixels (256, 200); 0–1 (256/1280, 200/800) =
  (0.2, 0.25); image pixels would be (12.8, 10) — must not appear.
- step 1: Ctrl+wheel 2 ticks down at (640, 400) (zoom out): 0–1 (0.5, 0.5).
- step 2: Backspace auto-repeated: 3 presses.
- step 3: Ctrl+Z with Z auto-repeated: 4 presses while Ctrl is held.
- step 4: typing edited away to nothing (text "", flag empty_text).
- step 5: Ctrl+C once; step 6: done.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from demotrace.export import get_exporter, write_dataset
from demotrace.export.pyautogui import validate_code
from demotrace.schema import Action, Episode, Observation, Rect, Step

MS = 1_000_000
SCREEN = Rect(0, 0, 1280, 800)
EID = "20261130T030000Z-0c0ffe-0"


def _png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (30, 60, 90)).save(buf, format="PNG")
    return buf.getvalue()


FRAME = _png((64, 40))


def _episode() -> Episode:
    def act(i: int, **kw: object) -> Action:
        return Action(t_start_ns=(i + 1) * 100 * MS, t_end_ns=(i + 1) * 100 * MS + 50 * MS, **kw)  # type: ignore[arg-type]

    actions = [
        act(0, type="click", x=256, y=200, button="left", count=1, keys=("ctrl",)),
        act(1, type="scroll", x=640, y=400, dx=0, dy=-2, unit="tick", keys=("ctrl",)),
        act(2, type="key", keys=("backspace",), count=3, flags=("auto_repeat",)),
        act(3, type="hotkey", keys=("ctrl", "z"), count=4, flags=("auto_repeat",)),
        act(4, type="type", text="", keys=("a", "Backspace"), flags=("empty_text",)),
        act(5, type="hotkey", keys=("ctrl", "c"), count=1),
        act(6, type="done"),
    ]
    steps = [Step(index=i, action=a, observation=Observation(
        blob="f0", format="png", bounds=SCREEN, width=64, height=40, captured_t_ns=0,
        gap_ns=a.t_start_ns)) for i, a in enumerate(actions)]
    return Episode(episode_id=EID, session_id=EID[:-2], index=0, instruction="Zoom and undo",
                   status="success", segmented_by="task_marker", t_start_ns=0,
                   t_end_ns=actions[-1].t_end_ns, steps=steps, screen=SCREEN)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ds = tmp_path_factory.mktemp("mods") / "ds"
    write_dataset(ds, [(_episode(), {"f0": FRAME}.__getitem__)])
    return ds


def test_canonical_code_is_screen_pixels_with_modifiers_and_counts(dataset: Path) -> None:
    rows = pq.read_table(dataset / "data").to_pylist()
    code = [r["pyautogui"] for r in rows]
    assert code == [
        "pyautogui.keyDown('ctrl')\npyautogui.click(x=256, y=200)\npyautogui.keyUp('ctrl')",
        "pyautogui.keyDown('ctrl')\npyautogui.scroll(-2, x=640, y=400)\npyautogui.keyUp('ctrl')",
        "pyautogui.press('backspace', presses=3)",
        "pyautogui.keyDown('ctrl')\npyautogui.press('z', presses=4)\npyautogui.keyUp('ctrl')",
        "pyautogui.write('')",  # kept in the canonical dataset (flag empty_text)
        "pyautogui.hotkey('ctrl', 'c')",
        "computer.terminate(status='success')",
    ]
    assert validate_code(code[0]) == ["pyautogui.keyDown", "pyautogui.click", "pyautogui.keyUp"]
    assert validate_code(code[3]) == ["pyautogui.keyDown", "pyautogui.press", "pyautogui.keyUp"]
    assert (rows[0]["action"]["x_norm"], rows[0]["action"]["y_norm"]) == (0.2, 0.25)
    assert rows[4]["flags"] == ["empty_text"]


def test_agentnet(dataset: Path, tmp_path: Path) -> None:
    s = get_exporter("agentnet").run(dataset, tmp_path / "an")
    task = json.loads((tmp_path / "an" / "agentnet.jsonl").read_text())
    codes = [st["value"]["code"] for st in task["traj"]]
    assert codes == [
        "pyautogui.keyDown('ctrl')\npyautogui.click(x=0.2000, y=0.2500)\npyautogui.keyUp('ctrl')",
        "pyautogui.keyDown('ctrl')\npyautogui.scroll(-2, x=0.5000, y=0.5000)\npyautogui.keyUp('ctrl')",
        "pyautogui.press('backspace', presses=3)",
        "pyautogui.keyDown('ctrl')\npyautogui.press('z', presses=4)\npyautogui.keyUp('ctrl')",
        "pyautogui.hotkey('ctrl', 'c')",
        "computer.terminate(status='success')",
    ]
    assert [st["index"] for st in task["traj"]] == [0, 1, 2, 3, 4, 5]
    assert task["traj"][0]["value"]["action"] == "Click at (256, 200) while holding ctrl"
    assert task["traj"][2]["value"]["action"] == "Press backspace 3 times"
    assert s.lossy_count("empty_text_dropped") == 1
    assert s.lossy["empty_text_dropped"]["examples"][0]["step_index"] == 4


def test_osworld(dataset: Path, tmp_path: Path) -> None:
    s = get_exporter("osworld").run(dataset, tmp_path / "ow")
    lines = [json.loads(x) for x in (tmp_path / "ow" / EID / "traj.jsonl").read_text().splitlines()]

    def a(kind: str, **p: object) -> dict:
        return {"action_type": kind, "parameters": p}

    assert [ln["action"] for ln in lines] == [
        a("KEY_DOWN", key="ctrl"), a("CLICK", button="left", x=256, y=200, num_clicks=1), a("KEY_UP", key="ctrl"),
        a("KEY_DOWN", key="ctrl"), a("MOVE_TO", x=640, y=400), a("SCROLL", dx=0, dy=-2), a("KEY_UP", key="ctrl"),
        a("PRESS", key="backspace"), a("PRESS", key="backspace"), a("PRESS", key="backspace"),
        a("KEY_DOWN", key="ctrl"), a("PRESS", key="z"), a("PRESS", key="z"), a("PRESS", key="z"),
        a("PRESS", key="z"), a("KEY_UP", key="ctrl"),
        a("HOTKEY", keys=["ctrl", "c"]),
        {"action_type": "DONE"},
    ]
    # step_num counts exported steps: the dropped empty typing leaves no gap
    assert [ln["step_num"] for ln in lines] == [1] * 3 + [2] * 4 + [3] * 3 + [4] * 6 + [5, 6]
    # the 64x40 frame is written at the screen's 1280x800, where the pixels above are
    with Image.open(tmp_path / "ow" / EID / "initial_state.png") as im:
        assert im.size == (1280, 800)
    assert s.lossy_count("empty_text_dropped") == 1


def test_uitars_never_plain_clicks(dataset: Path, tmp_path: Path) -> None:
    s = get_exporter("sft-chat").run(dataset, tmp_path / "ui", action_format="uitars", coords="norm1000")
    samples = [json.loads(x) for x in (tmp_path / "ui" / "sft.jsonl").read_text().splitlines()]
    answers = [sm["messages"][2]["content"] for sm in samples]
    # Ctrl-click and Ctrl+wheel cannot be said in UI-TARS: no sample (not a plain click)
    assert answers == ["Action: hotkey(key='backspace')", "Action: hotkey(key='ctrl z')",
                       "Action: hotkey(key='ctrl c')", "Action: finished()"]
    assert s.lossy_count("modifiers_unsupported") == 2
    assert s.lossy_count("key_count_dropped") == 2
    assert s.lossy_count("empty_text_dropped") == 1
    # the skipped Ctrl-click is in the history, with its modifier
    assert "Step 1: Click at (256, 200) while holding ctrl" in samples[0]["messages"][1]["content"]


def test_sft_pyautogui_image_pixels(dataset: Path, tmp_path: Path) -> None:
    """sft-chat --coords pixels stays in pixels of the image the model is shown (64x40):
    (256, 200) * 64 / 1280 = (12.8, 10) -> (13, 10)."""
    get_exporter("sft-chat").run(dataset, tmp_path / "px", coords="pixels")
    first = json.loads((tmp_path / "px" / "sft.jsonl").read_text().splitlines()[0])
    assert first["messages"][2]["content"] == (
        "pyautogui.keyDown('ctrl')\npyautogui.click(x=13, y=10)\npyautogui.keyUp('ctrl')")


def test_mind2web_leaves_out_modifier_clicks_and_empty_typing(tmp_path: Path) -> None:
    """Web steps with DOM targets: click "Home", Ctrl-click "Docs" (opens a new tab: no Mind2Web
    operation says that), typing edited away to nothing, typing "bob". By hand: two actions,
    CLICK on Home and TYPE "bob"; one modifier click and one empty typing reported."""
    from demotrace.schema import Target

    page = {"url": "https://shop.example/", "snapshot": "<html><body><a>Home</a></body></html>"}

    def target(tag: str, role: str, name: str, sel: str) -> Target:
        return Target(role=role, name=name, bounds=Rect(10, 10, 80, 20), source="dom", selector=sel,
                      tag=tag, attributes=page)

    home, docs = target("a", "link", "Home", "#home"), target("a", "link", "Docs", "#docs")
    user = target("input", "textbox", "User", "#user")
    acts = [
        Action(type="click", t_start_ns=1, t_end_ns=2, x=50, y=20, button="left", count=1, target=home),
        Action(type="click", t_start_ns=3, t_end_ns=4, x=50, y=20, button="left", count=1, keys=("ctrl",), target=docs),
        Action(type="type", t_start_ns=5, t_end_ns=6, text="", keys=("x", "Backspace"), flags=("empty_text",), target=user),
        Action(type="type", t_start_ns=7, t_end_ns=8, text="bob", keys=("b", "o", "b"), target=user),
        Action(type="done", t_start_ns=9, t_end_ns=9),
    ]
    ep = Episode(episode_id=EID, session_id=EID[:-2], index=0, instruction="Log in", status="success",
                 segmented_by="task_marker", t_start_ns=0, t_end_ns=9, screen=SCREEN,
                 steps=[Step(index=i, action=a, observation=None, flags=("no_observation",)) for i, a in enumerate(acts)])
    write_dataset(tmp_path / "ds", [(ep, {}.__getitem__)])
    s = get_exporter("mind2web").run(tmp_path / "ds", tmp_path / "m2w")
    (task,) = json.loads((tmp_path / "m2w" / "mind2web.json").read_text())
    assert [(a["operation"]["op"], a["operation"]["value"]) for a in task["actions"]] == [("CLICK", ""), ("TYPE", "bob")]
    assert task["action_reprs"] == ["[link]  Home -> CLICK", "[textbox]  User -> TYPE: bob"]
    assert s.lossy_count("modifiers_unsupported") == 1 and s.lossy_count("empty_text_dropped") == 1


def test_replay_labels_show_modifiers_and_counts(dataset: Path) -> None:
    """The replay overlay names the held modifier and the press count (labels by hand)."""
    from demotrace.export import CanonicalDataset
    from demotrace.export.coords import Frame
    from demotrace.replay import overlay

    _, rows = CanonicalDataset(dataset).episode(EID)
    frame = Frame(0, 0, 1280, 800, 64, 40)
    assert ">ctrl+left click<" in overlay(rows[0], frame, 0)
    assert ">⌨ backspace ×3<" in overlay(rows[2], frame, 2)
    assert ">⌨ ctrl+c<" in overlay(rows[5], frame, 5)
