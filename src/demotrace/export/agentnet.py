"""AgentNet (OpenCUA) JSONL exporter.

Field list, from the xlangai/AgentNet dataset card ("Data Structure") and the OpenCUA repo
(``data/cot-generate/README.md``, "Output Structure")::

    {"task_id", "instruction", "task_completed", ...,
     "traj": [{"index", "image",
               "value": {"code", "observation", "thought", "action",
                         "last_step_correct", "last_step_redundant", "reflection"}}]}

- ``code`` is pyautogui with 0–1 coordinates relative to the screenshot, 4 decimals
  (``pyautogui.click(x=0.1632, y=0.2711)``); the last step is
  ``computer.terminate(status='success'|'failure')``.
- ``observation``, ``thought`` and ``reflection`` are model-generated (CoT synthesis) in
  AgentNet; a recording has none, so they are empty strings. ``action`` is a short description
  generated from the canonical action and target. ``last_step_correct`` /
  ``last_step_redundant`` come from AgentNet's reflector; recordings are taken as correct and
  not redundant (true / false).
- Coordinates are relative to the observed screen (``(x - bx) / bw`` with the observation's
  desktop ``bounds``), so they do not depend on the stored frame's size (a downscaled frame
  gives the same numbers). Held modifiers and auto-repeat counts are written as in
  :mod:`demotrace.export.pyautogui` (``keyDown('ctrl')`` … ``keyUp('ctrl')``,
  ``press('x', presses=n)``); empty typing is dropped (``empty_text_dropped``).
- ``image`` is a file name in ``images/`` beside the JSONL (PNG), or null when no frame was
  captured before the action (reported as ``no_observation``).

Output: ``OUT/agentnet.jsonl`` (one task per line), ``OUT/images/*.png``, ``OUT/summary.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from . import coords
from .base import (
    IMAGE_FORMATS,
    ExportSummary,
    describe,
    image_file,
    note_unknown_outcome,
    prepare_out,
    step_frame,
)
from .canonical import CanonicalDataset
from .pyautogui import ScrollSettings, action_code, is_empty_typing, validate_code

NAME = "agentnet"


@dataclass(frozen=True)
class AgentNetConfig:
    """Settings: ``overwrite`` an existing output folder; ``pixels_per_tick`` for pixel-unit
    scrolls (see :class:`~demotrace.export.pyautogui.ScrollSettings`); ``image_format``:
    ``png`` (AgentNet's images are PNG) or ``source`` (the recorded WebP / PNG bytes)."""

    overwrite: bool = False
    pixels_per_tick: float = ScrollSettings.pixels_per_tick
    image_format: str = "png"

    def __post_init__(self) -> None:
        if self.image_format not in IMAGE_FORMATS:
            raise ConfigError(f"--image-format {self.image_format!r}: choose one of {', '.join(IMAGE_FORMATS)}")


def export(dataset: CanonicalDataset, out: Path, config: AgentNetConfig = AgentNetConfig()) -> ExportSummary:
    """Write the AgentNet JSONL export of ``dataset`` into ``out`` (see module docstring).

    Raises:
        ExportError: ``out`` is not empty (without ``overwrite``), an image is unreadable, or
            generated code fails validation.
    """
    out = prepare_out(Path(out), config.overwrite)
    images = out / "images"
    images.mkdir(exist_ok=True)
    summary = ExportSummary(format=NAME, out=str(out), settings=asdict(config))
    scroll = ScrollSettings(config.pixels_per_tick)
    with open(out / "agentnet.jsonl", "w", encoding="utf-8") as f:
        for info, rows in dataset.iter_episodes():
            eid = info["episode_id"]
            traj: list[dict[str, Any]] = []
            for row in rows:
                a = {**row["action"], "target": row.get("target")}
                frame = step_frame(row, info)
                note_unknown_outcome(summary, info, row)
                if row["image"] is None:
                    summary.add_lossy("no_observation", eid, row["step_index"], "step has no screenshot; image is null")
                image_name = None
                if row["image"] is not None:
                    image_name, data = image_file(row, config.image_format, f"{eid}-{row['step_index']:04d}")
                    (images / image_name).write_bytes(data)
                    summary.files += 1
                if is_empty_typing(a):
                    summary.add_lossy("empty_text_dropped", eid, row["step_index"],
                                      "typing edited away to nothing: step dropped")
                    continue
                if frame is None and a["type"] not in ("done", "fail") and a.get("x") is not None:
                    summary.add_lossy("no_frame_for_coordinates", eid, row["step_index"],
                                      "no observation and no screen size: step dropped")
                    continue

                def point(x: float, y: float, frame: coords.Frame | None = frame) -> tuple[Any, Any]:
                    assert frame is not None
                    return coords.convert(frame, x, y, "norm1")

                code = action_code(a, point, scroll=scroll)
                validate_code(code.code)
                for kind, detail in code.lossy:
                    summary.add_lossy(kind, eid, row["step_index"], detail)
                traj.append({
                    "index": len(traj),
                    "image": image_name,
                    "value": {
                        "code": code.code,
                        "observation": "",
                        "thought": "",
                        "action": describe(a, row.get("target")),
                        "last_step_correct": True,
                        "last_step_redundant": False,
                        "reflection": "",
                    },
                })
                summary.steps += 1
            if not traj or not traj[-1]["value"]["code"].startswith("computer.terminate"):
                status = "success" if info.get("status") == "success" else "failure"
                summary.add_lossy("terminal_added", eid, None, f"episode did not end with done/fail; added {status}")
                traj.append({"index": len(traj), "image": traj[-1]["image"] if traj else None, "value": {
                    "code": f"computer.terminate(status={status!r})", "observation": "", "thought": "",
                    "action": describe({"type": "done" if status == "success" else "fail"}),
                    "last_step_correct": True, "last_step_redundant": False, "reflection": ""}})
            if info.get("instruction") is None:
                summary.add_lossy("instruction_unknown", eid, None, "episode segmented without a task marker; instruction is empty")
            task = {
                "task_id": eid,
                "instruction": info.get("instruction") or "",
                "task_completed": {"success": True, "failure": False}.get(info.get("status") or ""),
                "traj": traj,
            }
            f.write(json.dumps(task, ensure_ascii=False) + "\n")
            summary.episodes += 1
            summary.records += 1
    summary.files += 1
    summary.write(out)
    return summary
