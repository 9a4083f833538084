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

The window snapshot (:func:`visible_windows`) uses python-xlib on its own connection:
``QueryTree`` of the root (stacking order), map state ``IsViewable``, ``WM_CLASS`` (on the
top-level or, under a reparenting window manager, on its client child), ``_NET_WM_NAME`` /
``WM_NAME``, root-relative geometry, and ``GetInputFocus`` for the focused top-level. It is taken
only when a frame is about to be stored and the last snapshot predates the grab — at most once
per stored frame (a few per second), never on an input hook.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..capture._base import RawFrame
from ..paths import Paths
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
    ``bounds`` in physical root-window pixels."""

    window: int
    app_id: str | None
    title: str | None
    bounds: Rect


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
            out.append(WindowDesc(w.id, app, title, Rect(g.x, g.y, g.width + 2 * bw, g.height + 2 * bw)))
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


class CaptureGuard:
    """Scope enforcement at capture time for one recording (see module doc).

    ``paths``: the demotrace home; ``policy``: a :class:`~demotrace.privacy.Policy` (default
    ``load_policy(paths)``); ``exclusions``: the person's list (default
    ``Exclusions.load(paths)``); ``display``: X display name for the window snapshot (default
    ``$DISPLAY``); ``clock``: local-time source for time windows (default :func:`local_now`).

    Thread use: :meth:`admit` on the writer thread only; :meth:`filter_frame` on the encoder
    thread only (it owns the X connection); the shared excluded intervals are guarded by a lock.

    Raises (constructor): :class:`~demotrace.privacy.PolicyError` for an invalid policy file,
    :class:`~demotrace.errors.ConfigError` for an invalid exclusion list.
    """

    def __init__(self, paths: Paths, policy: Any = None, exclusions: Any = None, display: str | None = None,
                 clock: Callable[[], dt.datetime] = local_now) -> None:
        from ..privacy import Exclusions, ScopeFilter, load_policy

        self.paths = paths
        self.policy = policy if policy is not None else load_policy(paths)
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
        return self.scope.decide(app_id=fields.get("app_id"), title=fields.get("title"),
                                 url=fields.get("url"), now=self.clock())

    def admit(self, batch: Any, cls: type[Event], t_ns: int, fields: dict[str, Any]) -> bool:
        """Decide whether one queued event may be stored (writer thread). ``batch`` is the
        recorder's :class:`~demotrace.recorder.writer.BatchWriter` (the ``private_gap`` marker
        is added to it); ``t_ns`` absolute monotonic ns. Returns False for an event that must not
        be stored. Markers and screen configuration always pass."""
        kind = str(cls.__struct_config__.tag)
        if kind == "focus_change":
            self._last_focus = dict(fields)
            self._last_check_ns = t_ns
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
        """Close the snapshot's X connection (after the encoder thread has ended)."""
        dpy, self._dpy = self._dpy, None
        if dpy is not None:
            try:
                dpy.close()
            except Exception:  # noqa: BLE001 - the server may be gone already
                pass

    # -- encoder thread -------------------------------------------------------------------------
    def _snapshot(self, after_ns: int) -> list[Snapshot]:
        """Snapshots that describe the screen at ``after_ns``: a fresh one if the last one is
        older, plus the previous one if it was taken less than PREV_SNAPSHOT_NS before."""
        if self._snap is None or self._snap.t_ns < after_ns:
            if self._dpy is None:
                from ..capture._xorg_window import open_display

                self._dpy = open_display(self.display)
            self._prev, self._snap = self._snap, visible_windows(self._dpy)
        snaps = [self._snap]
        if self._prev is not None and self._prev.t_ns >= after_ns - PREV_SNAPSHOT_NS:
            snaps.append(self._prev)
        return snaps

    def filter_frame(self, frame: RawFrame) -> RawFrame | None:
        """The frame to encode — ``frame`` itself, a copy with excluded windows painted black,
        or ``None`` if it must not be stored (captured while an excluded window had focus, or
        the window list could not be read: fail closed). Encoder thread only."""
        if self.excluded_at(frame.captured_ns):
            self.stats.frames_withheld += 1
            return None
        try:
            snaps = self._snapshot(frame.captured_ns)
        except Exception as exc:  # noqa: BLE001 - no window list: cannot mask, so do not store
            self.stats.snapshot_errors += 1
            self.stats.frames_withheld += 1
            self.stats.last_error = f"window list unreadable: {exc!r}"
            self.close()  # reconnect at the next frame
            return None
        now = self.clock()
        rects: list[Rect] = []
        for s in snaps:
            by_id = {w.window: w for w in s.windows}
            f = by_id.get(s.focused) if s.focused is not None else None
            if f is not None and not self.scope.decide(app_id=f.app_id, title=f.title, now=now).allowed:
                self.stats.frames_withheld += 1
                return None
            rects += self.scope.excluded_rects([(w.app_id, w.title, None, w.bounds) for w in s.windows], now)
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

    px = np.frombuffer(frame.pixels, dtype=np.uint8).reshape(frame.height, frame.width, 4).copy()
    ox, oy = frame.bounds.x, frame.bounds.y
    for r in rects:
        x0, y0 = max(0, math.floor(r.x - ox)), max(0, math.floor(r.y - oy))
        x1 = min(frame.width, math.ceil(r.x + r.width - ox))
        y1 = min(frame.height, math.ceil(r.y + r.height - oy))
        if x0 < x1 and y0 < y1:
            px[y0:y1, x0:x1, :3] = 0
    return RawFrame(pixels=px.tobytes(), width=frame.width, height=frame.height, bounds=frame.bounds,
                    monitor=frame.monitor, captured_ns=frame.captured_ns)


def home_of(spool: SessionWriter) -> Paths:
    """The demotrace home of a session being written (``<home>/spool/<session_id>/``)."""
    return Paths(spool.folder.parent.parent)
