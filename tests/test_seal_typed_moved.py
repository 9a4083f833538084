"""A typed secret stays covered after its window moves (issue #4, bug bash 4: a terminal moved
after an e-mail was typed into it kept the black box at its old place, and the address was
readable in every later sealed frame).

Real ``demotrace record`` at the default frame scale (0.5) on the ``xvfb`` fixture, a real xterm
(DejaVu Sans Mono 16 pt, large enough for the test's own OCR to read it in the raw frame)
running ``cat``: a synthetic card number is typed, the window is moved with ``xdotool
windowmove`` and a click elsewhere makes the recorder grab frames there. Checked against the
window geometry read with xwininfo after the move (not from the recording): in the last sealed
frame the xterm's new region is black, and the test's tesseract run reads the card in no
sealed frame — while it does read it in the last raw frame (so the check could fail).
"""

from __future__ import annotations

import io
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from helpers_x11 import (
    geometry,
    killed_after,
    only_session,
    recorder_status,
    recording,
    search_window,
    wait_for,
)
from PIL import Image

from demotrace.privacy.bundle import open_bundle
from demotrace.privacy.policy import default_policy
from demotrace.privacy.seal import seal_session
from demotrace.schema import Frame

CARD = "4929 7314 5028 2736"  # synthetic, Luhn-valid (doubled-digit sum 70)


def _digits_read(img: Image.Image) -> str:
    """Digits the test's own OCR reads: tesseract CLI, grey, x2 LANCZOS, block mode."""
    g = img.convert("L")
    g = g.resize((g.width * 2, g.height * 2), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    g.save(buf, format="PNG")
    p = subprocess.run(["tesseract", "stdin", "stdout", "--psm", "6"], input=buf.getvalue(), capture_output=True,
                       timeout=120, check=False)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    return re.sub(r"\D", "", p.stdout.decode(errors="replace"))


def _card_readable(img: Image.Image) -> bool:
    """Any 8 consecutive digits of the card (half a card number is already a leak)."""
    d, text = re.sub(r"\D", "", CARD), _digits_read(img)
    return any(d[i:i + 8] in text for i in range(len(d) - 7))


@pytest.mark.x11
def test_typed_card_covered_after_the_window_moves(xvfb, dt_home: Path) -> None:  # type: ignore[no-untyped-def]
    env = xvfb.env
    term = subprocess.Popen(["xterm", "-T", "movedterm", "-geometry", "40x6+0+0", "-fa", "DejaVu Sans Mono",
                             "-fs", "16", "-e", "cat"], env=env)
    with killed_after(term):
        wid = search_window(env, "movedterm", timeout=15)
        with recording(env, dt_home, "--no-indicator"):  # default frame scale 0.5
            subprocess.run(["xdotool", "windowfocus", "--sync", str(wid)], env=env, check=True, timeout=30)
            subprocess.run(["xdotool", "type", "--delay", "40", f"pay {CARD}\n"], env=env, check=True, timeout=60)
            time.sleep(1.0)
            subprocess.run(["xdotool", "windowmove", "--sync", str(wid), "560", "420"], env=env, check=True, timeout=30)
            moved = geometry(env, wid)
            assert moved[:2] == (560, 420), moved
            before = recorder_status(dt_home)["frames_stored"]
            # a click on the empty root far from both positions: the recorder grabs a frame
            subprocess.run(["xdotool", "mousemove", "--sync", "300", "700", "click", "1"], env=env, check=True,
                           timeout=30)
            wait_for(lambda: recorder_status(dt_home)["frames_stored"] > before, 10, what="a frame after the move")
            time.sleep(1.0)  # and the settle frame after it
    paths, spool, sid = only_session(dt_home)
    with spool.open(sid) as r:
        raw = [e for e in r.iter_events() if isinstance(e, Frame)]
        last_raw = Image.open(io.BytesIO(r.read_blob(raw[-1].blob)))
    assert raw[-1].scale == 0.5
    assert _card_readable(last_raw), "the test's OCR cannot read the card even in the raw frame after the move"

    seal_session(paths, spool, sid, default_policy())
    with open_bundle(paths, sid) as b:
        sealed = [(e, Image.open(io.BytesIO(b.read_blob(e.blob))).convert("L")) for e in b.iter_events()
                  if isinstance(e, Frame)]
    assert sealed
    f, img = sealed[-1]
    x, y, w, h = moved
    s = f.scale
    region = np.asarray(img.crop((int(x * s) + 1, int(y * s) + 1, int((x + w) * s) - 1, int((y + h) * s) - 1)))
    assert int(region.max()) <= 12, f"moved xterm not black in the last sealed frame (max {region.max()})"
    leaks = [e.seq for e, im in sealed if _card_readable(im)]
    assert leaks == [], f"card readable in sealed frames {leaks}"
