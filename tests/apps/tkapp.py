"""A small Tk app for the X11 capture tests (run with a Python that has tkinter).

Usage: ``python tkapp.py --title T --x X --y Y [--cls CLASS]``.

Window: 400x300 at (X, Y) (exact without a window manager), WM_CLASS class ``CLASS``
(default ``Demotk``). Widgets, at fixed offsets inside the window:

- ``patch``: a 100x50 solid frame of colour ``#1e90c8`` at (290, 10)
- ``button``: a 120x40 frame at (10, 10), ``#c81e1e`` (red) until clicked, then ``#1ec81e``
  (green); prints ``CLICKED`` after repainting
- ``entry1``, ``entry2``: entries at (10, 80) and (10, 130), 280x30
- ``password``: an entry with ``show="*"`` at (10, 180), 280x30

Prints one line ``READY {json}`` once mapped, with ``pid`` and each widget's root-relative
``[x, y, width, height]`` as Tk reports it. Tk sets no ``_NET_WM_PID``; its WM_CLASS class is
``CLASS`` capitalised by Tk (``Demotk``). Reads commands on stdin: ``title <text>`` (then prints ``TITLE``), ``quit``
(end of stdin is ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tkinter as tk

PATCH = "#1e90c8"
RED = "#c81e1e"
GREEN = "#1ec81e"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--title", default="DemoTk")
    ap.add_argument("--x", type=int, default=50)
    ap.add_argument("--y", type=int, default=50)
    ap.add_argument("--cls", default="Demotk")
    args = ap.parse_args()

    root = tk.Tk(className=args.cls)
    root.title(args.title)
    root.geometry(f"400x300+{args.x}+{args.y}")
    root.configure(bg="#ffffff")
    patch = tk.Frame(root, bg=PATCH, highlightthickness=0, bd=0)
    patch.place(x=290, y=10, width=100, height=50)
    button = tk.Frame(root, bg=RED, highlightthickness=0, bd=0)
    button.place(x=10, y=10, width=120, height=40)

    def clicked(_event: object) -> None:
        button.configure(bg=GREEN)
        root.update_idletasks()
        print("CLICKED", flush=True)

    button.bind("<ButtonPress-1>", clicked)
    widgets: dict[str, tk.Widget] = {"patch": patch, "button": button}
    for name, y, show in (("entry1", 80, ""), ("entry2", 130, ""), ("password", 180, "*")):
        e = tk.Entry(root, show=show)
        e.place(x=10, y=y, width=280, height=30)
        widgets[name] = e
    widgets["entry1"].focus_set()

    def on_stdin(*_a: object) -> None:
        line = sys.stdin.readline()
        if not line:  # stdin closed: keep running, stop listening
            root.tk.deletefilehandler(sys.stdin)
            return
        if line.strip() == "quit":
            root.destroy()
            return
        cmd, _, rest = line.rstrip("\n").partition(" ")
        if cmd == "title":
            root.title(rest)
            root.update_idletasks()
            print("TITLE", flush=True)

    root.tk.createfilehandler(sys.stdin, tk.READABLE, on_stdin)

    def ready() -> None:
        root.update_idletasks()
        info = {"pid": os.getpid(),
                "widgets": {n: [w.winfo_rootx(), w.winfo_rooty(), w.winfo_width(), w.winfo_height()]
                            for n, w in widgets.items()}}
        print("READY " + json.dumps(info), flush=True)

    root.wait_visibility()
    root.after(20, ready)
    root.mainloop()


if __name__ == "__main__":
    main()
