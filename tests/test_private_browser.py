"""A browser started in private mode is never recorded (bug bash 4: Debian's Chromium started
with ``--incognito`` titles its windows like normal ones — "… - Chromium" — so the built-in
title patterns missed them, and keys, title and frames were stored).

Real Debian ``chromium --incognito`` and a real xterm on the ``xvfb`` fixture, a real
``demotrace record``: keys typed into the incognito window must not reach the raw spool, nor
its focus change (title / app); a ``private_gap`` marker names the reason; and in every stored
frame the incognito window's region (from xwininfo, not from the recording) is black while
the xterm's is not.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from helpers_x11 import geometry, killed_after, only_session, recording, search_window
from PIL import Image

from demotrace.schema import FocusChange, Frame, KeyDown, Marker


def _chromium_window(env: dict[str, str], timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["xdotool", "search", "--onlyvisible", "--class", "chromium"], env=env,
                             capture_output=True, text=True).stdout.split()
        for wid in out:
            g = subprocess.run(["xwininfo", "-id", wid], env=env, capture_output=True, text=True).stdout
            if "Width: 1" not in g:  # skip 1x1 helper windows
                return int(wid)
        time.sleep(0.2)
    raise AssertionError("the incognito Chromium window did not appear")


@pytest.mark.x11
def test_incognito_chromium_is_never_recorded(xvfb, dt_home: Path) -> None:  # type: ignore[no-untyped-def]
    env = xvfb.env
    exe = shutil.which("chromium")
    assert exe, "Debian's chromium is not installed (scripts/bootstrap.sh installs it)"
    profile = tempfile.mkdtemp(prefix="incog-")
    page = Path(profile) / "notes.html"
    page.write_text("<html><head><title>Quarterly notes</title></head><body style='font-size:40px'>"
                    "private page text</body></html>", "utf-8")
    browser = subprocess.Popen([exe, "--incognito", "--no-sandbox", "--no-first-run", "--disable-gpu",
                                f"--user-data-dir={profile}", "--window-position=640,80", "--window-size=560,420",
                                page.as_uri()], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    term = subprocess.Popen(["xterm", "-T", "plainwork", "-geometry", "50x10+0+0", "-e", "cat"], env=env)
    try:
        with killed_after(browser, term):
            twin = search_window(env, "plainwork", timeout=15)
            cwin = _chromium_window(env)
            # the title is the page's, like any normal window's: the title patterns cannot tell
            deadline, name = time.monotonic() + 30, ""
            while "Quarterly notes" not in name and time.monotonic() < deadline:
                name = subprocess.run(["xdotool", "getwindowname", str(cwin)], env=env, capture_output=True,
                                      text=True).stdout
                time.sleep(0.2)
            assert "incognito" not in name.lower() and "Quarterly notes" in name, name
            cgeo, tgeo = geometry(env, cwin), geometry(env, twin)
            with recording(env, dt_home, "--no-indicator"):
                for wid, text in ((twin, "hello "), (cwin, "secretive words"), (twin, "bye ")):
                    subprocess.run(["xdotool", "windowfocus", "--sync", str(wid)], env=env, check=True, timeout=30)
                    time.sleep(0.5)
                    subprocess.run(["xdotool", "type", "--delay", "30", text], env=env, check=True, timeout=30)
                    time.sleep(0.5)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    _paths, spool, sid = only_session(dt_home)
    with spool.open(sid) as r:
        events = list(r.iter_events())
        frames = [(e, np.asarray(Image.open(io.BytesIO(r.read_blob(e.blob))).convert("L")))
                  for e in events if isinstance(e, Frame)]
    typed = "".join(e.text or "" for e in events if isinstance(e, KeyDown))
    assert "hello" in typed and "bye" in typed, typed  # the xterm's keys are recorded
    assert "secretive" not in typed and "words" not in typed, typed
    assert not any(isinstance(e, FocusChange) and (e.app_id or "").lower() == "chromium" for e in events)
    gaps = [e for e in events if isinstance(e, Marker) and e.name == "private_gap"]
    # one gap per stretch with the incognito window focused (it may also have had focus when
    # recording started: Chromium was the last window to appear)
    assert gaps and {g.reason for g in gaps} == {"deny:private_browsing:process"}, gaps
    assert frames
    for f, a in frames:
        s = f.scale

        def crop(g: tuple[int, int, int, int]) -> np.ndarray:
            x, y, w, h = g
            return a[int(y * s) + 1:int((y + h) * s) - 1, int(x * s) + 1:int((x + w) * s) - 1]

        assert int(crop(cgeo).max()) <= 12, f"incognito window visible in frame {f.seq} ({f.reason})"
        assert int(crop(tgeo).max()) > 200, f"xterm painted in frame {f.seq}"
