"""The always-visible recording indicator (DESIGN.md §8.2).

A small always-on-top Tk window in its **own process** (so it never touches the input path or
the recorder's threads), showing ``● REC`` (red) or ``❚❚ PAUSED`` (grey). It polls the
recorder's control socket (one persistent connection, every 0.5 s) and exits when the recorder
is gone. Clicking it toggles pause. Screenshots include it (it is a real window on the
desktop); that is intended — what the person saw is what the frames show.

Run as ``python -m demotrace.recorder.indicator --socket PATH``; it prints ``READY`` on stdout
once its window is mapped, so the recorder can fail closed if no indicator can be shown.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from ..errors import ControlError

POLL_MS = 1000
#: Consecutive failed polls (at ``POLL_MS``) after which the indicator exits.
MAX_FAILURES = 4
REC_TEXT = "\u25cf REC"
PAUSED_TEXT = "\u275a\u275a PAUSED"


def run(socket_path: Path) -> int:
    """The indicator's main loop (blocking). Returns the exit code."""
    import tkinter as tk

    from .control import ControlClient

    root = tk.Tk(className="demotrace-indicator")
    root.title("demotrace recording")
    root.overrideredirect(True)
    root.attributes("-topmost", True)
    label = tk.Label(root, text=REC_TEXT, fg="white", bg="#c0392b", font=("DejaVu Sans", 10, "bold"), padx=6, pady=2)
    label.pack()
    root.update_idletasks()
    sw = root.winfo_screenwidth()
    root.geometry(f"+{sw - label.winfo_reqwidth() - 8}+8")
    class State:
        client: ControlClient | None = None
        failures = 0
        paused = False

    st = State()

    def client() -> ControlClient:
        if st.client is None:
            st.client = ControlClient(socket_path, timeout=2.0)
        return st.client

    def poll() -> None:
        try:
            rep = client().request("status")
            st.failures = 0
            paused = rep.get("state") == "paused"
            if paused != st.paused:  # reconfigure only on change: a redraw is screen damage
                st.paused = paused
                label.configure(text=PAUSED_TEXT if paused else REC_TEXT, bg="#7f8c8d" if paused else "#c0392b")
            root.lift()
        except (ControlError, OSError):
            st.client = None
            st.failures += 1
            if st.failures >= MAX_FAILURES:
                root.destroy()
                return
        root.after(POLL_MS, poll)

    def toggle(_event: object) -> None:
        try:
            client().request("resume" if st.paused else "pause")
        except (ControlError, OSError):
            st.client = None

    label.bind("<Button-1>", toggle)
    root.after(0, poll)
    root.update()
    print("READY", flush=True)
    root.mainloop()
    return 0


class IndicatorProcess:
    """Starts and watches the indicator process for a recorder listening on ``socket_path``.

    ``env``: environment for the child (needs ``DISPLAY``).
    """

    def __init__(self, socket_path: Path, env: dict[str, str] | None = None) -> None:
        self.socket_path = socket_path
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> None:
        """Start it and wait until its window is shown.

        Raises:
            ControlError: it could not show a window (message has its error and the fix).
        """
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "demotrace.recorder.indicator", "--socket", str(self.socket_path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=self.env,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        import select

        while time.monotonic() < deadline:
            r, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if r:
                line = self.proc.stdout.readline()
                break
            if self.proc.poll() is not None:
                break
        if line.strip() != b"READY":
            err = b""
            if self.proc.poll() is None:
                self.proc.kill()
            try:
                _, err = self.proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            msg = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise ControlError(
                f"the recording indicator could not be shown ({msg[0]}); check DISPLAY and that"
                " python3-tk is installed, or pass --no-indicator"
            )

    def alive(self) -> bool:
        """True while the indicator process runs."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """Terminate it (idempotent)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            for s in (self.proc.stdout, self.proc.stderr):
                if s is not None:
                    s.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the indicator process."""
    p = argparse.ArgumentParser(prog="demotrace-indicator")
    p.add_argument("--socket", required=True, type=Path, help="the recorder's control socket")
    ns = p.parse_args(argv)
    return run(ns.socket)


if __name__ == "__main__":
    sys.exit(main())
