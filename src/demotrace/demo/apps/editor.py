"""A minimal Tk text editor for the demo: one Text widget; Ctrl+S saves to the file given as
the first argument.

Window title: ``Notes - demotrace demo`` (WM_CLASS ``DemoEditor``). Prints ``READY`` on stdout
once the window is mapped. Run: ``python -m demotrace.demo.apps.editor FILE``.
"""

from __future__ import annotations

import sys
import tkinter as tk
from pathlib import Path

TITLE = "Notes - demotrace demo"


def main(argv: list[str]) -> None:
    """Open the editor window on ``argv[0]`` (created on the first save)."""
    path = Path(argv[0]) if argv else Path("notes.txt")
    root = tk.Tk(className="DemoEditor")
    root.title(TITLE)
    root.geometry("620x360+20+20")
    text = tk.Text(root, font=("DejaVu Sans Mono", 14), wrap="word", undo=True)
    text.pack(fill="both", expand=True)
    if path.exists():
        text.insert("1.0", path.read_text(encoding="utf-8"))

    def save(_event: object = None) -> str:
        path.write_text(text.get("1.0", "end-1c"), encoding="utf-8")
        root.title(f"{TITLE} (saved)")
        return "break"

    text.bind("<Control-s>", save)
    root.bind("<Map>", lambda _e: print("READY", flush=True) if _e.widget is root else None)
    root.mainloop()


if __name__ == "__main__":
    main(sys.argv[1:])
