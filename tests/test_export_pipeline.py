"""End to end through the CLI: a spool session of real schema-v1 events → `demotrace seal` →
`demotrace build` (reads only sealed bundles; the reduction engineer's episodes_from_session) → every `demotrace export` format → each
output loads with the tool its users have (datasets, json, tarfile) → `demotrace replay`.

Expected values worked out by hand: screen 1280x800; frame k is captured at k seconds;
a click at (640, 400) at 1.5 s, typing "hi" at 2.5 s, a 2-tick scroll down at (100, 700)
at 3.5 s, inside a task "Greet the team" that ends with success at 4.5 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from export_support import encode, frame_image
from PIL import Image

from demotrace.export.pyautogui import validate_code
from demotrace.paths import Paths
from demotrace.schema import (
    Frame,
    KeyDown,
    KeyUp,
    Marker,
    Monitor,
    PointerDown,
    PointerMove,
    PointerUp,
    Rect,
    ScreenConfig,
    SessionManifest,
    Wheel,
)
from demotrace.spool import DataKey, Spool

S = 1_000_000_000
SID = "20261130T020000Z-00beef"
CLI = str(Path(sys.executable).parent / "demotrace")


def _record(home: Path) -> dict[int, Image.Image]:
    paths = Paths.from_env(str(home)).ensure()
    key = DataKey.create(paths.key_file)
    w = Spool(paths.spool, key).create(SessionManifest(
        session_id=SID, started_utc="2026-11-30T02:00:00Z", timezone="UTC", platform="linux-x11",
        backend="test", recorder_version="0"))
    screen = Rect(0, 0, 1280, 800)
    images: dict[int, Image.Image] = {}
    ev: list = []

    def add(cls, t: float, **kw) -> None:
        ev.append(cls(seq=len(ev), t_ns=int(t * S), **kw))

    def frame(k: int) -> None:
        im = frame_image(k)
        data = encode(im, "webp")
        bid = key.content_id(data)
        w.put_blob(bid, data, "webp")
        images[k] = im
        add(Frame, k + 0.05, blob=bid, monitor=-1, bounds=screen, width=1280, height=800, scale=1.0,
            captured_t_ns=k * S, reason="test", format="webp")

    add(Marker, 0, name="session_start")
    add(ScreenConfig, 0, monitors=(Monitor(index=0, bounds=screen, primary=True),), desktop=screen)
    add(Marker, 0.1, name="task_start", instruction="Greet the team")
    frame(1)
    add(PointerMove, 1.2, x=600, y=380)
    add(PointerDown, 1.5, x=640, y=400, button="left")
    add(PointerUp, 1.55, x=640, y=400, button="left")
    frame(2)
    add(KeyDown, 2.5, key="h", code="KeyH", text="h")
    add(KeyUp, 2.55, key="h", code="KeyH")
    add(KeyDown, 2.6, key="i", code="KeyI", text="i")
    add(KeyUp, 2.65, key="i", code="KeyI")
    frame(3)
    add(Wheel, 3.5, x=100, y=700, dx=0, dy=-1, unit="tick")
    add(Wheel, 3.6, x=100, y=700, dx=0, dy=-1, unit="tick")
    frame(4)
    add(Marker, 4.5, name="task_end", status="success")
    add(Marker, 5.0, name="session_stop")
    w.append(ev)
    w.close(duration_ns=5 * S)
    return images


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DEMOTRACE_HOME=str(home), HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    proc = subprocess.run([CLI, *args], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def sealed_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, Image.Image]]:
    """A home with the recorded session sealed once (sealing loads the redaction models: the
    slowest part of these tests, so the module shares it)."""
    home = tmp_path_factory.mktemp("sealed") / "home"
    images = _record(home)
    _cli(home, "seal", SID)
    return home, images


def test_record_build_export_replay(tmp_path: Path, sealed_home: tuple[Path, dict[int, Image.Image]]) -> None:
    home, images = sealed_home
    ds = tmp_path / "ds"
    _cli(home, "build", SID, "--out", str(ds))
    table = pq.read_table(ds / "data")
    rows = table.to_pylist()
    eid = f"{SID}-0"
    assert [r["action"]["type"] for r in rows] == ["click", "type", "scroll", "done"]
    assert {r["episode_id"] for r in rows} == {eid}
    assert rows[0]["instruction"] == "Greet the team" and rows[0]["episode_status"] == "success"
    # observation = newest frame captured before the action: click 1.5 s -> frame 1 (gap 0.5 s)
    assert rows[0]["observation"]["captured_t_ns"] == 1 * S and rows[0]["observation"]["gap_ns"] == S // 2
    assert rows[1]["observation"]["captured_t_ns"] == 2 * S
    assert rows[2]["observation"]["captured_t_ns"] == 3 * S
    for r, k in zip(rows[:3], (1, 2, 3)):
        from io import BytesIO

        assert Image.open(BytesIO(r["image"]["bytes"])).convert("RGB").tobytes() == images[k].tobytes()
    assert rows[0]["pyautogui"] == "pyautogui.click(x=640, y=400)"
    assert rows[1]["action"]["text"] == "hi"
    assert (rows[2]["action"]["dy"], rows[2]["action"]["unit"]) == (-2, "tick")

    # every format, through the CLI
    for fmt in ("agentnet", "osworld", "sft-chat", "webdataset"):
        _cli(home, "export", "--format", fmt, "--dataset", str(ds), "--out", str(tmp_path / fmt))
        assert json.loads((tmp_path / fmt / "summary.json").read_text())["steps"] == 4

    task = json.loads((tmp_path / "agentnet" / "agentnet.jsonl").read_text())
    codes = [st["value"]["code"] for st in task["traj"]]
    assert codes == ["pyautogui.click(x=0.5000, y=0.5000)", "pyautogui.write('hi')",
                     "pyautogui.scroll(-2, x=0.0781, y=0.8750)", "computer.terminate(status='success')"]
    for c in codes:
        validate_code(c)
    assert task["instruction"] == "Greet the team"

    traj = [json.loads(x) for x in (tmp_path / "osworld" / eid / "traj.jsonl").read_text().splitlines()]
    assert [t["action"]["action_type"] for t in traj] == ["CLICK", "TYPING", "MOVE_TO", "SCROLL", "DONE"]
    assert traj[3]["action"]["parameters"] == {"dx": 0, "dy": -2}
    assert all((tmp_path / "osworld" / eid / t["screenshot_file"]).is_file() for t in traj)

    samples = [json.loads(x) for x in (tmp_path / "sft-chat" / "sft.jsonl").read_text().splitlines()]
    assert [s["messages"][2]["content"] for s in samples][:2] == [
        "pyautogui.click(x=0.5000, y=0.5000)", "pyautogui.write('hi')"]

    with tarfile.open(next((tmp_path / "webdataset").glob("*.tar"))) as tf:
        assert tf.getnames()[:2] == [f"{eid}_0000.png", f"{eid}_0000.json"]

    # the canonical dataset loads with datasets
    import datasets

    loaded = datasets.load_dataset("parquet", data_dir=str(ds / "data"), split="train",
                                   cache_dir=str(tmp_path / "hfc"))
    assert loaded.num_rows == 4 and loaded[0]["image"].size == (1280, 800)

    _cli(home, "replay", eid, "--dataset", str(ds), "--out", str(tmp_path / "r.html"))
    page = (tmp_path / "r.html").read_text()
    assert "Greet the team" in page and page.count('class="step"') == 4


def test_build_reads_only_sealed_bundles(tmp_path: Path, sealed_home: tuple[Path, dict[int, Image.Image]]) -> None:
    """DESIGN.md principle 3: `build` never reads the raw spool. An unsealed session is refused
    with the fix; after `demotrace seal` the default build (every bundle) and a build from the
    bundle's folder path give the same rows (this session has nothing to redact: no text in
    the frames, "hi" typed, no secrets)."""
    home = tmp_path / "home"
    _record(home)
    env = dict(os.environ, DEMOTRACE_HOME=str(home))
    for args in ([SID], []):  # named, and the default (no bundles at all yet)
        proc = subprocess.run([CLI, "build", *args, "--out", str(tmp_path / "x")],
                              capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == 1 and f"demotrace seal {SID}" in " ".join(proc.stderr.split()), proc.stderr
    assert not list((tmp_path / "x").glob("data/*.parquet"))
    raw_home = home
    home = sealed_home[0]  # the same session after `demotrace seal`
    _cli(home, "build", "--out", str(tmp_path / "all"))
    _cli(home, "build", str(home / "sealed" / SID), "--out", str(tmp_path / "bypath"))
    cols = ["episode_id", "step_index", "pyautogui", "instruction"]
    rows = pq.read_table(tmp_path / "all" / "data", columns=cols).to_pylist()
    assert pq.read_table(tmp_path / "bypath" / "data", columns=cols).to_pylist() == rows
    assert [r["pyautogui"] for r in rows] == [
        "pyautogui.click(x=640, y=400)", "pyautogui.write('hi')",
        "pyautogui.scroll(-2, x=100, y=700)", "computer.terminate(status='success')"]
    assert rows[0]["instruction"] == "Greet the team"
    # a folder that is not a sealed bundle (the raw spool session) is refused too
    proc = subprocess.run([CLI, "build", str(raw_home / "spool" / SID), "--out", str(tmp_path / "y")],
                          capture_output=True, text=True, env=env, timeout=60)
    err = " ".join(proc.stderr.split())
    assert proc.returncode == 1 and "not a sealed bundle" in err and f"demotrace seal {SID}" in err


def test_build_errors_are_clear(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _record(home)
    env = dict(os.environ, DEMOTRACE_HOME=str(home))
    proc = subprocess.run([CLI, "build", "nosuchsession", "--out", str(tmp_path / "ds")],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 1 and "nosuchsession" in proc.stderr and "sessions list" in proc.stderr
    # nothing half-written is left as a dataset
    assert not list((tmp_path / "ds" / "data").glob("*.parquet"))
    proc = subprocess.run([CLI, "export", "--format", "agentnet", "--dataset", str(tmp_path / "ds"),
                           "--out", str(tmp_path / "x"), "--coords", "pixels"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 1 and "--coords applies to --format sft-chat only" in proc.stderr


def test_ducktrack_example_import_build_agentnet(tmp_path: Path, shared_data: Path) -> None:
    """The real DuckTrack recording (macOS, 1512x982 logical points): import → build → AgentNet.

    By hand from events.jsonl: the first press is a left click at (1319.11328125, 65.06640625)
    points → 0–1 coordinates (1319.113/1512, 65.066/982) = (0.8724, 0.0663); then the keys
    w-i-k-i-p-e-d-i-a and Enter. No video: every step is reported as without observation.
    """
    home = tmp_path / "home"
    Paths.from_env(str(home)).ensure()
    DataKey.create(Paths.from_env(str(home)).key_file)
    sid = _cli(home, "import", str(shared_data / "ducktrack-example")).stdout.strip().splitlines()[-1]
    # the example was recorded in 2023, but raw retention counts from its arrival on this device:
    # the default 7-day policy must keep it until it is sealed (build reads only sealed bundles)
    _cli(home, "seal", sid)
    _cli(home, "build", sid, "--out", str(tmp_path / "ds"))
    _cli(home, "export", "--format", "agentnet", "--dataset", str(tmp_path / "ds"), "--out", str(tmp_path / "an"))
    task = json.loads((tmp_path / "an" / "agentnet.jsonl").read_text().splitlines()[0])
    codes = [st["value"]["code"] for st in task["traj"]]
    assert codes[:3] == ["pyautogui.click(x=0.8724, y=0.0663)", "pyautogui.write('wikipedia')",
                         "pyautogui.press('enter')"]
    assert codes[-1].startswith("computer.terminate(")
    for c in codes:
        validate_code(c)
    summary = json.loads((tmp_path / "an" / "summary.json").read_text())
    n = pq.read_metadata(next((tmp_path / "ds" / "data").glob("*.parquet"))).num_rows
    assert summary["steps"] == n == len(codes)
    assert summary["lossy"]["no_observation"]["count"] == n
    # the outcome of an unmarked episode is unknown: its success terminal is reported
    assert summary["lossy"]["terminal_status_unknown"]["count"] == 1
