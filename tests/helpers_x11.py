"""Helpers for tests on a real X server: run xdotool / xprop / xwininfo, start the Tk test app
and xterm, drive raw keycodes through XTest, and collect what a capture backend emits.

Everything here reads the X server through independent tools (xdotool, xwininfo, xprop,
xset) so expected values never come from the code under test.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TKAPP = Path(__file__).resolve().parent / "apps" / "tkapp.py"


def x(cmd: list[str], env: dict[str, str], timeout: float = 10) -> str:
    """Run an X client command; return stdout; raise with stderr on failure."""
    exe = shutil.which(cmd[0])
    assert exe is not None, f"{cmd[0]} not installed (scripts/bootstrap.sh installs it)"
    proc = subprocess.run([exe, *cmd[1:]], env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}"
    return proc.stdout


def xdotool(env: dict[str, str], *args: str) -> str:
    return x(["xdotool", *args], env)


def wait_for(pred: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02, what: str = "") -> Any:
    """Poll ``pred`` until it returns a truthy value; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or pred}")
        time.sleep(interval)


def search_window(env: dict[str, str], title: str, timeout: float = 5.0) -> int:
    """XID of the one window whose name is exactly ``title`` (xdotool search)."""
    def find() -> int | None:
        out = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", f"^{re.escape(title)}$"], env=env,
                             capture_output=True, text=True).stdout.split()
        return int(out[0]) if len(out) == 1 else None
    return int(wait_for(find, timeout, what=f"window {title!r}"))


def toplevel(env: dict[str, str], wid: int) -> int:
    """The ancestor of ``wid`` that is a child of the root (the WM frame under a reparenting
    window manager), walking ``xwininfo -tree``."""
    for _ in range(32):
        out = x(["xwininfo", "-tree", "-id", str(wid)], env)
        m = re.search(r"Parent window id: (0x[0-9a-f]+)( \(the root window\))?", out)
        assert m, out
        if m.group(2):
            return wid
        wid = int(m.group(1), 16)
    raise AssertionError("window tree too deep")


def geometry(env: dict[str, str], wid: int, frame: bool = False) -> tuple[int, int, int, int]:
    """(x, y, width, height) in root coordinates, border included, from xwininfo (``frame``:
    of the top-level ancestor, i.e. the WM frame)."""
    out = x(["xwininfo", "-id", str(toplevel(env, wid) if frame else wid)], env)
    def num(label: str) -> int:
        m = re.search(rf"{label}:\s+(-?\d+)", out)
        assert m, f"xwininfo has no {label}: {out}"
        return int(m.group(1))
    bw = num("Border width")  # xwininfo's "Absolute upper-left" is already the border's outer corner
    return (num("Absolute upper-left X"), num("Absolute upper-left Y"),
            num("Width") + 2 * bw, num("Height") + 2 * bw)


def wm_class(env: dict[str, str], wid: int) -> str:
    """The class part of WM_CLASS, read with xprop."""
    out = x(["xprop", "-id", str(wid), "WM_CLASS"], env)
    parts = re.findall(r'"([^"]*)"', out)
    assert len(parts) == 2, out
    return parts[1]


def list_monitors(env: dict[str, str]) -> list[tuple[str, bool, tuple[int, int, int, int]]]:
    """``xrandr --listmonitors`` as (name, primary, (x, y, width, height)), in server order."""
    out = x(["xrandr", "--listmonitors"], env)
    mons = []
    for m in re.finditer(r"^\s*\d+: ([+*]*)(\S+) (\d+)/\d+x(\d+)/\d+([+-]\d+)([+-]\d+)", out, re.M):
        flags, name, w, h, px, py = m.groups()
        mons.append((name, "*" in flags, (int(px), int(py), int(w), int(h))))
    assert mons, out
    return mons


def led_on(env: dict[str, str], name: str) -> bool:
    """State of an XKB indicator ("Num Lock", "Caps Lock") from ``xset q``."""
    out = x(["xset", "q"], env)
    m = re.search(rf"{name}:\s+(on|off)", out)
    assert m, out
    return m.group(1) == "on"


@dataclass
class App:
    """A running test app: ``proc``, window ``wid`` (from xdotool), ``info`` (READY json)."""

    proc: subprocess.Popen[str]
    wid: int
    info: dict[str, Any] = field(default_factory=dict)

    def command(self, line: str, expect: str, timeout: float = 5.0) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        read_line(self.proc, expect, timeout)


def read_line(proc: subprocess.Popen[str], prefix: str, timeout: float = 10.0) -> str:
    """Read stdout lines of ``proc`` until one starts with ``prefix``."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not r:
            break
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"process exited (rc={proc.poll()}) before printing {prefix!r}")
        if line.startswith(prefix):
            return line
    raise AssertionError(f"no {prefix!r} line within {timeout} s")


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(3)
    for f in (proc.stdin, proc.stdout):
        if f is not None:
            f.close()


@contextmanager
def tk_app(env: dict[str, str], title: str, x_pos: int = 100, y_pos: int = 100, cls: str = "Demotk") -> Iterator[App]:
    """Start tests/apps/tkapp.py; yield once its window is mapped and found by title."""
    proc = subprocess.Popen([sys.executable, str(TKAPP), "--title", title, "--x", str(x_pos), "--y", str(y_pos),
                             "--cls", cls], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(read_line(proc, "READY ").split(" ", 1)[1])
        yield App(proc, search_window(env, title), info)
    finally:
        _stop(proc)


@contextmanager
def xterm(env: dict[str, str], title: str, geom: str = "60x10+600+400") -> Iterator[App]:
    """Start xterm titled ``title`` (it sets _NET_WM_PID itself)."""
    proc = subprocess.Popen(["xterm", "-T", title, "-geometry", geom, "-e", "sleep", "60"], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    try:
        yield App(proc, search_window(env, title, timeout=10), {"pid": proc.pid})
    finally:
        _stop(proc)


class Collector:
    """A capture sink: ``(event_cls, t_ns, fields)`` appended under a lock, in call order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[type, int, dict[str, Any]]] = []

    def __call__(self, cls: type, t_ns: int, fields: dict[str, Any]) -> None:
        with self.lock:
            self.events.append((cls, t_ns, dict(fields)))

    def of(self, *classes: type) -> list[tuple[str, dict[str, Any]]]:
        """``(class name, fields)`` of the events of the given classes, in order."""
        with self.lock:
            return [(c.__name__, f) for c, _t, f in self.events if c in classes]

    def wait(self, pred: Callable[[list[tuple[type, int, dict[str, Any]]]], Any], timeout: float = 5.0,
             what: str = "") -> Any:
        def check() -> Any:
            with self.lock:
                snapshot = list(self.events)
            return pred(snapshot)
        return wait_for(check, timeout, what=what)


def fake_keys(display: str, *steps: tuple[int, bool]) -> None:
    """Send raw key presses/releases by X keycode through XTest (python-xlib), in order."""
    from Xlib import X, display as xdisplay
    from Xlib.ext import xtest

    d = xdisplay.Display(display)
    try:
        for keycode, down in steps:
            xtest.fake_input(d, X.KeyPress if down else X.KeyRelease, keycode)
            d.sync()
    finally:
        d.close()


def tap(keycode: int) -> list[tuple[int, bool]]:
    return [(keycode, True), (keycode, False)]

