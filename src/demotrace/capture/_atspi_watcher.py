"""AT-SPI focus watcher: a child process of the recorder, run by the SYSTEM interpreter.

Run as ``/usr/bin/python3 _atspi_watcher.py`` (Debian's ``python3-pyatspi`` and ``python3-gi``
live there; the project's venv cannot import ``gi``). Stand-alone on purpose: standard library,
``gi`` and ``pyatspi`` only, never ``demotrace`` (which the system interpreter does not have).

It listens on the accessibility bus for ``object:state-changed:focused`` (the event AT-SPI 2
toolkits — GTK 3/4 through atk-bridge, Qt, Chromium/Firefox with accessibility on — emit when
a widget gains keyboard focus) and writes one JSON object per line to stdout:

- ``{"type": "ready", "t_ns": T}`` once listening (after reporting the element focused at
  start, if any, as a ``focus`` line with ``"event": "initial"``);
- ``{"type": "unavailable", "reason": "..."}`` and exit status 0 when there is no accessibility
  bus (no ``$DBUS_SESSION_BUS_ADDRESS`` / ``$AT_SPI_BUS_ADDRESS``, or the bus does not answer);
- ``{"type": "focus", "t_ns": T, "event": ..., "role": ..., "name": ..., "bounds": [x, y, w,
  h] | null, "states": [...], "app": ..., "pid": ..., "error": null | "..."}`` per focused
  accessible. ``t_ns`` is ``time.monotonic_ns()`` when the event was received here
  (CLOCK_MONOTONIC is system-wide, so the recorder compares it with its own stamps). ``role``
  is the AT-SPI role name (``"password text"`` for a password entry, ``"text"``, ``"push
  button"`` …), ``bounds`` from ``Component.getExtents(DESKTOP_COORDS)``: screen pixels as the
  toolkit reports them (physical pixels on an unscaled X11 desktop; GTK 3 with ``GDK_SCALE`` > 1
  reports logical pixels). ``states`` are AT-SPI state names (``"editable"``, ``"focused"``,
  ``"single line"`` …). ``error`` is set (and role/name may be null) when the accessible could
  not be read (the recorder then treats the field as secret: fail closed).

The watcher never reads an accessible's text (the Text interface): only role, name, extents,
states and the owning application.

It ends when its stdin closes (the recorder went away) or on SIGTERM / SIGINT.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time

#: Same accessible reported again within this many ns with the same fields is not repeated
#: (GTK 3 emits ``focused`` twice per focus move: once from the focus handler, once from the
#: state change; measured on Debian 12, GTK 3.24).
DUP_NS = 100_000_000
#: At most this many accessibles are visited when looking for the element focused at start.
INITIAL_WALK_BUDGET = 3000


def emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def describe(pyatspi, acc, event: str, t_ns: int) -> dict:
    """The JSON line for focused accessible ``acc`` (see module doc)."""
    out = {"type": "focus", "t_ns": t_ns, "event": event, "role": None, "name": None, "bounds": None,
           "states": [], "app": None, "pid": None, "error": None}
    try:
        out["role"] = acc.getRoleName()
        out["name"] = acc.name
        out["states"] = sorted(pyatspi.stateToString(s) for s in acc.getState().getStates())
    except Exception as exc:  # noqa: BLE001 - the app may be gone; the recorder fails closed
        out["error"] = f"accessible unreadable: {exc!r}"[:300]
        return out
    # each of these may be missing (no Component interface, app gone): then it stays unknown
    with contextlib.suppress(Exception):
        out["pid"] = int(acc.get_process_id())
    with contextlib.suppress(Exception):
        app = acc.getApplication()
        out["app"] = app.name if app is not None else None
    with contextlib.suppress(Exception):
        e = acc.queryComponent().getExtents(pyatspi.DESKTOP_COORDS)
        if e.width > 0 and e.height > 0:
            out["bounds"] = [e.x, e.y, e.width, e.height]
    return out


def initial_focus(pyatspi):
    """The accessible focused now in an active top-level window, or None (bounded walk)."""
    budget = [INITIAL_WALK_BUDGET]

    def walk(acc, depth: int):
        if budget[0] <= 0 or depth > 40:
            return None
        budget[0] -= 1
        try:
            st = acc.getState()
            if st.contains(pyatspi.STATE_FOCUSED):
                return acc
            if not st.contains(pyatspi.STATE_SHOWING) and depth > 1:
                return None
            n = acc.childCount
        except Exception:  # noqa: BLE001
            return None
        for i in range(min(n, 500)):
            try:
                ch = acc.getChildAtIndex(i)
            except Exception:  # noqa: BLE001, S112 - a child that vanished is skipped
                continue
            if ch is not None:
                found = walk(ch, depth + 1)
                if found is not None:
                    return found
        return None

    desktop = pyatspi.Registry.getDesktop(0)
    for app in desktop:
        if app is None:
            continue
        try:
            tops = list(app)
        except Exception:  # noqa: BLE001, S112 - an app that vanished is skipped
            continue
        for top in tops:
            try:
                if top is None or not top.getState().contains(pyatspi.STATE_ACTIVE):
                    continue
            except Exception:  # noqa: BLE001, S112 - a child that vanished is skipped
                continue
            found = walk(top, 1)
            if found is not None:
                return found
    return None


def main() -> int:
    if not (os.environ.get("AT_SPI_BUS_ADDRESS") or os.environ.get("DBUS_SESSION_BUS_ADDRESS")):
        emit({"type": "unavailable", "reason": "no D-Bus session bus ($DBUS_SESSION_BUS_ADDRESS is not set), "
              "so no accessibility bus"})
        return 0
    try:
        import gi

        gi.require_version("Atspi", "2.0")
        import pyatspi
        from gi.repository import GLib
    except Exception as exc:  # noqa: BLE001
        emit({"type": "unavailable", "reason": f"python3-pyatspi / python3-gi not importable: {exc!r} "
              "(apt-get install python3-pyatspi at-spi2-core)"})
        return 0
    try:
        desktop = pyatspi.Registry.getDesktop(0)
        _ = desktop.childCount  # a round trip: raises if the accessibility bus does not answer
    except Exception as exc:  # noqa: BLE001
        emit({"type": "unavailable", "reason": f"accessibility bus not reachable: {exc!r}"})
        return 0

    last: list = [None, 0]

    def on_focus(ev) -> None:
        t = time.monotonic_ns()
        if not ev.detail1:  # focus lost: the next gain (or the window manager's focus) tells
            return
        line = describe(pyatspi, ev.source, ev.type, t)
        key = json.dumps([line["role"], line["name"], line["bounds"], line["pid"], line["error"]])
        if key == last[0] and t - last[1] < DUP_NS:
            return
        last[0], last[1] = key, t
        emit(line)

    pyatspi.Registry.registerEventListener(on_focus, "object:state-changed:focused")
    with contextlib.suppress(Exception):  # start-up state unknown; live events still flow
        acc = initial_focus(pyatspi)
        if acc is not None:
            emit(describe(pyatspi, acc, "initial", time.monotonic_ns()))

    def quit_loop(*_a) -> bool:
        pyatspi.Registry.stop()
        return False

    GLib.io_add_watch(sys.stdin.fileno(), GLib.IO_HUP | GLib.IO_ERR | GLib.IO_IN,
                      lambda fd, cond: quit_loop() if (cond & (GLib.IO_HUP | GLib.IO_ERR)
                                                        or not os.read(fd, 4096)) else True)
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, sig, quit_loop)
    emit({"type": "ready", "t_ns": time.monotonic_ns()})
    pyatspi.Registry.start()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # the recorder closed our stdout
        sys.exit(0)
