"""X11 focused-window and monitor-layout tracking (EWMH + RandR), on its own X connection.

:class:`WindowTracker` runs one thread with its own python-xlib display (python-xlib displays
are not shared between threads here). It reports:

- the focused top-level window: ``_NET_ACTIVE_WINDOW`` on the root (EWMH) when a window
  manager advertises it (``_NET_SUPPORTING_WM_CHECK``), watched by ``PropertyNotify``;
  without a window manager (plain Xvfb) ``GetInputFocus`` is polled every ``poll_s`` seconds
  (150 ms by default: cheap, one round trip) and the focus window is walked up to the client
  window carrying ``WM_CLASS``; ``PointerRoot`` focus resolves to the top-level under the
  pointer. Title changes of the focused window (``_NET_WM_NAME`` / ``WM_NAME``
  ``PropertyNotify``) are reported too.
- the monitor layout from RandR (see :meth:`WindowTracker.read_screen`), re-read on
  ``RRScreenChangeNotify`` / CRTC / output change notify and every ``screen_poll_s`` seconds
  (2 s: RandR 1.5 ``SetMonitor`` changes send no event).
- ``MappingNotify`` (keyboard layout changes), forwarded to the key translator.

Window description (:class:`WindowInfo`): XID of the client window, ``WM_CLASS`` class as
app id, title from ``_NET_WM_NAME`` (UTF8_STRING) else ``WM_NAME`` (STRING = Latin-1,
UTF8_STRING, COMPOUND_TEXT best effort), decoded with invalid bytes → U+FFFD (never raises),
pid from ``_NET_WM_PID`` else the X-Resource extension (client pid), bounds in root
coordinates of the top-level ancestor (the WM frame when a reparenting WM is running) including
its border.
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..schema.events import Monitor, Rect


def open_display(name: str | None) -> Any:
    """A python-xlib ``Display`` on ``name`` (``None``: ``$DISPLAY``); the caller closes it.

    Credentials are python-xlib's: the ``MIT-MAGIC-COOKIE-1`` entry for the display in
    ``$XAUTHORITY`` (else ``~/.Xauthority``). When no authority file can be read — a fresh
    account, an Xvfb without access control — python-xlib >= 0.33 (pinned in pyproject.toml)
    connects without credentials, as libX11 does (``Xlib/support/unix_connect.py``,
    ``new_get_auth``). Nothing here reads or changes the process environment.

    A failed attempt leaves no socket behind: python-xlib does not close the socket of a
    connection that failed or that the server refused, so it is closed here before the error
    propagates rather than left to the garbage collector (a ``ResourceWarning`` at a random
    later point).

    Raises: the python-xlib errors of ``Display`` (``DisplayError`` and its subclasses,
    ``ConnectionClosedError``, ``OSError``).
    """
    from Xlib import display as xdisplay

    try:
        return xdisplay.Display(name)
    except BaseException as exc:
        _close_abandoned_sockets(exc)
        raise


def _close_abandoned_sockets(exc: BaseException) -> None:
    """Close every socket that python-xlib's frames still hold in the tracebacks of ``exc`` and
    of the errors it was raised from (``__context__``: a Unix-socket attempt before the TCP
    fallback), as a local or as a half-built display's ``socket``: nothing outside the failed
    constructor refers to them."""
    import socket

    seen: set[int] = set()
    err: BaseException | None = exc
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        tb = err.__traceback__
        while tb is not None:
            frame = tb.tb_frame
            if str(frame.f_globals.get("__name__", "")).startswith("Xlib."):
                for value in list(frame.f_locals.values()):
                    attrs = getattr(value, "__dict__", None)  # not getattr(value, "socket"): Xlib's
                    held = attrs.get("socket") if isinstance(attrs, dict) else None  # __getattr__ recurses
                    for sock in (value, held):
                        if isinstance(sock, socket.socket):
                            sock.close()
            tb = tb.tb_next
        err = err.__cause__ or err.__context__


@dataclass(frozen=True)
class WindowInfo:
    """The focused window (see module docstring); any field ``None`` = unknown."""

    window_id: int | None = None
    app_id: str | None = None
    title: str | None = None
    pid: int | None = None
    bounds: Rect | None = None

    def fields(self) -> dict[str, Any]:
        """Payload for :class:`~demotrace.schema.FocusChange`."""
        return {"window_id": self.window_id, "app_id": self.app_id, "title": self.title,
                "pid": self.pid, "bounds": self.bounds}


def decode_text(raw: bytes | str | None, type_name: str | None) -> str | None:
    """Decode an X text property value safely: UTF8_STRING as UTF-8, STRING as Latin-1
    (ICCCM), COMPOUND_TEXT as Latin-1 when it has no escape sequences else UTF-8; invalid
    bytes become U+FFFD; never raises."""
    if raw is None:
        return None
    if isinstance(raw, str):
        return raw
    data = bytes(raw)
    if type_name == "STRING" or (type_name == "COMPOUND_TEXT" and b"\x1b" not in data):
        # ICCCM: STRING is ISO Latin-1; but many clients (xdotool) store UTF-8 there.
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("latin-1")
    return data.decode("utf-8", errors="replace")


class WindowTracker:
    """Thread that tracks focus, titles and monitors on display ``display_name``.

    Callbacks (called on the tracker thread, must only enqueue): ``on_focus(info, t_ns)`` on
    every change of the focused window or its title (``t_ns``: monotonic ns when the change was
    seen; a change to *no* focused window is reported only once it has lasted
    ``empty_focus_grace_s`` — 0.5 s, longer than a window manager's focus hand-over under
    load — and keeps the time it was first seen); ``on_screen(monitors, desktop)`` on layout
    change; ``on_mapping()`` on a keyboard mapping change.
    """

    def __init__(self, display_name: str | None, on_focus: Callable[[WindowInfo], None],
                 on_screen: Callable[[tuple[Monitor, ...], Rect], None],
                 on_mapping: Callable[[], None], poll_s: float = 0.15, screen_poll_s: float = 2.0,
                 empty_focus_grace_s: float = 0.5) -> None:
        self.poll_s = poll_s
        self.screen_poll_s = screen_poll_s
        self.empty_focus_grace_s = empty_focus_grace_s
        #: monotonic s when "nothing focused" was first seen while a window was current
        self._empty_since: float | None = None
        self._empty_t_ns = 0
        self.on_focus = on_focus
        self.on_screen = on_screen
        self.on_mapping = on_mapping
        self.error: BaseException | None = None
        self.x_errors = 0
        self.dpy = open_display(display_name)
        try:
            self._setup()
        except BaseException:
            self.dpy.close()  # never leave the connection to the garbage collector
            raise

    def _setup(self) -> None:
        """Select events and read the initial state on the new connection (``__init__``)."""
        self.dpy.set_error_handler(self._x_error)
        self.root = self.dpy.screen().root
        a = self.dpy.intern_atom
        self.A_ACTIVE = a("_NET_ACTIVE_WINDOW")
        self.A_CHECK = a("_NET_SUPPORTING_WM_CHECK")
        self.A_NET_NAME = a("_NET_WM_NAME")
        self.A_PID = a("_NET_WM_PID")
        self.A_UTF8 = a("UTF8_STRING")
        from Xlib import Xatom

        self.A_WM_NAME = Xatom.WM_NAME
        self.A_WM_CLASS = Xatom.WM_CLASS
        self._type_names: dict[int, str] = {}
        from Xlib import X

        self.root.change_attributes(event_mask=X.PropertyChangeMask)
        self.has_randr = self.dpy.has_extension("RANDR")
        if self.has_randr:
            from Xlib.ext import randr

            randr.select_input(self.root, randr.RRScreenChangeNotifyMask | randr.RRCrtcChangeNotifyMask
                               | randr.RROutputChangeNotifyMask)
        self.has_res = self.dpy.has_extension("X-Resource")
        self._watched: int | None = None
        self.current: WindowInfo = WindowInfo()
        self.screen: tuple[tuple[Monitor, ...], Rect] = self.read_screen()
        self._stop = threading.Event()
        self._release_lock = threading.Lock()
        self._released = False
        self._wake_r, self._wake_w = os.pipe()
        self._thread: threading.Thread | None = None
        self.dpy.flush()

    # -- X helpers (tracker thread only, or before start) --------------------------------------
    def _x_error(self, err: Any, *args: Any) -> None:
        self.x_errors += 1  # BadWindow on a window that vanished: expected, counted

    def _prop(self, win: Any, atom: int) -> tuple[Any, str | None] | None:
        from Xlib import X, error

        try:
            p = win.get_full_property(atom, X.AnyPropertyType)
        except (error.BadWindow, error.BadDrawable, error.BadMatch, error.BadValue):
            return None
        if p is None:
            return None
        if p.property_type not in self._type_names:
            try:
                self._type_names[p.property_type] = self.dpy.get_atom_name(p.property_type)
            except Exception:  # noqa: BLE001
                self._type_names[p.property_type] = ""
        return p.value, self._type_names[p.property_type]

    #: cached answer of :meth:`wm_running` (``None``: read it again); tracker thread only
    _wm: bool | None = None
    #: times the root's WM properties were read (two round trips each), for tests and benchmarks
    wm_reads: int = 0

    def wm_running(self) -> bool:
        """True when an EWMH window manager advertises itself and ``_NET_ACTIVE_WINDOW``.

        Cached: the root's ``_NET_SUPPORTING_WM_CHECK`` and ``_NET_ACTIVE_WINDOW`` (two round
        trips) are read again only after the tracker thread saw a ``PropertyNotify`` on the
        root for either of them (a window manager sets both when it starts; the active window
        changes on every focus change) and once per ``screen_poll_s`` as a safety net — not on
        every wake-up of the tracker thread, as before 2026-11-30 (bench/recorder_overhead.py).
        """
        if self._wm is None:
            self._wm = self._read_wm()
        return self._wm

    def _read_wm(self) -> bool:
        self.wm_reads += 1
        p = self._prop(self.root, self.A_CHECK)
        if not p or not len(p[0]):
            return False
        return self._prop(self.root, self.A_ACTIVE) is not None

    def _client_of(self, wid: int) -> int | None:
        """Walk up from ``wid`` to the first window with ``WM_CLASS`` (the client top-level);
        below root, if none has one, the top-level child of root."""
        from Xlib import error

        win = self.dpy.create_resource_object("window", wid)
        last = None
        for _ in range(64):
            if win.id == self.root.id:
                return last
            if self._prop(win, self.A_WM_CLASS) is not None:
                return win.id
            last = win.id
            try:
                tree = win.query_tree()
            except (error.BadWindow, error.BadDrawable):
                return None
            if tree.parent in (0, self.root.id):
                # top-level without WM_CLASS: maybe a WM frame; look for a client inside it
                return self._client_inside(win) or win.id
            win = self.dpy.create_resource_object("window", tree.parent)
        return last

    def _client_inside(self, win: Any, depth: int = 0) -> int | None:
        from Xlib import error

        if depth > 3:
            return None
        try:
            children = win.query_tree().children
        except (error.BadWindow, error.BadDrawable):
            return None
        for ch in children:
            if self._prop(ch, self.A_WM_CLASS) is not None:
                return int(ch.id)
        for ch in children:
            found = self._client_inside(ch, depth + 1)
            if found:
                return found
        return None

    def focused_client(self) -> int | None:
        """XID of the focused client window, or ``None`` (nothing / root focused)."""
        from Xlib import X

        if self.wm_running():
            p = self._prop(self.root, self.A_ACTIVE)
            wid = int(p[0][0]) if p and len(p[0]) else 0
            return self._client_of(wid) if wid else None
        focus = self.dpy.get_input_focus().focus
        fid = focus if isinstance(focus, int) else focus.id
        if fid == X.PointerRoot:
            child = self.root.query_pointer().child
            fid = child if isinstance(child, int) else child.id
        if fid in (X.NONE, X.PointerRoot, self.root.id):
            return None
        return self._client_of(fid)

    def describe(self, wid: int | None) -> WindowInfo:
        """Read app id, title, pid and bounds of client window ``wid``; never raises on a
        vanished window (fields become ``None``)."""
        if wid is None:
            return WindowInfo()
        win = self.dpy.create_resource_object("window", wid)
        app_id = None
        cls = self._prop(win, self.A_WM_CLASS)
        if cls is not None:
            parts = bytes(cls[0]).split(b"\0") if not isinstance(cls[0], str) else cls[0].split("\0")
            if len(parts) >= 2 and parts[1]:
                app_id = decode_text(parts[1], "STRING")
            elif parts and parts[0]:
                app_id = decode_text(parts[0], "STRING")
        title = None
        p = self._prop(win, self.A_NET_NAME)
        if p is not None:
            title = decode_text(p[0], p[1] or "UTF8_STRING")
        else:
            p = self._prop(win, self.A_WM_NAME)
            if p is not None:
                title = decode_text(p[0], p[1])
        pid = None
        p = self._prop(win, self.A_PID)
        if p is not None and len(p[0]):
            pid = int(p[0][0])
        elif self.has_res:
            pid = self._res_pid(wid)
        return WindowInfo(window_id=wid, app_id=app_id, title=title, pid=pid, bounds=self._bounds(win))

    def _res_pid(self, wid: int) -> int | None:
        from Xlib.ext import res

        try:
            reply = self.dpy.res_query_client_ids([{"client": wid, "mask": res.LocalClientPIDMask}])
        except Exception:  # noqa: BLE001 - unknown is fine
            return None
        for item in reply.ids:
            if item.spec.mask == res.LocalClientPIDMask and item.value:
                return int(item.value[0])
        return None

    def _bounds(self, win: Any) -> Rect | None:
        from Xlib import error

        try:
            top = win
            for _ in range(64):
                tree = top.query_tree()
                if tree.parent in (0, self.root.id) or getattr(tree.parent, "id", None) == self.root.id:
                    break
                top = tree.parent if not isinstance(tree.parent, int) else \
                    self.dpy.create_resource_object("window", tree.parent)
            g = top.get_geometry()
        except (error.BadWindow, error.BadDrawable):
            return None
        b = int(g.border_width)
        return Rect(float(g.x), float(g.y), float(g.width + 2 * b), float(g.height + 2 * b))

    def read_screen(self) -> tuple[tuple[Monitor, ...], Rect]:
        """Monitors and the desktop (= root window size), physical pixels.

        Monitors come from RandR 1.5 ``GetMonitors`` (what ``xrandr --listmonitors`` shows,
        including monitors set with ``--setmonitor``), in server order; else from the active
        RandR CRTCs (named by their first output); else one monitor = the whole screen.
        ``primary`` is as RandR says (possibly no monitor is primary); ``scale`` is 1.0
        (X11 has no per-monitor scale factor).
        """
        scr = self.dpy.screen()
        desktop = Rect(0.0, 0.0, float(scr.width_in_pixels), float(scr.height_in_pixels))
        monitors: list[Monitor] = []
        if self.has_randr:
            from Xlib.ext import randr

            try:
                for i, m in enumerate(randr.get_monitors(self.root, True).monitors):
                    monitors.append(Monitor(index=i, bounds=Rect(float(m.x), float(m.y), float(m.width_in_pixels),
                                                                 float(m.height_in_pixels)),
                                            scale=1.0, primary=bool(m.primary), name=self._atom_name(m.name)))
            except Exception:  # noqa: BLE001 - RandR < 1.5: use CRTCs
                monitors = []
            if not monitors:
                try:
                    res = randr.get_screen_resources(self.root)
                    primary = randr.get_output_primary(self.root).output
                    for c in res.crtcs:
                        ci = randr.get_crtc_info(self.root, c, res.config_timestamp)
                        if not ci.mode or not ci.width or not ci.height:
                            continue
                        name = None
                        for o in ci.outputs[:1]:
                            oi = randr.get_output_info(self.root, o, res.config_timestamp)
                            name = oi.name if isinstance(oi.name, str) else bytes(oi.name).decode("utf-8", "replace")
                        monitors.append(Monitor(index=len(monitors), bounds=Rect(float(ci.x), float(ci.y),
                                                                                 float(ci.width), float(ci.height)),
                                                scale=1.0, primary=primary in ci.outputs, name=name))
                except Exception:  # noqa: BLE001 - fall back to the whole screen below
                    monitors = []
        if not monitors:
            monitors = [Monitor(index=0, bounds=desktop, scale=1.0, primary=False, name=None)]
        return tuple(monitors), desktop

    def _atom_name(self, atom: int) -> str | None:
        if not atom:
            return None
        try:
            name = self.dpy.get_atom_name(atom)
        except Exception:  # noqa: BLE001
            return None
        return name if isinstance(name, str) else bytes(name).decode("utf-8", "replace")

    # -- the thread ------------------------------------------------------------------------------
    def poll_focus(self) -> WindowInfo:
        """Read the focused window now and watch its title; returns its description."""
        from Xlib import X

        wid = self.focused_client()
        if wid != self._watched:
            if self._watched is not None:
                old = self.dpy.create_resource_object("window", self._watched)
                old.change_attributes(event_mask=0)  # BadWindow if gone: counted, harmless
            if wid is not None:
                self.dpy.create_resource_object("window", wid).change_attributes(
                    event_mask=X.PropertyChangeMask | X.StructureNotifyMask)
            self._watched = wid
        return self.describe(wid)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="demotrace-x11-windows", daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        if self._released:
            return  # stopped before: the pipe's descriptors may belong to someone else now
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        if self._thread is not None:
            self._thread.join(timeout)
        if self._thread is None or not self._thread.is_alive():
            self._release()
        # else the thread is still busy (a slow round trip): it releases when it ends (_run)

    def _release(self) -> None:
        """Close the X connection and the wake-up pipe, once (from :meth:`stop`, or from the
        thread itself when it ends after :meth:`stop` stopped waiting for it)."""
        with self._release_lock:
            if self._released:
                return
            self._released = True
        try:
            self.dpy.close()
        except Exception:  # noqa: BLE001 - the server may be gone already
            pass
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def _emit_focus_if_changed(self) -> None:
        info = self.poll_focus()
        t_ns = time.monotonic_ns()
        if info.window_id is None and self.current.window_id is not None:
            # Focus moved to nothing: a window manager passes through "no active window" while
            # it moves focus (openbox sets _NET_ACTIVE_WINDOW to None on the old window's
            # FocusOut when the new window's FocusIn is not queued yet — under load it is
            # not). Report it only if it lasts empty_focus_grace_s, stamped when first seen.
            now = time.monotonic()
            if self._empty_since is None:
                self._empty_since = now
                self._empty_t_ns = t_ns
            if now - self._empty_since < self.empty_focus_grace_s:
                return
            t_ns = self._empty_t_ns
        self._empty_since = None
        if (info.window_id, info.title) != (self.current.window_id, self.current.title):
            self.current = info
            self.on_focus(info, t_ns)

    def _run(self) -> None:
        from Xlib import X

        try:
            fd = self.dpy.fileno()
            next_poll = 0.0
            next_screen = time.monotonic() + self.screen_poll_s
            while not self._stop.is_set():
                wm = self.wm_running()
                wake = next_screen if wm else min(next_poll, next_screen)
                if self._empty_since is not None:
                    wake = min(wake, self._empty_since + self.empty_focus_grace_s)
                timeout = max(0.0, wake - time.monotonic())
                if not self.dpy.pending_events():
                    r, _, _ = select.select([fd, self._wake_r], [], [], timeout)
                    if self._wake_r in r:
                        break
                focus_dirty = False
                screen_dirty = False
                while self.dpy.pending_events():
                    ev = self.dpy.next_event()
                    et = ev.type
                    if et == X.PropertyNotify:
                        if ev.window.id == self.root.id and ev.atom in (self.A_ACTIVE, self.A_CHECK):
                            focus_dirty = True
                            self._wm = None  # a window manager came, went or moved focus: re-read
                        elif ev.atom in (self.A_NET_NAME, self.A_WM_NAME, self.A_WM_CLASS):
                            focus_dirty = True
                    elif et == X.MappingNotify:
                        self.on_mapping()
                    elif et in (X.DestroyNotify, X.UnmapNotify, X.ConfigureNotify):
                        focus_dirty = focus_dirty or et != X.ConfigureNotify
                    elif self.has_randr and et >= 64:  # extension events (RandR)
                        screen_dirty = True
                if self._empty_since is not None and \
                        time.monotonic() >= self._empty_since + self.empty_focus_grace_s:
                    focus_dirty = True
                if not wm and time.monotonic() >= next_poll:
                    focus_dirty = True
                    next_poll = time.monotonic() + self.poll_s
                if time.monotonic() >= next_screen:
                    screen_dirty = True  # RandR 1.5 monitor changes send no event: poll too
                    next_screen = time.monotonic() + self.screen_poll_s
                    self._wm = None  # and the window manager's properties, in case one was missed
                if focus_dirty:
                    self._emit_focus_if_changed()
                if screen_dirty:
                    scr = self.read_screen()
                    if scr != self.screen:
                        self.screen = scr
                        self.on_screen(*scr)
                self.dpy.flush()
        except Exception as exc:  # noqa: BLE001 - reported by check_health
            if not self._stop.is_set():
                self.error = exc
        finally:
            if self._stop.is_set():
                self._release()  # stop() may have stopped waiting for this thread
