"""Opening X connections (capture/_xorg_window.py ``open_display``) on real Xvfb servers:
no authority file needed for an Xvfb without access control, the process environment never
changed, and a refused connection leaves no socket behind for the garbage collector."""

from __future__ import annotations

import gc
import os
import shutil
import struct
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from Xlib import error as xerror

from demotrace.capture._xorg_window import open_display

pytestmark = pytest.mark.x11


def _socket_fds() -> set[str]:
    """This process's open socket descriptors, read from /proc (independent of python-xlib)."""
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                out.add(fd)
        except OSError:
            pass  # the descriptor listdir itself used
    return out


@pytest.mark.parametrize("xauthority", [None, "missing-file"])
def test_connects_without_an_authority_file_and_leaves_the_environment_alone(
        xvfb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, xauthority: str | None) -> None:  # type: ignore[no-untyped-def]
    """A fresh account: no ~/.Xauthority and no (or a missing) $XAUTHORITY. The session Xvfb
    has no access control, so the connection works (its root is the fixture's 1280x800), and
    the environment (what child processes inherit) is exactly what it was."""
    monkeypatch.setenv("HOME", str(tmp_path))  # holds no .Xauthority
    if xauthority is None:
        monkeypatch.delenv("XAUTHORITY", raising=False)
    else:
        monkeypatch.setenv("XAUTHORITY", str(tmp_path / xauthority))
    before = dict(os.environ)
    dpy = open_display(xvfb.display)
    try:
        scr = dpy.screen()
        assert (scr.width_in_pixels, scr.height_in_pixels) == (1280, 800)
    finally:
        dpy.close()
    assert dict(os.environ) == before


def _xauth_entry(cookie: bytes) -> bytes:
    """One Xauthority record (Xau format: big-endian lengths): family FamilyLocal (256),
    address, display number, auth name MIT-MAGIC-COOKIE-1, ``cookie``."""
    def field(b: bytes) -> bytes:
        return struct.pack(">H", len(b)) + b
    return struct.pack(">H", 256) + field(b"localhost") + field(b"0") + field(b"MIT-MAGIC-COOKIE-1") + field(cookie)


@pytest.fixture
def locked_xvfb(tmp_path: Path) -> Iterator[str]:
    """An Xvfb started with ``-auth`` (access control on: a client without the cookie is
    refused after connecting). Yields its display name."""
    exe = shutil.which("Xvfb")
    assert exe is not None, "Xvfb not installed (scripts/bootstrap.sh installs it)"
    auth = tmp_path / "server-auth"
    auth.write_bytes(_xauth_entry(bytes(range(16))))
    r, w = os.pipe()
    proc = subprocess.Popen([exe, "-displayfd", str(w), "-auth", str(auth), "-screen", "0", "320x200x24",
                             "-nolisten", "tcp"], pass_fds=(w,), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    os.close(w)
    try:
        with os.fdopen(r, "rb") as f:
            number = f.readline().strip().decode()  # Xvfb writes it once it accepts clients
        assert number.isdigit(), f"Xvfb -auth did not start (exit {proc.poll()})"
        yield f":{number}"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _assert_fails_without_leaking(display: str) -> None:
    """``open_display(display)`` raises DisplayConnectionError three times; the socket count
    (/proc/self/fd) is unchanged right after, with the garbage collector off, and no
    ResourceWarning (an unclosed socket finalised) fires, then or at the next collection."""
    gc.collect()
    gc.disable()  # sockets must be closed by open_display, not found later by the collector
    try:
        before = _socket_fds()
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always", ResourceWarning)
            for _ in range(3):
                with pytest.raises(xerror.DisplayConnectionError):
                    open_display(display)
            assert _socket_fds() == before
            gc.collect()
        assert not [w for w in seen if issubclass(w.category, ResourceWarning)], [str(w.message) for w in seen]
    finally:
        gc.enable()


def test_a_refused_connection_leaves_no_socket_open(locked_xvfb: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the cookie the server refuses the connection after the socket connected
    (python-xlib leaves that socket to the collector): nothing stays open."""
    monkeypatch.setenv("XAUTHORITY", str(tmp_path / "no-such-file"))
    _assert_fails_without_leaking(locked_xvfb)


def test_an_unserved_display_leaves_no_socket_open() -> None:
    """A display number no server listens on: the Unix-socket attempt and python-xlib's TCP
    fallback both fail; neither socket stays open."""
    taken = {int(p.name[1:]) for p in Path("/tmp/.X11-unix").glob("X*") if p.name[1:].isdigit()}
    free = next(n for n in range(900, 1000) if n not in taken)
    _assert_fails_without_leaking(f":{free}")


def test_grabs_after_stop_leave_no_connection_open(xvfb) -> None:  # type: ignore[no-untyped-def]
    """The recorder grabs its last frames after stopping the backend: those grabs still return
    the screen (1280x800, as the fixture started it) and close what they opened — the process
    holds exactly the sockets it held before the backend started."""
    from helpers_x11 import Collector

    from demotrace.capture.x11 import X11Backend

    before = _socket_fds()
    backend = X11Backend(xvfb.display)
    backend.start(Collector())
    try:
        assert (backend.grab().width, backend.grab().height) == (1280, 800)
    finally:
        backend.stop()
    for _ in range(3):
        frame = backend.grab()
        assert (frame.width, frame.height) == (1280, 800)
    assert _socket_fds() == before  # nothing left for a second stop() (or the collector) to close


def test_a_tracker_stopped_without_waiting_closes_its_connection_itself(xvfb) -> None:  # type: ignore[no-untyped-def]
    """``stop(timeout=0)`` gives up on joining the window-tracking thread at once (as a stop
    under heavy load does after its 1 s): the thread then closes its X connection and pipe when
    it ends, so the socket count returns to what it was before the tracker (polled)."""
    from helpers_x11 import wait_for

    from demotrace.capture._xorg_window import WindowTracker

    before = _socket_fds()
    tracker = WindowTracker(xvfb.display, lambda *a: None, lambda *a: None, lambda: None)
    tracker.start()
    assert len(_socket_fds() - before) == 1  # its own connection
    tracker.stop(timeout=0)
    wait_for(lambda: _socket_fds() == before, 5, "the tracker thread to close its connection")
    # the thread closes its connection as its last step, then returns: under load the count can
    # be back before the thread has ended (a fresh-clone run saw alive() still true), so poll
    wait_for(lambda: not tracker.alive(), 5, "the tracker thread to end")
