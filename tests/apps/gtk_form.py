"""A small GTK 3 form for the AT-SPI tests (run with the SYSTEM interpreter ``/usr/bin/python3``,
which has Debian's ``python3-gi`` + ``gir1.2-gtk-3.0``; the project venv cannot import ``gi``).

Usage: ``/usr/bin/python3 gtk_form.py --title T [--x X --y Y] [--busy-focus-ms N]``.

Window: 420x220 at (X, Y) (exact without a window manager), WM_CLASS class ``Gtkform``. Widgets
top to bottom, in Tab order:

- ``name``: a plain ``Gtk.Entry`` (accessible name "Full name", AT-SPI role ``text``);
- ``password``: a ``Gtk.Entry`` with ``visibility`` False (accessible name "Secret",
  deliberately not matching the policy's name patterns, so only the AT-SPI role ``password
  text`` can identify it);
- ``code``: a one-time-code ``Gtk.Entry`` with ``input-purpose`` PIN and ``visibility`` False
  (GTK then also exposes it as ``password text``), accessible name "Code".

The name entry has focus when the window is first shown. ``--busy-focus-ms N`` makes the app
busy for N ms when the password entry gains focus, before GTK reports the focus move to AT-SPI
(a slow app: keys typed meanwhile reach the X server, and a recorder, before the report). Prints one line ``READY {json}`` once
mapped, with ``pid`` and the window id; on stdin ``quit`` ends it. Prints ``VALUES {json}``
(lengths only, never the typed text) on ``values`` so a test can check keys reached the app.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import gi

gi.require_version("Gtk", "3.0")
from gi.repository import GLib, Gtk


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--title", required=True)
    ap.add_argument("--x", type=int, default=0)
    ap.add_argument("--y", type=int, default=0)
    ap.add_argument("--busy-focus-ms", type=int, default=0)
    args = ap.parse_args()

    GLib.set_prgname("gtkform")
    win = Gtk.Window(title=args.title)
    win.set_wmclass("gtkform", "Gtkform")
    win.set_default_size(420, 220)
    win.move(args.x, args.y)
    box = Gtk.Box(orientation=Gtk.Orientation.VERTICAL, spacing=8)
    box.set_border_width(12)
    win.add(box)

    def entry(label: str, secret: bool, purpose: Gtk.InputPurpose | None = None) -> Gtk.Entry:
        lab = Gtk.Label(label=label, xalign=0.0)
        e = Gtk.Entry()
        e.set_visibility(not secret)
        if purpose is not None:
            e.set_input_purpose(purpose)
        lab.set_mnemonic_widget(e)  # the label becomes the entry's accessible name
        e.get_accessible().set_name(label)
        box.pack_start(lab, False, False, 0)
        box.pack_start(e, False, False, 0)
        return e

    name = entry("Full name", secret=False)
    password = entry("Secret", secret=True)
    code = entry("Code", secret=True, purpose=Gtk.InputPurpose.PIN)
    win.connect("destroy", Gtk.main_quit)
    if args.busy_focus_ms > 0:
        import time

        def busy(*_a: object) -> bool:
            time.sleep(args.busy_focus_ms / 1000)
            return False  # let GTK handle the focus (and report it) afterwards

        password.connect("focus-in-event", busy)

    def on_map(*_a: object) -> None:
        def ready() -> bool:
            xid = win.get_window().get_xid()
            print("READY " + json.dumps({"pid": os.getpid(), "window": xid}), flush=True)
            return False

        GLib.timeout_add(50, ready)

    win.connect("map-event", on_map)

    def on_stdin(_src: object, _cond: object) -> bool:
        line = sys.stdin.readline()
        if not line:
            return False  # end of stdin: keep running until killed
        cmd = line.strip()
        if cmd == "quit":
            Gtk.main_quit()
            return False
        if cmd == "values":
            print("VALUES " + json.dumps({"name": len(name.get_text()), "password": len(password.get_text()),
                                          "code": len(code.get_text())}), flush=True)
        return True

    GLib.io_add_watch(sys.stdin, GLib.IO_IN | GLib.IO_HUP, on_stdin)
    win.show_all()
    name.grab_focus()
    Gtk.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
