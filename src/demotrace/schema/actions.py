"""Canonical actions, steps and episodes (DESIGN.md section 5).

The canonical action set is the union of what the field's trainers use (OSWorld computer_13,
pyautogui code as in OSWorld / AgentNet, Mind2Web operations). Coordinates are absolute
**physical pixels of the virtual desktop**; exporters convert at export time using the
observation's ``bounds`` and size.

Times are nanoseconds on the session's monotonic clock (``t_ns`` of the raw events).
"""

from __future__ import annotations

from typing import Literal

import msgspec

from .events import Rect

ActionType = Literal[
    "move",
    "click",
    "drag",
    "scroll",
    "type",
    "key",
    "hotkey",
    "key_down",
    "key_up",
    "mouse_down",
    "mouse_up",
    "select_option",
    "wait",
    "done",
    "fail",
]


class Point(msgspec.Struct, frozen=True, array_like=True):
    """A pointer sample: ``x``, ``y`` in physical desktop pixels at ``t_ns``."""

    x: float
    y: float
    t_ns: int


class Context(msgspec.Struct, frozen=True):
    """Where an action happened: focused window and application (see ``FocusChange``)."""

    window_id: int | None = None
    app_id: str | None = None
    title: str | None = None
    url: str | None = None
    window_bounds: Rect | None = None


class Target(msgspec.Struct, frozen=True):
    """The UI element an action acted on, if the recording has one (see ``Element``)."""

    role: str | None = None
    name: str | None = None
    bounds: Rect | None = None
    source: str = "unknown"
    selector: str | None = None
    tag: str | None = None
    attributes: dict[str, str] = {}


class Action(msgspec.Struct, frozen=True, kw_only=True):
    """One canonical action.

    Fields used per ``type``:

    - click: ``x``, ``y``, ``button`` ("left" | "right" | "middle"), ``count`` 1–3;
      ``keys`` = modifiers held (pyautogui names, e.g. ["ctrl"] for Ctrl-click), else empty
    - drag: ``x``, ``y`` (start), ``x2``, ``y2`` (end), ``button``, ``path`` (samples);
      ``keys`` = modifiers held
    - scroll: ``x``, ``y``, ``dx``, ``dy`` (dy > 0 = up), ``unit`` ("tick" | "pixel");
      ``keys`` = modifiers held (Ctrl+wheel = zoom)
    - type: ``text`` (edits applied); ``keys`` keeps the raw W3C key values for provenance
    - key: ``keys`` = [name], the pyautogui name ("enter", "esc", "left", "f5"; map in
      :mod:`demotrace.build.keys`); ``count`` = presses produced (> 1 when auto-repeated)
    - hotkey: ``keys`` = pyautogui-style names, modifiers first, e.g. ["ctrl", "c"];
      ``count`` as for key
    - move: ``x``, ``y``; mouse_down / mouse_up: ``x``, ``y``, ``button``
    - key_down / key_up: ``keys`` = [name]
    - select_option: ``text`` = the option value; ``target`` the select element
    - wait: ``seconds``; done / fail: terminal, no fields

    Common: ``t_start_ns`` / ``t_end_ns`` (first / last raw event), ``source_seqs`` (the raw
    events it came from), ``pre_move`` (pointer trace folded in before it), ``context``,
    ``target``, ``flags`` (e.g. "auto_repeat", "unpaired_release", "ime_text",
    "secret_dropped"; the builder's flags are listed in :mod:`demotrace.build.reduce`).
    """

    type: ActionType
    t_start_ns: int
    t_end_ns: int
    x: float | None = None
    y: float | None = None
    x2: float | None = None
    y2: float | None = None
    button: str | None = None
    count: int | None = None
    dx: float | None = None
    dy: float | None = None
    unit: str | None = None
    text: str | None = None
    keys: tuple[str, ...] = ()
    seconds: float | None = None
    path: tuple[Point, ...] = ()
    pre_move: tuple[Point, ...] = ()
    source_seqs: tuple[int, ...] = ()
    context: Context | None = None
    target: Target | None = None
    flags: tuple[str, ...] = ()


class Observation(msgspec.Struct, frozen=True, kw_only=True):
    """The screen before an action: a stored frame.

    ``blob``: content id in the source's blob store; ``bounds``: desktop region shown (physical
    pixels); ``width``/``height``: image pixels; ``captured_t_ns``: grab finished;
    ``gap_ns``: action ``t_start_ns`` − ``captured_t_ns`` (≥ 0 by construction).
    """

    blob: str
    format: str
    bounds: Rect
    width: int
    height: int
    captured_t_ns: int
    gap_ns: int


class Step(msgspec.Struct, frozen=True, kw_only=True):
    """One trajectory step: (observation before the action, the action, its target).

    ``observation`` is ``None`` when no frame was captured before the action; then
    ``flags`` contains "no_observation" (never filled with a later frame).
    """

    index: int
    action: Action
    observation: Observation | None
    flags: tuple[str, ...] = ()


class Episode(msgspec.Struct, kw_only=True):
    """A task attempt: ordered steps ending with a terminal ``done`` or ``fail`` action.

    ``episode_id`` is deterministic (``<session_id>-<index>``) so erasure can find rows again;
    ``instruction`` is ``None`` when unknown (segmented without task markers); ``status``:
    "success" | "failure" | "abandoned" | "unknown"; ``segmented_by``: "task_marker" |
    "idle_gap" | "pause" | "private_gap" | "session_end".
    """

    episode_id: str
    session_id: str
    index: int
    instruction: str | None
    status: str
    segmented_by: str
    t_start_ns: int
    t_end_ns: int
    steps: list[Step]
    screen: Rect | None = None
