"""Title bars of windows whose title needed redaction are painted in sealed frames (issue #4,
bug bash: an xterm titled with a GitHub token showed "depl…en gh…enValue…0abc" between the
OCR boxes on openbox's title bar at the default frame scale 0.5).

A real openbox on its own Xvfb (a reparenting WM would change what other tests see on the
session-wide one), two real xterms side by side — one titled with a synthetic token, one with
a plain title — and a real ``demotrace record``; the session is sealed and every sealed frame
is checked against window geometry read with xwininfo (not from the recording).
"""

from __future__ import annotations

import io
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers_x11 import (
    geometry,
    recorder_status,
    start_recorder,
    stop_recorder,
    wait_for,
    xdotool,
    xterm,
    xvfb_with_openbox,
)
from PIL import Image

from demotrace.paths import Paths
from demotrace.privacy import load_policy
from demotrace.privacy.bundle import open_bundle
from demotrace.privacy.redact_image import TITLE_BAR_PX
from demotrace.privacy.seal import seal_session
from demotrace.schema import FocusChange, Frame
from demotrace.spool import DataKey, Spool

TOKEN = "ghp_R4nd0mT0kenValue1234567890abcdEFGH"  # synthetic, GitHub's classic PAT shape
TITLE = f"deploy token {TOKEN}"
PLAIN = "worklog notes"


@pytest.fixture(scope="module")
def wm_xvfb() -> Iterator[Any]:
    with xvfb_with_openbox(1280, 800) as server:
        yield server


def _oracle(img: Image.Image) -> str:
    """Independent OCR: grey, LANCZOS x8, tesseract --psm 6 (not the code's OCR path), spaces
    removed, lower-case."""
    g = img.convert("L")
    g = g.resize((g.width * 8, g.height * 8), Image.Resampling.LANCZOS)
    with tempfile.NamedTemporaryFile(suffix=".png") as f:
        g.save(f.name)
        out = subprocess.run(["tesseract", f.name, "-", "--psm", "6"], capture_output=True, text=True, timeout=120,
                             check=False)
    return out.stdout.replace(" ", "").lower()


def test_token_title_bar_painted_in_every_sealed_frame(wm_xvfb: Any, dt_home: Path) -> None:
    xauth = dt_home.parent / "Xauthority"
    xauth.touch()
    env = dict(wm_xvfb.env, XAUTHORITY=str(xauth), DEMOTRACE_ATSPI="0", COLUMNS="200")
    with xterm(env, TITLE, "70x12+660+40") as tok, xterm(env, PLAIN, "70x12+20+300") as plain:
        xdotool(env, "windowactivate", "--sync", str(plain.wid))  # the token window is visible, unfocused
        f_tok, c_tok = geometry(env, tok.wid, frame=True), geometry(env, tok.wid)
        f_plain, c_plain = geometry(env, plain.wid, frame=True), geometry(env, plain.wid)
        rec = start_recorder(env, dt_home, "--no-indicator", enroll=True)
        try:  # the session-start frame is grabbed while the plain window has focus
            wait_for(lambda: recorder_status(dt_home)["frames_encoded"] >= 1, 10, what="the session-start frame")
            for w in (tok, plain, tok, plain):
                xdotool(env, "windowactivate", "--sync", str(w.wid))
                xdotool(env, "mousemove", "--sync", str(200 if w is plain else 900), "200" if w is tok else "400",
                        "click", "1")
        finally:
            stop_recorder(rec)
    # openbox decorates: the title bar is the frame's top down to the client window, and the
    # strip the seal paints reaches at least that far
    bar = c_tok[1] - f_tok[1]
    assert 10 <= bar <= TITLE_BAR_PX, (f_tok, c_tok)
    assert c_plain[1] - f_plain[1] == bar

    paths = Paths(dt_home)
    spool = Spool(paths.spool, DataKey.load_or_create(paths.key_file))
    (sid,) = spool.session_ids()
    with spool.open(sid) as r:
        raw = list(r.iter_events())
        raw_frames = [(e, Image.open(io.BytesIO(r.read_blob(e.blob))).convert("RGB")) for e in raw if isinstance(e, Frame)]
    focus = [e for e in raw if isinstance(e, FocusChange)]
    assert [e.title for e in focus][:2] == [PLAIN, TITLE], [e.title for e in focus]
    assert raw_frames and raw_frames[0][0].captured_t_ns < focus[1].t_ns  # a frame before the token window's focus

    def strip(img: Image.Image, f: Frame, g: tuple[int, int, int, int]) -> np.ndarray:
        s = f.scale
        x, y, w, _ = g
        return np.asarray(img.crop((int(x * s) + 1, int(y * s) + 1, int((x + w) * s) - 1, int((y + bar) * s))).convert("L"))

    for f, img in raw_frames:  # the raw title bar shows its text (so the check below can fail)
        assert strip(img, f, f_tok).std() > 10, f.seq

    seal_session(paths, spool, sid, load_policy(paths))
    b = open_bundle(paths, sid)
    evs = list(b.iter_events())
    sealed = [(e, Image.open(io.BytesIO(b.read_blob(e.blob))).convert("RGB")) for e in evs if isinstance(e, Frame)]
    assert len(sealed) == len(raw_frames)
    assert all(TOKEN not in (e.title or "") for e in evs if isinstance(e, FocusChange))
    assert any(e.title == PLAIN for e in evs if isinstance(e, FocusChange))
    for f, img in sealed:
        a = strip(img, f, f_tok)
        assert int(a.max()) <= 12, f"token title bar not black in sealed frame {f.seq} (max {a.max()})"
        p = strip(img, f, f_plain)
        assert float(p.mean()) > 60 and p.std() > 10, f"plain title bar painted in frame {f.seq}"
        s = f.scale
        x, y, w, _ = f_tok
        read = _oracle(img.crop((max(0, int(x * s) - 8), max(0, int(y * s) - 8), int((x + w) * s), int((y + bar) * s) + 4)))
        for part in ("deploy", "token", "ghp", "r4nd0m", "value", "abcdefgh", "1234"):
            assert part not in read, (part, read, f.seq)
