"""Round trips of every export format against its published field list.

Expected values are worked out by hand from tests/export_support.py: screen 1280x800;
episode A on full-screen frames, episode B on a 640x400 frame of the monitor at (-1280, 0).
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path

import msgspec
import pytest
from export_support import SID, build_dataset, make_fixture
from PIL import Image

from demotrace.errors import ConfigError, ExportError
from demotrace.export import CanonicalDataset, get_exporter, write_dataset

A, B = f"{SID}-0", f"{SID}-1"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("formats")
    fx = make_fixture(tmp)
    return fx, build_dataset(fx, tmp / "ds"), tmp


def _pixels(data: bytes) -> bytes:
    return Image.open(io.BytesIO(data)).convert("RGB").tobytes()


# ---------------------------------------------------------------------------------- AgentNet

AGENTNET_STEP_VALUE = {"code", "observation", "thought", "action", "last_step_correct",
                       "last_step_redundant", "reflection"}


def test_agentnet_round_trip(built) -> None:
    fx, ds, tmp = built
    out = tmp / "agentnet"
    s = get_exporter("agentnet").run(ds, out)
    tasks = [json.loads(line) for line in (out / "agentnet.jsonl").read_text().splitlines()]
    assert [t["task_id"] for t in tasks] == [A, B]
    for t in tasks:
        assert {"task_id", "instruction", "traj"} <= set(t)
        assert isinstance(t["instruction"], str)
        for i, st in enumerate(t["traj"]):
            assert set(st) == {"index", "image", "value"} and st["index"] == i
            assert set(st["value"]) == AGENTNET_STEP_VALUE
            assert st["value"]["last_step_correct"] is True and st["value"]["last_step_redundant"] is False
    codes = [st["value"]["code"] for st in tasks[0]["traj"]]
    assert codes == [
        "pyautogui.click(x=0.5000, y=0.5000)",                     # 640/1280, 400/800
        "pyautogui.write('héllo wörld')",
        "pyautogui.hotkey('ctrl', 'shift', 'alt', 't')",
        "pyautogui.scroll(-3, x=0.0781, y=0.2500)",                # 100/1280 = 0.078125
        "pyautogui.scroll(-3, x=0.2500, y=0.7500)",                # -250 px / 100 = -2.5 -> -3
        "pyautogui.moveTo(x=0.0781, y=0.1250)\npyautogui.dragTo(x=0.2344, y=0.2500, button='left')",
        "pyautogui.press('enter')",
        "pyautogui.doubleClick(x=0.2500, y=0.2500)",
        "computer.terminate(status='success')",
    ]
    assert tasks[0]["instruction"] == "Say hello in gedit" and tasks[0]["task_completed"] is True
    assert tasks[0]["traj"][0]["value"]["action"] == 'Click the "OK" push button'
    # the step without observation keeps its action, image is null
    assert tasks[0]["traj"][6]["image"] is None
    # episode B: (-640, 200) on the monitor at (-1280, 0) -> (0.5, 0.25)
    assert [st["value"]["code"] for st in tasks[1]["traj"]] == [
        "pyautogui.rightClick(x=0.5000, y=0.2500)", "computer.terminate(status='failure')"]
    assert tasks[1]["instruction"] == "" and tasks[1]["task_completed"] is False
    # images: PNG files with the recorded pixels
    first = tasks[0]["traj"][0]["image"]
    blob = fx.episodes[0].steps[0].observation.blob
    assert _pixels((out / "images" / first).read_bytes()) == fx.images[blob].tobytes()
    assert (out / "images" / first).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # lossy conversions made explicit
    assert s.lossy_count("no_observation") == 1
    assert s.lossy_count("scroll_pixels_to_clicks") == 1
    assert s.lossy_count("instruction_unknown") == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["format"] == "agentnet" and summary["episodes"] == 2 and summary["steps"] == 11
    assert summary["lossy"]["no_observation"]["examples"][0] == {
        "episode_id": A, "step_index": 6, "detail": "step has no screenshot; image is null"}


# ----------------------------------------------------------------------------------- OSWorld

# OSWorld desktop_env/actions.py ACTION_SPACE: action_type -> parameter names
COMPUTER_13 = {
    "MOVE_TO": {"x", "y"}, "CLICK": {"button", "x", "y", "num_clicks"}, "MOUSE_DOWN": {"button"},
    "MOUSE_UP": {"button"}, "RIGHT_CLICK": {"x", "y"}, "DOUBLE_CLICK": {"x", "y"},
    "DRAG_TO": {"x", "y"}, "SCROLL": {"dx", "dy"}, "TYPING": {"text"}, "PRESS": {"key"},
    "KEY_DOWN": {"key"}, "KEY_UP": {"key"}, "HOTKEY": {"keys"}, "WAIT": set(), "FAIL": set(),
    "DONE": set(),
}
TRAJ_FIELDS = {"step_num", "action_timestamp", "action", "reward", "done", "info", "screenshot_file"}


def test_osworld_round_trip(built) -> None:
    fx, ds, tmp = built
    out = tmp / "osworld"
    s = get_exporter("osworld").run(ds, out)
    lines = [json.loads(x) for x in (out / A / "traj.jsonl").read_text().splitlines()]
    for ln in lines:
        assert set(ln) == TRAJ_FIELDS
        act = ln["action"]
        assert act["action_type"] in COMPUTER_13
        assert set(act.get("parameters", {})) <= COMPUTER_13[act["action_type"]]
        assert re.fullmatch(r"\d{8}@\d{6}", ln["action_timestamp"])
        assert ln["reward"] == 0
    got = [(ln["step_num"], ln["action"]["action_type"], ln["action"].get("parameters")) for ln in lines]
    assert got == [
        (1, "CLICK", {"button": "left", "x": 640, "y": 400, "num_clicks": 1}),
        (2, "TYPING", {"text": "héllo wörld"}),
        (3, "HOTKEY", {"keys": ["ctrl", "shift", "alt", "t"]}),
        (4, "MOVE_TO", {"x": 100, "y": 200}), (4, "SCROLL", {"dx": 0, "dy": -3}),
        (5, "MOVE_TO", {"x": 320, "y": 600}), (5, "SCROLL", {"dx": 0, "dy": -3}),
        (6, "MOVE_TO", {"x": 100, "y": 100}), (6, "DRAG_TO", {"x": 300, "y": 200}),
        (7, "PRESS", {"key": "enter"}),
        (8, "DOUBLE_CLICK", {"x": 320, "y": 200}),
        (9, "DONE", None),
    ]
    assert [ln["done"] for ln in lines] == [False] * 11 + [True]
    # step 1 starts at 0.1 s, step 2 at 1.1 s after session start
    assert lines[0]["action_timestamp"] == "19700101@000000" and lines[1]["action_timestamp"] == "19700101@000001"
    # screenshot_file is the screen after the step = the next step's observation (OSWorld)
    assert lines[0]["screenshot_file"] == "step_1_19700101@000000.png"
    assert lines[0]["info"]["observation_file"] == "initial_state.png"
    blob1 = fx.episodes[0].steps[1].observation.blob
    assert _pixels((out / A / lines[0]["screenshot_file"]).read_bytes()) == fx.images[blob1].tobytes()
    blob0 = fx.episodes[0].steps[0].observation.blob
    assert _pixels((out / A / "initial_state.png").read_bytes()) == fx.images[blob0].tobytes()
    # the drag (step_num 6) is followed by the step without observation: no after-screenshot
    assert lines[7]["screenshot_file"] is None and lines[9]["info"]["observation_file"] is None
    assert (out / A / "result.txt").read_text() == "1.0\n"
    task = json.loads((out / A / "task.json").read_text())
    assert task["instruction"] == "Say hello in gedit"
    # episode B: SCREEN pixels of the left monitor at (-1280, 0) (OSWorld screenshots are the
    # screen at full size): (-640 + 1280, 200 - 0) = (640, 200); the half-size 640x400 frame
    # is written scaled up to the monitor's 1280x800 and reported
    b = [json.loads(x) for x in (out / B / "traj.jsonl").read_text().splitlines()]
    assert [ln["action"] for ln in b] == [
        {"action_type": "RIGHT_CLICK", "parameters": {"x": 640, "y": 200}}, {"action_type": "FAIL"}]
    with Image.open(out / B / "initial_state.png") as im:
        assert im.size == (1280, 800)
    assert s.lossy_count("screenshot_rescaled") == 2  # B's right-click and its FAIL step
    assert (out / B / "result.txt").read_text() == "0.0\n"
    # non-ASCII typing is lossy for OSWorld (pyautogui.typewrite cannot type it)
    assert s.lossy_count("non_ascii_typing") == 1
    assert "é" in s.lossy["non_ascii_typing"]["examples"][0]["detail"]
    assert s.lossy_count("scroll_pixels_to_clicks") == 1 and s.lossy_count("scroll_rounded") == 1


# ----------------------------------------------------------------------------------- SFT chat


def _samples(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "sft.jsonl").read_text().splitlines()]


def test_sft_chat_pyautogui_norm1(built) -> None:
    fx, ds, tmp = built
    out = tmp / "sft-norm1"
    s = get_exporter("sft-chat").run(ds, out)
    samples = _samples(out)
    # one sample per step with an observation: 8 of 9 in A, 2 in B
    assert len(samples) == 10 and s.records == 10
    for sm in samples:
        assert set(sm) == {"id", "messages", "images", "image_size"}
        assert [m["role"] for m in sm["messages"]] == ["system", "user", "assistant"]
        assert sm["messages"][1]["content"].count("<image>") == len(sm["images"]) == 1
        assert (out / sm["images"][0]).is_file()
    assert samples[0]["id"] == f"{A}_0000"
    assert samples[0]["messages"][2]["content"] == "pyautogui.click(x=0.5000, y=0.5000)"
    assert samples[0]["messages"][1]["content"] == "<image>\nTask: Say hello in gedit"
    # the double click (step 7) sees 7 previous actions, including the unobserved Enter
    dbl = samples[6]
    assert dbl["id"] == f"{A}_0007"
    assert dbl["messages"][2]["content"] == "pyautogui.doubleClick(x=0.2500, y=0.2500)"
    hist = dbl["messages"][1]["content"].split("Previous actions:\n")[1].splitlines()
    assert len(hist) == 7 and hist[0] == "Step 1: pyautogui.click(x=0.5000, y=0.5000)"
    assert hist[5] == "Step 6: pyautogui.moveTo(x=0.0781, y=0.1250); pyautogui.dragTo(x=0.2344, y=0.2500, button='left')"
    assert hist[6] == "Step 7: pyautogui.press('enter')"
    assert samples[8]["messages"][1]["content"].startswith("<image>\nTask: (unknown)")
    assert s.lossy_count("no_observation") == 1


def test_sft_chat_pixels_history_limit(built) -> None:
    _, ds, tmp = built
    out = tmp / "sft-px"
    get_exporter("sft-chat").run(ds, out, coords="pixels", history=2)
    samples = _samples(out)
    assert samples[0]["messages"][2]["content"] == "pyautogui.click(x=640, y=400)"
    hist = samples[6]["messages"][1]["content"].split("Previous actions:\n")[1].splitlines()
    assert hist == ["Step 6: pyautogui.moveTo(x=100, y=100); pyautogui.dragTo(x=300, y=200, button='left')",
                    "Step 7: pyautogui.press('enter')"]
    # episode B: image pixels of the half-size frame
    assert samples[8]["messages"][2]["content"] == "pyautogui.rightClick(x=320, y=100)"


def test_sft_chat_uitars_norm1000_lossy(built) -> None:
    _, ds, tmp = built
    out = tmp / "sft-uitars"
    s = get_exporter("sft-chat").run(ds, out, coords="norm1000", action_format="uitars")
    answers = [sm["messages"][2]["content"] for sm in _samples(out)]
    assert answers[0] == "Action: click(start_box='(500,500)')"
    assert answers[1] == "Action: type(content='héllo wörld')"
    assert answers[2] == "Action: hotkey(key='ctrl shift alt t')"
    assert answers[3] == "Action: scroll(start_box='(78,250)', direction='down')"   # 78.125 -> 78
    assert answers[5] == "Action: drag(start_box='(78,125)', end_box='(234,250)')"
    assert answers[6] == "Action: left_double(start_box='(250,250)')"
    assert answers[7] == "Action: finished()"
    assert answers[8] == "Action: right_single(start_box='(500,250)')"
    assert s.lossy_count("hotkey_over_3_keys") == 1
    assert s.lossy_count("scroll_direction_only") == 2


def test_sft_chat_resized_smart_resize(built) -> None:
    _, ds, tmp = built
    out = tmp / "sft-resized"
    # max_pixels 1280*28*28 = 1,003,520. 1280x800: rounded 1288x812 is over budget, so
    # beta = sqrt(1280*800 / 1003520) = 1.01015; h = floor(800/beta/28)*28 = 784,
    # w = floor(1280/beta/28)*28 = 1260. Click (640, 400) -> (630, 392).
    get_exporter("sft-chat").run(ds, out, coords="resized", max_pixels=1280 * 28 * 28)
    sm = _samples(out)[0]
    assert sm["image_size"] == [1260, 784]
    assert sm["messages"][2]["content"] == "pyautogui.click(x=630, y=392)"
    with Image.open(out / sm["images"][0]) as im:
        assert im.size == (1260, 784)


def test_sft_chat_bad_settings(built) -> None:
    _, ds, tmp = built
    with pytest.raises(ConfigError, match="choose one of pixels, norm1, norm1000, resized"):
        get_exporter("sft-chat").run(ds, tmp / "x", coords="inches")
    with pytest.raises(ConfigError, match="unknown export format 'mind2wob'"):
        get_exporter("mind2wob")


# --------------------------------------------------------------------------------- WebDataset

# webdataset tariterators.base_plus_ext: key = up to the first dot, field = the rest
WDS_SPLIT = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")


def test_webdataset_round_trip(built, monkeypatch: pytest.MonkeyPatch) -> None:
    fx, ds, tmp = built
    out = tmp / "wds"
    s = get_exporter("webdataset").run(ds, out)
    shards = sorted(out.glob("*.tar"))
    assert [p.name for p in shards] == ["demotrace-000000.tar"]
    with tarfile.open(shards[0]) as tf:
        names = tf.getnames()
        data = {m.name: tf.extractfile(m).read() for m in tf.getmembers()}
    split = [WDS_SPLIT.match(n).groups() for n in names]
    keys = list(dict.fromkeys(k for k, _ in split))
    assert keys == [f"{A}_{i:04d}" for i in range(9)] + [f"{B}_0000", f"{B}_0001"]
    assert {f for _, f in split} == {"png", "json"}
    assert f"{A}_0006.png" not in names and f"{A}_0006.json" in names
    rec = json.loads(data[f"{A}_0000.json"])
    assert rec["episode_id"] == A and rec["step_index"] == 0 and rec["action"]["x_norm"] == 0.5
    assert rec["pyautogui"] == "pyautogui.click(x=640, y=400)" and "image" not in rec
    blob = fx.episodes[0].steps[0].observation.blob
    assert _pixels(data[f"{A}_0000.png"]) == fx.images[blob].tobytes()
    assert s.lossy_count("no_observation") == 1
    # the Hugging Face webdataset loader groups the same samples
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    from demotrace.export.canonical import hf_features_dict

    # the .json records follow the canonical schema (minus the image, plus image_path)
    rec_features = {k: v for k, v in hf_features_dict().items() if k != "image"}
    rec_features["image_path"] = {"dtype": "string", "_type": "Value"}
    features = datasets.Features.from_dict({
        "__key__": {"dtype": "string", "_type": "Value"}, "__url__": {"dtype": "string", "_type": "Value"},
        "png": {"_type": "Image"}, "json": rec_features})
    loaded = datasets.load_dataset("webdataset", data_files={"train": [str(p) for p in shards]},
                                   split="train", features=features, cache_dir=str(tmp / "hfc-wds"))
    assert loaded.num_rows == 11
    assert loaded[0]["__key__"] == f"{A}_0000"
    assert loaded[0]["json"]["episode_id"] == A
    assert loaded[0]["png"].convert("RGB").tobytes() == fx.images[blob].tobytes()
    assert loaded[6]["png"] is None and loaded[6]["json"]["step_index"] == 6


def test_webdataset_sanitises_dotted_ids(tmp_path: Path) -> None:
    fx = make_fixture(tmp_path)
    ep = msgspec.structs.replace(fx.episodes[1], episode_id="ducktrack.v1-0")
    ds = tmp_path / "ds"
    write_dataset(ds, [(ep, fx.reader.read_blob)])
    s = get_exporter("webdataset").run(ds, tmp_path / "wds")
    with tarfile.open(tmp_path / "wds" / "demotrace-000000.tar") as tf:
        names = tf.getnames()
        rec = json.loads(tf.extractfile("ducktrack-v1-0_0000.json").read())
    assert names == ["ducktrack-v1-0_0000.png", "ducktrack-v1-0_0000.json",
                     "ducktrack-v1-0_0001.png", "ducktrack-v1-0_0001.json"]
    assert rec["episode_id"] == "ducktrack.v1-0"
    assert s.lossy_count("key_sanitised") == 2


def test_export_refuses_non_empty_output(built) -> None:
    _, ds, tmp = built
    out = tmp / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty"):
        get_exporter("agentnet").run(CanonicalDataset(ds), out)
    assert (out / "keep.txt").read_text() == "mine"


def test_select_option_uses_the_target(tmp_path: Path) -> None:
    """A Mind2Web-style select_option on a <select> at (100, 50, 200x40): click its centre
    (200, 70) then type the option; reported as lossy in every format."""
    from demotrace.schema import Action, Episode, Rect, Step, Target

    fx = make_fixture(tmp_path)
    base = fx.episodes[0].steps[0]
    sel = Step(index=0, observation=base.observation, action=Action(
        type="select_option", t_start_ns=base.action.t_start_ns, t_end_ns=base.action.t_end_ns,
        text="Economy", target=Target(role="combo box", name="Class", bounds=Rect(100, 50, 200, 40),
                                      source="dom", tag="select")))
    done = Step(index=1, observation=base.observation, action=Action(
        type="done", t_start_ns=base.action.t_end_ns, t_end_ns=base.action.t_end_ns))
    ep = Episode(episode_id=f"{SID}-9", session_id=SID, index=9, instruction="Pick economy", status="success",
                 segmented_by="task_marker", t_start_ns=0, t_end_ns=base.action.t_end_ns, steps=[sel, done],
                 screen=Rect(0, 0, 1280, 800))
    ds = tmp_path / "ds"
    write_dataset(ds, [(ep, fx.reader.read_blob)])
    s = get_exporter("agentnet").run(ds, tmp_path / "an")
    task = json.loads((tmp_path / "an" / "agentnet.jsonl").read_text())
    # centre (200, 70) -> (200/1280, 70/800) = (0.15625, 0.0875); Python rounds the exact tie
    # 0.15625 half-to-even -> 0.1562
    assert task["traj"][0]["value"]["code"] == "pyautogui.click(x=0.1562, y=0.0875)\npyautogui.write('Economy')"
    assert s.lossy_count("select_option_as_click_and_type") == 1
    s = get_exporter("osworld").run(ds, tmp_path / "ow")
    lines = [json.loads(x) for x in (tmp_path / "ow" / f"{SID}-9" / "traj.jsonl").read_text().splitlines()]
    assert [ln["action"] for ln in lines[:2]] == [
        {"action_type": "CLICK", "parameters": {"button": "left", "x": 200, "y": 70, "num_clicks": 1}},
        {"action_type": "TYPING", "parameters": {"text": "Economy"}}]
    assert s.lossy_count("select_option_as_click_and_type") == 1


def test_webdataset_key_collision_is_an_error(tmp_path: Path) -> None:
    fx = make_fixture(tmp_path)
    a = msgspec.structs.replace(fx.episodes[1], episode_id="x.y-0")
    b = msgspec.structs.replace(fx.episodes[1], episode_id="x-y-0")
    write_dataset(tmp_path / "ds", [(a, fx.reader.read_blob), (b, fx.reader.read_blob)])
    with pytest.raises(ExportError, match="'x.y-0' and 'x-y-0' collide"):
        get_exporter("webdataset").run(tmp_path / "ds", tmp_path / "wds")


def test_image_format_source_keeps_recorded_bytes(built) -> None:
    fx, ds, tmp = built
    out = tmp / "an-source"
    get_exporter("agentnet").run(ds, out, image_format="source")
    task = json.loads((out / "agentnet.jsonl").read_text().splitlines()[0])
    # frame 0 was stored as WebP, frame 1 as PNG (export_support): names follow the format
    assert task["traj"][0]["image"] == f"{A}-0000.webp" and task["traj"][1]["image"] == f"{A}-0001.png"
    for st in task["traj"][:2]:
        assert (out / "images" / st["image"]).read_bytes() in fx.blobs.values()
    with pytest.raises(ConfigError, match="--image-format source is not possible"):
        get_exporter("sft-chat").run(ds, tmp / "x", coords="resized", image_format="source")
    with pytest.raises(ConfigError, match="choose one of png, source"):
        get_exporter("agentnet").run(ds, tmp / "y", image_format="jpeg")
