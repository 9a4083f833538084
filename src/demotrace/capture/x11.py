"""X11 capture backend: input through the X RECORD extension, focus through EWMH, monitors
through RandR, frames through mss.

Threads and X connections (python-xlib displays are never shared between threads):

- ``demotrace-x11-input``: one RECORD context (on its own connection) for device events
  (KeyPress … MotionNotify) **and** the core ``ChangeKeyboardMapping`` request of every client.
  It follows pynput's X listener (same RECORD mechanism, as pynput's ``ListenerMixin``) but
  talks to python-xlib directly, because pynput's callbacks drop what we must record — the
  keycode (for the W3C ``code``), the modifier ``state`` and the server time (auto-repeat) —
  and because one context gives one server-ordered stream of keyboard, pointer and keymap
  changes (two pynput listeners would interleave keyboard and mouse arbitrarily).
- ``demotrace-x11-windows``: :class:`~demotrace.capture._xorg_window.WindowTracker`
  (focus, titles, RandR, MappingNotify).
- ``demotrace-x11-release``: flushes a held-back key release after ``release_hold_s`` (see
  auto-repeat below); it sleeps on a condition until a release is held back (no polling).
- a control connection used by :meth:`X11Backend.start` / :meth:`X11Backend.stop` and
  :meth:`X11Backend.pointer_position` under a lock.
- :meth:`X11Backend.grab` uses one ``mss`` instance **per calling thread** (mss objects hold an
  X connection and are not thread-safe), created lazily and closed by :meth:`X11Backend.stop`.

Hook callbacks only translate and call the sink (``sink(event_cls, time.monotonic_ns(),
fields)``); no I/O, no X round trip on the input thread.

How the cases of DESIGN.md section 10 are handled on X11:

- Keys the layout does not map: xdotool (and similar tools) bind a spare keycode to the keysym
  (``ChangeKeyboardMapping``), press it, and unbind it right away — often before a listener
  gets to ask the server. The RECORD context records those requests in stream order, so the
  keymap used for each key event is exactly the one the server used (an overlay over the
  mapping read at start / after ``MappingNotify``). ``é`` → key ``"é"``, text ``"é"``, code
  ``"Unidentified"`` (a spare keycode is no physical key).
- Shift case: ``key_up`` carries the ``key``/``code``/``keysym`` of its ``key_down`` (kept per
  keycode), so ``W`` down / Shift up / ``W`` up stays ``"W"``.
- Ctrl+letter: ``key`` comes from the keysym, never from a control character: Ctrl+C →
  key ``"c"``, modifiers ``("Control",)``, text ``None`` (text is ``None`` whenever Control,
  Alt or Meta is held).
- Numpad: NumLock on → ``KP_5`` → key ``"5"``, text ``"5"``; off → ``KP_Begin`` → key
  ``"Clear"``, text ``None``; code ``"Numpad5"`` either way; ``KP_Enter`` → ``"Enter"`` /
  ``"NumpadEnter"``.
- AltGr / Mode_switch / XKB group: third-level columns of the core keymap (see
  :func:`~demotrace.capture._xorg_keys.select_keysym`); AZERTY/QWERTZ follow the live keymap.
- Dead keys: key ``"Dead"``, text ``None``; the composed character is made inside the client's
  input method and is not visible to RECORD (no ``text_input`` on X11 yet).
- Modifiers: W3C names from the event's ``state`` (the modifiers held *before* the event, as
  X reports it), sorted; the modifier bits' meaning comes from the live modifier mapping.
  Lock states (``CapsLock``, ``NumLock``) are included when on. Both Shift keys held and one
  released: the server's state still has Shift, so does ours.
- Auto-repeat: a ``KeyPress`` of a keycode already held is a repeat (``is_repeat=True``, no
  ``key_up`` in between) — that is what RECORD sees from current X servers. Servers that send
  synthetic release/press pairs are handled too: a release is held back until the next device
  event; when that is a press of the same keycode within ``repeat_window_ms`` (1 ms) of server
  time the release is dropped and the press flagged a repeat (SDL and GLFW use the same test).
  A held-back release is flushed after ``release_hold_s`` (50 ms) or at :meth:`stop`, with
  the ``t_ns`` of its arrival.
- Wheel: buttons 4/5/6/7 → one tick each, ``dy=+1`` (4, up), ``dy=-1`` (5), ``dx=-1`` (6,
  left), ``dx=+1`` (7, right); their releases are ignored. Buttons 8/9 → ``"x1"``/``"x2"``.
- Titles: UTF-8 decoded with U+FFFD for invalid bytes, never an exception.
- Focus to nothing: reported only when it lasts 0.5 s (a window manager's focus hand-over
  passes through "no active window"; see :class:`~demotrace.capture._xorg_window.WindowTracker`).
- Focus without a window manager (plain Xvfb): ``GetInputFocus`` polled every
  ``focus_poll_s``; a focus that goes A → B → A within one poll is not seen.
- Unpaired keys: a key already down at :meth:`X11Backend.start` gives a ``key_up`` with no
  ``key_down`` (translated with the state at release); a key still down at :meth:`stop` gives
  no ``key_up`` — nothing is made up; the reducer closes such presses at the session end.
- Time: ``t_ns`` is ``time.monotonic_ns()`` when the event reaches the input thread
  (``CLOCK_MONOTONIC``: wall-clock changes do not move it). X server times (ms) are used only
  to pair auto-repeat releases and presses.
- Frames: mss grabs of the root window (physical pixels = X pixels; X11 has no scaling),
  skipped while the DAMAGE extension reports the screen unchanged, and limited to the damaged
  rectangles patched into the previous grab when little changed (see :meth:`X11Backend.grab`).
- RECORD replies are read off the socket and events unpacked with one ``struct`` call each (the core
  device-event layout), not python-xlib's generic event parser.
"""

from __future__ import annotations

import os
import struct
import threading
import time
from dataclasses import replace
from typing import Any, NamedTuple

from ..errors import CaptureError
from ..schema.events import (
    FocusChange,
    KeyDown,
    KeyUp,
    Monitor,
    PointerDown,
    PointerMove,
    PointerUp,
    Rect,
    ScreenConfig,
    Wheel,
)
from . import _xorg_keys as keys
from ._base import CaptureBackend, EventSink, RawFrame
from ._xorg_window import WindowInfo, WindowTracker, open_display

_KEY_PRESS, _KEY_RELEASE, _BUTTON_PRESS, _BUTTON_RELEASE, _MOTION = 2, 3, 4, 5, 6
_CHANGE_KEYBOARD_MAPPING = 100  # core request opcode
_BUTTONS = {1: "left", 2: "middle", 3: "right", 8: "x1", 9: "x2"}
_WHEEL = {4: (0.0, 1.0), 5: (0.0, -1.0), 6: (-1.0, 0.0), 7: (1.0, 0.0)}
#: The 32-byte core device event (KeyPress … MotionNotify share one layout, X11 protocol
#: section "Events"), in the byte order of this client (RECORD sends recorded events in the
#: recording client's byte order): type, detail, sequence, time, root, event, child, root-x,
#: root-y, event-x, event-y, state, same-screen.
_EVENT = struct.Struct("=BBHIIIIhhhhHB1x")


class _DeviceEvent(NamedTuple):
    """One recorded core device event, unpacked with :data:`_EVENT` (python-xlib's generic
    parser builds an object with three window resources per event: ~10x the CPU)."""

    type: int
    detail: int
    sequence_number: int
    time: int
    root: int
    window: int
    child: int
    root_x: int
    root_y: int
    event_x: int
    event_y: int
    state: int
    same_screen: int


class _Keymap:
    """The keyboard mapping as the server applies it to the recorded stream.

    ``base``: keycode → keysyms, read with GetKeyboardMapping (at start and after
    MappingNotify, from another thread: replaced atomically); ``overlay``: keycodes changed by
    recorded ``ChangeKeyboardMapping`` requests, applied in stream order (wins over ``base``).
    """

    def __init__(self) -> None:
        self.base: dict[int, tuple[int, ...]] = {}
        self.overlay: dict[int, tuple[int, ...]] = {}
        self.mods = keys.ModifierMap()

    def refresh(self, dpy: Any) -> None:
        """Re-read the mapping and the modifier mapping from display ``dpy`` (its own thread)."""
        info = dpy.display.info
        first, count = info.min_keycode, info.max_keycode - info.min_keycode + 1
        rows = dpy.get_keyboard_mapping(first, count)
        base = {first + i: tuple(int(s) for s in row) for i, row in enumerate(rows)}
        modmap = [list(m) for m in dpy.get_modifier_mapping()]
        merged = dict(base)
        merged.update(self.overlay)
        self.mods = keys.ModifierMap.build(modmap, merged)
        self.base = base

    def apply_request(self, data: bytes, swapped: bool) -> None:
        """Apply a recorded ChangeKeyboardMapping request (X11 protocol encoding)."""
        if len(data) < 8:
            return
        order = ">" if swapped == (struct.pack("=H", 1) == b"\x01\x00") else "<"
        n, first, per = data[1], data[4], data[5]
        need = 8 + 4 * n * per
        if per == 0 or len(data) < need:
            return
        syms = struct.unpack(f"{order}{n * per}I", data[8:need])
        for i in range(n):
            self.overlay[first + i] = tuple(syms[i * per:(i + 1) * per])

    def syms(self, keycode: int) -> tuple[int, ...]:
        got = self.overlay.get(keycode)
        return got if got is not None else self.base.get(keycode, ())


class _InputTranslator:
    """Turns recorded X device events into schema events (runs on the input thread; the
    release flusher shares ``lock``)."""

    def __init__(self, sink: EventSink, keymap: _Keymap, repeat_window_ms: int) -> None:
        self.sink = sink
        self.keymap = keymap
        self.repeat_window_ms = repeat_window_ms
        self.held: dict[int, dict[str, Any]] = {}  # keycode → fields of its key_down
        # held-back release: (keycode, server time ms, t_ns, key_up fields, key_down fields)
        self.pending: tuple[int, int, int, dict[str, Any], dict[str, Any]] | None = None
        self.pending_since = 0.0
        self.lock = threading.Lock()
        #: notified when a release is held back (wakes the flusher thread; no polling)
        self.cond = threading.Condition(self.lock)
        self.last_xy: tuple[float, float] | None = None

    def flush_pending(self, older_than_s: float | None = None) -> None:
        with self.lock:
            p = self.pending
            if p is None:
                return
            if older_than_s is not None and time.monotonic() - self.pending_since < older_than_s:
                return
            self.pending = None
        self.sink(KeyUp, p[2], p[3])

    def handle(self, ev: Any, t_ns: int) -> None:
        et = ev.type & 0x7F
        if et == _KEY_PRESS:
            self._key_press(ev, t_ns)
            return
        if et == _KEY_RELEASE:
            self._key_release(ev, t_ns)
            return
        self.flush_pending()
        x, y = float(ev.root_x), float(ev.root_y)
        if et == _MOTION:
            if (x, y) != self.last_xy:
                self.last_xy = (x, y)
                self.sink(PointerMove, t_ns, {"x": x, "y": y})
        elif et == _BUTTON_PRESS:
            self.last_xy = (x, y)
            if ev.detail in _WHEEL:
                dx, dy = _WHEEL[ev.detail]
                self.sink(Wheel, t_ns, {"x": x, "y": y, "dx": dx, "dy": dy, "unit": "tick"})
            else:
                self.sink(PointerDown, t_ns, {"x": x, "y": y, "button": _BUTTONS.get(ev.detail, "unknown")})
        elif et == _BUTTON_RELEASE:
            self.last_xy = (x, y)
            if ev.detail not in _WHEEL:
                self.sink(PointerUp, t_ns, {"x": x, "y": y, "button": _BUTTONS.get(ev.detail, "unknown")})

    def _fields(self, keycode: int, state: int) -> dict[str, Any]:
        info = keys.translate(keycode, self.keymap.syms(keycode), state, self.keymap.mods)
        return {"key": info.key, "code": info.code, "keysym": info.keysym or None, "vk": keycode,
                "is_repeat": False, "modifiers": self.keymap.mods.modifiers(state), "text": info.text}

    def _key_press(self, ev: Any, t_ns: int) -> None:
        kc, state = int(ev.detail), int(ev.state)
        repeat = False
        with self.lock:
            p = self.pending
            if p is not None:
                if p[0] == kc and 0 <= (int(ev.time) - p[1]) % (1 << 32) <= self.repeat_window_ms:
                    repeat = True  # synthetic release/press pair of X auto-repeat
                    self.held[kc] = p[4]
                    self.pending = None
                    p = None
        if p is not None:
            self.flush_pending()
        fields = self._fields(kc, state)
        if repeat or kc in self.held:
            fields["is_repeat"] = True
        else:
            self.held[kc] = fields
        self.sink(KeyDown, t_ns, fields)

    def _key_release(self, ev: Any, t_ns: int) -> None:
        self.flush_pending()
        kc, state = int(ev.detail), int(ev.state)
        down = self.held.pop(kc, None)
        if down is None:  # pressed before capture started
            down = self._fields(kc, state)
        fields = dict(down, is_repeat=False, modifiers=self.keymap.mods.modifiers(state), text=None)
        with self.lock:
            self.pending = (kc, int(ev.time), t_ns, fields, down)
            self.pending_since = time.monotonic()
            self.cond.notify()

    def wait_and_flush(self, hold_s: float, stopping: threading.Event) -> None:
        """The flusher thread's loop: sleep until a release is held back, then until it is
        ``hold_s`` old, and flush it (unless a device event took it first). Returns when
        ``stopping`` is set (and :meth:`wake` called)."""
        while not stopping.is_set():
            with self.cond:
                if self.pending is None:
                    self.cond.wait()
                    continue
                left = self.pending_since + hold_s - time.monotonic()
                if left > 0:
                    self.cond.wait(left)
                    continue
            self.flush_pending(older_than_s=hold_s)

    def wake(self) -> None:
        """Wake the flusher thread (at stop)."""
        with self.cond:
            self.cond.notify_all()

    def release_all(self) -> None:
        """Flush the held-back release (at stop)."""
        self.flush_pending()


class X11Backend(CaptureBackend):
    """Capture on an X11 display (see module docstring for threads and section-10 handling).

    Args:
        display: X display name (``":0"``); ``None`` = ``$DISPLAY``.
        focus_poll_s: seconds between ``GetInputFocus`` polls when no EWMH window manager runs
            (150 ms: a focus change is seen within one poll, at one round trip per poll).
        repeat_window_ms: server-time window in milliseconds for a release/press pair of the
            same keycode to count as auto-repeat (1 ms; SDL/GLFW use the same test).
        release_hold_s: how long a key release may be held back waiting for a repeat press
            (50 ms; its ``t_ns`` is its arrival time regardless).
        screen_poll_s: seconds between re-reads of the monitor layout besides RandR events
            (2 s; RandR 1.5 monitor changes send no event).
        use_damage: skip grabs while the DAMAGE extension reports no change, and report the
            damaged rectangles of each grab (``RawFrame.damage``; see :meth:`grab`).
        region_grabs: with DAMAGE, grab only the damaged rectangles and patch them into a copy
            of the previous grab (off by default: measured on Xvfb 1920x1080, a patched grab
            after one typed key costs this process 3.6 ms of CPU against 2.3 ms for a full
            MIT-SHM grab — the 8 MB copy of the previous frame, with its fresh pages, is what a
            full grab costs here; the X server's own copy is saved, but it is not this process's).

    Raises (from :meth:`start`):
        CaptureError: the display cannot be opened or lacks the RECORD extension.
    """

    name = "x11"
    platform = "linux-x11"

    def __init__(self, display: str | None = None, *, focus_poll_s: float = 0.15,
                 repeat_window_ms: int = 1, release_hold_s: float = 0.05, screen_poll_s: float = 2.0,
                 use_damage: bool = True, region_grabs: bool = False) -> None:
        self.display_name = display if display is not None else os.environ.get("DISPLAY")
        if not self.display_name:
            raise CaptureError("no X display: $DISPLAY is not set and no display was given")
        self.focus_poll_s = focus_poll_s
        self.repeat_window_ms = repeat_window_ms
        self.release_hold_s = release_hold_s
        self.screen_poll_s = screen_poll_s
        self.use_damage = use_damage
        self.region_grabs = region_grabs
        self._lock = threading.Lock()
        self._running = False
        self._ctl: Any = None
        self._rec: Any = None
        self._ctx: Any = None
        self._input_thread: threading.Thread | None = None
        self._flush_thread: threading.Thread | None = None
        self._tracker: WindowTracker | None = None
        self._translator: _InputTranslator | None = None
        self._keymap = _Keymap()
        self._input_error: BaseException | None = None
        self._record_ready = threading.Event()
        self._record_done = threading.Event()
        self._stopping = threading.Event()
        self._mss_local = threading.local()
        self._mss_all: list[Any] = []
        self._screen: tuple[tuple[Monitor, ...], Rect] | None = None
        self._sink: EventSink | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def _open(self) -> Any:
        from Xlib import error as xerror

        try:
            return open_display(self.display_name)  # closes the socket of a failed attempt itself
        except (xerror.DisplayError, xerror.ConnectionClosedError, OSError) as exc:
            raise CaptureError(f"cannot open X display {self.display_name!r}: {exc} "
                               "(is the X server running and $DISPLAY right?)") from exc

    def start(self, sink: EventSink) -> None:
        """Install the RECORD hook and the window / monitor tracker, then emit one
        ``ScreenConfig`` and one ``FocusChange`` for the current state. Returns once the
        RECORD context delivers (events from then on are captured).

        Raises:
            CaptureError: display unavailable, no RECORD extension, or RECORD did not start
                within 5 s.
        """
        if self._running:
            raise CaptureError("X11 backend already started")
        self._sink = sink
        self._stopping.clear()
        self._record_ready.clear()
        self._record_done.clear()
        try:
            self._ctl = self._open()
            if not self._ctl.has_extension("RECORD"):
                raise CaptureError(f"X display {self.display_name!r} has no RECORD extension "
                                   "(start Xvfb/Xorg with '+extension RECORD')")
            self._ctl.set_error_handler(lambda *a: None)
            self._keymap.refresh(self._ctl)
            self._translator = _InputTranslator(sink, self._keymap, self.repeat_window_ms)
            self._tracker = WindowTracker(self.display_name, self._on_focus, self._on_screen,
                                          self._on_mapping, poll_s=self.focus_poll_s,
                                          screen_poll_s=self.screen_poll_s)
            self._screen = self._tracker.screen
            self._rec = self._open()
            from Xlib import X
            from Xlib.ext import record

            self._ctx = self._rec.record_create_context(0, [record.AllClients], [{
                "core_requests": (_CHANGE_KEYBOARD_MAPPING, _CHANGE_KEYBOARD_MAPPING),
                "core_replies": (0, 0), "ext_requests": (0, 0, 0, 0), "ext_replies": (0, 0, 0, 0),
                "delivered_events": (0, 0), "device_events": (X.KeyPress, X.MotionNotify),
                "errors": (0, 0), "client_started": False, "client_died": False}])
            self._rec.sync()
            self._input_thread = threading.Thread(target=self._record_loop, name="demotrace-x11-input",
                                                  daemon=True)
            self._input_thread.start()
            if not self._record_ready.wait(5.0):
                raise CaptureError(f"X RECORD on {self.display_name!r} did not start within 5 s"
                                   + (f": {self._input_error!r}" if self._input_error else ""))
            self._running = True
            now = time.monotonic_ns()
            monitors, desktop = self._screen
            sink(ScreenConfig, now, {"monitors": monitors, "desktop": desktop})
            self._tracker.current = self._tracker.poll_focus()
            sink(FocusChange, time.monotonic_ns(), self._tracker.current.fields())
            self._tracker.start()
            self._flush_thread = threading.Thread(target=self._flush_loop, name="demotrace-x11-release",
                                                  daemon=True)
            self._flush_thread.start()
        except CaptureError:
            self._teardown()
            raise
        except Exception as exc:
            self._teardown()
            raise CaptureError(f"X11 capture could not start on {self.display_name!r}: {exc!r}") from exc

    def _record_loop(self) -> None:
        """Enable the RECORD context and read its replies straight off the data connection's
        socket until ``EndOfData`` (sent when :meth:`stop` disables the context).

        python-xlib's ``record_enable_context`` costs ~10x more CPU per event (a select per
        read, locks, a reply object and an event object with three window resources each);
        the RECORD reply layout is fixed (RECORD extension protocol 1.13, ``EnableContext``
        reply: a 32-byte header — type 1, category, sequence, length in 4-byte units,
        element header, client-swapped, id-base, server time, recorded sequence — then the
        intercepted data), and the context is created without element headers, so
        ``FromServer`` data is a run of 32-byte device events and ``FromClient`` data one
        request. All replies read in one ``recv`` share one ``t_ns``."""
        from Xlib.ext import record

        tr = self._translator
        rec = self._rec
        assert tr is not None
        keymap = self._keymap
        handle = tr.handle
        unpack_event = _EVENT.unpack_from
        reply_len = struct.Struct("=I").unpack_from
        try:
            major = rec.display.get_extension_major(record.extname)
            sock = rec.display.socket
            # EnableContext: major opcode, minor 5, length 2 (units of 4 bytes), context id
            sock.sendall(struct.pack("=BBHI", major, 5, 2, int(self._ctx)))
            buf = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    raise CaptureError("X connection of the RECORD context closed")
                t_ns = time.monotonic_ns()
                buf = buf + chunk if buf else chunk
                off, n = 0, len(buf)
                while n - off >= 32:
                    if buf[off] != 1:  # an error (0) or event on the data connection
                        if buf[off] == 0:
                            raise CaptureError(f"X error {buf[off + 1]} on the RECORD connection")
                        off += 32
                        continue
                    stop = off + 32 + 4 * reply_len(buf, off + 4)[0]
                    if stop > n:
                        break
                    cat = buf[off + 1]
                    if cat == record.FromServer:
                        for e in range(off + 32, stop - 31, 32):
                            handle(_DeviceEvent(*unpack_event(buf, e)), t_ns)
                    elif cat == record.FromClient:
                        if stop > off + 32 and buf[off + 32] == _CHANGE_KEYBOARD_MAPPING:
                            keymap.apply_request(buf[off + 32:stop], bool(buf[off + 9]))
                    elif cat == record.StartOfData:
                        self._record_ready.set()
                    elif cat == record.EndOfData:
                        return
                    off = stop
                buf = buf[off:]
        except Exception as exc:  # noqa: BLE001 - reported by check_health
            if not self._stopping.is_set():
                self._input_error = exc
        finally:
            with self._lock:
                self._record_done.set()
                abandoned = self._rec is not rec  # _teardown stopped waiting and left it to us
            if abandoned:
                try:
                    rec.close()
                except Exception:  # noqa: BLE001 - the server may be gone already
                    pass

    def _flush_loop(self) -> None:
        tr = self._translator
        assert tr is not None
        tr.wait_and_flush(self.release_hold_s, self._stopping)

    def _on_focus(self, info: WindowInfo, t_ns: int) -> None:
        if self._sink is not None:
            self._sink(FocusChange, t_ns, info.fields())

    def _on_screen(self, monitors: tuple[Monitor, ...], desktop: Rect) -> None:
        self._screen = (monitors, desktop)
        if self._sink is not None:
            self._sink(ScreenConfig, time.monotonic_ns(), {"monitors": monitors, "desktop": desktop})

    def _on_mapping(self) -> None:
        tracker = self._tracker
        if tracker is not None:
            try:
                self._keymap.refresh(tracker.dpy)  # tracker thread, its own display
            except Exception:  # noqa: BLE001 - keep the previous mapping
                pass

    def stop(self) -> None:
        """Disable RECORD, stop the tracker and flusher, flush a held-back key release, close
        every X connection (mss ones included). Idempotent; joins threads within ~1 s."""
        self._teardown()

    def _teardown(self) -> None:
        self._stopping.set()
        self._running = False
        with self._lock:
            if self._ctl is not None and self._ctx is not None:
                try:
                    self._ctl.record_disable_context(self._ctx)
                    self._ctl.flush()
                except Exception:  # noqa: BLE001 - connection may be gone already
                    pass
        if self._input_thread is not None:
            self._input_thread.join(1.0)
        if self._tracker is not None:
            self._tracker.stop(1.0)
        if self._flush_thread is not None:
            if self._translator is not None:
                self._translator.wake()
            self._flush_thread.join(1.0)
        if self._translator is not None:
            self._translator.release_all()
        with self._lock:
            if self._ctl is not None and self._ctx is not None and self._record_done.is_set():
                try:
                    self._ctl.record_free_context(self._ctx)
                    self._ctl.sync()
                except Exception:  # noqa: BLE001
                    pass
            for attr in ("_rec", "_ctl"):
                dpy = getattr(self, attr)
                # the RECORD connection is closed by its reader thread if that is still reading
                if dpy is not None and (attr != "_rec" or self._record_done.is_set() or self._input_thread is None):
                    try:
                        dpy.close()
                    except Exception:  # noqa: BLE001
                        pass
                setattr(self, attr, None)
            self._ctx = None
            for inst in self._mss_all:
                try:
                    inst.close()
                except Exception:  # noqa: BLE001
                    pass
            self._mss_all.clear()
            self._mss_local = threading.local()
        self._input_thread = self._flush_thread = None
        self._tracker = None

    def check_health(self) -> list[str]:
        """Problems now: a dead input / window / release thread, a lost X connection."""
        if not self._running:
            return []
        problems = []
        if self._input_thread is None or not self._input_thread.is_alive():
            problems.append(f"X11 input (RECORD) thread stopped: {self._input_error!r}")
        if self._tracker is None or not self._tracker.alive():
            err = self._tracker.error if self._tracker else None
            problems.append(f"X11 window tracker stopped: {err!r}")
        if self._flush_thread is None or not self._flush_thread.is_alive():
            problems.append("X11 key-release flusher stopped")
        return problems

    # -- queries --------------------------------------------------------------------------------
    def screen_config(self) -> tuple[tuple[Monitor, ...], Rect]:
        """Monitors (RandR CRTCs, scale 1.0: X11 has no per-monitor scale) and the desktop
        (root window), physical pixels; the last layout seen by the tracker while running."""
        if self._screen is not None:
            return self._screen
        dpy = self._open()
        try:
            scr = dpy.screen()
            desk = Rect(0.0, 0.0, float(scr.width_in_pixels), float(scr.height_in_pixels))
            return (Monitor(index=0, bounds=desk, scale=1.0, primary=True),), desk
        finally:
            dpy.close()

    def pointer_position(self) -> tuple[float, float] | None:
        """Pointer position in root (physical) pixels, or ``None`` if not running."""
        with self._lock:
            if self._ctl is None:
                return None
            p = self._ctl.screen().root.query_pointer()
            return float(p.root_x), float(p.root_y)

    def _grab_state(self) -> _GrabState:
        st = getattr(self._mss_local, "state", None)
        if st is not None:
            return st
        import mss

        try:
            factory = getattr(mss, "MSS", None) or mss.mss  # mss >= 10.2 renamed the factory
            inst = factory(display=self.display_name)
        except Exception as exc:
            raise CaptureError(f"mss cannot open X display {self.display_name!r}: {exc}") from exc
        damage = None
        if self.use_damage and not self._stopping.is_set():  # after stop: one full grab, no DAMAGE
            try:
                damage = _Damage(self._open())
            except Exception:  # noqa: BLE001 - no DAMAGE: grab every time (correct, costlier)
                damage = None
        st = _GrabState(inst, damage)
        with self._lock:
            if self._stopping.is_set():  # stopped: nothing would close it later, use it once
                st.once = True
                return st
            self._mss_local.state = st
            self._mss_all.append(inst)
            if damage is not None:
                self._mss_all.append(damage)
        return st

    def grab(self) -> RawFrame:
        """Grab the whole virtual desktop (mss monitor 0) as BGRA bytes.

        With the DAMAGE extension (``use_damage``, on by default; Xvfb and Xorg have it) the
        X server reports every rectangle drawn into the root window or its children
        (``DamageReportDeltaRectangles``), and a grab fetches only what changed:

        - nothing reported since this thread's previous grab: the previous grab's ``pixels``
          object is returned again with a new ``captured_ns`` and ``damage=()`` (the screen is
          byte-identical, so the frame pipeline neither hashes nor encodes it again);
        - damaged rectangles whose bounding box covers at most :data:`REGION_GRAB_MAX_AREA` of
          the screen: ``damage`` lists them (desktop pixels), so a consumer can redo only those
          regions (incremental downscale); the pixels are a full grab, or with ``region_grabs``
          a copy of the previous grab with each rectangle re-grabbed (mss region grab) and
          patched in;
        - otherwise (first grab, size change, large damage, no DAMAGE): a full grab,
          ``damage=None``.

        Ordering (no drawing is missed): the reported rectangles are read after a round trip
        (pending notifications reach this client before the reply: the server sends them in
        order), the damage region is emptied (``DamageSubtract``, round trip) *before* the
        pixels are read, and the rectangles that arrive during that second round trip are
        grabbed now **and** carried to the next grab (they may describe drawing after the
        subtract, still in the server's region, which would otherwise not be reported again).
        The mouse cursor is not part of the image (as with mss without DAMAGE).

        Thread-safe: one mss instance (and DAMAGE connection) per calling thread, created on
        first use (mss objects are not thread-safe); all are closed by :meth:`stop`. A grab
        after :meth:`stop` (the recorder's last frames) opens its own and closes them at once.

        Raises:
            CaptureError: the grab failed (display gone).
        """
        st = self._grab_state()
        if not st.once:
            return self._grab_with(st)
        try:
            return self._grab_with(st)
        finally:
            st.close()

    def _grab_with(self, st: _GrabState) -> RawFrame:
        dmg = st.damage
        rects: list[tuple[int, int, int, int]] | None = None
        if dmg is not None:
            try:
                rects = dmg.poll(sync=True)
                if st.last is not None and not rects and not st.carry:
                    return replace(st.last, captured_ns=time.monotonic_ns(), damage=())
                dmg.clear()
                late = dmg.poll(sync=False)
                rects += st.carry + late
                st.carry = late
            except Exception:  # noqa: BLE001 - DAMAGE connection broke: grab every time
                st.damage = None
                rects = None
        try:
            mon = st.mss.monitors[0]
            last = st.last
            region = None
            if rects is not None and last is not None and (last.width, last.height) == (mon["width"], mon["height"]):
                region = _patch_rects(rects, last.width, last.height)
            if region == []:  # every rectangle off screen: nothing visible changed
                return replace(last, captured_ns=time.monotonic_ns(), damage=())  # type: ignore[arg-type]
            if region is not None and self.region_grabs:
                pixels = bytearray(last.pixels)  # type: ignore[union-attr]
                view = memoryview(pixels)
                stride = last.width * 4  # type: ignore[union-attr]
                for x, y, w, h in region:
                    raw = st.mss.grab({"left": mon["left"] + x, "top": mon["top"] + y, "width": w, "height": h}).raw
                    row = w * 4
                    off = y * stride + x * 4
                    for i in range(h):
                        view[off:off + row] = raw[i * row:(i + 1) * row]
                        off += stride
                view.release()
                width, height = last.width, last.height  # type: ignore[union-attr]
                damage: tuple[Rect, ...] | None = tuple(Rect(float(mon["left"] + x), float(mon["top"] + y), float(w), float(h))
                                                       for x, y, w, h in region)
            else:
                shot = st.mss.grab(mon)
                # shot.raw is a fresh bytearray (mss copies it out of its SHM segment) and is
                # never mutated: used as is (bytes-like), another 8 MB copy costs ~2 ms here
                pixels, width, height = shot.raw, shot.width, shot.height
                damage = None
                if region is not None and (width, height) == (last.width, last.height):  # type: ignore[union-attr]
                    damage = tuple(Rect(float(mon["left"] + x), float(mon["top"] + y), float(w), float(h))
                                   for x, y, w, h in region)
        except Exception as exc:
            raise CaptureError(f"screen grab failed on {self.display_name!r}: {exc}") from exc
        done = time.monotonic_ns()
        frame = RawFrame(pixels=pixels, width=width, height=height,
                         bounds=Rect(float(mon["left"]), float(mon["top"]), float(width), float(height)),
                         monitor=-1, captured_ns=done, damage=damage)
        st.last = frame if st.damage is not None else None
        return frame


#: Largest share of the screen (area of the damaged rectangles' bounding box / screen area)
#: re-grabbed as regions; above it one full grab is cheaper than patching (measured: a full
#: 1920x1080 grab is ~2 ms of client CPU, the copy of the previous frame ~1.6 ms).
REGION_GRAB_MAX_AREA = 0.5
#: At most this many separate region grabs (one round trip each); more rectangles are merged
#: into their bounding box.
REGION_GRAB_MAX_RECTS = 8


def _patch_rects(rects: list[tuple[int, int, int, int]], width: int, height: int) -> list[tuple[int, int, int, int]] | None:
    """The rectangles (x, y, w, h; screen pixels) to re-grab for ``rects``, clipped to the
    ``width`` x ``height`` screen, duplicates removed; more than :data:`REGION_GRAB_MAX_RECTS`
    become their bounding box. ``None`` when a full grab is due (the bounding box exceeds
    :data:`REGION_GRAB_MAX_AREA` of the screen)."""
    clipped = set()
    for x, y, w, h in rects:
        x0, y0, x1, y1 = max(0, x), max(0, y), min(width, x + w), min(height, y + h)
        if x0 < x1 and y0 < y1:
            clipped.add((x0, y0, x1 - x0, y1 - y0))
    if not clipped:
        return []
    bx0 = min(r[0] for r in clipped)
    by0 = min(r[1] for r in clipped)
    bx1 = max(r[0] + r[2] for r in clipped)
    by1 = max(r[1] + r[3] for r in clipped)
    if (bx1 - bx0) * (by1 - by0) > REGION_GRAB_MAX_AREA * width * height:
        return None
    out = sorted(clipped)
    # drop rectangles contained in another one
    out = [r for r in out if not any(o != r and o[0] <= r[0] and o[1] <= r[1] and o[0] + o[2] >= r[0] + r[2]
                                     and o[1] + o[3] >= r[1] + r[3] for o in out)]
    if len(out) > REGION_GRAB_MAX_RECTS:
        return [(bx0, by0, bx1 - bx0, by1 - by0)]
    return out


class _Damage:
    """A DAMAGE object (report level DeltaRectangles: one ``DamageNotify`` per rectangle that
    grows the damage region) on the root window of display ``dpy`` (a connection of its own,
    owned by one grabbing thread). python-xlib 0.33 does not register the extension
    (``Xlib.ext.__extensions__``), so its requests are sent directly and its ``DamageNotify``
    event class is registered here."""

    def __init__(self, dpy: Any) -> None:
        try:
            self._setup(dpy)
        except BaseException:
            dpy.close()  # never leave the connection to the garbage collector
            raise

    def _setup(self, dpy: Any) -> None:
        from Xlib.ext import damage

        self._dmg = damage
        info = dpy.query_extension("DAMAGE")
        if info is None or not info.present:
            raise CaptureError("no DAMAGE extension")
        self.dpy = dpy
        self.opcode = info.major_opcode
        self.notify = info.first_event + damage.DamageNotifyCode
        dpy.extension_add_event(self.notify, damage.DamageNotify)
        dpy.set_error_handler(lambda *a: None)
        damage.QueryVersion(display=dpy.display, opcode=self.opcode, major_version=1, minor_version=1)
        self.id = dpy.display.allocate_resource_id()
        damage.DamageCreate(display=dpy.display, opcode=self.opcode, damage=self.id,
                            drawable=dpy.screen().root.id, level=damage.DamageReportDeltaRectangles)
        dpy.sync()

    def poll(self, sync: bool) -> list[tuple[int, int, int, int]]:
        """The rectangles (x, y, w, h; root-window pixels) reported since the last poll: after
        a round trip if ``sync`` (every notification for drawing done before it has arrived),
        else only those already received."""
        dpy = self.dpy
        if sync:
            dpy.sync()
        out = []
        while dpy.pending_events():
            ev = dpy.next_event()
            if ev.type & 0x7F == self.notify:
                a = ev.area
                out.append((a.x, a.y, a.width, a.height))
        return out

    def clear(self) -> None:
        """Empty the damage region; returns once the server has done it (round trip).

        Notifications that arrive meanwhile are left queued, never discarded: the caller reads
        them with ``poll(sync=False)`` (see :meth:`X11Backend.grab` for why they are grabbed
        twice)."""
        self._dmg.DamageSubtract(display=self.dpy.display, opcode=self.opcode, damage=self.id,
                                 repair=0, parts=0)
        self.dpy.sync()

    def close(self) -> None:
        self.dpy.close()


class _GrabState:
    """Per-thread grab state: the mss instance, the DAMAGE watcher (or ``None``) and the last
    grab (returned again while nothing was damaged, patched when little was)."""

    def __init__(self, mss: Any, damage: _Damage | None) -> None:
        self.mss = mss
        self.damage = damage
        self.last: RawFrame | None = None
        #: made after X11Backend.stop(): closed after one grab instead of being kept
        self.once = False
        #: rectangles reported during the previous grab's subtract round trip, grabbed again
        self.carry: list[tuple[int, int, int, int]] = []

    def close(self) -> None:
        """Close the mss instance and the DAMAGE connection."""
        for res in (self.mss, self.damage):
            if res is not None:
                try:
                    res.close()
                except Exception:  # noqa: BLE001 - the server may be gone already
                    pass
