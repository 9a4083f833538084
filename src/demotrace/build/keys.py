"""Key-name helpers: W3C UI Events ``key`` / ``code`` values → pyautogui key names.

pyautogui names are what OSWorld's computer_13 ``PRESS`` / ``HOTKEY`` and AgentNet's
``pyautogui.press`` / ``pyautogui.hotkey`` code use (``pyautogui.KEYBOARD_KEYS``).

W3C ``key`` → pyautogui (:data:`W3C_TO_PYAUTOGUI`)::

    Enter→enter  Tab→tab  Escape→esc  Backspace→backspace  Delete→delete  Insert→insert
    Home→home  End→end  PageUp→pageup  PageDown→pagedown  ArrowLeft/Right/Up/Down→left/right/up/down
    " "→space  F1…F24→f1…f24  Control→ctrl  Alt→alt  AltGraph→altright  Shift→shift
    Meta/Super/OS→win (or "command", see BuildSettings.meta_key_name)  CapsLock→capslock
    NumLock→numlock  ScrollLock→scrolllock  PrintScreen→printscreen  Pause→pause
    ContextMenu→apps  Clear→clear  Help→help  AudioVolumeUp/Down/Mute→volumeup/volumedown/volumemute
    MediaPlayPause→playpause  MediaTrackNext/Previous→nexttrack/prevtrack  MediaStop→stop
    BrowserBack/Forward/Refresh/Home/Search/Favorites/Stop→browserback/…

Base names of hotkeys (:func:`hotkey_base`) never contain a control character: Ctrl+C is
``["ctrl", "c"]`` whether the platform reported ``key`` "c", "C" or "\\x03".
"""

from __future__ import annotations

#: W3C modifier ``key`` values → pyautogui names (Meta/Super/OS resolved by the caller).
MODIFIER_NAMES: dict[str, str] = {
    "Control": "ctrl",
    "Alt": "alt",
    "AltGraph": "altright",
    "Shift": "shift",
    "Meta": "win",
    "Super": "win",
    "OS": "win",
    "Hyper": "win",
    "CapsLock": "capslock",
    "NumLock": "numlock",
    "Fn": "fn",
}

#: Modifiers whose hold turns a key into a hotkey (Shift and AltGraph produce text instead;
#: lock keys toggle state).
HOTKEY_MODIFIERS = frozenset({"Control", "Alt", "Meta", "Super", "OS", "Hyper"})
#: Keys that never start a hotkey nor type text by themselves.
MODIFIER_KEYS = frozenset(MODIFIER_NAMES)

W3C_TO_PYAUTOGUI: dict[str, str] = {
    "Enter": "enter", "Tab": "tab", "Escape": "esc", "Backspace": "backspace",
    "Delete": "delete", "Insert": "insert", "Home": "home", "End": "end",
    "PageUp": "pageup", "PageDown": "pagedown", "ArrowLeft": "left", "ArrowRight": "right",
    "ArrowUp": "up", "ArrowDown": "down", " ": "space", "Spacebar": "space",
    "ScrollLock": "scrolllock", "PrintScreen": "printscreen", "Pause": "pause",
    "ContextMenu": "apps", "Clear": "clear", "Help": "help", "Select": "select",
    "Execute": "execute", "AudioVolumeUp": "volumeup", "AudioVolumeDown": "volumedown",
    "AudioVolumeMute": "volumemute", "MediaPlayPause": "playpause", "MediaTrackNext": "nexttrack",
    "MediaTrackPrevious": "prevtrack", "MediaStop": "stop", "BrowserBack": "browserback",
    "BrowserForward": "browserforward", "BrowserRefresh": "browserrefresh",
    "BrowserHome": "browserhome", "BrowserSearch": "browsersearch",
    "BrowserFavorites": "browserfavorites", "BrowserStop": "browserstop",
    "LaunchMail": "launchmail", "Sleep": "sleep", "Convert": "convert",
    "NonConvert": "nonconvert", "KanaMode": "kana", "HangulMode": "hangul", "HanjaMode": "hanja",
    "KanjiMode": "kanji", "Accept": "accept", "ModeChange": "modechange",
    "Separator": "separator", "Decimal": "decimal",
}
W3C_TO_PYAUTOGUI.update({f"F{i}": f"f{i}" for i in range(1, 25)})
W3C_TO_PYAUTOGUI.update({k: v for k, v in MODIFIER_NAMES.items()})

#: W3C ``code`` of punctuation keys → the US-layout unshifted character (pyautogui name).
_CODE_PUNCT: dict[str, str] = {
    "Minus": "-", "Equal": "=", "BracketLeft": "[", "BracketRight": "]", "Backslash": "\\",
    "Semicolon": ";", "Quote": "'", "Comma": ",", "Period": ".", "Slash": "/",
    "Backquote": "`", "Space": "space", "IntlBackslash": "\\",
    "NumpadAdd": "add", "NumpadSubtract": "subtract", "NumpadMultiply": "multiply",
    "NumpadDivide": "divide", "NumpadDecimal": "decimal", "NumpadEnter": "enter",
}

#: Editing keys applied inside a typing run.
EDIT_KEYS = frozenset({"Backspace", "Delete", "ArrowLeft", "ArrowRight", "Home", "End"})
#: ``key`` values of keys that take part in text composition without producing text.
COMPOSE_KEYS = frozenset({"Dead", "Process", "Compose"})


def code_base(code: str) -> str | None:
    """Base (unshifted, US-position) pyautogui name of a W3C ``code``, or ``None``.

    ``"KeyA"`` → ``"a"``, ``"Digit1"`` → ``"1"``, ``"Numpad5"`` → ``"num5"``,
    ``"Minus"`` → ``"-"``, ``"F5"`` → ``"f5"``.
    """
    if len(code) == 4 and code.startswith("Key") and code[3].isalpha():
        return code[3].lower()
    if len(code) == 6 and code.startswith("Digit") and code[5].isdigit():
        return code[5]
    if len(code) == 7 and code.startswith("Numpad") and code[6].isdigit():
        return "num" + code[6]
    if code in _CODE_PUNCT:
        return _CODE_PUNCT[code]
    if code.startswith("F") and code[1:].isdigit():
        return code.lower()
    return None


def is_printable(ch: str | None) -> bool:
    """True for a non-empty string without control characters (what ``type`` can write)."""
    if not ch:
        return False
    return all(c.isprintable() or c == " " for c in ch)


def special_name(key: str, meta_name: str = "win") -> str | None:
    """pyautogui name of a named (non-character) W3C ``key``, or ``None`` if it has none."""
    if key in ("Meta", "Super", "OS", "Hyper"):
        return meta_name
    return W3C_TO_PYAUTOGUI.get(key)


def modifier_name(key: str, meta_name: str = "win") -> str:
    """pyautogui name of a W3C modifier ``key`` ("Control" → "ctrl")."""
    if key in ("Meta", "Super", "OS", "Hyper"):
        return meta_name
    return MODIFIER_NAMES.get(key, key.lower())


def hotkey_base(key: str, code: str, meta_name: str = "win") -> str:
    """pyautogui name of the non-modifier key of a hotkey; never a control character.

    Order of rules: an ASCII letter ``key`` → lower case (layout-aware: AZERTY Ctrl+A is
    "a"); else the ``code``'s base name (Ctrl+Shift+1 reported as "!" → "1"; Option+A on
    macOS reported as "å" → "a"; a control character "\\x03" → "c"); else a printable
    ``key`` in lower case; else the named-key map ("Tab" → "tab"); else a control character
    U+0001–U+001A mapped back to its letter; else ``key`` in lower case.
    """
    if len(key) == 1 and key.isascii() and key.isalpha():
        return key.lower()
    base = code_base(code)
    if base is not None:
        return base
    if len(key) == 1 and key.isprintable():
        return key.lower()
    named = special_name(key, meta_name)
    if named is not None:
        return named
    if len(key) == 1 and 1 <= ord(key) <= 26:
        return chr(ord(key) + 96)
    return key.lower()
