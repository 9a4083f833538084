"""The X11 capture backend on a real Xvfb, driven by xdotool / XTest, with the Tk test app
(tests/apps/tkapp.py) and xterm. Each test starts the backend with a collecting sink, sends
input, waits for it to arrive, stops the backend and asserts the exact stream.

Expected values come from the input sent (coordinates, keys) and from independent tools
(xdotool search, xwininfo, xprop, xset), never from the backend. Keycodes for raw XTest input
are evdev codes + 8 (Linux input-event-codes.h: KEY_A = 30, KEY_KP5 = 76, ...).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from demotrace.capture import get_backend
from demotrace.capture.x11 import X11Backend
from demotrace.schema import (
    FocusChange,
    KeyDown,
    KeyUp,
    PointerDown,
    PointerMove,
    PointerUp,
    Rect,
    ScreenConfig,
    Wheel,
)
from helpers_x11 import (
    Collector,
    fake_keys,
    geometry,
    x,
    led_on,
    list_monitors,
    search_window,
    tap,
    tk_app,
    wait_for,
    wm_class,
    xdotool,
    xterm,
    xvfb_with_openbox,
)

pytestmark = pytest.mark.x11

# evdev codes + 8 (linux/input-event-codes.h)
KC_A, KC_T, KC_C = 30 + 8, 20 + 8, 46 + 8
KC_SHIFT_L, KC_SHIFT_R, KC_CTRL_L = 42 + 8, 54 + 8, 29 + 8
KC_NUMLOCK, KC_KP5, KC_KPENTER = 69 + 8, 76 + 8, 96 + 8
POINTER = (PointerMove, PointerDown, PointerUp, Wheel)
KEYS = (KeyDown, KeyUp)


class Capture:
    """A started backend plus its collector."""

    def __init__(self, display: str) -> None:
        self.col = Collector()
        self.backend = X11Backend(display)
        self.backend.start(self.col)

    def stop(self) -> None:
        t0 = time.monotonic()
        self.backend.stop()
        self.stop_s = time.monotonic() - t0


@pytest.fixture
def cap(xvfb: Any) -> Iterator[Capture]:
    # park the pointer somewhere neutral so each test's first move is a real motion
    xdotool(xvfb.env, "mousemove", "1", "1")
    c = Capture(xvfb.display)
    try:
        yield c
    finally:
        c.stop()
        assert c.stop_s < 1.5, f"stop took {c.stop_s:.2f} s"


def _kd(key: str, code: str, mods: tuple[str, ...] = (), text: str | None = None, repeat: bool = False) -> dict[str, Any]:
    return {"key": key, "code": code, "modifiers": mods, "text": text, "is_repeat": repeat}


def _keys(events: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """Key events reduced to the fields asserted (keysym / vk are checked separately)."""
    return [(n, {k: f[k] for k in ("key", "code", "modifiers", "text", "is_repeat")}) for n, f in events]


def _wait_keys(cap: Capture, n: int, what: str) -> None:
    cap.col.wait(lambda evs: sum(1 for c, _t, _f in evs if c in KEYS) >= n, what=what)
    # a release is held back ≤ 50 ms waiting for a possible auto-repeat press: stop flushes it
    cap.stop()


# -- start / screen ------------------------------------------------------------------------------

def test_start_emits_screen_config_then_focus(xvfb: Any, cap: Capture) -> None:
    first = cap.col.of(ScreenConfig, FocusChange)[:2]
    assert [n for n, _ in first] == ["ScreenConfig", "FocusChange"]
    cfg = first[0][1]
    desk = Rect(0, 0, xvfb.width, xvfb.height)  # the fixture's -screen 0 1280x800x24
    assert cfg["desktop"] == desk
    expected = list_monitors(xvfb.env)
    assert [(m.index, m.name, m.primary, m.bounds, m.scale) for m in cfg["monitors"]] == [
        (i, name, prim, Rect(*bounds), 1.0) for i, (name, prim, bounds) in enumerate(expected)]
    assert cfg["monitors"][0].bounds == desk  # Xvfb: one output covering the screen
    assert cap.backend.screen_config() == (cfg["monitors"], desk)
    assert cap.backend.check_health() == []
    assert cap.backend.pointer_position() == (1.0, 1.0)


def test_get_backend_returns_x11(xvfb: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPLAY", xvfb.display)
    monkeypatch.delenv("DEMOTRACE_BACKEND", raising=False)
    backend = get_backend()
    assert isinstance(backend, X11Backend) and backend.display_name == xvfb.display


def test_start_fails_clearly_without_display() -> None:
    from demotrace.errors import CaptureError

    with pytest.raises(CaptureError, match=r"cannot open X display ':4242'"):
        X11Backend(":4242").start(Collector())


# -- pointer -------------------------------------------------------------------------------------

def test_clicks_double_triple_and_right(xvfb: Any, cap: Capture) -> None:
    env = xvfb.env
    xdotool(env, "mousemove", "200", "150", "click", "1")
    xdotool(env, "mousemove", "220", "160", "click", "--repeat", "2", "--delay", "60", "1")
    xdotool(env, "mousemove", "240", "170", "click", "--repeat", "3", "--delay", "60", "1")
    xdotool(env, "mousemove", "260", "180", "click", "3")
    xdotool(env, "click", "2")
    cap.col.wait(lambda evs: sum(1 for c, _t, _f in evs if c is PointerUp) >= 8, what="8 button releases")
    cap.stop()
    L, M, R = "left", "middle", "right"

    def click(x: float, y: float, b: str) -> list[tuple[str, dict[str, Any]]]:
        return [("PointerDown", {"x": x, "y": y, "button": b}), ("PointerUp", {"x": x, "y": y, "button": b})]

    expected = (
        [("PointerMove", {"x": 200.0, "y": 150.0})] + click(200.0, 150.0, L)
        + [("PointerMove", {"x": 220.0, "y": 160.0})] + click(220.0, 160.0, L) * 2
        + [("PointerMove", {"x": 240.0, "y": 170.0})] + click(240.0, 170.0, L) * 3
        + [("PointerMove", {"x": 260.0, "y": 180.0})] + click(260.0, 180.0, R) + click(260.0, 180.0, M)
    )
    assert cap.col.of(*POINTER) == expected


def test_drag_down_moves_up(xvfb: Any, cap: Capture) -> None:
    env = xvfb.env
    xdotool(env, "mousemove", "300", "300", "mousedown", "1")
    for x, y in ((310, 305), (330, 320), (350, 340)):
        xdotool(env, "mousemove", str(x), str(y))
    xdotool(env, "mouseup", "1")
    cap.col.wait(lambda evs: any(c is PointerUp for c, _t, _f in evs), what="button release")
    cap.stop()
    assert cap.col.of(*POINTER) == [
        ("PointerMove", {"x": 300.0, "y": 300.0}),
        ("PointerDown", {"x": 300.0, "y": 300.0, "button": "left"}),
        ("PointerMove", {"x": 310.0, "y": 305.0}),
        ("PointerMove", {"x": 330.0, "y": 320.0}),
        ("PointerMove", {"x": 350.0, "y": 340.0}),
        ("PointerUp", {"x": 350.0, "y": 340.0, "button": "left"}),
    ]


def test_wheel_four_directions(xvfb: Any, cap: Capture) -> None:
    # X11 wheel = buttons 4 up, 5 down, 6 left, 7 right; one tick per click
    xdotool(xvfb.env, "mousemove", "400", "410", "click", "4", "click", "4", "click", "5", "click", "6", "click", "7")
    cap.col.wait(lambda evs: sum(1 for c, _t, _f in evs if c is Wheel) >= 5, what="5 wheel ticks")
    cap.stop()

    def tick(dx: float, dy: float) -> tuple[str, dict[str, Any]]:
        return ("Wheel", {"x": 400.0, "y": 410.0, "dx": dx, "dy": dy, "unit": "tick"})

    assert cap.col.of(*POINTER) == [("PointerMove", {"x": 400.0, "y": 410.0}),
                                    tick(0, 1), tick(0, 1), tick(0, -1), tick(-1, 0), tick(1, 0)]


# -- keys ----------------------------------------------------------------------------------------

def _pairs_match(events: list[tuple[str, dict[str, Any]]]) -> None:
    """Every key_up carries the key/code/keysym of the key_down of the same keycode."""
    down: dict[int, dict[str, Any]] = {}
    for name, f in events:
        if name == "KeyDown" and not f["is_repeat"]:
            down[f["vk"]] = f
        elif name == "KeyUp":
            d = down.pop(f["vk"])
            assert (f["key"], f["code"], f["keysym"]) == (d["key"], d["code"], d["keysym"]), (d, f)
    assert not down, f"key_down without key_up: {down}"


def test_type_non_ascii_through_temporary_keycodes(xvfb: Any) -> None:
    text = "héllo Wörld €"
    with tk_app(xvfb.env, "Typing target") as app:
        xdotool(xvfb.env, "windowfocus", "--sync", str(app.wid))
        cap = Capture(xvfb.display)
        try:
            xdotool(xvfb.env, "type", text)
            # one press+release per character, plus Shift for "W"
            _wait_keys(cap, 2 * len(text) + 2, "typed text")
        finally:
            cap.stop()
    events = cap.col.of(*KEYS)
    downs = [f for n, f in events if n == "KeyDown" and f["key"] != "Shift"]
    assert "".join(f["key"] for f in downs) == text
    assert "".join(f["text"] for f in downs) == text
    by_char = {f["key"]: f for f in downs}
    # characters the US layout lacks arrive on a spare keycode: no physical key → Unidentified
    for ch in "éö€":
        assert by_char[ch]["code"] == "Unidentified" and by_char[ch]["modifiers"] == ()
    assert by_char["h"]["code"] == "KeyH" and by_char[" "]["code"] == "Space"
    assert by_char["W"]["modifiers"] == ("Shift",) and by_char["W"]["code"] == "KeyW"
    # keysyms: Latin-1 keysyms are the code point; € has the Unicode keysym 0x01000000 + U+20AC
    assert (by_char["é"]["keysym"], by_char["ö"]["keysym"], by_char["€"]["keysym"]) == (0xE9, 0xF6, 0x10020AC)
    assert not any(f["is_repeat"] for _n, f in events)
    _pairs_match(events)


def test_mixed_case_press_and_release_match(xvfb: Any, cap: Capture) -> None:
    xdotool(xvfb.env, "type", "HeLLo")
    _wait_keys(cap, 2 * 5 + 2 * 3, "HeLLo")  # 5 letters + Shift around each capital
    events = cap.col.of(*KEYS)
    letters = [(f["key"], f["code"], f["modifiers"], f["text"]) for n, f in events
               if n == "KeyDown" and f["key"] != "Shift"]
    assert letters == [("H", "KeyH", ("Shift",), "H"), ("e", "KeyE", (), "e"), ("L", "KeyL", ("Shift",), "L"),
                       ("L", "KeyL", ("Shift",), "L"), ("o", "KeyO", (), "o")]
    ups = [f["key"] for n, f in events if n == "KeyUp" and f["key"] != "Shift"]
    assert ups == ["H", "e", "L", "L", "o"]  # xdotool releases Shift before the letter: still "H"
    _pairs_match(events)


def test_ctrl_c_is_a_hotkey_on_the_letter(xvfb: Any, cap: Capture) -> None:
    xdotool(xvfb.env, "keydown", "ctrl", "keydown", "c", "keyup", "c", "keyup", "ctrl")
    _wait_keys(cap, 4, "ctrl+c")
    assert _keys(cap.col.of(*KEYS)) == [
        ("KeyDown", _kd("Control", "ControlLeft")),
        ("KeyDown", _kd("c", "KeyC", ("Control",))),  # not "\x03", and no text
        ("KeyUp", _kd("c", "KeyC", ("Control",))),
        ("KeyUp", _kd("Control", "ControlLeft", ("Control",))),  # modifiers held before the event
    ]


def test_ctrl_shift_t(xvfb: Any, cap: Capture) -> None:
    xdotool(xvfb.env, "keydown", "ctrl", "keydown", "shift", "keydown", "t",
            "keyup", "t", "keyup", "shift", "keyup", "ctrl")
    _wait_keys(cap, 6, "ctrl+shift+t")
    cs = ("Control", "Shift")
    assert _keys(cap.col.of(*KEYS)) == [
        ("KeyDown", _kd("Control", "ControlLeft")),
        ("KeyDown", _kd("Shift", "ShiftLeft", ("Control",))),
        ("KeyDown", _kd("T", "KeyT", cs)),
        ("KeyUp", _kd("T", "KeyT", cs)),
        ("KeyUp", _kd("Shift", "ShiftLeft", cs)),
        ("KeyUp", _kd("Control", "ControlLeft", ("Control",))),
    ]


def test_both_shift_keys_one_released(xvfb: Any, cap: Capture) -> None:
    fake_keys(xvfb.display, (KC_SHIFT_L, True), (KC_SHIFT_R, True), (KC_SHIFT_L, False),
              *tap(KC_A), (KC_SHIFT_R, False), *tap(KC_A))
    _wait_keys(cap, 8, "shift dance")
    S = ("Shift",)
    assert _keys(cap.col.of(*KEYS)) == [
        ("KeyDown", _kd("Shift", "ShiftLeft")),
        ("KeyDown", _kd("Shift", "ShiftRight", S)),
        ("KeyUp", _kd("Shift", "ShiftLeft", S)),
        ("KeyDown", _kd("A", "KeyA", S, "A")),  # right Shift still held
        ("KeyUp", _kd("A", "KeyA", S)),
        ("KeyUp", _kd("Shift", "ShiftRight", S)),
        ("KeyDown", _kd("a", "KeyA", (), "a")),  # no Shift stuck
        ("KeyUp", _kd("a", "KeyA")),
    ]


def test_numpad_with_and_without_numlock(xvfb: Any, cap: Capture) -> None:
    env = xvfb.env
    assert not led_on(env, "Num Lock"), "NumLock must start off"
    try:
        fake_keys(xvfb.display, *tap(KC_KP5), *tap(KC_KPENTER), *tap(KC_NUMLOCK))
        wait_for(lambda: led_on(env, "Num Lock"), what="NumLock on")
        fake_keys(xvfb.display, *tap(KC_KP5), *tap(KC_NUMLOCK))
        wait_for(lambda: not led_on(env, "Num Lock"), what="NumLock off")
        _wait_keys(cap, 10, "numpad keys")
    finally:
        if led_on(env, "Num Lock"):
            fake_keys(xvfb.display, *tap(KC_NUMLOCK))
    N = ("NumLock",)
    assert _keys(cap.col.of(*KEYS)) == [
        ("KeyDown", _kd("Clear", "Numpad5")),  # KP_Begin: no character without NumLock
        ("KeyUp", _kd("Clear", "Numpad5")),
        ("KeyDown", _kd("Enter", "NumpadEnter")),
        ("KeyUp", _kd("Enter", "NumpadEnter")),
        ("KeyDown", _kd("NumLock", "NumLock")),
        ("KeyUp", _kd("NumLock", "NumLock", N)),  # the lock is on once pressed
        ("KeyDown", _kd("5", "Numpad5", N, "5")),
        ("KeyUp", _kd("5", "Numpad5", N)),
        ("KeyDown", _kd("NumLock", "NumLock", N)),
        ("KeyUp", _kd("NumLock", "NumLock", N)),  # X turns the lock off on this release
    ]


def test_held_key_auto_repeat_is_flagged(xvfb: Any, cap: Capture) -> None:
    env = xvfb.env
    delay_ms, rate_hz, hold_s = 200, 30, 0.6
    subprocess.run(["xset", "r", "on"], env=env, check=True)
    subprocess.run(["xset", "r", "rate", str(delay_ms), str(rate_hz)], env=env, check=True)
    try:
        xdotool(env, "keydown", "a")
        time.sleep(hold_s)  # holding a key IS waiting: the repeats are what is measured
        xdotool(env, "keyup", "a")
        _wait_keys(cap, 3, "held key")
    finally:
        subprocess.run(["xset", "r", "rate"], env=env, check=True)  # server defaults again
    events = _keys(cap.col.of(*KEYS))
    assert events[0] == ("KeyDown", _kd("a", "KeyA", (), "a"))
    assert events[-1] == ("KeyUp", _kd("a", "KeyA"))
    middle = events[1:-1]
    assert all(e == ("KeyDown", _kd("a", "KeyA", (), "a", repeat=True)) for e in middle), middle
    # (hold - delay) * rate repeats = 12; allow for scheduling on a loaded machine
    expected = (hold_s - delay_ms / 1000) * rate_hz
    assert expected * 0.5 <= len(middle) <= expected * 1.6 + 2, len(middle)


# -- focus and titles ----------------------------------------------------------------------------

def _focus_events(cap: Capture) -> list[dict[str, Any]]:
    return [f for _n, f in cap.col.of(FocusChange)]


def test_focus_moves_between_two_windows(xvfb: Any) -> None:
    env = xvfb.env
    with tk_app(env, "Alpha window", 60, 60) as tk, xterm(env, "Beta terminal", "60x10+600+400") as term:
        xdotool(env, "windowfocus", "--sync", str(tk.wid))
        cap = Capture(xvfb.display)
        try:
            xdotool(env, "windowfocus", "--sync", str(term.wid))
            cap.col.wait(lambda evs: any(c is FocusChange and f["window_id"] == term.wid for c, _t, f in evs),
                         what="focus on xterm")
            xdotool(env, "windowfocus", "--sync", str(tk.wid))
            cap.col.wait(lambda evs: sum(1 for c, _t, f in evs if c is FocusChange) >= 3, what="focus back")
        finally:
            cap.stop()
        tk_expected = {"window_id": tk.wid, "app_id": wm_class(env, tk.wid), "title": "Alpha window",
                       "pid": tk.info["pid"], "bounds": Rect(*geometry(env, tk.wid))}
        term_expected = {"window_id": term.wid, "app_id": wm_class(env, term.wid), "title": "Beta terminal",
                         "pid": term.proc.pid, "bounds": Rect(*geometry(env, term.wid))}
    assert tk_expected["app_id"] == "Demotk" and term_expected["app_id"] == "XTerm"
    assert tk_expected["bounds"] == Rect(60, 60, 400, 300)
    assert _focus_events(cap) == [tk_expected, term_expected, tk_expected]


def test_title_changes_emoji_and_invalid_utf8(xvfb: Any) -> None:
    from Xlib import X, display as xdisplay

    env = xvfb.env
    with tk_app(env, "Plain title", 80, 80) as app:
        xdotool(env, "windowfocus", "--sync", str(app.wid))
        cap = Capture(xvfb.display)
        try:
            app.command("title Rendu 🎬 café ✓", "TITLE")
            cap.col.wait(lambda evs: any(c is FocusChange and f["title"] == "Rendu 🎬 café ✓" for c, _t, f in evs),
                         what="emoji title")
            d = xdisplay.Display(xvfb.display)
            try:
                w = d.create_resource_object("window", app.wid)
                w.change_property(d.intern_atom("_NET_WM_NAME"), d.intern_atom("UTF8_STRING"), 8,
                                  b"Bad \xff\xfe title \xe2\x82", X.PropModeReplace)
                d.sync()
            finally:
                d.close()
            cap.col.wait(lambda evs: sum(1 for c, _t, f in evs if c is FocusChange) >= 3, what="raw title")
            assert cap.backend.check_health() == []
        finally:
            cap.stop()
    titles = [f["title"] for f in _focus_events(cap)]
    # each invalid byte / truncated sequence becomes U+FFFD (Python's "replace" = WHATWG rule)
    assert titles == ["Plain title", "Rendu 🎬 café ✓", "Bad \ufffd\ufffd title \ufffd"]
    assert all(f["window_id"] == app.wid for f in _focus_events(cap))


# -- frames --------------------------------------------------------------------------------------

def _pixel(frame: Any, x: int, y: int) -> tuple[int, int, int]:
    """(r, g, b) at desktop pixel (x, y) of a BGRA RawFrame."""
    i = ((y - int(frame.bounds.y)) * frame.width + (x - int(frame.bounds.x))) * 4
    b, g, r = frame.pixels[i:i + 3]
    return r, g, b


def test_grab_shows_known_colours_and_the_click_change(xvfb: Any) -> None:
    env = xvfb.env
    with tk_app(env, "Colour target", 100, 100) as app:
        backend = X11Backend(xvfb.display)
        backend.start(Collector())
        try:
            frame = backend.grab()
            assert (frame.width, frame.height, frame.monitor) == (xvfb.width, xvfb.height, -1)
            assert frame.bounds == Rect(0, 0, xvfb.width, xvfb.height)
            assert len(frame.pixels) == xvfb.width * xvfb.height * 4
            assert frame.captured_ns <= time.monotonic_ns()
            # tkapp: patch #1e90c8 at window offset (290, 10) size 100x50; button #c81e1e at (10, 10)
            assert _pixel(frame, 100 + 290 + 50, 100 + 10 + 25) == (0x1E, 0x90, 0xC8)
            assert _pixel(frame, 100 + 10 + 60, 100 + 10 + 20) == (0xC8, 0x1E, 0x1E)
            assert _pixel(frame, 100 + 395, 100 + 295) == (0xFF, 0xFF, 0xFF)  # window background
            xdotool(env, "mousemove", str(100 + 70), str(100 + 30), "click", "1")
            app.proc.stdout.readline()  # "CLICKED" after repainting
            later = wait_for(lambda: (f := backend.grab()) and _pixel(f, 170, 130) == (0x1E, 0xC8, 0x1E) and f,
                             what="button turns green in a grab")
            assert later.captured_ns > frame.captured_ns
        finally:
            backend.stop()


def test_unchanged_screen_reuses_the_grab_until_damage(xvfb: Any) -> None:
    """DAMAGE: while nothing is drawn a grab returns the previous buffer (new capture time);
    its content equals a real grab's; drawing makes the next grab a real one."""
    env = xvfb.env
    with tk_app(env, "Damage target", 200, 150) as app:
        backend = X11Backend(xvfb.display)
        plain = X11Backend(xvfb.display, use_damage=False)
        backend.start(Collector())
        try:
            first = backend.grab()
            # Tk may still be drawing just after mapping: wait for two grabs sharing one buffer
            def same_twice() -> Any:  # reused, and equal to a real grab (no DAMAGE) right after
                a, b = backend.grab(), backend.grab()
                return (a, b) if a.pixels is b.pixels and plain.grab().pixels == b.pixels else None

            # (retried: Tk may still be drawing, an insertion cursor may blink)
            pair = wait_for(same_twice, what="an unchanged screen to reuse the grab")
            assert pair[1].captured_ns > pair[0].captured_ns > first.captured_ns
            # tkapp: button #c81e1e at window offset (10, 10), green #1ec81e after a click
            assert _pixel(pair[1], 200 + 70, 150 + 30) == (0xC8, 0x1E, 0x1E)
            xdotool(env, "mousemove", str(200 + 70), str(150 + 30), "click", "1")
            app.proc.stdout.readline()  # "CLICKED" after repainting
            later = wait_for(lambda: (f := backend.grab()) and _pixel(f, 270, 180) == (0x1E, 0xC8, 0x1E) and f,
                             what="button turns green in a grab")
            assert later.pixels is not pair[1].pixels
        finally:
            backend.stop()
            plain.stop()


def test_damage_grabs_follow_a_busy_screen_to_its_final_content(xvfb: Any) -> None:
    """Grabbing while a terminal prints 400 lines for about 2 s (drawing races the grabs): once
    the printing ends, a DAMAGE grab equals a real grab (no drawing is ever missed)."""
    import threading

    env = xvfb.env
    script = "for i in $(seq 400); do echo line $i; sleep 0.004; done; echo DONE; sleep 60"
    proc = subprocess.Popen(["xterm", "-T", "Busy term", "-geometry", "60x20+30+30", "-e", "sh", "-c", script],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    backend = X11Backend(xvfb.display)
    plain = X11Backend(xvfb.display, use_damage=False)
    grabs = [backend.grab()]
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            grabs.append(backend.grab())

    try:
        search_window(env, "Busy term", timeout=10)
        th = threading.Thread(target=loop)
        th.start()
        try:
            def settled() -> Any:  # two real grabs 0.3 s apart agree: the printing is over
                a = plain.grab().pixels
                time.sleep(0.3)
                return a if plain.grab().pixels == a else None

            final = wait_for(settled, timeout=30, interval=0.05, what="the terminal to finish printing")
            after = time.monotonic_ns()
            # the grabbing thread's own next grab (its DAMAGE object lived through the races)
            last = wait_for(lambda: grabs[-1].captured_ns > after and grabs[-1], what="a grab after the end")
        finally:
            stop.set()
            th.join(10)
        assert len({id(g.pixels) for g in grabs}) > 2  # it grabbed while the screen changed
        assert last.pixels == final, "a DAMAGE grab missed drawing: stale screen"
    finally:
        stop.set()
        backend.stop()
        plain.stop()
        proc.kill()
        proc.wait()


def test_region_grabs_patched_into_the_previous_grab_equal_full_grabs(xvfb: Any) -> None:
    """DAMAGE region grabs: after each of several small changes (typed words echoed by an
    xterm) the patched frame equals a full grab (no DAMAGE) byte for byte, and the small
    changes were grabbed as regions (``damage`` lists small rectangles), not as full grabs."""
    env = xvfb.env
    with xterm(env, "Region term", "30x6+40+40") as term:
        backend = X11Backend(xvfb.display, region_grabs=True)
        plain = X11Backend(xvfb.display, use_damage=False)
        frames: list[Any] = []

        def agrees() -> Any:  # a damage grab bracketed by two equal full grabs must equal them
            a = plain.grab().pixels
            f = backend.grab()
            frames.append(f)
            return f if plain.grab().pixels == a and f.pixels == a else None

        try:
            wait_for(agrees, timeout=10, what="xterm to finish drawing")
            xdotool(env, "mousemove", "60", "60")  # keyboard focus follows the pointer (no WM): no focus change
            n_before = len(frames)
            for word in ("alpha", "bravo", "charlie", "delta"):
                xdotool(env, "type", "--delay", "20", word + " ")
                final = wait_for(agrees, timeout=10, what=f"a damage grab equal to a full grab after {word!r}")
                assert len(final.pixels) == xvfb.width * xvfb.height * 4
            partial = [f for f in frames[n_before:] if f.damage]
            assert partial, "no region grab was made for the typed words"
            # an xterm glyph cell is a few pixels: every patched rectangle is far below the screen
            for f in partial:
                area = sum(r.width * r.height for r in f.damage)
                assert 0 < area < xvfb.width * xvfb.height / 10
                assert all(r.x >= 0 and r.y >= 0 and r.x + r.width <= xvfb.width
                           and r.y + r.height <= xvfb.height for r in f.damage)
        finally:
            backend.stop()
            plain.stop()


def test_patch_rects_clips_dedups_and_merges() -> None:
    """The region list for a grab: clipped to a 100x50 screen, contained and repeated rectangles
    dropped, more than REGION_GRAB_MAX_RECTS merged into the bounding box, full grab above half
    the screen (values worked out by hand)."""
    from demotrace.capture.x11 import _patch_rects

    assert _patch_rects([(90, 40, 20, 20), (80, 30, 5, 5), (200, 0, 5, 5), (-9, 0, 5, 5)], 100, 50) == [(80, 30, 5, 5), (90, 40, 10, 10)]
    assert _patch_rects([(10, 10, 10, 10), (12, 12, 2, 2), (10, 10, 10, 10)], 100, 50) == [(10, 10, 10, 10)]
    nine = [(i * 10, 0, 2, 2) for i in range(9)]  # bounding box (0, 0)-(82, 2): 164 px
    assert _patch_rects(nine, 100, 50) == [(0, 0, 82, 2)]
    assert _patch_rects([(0, 0, 2, 2), (98, 48, 2, 2)], 100, 50) is None  # box 100x50 > 2500 px
    assert _patch_rects([(300, 300, 5, 5)], 100, 50) == []


def test_grab_from_several_threads(xvfb: Any) -> None:
    import threading

    backend = X11Backend(xvfb.display)
    backend.start(Collector())
    sizes: list[tuple[int, int]] = []
    try:
        threads = [threading.Thread(target=lambda: sizes.append((f := backend.grab()).width and (f.width, f.height)))
                   for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    finally:
        backend.stop()
    assert sizes == [(xvfb.width, xvfb.height)] * 3


# -- lifecycle -----------------------------------------------------------------------------------

def test_stop_is_quick_idempotent_and_restartable(xvfb: Any) -> None:
    backend = X11Backend(xvfb.display)
    for _ in range(2):
        col = Collector()
        backend.start(col)
        assert backend.check_health() == []
        t0 = time.monotonic()
        backend.stop()
        backend.stop()
        assert time.monotonic() - t0 < 1.0
        assert backend.check_health() == []
        threads = [t.name for t in __import__("threading").enumerate() if t.name.startswith("demotrace-x11")]
        assert threads == []


# -- a second X server with a window manager (openbox) and other keyboard layouts ----------------
# Kept apart from the session-wide Xvfb: a reparenting WM and layout switches would change what
# other tests see there.

@pytest.fixture(scope="module")
def wm_xvfb() -> Iterator[Any]:
    with xvfb_with_openbox(1024, 768) as server:
        yield server


def test_ewmh_active_window_with_frame_bounds(wm_xvfb: Any) -> None:
    env = wm_xvfb.env
    with tk_app(env, "Managed Tk", 100, 120) as tk, xterm(env, "Managed term", "50x8+500+300") as term:
        xdotool(env, "windowactivate", "--sync", str(tk.wid))
        cap = Capture(wm_xvfb.display)
        try:
            xdotool(env, "windowactivate", "--sync", str(term.wid))
            cap.col.wait(lambda evs: any(c is FocusChange and f["window_id"] == term.wid for c, _t, f in evs),
                         what="active xterm")
            tk.command("title Managed Tk ✓ renamed", "TITLE")  # not focused: no event
            xdotool(env, "windowactivate", "--sync", str(tk.wid))
            cap.col.wait(lambda evs: any(c is FocusChange and f["title"] == "Managed Tk ✓ renamed"
                                         for c, _t, f in evs), what="active Tk, renamed")
        finally:
            cap.stop()
        tk_frame = Rect(*geometry(env, tk.wid, frame=True))
        term_frame = Rect(*geometry(env, term.wid, frame=True))
        assert tk_frame != Rect(*geometry(env, tk.wid))  # openbox decorates: the frame is larger
    got = [(f["window_id"], f["app_id"], f["title"], f["pid"], f["bounds"]) for f in _focus_events(cap)]
    assert got == [
        (tk.wid, "Demotk", "Managed Tk", tk.info["pid"], tk_frame),
        (term.wid, "XTerm", "Managed term", term.proc.pid, term_frame),
        (tk.wid, "Demotk", "Managed Tk ✓ renamed", tk.info["pid"], tk_frame),
    ]


def test_french_layout_altgr_and_dead_keys(wm_xvfb: Any) -> None:
    env = wm_xvfb.env
    x(["setxkbmap", "fr"], env)
    try:
        cap = Capture(wm_xvfb.display)
        try:
            kc_q, kc_1, kc_e, kc_altgr, kc_circ = 16 + 8, 2 + 8, 18 + 8, 100 + 8, 26 + 8  # evdev + 8
            fake_keys(wm_xvfb.display, *tap(kc_q), *tap(kc_1), (kc_altgr, True), *tap(kc_e), (kc_altgr, False),
                      *tap(kc_circ), *tap(kc_e))
            _wait_keys(cap, 12, "AZERTY keys")
        finally:
            cap.stop()
    finally:
        x(["setxkbmap", "us"], env)
    G = ("AltGraph",)
    # xkeyboard-config "fr": KEY_Q → a, KEY_1 → ampersand, RALT → ISO_Level3_Shift,
    # KEY_E level 3 → EuroSign, KEY_LEFTBRACE → dead_circumflex
    assert _keys(cap.col.of(*KEYS)) == [
        ("KeyDown", _kd("a", "KeyQ", (), "a")), ("KeyUp", _kd("a", "KeyQ")),
        ("KeyDown", _kd("&", "Digit1", (), "&")), ("KeyUp", _kd("&", "Digit1")),
        ("KeyDown", _kd("AltGraph", "AltRight")),
        ("KeyDown", _kd("€", "KeyE", G, "€")), ("KeyUp", _kd("€", "KeyE", G)),
        ("KeyUp", _kd("AltGraph", "AltRight", G)),
        ("KeyDown", _kd("Dead", "BracketLeft")), ("KeyUp", _kd("Dead", "BracketLeft")),
        ("KeyDown", _kd("e", "KeyE", (), "e")), ("KeyUp", _kd("e", "KeyE")),
    ]


def test_layout_switch_while_recording_is_followed(wm_xvfb: Any) -> None:
    env = wm_xvfb.env
    cap = Capture(wm_xvfb.display)
    try:
        kc_q = 16 + 8
        fake_keys(wm_xvfb.display, *tap(kc_q))
        x(["setxkbmap", "fr"], env)  # MappingNotify → the backend re-reads the mapping
        time.sleep(0.3)  # MappingNotify is asynchronous; the layout switch is the test's input
        fake_keys(wm_xvfb.display, *tap(kc_q))
        _wait_keys(cap, 4, "q then a")
    finally:
        cap.stop()
        x(["setxkbmap", "us"], env)
    assert [f["key"] for n, f in cap.col.of(KeyDown)] == ["q", "a"]


def test_monitor_layout_change_reemits_screen_config(wm_xvfb: Any) -> None:
    env = wm_xvfb.env
    cap = Capture(wm_xvfb.display)
    try:
        x(["xrandr", "--setmonitor", "LEFT-HALF", "512/135x768/203+0+0", "screen"], env)
        x(["xrandr", "--setmonitor", "RIGHT-HALF", "512/135x768/203+512+0", "none"], env)
        expected = list_monitors(env)
        cap.col.wait(lambda evs: sum(1 for c, _t, _f in evs if c is ScreenConfig) >= 2, timeout=6,
                     what="second ScreenConfig")
    finally:
        cap.stop()
        for name in ("LEFT-HALF", "RIGHT-HALF"):
            subprocess.run(["xrandr", "--delmonitor", name], env=env, capture_output=True)
    assert sorted(n for n, _p, _b in expected) == ["LEFT-HALF", "RIGHT-HALF"]
    configs = [f for _n, f in cap.col.of(ScreenConfig)]
    last = configs[-1]
    assert [(m.name, m.primary, m.bounds) for m in last["monitors"]] == [
        (name, prim, Rect(*b)) for name, prim, b in expected]
    assert last["desktop"] == Rect(0, 0, 1024, 768)


def test_release_press_pair_within_a_millisecond_is_a_repeat(xvfb: Any, cap: Capture) -> None:
    # the synthetic release/press pairs of X auto-repeat, sent through XTest back to back
    fake_keys(xvfb.display, (KC_A, True), (KC_A, False), (KC_A, True), (KC_A, False))
    _wait_keys(cap, 3, "pair")
    assert _keys(cap.col.of(*KEYS)) == [
        ("KeyDown", _kd("a", "KeyA", (), "a")),
        ("KeyDown", _kd("a", "KeyA", (), "a", repeat=True)),
        ("KeyUp", _kd("a", "KeyA")),
    ]


def test_legacy_keysyms_translate_without_a_display(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    from demotrace.capture import _xorg_keys

    monkeypatch.delenv("DISPLAY", raising=False)
    keys_mod = importlib.reload(_xorg_keys)
    # keysymdef.h: EuroSign 0x20ac = U+20AC, Cyrillic_a 0x6c1 = U+0430, eacute 0xe9 (Latin-1),
    # U+1F3AC as a Unicode keysym 0x0101F3AC; KP_Begin 0xff9d = "Clear"; dead_acute 0xfe51
    assert [keys_mod.keysym_to_key(k) for k in (0x20AC, 0x6C1, 0xE9, 0x0101F3AC, 0xFF9D, 0xFE51, 0)] == [
        "€", "\u0430", "é", "🎬", "Clear", "Dead", "Unidentified"]


def test_health_reports_a_lost_x_server() -> None:
    from conftest import start_xvfb

    server = start_xvfb(320, 240)
    backend = X11Backend(server.display)
    try:
        backend.start(Collector())
        assert backend.check_health() == []
        server.proc.kill()
        server.proc.wait(5)
        problems = wait_for(backend.check_health, timeout=5, what="health problems")
        assert any("RECORD" in p or "window tracker" in p for p in problems), problems
    finally:
        backend.stop()
        if server.proc.poll() is None:
            server.proc.kill()
