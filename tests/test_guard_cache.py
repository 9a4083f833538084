"""The privacy guard's event-driven window cache (recorder/guard.py ``WindowCache``), on the
real session Xvfb with real X windows.

A stale cache is a leak: every change that can put an excluded window on screen (map, rename,
move, a window mapped and gone again between two observations, focus) must be in the view of
the very next frame. The expected windows, bounds and titles come from what the test itself
created (python-xlib requests / xdotool), never from the code under test.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from demotrace.capture._base import RawFrame
from demotrace.capture._xorg_window import open_display
from demotrace.paths import Paths
from demotrace.privacy import load_policy, record_consent
from demotrace.recorder.guard import CaptureGuard, WindowCache, visible_windows
from demotrace.schema import Frame, KeyDown
from demotrace.schema.events import Rect
from demotrace.spool import DataKey, Spool

DEMOTRACE = [str(Path(sys.executable).parent / "demotrace")]


class Windows:
    """Top-level windows made by the test on its own connection (destroyed at the end)."""

    def __init__(self, display: str) -> None:
        from Xlib import display as xdisplay

        self.d = xdisplay.Display(display)
        self.made: list = []  # type: ignore[type-arg]

    def make(self, cls: str, title: str, x: int, y: int, w: int, h: int, border: int = 0, mapped: bool = True):  # type: ignore[no-untyped-def]
        from Xlib import X

        scr = self.d.screen()
        win = scr.root.create_window(x, y, w, h, border, X.CopyFromParent, background_pixel=scr.white_pixel,
                                     override_redirect=True)
        win.set_wm_class(cls.lower(), cls)
        win.set_wm_name(title)
        if mapped:
            win.map()
        self.d.sync()
        self.made.append(win)
        return win

    def rename(self, win, title: str) -> None:  # type: ignore[no-untyped-def]
        """Set ``_NET_WM_NAME`` (UTF-8): what EWMH clients change when their title changes."""
        net, utf8 = self.d.intern_atom("_NET_WM_NAME"), self.d.intern_atom("UTF8_STRING")
        win.change_property(net, utf8, 8, title.encode())
        self.d.sync()

    def close(self) -> None:
        for w in self.made:
            with contextlib.suppress(Exception):  # destroyed by the test already
                w.destroy()
        self.d.sync()
        self.d.close()


@pytest.fixture
def wins(xvfb) -> Iterator[Windows]:  # type: ignore[no-untyped-def]
    w = Windows(xvfb.display)
    try:
        yield w
    finally:
        w.close()


@pytest.fixture
def cache(xvfb) -> Iterator[WindowCache]:  # type: ignore[no-untyped-def]
    dpy = open_display(xvfb.display)
    try:
        yield WindowCache(dpy)
    finally:
        dpy.close()


def _descs(view, wid: int) -> set[tuple[str | None, str | None, Rect]]:  # type: ignore[no-untyped-def]
    return {(w.app_id, w.title, w.bounds) for w in view.windows if w.window == wid}


def test_map_rename_move_and_quiet_intervals(wins: Windows, cache: WindowCache) -> None:
    """Each change is in the view of a frame captured after it; the interval in which it
    happened is masked with both states; quiet observations read no window at all."""
    notes = wins.make("XTerm", "notes", 10, 20, 100, 50)
    assert cache.observe() is True  # the map is seen
    t_notes = time.monotonic_ns()
    cache.observe()
    assert _descs(cache.view_at(t_notes), notes.id) == {("XTerm", "notes", Rect(10, 20, 100, 50))}

    reads = cache.reads
    t_quiet = time.monotonic_ns()
    assert cache.observe() is False and cache.observe() is False
    assert cache.reads == reads  # nothing changed: not one window read again
    assert _descs(cache.view_at(t_quiet), notes.id) == {("XTerm", "notes", Rect(10, 20, 100, 50))}

    # a denied app appears (border 2: outer size 80+4 x 60+4)
    vault = wins.make("KeePassXC", "vault", 300, 40, 80, 60, border=2)
    t_vault = time.monotonic_ns()  # a frame grabbed now shows it
    cache.observe()
    assert ("KeePassXC", "vault", Rect(300, 40, 84, 64)) in _descs(cache.view_at(t_vault), vault.id)

    # renamed to a title the policy denies (incognito)
    wins.rename(notes, "Chromium (Incognito)")
    t_ren = time.monotonic_ns()
    cache.observe()
    got = _descs(cache.view_at(t_ren), notes.id)
    assert ("XTerm", "Chromium (Incognito)", Rect(10, 20, 100, 50)) in got  # the new title …
    assert ("XTerm", "notes", Rect(10, 20, 100, 50)) in got  # … and the old: either may be on screen

    # moved twice between two observations: both positions are masked, and the old one; the
    # geometry comes with the events (no window is read again), a restack alone changes nothing
    reads = cache.reads
    from Xlib import X

    vault.configure(stack_mode=X.Below)
    wins.d.sync()
    assert cache.observe() is False
    vault.configure(x=500, y=200)
    wins.d.sync()
    vault.configure(x=700, y=300)
    wins.d.sync()
    t_move = time.monotonic_ns()
    cache.observe()
    got = {d[2] for d in _descs(cache.view_at(t_move), vault.id)}
    assert {Rect(300, 40, 84, 64), Rect(500, 200, 84, 64), Rect(700, 300, 84, 64)} <= got
    assert cache.reads == reads
    t_after = time.monotonic_ns()
    cache.observe()
    assert {d[2] for d in _descs(cache.view_at(t_after), vault.id)} == {Rect(700, 300, 84, 64)}

    # the cache's state equals a fresh snapshot of the server (the per-frame path)
    snap = visible_windows(cache.dpy)
    assert {(w.window, w.app_id, w.title, w.bounds) for w in snap.windows} == \
        {(w.window, w.app_id, w.title, w.bounds) for w in cache.view_at(t_after).windows}


def test_window_shown_and_hidden_between_observations(wins: Windows, cache: WindowCache) -> None:
    """A denied window mapped and unmapped again between two observations may be in a frame
    grabbed meanwhile: it is in that interval's view. One mapped and destroyed before it could be
    read makes the view unknown (the guard withholds such frames)."""
    cache.observe()
    flash = wins.make("KeePassXC", "flash", 40, 400, 120, 90)
    t_shown = time.monotonic_ns()
    flash.unmap()
    wins.d.sync()
    cache.observe()
    assert ("KeePassXC", "flash", Rect(40, 400, 120, 90)) in _descs(cache.view_at(t_shown), flash.id)
    t_later = time.monotonic_ns()
    cache.observe()
    assert _descs(cache.view_at(t_later), flash.id) == set()  # hidden now, and known to be

    gone = wins.make("KeePassXC", "gone", 40, 400, 120, 90)
    t_gone = time.monotonic_ns()
    gone.destroy()
    wins.d.sync()
    cache.observe()
    assert cache.view_at(t_gone).unknown
    t_ok = time.monotonic_ns()
    cache.observe()
    assert not cache.view_at(t_ok).unknown
    assert cache.view_at(1) is None  # before the cache existed: unknown, never a guess


def test_geometry_a_window_had_before_it_was_mapped_is_not_masked(wins: Windows, cache: WindowCache) -> None:
    """What xterm does at start (seen with a SubstructureNotify listener on the root): create
    its top-level at 0,0, resize it there, move it to its ``-geometry`` and only then map it.
    The 0,0 rectangle was never on screen, so a frame grabbed in that interval is not painted
    there (it painted an allowed window in CI); the mapped position, a move after the map and a
    geometry it had while mapped before an unmap still are."""
    from Xlib import X

    cache.observe()
    vault = wins.make("KeePassXC", "late", 0, 0, 1, 1, mapped=False)
    vault.configure(width=304, height=164)
    vault.configure(x=420, y=0)
    vault.map()
    wins.d.sync()
    vault.configure(x=420, y=300)  # moved while mapped: on screen at both places
    wins.d.sync()
    t_start = time.monotonic_ns()
    cache.observe()
    got = {d[2] for d in _descs(cache.view_at(t_start), vault.id)}
    assert {Rect(420, 0, 304, 164), Rect(420, 300, 304, 164)} <= got
    assert Rect(0, 0, 304, 164) not in got and Rect(0, 0, 1, 1) not in got, got

    vault.configure(x=10, y=10)  # mapped here, then hidden, moved while hidden, shown again
    wins.d.sync()
    vault.unmap()
    vault.configure(x=800, y=500)
    vault.map()
    vault.configure(stack_mode=X.Above)
    wins.d.sync()
    t_hide = time.monotonic_ns()
    cache.observe()
    got = {d[2] for d in _descs(cache.view_at(t_hide), vault.id)}
    assert {Rect(10, 10, 304, 164), Rect(800, 500, 304, 164)} <= got, got


def test_focus_on_a_denied_window_withholds_the_frame(xvfb, wins: Windows, dt_home: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Through CaptureGuard: focus moved to a denied window → a frame captured after it is not
    stored; focus back on an allowed window → stored, with the visible denied window painted
    black (same pixels as the per-frame snapshot path, DEMOTRACE_GUARD_WINDOW_CACHE=0, gives)."""
    from Xlib import X

    work = wins.make("XTerm", "work", 0, 0, 200, 100)
    vault = wins.make("KeePassXC", "vault", 220, 0, 100, 80)
    guard = CaptureGuard(Paths(dt_home), display=xvfb.display)
    monkeypatch.setenv("DEMOTRACE_GUARD_WINDOW_CACHE", "0")
    legacy = CaptureGuard(Paths(dt_home), display=xvfb.display)
    assert guard.window_cache and not legacy.window_cache
    try:
        guard.observe()
        w, h = 400, 200
        def frame() -> RawFrame:
            return RawFrame(pixels=bytes([200]) * (w * h * 4), width=w, height=h,
                            bounds=Rect(0, 0, w, h), monitor=-1, captured_ns=time.monotonic_ns())

        vault.set_input_focus(X.RevertToParent, X.CurrentTime)
        wins.d.sync()
        f1 = frame()
        guard.observe()
        assert guard.filter_frame(f1, guard.view_at(f1.captured_ns)) is None
        assert guard.stats.frames_withheld == 1

        work.set_input_focus(X.RevertToParent, X.CurrentTime)
        wins.d.sync()
        guard.observe()  # the interval of the focus change (either focus possible) ends here
        f2 = frame()
        guard.observe()
        out = guard.filter_frame(f2, guard.view_at(f2.captured_ns))
        assert out is not None
        px = np.frombuffer(bytes(out.pixels), np.uint8).reshape(h, w, 4)
        assert px[0:80, 220:320, :3].max() == 0  # the vault's rectangle, from make() above
        assert px[:, 320:, :3].min() == 200 and px[100:, :, :3].min() == 200 and px[:, :220, :3].min() == 200
        old = legacy.filter_frame(f2)  # the per-frame snapshot path paints the same pixels
        assert old is not None and bytes(old.pixels) == bytes(out.pixels)
    finally:
        guard.close()
        legacy.close()


# -- end to end: the recorder with the cache -------------------------------------------------

def _xterm(xvfb, cls: str, title: str, geom: str) -> subprocess.Popen[bytes]:  # type: ignore[no-untyped-def]
    return subprocess.Popen(["xterm", "-class", cls, "-T", title, "-geometry", geom, "-fa", "DejaVu Sans Mono",
                             "-fs", "12", "-e", "cat"], env=xvfb.env)


def _geometry(xvfb, title: str) -> tuple[int, int, int, int]:  # type: ignore[no-untyped-def]
    """(x, y, w, h) of the visible window named ``title`` (border included), from xdotool."""
    deadline = time.monotonic() + 15
    while True:
        p = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", f"^{title}$", "getwindowgeometry",
                            "--shell"], env=xvfb.env, capture_output=True, text=True, check=False)
        if "WIDTH=" in p.stdout:
            v = dict(line.split("=", 1) for line in p.stdout.split() if "=" in line)
            return int(v["X"]), int(v["Y"]), int(v["WIDTH"]), int(v["HEIGHT"])
        assert time.monotonic() < deadline, f"window {title!r} did not appear"
        time.sleep(0.05)


def test_recorder_masks_a_denied_window_from_the_next_frame_on(xvfb, dt_home: Path) -> None:  # type: ignore[no-untyped-def]
    """`demotrace record` (window cache on, the default) with an allowed xterm focused; a
    KeePassXC-class xterm appears beside it mid-recording and an allowed one is renamed to an
    incognito title. Every frame captured after the changes (from the first key typed after
    them on) is black in those windows' rectangles (their pixels are white when not masked),
    and the allowed window is not."""
    import signal

    from demotrace.errors import ControlError
    from demotrace.recorder.control import call

    paths = Paths(dt_home)
    record_consent(paths, load_policy(paths))
    work = _xterm(xvfb, "XTerm", "cachework", "40x10+0+0")
    other = _xterm(xvfb, "XTerm", "cacheother", "30x8+0+400")
    vault = rec = None
    env = dict(xvfb.env, COLUMNS="200")
    try:
        g_work, g_other = _geometry(xvfb, "cachework"), _geometry(xvfb, "cacheother")
        subprocess.run(["xdotool", "search", "--onlyvisible", "--name", "^cachework$", "windowfocus", "--sync"], env=env,
                       check=True, timeout=30)
        rec = subprocess.Popen([*DEMOTRACE, "record", "--home", str(dt_home), "--no-indicator"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while True:
            assert rec.poll() is None, rec.communicate()
            try:
                if call(paths.control_socket, "status", timeout=3).get("state") == "recording":
                    break
            except ControlError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.05)
        subprocess.run(["xdotool", "type", "--delay", "40", "before\n"], env=env, check=True, timeout=30)
        time.sleep(0.8)  # a settle frame without the vault
        vault = _xterm(xvfb, "KeePassXC", "cachevault", "30x8+420+0")
        g_vault = _geometry(xvfb, "cachevault")  # returns once it is viewable
        subprocess.run(["xdotool", "search", "--name", "^cacheother$", "set_window", "--name",
                        "Chromium (Incognito)"], env=env, check=True, timeout=30)
        time.sleep(0.05)
        subprocess.run(["xdotool", "type", "--delay", "40", "zq\n"], env=env, check=True, timeout=30)
        time.sleep(1.0)  # the settle frame ≈0.5 s after the last key
        rec.send_signal(signal.SIGINT)
        _, err = rec.communicate(timeout=60)
        assert rec.returncode == 0, err
    finally:
        if rec is not None and rec.poll() is None:
            rec.kill()
        for p in (work, other, vault):
            if p is not None:
                p.kill()
                p.wait()

    spool = Spool(paths.spool, DataKey.load(paths.key_file))
    (sid,) = spool.session_ids()
    with spool.open(sid) as r:
        evs = list(r.iter_events())
        frames = [(e, Image.open(io.BytesIO(r.read_blob(e.blob))).convert("RGB")) for e in evs if isinstance(e, Frame)]
    t_z = next(e.t_ns for e in evs if isinstance(e, KeyDown) and e.key == "z")  # typed after both changes

    def region(img: Image.Image, g: tuple[int, int, int, int], s: float, inset: int = 3) -> np.ndarray:
        x, y, w, h = g
        return np.asarray(img.crop((int(x * s) + inset, int(y * s) + inset, int((x + w) * s) - inset,
                                    int((y + h) * s) - inset)))

    before = [(f, img) for f, img in frames if f.captured_t_ns < t_z and f.reason == "settle"]
    after = [(f, img) for f, img in frames if f.captured_t_ns >= t_z]
    assert before and after, [(f.reason, f.captured_t_ns, t_z) for f, _ in frames]
    # before the changes the other xterm was visible and not masked (so "black" below is the mask)
    assert float(region(before[0][1], g_other, before[0][0].scale).mean()) > 100
    for f, img in after:
        assert int(region(img, g_vault, f.scale).max()) <= 12, f"vault visible in frame {f.seq} ({f.reason})"
        assert int(region(img, g_other, f.scale).max()) <= 12, f"incognito window visible in frame {f.seq}"
        assert float(region(img, g_work, f.scale).mean()) > 100, f"allowed window painted in frame {f.seq}"


def test_cache_state_stays_flat_over_many_windows(xvfb, wins: Windows) -> None:  # type: ignore[no-untyped-def]
    """60 windows created, shown and destroyed one after the other: the cache forgets each (its
    window table and owner map are back to their size before), and its history keeps only the
    last ``history_ns`` of intervals."""
    dpy = open_display(xvfb.display)
    try:
        cache = WindowCache(dpy, history_ns=200_000_000)  # 0.2 s of history
        cache.observe()
        tops, owners = len(cache._tops), len(cache._owner)
        for i in range(60):
            w = wins.make("KeePassXC", f"w{i}", 10 + i, 10, 30, 30)
            cache.observe()
            w.destroy()
            wins.d.sync()
            cache.observe()
        time.sleep(0.25)
        cache.observe()
        cache.observe()
        assert (len(cache._tops), len(cache._owner)) == (tops, owners)
        assert len(cache._records) <= 3  # older than 0.2 s: dropped (the newest always kept)
        assert cache.view_at(time.monotonic_ns() - 10_000_000_000) is None  # beyond the history: unknown
    finally:
        dpy.close()
