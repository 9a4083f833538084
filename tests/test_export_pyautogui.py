"""pyautogui code generation and its ast validator; coordinate conversions; and a sweep over
every pyautogui code string of every export (they all parse and call only allowed functions)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from export_support import build_dataset, make_fixture

from demotrace.errors import ExportError
from demotrace.export import coords, get_exporter
from demotrace.export.pyautogui import ALLOWED_PYAUTOGUI, action_code, key_name, validate_code


def _norm(frame: coords.Frame):
    return lambda x, y: coords.convert(frame, x, y, "norm1")


SCREEN = coords.Frame(0, 0, 1280, 800, 1280, 800)


@pytest.mark.parametrize("action, expected", [
    ({"type": "click", "x": 640, "y": 400, "button": "left", "count": 1}, "pyautogui.click(x=0.5000, y=0.5000)"),
    ({"type": "click", "x": 0, "y": 0, "button": "left", "count": 3}, "pyautogui.tripleClick(x=0.0000, y=0.0000)"),
    ({"type": "click", "x": 1280, "y": 800, "button": "middle", "count": 1}, "pyautogui.middleClick(x=1.0000, y=1.0000)"),
    ({"type": "click", "x": 320, "y": 200, "button": "right", "count": 2},
     "pyautogui.click(x=0.2500, y=0.2500, clicks=2, button='right')"),
    ({"type": "scroll", "x": 640, "y": 400, "dx": 2, "dy": 1, "unit": "tick"},
     "pyautogui.scroll(1, x=0.5000, y=0.5000)\npyautogui.hscroll(2, x=0.5000, y=0.5000)"),
    ({"type": "key", "keys": ["ArrowLeft"]}, "pyautogui.press('left')"),
    ({"type": "hotkey", "keys": ["ctrl", "c"]}, "pyautogui.hotkey('ctrl', 'c')"),
    ({"type": "key_down", "keys": ["Shift"]}, "pyautogui.keyDown('shift')"),
    ({"type": "mouse_up", "x": 640, "y": 0, "button": "left"}, "pyautogui.mouseUp(x=0.5000, y=0.0000, button='left')"),
    ({"type": "move", "x": 128, "y": 80}, "pyautogui.moveTo(x=0.1000, y=0.1000)"),
    ({"type": "wait", "seconds": 1.5}, "pyautogui.sleep(1.5)"),
    ({"type": "type", "text": "it's \"quoted\"\nnext"}, "pyautogui.write('it\\'s \"quoted\"\\nnext')"),
    ({"type": "fail"}, "computer.terminate(status='failure')"),
])
def test_action_code(action: dict, expected: str) -> None:
    code = action_code(action, _norm(SCREEN)).code
    assert code == expected
    validate_code(code)


def test_typed_text_round_trips_through_the_literal() -> None:
    text = "a'b\"c\\d\n€ 🦆"
    code = action_code({"type": "type", "text": text}, _norm(SCREEN)).code
    call = ast.parse(code).body[0].value
    assert ast.literal_eval(call.args[0]) == text


def test_tiny_scroll_reported_not_dropped() -> None:
    c = action_code({"type": "scroll", "x": 0, "y": 0, "dx": 0, "dy": -0.2, "unit": "tick"}, _norm(SCREEN))
    assert c.code == "pyautogui.scroll(-1, x=0.0000, y=0.0000)"
    assert [k for k, _ in c.lossy] == ["scroll_rounded"]


def test_key_names() -> None:
    assert [key_name(k) for k in ("Enter", "Escape", "F5", "A", "PageDown", " ", "Meta", "é")] == [
        "enter", "esc", "f5", "a", "pagedown", "space", "win", "é"]
    c = action_code({"type": "key", "keys": ["é"]}, _norm(SCREEN))
    assert ("unknown_key", "'é' is not a pyautogui key name") in c.lossy


@pytest.mark.parametrize("code, message", [
    ("import os", "only function calls"),
    ("os.system('rm -rf /')", "os.system is not an allowed call"),
    ("pyautogui.click(x=__import__('os'))", "non-literal argument"),
    ("pyautogui.locateOnScreen('x.png')", "not an allowed call"),
    ("computer.wait()", "computer.wait is not an allowed call"),
    ("x = 1", "only function calls"),
    ("pyautogui.click(**{'x': 1})", "non-literal argument|kwargs"),
    ("pyautogui.click(", "does not parse"),
    ("eval('1')", "must be pyautogui"),
    ("", "empty"),
])
def test_validator_rejects(code: str, message: str) -> None:
    with pytest.raises(ExportError, match=message):
        validate_code(code)


def test_validator_accepts_and_lists_calls() -> None:
    assert validate_code("pyautogui.moveTo(x=1, y=-2)\npyautogui.dragTo(x=3, y=4, button='left')") == [
        "pyautogui.moveTo", "pyautogui.dragTo"]
    assert validate_code("computer.terminate(status='success')") == ["computer.terminate"]
    assert "click" in ALLOWED_PYAUTOGUI and "screenshot" not in ALLOWED_PYAUTOGUI


def test_coordinate_conversions_by_hand() -> None:
    # right monitor at (1920, -200), 2560x1440 physical shown as a 1280x720 image
    f = coords.Frame(1920, -200, 2560, 1440, 1280, 720)
    x, y = 1920 + 640, -200 + 1080          # a quarter across, three quarters down
    assert coords.convert(f, x, y, "norm1") == (0.25, 0.75)
    assert coords.convert(f, x, y, "pixels") == (320, 540)
    assert coords.convert(f, x, y, "norm1000") == (250, 750)
    assert coords.from_norm1(f, 0.25, 0.75) == (x, y)
    # norm1000 clamps points off the frame
    assert coords.convert(f, 0, -500, "norm1000") == (0, 0)
    # Qwen2.5-VL smart_resize: 1920x1080 -> 1932x1092 (69 and 39 multiples of 28), under 16384*28*28
    assert coords.smart_resize(1080, 1920) == (1092, 1932)
    # tiny image scaled up to min_pixels 4*28*28 = 3136: 10x10 -> beta = sqrt(3136/100) = 5.6 -> 56x56
    assert coords.smart_resize(10, 10) == (56, 56)
    # resized coordinates on the 1280x720 image with the default budget: 1288x728 (46, 26 x 28)
    assert coords.convert(f, x, y, "resized") == (322, 546)
    with pytest.raises(ExportError, match="unknown coordinate system"):
        coords.convert(f, 0, 0, "inches")
    with pytest.raises(ExportError, match="aspect ratio"):
        coords.smart_resize(10, 3000)


def test_every_exported_code_string_is_valid(tmp_path: Path) -> None:
    fx = make_fixture(tmp_path)
    ds = build_dataset(fx, tmp_path / "ds")
    codes: list[str] = [c for c in pq.read_table(ds / "data", columns=["pyautogui"])["pyautogui"].to_pylist()]
    get_exporter("agentnet").run(ds, tmp_path / "an")
    for line in (tmp_path / "an" / "agentnet.jsonl").read_text().splitlines():
        codes += [st["value"]["code"] for st in json.loads(line)["traj"]]
    for c in ("pixels", "norm1", "norm1000", "resized"):
        out = tmp_path / f"sft-{c}"
        get_exporter("sft-chat").run(ds, out, coords=c)
        for line in (out / "sft.jsonl").read_text().splitlines():
            sample = json.loads(line)
            codes.append(sample["messages"][2]["content"])
            user = sample["messages"][1]["content"]
            if "Previous actions:\n" in user:
                codes += [h.split(": ", 1)[1].replace("; ", "\n")
                          for h in user.split("Previous actions:\n")[1].splitlines()]
    get_exporter("webdataset").run(ds, tmp_path / "wds")
    import tarfile

    with tarfile.open(tmp_path / "wds" / "demotrace-000000.tar") as tf:
        for m in tf.getmembers():
            if m.name.endswith(".json"):
                codes.append(json.loads(tf.extractfile(m).read())["pyautogui"])
    assert len(codes) > 50
    for code in codes:
        for called in validate_code(code):
            mod, name = called.split(".")
            assert (mod == "pyautogui" and name in ALLOWED_PYAUTOGUI) or called == "computer.terminate"
