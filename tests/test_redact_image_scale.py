"""Text that is only DISPLAYED (never typed) in a terminal, recorded by a real `demotrace record`
at its default frame scale (0.5), does not survive `demotrace seal`.

Two real xterms on the `xvfb` fixture show the same synthetic values with `cat` (nothing is
typed in them, so the seal's typed-secret rule plays no part):

- ``bigterm``: DejaVu Sans Mono 16 pt (22 px at the server's 100 dpi, 11 px in the stored
  frame). The test's own OCR — the ``tesseract`` command on an x2 LANCZOS upscale, block mode,
  not the sealing code's engine — reads every value in the raw frame and none in any sealed
  frame.
- ``bitmapterm``: xterm's default bitmap font (6x13 cells, 3x6.5 px in the stored frame).
  No tesseract setting reads it at that size, so OCR cannot be the check: the text rows that
  hold the values, located from the terminal's geometry (xwininfo) and its cell size, must
  hold glyphs in the raw frame and be solid dark in every sealed frame that shows them.
"""

from __future__ import annotations

import io
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from helpers_x11 import seal_by_cli
from PIL import Image

from demotrace.errors import ControlError
from demotrace.paths import Paths
from demotrace.recorder.control import call
from demotrace.schema.events import Frame
from demotrace.spool import DataKey, Spool

#: Synthetic values (Mastercard's published test number, an RFC 2606 e-mail domain, a made-up
#: token in GitHub's ``ghp_`` format) and the probes the test OCR looks for (lower case, no
#: spaces): the whole card number and e-mail, and two fragments of the 40-character key (OCR of
#: a 40-character token at 11 px confuses a few of O/0, J/I, S/5 even on the raw frame).
LINES = ["card 5555 5555 5555 4444", "mail ana.roe@example.org", "key ghp_Q7w3E9r1T5y8U2i4O6p0A3s5D7f9G1h3J5k7"]
PROBES = {"card": ("5555555555554444",), "email": ("ana.roe@example.org",),
          "key": ("ghp_q7w3e9r1", "p0a3s5d7f9g1")}


def wait_for(pred, timeout: float, interval: float, what: str):  # type: ignore[no-untyped-def]
    """Poll ``pred`` until truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (got := pred()):
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(interval)
    return got


def _oracle(img: Image.Image) -> str:
    """Independent OCR: grey, LANCZOS x2, the ``tesseract`` command in block mode (psm 6);
    lower case, spaces and line breaks removed."""
    g = img.convert("L")
    g = g.resize((g.width * 2, g.height * 2), Image.Resampling.LANCZOS)
    with tempfile.NamedTemporaryFile(suffix=".png") as f:
        g.save(f.name)
        out = subprocess.run(["tesseract", f.name, "-", "--psm", "6"], capture_output=True, text=True, timeout=120,
                             check=False)
    assert out.returncode == 0, out.stderr
    return re.sub(r"\s+", "", out.stdout).lower()


def _found(text: str) -> set[str]:
    return {k for k, ps in PROBES.items() if any(p in text for p in ps)}


def _geometry(env: dict[str, str], title: str) -> tuple[int, int, int, int]:
    """(x, y, width, height) of the window named ``title``, desktop pixels, from xwininfo."""
    def find() -> str:
        p = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", f"^{title}$"], env=env, capture_output=True, text=True,
                           check=False)
        return p.stdout.split()[0] if p.stdout.split() else ""
    def mapped() -> tuple[int, int, int, int] | None:
        wid = find()
        if not wid:
            return None
        out = subprocess.run(["xwininfo", "-id", wid], env=env, capture_output=True, text=True, check=False).stdout
        g = {k: int(v) for k, v in re.findall(r"(Absolute upper-left [XY]|Width|Height):\s+(-?\d+)", out)}
        if "IsViewable" not in out or g.get("Width", 1) <= 1:
            return None
        return g["Absolute upper-left X"], g["Absolute upper-left Y"], g["Width"], g["Height"]
    return wait_for(mapped, 15, 0.05, what=f"window {title} mapped")


@pytest.mark.x11
def test_displayed_values_do_not_survive_sealing_at_default_scale(xvfb, dt_home: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    exe = str(Path(sys.executable).parent / "demotrace")
    xauth = dt_home.parent / "Xauthority"
    xauth.touch()
    env = dict(xvfb.env, XAUTHORITY=str(xauth), DEMOTRACE_HOME=str(dt_home))
    planted = tmp_path / "planted.txt"
    planted.write_text("\n".join(LINES) + "\n")
    go = tmp_path / "GO"
    show = f"while [ ! -e {go} ]; do sleep 0.05; done; cat {planted}; exec sleep 600"
    rows = 6  # the bitmap terminal's rows (height = rows x cell + 2 x 2 px inner border)
    terms = [
        subprocess.Popen(["xterm", "-T", "bitmapterm", "-geometry", f"80x{rows}+0+0", "-e", "sh", "-c", show], env=env),
        subprocess.Popen(["xterm", "-T", "bigterm", "-fa", "DejaVu Sans Mono", "-fs", "16", "-geometry", "48x5+0+300",
                          "-e", "sh", "-c", show], env=env),
    ]
    rec = None
    try:
        bx, by, bw, bh = _geometry(env, "bitmapterm")
        gx, gy, gw, gh = _geometry(env, "bigterm")
        cw, ch = (bw - 4) / 80, (bh - 4) / rows
        assert (cw, ch) == (6, 13), (bw, bh)  # xterm's default font: 6x13 cells
        subprocess.run([exe, "enroll", "--yes"], env=env, check=True, capture_output=True, timeout=60)
        rec = subprocess.Popen([exe, "record", "--no-indicator"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        sock = dt_home / "run" / "control.sock"

        def recording() -> bool:
            assert rec is not None and rec.poll() is None, rec.communicate() if rec else None
            try:
                return call(sock, "status", timeout=2).get("state") == "recording"
            except ControlError:
                return False
        wait_for(recording, 30, 0.05, what="recorder started")
        go.touch()  # both terminals now print the values; nothing is typed

        def shown() -> bool:  # the bitmap terminal's first text row holds dark glyph pixels
            import mss

            with mss.MSS(display=xvfb.display) as s:
                shot = s.grab({"left": bx + 2, "top": by + 2, "width": int(len(LINES[0]) * cw), "height": int(ch)})
            return bool(np.asarray(Image.frombytes("RGB", shot.size, shot.bgra, "raw", "BGRX")).min() < 100)
        wait_for(shown, 15, 0.05, what="values printed")
        time.sleep(0.3)  # let the second terminal finish drawing, too (the stop frame grabs the screen)
        rec.send_signal(signal.SIGINT)
        _out, err = rec.communicate(timeout=60)
        assert rec.returncode == 0, err
    finally:
        if rec is not None and rec.poll() is None:
            rec.kill()
        for t in terms:
            t.kill()
            t.wait()

    paths = Paths(dt_home)
    spool = Spool(paths.spool, DataKey.load(paths.key_file))
    (sid,) = spool.session_ids()
    with spool.open(sid) as r:
        raw = [(e, Image.open(io.BytesIO(r.read_blob(e.blob))).convert("RGB")) for e in r.iter_events()
               if isinstance(e, Frame)]
    assert raw and all(e.scale == 0.5 for e, _ in raw)
    s = 0.5
    # text rows of the bitmap terminal holding the values, in frame pixels (cell edges rounded
    # inwards by one pixel)
    strips = [(int((bx + 2) * s) + 1, int((by + 2 + i * ch) * s) + 1,
               int((bx + 2 + len(line) * cw) * s) - 1, int((by + 2 + (i + 1) * ch) * s) - 1)
              for i, line in enumerate(LINES)]
    big = (int(gx * s), int(gy * s), int((gx + gw) * s), int((gy + gh) * s))

    def has_glyphs(img: Image.Image, box: tuple[int, int, int, int]) -> bool:
        a = np.asarray(img.convert("L").crop(box))
        return bool(a.min() < 100 and a.max() > 200)

    showing = [(e, img) for e, img in raw if all(has_glyphs(img, b) for b in strips)]
    assert showing, "no raw frame shows the printed values"
    # the test's OCR reads every value in the raw frame of the 16 pt terminal (so it can fail)
    assert _found(_oracle(showing[-1][1].crop(big))) == set(PROBES), _oracle(showing[-1][1].crop(big))

    sealed = seal_by_cli(env, paths, sid)
    # nothing dropped (the image layer painted, it did not discard): the same frames in order
    assert [(e.reason, e.captured_t_ns) for e, _ in sealed] == [(e.reason, e.captured_t_ns) for e, _ in raw]
    for (e, img), (_, raw_img) in zip(sealed, raw):
        if all(has_glyphs(raw_img, b) for b in strips):  # this frame showed the values
            for box in strips:
                assert np.asarray(img.convert("L").crop(box)).max() <= 60, ("bitmap text row not painted", e.reason, box)
        text = _oracle(img)
        assert _found(text) == set(), (e.reason, text)
