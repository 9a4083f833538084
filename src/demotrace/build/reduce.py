"""Raw events → canonical actions (DESIGN.md section 5), streaming.

:func:`reduce_events` reads schema-v1 events in any arrival order and yields
:class:`~demotrace.schema.Action` objects in time order (non-decreasing ``t_start_ns``).
Memory is bounded by the settings (reorder window, path and pre-move caps), never by the
session length.

Stages (one pass):

1. **Order** (:func:`ordered_chunks`): events are sorted by ``(t_ns, seq)`` inside a sliding
   window of ``reorder_window_ns``. An event that arrives later than the already released part
   of the stream is placed at the stream's current time (flag ``late_event``); an event more
   than ``clock_jump_ns`` behind the newest time is a backwards clock jump: it and every later
   event are shifted to continue after the newest time (flag ``clock_jump``). After a jump the
   actions' times are on this repaired timeline (frames are shifted the same way, so alignment
   stays consistent).
2. **Reduce** (:class:`_Reducer`): the rules below; every action keeps ``t_start_ns`` /
   ``t_end_ns`` (its first / last raw event), ``source_seqs``, ``pre_move``, ``context`` (the
   latest ``focus_change`` when it started) and ``target`` (the latest ``element`` near it).

Rules (thresholds are :class:`~demotrace.build.settings.BuildSettings` fields):

- Moves are not actions: the pointer samples since the previous action started are the next
  action's ``pre_move`` (the newest ``pre_move_max_points``; a drag's own samples are its path).
- Click: press and release of one button within ``drag_threshold_px`` of the press point;
  the next press of the same button within ``multi_click_interval_ns`` (press to press) and
  ``multi_click_distance_px`` of the first press raises ``count`` (up to
  ``max_click_count``). ``x``, ``y`` is the first press point. ``keys`` lists held modifiers
  (pyautogui names) for Ctrl-click, Shift-click …
- Drag: the pointer got farther than ``drag_threshold_px`` from the press point before the
  release; ``x``, ``y`` → ``x2``, ``y2`` (press → release) and ``path`` (samples). A drag
  whose press would have continued a multi-click (double-click-drag selects by word) follows
  the emitted click and is flagged ``after_click``.
- Scroll: wheel events merge while each follows the previous within ``scroll_merge_gap_ns``,
  lies within ``scroll_merge_distance_px`` of the first, has the same ``unit`` and the same
  held modifiers; ``dx`` / ``dy`` are sums (both axes; ticks and pixels never mixed).
- Type: a run of keys producing printable text (Shift and AltGraph allowed; a Ctrl+Alt
  combination producing a character that is not the key's letter is Windows AltGr) becomes
  ``type(text)``. Backspace / Delete / ArrowLeft / ArrowRight inside the run edit the text;
  Home / End move to the run's line start / end (flag ``line_edit_assumed``); an edit that
  reaches past the run (Backspace at its start …) ends the run and becomes a ``key`` action.
  Auto-repeated keys insert their characters (that is what appeared on screen) and flag
  ``auto_repeat``. ``text_input`` is the authority: it replaces what the keys of the current
  composition (since the first ``Dead`` / ``Process`` key) produced, or the identical text the
  previous key produced within ``text_input_echo_ns``; flag ``ime_text``. The run ends at any
  other action, a focus change, a marker, or a pause over ``typing_run_gap_ns``. ``keys``
  holds the raw W3C ``key`` values of the run's key presses (provenance). A run whose edits
  leave no text is kept with flag ``empty_text``.
- Hotkey: a key pressed while Control / Alt / Meta is held → ``hotkey(keys)``: the held
  modifiers in press order (Shift included) then the key's base name (see
  :func:`demotrace.build.keys.hotkey_base`), e.g. ``["ctrl", "shift", "t"]``.
- Key: a named key (Enter, Tab, Escape, arrows, F-keys, Delete …) → ``key([name])`` with its
  pyautogui name; with Shift held → ``hotkey(["shift", name])``. A modifier pressed and
  released alone → ``key([name])``.
- Repeats: auto-repeat (``is_repeat``, a second press without release, or an X11 synthetic
  release + press within ``synthetic_release_gap_ns``) of a key / hotkey raises its ``count``
  (number of presses produced) and flags ``auto_repeat``; it is never a separate action.
- Unpaired: a release without a press produces no action; it is counted and flags the next
  action ``unpaired_release``. A button still pressed at the end (or pressed again without a
  release) becomes ``mouse_down`` (or a drag if it moved) flagged ``unpaired_press``; a lone
  modifier still held at the end becomes ``key_down``; a key / hotkey still held is flagged.
- A focus change does not release held keys or buttons (Alt stays held across Alt+Tab); it
  ends a typing run and a scroll.
- Matching of releases uses the physical ``code`` (a press reported as "W" and its release as
  "w" still pair); both Shift keys are tracked separately.
- If the source reports ``modifiers`` on key events, they override the tracked state (a
  modifier whose release was lost is dropped, flag ``stuck_modifier``).
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Union

import msgspec

from ..schema.actions import Action, Context, Point, Target
from ..schema.events import (
    Element,
    Event,
    FocusChange,
    Frame,
    KeyDown,
    KeyUp,
    Marker,
    PointerDown,
    PointerMove,
    PointerUp,
    ScreenConfig,
    TextInput,
    Wheel,
)
from .keys import (
    COMPOSE_KEYS,
    EDIT_KEYS,
    HOTKEY_MODIFIERS,
    MODIFIER_KEYS,
    hotkey_base,
    is_printable,
    modifier_name,
    special_name,
)
from .settings import BuildSettings

#: What the internal pipeline yields: actions, and pass-through frames / markers / screen
#: configurations for alignment and segmentation.
Item = Union[Action, Frame, Marker, ScreenConfig]

_CHUNK = 4096

#: An element without a pid may precede the focus move to its window by this much and still be
#: the focused window's (ns): a click's DOM element carries the click's time, the window
#: manager's focus change follows the click. Our choice (X11 focus follows a press within tens
#: of ms; a person cannot click in one window and act in another within 0.3 s).
FOCUS_LAG_NS = 300_000_000
_t_of = attrgetter("t_ns")
_order_key = attrgetter("t_ns", "seq")


@dataclass
class ReduceStats:
    """Counters of one reduction: ``events`` read, ``actions`` produced, ``late_events``
    (placed at the stream time), ``clock_jumps`` (backwards jumps repaired),
    ``unpaired_presses`` / ``unpaired_releases``, ``stuck_modifiers`` (dropped because the
    source's own modifier state said so)."""

    events: int = 0
    actions: int = 0
    late_events: int = 0
    clock_jumps: int = 0
    unpaired_presses: int = 0
    unpaired_releases: int = 0
    stuck_modifiers: int = 0
    event_flags: dict[int, str] = field(default_factory=dict)


def _shift(ev: Event, t: int) -> Event:
    delta = t - ev.t_ns
    if type(ev) is Frame:
        return msgspec.structs.replace(ev, t_ns=t, captured_t_ns=ev.captured_t_ns + delta)
    return msgspec.structs.replace(ev, t_ns=t)


def ordered_chunks(
    events: Iterable[Event], settings: BuildSettings, stats: ReduceStats
) -> Iterator[list[Event]]:
    """Yield lists of events in ``(t_ns, seq)`` order (stage 1 of the module docstring).

    Memory: at most ``_CHUNK`` events plus those inside the reorder window.
    """
    window = settings.reorder_window_ns
    jump = settings.clock_jump_ns
    buf: list[Event] = []
    append = buf.append
    released_t = -(1 << 62)
    max_t = -(1 << 62)
    last_t = -(1 << 62)
    offset = 0
    disorder = False
    flags = stats.event_flags
    n = 0
    check_at = _CHUNK
    for ev in events:
        t = ev.t_ns
        if offset:
            t += offset
        if t < last_t:
            if t < released_t or t < max_t - jump:
                if t < max_t - jump:
                    offset += max_t - t
                    t = max_t
                    stats.clock_jumps += 1
                    flags[ev.seq] = "clock_jump"
                else:
                    t = released_t
                    stats.late_events += 1
                    flags[ev.seq] = "late_event"
            disorder = True
        if t != ev.t_ns:
            ev = _shift(ev, t)
        append(ev)
        last_t = t
        if t > max_t:
            max_t = t
        n += 1
        if n >= check_at:
            if disorder:
                buf.sort(key=_order_key)
                disorder = False
            cut = bisect_right(buf, max_t - window, key=_t_of)
            if cut:
                out = buf[:cut]
                del buf[:cut]
                released_t = out[-1].t_ns
                yield out
            check_at = n + max(1, _CHUNK - len(buf))
    stats.events += n
    if buf:
        if disorder:
            buf.sort(key=_order_key)
        yield buf


def _dist2(ax: float, ay: float, bx: float, by: float) -> float:
    dx = ax - bx
    dy = ay - by
    return dx * dx + dy * dy


class _Press:
    __slots__ = ("button", "x", "y", "t", "seq", "path", "stride", "maxd2", "pre_move",
                 "continuing", "cont", "keys", "context", "flags")

    def __init__(self, ev: PointerDown, pre_move: tuple[Point, ...], continuing: bool,
                 keys: tuple[str, ...], context: Context | None, flags: list[str]) -> None:
        self.button = ev.button
        self.x = ev.x
        self.y = ev.y
        self.t = ev.t_ns
        self.seq = ev.seq
        self.path: list[tuple[float, float, int]] = [(ev.x, ev.y, ev.t_ns)]
        self.stride = 1
        self.maxd2 = 0.0
        self.pre_move = pre_move
        self.continuing = continuing
        self.cont: _Click | None = None
        self.keys = keys
        self.context = context
        self.flags = flags

    def add(self, x: float, y: float, t: int, cap: int) -> None:
        d2 = _dist2(x, y, self.x, self.y)
        if d2 > self.maxd2:
            self.maxd2 = d2
        path = self.path
        path.append((x, y, t))
        if len(path) > cap:
            # keep every other sample (first kept); the newest is re-added at the release
            self.path = path[::2]
            self.stride *= 2


class _Click:
    __slots__ = ("button", "x", "y", "t_start", "t_end", "last_press_t", "count", "seqs",
                 "pre_move", "keys", "context", "flags")


class _Scroll:
    __slots__ = ("x", "y", "t_start", "t_end", "dx", "dy", "unit", "seqs", "pre_move", "keys",
                 "context", "flags")


class _Run:
    __slots__ = ("buf", "cursor", "t_start", "t_end", "seqs", "keys", "codes", "flags",
                 "pre_move", "context", "compose_start", "compose_dead", "compose_done", "last_insert")

    def __init__(self, t: int, pre_move: tuple[Point, ...], context: Context | None) -> None:
        self.buf: list[str] = []
        self.cursor = 0
        self.t_start = t
        self.t_end = t
        self.seqs: list[int] = []
        self.keys: list[str] = []
        self.codes: set[str] = set()
        self.flags: list[str] = []
        self.pre_move = pre_move
        self.context = context
        self.compose_start: int | None = None
        self.compose_dead = False
        self.compose_done: int | None = None
        self.last_insert: tuple[int, str, int] | None = None

    def insert(self, text: str, t: int) -> None:
        pos = self.cursor
        self.buf[pos:pos] = list(text)
        self.cursor = pos + len(text)
        self.last_insert = (t, text, self.cursor)


class _KeyAct:
    __slots__ = ("type", "keys", "code", "t_start", "t_end", "count", "seqs", "flags",
                 "pre_move", "context", "released_t")


class _Held:
    __slots__ = ("key", "t", "seq", "used", "attached")

    def __init__(self, key: str, t: int, seq: int) -> None:
        self.key = key
        self.t = t
        self.seq = seq
        self.used = False
        self.attached = False  # its press is in some action's source_seqs already


#: Platforms name the Windows / Super / Hyper key's modifier bit differently (X11: "Meta").
_META_ALIASES = {"Super": "Meta", "Hyper": "Meta", "OS": "Meta"}


def _code_id(ev: KeyDown | KeyUp) -> str:
    if ev.code and ev.code != "Unidentified":
        return ev.code
    if ev.keysym is not None:
        return f"keysym:{ev.keysym}"
    if ev.vk is not None:
        return f"vk:{ev.vk}"
    return "key:" + ev.key.lower()


class _Reducer:
    """Stage 2: the state machine. Feed ordered events with :meth:`handle` (moves go
    through the inlined fast path of :func:`_pipeline`); take finished items from
    :attr:`ready`."""

    def __init__(self, settings: BuildSettings, stats: ReduceStats) -> None:
        s = settings
        self.s = s
        self.stats = stats
        self.meta = s.meta_key_name
        self.moves: deque[tuple[float, float, int]] = deque(maxlen=s.pre_move_max_points)
        self.pressed: dict[str, _Press] = {}
        self.click: _Click | None = None
        self.scroll: _Scroll | None = None
        self.run: _Run | None = None
        self.keyact: _KeyAct | None = None
        self.held: dict[str, _Held] = {}
        self.reports_mods = False
        self.context: Context | None = None
        self.element: Element | None = None
        # the focused window's process and when focus last moved to another window (title / URL
        # changes of the same window do not count): an element is a target only if it belongs
        # to that process, or (pid unknown on either side) arrived after focus moved
        self.focus_pid: int | None = None
        self.focus_key: object = None
        self.focus_t_ns: int | None = None
        self.pending_flags: list[tuple[int, str]] = []
        self.out: list[tuple[int, int, Action | Marker]] = []
        self.counter = 0
        self.ready: list[Item] = []
        self.drag_thr2 = s.drag_threshold_px ** 2
        self.click_d2 = s.multi_click_distance_px ** 2
        self.scroll_d2 = s.scroll_merge_distance_px ** 2

    # -- helpers ------------------------------------------------------------------------------
    def take_moves(self) -> tuple[Point, ...]:
        m = self.moves
        if not m:
            return ()
        if len(m) == m.maxlen:
            self.pending_flags.append((m[-1][2], "pre_move_truncated"))
        pts = tuple(Point(x, y, t) for x, y, t in m)
        m.clear()
        return pts

    def _target(self, t_start: int, x: float | None, y: float | None, t_end: int | None = None) -> Target | None:
        """The newest ``element`` as the target of an action from ``t_start`` to ``t_end`` (ns),
        or ``None``: it must be recorded within ``element_max_age_ns`` before ``t_start`` and, when
        ``t_end`` is given, at most ``element_max_age_ns`` after ``t_end`` (an action closed late —
        a typing run ends at the next non-key event — must not take an element of what came
        next); it must belong to the focused window (:meth:`_element_in_focus`); pointer
        actions must lie inside its bounds."""
        el = self.element
        if el is None or el.t_ns < t_start - self.s.element_max_age_ns:
            return None
        if t_end is not None and el.t_ns > t_end + self.s.element_max_age_ns:
            return None
        if not self._element_in_focus(el):
            return None
        if x is not None and y is not None and el.bounds is not None and not el.bounds.contains(x, y):
            return None
        return Target(role=el.role, name=el.name, bounds=el.bounds, source=el.source,
                      selector=el.selector, tag=el.tag, attributes=el.attributes)

    def _element_in_focus(self, el: Element) -> bool:
        """Whether ``el`` belongs to the focused window: its ``attributes["pid"]`` (AT-SPI
        application pid) equals the last ``focus_change`` pid (``_NET_WM_PID``) when both are
        known; otherwise it must have arrived at or after focus last moved to another window
        (less :data:`FOCUS_LAG_NS`: the window manager's focus follows the click that caused it,
        while a DOM element carries the click's own time).
        Rule from the bug bash: XTerm typing was given a GTK app's AT-SPI ``text`` element
        that arrived before focus moved to the XTerm (the element source only watches
        accessible apps, so the newest element can be another app's)."""
        if self.focus_t_ns is None:
            return True  # no focus_change seen: nothing to compare with
        raw = el.attributes.get("pid") if el.attributes else None
        el_pid = int(raw) if raw is not None and str(raw).isdigit() else None
        if el_pid is not None and self.focus_pid is not None:
            return el_pid == self.focus_pid
        return el.t_ns >= self.focus_t_ns - FOCUS_LAG_NS

    def emit(self, flags: list[str], **kw: object) -> None:
        if self.pending_flags:
            t0 = kw["t_start_ns"]
            keep = [(t, f) for t, f in self.pending_flags if t > t0]  # type: ignore[operator]
            if len(keep) != len(self.pending_flags):
                flags = flags + [f for t, f in self.pending_flags if t <= t0]  # type: ignore[operator]
                self.pending_flags = keep
        if flags:
            kw["flags"] = tuple(dict.fromkeys(flags))
        if "target" not in kw:
            kw["target"] = self._target(kw["t_start_ns"], kw.get("x"), kw.get("y"), kw.get("t_end_ns"))  # type: ignore[arg-type]
        act = Action(**kw)  # type: ignore[arg-type]
        self.counter += 1
        heapq.heappush(self.out, (act.t_start_ns, self.counter, act))
        self.stats.actions += 1

    def release(self, everything: bool = False) -> None:
        out = self.out
        if not out:
            return
        if everything:
            limit = 1 << 62
        else:
            limit = 1 << 62
            for p in self.pressed.values():
                limit = min(limit, p.t)
            for o in (self.click, self.scroll, self.run, self.keyact):
                if o is not None:
                    limit = min(limit, o.t_start)
            for h in self.held.values():  # a lone modifier may still become an action
                if not h.used and h.key in MODIFIER_KEYS:
                    limit = min(limit, h.t)
        ready = self.ready
        while out and out[0][0] <= limit:
            ready.append(heapq.heappop(out)[2])

    def mods_held(self) -> list[str]:
        """W3C names of held (non-lock) modifiers in press order; marks them used."""
        mods = []
        for h in self.held.values():
            if h.key in MODIFIER_KEYS and h.key not in ("CapsLock", "NumLock"):
                h.used = True
                if h.key not in mods:
                    mods.append(h.key)
        return mods

    def mod_keys(self, mods: list[str]) -> tuple[str, ...]:
        if not mods:
            return ()
        return tuple(dict.fromkeys(modifier_name(m, self.meta) for m in mods))

    # -- flushing -----------------------------------------------------------------------------
    def flush_click(self) -> None:
        c = self.click
        if c is None:
            return
        self.click = None
        self.emit(c.flags, type="click", t_start_ns=c.t_start, t_end_ns=c.t_end, x=c.x, y=c.y,
                  button=c.button, count=c.count, keys=c.keys, source_seqs=tuple(c.seqs),
                  pre_move=c.pre_move, context=c.context)

    def flush_scroll(self) -> None:
        s = self.scroll
        if s is None:
            return
        self.scroll = None
        flags = s.flags
        if s.dx == 0 and s.dy == 0:
            flags = flags + ["zero_delta"]
        self.emit(flags, type="scroll", t_start_ns=s.t_start, t_end_ns=s.t_end, x=s.x, y=s.y,
                  dx=s.dx, dy=s.dy, unit=s.unit, keys=s.keys, source_seqs=tuple(s.seqs),
                  pre_move=s.pre_move, context=s.context)

    def flush_run(self) -> None:
        r = self.run
        if r is None:
            return
        self.run = None
        text = "".join(r.buf)
        flags = r.flags
        if not text:
            flags = flags + ["empty_text"]
        self.emit(flags, type="type", t_start_ns=r.t_start, t_end_ns=r.t_end, text=text,
                  keys=tuple(r.keys), source_seqs=tuple(r.seqs), pre_move=r.pre_move,
                  context=r.context, target=self._target(r.t_start, None, None, r.t_end))

    def flush_keyact(self) -> None:
        k = self.keyact
        if k is None:
            return
        self.keyact = None
        self.emit(k.flags, type=k.type, t_start_ns=k.t_start, t_end_ns=k.t_end, keys=k.keys,
                  count=k.count, source_seqs=tuple(k.seqs), pre_move=k.pre_move,
                  context=k.context, target=self._target(k.t_start, None, None, k.t_end))

    def flush_all(self) -> None:
        self.flush_click()
        self.flush_scroll()
        self.flush_run()
        self.flush_keyact()

    def expire(self, t: int) -> None:
        """Close what can no longer continue at time ``t``."""
        c = self.click
        if c is not None and t - c.last_press_t > self.s.multi_click_interval_ns:
            self.flush_click()
        k = self.keyact
        if k is not None and k.released_t is not None and t - k.released_t > self.s.synthetic_release_gap_ns:
            self.flush_keyact()

    # -- pointer ------------------------------------------------------------------------------
    def drag_move(self, ev: PointerMove) -> None:
        cap = self.s.drag_path_max_points
        for p in self.pressed.values():
            p.add(ev.x, ev.y, ev.t_ns, cap)

    def pointer_down(self, ev: PointerDown) -> None:
        keys = self.mod_keys(self.mods_held()) if self.held else ()
        self.flush_run()
        self.flush_scroll()
        self.flush_keyact()
        b = ev.button
        old = self.pressed.pop(b, None)
        if old is not None:
            self.stats.unpaired_presses += 1
            self.finish_press(old, None, unpaired=True)
        c = self.click
        t = ev.t_ns
        if c is not None and (
            c.button != b
            or t - c.last_press_t > self.s.multi_click_interval_ns
            or _dist2(ev.x, ev.y, c.x, c.y) > self.click_d2
            or c.count >= self.s.max_click_count
            or keys != c.keys
        ):
            self.flush_click()
            c = None
        if c is not None:
            p = _Press(ev, (), True, keys, c.context, [])
            p.cont = c
            self.pressed[b] = p
            c.last_press_t = t
        else:
            self.pressed[b] = _Press(ev, self.take_moves(), False, keys, self.context, [])

    def pointer_up(self, ev: PointerUp) -> None:
        p = self.pressed.pop(ev.button, None)
        if p is None:
            self.stats.unpaired_releases += 1
            self.pending_flags.append((ev.t_ns, "unpaired_release"))
            return
        p.add(ev.x, ev.y, ev.t_ns, self.s.drag_path_max_points)
        self.finish_press(p, ev, unpaired=False)

    def finish_press(self, p: _Press, up: PointerUp | None, unpaired: bool) -> None:
        flags = list(p.flags)
        if unpaired:
            flags.append("unpaired_press")
        seqs = (p.seq,) if up is None else (p.seq, up.seq)
        t_end = up.t_ns if up is not None else p.path[-1][2]
        if p.maxd2 > self.drag_thr2:
            if p.continuing:  # e.g. double-click-drag (select by word): the click stays a click
                self.flush_click()
                flags.append("after_click")
            if p.stride > 1:
                flags.append("path_decimated")
            path = p.path
            if up is not None and path[-1][2] != up.t_ns:
                path.append((up.x, up.y, up.t_ns))
            x2, y2 = (up.x, up.y) if up is not None else (path[-1][0], path[-1][1])
            self.emit(flags, type="drag", t_start_ns=p.t, t_end_ns=t_end, x=p.x, y=p.y,
                      x2=x2, y2=y2, button=p.button, keys=p.keys,
                      path=tuple(Point(x, y, t) for x, y, t in path), source_seqs=seqs,
                      pre_move=p.pre_move, context=p.context)
            return
        if unpaired:
            if p.continuing:
                self.flush_click()
            self.emit(flags, type="mouse_down", t_start_ns=p.t, t_end_ns=p.t, x=p.x, y=p.y,
                      button=p.button, keys=p.keys, source_seqs=seqs, pre_move=p.pre_move,
                      context=p.context)
            return
        c = self.click
        if p.continuing and c is not None and c is p.cont:
            c.count += 1
            c.seqs.extend(seqs)
            c.t_end = t_end
            c.flags.extend(flags)
            if c.count >= self.s.max_click_count:
                self.flush_click()
            return
        self.flush_click()
        c = _Click()
        c.button = p.button
        c.x = p.x
        c.y = p.y
        c.t_start = p.t
        c.t_end = t_end
        c.last_press_t = p.t
        c.count = 1
        c.seqs = list(seqs)
        c.pre_move = p.pre_move
        c.keys = p.keys
        c.context = p.context
        c.flags = flags
        self.click = c
        if self.s.max_click_count == 1:
            self.flush_click()

    def wheel(self, ev: Wheel) -> None:
        keys = self.mod_keys(self.mods_held()) if self.held else ()
        self.flush_run()
        self.flush_click()
        self.flush_keyact()
        s = self.scroll
        t = ev.t_ns
        if s is not None and (
            s.unit != ev.unit
            or t - s.t_end > self.s.scroll_merge_gap_ns
            or _dist2(ev.x, ev.y, s.x, s.y) > self.scroll_d2
            or s.keys != keys
        ):
            self.flush_scroll()
            s = None
        if s is None:
            s = _Scroll()
            s.x = ev.x
            s.y = ev.y
            s.t_start = t
            s.dx = 0.0
            s.dy = 0.0
            s.unit = ev.unit
            s.seqs = []
            s.pre_move = self.take_moves()
            s.keys = keys
            s.context = self.context
            s.flags = []
            self.scroll = s
        s.dx += ev.dx
        s.dy += ev.dy
        s.t_end = t
        s.seqs.append(ev.seq)

    # -- keyboard -----------------------------------------------------------------------------
    def reconcile_mods(self, ev: KeyDown) -> None:
        if ev.modifiers:
            self.reports_mods = True
        if not self.reports_mods:
            return
        reported = {_META_ALIASES.get(m, m) for m in ev.modifiers}
        for code, h in list(self.held.items()):
            if h.key in MODIFIER_KEYS and _META_ALIASES.get(h.key, h.key) not in reported \
                    and h.key != ev.key and h.key not in ("CapsLock", "NumLock", "Fn"):
                del self.held[code]
                self.stats.stuck_modifiers += 1
                self.pending_flags.append((ev.t_ns, "stuck_modifier"))

    def start_run(self, t: int) -> _Run:
        self.flush_click()
        self.flush_scroll()
        self.flush_keyact()
        r = _Run(t, self.take_moves(), self.context)
        self.run = r
        return r

    def key_down(self, ev: KeyDown) -> None:
        code = _code_id(ev)
        t = ev.t_ns
        self.reconcile_mods(ev)
        held = self.held
        repeat = ev.is_repeat or code in held
        k = self.keyact
        if not repeat and k is not None and k.released_t is not None and k.code == code \
                and t - k.released_t <= self.s.synthetic_release_gap_ns:
            repeat = True  # X11 synthetic release + press
        if ev.key in MODIFIER_KEYS:
            if code not in held:
                h = _Held(ev.key, t, ev.seq)
                if held:  # a chord of modifiers is not a lone tap of either
                    h.used = True
                    for other in held.values():
                        other.used = True
                held[code] = h
            return
        if code not in held:
            held[code] = _Held(ev.key, t, ev.seq)
        mods = self.mods_held()
        hot = [m for m in mods if m in HOTKEY_MODIFIERS]
        text = ev.text if ev.text is not None else (ev.key if len(ev.key) == 1 else None)
        printable = is_printable(text) and ev.key not in COMPOSE_KEYS
        base = hotkey_base(ev.key, ev.code, self.meta)
        if hot and printable and set(hot) == {"Control", "Alt"} and text is not None \
                and text.lower() != base:
            hot = []  # Windows reports AltGr as Ctrl+Alt
            altgr = True
        else:
            altgr = False
        if hot:
            keys = self.mod_keys(mods) + (base,)
            self.key_action("hotkey", keys, code, ev, repeat, mods)
            return
        r = self.run
        if r is not None and t - r.t_end > self.s.typing_run_gap_ns:
            self.flush_run()
            r = None
        if ev.key in EDIT_KEYS and r is not None and "Shift" not in mods:
            if self.edit(r, ev, repeat):
                return
            self.flush_run()
            r = None
        if printable:
            if r is None:
                r = self.start_run(t)
            assert text is not None
            if r.compose_done is not None:  # a dead-key composition finished before this key
                r.compose_start = None
                r.compose_dead = False
                r.compose_done = None
            r.insert(text, t)
            if r.compose_dead and r.compose_start is not None:
                r.compose_done = t
            self.run_add(r, ev, code, repeat)
            if altgr:
                r.flags.append("altgr")
            return
        if ev.key in COMPOSE_KEYS:
            if r is None:
                r = self.start_run(t)
            if r.compose_start is None:
                r.compose_start = r.cursor
                r.compose_dead = ev.key == "Dead"
            r.flags.append("dead_key" if ev.key == "Dead" else "composition")
            self.run_add(r, ev, code, repeat)
            return
        name = special_name(ev.key, self.meta)
        flags: list[str] = []
        if name is None:
            name = base
            if ev.key == "Unidentified":
                flags.append("unidentified_key")
        if "Shift" in mods:
            self.key_action("hotkey", self.mod_keys(mods) + (name,), code, ev, repeat, mods, flags)
        else:
            self.key_action("key", (name,), code, ev, repeat, mods, flags)

    def run_add(self, r: _Run, ev: KeyDown, code: str, repeat: bool) -> None:
        r.seqs.append(ev.seq)
        r.keys.append(ev.key)
        r.codes.add(code)
        r.t_end = ev.t_ns
        if repeat:
            r.flags.append("auto_repeat")

    def edit(self, r: _Run, ev: KeyDown, repeat: bool) -> bool:
        """Apply an editing key inside the run; False if it reaches outside the run."""
        key = ev.key
        buf = r.buf
        cur = r.cursor
        if key == "Backspace":
            if cur == 0:
                return False
            del buf[cur - 1]
            r.cursor = cur - 1
        elif key == "Delete":
            if cur >= len(buf):
                return False
            del buf[cur]
        elif key == "ArrowLeft":
            if cur == 0:
                return False
            r.cursor = cur - 1
        elif key == "ArrowRight":
            if cur >= len(buf):
                return False
            r.cursor = cur + 1
        elif key == "Home":
            nl = "".join(buf[:cur]).rfind("\n")
            r.cursor = nl + 1
            r.flags.append("line_edit_assumed")
        elif key == "End":
            rest = "".join(buf[cur:]).find("\n")
            r.cursor = len(buf) if rest < 0 else cur + rest
            r.flags.append("line_edit_assumed")
        r.last_insert = None
        if r.compose_start is not None and r.cursor < r.compose_start:
            r.compose_start = None
        self.run_add(r, ev, _code_id(ev), repeat)
        return True

    def key_action(self, typ: str, keys: tuple[str, ...], code: str, ev: KeyDown, repeat: bool,
                   mods: list[str], flags: list[str] | None = None) -> None:
        k = self.keyact
        if repeat and k is not None and k.code == code and k.keys == keys:
            k.count += 1
            k.seqs.append(ev.seq)
            k.t_end = ev.t_ns
            k.released_t = None
            if "auto_repeat" not in k.flags:
                k.flags.append("auto_repeat")
            return
        self.flush_click()
        self.flush_scroll()
        self.flush_run()
        self.flush_keyact()
        k = _KeyAct()
        k.type = typ
        k.keys = keys
        k.code = code
        k.t_start = ev.t_ns
        k.t_end = ev.t_ns
        k.count = 1
        seqs = []
        for c, h in self.held.items():
            if h.key in mods and c != code and not h.attached:
                seqs.append(h.seq)
                h.attached = True
        seqs.append(ev.seq)
        k.seqs = seqs
        k.flags = list(flags or ())
        if repeat:
            k.flags.append("auto_repeat")
        k.pre_move = self.take_moves()
        k.context = self.context
        k.released_t = None
        self.keyact = k

    def key_up(self, ev: KeyUp) -> None:
        code = _code_id(ev)
        h = self.held.pop(code, None)
        if h is None:
            self.stats.unpaired_releases += 1
            self.pending_flags.append((ev.t_ns, "unpaired_release"))
            return
        t = ev.t_ns
        k = self.keyact
        if h.key in MODIFIER_KEYS:
            if not h.used:
                self.flush_all()
                name = modifier_name(h.key, self.meta)
                self.emit([], type="key", t_start_ns=h.t, t_end_ns=t, keys=(name,), count=1,
                          source_seqs=(h.seq, ev.seq), pre_move=self.take_moves(),
                          context=self.context)
            elif k is not None and k.released_t is None:
                k.seqs.append(ev.seq)
            return
        if k is not None and k.code == code:
            k.seqs.append(ev.seq)
            k.t_end = t
            k.released_t = t
            return
        r = self.run
        if r is not None and code in r.codes:
            r.seqs.append(ev.seq)

    def text_input(self, ev: TextInput) -> None:
        t = ev.t_ns
        r = self.run
        if r is not None and t - r.t_end > self.s.typing_run_gap_ns:
            self.flush_run()
            r = None
        if r is None:
            r = self.start_run(t)
        if r.compose_start is not None and (
            r.compose_done is None or t - r.compose_done <= self.s.text_input_echo_ns
        ):
            del r.buf[r.compose_start:r.cursor]
            r.cursor = r.compose_start
        elif r.last_insert is not None:
            lt, ltext, lend = r.last_insert
            if ltext == ev.text and lend == r.cursor and t - lt <= self.s.text_input_echo_ns:
                start = lend - len(ltext)
                del r.buf[start:lend]
                r.cursor = start
        r.compose_start = None
        r.compose_dead = False
        r.compose_done = None
        r.insert(ev.text, t)
        r.last_insert = None
        r.seqs.append(ev.seq)
        r.t_end = t
        r.flags.append("ime_text")

    # -- dispatch -----------------------------------------------------------------------------
    def handle(self, ev: Event) -> None:
        tp = type(ev)
        t = ev.t_ns
        flags = self.stats.event_flags
        if flags:
            f = flags.pop(ev.seq, None)
            if f is not None:
                self.pending_flags.append((t, f))
        self.expire(t)
        if tp is PointerDown:
            self.pointer_down(ev)  # type: ignore[arg-type]
        elif tp is PointerUp:
            self.pointer_up(ev)  # type: ignore[arg-type]
        elif tp is KeyDown:
            self.key_down(ev)  # type: ignore[arg-type]
        elif tp is KeyUp:
            self.key_up(ev)  # type: ignore[arg-type]
        elif tp is Wheel:
            self.wheel(ev)  # type: ignore[arg-type]
        elif tp is TextInput:
            self.text_input(ev)  # type: ignore[arg-type]
        elif tp is FocusChange:
            self.flush_run()
            self.flush_scroll()
            ev2: FocusChange = ev  # type: ignore[assignment]
            self.context = Context(window_id=ev2.window_id, app_id=ev2.app_id, title=ev2.title,
                                   url=ev2.url, window_bounds=ev2.bounds)
            # another window, not a title / URL change of this one; the browser extension's
            # focus_change (tab switch, navigation) has no window id: it updates the same window
            key = ev2.window_id if ev2.window_id is not None else (
                self.focus_key if self.focus_key is not None else (ev2.pid, ev2.app_id))
            if key != self.focus_key:
                self.focus_key = key
                self.focus_t_ns = t
                self.focus_pid = ev2.pid
            elif ev2.pid is not None:
                self.focus_pid = ev2.pid
        elif tp is Element:
            self.element = ev  # type: ignore[assignment]
        elif tp is Marker:
            # close what is open, then let the marker take its place in time order
            self.flush_all()
            self.counter += 1
            heapq.heappush(self.out, (t, self.counter, ev))  # type: ignore[arg-type]
        elif tp is Frame or tp is ScreenConfig:
            self.ready.append(ev)  # type: ignore[arg-type]
        self.release()

    def finish(self) -> None:
        """End of stream: close everything still open (see "Unpaired" in the module doc)."""
        for p in list(self.pressed.values()):
            self.stats.unpaired_presses += 1
            self.pressed.pop(p.button, None)
            self.finish_press(p, None, unpaired=True)
        k = self.keyact
        if k is not None and k.released_t is None and k.code in self.held:
            k.flags.append("unpaired_press")
            self.stats.unpaired_presses += 1
        self.flush_all()
        for h in list(self.held.values()):
            if h.key in MODIFIER_KEYS and not h.used:
                self.stats.unpaired_presses += 1
                self.emit(["unpaired_press"], type="key_down", t_start_ns=h.t, t_end_ns=h.t,
                          keys=(modifier_name(h.key, self.meta),), source_seqs=(h.seq,),
                          pre_move=self.take_moves(), context=self.context)
        self.held.clear()
        self.release(everything=True)


def _pipeline(events: Iterable[Event], settings: BuildSettings, stats: ReduceStats) -> Iterator[Item]:
    """Order + reduce; yields actions (time order) interleaved with pass-through frames,
    markers and screen configurations (markers in time order among the actions)."""
    r = _Reducer(settings, stats)
    handle = r.handle
    moves = r.moves
    pressed = r.pressed
    ready = r.ready
    cap = settings.drag_path_max_points
    for chunk in ordered_chunks(events, settings, stats):
        mappend = moves.append
        for ev in chunk:
            if type(ev) is PointerMove:
                if pressed:
                    for p in pressed.values():
                        p.add(ev.x, ev.y, ev.t_ns, cap)  # type: ignore[attr-defined]
                else:
                    mappend((ev.x, ev.y, ev.t_ns))  # type: ignore[attr-defined]
                continue
            handle(ev)
            if ready:
                yield from ready
                ready.clear()
    r.finish()
    yield from ready
    ready.clear()


def reduce_events(
    events: Iterable[Event], settings: BuildSettings | None = None, stats: ReduceStats | None = None
) -> Iterator[Action]:
    """Reduce raw schema-v1 events to canonical actions (rules: module docstring).

    ``events``: any iterable, in arrival (``seq``) order or not; consumed once, streaming.
    Yields :class:`~demotrace.schema.Action` in non-decreasing ``t_start_ns``; coordinates are
    physical desktop pixels, times nanoseconds. ``stats`` (optional) receives counters.
    Pure: no I/O, no global state.
    """
    settings = settings or BuildSettings()
    stats = stats if stats is not None else ReduceStats()
    for item in _pipeline(events, settings, stats):
        if type(item) is Action:
            yield item
