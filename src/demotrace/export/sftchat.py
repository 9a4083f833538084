"""SFT chat exporter: Qwen2.5-VL / UI-TARS / Aguvis style JSONL for supervised fine-tuning.

One sample per step that has an observation, in the multimodal ``messages`` + ``images``
layout read by LLaMA-Factory and ms-swift (``<image>`` placeholders in message text, one per
entry of ``images``)::

    {"id": "<episode_id>_<step:04d>",
     "messages": [{"role": "system", "content": "..."},
                  {"role": "user", "content": "<image>\\nTask: ...\\nPrevious actions:\\n..."},
                  {"role": "assistant", "content": "<action>"}],
     "images": ["images/<episode_id>-<step:04d>.png"],
     "image_size": [width, height]}

The history of previous actions is given as text (Aguvis / UI-TARS style), one line per
step (multi-line code joined with ``; ``), the last ``history`` ones (all when ``None``),
including steps without observation.

``action_format``:

- ``pyautogui`` (Aguvis, OpenCUA): pyautogui code, see :mod:`demotrace.export.pyautogui`.
- ``uitars``: UI-TARS action space (``click(start_box='(x1,y1)')``, ``left_double``,
  ``right_single``, ``drag(start_box, end_box)``, ``hotkey(key='ctrl c')``,
  ``type(content='…')``, ``scroll(start_box, direction='down|up|right|left')``, ``wait()``,
  ``finished()``; from bytedance UI-TARS ``codes/ui_tars/prompt.py`` COMPUTER_USE). Its rule
  "do not use more than 3 keys in one hotkey action" and direction-only scrolls make some
  actions lossy: reported, never silent. It cannot hold a modifier during a click / drag /
  scroll (Ctrl-click): such samples are skipped (``modifiers_unsupported``), never written as
  a plain click; an auto-repeated key loses its count (``key_count_dropped``).

Empty typing (``empty_text``) gives no sample and no history line (``empty_text_dropped``).

``coords`` (see :mod:`demotrace.export.coords`): ``pixels`` (image pixels), ``norm1`` (0–1, 4
decimals), ``norm1000`` (0–1000 integers, UI-TARS 1.0 / Qwen-VL grounding), ``resized`` (pixels
of the image after Qwen2.5-VL ``smart_resize`` with ``max_pixels``; the stored images are then
written at that size so coordinates match the file).

Output: ``OUT/sft.jsonl``, ``OUT/images/*.png``, ``OUT/summary.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from . import coords as cs
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
from .pyautogui import (
    ScrollSettings,
    action_code,
    held_modifiers,
    is_empty_typing,
    key_name,
    press_count,
    validate_code,
)

NAME = "sft-chat"
ACTION_FORMATS = ("pyautogui", "uitars")


@dataclass(frozen=True)
class SFTChatConfig:
    """Settings.

    ``coords``: one of ``pixels | norm1 | norm1000 | resized``; ``max_pixels``: smart_resize
    budget for ``resized`` (default 16384·28·28, qwen-vl-utils ``MAX_PIXELS``);
    ``action_format``: ``pyautogui | uitars``; ``history``: number of previous actions in the
    prompt (``None`` = all); ``overwrite`` an existing output folder; ``pixels_per_tick`` for
    pixel-unit scrolls; ``image_format``: ``png`` or ``source`` (recorded bytes unchanged).
    """

    coords: str = "norm1"
    max_pixels: int = cs.QWEN_MAX_PIXELS
    action_format: str = "pyautogui"
    history: int | None = None
    overwrite: bool = False
    pixels_per_tick: float = ScrollSettings.pixels_per_tick
    image_format: str = "png"

    def __post_init__(self) -> None:
        if self.image_format not in IMAGE_FORMATS:
            raise ConfigError(f"--image-format {self.image_format!r}: choose one of {', '.join(IMAGE_FORMATS)}")
        if self.image_format == "source" and self.coords == "resized":
            raise ConfigError("--coords resized writes resized PNG images; --image-format source is not possible")
        if self.coords not in cs.COORD_SYSTEMS:
            raise ConfigError(f"--coords {self.coords!r}: choose one of {', '.join(cs.COORD_SYSTEMS)}")
        if self.action_format not in ACTION_FORMATS:
            raise ConfigError(f"action format {self.action_format!r}: choose one of {', '.join(ACTION_FORMATS)}")
        if self.max_pixels < cs.QWEN_MIN_PIXELS:
            raise ConfigError(f"--max-pixels {self.max_pixels} is below the minimum {cs.QWEN_MIN_PIXELS}")
        if self.history is not None and self.history < 0:
            raise ConfigError("--history must be >= 0")


_COORD_TEXT = {
    "pixels": "Coordinates are pixels of the screenshot, origin at the top-left corner.",
    "norm1": "Coordinates are relative to the screenshot, from 0 to 1 (x to the right, y down).",
    "norm1000": "Coordinates are integers from 0 to 1000 relative to the screenshot.",
    "resized": "Coordinates are pixels of the screenshot as given, origin at the top-left corner.",
}

_SYSTEM = {
    "pyautogui": ("You are a GUI agent. You are given a task, a screenshot of the screen and your "
                  "previous actions. Output the next action as pyautogui code, or "
                  "computer.terminate(status='success' or 'failure') when the task is finished. "),
    "uitars": ("You are a GUI agent. You are given a task and your action history, with screenshots. "
               "You need to perform the next action to complete the task.\n\n## Action Space\n"
               "click(start_box='(x1,y1)')\nleft_double(start_box='(x1,y1)')\n"
               "right_single(start_box='(x1,y1)')\ndrag(start_box='(x1,y1)', end_box='(x3,y3)')\n"
               "hotkey(key='ctrl c')\ntype(content='xxx')\n"
               "scroll(start_box='(x1,y1)', direction='down or up or right or left')\n"
               "wait()\nfinished()\ncall_user()\n"),
}


def _q(s: str) -> str:
    """UI-TARS quoting: a Python single-quoted literal with \\', \\" and \\n escapes."""
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'").replace('"', '\\"').replace("\n", "\\n") + "'"


def uitars_action(action: dict[str, Any], point: Any) -> tuple[str | None, list[tuple[str, str]]]:
    """The UI-TARS action string for a canonical action (``None`` if it has no equivalent),
    and the lossy conversions made. ``point(x, y)`` converts desktop pixels."""
    t = action["type"]
    lossy: list[tuple[str, str]] = []
    mods = held_modifiers(action)
    if mods:  # UI-TARS has no way to hold a key during a click: never export it as a plain one
        lossy.append(("modifiers_unsupported", f"{'+'.join(mods)}+{t}: UI-TARS cannot hold keys; sample skipped"))
        return None, lossy

    def box(xk: str = "x", yk: str = "y") -> str:
        px, py = point(float(action[xk]), float(action[yk]))
        fx = str(px) if isinstance(px, int) else f"{px:.4f}"
        fy = str(py) if isinstance(py, int) else f"{py:.4f}"
        return f"'({fx},{fy})'"

    if t == "click":
        n, b = int(action.get("count") or 1), action.get("button") or "left"
        if b == "right":
            if n != 1:
                lossy.append(("click_count_unsupported", f"right click x{n} as right_single"))
            return f"right_single(start_box={box()})", lossy
        if b != "left":
            lossy.append(("button_unsupported", f"{b} click as left click"))
        if n == 2:
            return f"left_double(start_box={box()})", lossy
        if n > 2:
            lossy.append(("click_count_unsupported", f"click x{n} as left_double"))
            return f"left_double(start_box={box()})", lossy
        return f"click(start_box={box()})", lossy
    if t == "drag":
        return f"drag(start_box={box()}, end_box={box('x2', 'y2')})", lossy
    if t == "scroll":
        dx, dy = float(action.get("dx") or 0), float(action.get("dy") or 0)
        if abs(dy) >= abs(dx):
            direction = "up" if dy > 0 else "down"
            if dx:
                lossy.append(("scroll_axis_dropped", f"horizontal {dx:g} dropped"))
        else:
            direction = "right" if dx > 0 else "left"
            if dy:
                lossy.append(("scroll_axis_dropped", f"vertical {dy:g} dropped"))
        lossy.append(("scroll_direction_only", f"dx={dx:g}, dy={dy:g} {action.get('unit') or 'tick'} -> {direction}"))
        return f"scroll(start_box={box()}, direction='{direction}')", lossy
    if t == "type":
        return f"type(content={_q(action.get('text') or '')})", lossy
    if t in ("key", "hotkey"):
        keys = [key_name(k) for k in action.get("keys") or ()]
        if len(keys) > 3:
            lossy.append(("hotkey_over_3_keys", f"hotkey {' '.join(keys)}: UI-TARS allows at most 3 keys"))
        n = press_count(action)
        if n > 1:
            lossy.append(("key_count_dropped", f"{' '.join(keys)} pressed {n} times (auto-repeat): UI-TARS hotkey has no count"))
        return f"hotkey(key={_q(' '.join(keys))})", lossy
    if t == "wait":
        return "wait()", lossy
    if t == "done":
        return "finished()", lossy
    if t == "fail":
        lossy.append(("fail_as_call_user", "UI-TARS has no failure action; call_user()"))
        return "call_user()", lossy
    lossy.append(("action_unsupported", f"{t} has no UI-TARS action; sample skipped"))
    return None, lossy


def export(dataset: CanonicalDataset, out: Path, config: SFTChatConfig = SFTChatConfig()) -> ExportSummary:
    """Write the SFT chat export of ``dataset`` into ``out`` (see module docstring).

    Raises:
        ExportError: ``out`` is not empty (without ``overwrite``), an image is unreadable, or
            generated pyautogui code fails validation.
    """
    out = prepare_out(Path(out), config.overwrite)
    images = out / "images"
    images.mkdir(exist_ok=True)
    summary = ExportSummary(format=NAME, out=str(out), settings=asdict(config))
    scroll = ScrollSettings(config.pixels_per_tick)
    system = _SYSTEM[config.action_format] + _COORD_TEXT[config.coords]
    with open(out / "sft.jsonl", "w", encoding="utf-8") as f:
        for info, rows in dataset.iter_episodes():
            eid = info["episode_id"]
            history: list[str] = []
            for row in rows:
                a, sid = {**row["action"], "target": row.get("target")}, row["step_index"]
                note_unknown_outcome(summary, info, row)
                frame = step_frame(row, info)
                summary.steps += 1

                def point(x: float, y: float, frame: cs.Frame | None = frame) -> tuple[Any, Any]:
                    assert frame is not None
                    return cs.convert(frame, x, y, config.coords, max_pixels=config.max_pixels)

                text: str | None
                if is_empty_typing(a):
                    summary.add_lossy("empty_text_dropped", eid, sid, "typing edited away to nothing: no sample, not in history")
                    continue
                if frame is None and a.get("x") is not None:
                    summary.add_lossy("no_frame_for_coordinates", eid, sid, "no observation and no screen size")
                    history.append(describe(a, row.get("target")))
                    continue
                if config.action_format == "pyautogui":
                    code = action_code(a, point, scroll=scroll)
                    validate_code(code.code)
                    text, lossy = code.code, code.lossy
                else:
                    text, lossy = uitars_action(a, point)
                for kind, detail in lossy:
                    summary.add_lossy(kind, eid, sid, detail)
                if row["image"] is None or text is None:
                    if row["image"] is None:
                        summary.add_lossy("no_observation", eid, sid, "no screenshot before this action; no sample, kept in history")
                    history.append(text if text is not None else describe(a, row.get("target")))
                    continue
                obs = row["observation"]
                size = (obs["width"], obs["height"])
                resize = None
                if config.coords == "resized":
                    rh, rw = cs.smart_resize(obs["height"], obs["width"], max_pixels=config.max_pixels)
                    size = resize = (rw, rh)
                name, data = image_file(row, config.image_format, f"{eid}-{sid:04d}", size=resize)
                image_name = f"images/{name}"
                (out / image_name).write_bytes(data)
                summary.files += 1
                shown = history if config.history is None else history[len(history) - config.history:] if config.history else []
                first = len(history) - len(shown)
                prompt = "<image>\nTask: " + (info.get("instruction") or "(unknown)")
                if shown:
                    prompt += "\nPrevious actions:\n" + "\n".join(
                        f"Step {first + k + 1}: {h.replace(chr(10), '; ')}" for k, h in enumerate(shown))
                answer = text if config.action_format == "pyautogui" else f"Action: {text}"
                sample = {
                    "id": f"{eid}_{sid:04d}",
                    "messages": [
                        {"role": "system", "content": system},
                        {"role": "user", "content": prompt},
                        {"role": "assistant", "content": answer},
                    ],
                    "images": [image_name],
                    "image_size": list(size),
                }
                f.write(json.dumps(sample, ensure_ascii=False) + "\n")
                summary.records += 1
                history.append(text)
            summary.episodes += 1
    summary.files += 1
    summary.write(out)
    return summary
