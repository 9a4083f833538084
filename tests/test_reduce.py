"""Reduction rules (DESIGN.md sections 5 and 10), each with hand-worked expected values."""

from __future__ import annotations

from demotrace.build import BuildSettings, reduce_events
from demotrace.build.keys import hotkey_base
from demotrace.build.reduce import ReduceStats
from demotrace.schema import (
    Element, FocusChange, KeyDown, KeyUp, PointerDown, PointerMove, PointerUp, Rect, TextInput, Wheel,
)

MS = 1_000_000


class Rec:
    """Builds an event list with seq in call order and t in milliseconds."""

    def __init__(self) -> None:
        self.events: list = []

    def _add(self, cls, t_ms, **kw):
        ev = cls(seq=len(self.events), t_ns=int(t_ms * MS), **kw)
        self.events.append(ev)
        return ev

    def move(self, t, x, y):
        return self._add(PointerMove, t, x=x, y=y)

    def down(self, t, x, y, button="left"):
        return self._add(PointerDown, t, x=x, y=y, button=button)

    def up(self, t, x, y, button="left"):
        return self._add(PointerUp, t, x=x, y=y, button=button)

    def click(self, t, x, y, button="left", hold=60):
        self.down(t, x, y, button)
        self.up(t + hold, x, y, button)

    def wheel(self, t, x, y, dx=0.0, dy=-1.0, unit="tick"):
        return self._add(Wheel, t, x=x, y=y, dx=dx, dy=dy, unit=unit)

    def kd(self, t, key, code, text=None, **kw):
        return self._add(KeyDown, t, key=key, code=code, text=text, **kw)

    def ku(self, t, key, code, **kw):
        return self._add(KeyUp, t, key=key, code=code, **kw)

    def tap(self, t, key, code, text=None, hold=40):
        self.kd(t, key, code, text)
        self.ku(t + hold, key, code)

    def type(self, t, s, step=100):
        for i, ch in enumerate(s):
            code = "Key" + ch.upper() if ch.isalpha() else ("Space" if ch == " " else "Unidentified")
            self.tap(t + i * step, ch, code, ch)
        return t + len(s) * step


def run(events, **settings):
    return list(reduce_events(events, BuildSettings(**settings)))


def test_single_click_with_premove_and_seqs():
    r = Rec()
    r.move(0, 10, 10)
    r.move(10, 20, 15)
    r.click(100, 30, 20)
    (a,) = run(r.events)
    assert (a.type, a.x, a.y, a.button, a.count) == ("click", 30, 20, "left", 1)
    assert a.t_start_ns == 100 * MS and a.t_end_ns == 160 * MS
    assert a.source_seqs == (2, 3)
    assert [(p.x, p.y, p.t_ns) for p in a.pre_move] == [(10, 10, 0), (20, 15, 10 * MS)]


def test_double_and_triple_click():
    r = Rec()
    r.click(0, 100, 100)
    r.click(200, 101, 100)      # 200 ms later, 1 px away → count 2
    r.click(400, 100, 102)      # 2 px away → count 3
    r.click(600, 100, 100)      # fourth press starts a new click
    acts = run(r.events)
    assert [(a.type, a.count) for a in acts] == [("click", 3), ("click", 1)]
    assert acts[0].source_seqs == (0, 1, 2, 3, 4, 5)
    assert acts[0].t_end_ns == 460 * MS


def test_two_clicks_two_seconds_apart_same_spot():
    r = Rec()
    r.click(0, 50, 50)
    r.click(2000, 50, 50)
    acts = run(r.events)
    assert [(a.type, a.count, a.t_start_ns) for a in acts] == [("click", 1, 0), ("click", 1, 2000 * MS)]


def test_quick_clicks_on_different_elements_not_merged():
    r = Rec()
    r.click(0, 50, 50)
    r.click(150, 80, 50)        # 30 px away, within 0.5 s
    acts = run(r.events)
    assert [(a.x, a.count) for a in acts] == [(50, 1), (80, 1)]


def test_wobble_is_click_and_drag_keeps_path():
    r = Rec()
    r.down(0, 100, 100)
    r.move(20, 101, 101)
    r.move(40, 102, 100)        # 2 px wobble
    r.up(60, 101, 100)
    r.down(1000, 200, 200)
    r.move(1020, 205, 200)
    r.move(1040, 230, 210)
    r.up(1060, 240, 220)
    a, b = run(r.events)
    assert (a.type, a.x, a.y, a.count) == ("click", 100, 100, 1)
    assert b.type == "drag" and (b.x, b.y, b.x2, b.y2) == (200, 200, 240, 220)
    assert [(p.x, p.y) for p in b.path] == [(200, 200), (205, 200), (230, 210), (240, 220)]
    assert b.source_seqs == (4, 7)  # down, up (seq 0-3 are the click)


def test_right_and_middle_click():
    r = Rec()
    r.click(0, 10, 10, "right")
    r.click(1000, 10, 10, "middle")
    assert [(a.button, a.count) for a in run(r.events)] == [("right", 1), ("middle", 1)]


def test_scroll_merge_units_and_axes():
    r = Rec()
    r.wheel(0, 100, 100, dy=-1)
    r.wheel(100, 102, 101, dy=-1)
    r.wheel(200, 103, 101, dx=1, dy=-1)
    r.wheel(300, 103, 101, dy=-12.5, unit="pixel")     # other unit → new scroll
    r.wheel(1000, 103, 101, dy=2)                     # 700 ms gap → new scroll
    acts = run(r.events)
    assert [(a.type, a.dx, a.dy, a.unit) for a in acts] == [
        ("scroll", 1, -3, "tick"), ("scroll", 0, -12.5, "pixel"), ("scroll", 0, 2, "tick")]
    assert acts[0].source_seqs == (0, 1, 2)
    assert (acts[0].x, acts[0].y) == (100, 100)


def test_typing_with_shift_backspace_and_cursor():
    r = Rec()
    r.kd(0, "Shift", "ShiftLeft")
    r.kd(50, "H", "KeyH", "H")
    r.ku(80, "h", "KeyH")                             # release reported lower-case: pairs by code
    r.ku(90, "Shift", "ShiftLeft")
    t = r.type(100, "elo")                            # "Helo"
    r.tap(t, "ArrowLeft", "ArrowLeft")                # cursor between l and o
    r.tap(t + 100, "l", "KeyL", "l")                  # "Hello"
    r.tap(t + 200, "End", "End")
    r.tap(t + 300, "x", "KeyX", "x")
    r.tap(t + 400, "Backspace", "Backspace")          # removes x
    r.tap(t + 500, "Enter", "Enter")
    acts = run(r.events)
    assert [(a.type, a.text, a.keys) for a in acts] == [
        ("type", "Hello", ("H", "e", "l", "o", "ArrowLeft", "l", "End", "x", "Backspace")),
        ("key", None, ("enter",)),
    ]
    assert "unpaired_release" not in acts[0].flags


def test_backspace_past_run_start_becomes_key():
    r = Rec()
    r.tap(0, "a", "KeyA", "a")
    r.tap(100, "Backspace", "Backspace")
    r.tap(200, "Backspace", "Backspace")              # deletes text typed before the recording
    acts = run(r.events)
    assert [(a.type, a.text, a.keys) for a in acts] == [
        ("type", "", ("a", "Backspace")), ("key", None, ("backspace",))]
    assert "empty_text" in acts[0].flags


def test_held_backspace_repeats_delete():
    r = Rec()
    r.type(0, "abcd")
    r.kd(500, "Backspace", "Backspace")
    r.kd(1000, "Backspace", "Backspace", is_repeat=True)
    r.kd(1030, "Backspace", "Backspace", is_repeat=True)
    r.ku(1050, "Backspace", "Backspace")
    (a,) = run(r.events)
    assert a.text == "a" and "auto_repeat" in a.flags


def test_auto_repeat_special_key_one_action_with_count():
    r = Rec()
    r.kd(0, "ArrowDown", "ArrowDown")
    r.kd(500, "ArrowDown", "ArrowDown", is_repeat=True)
    r.ku(530, "ArrowDown", "ArrowDown")               # X11: synthetic release …
    r.kd(530, "ArrowDown", "ArrowDown")               # … and press at the same time
    r.ku(600, "ArrowDown", "ArrowDown")
    (a,) = run(r.events)
    assert (a.type, a.keys, a.count) == ("key", ("down",), 3)
    assert "auto_repeat" in a.flags and a.t_end_ns == 600 * MS


def test_ctrl_letter_control_character_and_ctrl_shift_t():
    r = Rec()
    r.kd(0, "Control", "ControlLeft")
    r.kd(50, "\x03", "KeyC")                          # control character reported as key
    r.ku(90, "\x03", "KeyC")
    r.ku(120, "Control", "ControlLeft")
    r.kd(1000, "Control", "ControlRight")
    r.kd(1050, "Shift", "ShiftLeft")
    r.kd(1100, "T", "KeyT")
    r.ku(1150, "T", "KeyT")
    r.ku(1160, "Shift", "ShiftLeft")
    r.ku(1170, "Control", "ControlRight")
    acts = run(r.events)
    assert [(a.type, a.keys) for a in acts] == [("hotkey", ("ctrl", "c")), ("hotkey", ("ctrl", "shift", "t"))]
    assert acts[0].source_seqs == (0, 1, 2)


def test_hotkey_base_names():
    assert hotkey_base("!", "Digit1") == "1"
    assert hotkey_base("å", "KeyA") == "a"
    assert hotkey_base("a", "KeyQ") == "a"                # AZERTY: the labelled key wins
    assert hotkey_base("\x1a", "Unidentified") == "z"
    assert hotkey_base("Tab", "Tab") == "tab"


def test_ime_text_wins_over_keys_and_dead_key():
    r = Rec()
    r.kd(0, "Process", "KeyN")
    r.kd(100, "Process", "KeyI")
    r._add(TextInput, 200, text="你")
    r.kd(300, "Dead", "Quote")
    r.kd(400, "e", "KeyE", "e")
    r._add(TextInput, 401, text="é")
    r.kd(500, "x", "KeyX", "x")
    r._add(TextInput, 510, text="x")                  # echo of the same character
    (a,) = run(r.events)
    assert a.text == "你éx"
    assert "ime_text" in a.flags


def test_altgr_typing_not_hotkey():
    r = Rec()
    r.kd(0, "AltGraph", "AltRight")
    r.kd(50, "@", "KeyQ", "@")
    r.ku(90, "@", "KeyQ")
    r.ku(100, "AltGraph", "AltRight")
    (a,) = run(r.events)
    assert (a.type, a.text) == ("type", "@")


def test_shift_tab_and_lone_modifier():
    r = Rec()
    r.kd(0, "Shift", "ShiftLeft")
    r.tap(50, "Tab", "Tab")
    r.ku(120, "Shift", "ShiftLeft")
    r.kd(1000, "Meta", "MetaLeft")
    r.ku(1100, "Meta", "MetaLeft")
    acts = run(r.events)
    assert [(a.type, a.keys) for a in acts] == [("hotkey", ("shift", "tab")), ("key", ("win",))]


def test_both_shifts_one_released_still_types_upper():
    r = Rec()
    r.kd(0, "Shift", "ShiftLeft")
    r.kd(10, "Shift", "ShiftRight")
    r.ku(20, "Shift", "ShiftLeft")
    r.tap(50, "A", "KeyA", "A")
    r.ku(200, "Shift", "ShiftRight")
    (a,) = run(r.events)
    assert (a.type, a.text) == ("type", "A")


def test_unpaired_press_and_release():
    r = Rec()
    r.ku(0, "a", "KeyA")                              # released, never pressed
    r.up(10, 5, 5)
    r.click(100, 40, 40)
    r.down(1000, 60, 60)                              # never released
    acts = run(r.events)
    assert [(a.type, a.x) for a in acts] == [("click", 40), ("mouse_down", 60)]
    assert "unpaired_release" in acts[0].flags
    assert "unpaired_press" in acts[1].flags


def test_stuck_modifier_dropped_when_source_reports_modifiers():
    r = Rec()
    r.kd(0, "Control", "ControlLeft")                 # release lost
    r.kd(500, "x", "KeyX", "x", modifiers=())
    r.kd(600, "y", "KeyY", "y", modifiers=("Shift",))  # source reports modifiers: Control is not held
    stats = ReduceStats()
    acts = list(reduce_events(r.events, BuildSettings(), stats))
    assert [(a.type, a.keys, a.text) for a in acts] == [("hotkey", ("ctrl", "x"), None), ("type", ("y",), "y")]
    assert stats.stuck_modifiers == 1


def test_out_of_order_arrival_is_sorted():
    r = Rec()
    r.click(0, 10, 10)
    r.tap(300, "a", "KeyA", "a")
    ev = r.events
    shuffled = [ev[2], ev[0], ev[3], ev[1]]           # key press arrives before the click
    acts = run(shuffled)
    assert [a.type for a in acts] == ["click", "type"]
    assert acts[0].source_seqs == (0, 1)


def test_clock_jump_backwards_does_not_crash_and_is_flagged():
    r = Rec()
    r.click(10_000, 10, 10)
    r.click(2_000, 300, 300)                          # clock went back 8 s (suspend / change)
    stats = ReduceStats()
    acts = list(reduce_events(r.events, BuildSettings(), stats))
    assert [a.x for a in acts] == [10, 300]
    assert stats.clock_jumps == 1 and "clock_jump" in acts[1].flags
    assert acts[1].t_start_ns >= acts[0].t_end_ns


def test_late_event_within_jump_limit_is_placed_at_stream_time():
    r = Rec()
    evs = []
    for i in range(5000):                             # enough to release the first chunk
        evs.append(PointerMove(seq=i, t_ns=i * 2 * MS, x=5, y=5))
    evs.append(PointerDown(seq=5000, t_ns=3 * MS, x=5, y=5, button="left"))   # 10 s late
    evs.append(PointerUp(seq=5001, t_ns=10_000 * MS, x=5, y=5, button="left"))
    stats = ReduceStats()
    acts = list(reduce_events(evs, BuildSettings(clock_jump_ns=60_000 * MS), stats))
    assert len(acts) == 1 and acts[0].type == "click" and stats.late_events == 1
    assert "late_event" in acts[0].flags


def test_context_and_target():
    r = Rec()
    r._add(FocusChange, 0, window_id=7, app_id="gedit", title="notes — gedit")
    r._add(Element, 90, role="push button", name="Save", bounds=Rect(20, 20, 40, 20), source="atspi")
    r.click(100, 30, 25)
    r._add(Element, 900, role="push button", name="Far", bounds=Rect(500, 500, 10, 10), source="atspi")
    r.click(1000, 30, 25)                             # element bounds do not contain the point
    a, b = run(r.events)
    assert a.context.app_id == "gedit" and a.context.window_id == 7
    assert a.target.name == "Save" and b.target is None


def test_ctrl_click_and_ctrl_wheel_keep_modifiers():
    r = Rec()
    r.kd(0, "Control", "ControlLeft")
    r.click(100, 10, 10)
    r.wheel(1000, 10, 10, dy=1)
    r.ku(1100, "Control", "ControlLeft")
    a, b = run(r.events)
    assert (a.type, a.keys) == ("click", ("ctrl",))
    assert (b.type, b.keys, b.dy) == ("scroll", ("ctrl",), 1)


def test_numpad_without_character_is_a_named_key_and_with_numlock_types():
    r = Rec()
    r.tap(0, "ArrowLeft", "Numpad4")                  # NumLock off: the keypad arrow
    r.tap(1000, "5", "Numpad5", "5")                  # NumLock on: a digit
    r.tap(1100, "Clear", "Numpad5")                   # NumLock off keypad 5
    acts = run(r.events)
    assert [(a.type, a.keys, a.text) for a in acts] == [
        ("key", ("left",), None), ("type", ("5",), "5"), ("key", ("clear",), None)]


def test_fractional_touchpad_deltas_are_summed_not_rounded():
    r = Rec()
    for i in range(4):
        r.wheel(i * 20, 300, 300, dx=-0.25, dy=0.125, unit="pixel")
    (a,) = run(r.events)
    assert (a.dx, a.dy, a.unit) == (-1.0, 0.5, "pixel")


def test_double_click_drag_is_click_then_drag():
    r = Rec()
    r.click(0, 100, 100)
    r.down(200, 100, 100)                             # second press of a double click …
    r.move(300, 160, 100)                             # … dragged: select by word
    r.up(400, 160, 100)
    a, b = run(r.events)
    assert (a.type, a.count) == ("click", 1)
    assert (b.type, b.x, b.x2) == ("drag", 100, 160) and "after_click" in b.flags
