"""Two typed values of one kind, each on screen twice, are all unreadable after sealing (tester
issue #4, leak 3).

At the recorder's default frame scale (0.5) OCR reads some typed values on screen and not
others. The seal used to count any located card as covering every typed card, so a second card
typed into the same xterm stayed readable; later a value OCR located once counted as covered,
and its echoed copy stayed readable in a full-suite run (the window is now blacked out
whatever OCR read: tests/test_seal_typed_copies.py). Here two cards and two e-mail addresses (two values
of each kind) are typed into a real xterm on Xvfb, recorded at the default scale, sealed, and
every sealed frame is read by the test's own tesseract run (x2 upscale, as the tester did):
none of the four values may be readable. The raw frames are read the same way first, so the
test fails if it could not have seen a leak (at least one value readable before sealing).
"""

from __future__ import annotations

import io
import re
import subprocess
import time
from pathlib import Path

import pytest
from helpers_x11 import (
    killed_after,
    only_session,
    recording,
    search_window,
    wait_focus_stored,
)
from PIL import Image

from demotrace.paths import Paths
from demotrace.privacy.bundle import open_bundle
from demotrace.privacy.policy import default_policy
from demotrace.privacy.seal import seal_session
from demotrace.schema import Frame
from demotrace.spool import DataKey, Spool

# Synthetic values: two Luhn-valid cards (checked by hand: 4929 7314 5028 2736 and
# 5203 8401 7362 1957 — doubled-digit sums 70 and 60) and two example.net addresses.
CARD_A = "4929 7314 5028 2736"
CARD_B = "5203-8401-7362-1957"
MAIL_A = "zelda.quux@example.net"
MAIL_B = "olive.zimmer@example.net"


#: OCR confusions seen on these frames (DejaVu Sans Mono 12 at scale 0.5, read x2): "m" read as
#: "n" ("exanple", "zinner"); mapped on both sides before comparing.
_OCR_SAME = str.maketrans({"m": "n"})


def _key(s: str) -> str:
    """Letters and digits only, lower case, ``_OCR_SAME`` applied: how the test compares OCR
    output with a value (OCR drops or inserts spaces, dashes and dots)."""
    return re.sub(r"[^a-z0-9]", "", s.lower().translate(_OCR_SAME))


def _tesseract(img: Image.Image) -> str:
    """The test's own OCR, as the tester ran it: Debian's tesseract CLI on the image upscaled
    x2, once LANCZOS in block mode (psm 6, which reads these terminal rows best) and once
    BICUBIC in sparse-text mode (psm 11); both outputs concatenated."""
    out = []
    for resample, psm in ((Image.Resampling.LANCZOS, "6"), (Image.Resampling.BICUBIC, "11")):
        g = img.convert("L")
        g = g.resize((g.width * 2, g.height * 2), resample)
        buf = io.BytesIO()
        g.save(buf, format="PNG")
        p = subprocess.run(["tesseract", "stdin", "stdout", "--psm", psm], input=buf.getvalue(),
                           capture_output=True, timeout=120, check=False)
        assert p.returncode == 0, p.stderr.decode(errors="replace")
        out.append(p.stdout.decode(errors="replace"))
    return "\n".join(out)


def _readable(text: str) -> set[str]:
    """Planted values readable in ``text`` (per line): a card when any 8 consecutive digits of
    it are there (half a card number is already a leak), an e-mail when its local part is."""
    found = set()
    for line in text.splitlines():
        k = _key(line)
        for card in (CARD_A, CARD_B):
            d = _key(card)
            if any(d[i:i + 8] in k for i in range(len(d) - 7)):
                found.add(card)
        for mail in (MAIL_A, MAIL_B):
            if _key(mail.split("@")[0]) in k:
                found.add(mail)
    return found


@pytest.mark.x11
def test_two_typed_values_of_one_kind_both_unreadable_at_default_scale(xvfb, dt_home: Path) -> None:  # type: ignore[no-untyped-def]
    env = xvfb.env
    # `cat` echoes each line: every value is on screen twice (as typed, and printed back)
    term = subprocess.Popen(["xterm", "-T", "typedvalues", "-geometry", "70x12+0+0", "-fa", "DejaVu Sans Mono",
                             "-fs", "12", "-e", "cat"], env=env)
    paths = Paths(dt_home)
    with killed_after(term):
        wid = str(search_window(env, "typedvalues", timeout=15))
        with recording(env, dt_home, "--no-indicator"):  # default frame scale
            subprocess.run(["xdotool", "windowfocus", "--sync", wid], env=env, check=True, timeout=30)
            wait_focus_stored(Spool(paths.spool, DataKey.load(paths.key_file)), "typedvalues")
            for line in (f"pay {CARD_A} to {MAIL_A}", f"pay {CARD_B} to {MAIL_B}"):
                subprocess.run(["xdotool", "type", "--delay", "40", line + "\n"], env=env, check=True, timeout=60)
            time.sleep(1.0)  # the settle frame after typing (taken about 0.5 s after the last key)
    _paths, spool, sid = only_session(dt_home)
    seen_raw: set[str] = set()
    with spool.open(sid) as r:
        raw_frames = [e for e in r.iter_events() if isinstance(e, Frame)]
        assert raw_frames and all(f.scale == 0.5 for f in raw_frames), [f.scale for f in raw_frames]
        # the last raw frame shows everything typed: the test's OCR must read at least one value
        # there, or this test could not see a leak
        last = Image.open(io.BytesIO(r.read_blob(raw_frames[-1].blob)))
        seen_raw = _readable(_tesseract(last))
    assert seen_raw, "the test's OCR reads no planted value even in the raw frame"
    seal_session(paths, spool, sid, default_policy())
    with open_bundle(paths, sid) as b:
        frames = [Image.open(io.BytesIO(b.read_blob(e.blob))) for e in b.iter_events() if isinstance(e, Frame)]
    assert frames
    leaks = {i: found for i, img in enumerate(frames) if (found := _readable(_tesseract(img)))}
    assert leaks == {}, leaks
