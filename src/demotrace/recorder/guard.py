"""Capture-time privacy guard: the recorder's side of "minimise at the source" (issue 4,
DESIGN.md §8, docs/privacy.md).

The rules themselves live in :mod:`demotrace.privacy` (policy, consent, scope, secret fields);
this module is where the recorder calls them, so that excluded contexts are **never captured**
rather than captured and removed at seal time:

- :meth:`CaptureGuard.before_start` — ``load_policy`` → ``require_consent`` (raises
  :class:`~demotrace.privacy.ConsentRequired`, naming ``demotrace enroll``) → ``purge_expired``
  (raw retention), before any capture hook is installed.
- :meth:`CaptureGuard.admit` — on the recorder's *writer thread* (never a hook thread), for every
  queued event: a ``FocusChange`` is decided with
  :meth:`~demotrace.privacy.ScopeFilter.decide_focus` (device local time, for the policy's time
  windows). While the focused context is excluded nothing is stored — no input, no element, no
  frame, and not the excluded window's own ``FocusChange`` (its title / app never reach the
  spool). When the excluded period ends one ``Marker(name="private_gap", reason=…,
  duration_ns=…)`` is stored, stamped at the start of the gap. Time windows are re-checked at
  most once a second against the last focus seen.
- :meth:`CaptureGuard.filter_frame` — on the frame pipeline's *encoder thread*, before a frame
  is hashed or encoded: a frame captured while the focused window was excluded (by the writer's
  decisions, or by a window snapshot taken after the grab) is not stored at all; excluded windows
  that are visible but not focused are painted black (BGRA ``0,0,0``) in the raw full-resolution
  pixels, so the downscaled stored image (``Frame.scale``) is black there too, with no scaling of
  bounds needed.

The window list: a window snapshot (:func:`visible_windows`) reads, with python-xlib on its
own connection, ``QueryTree`` of the root (stacking order), map state ``IsViewable``,
``WM_CLASS`` (on the top-level or, under a reparenting window manager, on its client child),
``_NET_WM_NAME`` / ``WM_NAME``, root-relative geometry, and ``GetInputFocus`` for the focused
top-level — tens of round trips, which made it the largest part of the encoder thread's CPU
when taken per stored frame. By default the guard keeps that list in a :class:`WindowCache`
instead: read once, then updated only from the X events that can change it (map, unmap,
configure, create, destroy, reparent, focus, and changes of ``WM_NAME`` / ``_NET_WM_NAME`` /
``WM_CLASS``), checked with one round trip right after every screen grab on the frame thread
(:meth:`CaptureGuard.observe`). Each frame gets the window states possible at its capture time
(:meth:`CaptureGuard.view_at`, a :class:`WindowView`): between two checks, the union of the state
before, every intermediate geometry and mapped window the events reported, and the state
after — so a denied window that appears is painted out of the very next frame grabbed after
it. ``CaptureGuard(window_cache=False)`` (or ``DEMOTRACE_GUARD_WINDOW_CACHE=0`` in the
environment, for the benchmark's before/after run) takes a snapshot per stored frame instead.
Neither runs on an input hook.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..capture._base import RawFrame
from ..paths import Paths
from ..privacy.private_process import is_private_process
from ..privacy.scope import ScopeDecision
from ..schema.events import Event, FocusChange, Marker, Rect
from ..spool.store import SessionWriter

#: Event kinds never stored while the focused context is excluded (DESIGN.md §8.3).
GUARDED_KINDS = frozenset(
    {"pointer_move", "pointer_down", "pointer_up", "wheel", "key_down", "key_up", "text_input",
     "focus_change", "element", "frame"}
)
#: How often (ns) the time windows are re-checked against the last focus while events flow.
RECHECK_NS = 1_000_000_000
#: A snapshot taken this long (ns) before a grab still counts for it (focus may have left an
#: excluded window between the grab and the next snapshot: fail closed).
PREV_SNAPSHOT_NS = 500_000_000


def local_now() -> dt.datetime:
    """The device's local time, timezone-aware (time windows are in local time)."""
    return dt.datetime.now().astimezone()


@dataclass(frozen=True)
class WindowDesc:
    """One visible top-level window: X ``window`` id, ``app_id`` (WM_CLASS class), ``title``,
    ``bounds`` in physical root-window pixels (the top-level's, window-manager decorations
    included), ``client``: the id of the window holding ``WM_CLASS`` (the top-level itself, or
    under a reparenting window manager its client child — the id ``FocusChange.window_id``
    names; 0 when neither has ``WM_CLASS``)."""

    window: int
    app_id: str | None
    title: str | None
    bounds: Rect
    client: int = 0
    #: the client's process (``_NET_WM_PID``) is a browser started in private mode
    #: (:mod:`~demotrace.privacy.private_process`): decided once, when the window is read
    private: bool = False


@dataclass(frozen=True)
class Snapshot:
    """Visible top-level windows (bottom to top) and the focused one (``focused`` window id or
    ``None``), taken at ``t_ns`` (absolute monotonic ns)."""

    t_ns: int
    windows: tuple[WindowDesc, ...]
    focused: int | None


def _text(win: Any, dpy: Any) -> str | None:
    net = dpy.get_atom("_NET_WM_NAME")
    utf8 = dpy.get_atom("UTF8_STRING")
    p = win.get_full_property(net, utf8)
    if p is not None and p.value:
        v = p.value
        return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
    p = win.get_full_property(39, 0)  # XA_WM_NAME, any type
    if p is not None and p.value:
        v = p.value
        return v.decode("latin-1") if isinstance(v, bytes) else str(v)
    return None


def _wm_class(win: Any) -> str | None:
    c = win.get_wm_class()
    return c[1] if c else None


def _wm_private(win: Any, dpy: Any) -> bool:
    """Whether ``win``'s ``_NET_WM_PID`` names a browser started in private mode."""
    from Xlib import X

    prop = win.get_full_property(dpy.intern_atom("_NET_WM_PID"), X.AnyPropertyType)
    return prop is not None and len(prop.value) > 0 and is_private_process(int(prop.value[0]))


def visible_windows(dpy: Any) -> Snapshot:
    """Snapshot of the viewable top-level windows of ``dpy``'s default screen and the focused
    top-level (see module doc). Windows without ``WM_CLASS`` on themselves or a direct child
    (override-redirect menus, WM decorations) are listed with ``app_id`` ``None``.

    Raises: python-xlib errors only for a broken connection; a window that vanishes while it is
    read is skipped."""
    from Xlib import X
    from Xlib import error as xerror

    root = dpy.screen().root
    tops = root.query_tree().children
    out = []
    for w in tops:
        try:
            attrs = w.get_attributes()
            if attrs.map_state != X.IsViewable:
                continue
            g = w.get_geometry()
            client = w
            app = _wm_class(w)
            if app is None:
                for ch in w.query_tree().children:
                    a = _wm_class(ch)
                    if a is not None:
                        client, app = ch, a
                        break
            title = _text(client, dpy)
            bw = g.border_width
            out.append(WindowDesc(w.id, app, title, Rect(g.x, g.y, g.width + 2 * bw, g.height + 2 * bw),
                                  client.id if app is not None else 0, _wm_private(client, dpy)))
        except (xerror.BadWindow, xerror.BadDrawable, xerror.BadMatch):
            continue
    focused = None
    try:
        f = dpy.get_input_focus().focus
        fid = f if isinstance(f, int) else f.id
        if fid not in (X.NONE, X.PointerRoot):
            top_ids = {w.id for w in tops}
            cur = dpy.create_resource_object("window", fid)
            for _ in range(32):
                if cur.id in top_ids:
                    focused = cur.id
                    break
                parent = cur.query_tree().parent
                # python-xlib gives a plain int (0) instead of a window when the focused window
                # was destroyed between the calls: treat it as "no parent"
                pid = parent if isinstance(parent, int) else getattr(parent, "id", 0)
                if pid in (0, root.id):
                    focused = cur.id if cur.id in top_ids else None
                    break
                cur = dpy.create_resource_object("window", pid)
    except (xerror.BadWindow, xerror.BadDrawable):
        focused = None
    return Snapshot(time.monotonic_ns(), tuple(out), focused)


#: How long (ns) the window cache keeps its history of window states: a frame from the ring
#: (at most ``ring_seconds``, 1 s, old) waiting behind a few encodes must still find the state
#: it was captured in; an older frame finds none and is withheld (fail closed).
CACHE_HISTORY_NS = 5_000_000_000
#: Window properties whose change alters a policy decision (the app id and the title):
#: ``WM_NAME`` (39) and ``WM_CLASS`` (67) are predefined atoms; ``_NET_WM_NAME`` is interned.
_PROP_ATOMS = (39, 67)


@dataclass(frozen=True)
class WindowView:
    """The windows that may have been on screen when a frame was captured: ``windows`` (every
    top-level that may have been visible, possibly one window several times with different
    bounds or titles), ``focused`` (the descriptions the focused top-level may have had;
    ``None`` entries for "nothing focused"), ``unknown`` (a window appeared and vanished before
    it could be read: what it showed is unknown, so the frame is withheld)."""

    windows: tuple[WindowDesc, ...]
    focused: tuple[WindowDesc | None, ...]
    unknown: bool = False


@dataclass(frozen=True)
class _Record:
    """The window states possible during ``(lo_ns, hi_ns]`` (absolute monotonic ns)."""

    lo_ns: int
    hi_ns: int
    view: WindowView
    #: one state throughout (no change seen): a following quiet interval extends it
    steady: bool = True


class WindowCache:
    """Event-driven replacement for calling :func:`visible_windows` per frame (the guard's main
    cost: tens of X round trips per stored frame). Owned by ONE thread (the frame pipeline's
    frame thread); it has its own X connection.

    How it stays exact. It selects, on its own connection, ``SubstructureNotify`` on the root
    (every map, unmap, configure — move, resize, restack —, create, destroy, reparent of a
    top-level) and on every top-level (the same for a window manager frame's client), and
    ``PropertyChange`` + ``FocusChange`` on every top-level and their direct children (``WM_NAME``,
    ``_NET_WM_NAME``, ``WM_CLASS``; focus entering or leaving them). Selection comes before
    reading, so no change falls between the two. :meth:`observe` — called right after each
    screen grab — records the time, then makes one round trip (``GetInputFocus``): the X server
    sends events in order, so every change the server made before answering is now in the queue.
    No relevant event and the same focus window means nothing changed since the previous
    :meth:`observe`; otherwise only the windows named by the events are read again (all of them
    after an event it cannot attribute).

    What a frame gets (:meth:`view_at`): between two observations ``(lo, hi]`` the screen was in
    the state read at ``lo``, then possibly in any state reported by the events, then in the
    state read at ``hi``. A frame captured in that interval is masked with the union of both
    states, every intermediate geometry a ``ConfigureNotify`` reported (a denied window dragged
    across the screen is masked along its path) and every window mapped meanwhile even if it is
    gone again; a window that appeared and was destroyed before it could be read makes the view
    ``unknown`` (the frame is withheld). Not seen: an intermediate *title* of a window renamed
    twice between two observations (``PropertyNotify`` carries no value).

    ``dpy``: a python-xlib display used by this cache only; ``history_ns``: how far back
    :meth:`view_at` can answer (:data:`CACHE_HISTORY_NS`).

    Raises (constructor, :meth:`observe`): python-xlib errors for a broken connection (the
    guard withholds frames and reconnects).
    """

    def __init__(self, dpy: Any, history_ns: int = CACHE_HISTORY_NS) -> None:
        from Xlib import X

        self.dpy = dpy
        self.history_ns = history_ns
        self.errors = 0
        dpy.set_error_handler(self._x_error)  # BadWindow on a vanished window: expected, counted
        self.root = dpy.screen().root
        self._atoms = frozenset((*_PROP_ATOMS, dpy.get_atom("_NET_WM_NAME")))
        #: top-level id → its description if viewable, else None (known but not visible)
        self._tops: dict[int, WindowDesc | None] = {}
        #: window id (a top-level or one of its direct children) → its top-level id
        self._owner: dict[int, int] = {}
        self._focus_win: int | None = None
        self._focused: WindowDesc | None = None
        self._records: deque[_Record] = deque()
        self.reads = 0  # windows read (for the benchmark: cache misses)
        self.observations = 0
        self.root.change_attributes(event_mask=X.SubstructureNotifyMask)
        t = time.monotonic_ns()
        self._read_all()
        self._focus_win, self._focused = self._read_focus(self.dpy.get_input_focus().focus)
        self._drain()  # events caused by our own reads before this point are not changes
        self._records.append(_Record(t, t, self._current()))

    def _x_error(self, err: Any, *args: Any) -> None:
        self.errors += 1

    # -- reading --------------------------------------------------------------------------------
    def _select(self, win: Any, top: int, mask: int) -> None:
        win.change_attributes(event_mask=mask)
        self._owner[win.id] = top

    def _read_top(self, wid: int, any_state: bool = False) -> WindowDesc | None:
        """Select events on top-level ``wid`` (and its direct children), then read it: its
        description if viewable (or if ``any_state``), else ``None``. Raises python-xlib's
        BadWindow / BadDrawable / BadMatch if it vanished."""
        from Xlib import X

        self.reads += 1
        w = self.dpy.create_resource_object("window", wid)
        self._select(w, wid, X.SubstructureNotifyMask | X.PropertyChangeMask | X.FocusChangeMask)
        attrs = w.get_attributes()
        if attrs.map_state != X.IsViewable and not any_state:
            return None
        g = w.get_geometry()
        client, app = w, _wm_class(w)
        if app is None:
            for ch in w.query_tree().children:
                self._select(ch, wid, X.PropertyChangeMask | X.FocusChangeMask)
                a = _wm_class(ch)
                if a is not None and app is None:
                    client, app = ch, a
        title = _text(client, self.dpy)
        bw = g.border_width
        return WindowDesc(wid, app, title, Rect(g.x, g.y, g.width + 2 * bw, g.height + 2 * bw),
                          client.id if app is not None else 0, _wm_private(client, self.dpy))

    def _refresh(self, wid: int) -> None:
        from Xlib import error as xerror

        try:
            self._tops[wid] = self._read_top(wid)
        except (xerror.BadWindow, xerror.BadDrawable, xerror.BadMatch):
            self._forget(wid)

    def _forget(self, wid: int) -> None:
        self._tops.pop(wid, None)
        for k in [k for k, v in self._owner.items() if v == wid]:
            del self._owner[k]

    def _read_all(self) -> None:
        self._tops.clear()
        self._owner.clear()
        for w in self.root.query_tree().children:
            self._refresh(w.id)

    def _read_focus(self, f: Any) -> tuple[int | None, WindowDesc | None]:
        """(focus window id, description of its top-level or None), as :func:`visible_windows`
        resolves it (walk up to a child of the root)."""
        from Xlib import X
        from Xlib import error as xerror

        fid = f if isinstance(f, int) else f.id
        if fid in (X.NONE, X.PointerRoot):
            return fid, None
        cur = fid
        try:
            for _ in range(32):
                if cur in self._tops:
                    return fid, self._tops[cur]
                parent = self.dpy.create_resource_object("window", cur).query_tree().parent
                pid = parent if isinstance(parent, int) else getattr(parent, "id", 0)
                if pid in (0, self.root.id):
                    return fid, self._tops.get(cur)
                cur = pid
        except (xerror.BadWindow, xerror.BadDrawable):
            pass
        return fid, None

    def _current(self) -> WindowView:
        wins = tuple(d for d in self._tops.values() if d is not None)
        return WindowView(wins, (self._focused,))

    def _drain(self) -> list[Any]:
        out = []
        while self.dpy.pending_events():
            out.append(self.dpy.next_event())
        return out

    # -- observing ------------------------------------------------------------------------------
    def observe(self) -> bool:
        """Bring the cache up to date with the server (see class doc) and record the state for
        the interval since the previous call. Returns True if anything changed."""
        from Xlib import X
        from Xlib import error as xerror

        self.observations += 1
        t = time.monotonic_ns()
        focus = self.dpy.get_input_focus().focus  # the round trip: earlier events are queued now
        events = self._drain()
        prev = self._current()  # the state read up to now
        dirty: set[int] = set()
        gone: set[int] = set()
        full = focus_moved = unknown = False
        extra: list[WindowDesc] = []  # intermediate geometries, windows mapped meanwhile
        mapped: set[int] = set()
        configured: list[tuple[int, Rect]] = []
        moved: dict[int, Rect] = {}
        #: mapped state of top-levels as the events go (in server order): a geometry a window
        #: had while unmapped was never on screen (xterm is created at 0,0, resized there, moved
        #: to its -geometry and only then mapped — masking 0,0 painted an allowed window)
        shown: dict[int, bool] = {}
        geom: dict[int, Rect] = {}  # last geometry an event gave a top-level (it is mapped there)
        root = self.root.id
        for ev in events:
            et = ev.type & 0x7F
            if et == X.PropertyNotify:
                if ev.atom in self._atoms:
                    top = self._owner.get(ev.window.id)
                    if top is None:
                        full = True
                    else:
                        dirty.add(top)
            elif et in (X.FocusIn, X.FocusOut):
                focus_moved = True
            elif et == X.CreateNotify:
                if ev.parent.id == root:
                    dirty.add(ev.window.id)  # selects its events; not viewable yet
                    bw = ev.border_width
                    geom[ev.window.id] = Rect(ev.x, ev.y, ev.width + 2 * bw, ev.height + 2 * bw)
                else:
                    top = self._owner.get(ev.parent.id)
                    if top is None:
                        full = True
                    else:
                        dirty.add(top)
            elif et in (X.MapNotify, X.UnmapNotify, X.ConfigureNotify, X.DestroyNotify, X.ReparentNotify,
                        X.GravityNotify, X.CirculateNotify):
                wid = ev.window.id
                parent = ev.event.id
                if et == X.ConfigureNotify and parent == root and self._tops.get(wid) is not None:
                    # a move / resize / restack of a visible top-level: the event carries the
                    # new geometry (stacking order does not matter: every excluded window is
                    # painted whole), so nothing is read
                    bw = ev.border_width
                    bounds = Rect(ev.x, ev.y, ev.width + 2 * bw, ev.height + 2 * bw)
                    if bounds != moved.get(wid, self._tops[wid].bounds):  # type: ignore[union-attr]
                        moved[wid] = bounds
                        configured.append((wid, bounds))
                elif parent == root or wid in self._tops:
                    if et == X.DestroyNotify:
                        gone.add(wid)
                    elif et == X.ReparentNotify and ev.parent.id != root:
                        gone.add(wid)  # no longer a top-level (a window manager framed it)
                    else:
                        dirty.add(wid)
                    if et == X.MapNotify:
                        mapped.add(wid)
                        shown[wid] = True
                        if wid in geom:  # where it appeared (a later move is another event)
                            configured.append((wid, geom[wid]))
                    elif et == X.UnmapNotify:
                        shown[wid] = False
                    elif et == X.ConfigureNotify:
                        bw = ev.border_width
                        geom[wid] = Rect(ev.x, ev.y, ev.width + 2 * bw, ev.height + 2 * bw)
                        if shown.get(wid, self._tops.get(wid) is not None):
                            configured.append((wid, geom[wid]))
                    if et == X.ReparentNotify and ev.parent.id == root:
                        gone.discard(wid)
                else:
                    top = self._owner.get(parent)
                    if top is None:
                        full = True
                    else:
                        dirty.add(top)  # a frame's client changed: read the frame again
            elif et in (X.Expose, X.GraphicsExpose, X.NoExpose, X.MappingNotify):
                continue
            else:
                full = True  # cannot attribute it: read everything
        fid = focus if isinstance(focus, int) else focus.id
        changed = full or bool(dirty or gone or moved) or focus_moved or fid != self._focus_win
        if changed:
            before = dict(self._tops)
            for wid, bounds in moved.items():
                desc = self._tops.get(wid)
                if desc is not None:
                    self._tops[wid] = WindowDesc(wid, desc.app_id, desc.title, bounds, desc.client, desc.private)
            if full:
                self._read_all()
            else:
                for wid in gone:
                    self._forget(wid)
                for wid in dirty - gone:
                    self._refresh(wid)
            for wid in mapped:  # mapped meanwhile but not visible now: still may be in a frame
                if self._tops.get(wid) is None:
                    desc = before.get(wid)
                    if desc is None:
                        try:
                            desc = self._read_top(wid, any_state=True)
                        except (xerror.BadWindow, xerror.BadDrawable, xerror.BadMatch):
                            desc = None
                    if desc is None:
                        unknown = True  # appeared and was destroyed before it could be read
                    else:
                        extra.append(desc)
            for wid, bounds in configured:
                desc = self._tops.get(wid) or before.get(wid)
                if desc is not None:
                    extra.append(WindowDesc(wid, desc.app_id, desc.title, bounds, desc.client, desc.private))
            if full or dirty or gone or focus_moved or fid != self._focus_win:
                self._focus_win, self._focused = self._read_focus(focus)
            elif self._focused is not None:  # only moved: the same window, new bounds
                self._focused = self._tops.get(self._focused.window) or self._focused
        cur = self._current()
        last = self._records[-1]
        if not changed:
            if last.steady:  # nothing happened: the quiet interval grows
                self._records[-1] = _Record(last.lo_ns, t, last.view)
            else:
                self._records.append(_Record(last.hi_ns, t, cur))
        else:
            view = WindowView(prev.windows + tuple(extra) + cur.windows, prev.focused + cur.focused, unknown)
            self._records.append(_Record(last.hi_ns, t, view, steady=False))
        self._trim(t)
        return changed

    def _trim(self, now: int) -> None:
        while len(self._records) > 1 and self._records[0].hi_ns < now - self.history_ns:
            self._records.popleft()

    def view_at(self, t_ns: int) -> WindowView | None:
        """Every window state possible at absolute monotonic ``t_ns`` (capture time of a frame
        grabbed before the last :meth:`observe`), merged; ``None`` if ``t_ns`` is outside the
        recorded history (older than it, or not observed yet)."""
        hits = [r.view for r in self._records if r.lo_ns < t_ns <= r.hi_ns]
        if not hits:
            return None
        if len(hits) == 1:
            return hits[0]
        return WindowView(tuple(w for v in hits for w in v.windows), tuple(f for v in hits for f in v.focused),
                          any(v.unknown for v in hits))


#: ``filter_frame``'s default: no view given, take per-frame snapshots.
NO_VIEW: Any = object()


@dataclass
class GuardStats:
    """What the guard withheld: ``events_withheld`` (events not stored in excluded contexts, by
    kind), ``frames_withheld`` (frames captured while an excluded window had focus),
    ``frames_masked`` (frames with excluded windows painted out), ``gaps`` (private_gap markers
    written), ``snapshot_errors``."""

    events_withheld: dict[str, int] = field(default_factory=dict)
    frames_withheld: int = 0
    frames_masked: int = 0
    gaps: int = 0
    snapshot_errors: int = 0
    last_error: str | None = None
    #: window descriptions read from the X server (per-frame snapshots, or the window cache's
    #: reads on X events) and the cache's observations (one round trip each)
    window_reads: int = 0
    cache_observations: int = 0


class CaptureGuard:
    """Scope enforcement at capture time for one recording (see module doc).

    ``paths``: the demotrace home; ``policy``: a :class:`~demotrace.privacy.Policy` (default
    ``load_policy(paths)``); ``exclusions``: the person's list (default
    ``Exclusions.load(paths)``); ``display``: X display name for the window snapshot (default
    ``$DISPLAY``); ``clock``: local-time source for time windows (default :func:`local_now`);
    ``window_cache``: keep the window list in a :class:`WindowCache` updated by X events
    (default True; ``False`` — or the environment variable ``DEMOTRACE_GUARD_WINDOW_CACHE=0``,
    read here, for benchmarks — takes a :func:`visible_windows` snapshot per stored frame as
    before).

    Thread use: :meth:`admit` on the writer thread only; :meth:`observe` and :meth:`view_at` on
    the frame thread only (it owns the cache's X connection); :meth:`filter_frame` on the encoder
    thread only (it owns the snapshot connection); the shared excluded intervals are guarded by
    a lock.

    Raises (constructor): :class:`~demotrace.privacy.PolicyError` for an invalid policy file,
    :class:`~demotrace.errors.ConfigError` for an invalid exclusion list.
    """

    def __init__(self, paths: Paths, policy: Any = None, exclusions: Any = None, display: str | None = None,
                 clock: Callable[[], dt.datetime] = local_now, window_cache: bool | None = None) -> None:
        from ..privacy import Exclusions, ScopeFilter, load_policy

        self.paths = paths
        self.policy = policy if policy is not None else load_policy(paths)
        #: the home's exclusions file is re-read when it changes (bug bash 4: `demotrace
        #: exclusions add` during a recording applied only at seal time); not when given
        self._follow_exclusions = exclusions is None
        self._excl_stamp = self._exclusions_stamp()
        self.exclusions = exclusions if exclusions is not None else Exclusions.load(paths)
        self.scope = ScopeFilter(self.policy, self.exclusions)
        self.display = display
        self.clock = clock
        self.stats = GuardStats()
        self._lock = threading.Lock()
        #: excluded focus periods, absolute monotonic ns: [start, end) with end None = ongoing
        self._intervals: list[list[int | None]] = []
        self._gap_reason: str | None = None
        self._gap_start: int | None = None
        self._last_focus: dict[str, Any] | None = None
        self._last_check_ns = 0
        self._dpy: Any = None
        self._snap: Snapshot | None = None
        self._prev: Snapshot | None = None
        if window_cache is None:
            window_cache = os.environ.get("DEMOTRACE_GUARD_WINDOW_CACHE", "1").strip() != "0"
        self.window_cache = bool(window_cache)
        self._cache: WindowCache | None = None

    # -- start ----------------------------------------------------------------------------------
    def require_consent(self) -> None:
        """Raise :class:`~demotrace.privacy.ConsentRequired` unless the person consented to this
        policy version and notice (``demotrace enroll``)."""
        from ..privacy import require_consent

        require_consent(self.paths, self.policy)

    def before_start(self, spool: Any) -> list[str]:
        """Consent check, then the raw-retention purge of ``spool`` (a
        :class:`~demotrace.spool.Spool`). Returns the purged session ids. Call before any hook
        is installed.

        Raises: :class:`~demotrace.privacy.ConsentRequired`."""
        from ..privacy.review import purge_expired

        self.require_consent()
        return purge_expired(self.paths, spool, self.policy)

    # -- writer thread --------------------------------------------------------------------------
    @property
    def excluded(self) -> bool:
        """True while the focused context is excluded."""
        return self._gap_start is not None

    def _withhold(self, kind: str) -> bool:
        self.stats.events_withheld[kind] = self.stats.events_withheld.get(kind, 0) + 1
        return False

    def _enter(self, t_ns: int, reason: str) -> None:
        self._gap_start, self._gap_reason = t_ns, reason
        with self._lock:
            self._intervals.append([t_ns, None])
            del self._intervals[:-64]

    def _leave(self, batch: Any, t_ns: int) -> None:
        assert self._gap_start is not None
        t_end = max(t_ns, self._gap_start)
        with self._lock:
            if self._intervals:
                self._intervals[-1][1] = t_end
        batch.add(Marker, self._gap_start, {"name": "private_gap", "reason": self._gap_reason,
                                            "duration_ns": t_end - self._gap_start})
        self.stats.gaps += 1
        self._gap_start = self._gap_reason = None

    def _decide(self, fields: dict[str, Any]) -> Any:
        if is_private_process(fields.get("pid")):
            return ScopeDecision.excluded("deny:private_browsing:process")
        return self.scope.decide(app_id=fields.get("app_id"), title=fields.get("title"),
                                 url=fields.get("url"), now=self.clock())

    def _exclusions_stamp(self) -> tuple[int, int] | None:
        from ..privacy.scope import EXCLUSIONS_FILE

        try:
            st = (self.paths.home / EXCLUSIONS_FILE).stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def _reload_exclusions(self) -> None:
        """Re-read the exclusions file if it changed since last read (writer thread, at focus
        changes and at most once a second otherwise). A file that cannot be read keeps the
        exclusions in force (the CLI that wrote it reports its errors)."""
        if not self._follow_exclusions:
            return
        stamp = self._exclusions_stamp()
        if stamp == self._excl_stamp:
            return
        from ..privacy import Exclusions, ScopeFilter

        try:
            excl = Exclusions.load(self.paths)
        except Exception:  # noqa: BLE001 - keep the rules in force
            return
        self._excl_stamp = stamp
        self.exclusions = excl
        self.scope = ScopeFilter(self.policy, excl)  # one reference swap: the encoder thread reads it

    def admit(self, batch: Any, cls: type[Event], t_ns: int, fields: dict[str, Any]) -> bool:
        """Decide whether one queued event may be stored (writer thread). ``batch`` is the
        recorder's :class:`~demotrace.recorder.writer.BatchWriter` (the ``private_gap`` marker
        is added to it); ``t_ns`` absolute monotonic ns. Returns False for an event that must not
        be stored. Markers and screen configuration always pass."""
        kind = str(cls.__struct_config__.tag)
        if kind == "focus_change":
            self._last_focus = dict(fields)
            self._last_check_ns = t_ns
            self._reload_exclusions()
            d = self._decide(fields)
            if not d.allowed:
                if self._gap_start is None:
                    self._enter(t_ns, str(d.reason))
                elif d.reason != self._gap_reason:  # another excluded context: its own gap
                    self._leave(batch, t_ns)
                    self._enter(t_ns, str(d.reason))
                return self._withhold(kind)
            if self._gap_start is not None:
                self._leave(batch, t_ns)
            return True
        if self._last_focus is not None and t_ns - self._last_check_ns >= RECHECK_NS:
            self._last_check_ns = t_ns
            self._reload_exclusions()
            d = self._decide(self._last_focus)
            if not d.allowed and self._gap_start is None:
                self._enter(t_ns, str(d.reason))
            elif d.allowed and self._gap_start is not None:
                self._leave(batch, t_ns)
                batch.add(FocusChange, t_ns, self._last_focus)  # the context recording resumes in
        if self._gap_start is not None and kind in GUARDED_KINDS:
            return self._withhold(kind)
        return True

    def finish(self, batch: Any, t_ns: int) -> None:
        """At session stop: close an open gap with its marker (writer thread)."""
        if self._gap_start is not None:
            self._leave(batch, t_ns)

    def excluded_at(self, t_ns: int) -> bool:
        """True if the writer had decided the focus was excluded at absolute monotonic ``t_ns``."""
        with self._lock:
            return any(s is not None and s <= t_ns and (e is None or t_ns < e) for s, e in self._intervals)

    def close(self) -> None:
        """Close the snapshot's and the window cache's X connections (after the frame and
        encoder threads have ended)."""
        dpy, self._dpy = self._dpy, None
        if dpy is not None:
            try:
                dpy.close()
            except Exception:  # noqa: BLE001 - the server may be gone already
                pass
        self._close_cache()

    def _close_cache(self) -> None:
        cache, self._cache = self._cache, None
        if cache is not None:
            self.stats.window_reads += cache.reads
            cache.reads = 0
            with contextlib.suppress(Exception):  # the server may be gone already
                cache.dpy.close()

    # -- frame thread ---------------------------------------------------------------------------
    def observe(self) -> None:
        """Update the window cache (frame thread; call once before the first grab and right
        after every grab: see :class:`WindowCache`). No-op without ``window_cache``. A broken
        connection is counted in ``snapshot_errors`` and the cache rebuilt at the next call;
        meanwhile :meth:`view_at` answers ``None`` and frames are withheld (fail closed)."""
        if not self.window_cache:
            return
        try:
            if self._cache is None:
                from ..capture._xorg_window import open_display

                dpy = open_display(self.display)
                try:
                    self._cache = WindowCache(dpy)
                except BaseException:
                    dpy.close()
                    raise
            else:
                self._cache.observe()
            self.stats.cache_observations += 1
        except Exception as exc:  # noqa: BLE001 - no window list: frames are withheld
            self.stats.snapshot_errors += 1
            self.stats.last_error = f"window list unreadable: {exc!r}"
            self._close_cache()

    def view_at(self, t_ns: int) -> WindowView | None:
        """The windows possibly on screen at absolute monotonic ``t_ns`` (a frame's
        ``captured_ns``, grabbed before the last :meth:`observe`), or ``None`` when unknown
        (no cache, or ``t_ns`` outside its history). Frame thread only."""
        cache = self._cache
        if cache is None:
            return None
        self.stats.window_reads += cache.reads
        cache.reads = 0
        return cache.view_at(t_ns)

    # -- encoder thread -------------------------------------------------------------------------
    def _snapshot(self, after_ns: int) -> list[Snapshot]:
        """Snapshots that describe the screen at ``after_ns``: a fresh one if the last one is
        older, plus the previous one if it was taken less than PREV_SNAPSHOT_NS before."""
        if self._snap is None or self._snap.t_ns < after_ns:
            if self._dpy is None:
                from ..capture._xorg_window import open_display

                self._dpy = open_display(self.display)
            self._prev, self._snap = self._snap, visible_windows(self._dpy)
            self.stats.window_reads += len(self._snap.windows)
        snaps = [self._snap]
        if self._prev is not None and self._prev.t_ns >= after_ns - PREV_SNAPSHOT_NS:
            snaps.append(self._prev)
        return snaps

    def filter_frame(self, frame: RawFrame, view: Any = NO_VIEW) -> RawFrame | None:
        """The frame to encode — ``frame`` itself, a copy with excluded windows painted black,
        or ``None`` if it must not be stored (captured while an excluded window had focus, or
        the window list could not be read: fail closed). Encoder thread only.

        ``view``: the frame's :class:`WindowView` from :meth:`view_at` (taken on the frame
        thread when the frame was chosen); ``None`` = unknown (the frame is withheld); not given
        = take :func:`visible_windows` snapshots here (the per-frame path)."""
        if self.excluded_at(frame.captured_ns):
            self.stats.frames_withheld += 1
            return None
        if view is not NO_VIEW:
            return self._filter_view(frame, view)
        try:
            snaps = self._snapshot(frame.captured_ns)
        except Exception as exc:  # noqa: BLE001 - no window list: cannot mask, so do not store
            self.stats.snapshot_errors += 1
            self.stats.frames_withheld += 1
            self.stats.last_error = f"window list unreadable: {exc!r}"
            dpy, self._dpy = self._dpy, None  # reconnect at the next frame
            if dpy is not None:
                with contextlib.suppress(Exception):
                    dpy.close()
            return None
        now = self.clock()
        rects: list[Rect] = []
        for s in snaps:
            by_id = {w.window: w for w in s.windows}
            f = by_id.get(s.focused) if s.focused is not None else None
            if f is not None and (f.private
                                  or not self.scope.decide(app_id=f.app_id, title=f.title, now=now).allowed):
                self.stats.frames_withheld += 1
                return None
            rects += self.scope.excluded_rects([(w.app_id, w.title, None, w.bounds) for w in s.windows], now)
            rects += [w.bounds for w in s.windows if w.private]
        if self.excluded_at(frame.captured_ns):  # the writer learned of it meanwhile
            self.stats.frames_withheld += 1
            return None
        if not rects:
            return frame
        self.stats.frames_masked += 1
        return paint_out(frame, rects)

    def _filter_view(self, frame: RawFrame, view: WindowView | None) -> RawFrame | None:
        if view is None or view.unknown:
            self.stats.frames_withheld += 1
            self.stats.last_error = ("window list unknown at the frame's capture time" if view is None
                                     else "a window appeared and vanished before it could be read")
            return None
        now = self.clock()
        for f in view.focused:
            if f is not None and (f.private
                                  or not self.scope.decide(app_id=f.app_id, title=f.title, now=now).allowed):
                self.stats.frames_withheld += 1
                return None
        rects = self.scope.excluded_rects([(w.app_id, w.title, None, w.bounds) for w in view.windows], now)
        rects += [w.bounds for w in view.windows if w.private]
        if self.excluded_at(frame.captured_ns):  # the writer learned of it meanwhile
            self.stats.frames_withheld += 1
            return None
        if not rects:
            return frame
        self.stats.frames_masked += 1
        return paint_out(frame, rects)


def paint_out(frame: RawFrame, rects: list[Rect]) -> RawFrame:
    """A copy of ``frame`` with each rectangle (physical desktop pixels; the frame covers
    ``frame.bounds``) filled with black, clipped to the frame."""
    import numpy as np

    buf = bytearray(frame.pixels)  # the one copy; the grab itself is never changed
    px = np.frombuffer(buf, dtype=np.uint8).reshape(frame.height, frame.width, 4)
    ox, oy = frame.bounds.x, frame.bounds.y
    for r in rects:
        x0, y0 = max(0, math.floor(r.x - ox)), max(0, math.floor(r.y - oy))
        x1 = min(frame.width, math.ceil(r.x + r.width - ox))
        y1 = min(frame.height, math.ceil(r.y + r.height - oy))
        if x0 < x1 and y0 < y1:
            px[y0:y1, x0:x1, :3] = 0
    del px  # release the buffer export before handing the bytearray on
    return RawFrame(pixels=buf, width=frame.width, height=frame.height, bounds=frame.bounds,
                    monitor=frame.monitor, captured_ns=frame.captured_ns)


def home_of(spool: SessionWriter) -> Paths:
    """The demotrace home of a session being written (``<home>/spool/<session_id>/``)."""
    return Paths(spool.folder.parent.parent)
