"""OSWorld exporter: computer_13 action dicts and per-episode ``traj.jsonl``.

Action space, from OSWorld ``desktop_env/actions.py`` (``ACTION_SPACE``): ``MOVE_TO`` {x, y},
``CLICK`` {button, x, y, num_clicks}, ``MOUSE_DOWN`` / ``MOUSE_UP`` {button}, ``RIGHT_CLICK``
{x, y}, ``DOUBLE_CLICK`` {x, y}, ``DRAG_TO`` {x, y} (left button), ``SCROLL`` {dx, dy} (ints,
no position: preceded by ``MOVE_TO``), ``TYPING`` {text}, ``PRESS`` {key}, ``KEY_DOWN`` /
``KEY_UP`` {key}, ``HOTKEY`` {keys}, ``WAIT``, ``FAIL``, ``DONE``. Keys are pyautogui key names
(``KEYBOARD_KEYS``). Coordinates are **screen pixels** (integers): OSWorld runs them with
pyautogui on the VM screen and its screenshots are the screen at full size (``X_MAX`` /
``Y_MAX`` = screen size). Here: physical desktop pixels relative to the observed screen's
top-left corner. When the recorder stored a downscaled frame, the screenshot PNG is scaled
back up to the screen size (Lanczos; reported as ``screenshot_rescaled``) so that pixels of
the file and of the actions agree.

Held modifiers (Ctrl-click, Shift-drag, Ctrl+wheel) become ``KEY_DOWN`` lines before the
action and ``KEY_UP`` lines after it. Auto-repeated keys (``count`` n > 1) become n ``PRESS``
lines; an auto-repeated hotkey becomes ``KEY_DOWN`` modifiers, n ``PRESS`` of its last key,
``KEY_UP``. Empty typing (``empty_text``) is dropped (``empty_text_dropped``).

Trajectory lines, from OSWorld ``lib_run_single.py``: ``{"step_num", "action_timestamp",
"action", "reward", "done", "info", "screenshot_file"}``; one line per computer_13 action, so a
canonical drag or scroll gives two lines with the same ``step_num``. As in OSWorld, the
screenshot of line ``step_num = k`` is the screen **after** step k: here the observation of
the next step (the terminal DONE / FAIL step keeps its own, since it changes nothing); the
first observation is ``initial_state.png``. ``info.observation_file`` names the screenshot
taken *before* the action (the one a policy acted on).

``action_timestamp`` uses OSWorld's ``%Y%m%d@%H%M%S`` format applied to the time since session
start on a 1970-01-01 epoch: no wall-clock time is exported (DESIGN.md section 8.11).
``reward`` is 0 on every line (OSWorld's env.step also returns 0; evaluation is separate);
``result.txt`` holds 1.0 / 0.0 for a success / failure episode (absent when unknown).

Lossy (reported in the summary): non-ASCII ``TYPING`` (pyautogui ``typewrite`` cannot type it),
non-left drags, pixel / fractional scrolls rounded to clicks, ``WAIT`` durations, unknown key
names, steps without observation.

Output: ``OUT/<episode_id>/traj.jsonl``, ``task.json``, ``initial_state.png``,
``step_<n>_<timestamp>.png``, ``result.txt``; ``OUT/summary.json``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import coords
from .base import ExportSummary, note_unknown_outcome, prepare_out, step_frame, to_png
from .canonical import CanonicalDataset
from .pyautogui import (
    ScrollSettings,
    held_modifiers,
    is_empty_typing,
    is_known_key,
    key_name,
    press_count,
)

NAME = "osworld"


@dataclass(frozen=True)
class OSWorldConfig:
    """Settings: ``overwrite`` an existing output folder; ``pixels_per_tick`` for pixel-unit
    scrolls (see :class:`~demotrace.export.pyautogui.ScrollSettings`)."""

    overwrite: bool = False
    pixels_per_tick: float = ScrollSettings.pixels_per_tick


def action_timestamp(t_ns: int) -> str:
    """OSWorld's ``%Y%m%d@%H%M%S`` applied to ``t_ns`` (ns since session start) on a 1970-01-01
    epoch, e.g. 3725 s → ``19700101@010205``."""
    return time.strftime("%Y%m%d@%H%M%S", time.gmtime(t_ns // 1_000_000_000))


def _clicks(v: float, what: str, lossy: list[tuple[str, str]]) -> int:
    if v == 0:
        return 0
    n = int(abs(v) + 0.5) * (1 if v > 0 else -1) or (1 if v > 0 else -1)
    if n != v:
        lossy.append(("scroll_rounded", f"{what} {v:g} -> {n} click(s)"))
    return n


def computer13(action: dict[str, Any], frame: coords.Frame | None, *,
               pixels_per_tick: float = ScrollSettings.pixels_per_tick) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """computer_13 action dicts for one canonical action, and the lossy conversions made.

    ``frame``: the observed screen; desktop pixels become screen pixels relative to its
    origin (``frame.bx``, ``frame.by``) — required for pointer actions. Held modifiers of a
    click / drag / scroll wrap it in ``KEY_DOWN`` / ``KEY_UP``.
    """
    acts, lossy = _computer13(action, frame, pixels_per_tick)
    mods = held_modifiers(action)
    if mods:
        for m in mods:
            if not is_known_key(m):
                lossy.append(("unknown_key", f"{m!r} is not in KEYBOARD_KEYS"))
        acts = ([{"action_type": "KEY_DOWN", "parameters": {"key": m}} for m in mods] + acts
                + [{"action_type": "KEY_UP", "parameters": {"key": m}} for m in reversed(mods)])
    return acts, lossy


def _computer13(action: dict[str, Any], frame: coords.Frame | None,
                pixels_per_tick: float) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    t = action["type"]
    lossy: list[tuple[str, str]] = []

    def xy(xk: str = "x", yk: str = "y") -> dict[str, int]:
        assert frame is not None, "pointer action without a coordinate frame"
        return {"x": round(float(action[xk]) - frame.bx), "y": round(float(action[yk]) - frame.by)}

    def a(kind: str, **params: Any) -> dict[str, Any]:
        return {"action_type": kind, "parameters": params}

    button = action.get("button") or "left"
    if t == "click":
        n = int(action.get("count") or 1)
        if button == "left" and n == 2:
            return [a("DOUBLE_CLICK", **xy())], lossy
        if button == "right" and n == 1:
            return [a("RIGHT_CLICK", **xy())], lossy
        if button not in ("left", "right", "middle"):
            lossy.append(("button_unsupported", f"{button} click as left"))
            button = "left"
        return [a("CLICK", button=button, **xy(), num_clicks=n)], lossy
    if t == "drag":
        if button != "left":
            lossy.append(("drag_button_unsupported", f"{button} drag exported as DRAG_TO (left button)"))
        return [a("MOVE_TO", **xy()), a("DRAG_TO", **xy("x2", "y2"))], lossy
    if t == "scroll":
        dx, dy = float(action.get("dx") or 0), float(action.get("dy") or 0)
        if (action.get("unit") or "tick") == "pixel":
            lossy.append(("scroll_pixels_to_clicks", f"dx={dx:g}, dy={dy:g} px at {pixels_per_tick:g} px/click"))
            dx, dy = dx / pixels_per_tick, dy / pixels_per_tick
        return [a("MOVE_TO", **xy()), a("SCROLL", dx=_clicks(dx, "dx", lossy), dy=_clicks(dy, "dy", lossy))], lossy
    if t == "type":
        text = action.get("text") or ""
        bad = sorted({c for c in text if ord(c) > 127})
        if bad:
            lossy.append(("non_ascii_typing", f"TYPING {text!r}: pyautogui.typewrite cannot type {''.join(bad)!r}"))
        return [a("TYPING", text=text)], lossy
    if t in ("key", "hotkey", "key_down", "key_up"):
        keys = [key_name(k) for k in action.get("keys") or ()]
        for k in keys:
            if not is_known_key(k):
                lossy.append(("unknown_key", f"{k!r} is not in KEYBOARD_KEYS"))
        n = press_count(action) if t in ("key", "hotkey") else 1
        if t == "hotkey" and n > 1:  # modifiers held while the last key auto-repeated
            return ([a("KEY_DOWN", key=m) for m in keys[:-1]] + [a("PRESS", key=keys[-1])] * n
                    + [a("KEY_UP", key=m) for m in reversed(keys[:-1])]), lossy
        if t == "hotkey":
            return [a("HOTKEY", keys=keys)], lossy
        kind = {"key": "PRESS", "key_down": "KEY_DOWN", "key_up": "KEY_UP"}[t]
        return [a(kind, key=k) for k in keys] * n, lossy
    if t in ("mouse_down", "mouse_up"):
        kind = "MOUSE_DOWN" if t == "mouse_down" else "MOUSE_UP"
        out = [a("MOVE_TO", **xy())] if action.get("x") is not None else []
        return out + [a(kind, button=button)], lossy
    if t == "move":
        return [a("MOVE_TO", **xy())], lossy
    if t == "wait":
        if action.get("seconds"):
            lossy.append(("wait_duration_dropped", f"WAIT has no duration; {action['seconds']:g} s dropped"))
        return [{"action_type": "WAIT"}], lossy
    if t == "done":
        return [{"action_type": "DONE"}], lossy
    if t == "fail":
        return [{"action_type": "FAIL"}], lossy
    if t == "select_option":
        lossy.append(("select_option_as_click_and_type", f"option {action.get('text')!r}"))
        bounds = (action.get("target") or {}).get("bounds")
        out = []
        if bounds and frame is not None:
            px, py = bounds[0] + bounds[2] / 2 - frame.bx, bounds[1] + bounds[3] / 2 - frame.by
            out.append(a("CLICK", button="left", x=round(px), y=round(py), num_clicks=1))
        return out + [a("TYPING", text=action.get("text") or "")], lossy
    raise ValueError(f"unknown action type {t!r}")


def _screenshot(row: dict[str, Any], summary: ExportSummary, eid: str, sid: int) -> bytes:
    """The observation as PNG at the observed screen's size (``bounds`` w x h): a downscaled
    frame is scaled back up (Lanczos) and reported as ``screenshot_rescaled``."""
    obs = row["observation"]
    screen = (round(obs["bounds"][2]), round(obs["bounds"][3]))
    if screen == (obs["width"], obs["height"]):
        return to_png(row["image"]["bytes"])
    summary.add_lossy("screenshot_rescaled", eid, sid,
                      f"frame {obs['width']}x{obs['height']} scaled to the screen's {screen[0]}x{screen[1]}")
    return to_png(row["image"]["bytes"], size=screen)


def _flush(f: Any, held: list[dict[str, Any]], screenshot: str | None) -> int:
    """Write the held lines of a step with their after-step ``screenshot_file``; empties
    ``held`` and returns the number of lines written."""
    n = len(held)
    for line in held:
        line["screenshot_file"] = screenshot
        f.write(json.dumps(line, ensure_ascii=False) + "\n")
    held.clear()
    return n


def export(dataset: CanonicalDataset, out: Path, config: OSWorldConfig = OSWorldConfig()) -> ExportSummary:
    """Write the OSWorld export of ``dataset`` into ``out`` (see module docstring).

    Raises:
        ExportError: ``out`` is not empty (without ``overwrite``) or an image is unreadable.
    """
    out = prepare_out(Path(out), config.overwrite)
    summary = ExportSummary(format=NAME, out=str(out), settings=asdict(config))
    for info, rows in dataset.iter_episodes():
        eid = info["episode_id"]
        ep_dir = out / eid
        ep_dir.mkdir()
        # One row of look-ahead: a step's lines need the next step's observation file (the
        # screen after the step), so they are written when the next row arrives.
        with open(ep_dir / "traj.jsonl", "w", encoding="utf-8") as f:
            held: list[dict[str, Any]] = []   # lines of the previous step, screenshot pending
            prev: dict[str, Any] | None = None
            n_out = 0  # steps written (dropped steps leave no gap in step_num)
            for i, row in enumerate(rows):
                a = {**row["action"], "target": row.get("target")}
                sid = row["step_index"]
                note_unknown_outcome(summary, info, row)
                obs_file = None
                if row["image"] is None:
                    summary.add_lossy("no_observation", eid, sid, "no screenshot before this action")
                else:
                    obs_file = ("initial_state.png" if prev is None
                                else f"step_{i}_{action_timestamp(prev['t_start_ns'])}.png")
                    (ep_dir / obs_file).write_bytes(_screenshot(row, summary, eid, sid))
                    summary.files += 1
                summary.records += _flush(f, held, obs_file)
                prev = row
                if is_empty_typing(a):
                    summary.add_lossy("empty_text_dropped", eid, sid, "typing edited away to nothing: step dropped")
                    continue
                frame = step_frame(row, info)
                if frame is None and a.get("x") is not None:
                    summary.add_lossy("no_frame_for_coordinates", eid, sid, "no observation and no screen size: step dropped")
                    continue
                actions, lossy = computer13(a, frame, pixels_per_tick=config.pixels_per_tick)
                for kind, detail in lossy:
                    summary.add_lossy(kind, eid, sid, detail)
                terminal = a["type"] in ("done", "fail")
                held = [{
                    "step_num": n_out + 1,
                    "action_timestamp": action_timestamp(row["t_start_ns"]),
                    "action": act,
                    "reward": 0,
                    "done": terminal and j == len(actions) - 1,
                    "info": {"episode_id": eid, "step_index": sid, "observation_file": obs_file,
                             "observation_gap_ns": (row["observation"] or {}).get("gap_ns")},
                    "screenshot_file": None,
                } for j, act in enumerate(actions)]
                summary.steps += 1
                n_out += 1
                if terminal:  # DONE / FAIL change nothing: the screen after is the one before
                    summary.records += _flush(f, held, obs_file)
            summary.records += _flush(f, held, None)
        task = {"id": eid, "instruction": info.get("instruction") or "", "status": info.get("status"),
                "screen": info.get("screen")}
        (ep_dir / "task.json").write_text(json.dumps(task, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        if info.get("status") in ("success", "failure"):
            (ep_dir / "result.txt").write_text(f"{1.0 if info['status'] == 'success' else 0.0}\n", encoding="utf-8")
        summary.files += 2
        summary.episodes += 1
    summary.write(out)
    return summary
