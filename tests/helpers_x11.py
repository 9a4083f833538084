"""Helpers for tests on a real X server: run xdotool / xprop / xwininfo, start the Tk test app
and xterm, drive raw keycodes through XTest, collect what a capture backend emits, and start /
stop a real ``demotrace record`` subprocess (:func:`start_recorder`, :func:`stop_recorder`).

Everything here reads the X server through independent tools (xdotool, xwininfo, xprop,
xset) so expected values never come from the code under test.
"""

from __future__ import annotations

import json
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

# wait_for(pred, timeout=5.0, what="", interval=0.05): the package's poller, also imported from
# here by tests; it fails with WaitTimeout (an exception, so the test fails) naming ``what``.
from demotrace.demo import WaitTimeout, wait_for
from demotrace.errors import ControlError
from demotrace.paths import Paths

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


#: The ``demotrace`` console script of this virtualenv, as an argv prefix.
DEMOTRACE = [str(Path(sys.executable).parent / "demotrace")]


def recorder_status(home: Path, timeout: float = 3.0) -> dict[str, Any]:
    """The ``status`` reply of the recorder running for DEMOTRACE_HOME ``home``, read over its
    control socket (``Paths(home).control_socket``); ``timeout`` in seconds.

    Raises:
        ControlError: no recorder answers on that socket.
    """
    from demotrace.recorder.control import call

    return dict(call(Paths(home).control_socket, "status", timeout=timeout))


def start_recorder(env: dict[str, str], home: Path, *extra: str, enroll: bool = False,
                   timeout: float = 30.0) -> subprocess.Popen[str]:
    """Run ``demotrace record --home HOME *extra`` as a subprocess with ``env`` (stdout and
    stderr piped, text) and return it once its control socket reports ``state ==
    "recording"`` (polled every 0.05 s for up to ``timeout`` seconds).

    ``enroll``: first record consent to the home's current policy, without which ``record``
    refuses to start (issue 4). Stop it with :func:`stop_recorder` (or ``demotrace stop``).

    Fails (AssertionError, with the recorder's stdout and stderr) if the recorder exits first or
    does not report recording in time; it is killed then, never left running.
    """
    if enroll:
        from demotrace.privacy import load_policy, record_consent

        record_consent(Paths(home), load_policy(Paths(home)))
    proc = subprocess.Popen([*DEMOTRACE, "record", "--home", str(home), *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def recording() -> bool:
        if proc.poll() is not None:
            return True  # reported below
        try:
            return recorder_status(home, timeout=2).get("state") == "recording"
        except ControlError:
            return False

    try:
        wait_for(recording, timeout, what="`demotrace record` to report recording")
    except BaseException as exc:
        proc.kill()
        out, err = proc.communicate()
        if isinstance(exc, WaitTimeout):
            raise AssertionError(f"`demotrace record` did not start within {timeout:g} s:\n{out}\n{err}") from None
        raise
    if proc.returncode is not None:
        out, err = proc.communicate()
        raise AssertionError(f"`demotrace record` exited ({proc.returncode}) before recording:\n{out}\n{err}")
    return proc


def stop_recorder(proc: subprocess.Popen[str], timeout: float = 60.0) -> tuple[str, str]:
    """Stop a recorder from :func:`start_recorder` as Ctrl-C does (SIGINT) and wait up to
    ``timeout`` seconds; return its (stdout, stderr). Fails unless it exits with status 0."""
    import signal

    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"`demotrace record` exited {proc.returncode}:\n{out}\n{err}"
    return out, err


@contextmanager
def recording(env: dict[str, str], home: Path, *extra: str, enroll: bool = True) -> Iterator[subprocess.Popen[str]]:
    """``demotrace record --home HOME *extra`` from :func:`start_recorder` (consent recorded
    first unless ``enroll`` is false) for the ``with`` body; stopped with :func:`stop_recorder`
    when the body ends normally (it must exit 0), killed when the body raised — never left
    running."""
    proc = start_recorder(env, home, *extra, enroll=enroll)
    try:
        yield proc
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    if proc.poll() is None:
        stop_recorder(proc)


@contextmanager
def killed_after(*procs: subprocess.Popen[Any]) -> Iterator[None]:
    """Kill and reap ``procs`` (apps a test started) when the ``with`` body ends, however."""
    try:
        yield
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()


def spool_events(spool: Any) -> list[Any]:
    """Every event of every raw session in ``spool`` (a :class:`demotrace.spool.Spool`), in
    session then ``seq`` order."""
    out: list[Any] = []
    for sid in spool.session_ids():
        with spool.open(sid) as r:
            out.extend(r.iter_events())
    return out


def wait_focus_stored(spool: Any, title: str, timeout: float = 20.0) -> None:
    """Wait (up to ``timeout`` seconds) until the recorder has stored a ``FocusChange`` to the
    window titled ``title`` in ``spool``: keys sent before it may carry the previous window."""
    from demotrace.schema import FocusChange

    wait_for(lambda: any(isinstance(e, FocusChange) and e.title == title for e in spool_events(spool)),
             timeout, what=f"the recorder stored the focus change to {title!r}")


def seal_by_cli(env: dict[str, str], paths: Paths, session_id: str) -> list[tuple[Any, Any]]:
    """Run ``demotrace seal`` (the console script, ``env``; must exit 0) and return the sealed
    bundle's ``(Frame, RGB PIL image)`` pairs of ``session_id``, in bundle order."""
    import io

    from PIL import Image

    from demotrace.privacy import open_bundle
    from demotrace.schema import Frame

    p = subprocess.run([*DEMOTRACE, "seal"], env=env, capture_output=True, text=True, timeout=600, check=False)
    assert p.returncode == 0, p.stderr
    with open_bundle(paths, session_id) as b:
        return [(e, Image.open(io.BytesIO(b.read_blob(e.blob))).convert("RGB"))
                for e in b.iter_events() if isinstance(e, Frame)]


def only_session(home: Path) -> tuple[Paths, Any, str]:
    """``(paths, spool, session_id)`` of the one raw session in DEMOTRACE_HOME ``home`` (fails
    if there is not exactly one)."""
    from demotrace.spool import DataKey, Spool

    paths = Paths(home)
    spool = Spool(paths.spool, DataKey.load(paths.key_file))
    ids = spool.session_ids()
    assert len(ids) == 1, f"expected one recorded session in {home}, found {ids}"
    return paths, spool, ids[0]


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
    from Xlib import X
    from Xlib import display as xdisplay
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


@contextmanager
def xvfb_with_openbox(width: int, height: int) -> Iterator[Any]:
    """A private Xvfb (``conftest.start_xvfb``, width x height physical px) with openbox running
    and advertising EWMH (``_NET_SUPPORTING_WM_CHECK`` on the root); yields the server (its
    ``env`` / ``display``). Both are stopped on exit. Fails (never skips) without openbox."""
    from conftest import start_xvfb

    server = start_xvfb(width, height)
    wm = None
    try:
        exe = shutil.which("openbox")
        assert exe is not None, "openbox not installed (scripts/bootstrap.sh installs it)"
        wm = subprocess.Popen([exe, "--sm-disable"], env=server.env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
        wait_for(lambda: "window id" in subprocess.run(["xprop", "-root", "_NET_SUPPORTING_WM_CHECK"], env=server.env,
                                                      capture_output=True, text=True, check=False).stdout,
                 timeout=10, what="openbox to advertise EWMH")
        yield server
    finally:
        if wm is not None:
            wm.terminate()
            wm.wait(5)
        server.proc.terminate()
        server.proc.wait(5)
