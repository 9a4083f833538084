"""A tiny Tk app for the recorder's end-to-end tests (run with the system or venv Python).

Usage: ``python rec_colour_app.py TITLE X Y``. Shows a 300x200 window at (X, Y) with a
button filling its top half (200 px wide, 100 px high, at window offset (0, 0)): green
(#00c800) until clicked, then red (#c80000) — so a frame taken before the click shows green.
Below it, an entry field (focused at start). Prints ``READY`` once the window is mapped and
``CLICKED`` when the button is pressed.
"""

from __future__ import annotations

import sys
import tkinter as tk

GREEN = "#00c800"
RED = "#c80000"


def main() -> None:
    title, x, y = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    root = tk.Tk(className="Dtrecapp")  # WM_CLASS class (Tk keeps only the first letter upper case)
    root.title(title)
    root.geometry(f"300x200+{x}+{y}")
    frame = tk.Frame(root, width=300, height=100, bg=GREEN)
    frame.place(x=0, y=0, width=300, height=100)

    def clicked(_event: object) -> None:
        frame.configure(bg=RED)
        root.update_idletasks()
        print("CLICKED", flush=True)

    frame.bind("<ButtonPress-1>", clicked)
    entry = tk.Entry(root)
    entry.place(x=10, y=120, width=280, height=30)
    entry.focus_set()
    root.update()
    root.after(50, lambda: print("READY", flush=True))
    root.mainloop()


if __name__ == "__main__":
    main()
