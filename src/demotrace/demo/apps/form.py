"""A Tk sign-in form for the demo: a name field, a password field (shown as bullets) and a
Sign in button.

Window title: ``Sign in - demotrace demo`` (WM_CLASS ``DemoForm``). On Sign in it writes
``{"name": ..., "password_length": N}`` to the file given as the first argument — never the
password itself — and shows "Signed in". Prints ``READY`` once mapped, followed by the JSON
widget centres relative to the window (``{"name": [x, y], "password": …, "submit": …}``).
Run: ``python -m demotrace.demo.apps.form RESULT.json``.
"""

from __future__ import annotations

import json
import sys
import tkinter as tk
from pathlib import Path

TITLE = "Sign in - demotrace demo"


def main(argv: list[str]) -> None:
    """Open the form window; results go to ``argv[0]``."""
    out = Path(argv[0]) if argv else Path("form-result.json")
    root = tk.Tk(className="DemoForm")
    root.title(TITLE)
    root.geometry("420x220+760+420")
    font = ("DejaVu Sans", 14)
    tk.Label(root, text="Name", font=font).grid(row=0, column=0, padx=12, pady=12, sticky="e")
    name = tk.Entry(root, font=font, width=20)
    name.grid(row=0, column=1, padx=12, pady=12)
    tk.Label(root, text="Password", font=font).grid(row=1, column=0, padx=12, pady=12, sticky="e")
    password = tk.Entry(root, font=font, width=20, show="•")
    password.grid(row=1, column=1, padx=12, pady=12)
    status = tk.Label(root, text="", font=font)
    status.grid(row=3, column=0, columnspan=2)

    def submit() -> None:
        out.write_text(json.dumps({"name": name.get(), "password_length": len(password.get())}))
        status.configure(text="Signed in")

    button = tk.Button(root, text="Sign in", font=font, command=submit)
    button.grid(row=2, column=1, pady=8, sticky="w")

    def ready(event: tk.Event) -> None:
        if event.widget is not root:
            return
        root.update_idletasks()
        # widget centres relative to the window's top-left (pixels), for the demo driver
        centre = {n: [w.winfo_rootx() - root.winfo_rootx() + w.winfo_width() // 2,
                      w.winfo_rooty() - root.winfo_rooty() + w.winfo_height() // 2]
                  for n, w in (("name", name), ("password", password), ("submit", button))}
        print("READY " + json.dumps(centre), flush=True)

    root.bind("<Map>", ready)
    root.mainloop()


if __name__ == "__main__":
    main(sys.argv[1:])
