"""X11 keyboard translation: keycode + modifier state → W3C ``code`` / ``key`` / ``text``.

Pure logic over a keyboard mapping (no X connection here), so the X11 backend can keep the
mapping in step with the RECORD stream (see :mod:`demotrace.capture.x11`).

Sources of the rules:

- ``code``: X keycodes on Linux are evdev codes + 8 (xkeyboard-config ``evdev`` keycodes); the
  evdev → W3C table follows the W3C UI Events KeyboardEvent code values spec
  (https://www.w3.org/TR/uievents-code/) as implemented by Chromium's ``dom_code_data.inc``.
- ``key``: the keysym chosen for the modifier state by the core-protocol rules ("Keyboards"
  section of the X11 protocol, as XLookupKeysym applies them) extended with the XKB third level
  (AltGr = the modifier that carries ``ISO_Level3_Shift``); named keysyms map to W3C key values
  (https://www.w3.org/TR/uievents-key/) as Chromium/Firefox do on Linux (e.g. ``Super_L`` →
  ``"Meta"``, ``KP_Begin`` → ``"Clear"``, dead keys → ``"Dead"``).
- keysym → character: Latin-1 keysyms are their code point, ``0x01000000 + U`` keysyms are
  Unicode, the rest come from the keysymdef table shipped with pynput.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

NO_SYMBOL = 0

# X core modifier bits (X.h)
SHIFT_MASK = 1 << 0
LOCK_MASK = 1 << 1
CONTROL_MASK = 1 << 2
MOD_MASKS = (1 << 3, 1 << 4, 1 << 5, 1 << 6, 1 << 7)  # Mod1 … Mod5

# -- evdev code → W3C code ----------------------------------------------------------------------

_EVDEV_CODES: dict[int, str] = {
    1: "Escape", 12: "Minus", 13: "Equal", 14: "Backspace", 15: "Tab",
    26: "BracketLeft", 27: "BracketRight", 28: "Enter", 29: "ControlLeft", 39: "Semicolon",
    40: "Quote", 41: "Backquote", 42: "ShiftLeft", 43: "Backslash", 51: "Comma", 52: "Period",
    53: "Slash", 54: "ShiftRight", 55: "NumpadMultiply", 56: "AltLeft", 57: "Space",
    58: "CapsLock", 69: "NumLock", 70: "ScrollLock", 71: "Numpad7", 72: "Numpad8", 73: "Numpad9",
    74: "NumpadSubtract", 75: "Numpad4", 76: "Numpad5", 77: "Numpad6", 78: "NumpadAdd",
    79: "Numpad1", 80: "Numpad2", 81: "Numpad3", 82: "Numpad0", 83: "NumpadDecimal",
    85: "Lang5", 86: "IntlBackslash", 87: "F11", 88: "F12", 89: "IntlRo", 90: "Lang3",
    91: "Lang4", 92: "Convert", 93: "KanaMode", 94: "NonConvert", 96: "NumpadEnter",
    97: "ControlRight", 98: "NumpadDivide", 99: "PrintScreen", 100: "AltRight", 102: "Home",
    103: "ArrowUp", 104: "PageUp", 105: "ArrowLeft", 106: "ArrowRight", 107: "End",
    108: "ArrowDown", 109: "PageDown", 110: "Insert", 111: "Delete", 113: "AudioVolumeMute",
    114: "AudioVolumeDown", 115: "AudioVolumeUp", 116: "Power", 117: "NumpadEqual",
    119: "Pause", 121: "NumpadComma", 122: "Lang1", 123: "Lang2", 124: "IntlYen",
    125: "MetaLeft", 126: "MetaRight", 127: "ContextMenu", 128: "BrowserStop", 129: "Again",
    130: "Props", 131: "Undo", 132: "Select", 133: "Copy", 134: "Open", 135: "Paste",
    136: "Find", 137: "Cut", 138: "Help", 140: "LaunchApp2", 142: "Sleep", 143: "WakeUp",
    144: "LaunchApp1", 155: "LaunchMail", 156: "BrowserFavorites", 158: "BrowserBack",
    159: "BrowserForward", 161: "Eject", 163: "MediaTrackNext", 164: "MediaPlayPause",
    165: "MediaTrackPrevious", 166: "MediaStop", 172: "BrowserHome", 173: "BrowserRefresh",
    179: "NumpadParenLeft", 180: "NumpadParenRight", 217: "BrowserSearch",
}
for _i, _name in enumerate("1234567890"):
    _EVDEV_CODES[2 + _i] = f"Digit{_name}"
for _row, _start in (("QWERTYUIOP", 16), ("ASDFGHJKL", 30), ("ZXCVBNM", 44)):
    for _i, _ch in enumerate(_row):
        _EVDEV_CODES[_start + _i] = f"Key{_ch}"
for _i in range(10):
    _EVDEV_CODES[59 + _i] = f"F{_i + 1}"  # F1-F10
for _i in range(12):
    _EVDEV_CODES[183 + _i] = f"F{_i + 13}"  # F13-F24


def keycode_to_code(keycode: int) -> str:
    """W3C ``code`` for an X keycode (evdev code + 8); ``"Unidentified"`` when unknown — e.g.
    the spare keycodes xdotool rebinds for characters the layout lacks (keycode 8 = evdev 0)."""
    return _EVDEV_CODES.get(keycode - 8, "Unidentified")


# -- keysym → W3C key for named (non-character) keys --------------------------------------------

_NAMED: dict[int, str] = {
    0xFF08: "Backspace", 0xFF09: "Tab", 0xFE20: "Tab", 0xFF0A: "Enter", 0xFF0B: "Clear",
    0xFF0D: "Enter", 0xFF13: "Pause", 0xFF14: "ScrollLock", 0xFF15: "PrintScreen",
    0xFF1B: "Escape", 0xFFFF: "Delete", 0xFF50: "Home", 0xFF51: "ArrowLeft", 0xFF52: "ArrowUp",
    0xFF53: "ArrowRight", 0xFF54: "ArrowDown", 0xFF55: "PageUp", 0xFF56: "PageDown",
    0xFF57: "End", 0xFF58: "Clear", 0xFF60: "Select", 0xFF61: "PrintScreen", 0xFF62: "Execute",
    0xFF63: "Insert", 0xFF65: "Undo", 0xFF66: "Redo", 0xFF67: "ContextMenu", 0xFF68: "Find",
    0xFF69: "Cancel", 0xFF6A: "Help", 0xFF6B: "Pause", 0xFF7E: "ModeChange", 0xFF7F: "NumLock",
    # keypad keys without a character
    0xFF89: "Tab", 0xFF8D: "Enter", 0xFF91: "F1", 0xFF92: "F2", 0xFF93: "F3", 0xFF94: "F4",
    0xFF95: "Home", 0xFF96: "ArrowLeft", 0xFF97: "ArrowUp", 0xFF98: "ArrowRight",
    0xFF99: "ArrowDown", 0xFF9A: "PageUp", 0xFF9B: "PageDown", 0xFF9C: "End", 0xFF9D: "Clear",
    0xFF9E: "Insert", 0xFF9F: "Delete",
    # modifiers
    0xFFE1: "Shift", 0xFFE2: "Shift", 0xFFE3: "Control", 0xFFE4: "Control", 0xFFE5: "CapsLock",
    0xFFE6: "CapsLock", 0xFFE7: "Meta", 0xFFE8: "Meta", 0xFFE9: "Alt", 0xFFEA: "Alt",
    0xFFEB: "Meta", 0xFFEC: "Meta", 0xFFED: "Hyper", 0xFFEE: "Hyper",
    0xFE03: "AltGraph", 0xFE11: "AltGraph", 0xFE08: "GroupNext", 0xFE0A: "GroupPrevious",
    0xFE0C: "GroupFirst", 0xFE0E: "GroupLast",
    # input methods
    0xFF20: "Compose", 0xFF37: "CodeInput", 0xFF3C: "SingleCandidate",
    0xFF3D: "AllCandidates", 0xFF3E: "PreviousCandidate", 0xFF21: "KanjiMode",
    0xFF22: "NonConvert", 0xFF23: "Convert", 0xFF24: "Romaji", 0xFF25: "Hiragana",
    0xFF26: "Katakana", 0xFF27: "HiraganaKatakana", 0xFF28: "Zenkaku", 0xFF29: "Hankaku",
    0xFF2A: "ZenkakuHankaku", 0xFF2F: "Eisu", 0xFF31: "HangulMode", 0xFF34: "HanjaMode",
    # XF86 multimedia keys
    0x1008FF11: "AudioVolumeDown", 0x1008FF12: "AudioVolumeMute", 0x1008FF13: "AudioVolumeUp",
    0x1008FF14: "MediaPlayPause", 0x1008FF15: "MediaStop", 0x1008FF16: "MediaTrackPrevious",
    0x1008FF17: "MediaTrackNext", 0x1008FF18: "BrowserHome", 0x1008FF19: "LaunchMail",
    0x1008FF1B: "BrowserSearch", 0x1008FF1D: "LaunchCalculator", 0x1008FF26: "BrowserBack",
    0x1008FF27: "BrowserForward", 0x1008FF28: "BrowserStop", 0x1008FF29: "BrowserRefresh",
    0x1008FF2A: "Power", 0x1008FF2C: "Eject", 0x1008FF30: "BrowserFavorites",
    0x1008FF57: "Copy", 0x1008FF58: "Cut", 0x1008FF6D: "Paste",
}
for _i in range(35):
    _NAMED[0xFFBE + _i] = f"F{_i + 1}"  # F1-F35

#: keypad keysyms that produce a character (only with NumLock on, or always for operators)
_KEYPAD_CHARS: dict[int, str] = {0xFF80: " ", 0xFFAA: "*", 0xFFAB: "+", 0xFFAC: ",",
                                 0xFFAD: "-", 0xFFAE: ".", 0xFFAF: "/", 0xFFBD: "="}
for _i in range(10):
    _KEYPAD_CHARS[0xFFB0 + _i] = str(_i)

#: keysyms of modifier keys, by W3C modifier name they set in ``modifiers``
_MODIFIER_NAME_BY_KEYSYM: dict[int, str] = {
    0xFFE9: "Alt", 0xFFEA: "Alt", 0xFFE7: "Meta", 0xFFE8: "Meta", 0xFFEB: "Meta", 0xFFEC: "Meta",
    0xFFED: "Meta", 0xFFEE: "Meta", 0xFE03: "AltGraph", 0xFF7E: "AltGraph", 0xFF7F: "NumLock",
}
# name priority when one modifier bit carries several kinds of keys (us: Mod1 = Alt_L, Meta_L)
_MOD_PRIORITY = ("Alt", "AltGraph", "NumLock", "Meta")


def _keysym_table() -> dict[int, str]:
    # keysymdef.h as a Python dict, shipped by pynput. Loaded from its file: importing the
    # ``pynput`` package connects to $DISPLAY (it picks a backend at import time).
    import importlib.util
    from pathlib import Path

    try:
        spec = importlib.util.find_spec("pynput")
        assert spec is not None and spec.submodule_search_locations
        path = Path(list(spec.submodule_search_locations)[0]) / "_util" / "xorg_keysyms.py"
        mod_spec = importlib.util.spec_from_file_location("_demotrace_xorg_keysyms", path)
        assert mod_spec is not None and mod_spec.loader is not None
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
        SYMBOLS = module.SYMBOLS
    except Exception:  # noqa: BLE001 - optional refinement; Latin-1/Unicode keysyms still work
        return {}
    table: dict[int, str] = {}
    for name, (ks, ch) in SYMBOLS.items():
        if ch and not name.startswith("dead_") and ks not in table:
            table[ks] = ch
    return table


_KEYSYM_CHARS = _keysym_table()
_CHAR_KEYSYMS = {ch: ks for ks, ch in _KEYSYM_CHARS.items() if ks < 0x1000000}


def is_keypad(keysym: int) -> bool:
    """True for keypad keysyms (``KP_Space`` … ``KP_Equal``), as Xlib's ``IsKeypadKey``."""
    return 0xFF80 <= keysym <= 0xFFBD


def is_dead(keysym: int) -> bool:
    """True for dead keys (``dead_grave`` … ``dead_*``, 0xFE50-0xFE8F)."""
    return 0xFE50 <= keysym <= 0xFE8F


def keysym_to_char(keysym: int) -> str | None:
    """The character a keysym stands for, or ``None`` (named keys, NoSymbol, keypad)."""
    if 0x20 <= keysym <= 0x7E or 0xA0 <= keysym <= 0xFF:
        return chr(keysym)
    if 0x01000100 <= keysym <= 0x0110FFFF:
        return chr(keysym - 0x01000000)
    if keysym in _KEYPAD_CHARS:
        return _KEYPAD_CHARS[keysym]
    if keysym >= 0xFF00 and keysym < 0x1000000:
        return None
    return _KEYSYM_CHARS.get(keysym)


def char_to_keysym(ch: str) -> int:
    """The keysym of a character (inverse of :func:`keysym_to_char` for single characters)."""
    cp = ord(ch)
    if 0x20 <= cp <= 0x7E or 0xA0 <= cp <= 0xFF:
        return cp
    return _CHAR_KEYSYMS.get(ch, 0x01000000 + cp)


def keysym_to_key(keysym: int) -> str:
    """W3C ``key`` value for a keysym: the character, a named key value, ``"Dead"`` for dead
    keys, or ``"Unidentified"`` (NoSymbol or unknown)."""
    if keysym == NO_SYMBOL:
        return "Unidentified"
    if keysym in _NAMED:
        return _NAMED[keysym]
    if is_dead(keysym):
        return "Dead"
    ch = keysym_to_char(keysym)
    return ch if ch is not None else "Unidentified"


def _is_alpha_pair(lower: int, upper: int) -> bool:
    lo, up = keysym_to_char(lower), keysym_to_char(upper)
    return bool(lo and up and len(lo) == 1 and lo != up and lo.upper() == up)


@dataclass
class ModifierMap:
    """Which X modifier bit means what, derived from the modifier mapping and the keymap.

    ``names``: bit mask → W3C modifier name (``"Shift"``, ``"CapsLock"``, ``"Control"``,
    ``"Alt"``, ``"Meta"``, ``"NumLock"``, ``"AltGraph"``); ``numlock``/``level3``/
    ``mode_switch``: the masks of those modifiers (0 if unbound); ``caps_lock``: Lock means
    Caps_Lock (case only for letters) rather than Shift_Lock.
    """

    names: dict[int, str] = field(default_factory=lambda: {SHIFT_MASK: "Shift", LOCK_MASK: "CapsLock",
                                                          CONTROL_MASK: "Control"})
    numlock: int = 0
    level3: int = 0
    mode_switch: int = 0
    caps_lock: bool = True

    @classmethod
    def build(cls, modmap: Sequence[Sequence[int]], keysyms_of: dict[int, Sequence[int]]) -> ModifierMap:
        """From ``modmap`` (8 lists of keycodes: Shift, Lock, Control, Mod1-5 — X
        GetModifierMapping) and ``keysyms_of[keycode]`` (the keycode's keysyms)."""
        mm = cls()
        lock_syms = {ks for kc in modmap[1] for ks in keysyms_of.get(kc, ()) if ks}
        mm.caps_lock = 0xFFE6 not in lock_syms or 0xFFE5 in lock_syms  # Shift_Lock only → not caps
        for i, mask in enumerate(MOD_MASKS):
            kinds: set[str] = set()
            syms = {ks for kc in modmap[3 + i] for ks in keysyms_of.get(kc, ()) if ks}
            for ks in syms:
                if ks in _MODIFIER_NAME_BY_KEYSYM:
                    kinds.add(_MODIFIER_NAME_BY_KEYSYM[ks])
            if 0xFF7F in syms:
                mm.numlock |= mask
            if 0xFE03 in syms:
                mm.level3 |= mask
            if 0xFF7E in syms:
                mm.mode_switch |= mask
            for name in _MOD_PRIORITY:
                if name in kinds:
                    mm.names[mask] = name
                    break
        return mm

    def modifiers(self, state: int) -> tuple[str, ...]:
        """Sorted W3C names of the modifiers set in an X event ``state`` (held *before* the
        event, as X reports it)."""
        return tuple(sorted({name for mask, name in self.names.items() if state & mask}))


@dataclass(frozen=True)
class KeyInfo:
    """Translation of one key event: W3C ``key``/``code``, the keysym chosen, the character
    produced (``text``; ``None`` for named keys, dead keys, or when Control/Alt/Meta is held)."""

    key: str
    code: str
    keysym: int
    text: str | None


def select_keysym(syms: Sequence[int], state: int, mods: ModifierMap) -> int:
    """The keysym a keycode with core keysym list ``syms`` produces under ``state``.

    Columns: 0/1 group 1 levels 1/2, 2/3 group 2 (Mode_switch or XKB group ≥ 2), 4/5 group 1
    levels 3/4 (AltGr). Within a pair (K1, K2) the core-protocol rules apply: K2 NoSymbol →
    K2 = K1 (XKB one-level key, as xdotool's temporary bindings are); NumLock + keypad K2 →
    Shift selects K1; Caps Lock flips case for letter pairs only; else Shift selects K2.
    """
    def col(i: int) -> int:
        return syms[i] if i < len(syms) else NO_SYMBOL

    group2 = bool(state & mods.mode_switch) or bool((state >> 13) & 3)
    level3 = bool(state & mods.level3)
    base = 0
    if level3 and (col(4) or col(5)):
        base = 4
    elif group2 and (col(2) or col(3)):
        base = 2
    k1, k2 = col(base), col(base + 1)
    if k1 == NO_SYMBOL and k2 == NO_SYMBOL and base:
        k1, k2 = col(0), col(1)
    if k2 == NO_SYMBOL:
        k2 = k1
    shift = bool(state & SHIFT_MASK)
    lock = bool(state & LOCK_MASK)
    if state & mods.numlock and is_keypad(k2):
        return k1 if shift or (lock and not mods.caps_lock) else k2
    if _is_alpha_pair(k1, k2):
        if lock and not mods.caps_lock:  # Shift_Lock acts like Shift
            shift = True
        elif lock:
            shift = not shift
        return k2 if shift else k1
    return k2 if shift or (lock and not mods.caps_lock) else k1


def translate(keycode: int, syms: Sequence[int], state: int, mods: ModifierMap) -> KeyInfo:
    """Full translation of a key press with keycode ``keycode`` whose keysyms are ``syms``."""
    keysym = select_keysym(syms, state, mods)
    key = keysym_to_key(keysym)
    text: str | None = None
    if keysym not in _NAMED and not is_dead(keysym):
        text = keysym_to_char(keysym)
    held = mods.modifiers(state)
    if text is not None and any(m in held for m in ("Control", "Alt", "Meta")):
        text = None  # a hotkey on the letter, never a control character
    return KeyInfo(key=key, code=keycode_to_code(keycode), keysym=keysym, text=text)
