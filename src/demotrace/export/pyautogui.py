"""Canonical action → pyautogui code, and a strict validator for such code.

The code strings follow the conventions of OSWorld's ``pyautogui`` action space and the
AgentNet / OpenCUA trajectories (``pyautogui.click(x=0.1632, y=0.2711)``; the terminal step is
``computer.terminate(status='success')`` — xlangai/AgentNet dataset card, OpenCUA
``evaluation/agentnetbench/agent/opencua.py`` system prompts).

Mapping (DESIGN.md section 5):

==============  ===========================================================================
canonical       code
==============  ===========================================================================
click           ``click`` / ``doubleClick`` / ``tripleClick`` / ``rightClick`` /
                ``middleClick`` (other button × count: ``click(..., clicks=n, button=b)``)
held modifiers  click / drag / scroll with ``keys`` (modifiers held, e.g. Ctrl-click):
                ``keyDown(m)`` for each, the action, ``keyUp(m)`` in reverse order
drag            ``moveTo(x1, y1)`` + ``dragTo(x2, y2, button=b)``
scroll          ``scroll(n, x=, y=)`` (vertical) and ``hscroll(n, x=, y=)`` (horizontal);
                n in wheel clicks, up / right positive as in the canonical action
type            ``write(text)`` (an ``empty_text`` run gives ``write('')``, a no-op; the
                trainer exporters drop such steps, see :func:`is_empty_typing`)
key             ``press(name)``, auto-repeated (``count`` n > 1): ``press(name, presses=n)``
hotkey          ``hotkey(k1, k2, …)``; with ``count`` n > 1 (the last key auto-repeated while
                the modifiers were held): ``keyDown(k1)`` … ``press(kn, presses=n)`` …
                ``keyUp(k1)``
key_down/up     ``keyDown`` / ``keyUp``;  mouse_down/up: ``mouseDown`` / ``mouseUp``
move            ``moveTo``;  wait: ``sleep(seconds)``
done / fail     ``computer.terminate(status='success' | 'failure')``
select_option   ``click`` on the target's centre + ``write(value)`` (lossy, reported)
==============  ===========================================================================

Lossy conversions are returned with the code (never silent); see :class:`Code`.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ExportError

#: pyautogui functions a code string may call.
ALLOWED_PYAUTOGUI = frozenset({
    "click", "doubleClick", "tripleClick", "rightClick", "middleClick", "moveTo", "dragTo",
    "scroll", "hscroll", "vscroll", "write", "typewrite", "press", "hotkey", "keyDown", "keyUp",
    "mouseDown", "mouseUp", "sleep",
})
#: ``computer.*`` functions a code string may call (OpenCUA's terminal action).
ALLOWED_COMPUTER = frozenset({"terminate"})

#: pyautogui's key names (``pyautogui.KEY_NAMES``; the same list is OSWorld's
#: ``desktop_env/actions.py`` ``KEYBOARD_KEYS``).
PYAUTOGUI_KEYS = frozenset(
    ["\t", "\n", "\r", " ", "!", '"', "#", "$", "%", "&", "'", "(", ")", "*", "+", ",", "-",
     ".", "/", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", ":", ";", "<", "=", ">", "?",
     "@", "[", "\\", "]", "^", "_", "`", "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k",
     "l", "m", "n", "o", "p", "q", "r", "s", "t", "u", "v", "w", "x", "y", "z", "{", "|", "}",
     "~", "accept", "add", "alt", "altleft", "altright", "apps", "backspace", "browserback",
     "browserfavorites", "browserforward", "browserhome", "browserrefresh", "browsersearch",
     "browserstop", "capslock", "clear", "convert", "ctrl", "ctrlleft", "ctrlright", "decimal",
     "del", "delete", "divide", "down", "end", "enter", "esc", "escape", "execute"]
    + [f"f{i}" for i in range(1, 25)]
    + ["final", "fn", "hanguel", "hangul", "hanja", "help", "home", "insert", "junja", "kana",
       "kanji", "launchapp1", "launchapp2", "launchmail", "launchmediaselect", "left",
       "modechange", "multiply", "nexttrack", "nonconvert", "num0", "num1", "num2", "num3",
       "num4", "num5", "num6", "num7", "num8", "num9", "numlock", "pagedown", "pageup", "pause",
       "pgdn", "pgup", "playpause", "prevtrack", "print", "printscreen", "prntscrn", "prtsc",
       "prtscr", "return", "right", "scrolllock", "select", "separator", "shift", "shiftleft",
       "shiftright", "sleep", "space", "stop", "subtract", "tab", "up", "volumedown",
       "volumemute", "volumeup", "win", "winleft", "winright", "yen", "command", "option",
       "optionleft", "optionright"]
)

#: W3C UI Events ``key`` values → pyautogui key names (https://www.w3.org/TR/uievents-key/).
W3C_TO_PYAUTOGUI = {
    "Enter": "enter", "Tab": "tab", "Escape": "esc", "Backspace": "backspace",
    "Delete": "delete", "Insert": "insert", "Home": "home", "End": "end", "PageUp": "pageup",
    "PageDown": "pagedown", "ArrowUp": "up", "ArrowDown": "down", "ArrowLeft": "left",
    "ArrowRight": "right", " ": "space", "Control": "ctrl", "Shift": "shift", "Alt": "alt",
    "AltGraph": "altright", "Meta": "win", "Super": "win", "OS": "win", "CapsLock": "capslock",
    "NumLock": "numlock", "ScrollLock": "scrolllock", "Pause": "pause",
    "PrintScreen": "printscreen", "ContextMenu": "apps", "Help": "help", "Clear": "clear",
    "AudioVolumeUp": "volumeup", "AudioVolumeDown": "volumedown", "AudioVolumeMute": "volumemute",
    "MediaPlayPause": "playpause", "MediaTrackNext": "nexttrack",
    "MediaTrackPrevious": "prevtrack", "MediaStop": "stop", "BrowserBack": "browserback",
    "BrowserForward": "browserforward", "BrowserRefresh": "browserrefresh",
    "BrowserHome": "browserhome", "BrowserSearch": "browsersearch",
    "BrowserFavorites": "browserfavorites", "BrowserStop": "browserstop",
}


def key_name(key: str) -> str:
    """A W3C key value or pyautogui name → pyautogui key name ("ArrowLeft" → "left",
    "F5" → "f5", "A" → "a"). Unknown names are lower-cased (see :func:`is_known_key`)."""
    if key in W3C_TO_PYAUTOGUI:
        return W3C_TO_PYAUTOGUI[key]
    if len(key) >= 2 and key[0] == "F" and key[1:].isdigit():
        return key.lower()
    return key.lower() if len(key) != 1 or key.isalpha() else key


def is_known_key(name: str) -> bool:
    """True if ``name`` is one of pyautogui's key names."""
    return name in PYAUTOGUI_KEYS


@dataclass(frozen=True)
class ScrollSettings:
    """How scroll amounts become pyautogui wheel clicks.

    ``pixels_per_tick``: pixels one wheel notch scrolls, used for ``unit="pixel"`` scrolls
    (default 100: Chromium / Edge on Windows scroll 100 px per notch — 3 lines of ~33 px —
    and macOS's Chromium uses 40 px lines × 3 = 120; 100 is the common middle). Fractional tick
    counts are rounded half away from zero; a non-zero amount that rounds to 0 becomes ±1.
    Both changes are reported as lossy.
    """

    pixels_per_tick: float = 100.0


@dataclass
class Code:
    """pyautogui code for one action plus what was lost converting it.

    ``code``: one or more lines; ``lossy``: list of ``(kind, detail)`` pairs, e.g.
    ``("scroll_rounded", "dy 0.3 tick -> 1 click")``.
    """

    code: str
    lossy: list[tuple[str, str]] = field(default_factory=list)


def _num(v: float) -> str:
    """Integers as they are (pixels, 0–1000), floats with 4 decimals (0–1, AgentNet)."""
    return str(v) if isinstance(v, int) else f"{v:.4f}"


def _round_clicks(amount: float, what: str, lossy: list[tuple[str, str]]) -> int:
    if amount == 0:
        return 0
    n = int(abs(amount) + 0.5) * (1 if amount > 0 else -1)
    if n == 0:
        n = 1 if amount > 0 else -1
    if n != amount:
        lossy.append(("scroll_rounded", f"{what} {amount:g} -> {n} click(s)"))
    return n


PointFn = Callable[[float, float], tuple[Any, Any]]

#: Action types whose ``keys`` are the modifiers held during the action (schema/actions.py).
MODIFIER_ACTIONS = frozenset({"click", "drag", "scroll"})


def held_modifiers(action: Mapping[str, Any]) -> list[str]:
    """pyautogui names of the modifiers held during a click / drag / scroll (its ``keys``,
    e.g. ``["ctrl"]`` for Ctrl-click); empty for other action types, whose ``keys`` mean
    something else (type: raw key values; key / hotkey: the keys pressed)."""
    if action.get("type") not in MODIFIER_ACTIONS:
        return []
    return [key_name(k) for k in action.get("keys") or ()]


def press_count(action: Mapping[str, Any]) -> int:
    """Presses a key / hotkey action produced (``count``, 1 when absent; > 1 = auto-repeat)."""
    return max(1, int(action.get("count") or 1))


def is_empty_typing(action: Mapping[str, Any]) -> bool:
    """True for a ``type`` action whose text is empty (the builder flags it ``empty_text``:
    keys were typed and edited away inside the run, so the field is as before).

    **Decision** (docs/datasets.md, "Empty typing"): the canonical dataset keeps such a step —
    it is what happened, and its raw keys stay in ``action_json`` — but the trainer /
    benchmark exporters (agentnet, osworld, sft-chat, mind2web) drop it and report
    ``empty_text_dropped``: as a training target ``write('')`` teaches a no-op.
    """
    return action.get("type") == "type" and not (action.get("text") or "")


def action_code(action: Mapping[str, Any], point: PointFn, *,
                scroll: ScrollSettings = ScrollSettings()) -> Code:
    """pyautogui code for one canonical action (see the module table).

    ``action``: the canonical action as a mapping with :class:`demotrace.schema.Action` field
    names (a canonical dataset row's ``action`` struct, or ``msgspec.to_builtins(action)``).
    ``point(x, y)``: converts desktop physical pixels to the target coordinate system and
    returns numbers ready to print: ints for pixels, floats rounded to 4 decimals for 0–1.
    Modifiers held during a click / drag / scroll are pressed around it (``keyDown`` …
    ``keyUp``), never dropped.

    Raises:
        ExportError: the action lacks a field its type needs (named in the message).
    """
    code = _plain_code(action, point, scroll)
    mods = held_modifiers(action)
    if not mods:
        return code
    for m in mods:
        if not is_known_key(m):
            code.lossy.append(("unknown_key", f"{m!r} is not a pyautogui key name"))
    lines = [f"pyautogui.keyDown({m!r})" for m in mods] + [code.code]
    lines += [f"pyautogui.keyUp({m!r})" for m in reversed(mods)]
    return Code("\n".join(lines), code.lossy)


def _plain_code(action: Mapping[str, Any], point: PointFn, scroll: ScrollSettings) -> Code:
    """:func:`action_code` without the held modifiers (same arguments and errors)."""
    t = action["type"]
    lossy: list[tuple[str, str]] = []

    def xy(xk: str = "x", yk: str = "y") -> str:
        if action.get(xk) is None or action.get(yk) is None:
            raise ExportError(f"{t} action without {xk}/{yk}")
        px, py = point(float(action[xk]), float(action[yk]))
        return f"x={_num(px)}, y={_num(py)}"

    button = action.get("button") or "left"
    if t == "click":
        count = int(action.get("count") or 1)
        names = {("left", 1): "click", ("left", 2): "doubleClick", ("left", 3): "tripleClick",
                 ("right", 1): "rightClick", ("middle", 1): "middleClick"}
        fn = names.get((button, count))
        if fn is not None:
            return Code(f"pyautogui.{fn}({xy()})", lossy)
        if button not in ("left", "right", "middle"):
            lossy.append(("button_unsupported", f"{button} click as left click"))
            button = "left"
        return Code(f"pyautogui.click({xy()}, clicks={count}, button={button!r})", lossy)
    if t == "drag":
        if button not in ("left", "right", "middle"):
            lossy.append(("button_unsupported", f"{button} drag as left drag"))
            button = "left"
        if len(action.get("path") or ()) > 2:
            lossy.append(("drag_path_straightened", f"{len(action['path'])} path samples -> straight line"))
        return Code(f"pyautogui.moveTo({xy()})\npyautogui.dragTo({xy('x2', 'y2')}, button={button!r})", lossy)
    if t == "scroll":
        dx, dy = float(action.get("dx") or 0), float(action.get("dy") or 0)
        unit = action.get("unit") or "tick"
        if unit == "pixel":
            lossy.append(("scroll_pixels_to_clicks", f"dx={dx:g}, dy={dy:g} px at {scroll.pixels_per_tick:g} px/click"))
            dx, dy = dx / scroll.pixels_per_tick, dy / scroll.pixels_per_tick
        lines = []
        ny = _round_clicks(dy, "dy", lossy)
        nx = _round_clicks(dx, "dx", lossy)
        if ny:
            lines.append(f"pyautogui.scroll({ny}, {xy()})")
        if nx:
            lines.append(f"pyautogui.hscroll({nx}, {xy()})")
        if not lines:
            lossy.append(("scroll_empty", "scroll with dx = dy = 0"))
            lines.append(f"pyautogui.scroll(0, {xy()})")
        return Code("\n".join(lines), lossy)
    if t == "type":
        return Code(f"pyautogui.write({action.get('text') or ''!r})", lossy)
    if t in ("key", "hotkey", "key_down", "key_up"):
        keys = [key_name(k) for k in action.get("keys") or ()]
        if not keys:
            raise ExportError(f"{t} action without keys")
        for k in keys:
            if not is_known_key(k):
                lossy.append(("unknown_key", f"{k!r} is not a pyautogui key name"))
        n = press_count(action) if t in ("key", "hotkey") else 1
        if t == "hotkey" and n > 1:  # modifiers held while the last key auto-repeated
            mods, last = keys[:-1], keys[-1]
            return Code("\n".join([f"pyautogui.keyDown({m!r})" for m in mods]
                                  + [f"pyautogui.press({last!r}, presses={n})"]
                                  + [f"pyautogui.keyUp({m!r})" for m in reversed(mods)]), lossy)
        if t == "hotkey":
            return Code("pyautogui.hotkey(" + ", ".join(repr(k) for k in keys) + ")", lossy)
        fn = {"key": "press", "key_down": "keyDown", "key_up": "keyUp"}[t]
        if n > 1:
            return Code("\n".join(f"pyautogui.press({k!r}, presses={n})" for k in keys), lossy)
        if len(keys) > 1:
            return Code("\n".join(f"pyautogui.{fn}({k!r})" for k in keys), lossy)
        return Code(f"pyautogui.{fn}({keys[0]!r})", lossy)
    if t in ("mouse_down", "mouse_up"):
        fn = "mouseDown" if t == "mouse_down" else "mouseUp"
        return Code(f"pyautogui.{fn}({xy()}, button={button!r})", lossy)
    if t == "move":
        return Code(f"pyautogui.moveTo({xy()})", lossy)
    if t == "wait":
        return Code(f"pyautogui.sleep({float(action.get('seconds') or 0):g})", lossy)
    if t == "done":
        return Code("computer.terminate(status='success')", lossy)
    if t == "fail":
        return Code("computer.terminate(status='failure')", lossy)
    if t == "select_option":
        value = action.get("text") or ""
        target = action.get("target") or {}
        bounds = target.get("bounds") if isinstance(target, Mapping) else None
        lossy.append(("select_option_as_click_and_type", f"option {value!r}"))
        lines = []
        if bounds:
            cx, cy = bounds[0] + bounds[2] / 2, bounds[1] + bounds[3] / 2
            px, py = point(cx, cy)
            lines.append(f"pyautogui.click(x={_num(px)}, y={_num(py)})")
        lines.append(f"pyautogui.write({value!r})")
        return Code("\n".join(lines), lossy)
    raise ExportError(f"unknown action type {t!r}")


def _literal(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, (int, float, str, bool)) or node.value is None
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return isinstance(node.operand, ast.Constant) and isinstance(node.operand.value, (int, float))
    if isinstance(node, (ast.List, ast.Tuple)):
        return all(_literal(e) for e in node.elts)
    return False


def validate_code(code: str) -> list[str]:
    """Check that ``code`` only calls allowed functions with literal arguments.

    Allowed: one call per line to ``pyautogui.<f>`` for f in :data:`ALLOWED_PYAUTOGUI`, or
    ``computer.terminate``; arguments must be literals (numbers, strings, booleans, lists).
    No imports, assignments, attribute chains or other statements.

    Returns the called names in order (e.g. ``["pyautogui.moveTo", "pyautogui.dragTo"]``).

    Raises:
        ExportError: syntax error or a disallowed construct (line number in the message).
    """
    try:
        tree = ast.parse(code, mode="exec")
    except SyntaxError as exc:
        raise ExportError(f"pyautogui code does not parse (line {exc.lineno}): {exc.msg}: {code!r}") from exc
    called: list[str] = []
    if not tree.body:
        raise ExportError("empty pyautogui code")
    for stmt in tree.body:
        where = f"line {stmt.lineno}"
        if not isinstance(stmt, ast.Expr) or not isinstance(stmt.value, ast.Call):
            raise ExportError(f"{where}: only function calls are allowed, got {type(stmt).__name__}: {code!r}")
        call = stmt.value
        func = call.func
        if not (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)):
            raise ExportError(f"{where}: call must be pyautogui.<f> or computer.<f>: {code!r}")
        mod, name = func.value.id, func.attr
        allowed = ALLOWED_PYAUTOGUI if mod == "pyautogui" else ALLOWED_COMPUTER if mod == "computer" else frozenset()
        if name not in allowed:
            raise ExportError(f"{where}: {mod}.{name} is not an allowed call: {code!r}")
        for arg in list(call.args) + [k.value for k in call.keywords]:
            if not _literal(arg):
                raise ExportError(f"{where}: {mod}.{name} has a non-literal argument: {code!r}")
        if any(k.arg is None for k in call.keywords):
            raise ExportError(f"{where}: **kwargs not allowed: {code!r}")
        called.append(f"{mod}.{name}")
    return called
