"""E-mail addresses only DISPLAYED (never typed) in real xterms drawing DejaVu Sans Mono at 11,
12 and 14 pt, recorded by a real `demotrace record` at its default frame scale (0.5), do not
survive `demotrace seal` (bug bash 4, finding F1, issue #4).

At 100 dpi those terminals draw 15.3 / 16.7 / 19.4 px glyphs in 19 / 20 / 24 px rows: 9.5-12 px
rows in the stored frame, taller than the rows painted whole as small text. Tesseract reads the
addresses' "@" as ``g`` / ``G`` / ``p`` and puts a space after the local part's dot
(``jane. roegexanple.net``), so no e-mail recogniser matched and the addresses stayed readable in
every sealed frame before the fix (redact_image.OCR_EMAIL_LENIENT and the block-mode read,
FrameRedactor.block_read).

The check is the test's own OCR — the ``tesseract`` command on x2 and x4 LANCZOS upscales of the
frame, block mode, not the sealing code's engine — looking for each address's local part
(``ida.brandt7``: the "@" is never read, so the whole address cannot be the probe). It must read
every local part in the raw frame (so it can fail) and none in any sealed frame.
"""

from __future__ import annotations

import io
import re
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from helpers_x11 import (
    killed_after,
    only_session,
    recording,
    seal_by_cli,
    search_window,
)
from PIL import Image

from demotrace.schema.events import Frame

#: (point size, synthetic address under an RFC 2606 domain, probe = its local part, lower case);
#: one terminal per size, each printing its address in a sentence and alone on a line (as
#: ``git log --format=%ae`` does).
TERMS = [
    (11, "ida.brandt7@example.org", "ida.brandt7"),
    (12, "jane.roe@example.net", "jane.roe"),
    (14, "oskar.lind3@example.com", "oskar.lind3"),
]


def check_ocr(img: Image.Image) -> str:
    """The test's OCR: grey, LANCZOS x2 and x4, the ``tesseract`` command in block mode (psm 6);
    both texts lower case, spaces and line breaks removed, joined."""
    out = []
    for up in (2, 4):
        g = img.convert("L")
        g = g.resize((g.width * up, g.height * up), Image.Resampling.LANCZOS)
        with tempfile.NamedTemporaryFile(suffix=".png") as f:
            g.save(f.name)
            p = subprocess.run(["tesseract", f.name, "-", "--psm", "6"], capture_output=True, text=True, timeout=120,
                               check=False)
        assert p.returncode == 0, p.stderr
        out.append(re.sub(r"\s+", "", p.stdout).lower())
    return "|".join(out)


def wait_for(pred, timeout: float, what: str):  # type: ignore[no-untyped-def]
    """Poll ``pred`` every 0.05 s until truthy; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not (got := pred()):
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.05)
    return got


@pytest.mark.x11
def test_displayed_monospaced_emails_do_not_survive_sealing(xvfb, dt_home: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    xauth = dt_home.parent / "Xauthority"
    xauth.touch()
    env = dict(xvfb.env, XAUTHORITY=str(xauth), DEMOTRACE_HOME=str(dt_home))
    go = tmp_path / "GO"
    terms = []
    y = 0
    for pt, addr, _ in TERMS:
        f = tmp_path / f"contact{pt}.txt"
        f.write_text(f"$ cat notes.txt\nreply to {addr} before Friday\n$ git log -1 --format=%ae\n{addr}\n")
        show = f"while [ ! -e {go} ]; do sleep 0.05; done; cat {f}; exec sleep 600"
        terms.append(subprocess.Popen(["xterm", "-T", f"mono{pt}", "-fa", "DejaVu Sans Mono", "-fs", str(pt),
                                       "-geometry", f"40x6+0+{y}", "-e", "sh", "-c", show], env=env))
        y += 6 * 2 * pt + 40  # 6 rows of about 1.7 x pt px, plus a gap
    with killed_after(*terms):
        for pt, _, _ in TERMS:  # every terminal mapped before recording starts
            search_window(env, f"mono{pt}", timeout=15)
        with recording(env, dt_home, "--no-indicator"):
            go.touch()  # the terminals now print the addresses; nothing is typed

            def shown() -> bool:  # the check OCR reads every address on the screen
                import mss

                with mss.MSS(display=xvfb.display) as s:
                    shot = s.grab({"left": 0, "top": 0, "width": 640, "height": y})
                img = Image.frombytes("RGB", shot.size, shot.bgra, "raw", "BGRX").reduce(2)
                return all(p in check_ocr(img) for _, _, p in TERMS)
            wait_for(shown, 20, "the addresses printed")

    paths, spool, sid = only_session(dt_home)
    with spool.open(sid) as r:
        raw = [(e, Image.open(io.BytesIO(r.read_blob(e.blob))).convert("RGB")) for e in r.iter_events()
               if isinstance(e, Frame)]
    assert raw and all(e.scale == 0.5 for e, _ in raw)
    # the last raw frame (the recorder's stop frame) shows every address readably
    last = check_ocr(raw[-1][1])
    assert all(p in last for _, _, p in TERMS), last

    sealed = seal_by_cli(env, paths, sid)
    # painted, not dropped: the same frames in order
    assert [(e.reason, e.captured_t_ns) for e, _ in sealed] == [(e.reason, e.captured_t_ns) for e, _ in raw]
    for (e, img), (_, raw_img) in zip(sealed, raw):
        raw_text = check_ocr(raw_img)
        shown_here = [p for _, _, p in TERMS if p in raw_text]
        text = check_ocr(img)
        assert [p for _, _, p in TERMS if p in text] == [], (e.reason, shown_here, text)
