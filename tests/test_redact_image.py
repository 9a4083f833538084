"""Frame redaction: planted values rendered at 8/10/12/16 px are painted out (asserted for
>= 10 px by an independent OCR pass at 4x), changed-region OCR, carried boxes, failure → drop."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw
from privacy_corpus import BENIGN, FONT_SIZES, PLANTED, render

from demotrace.privacy.pipeline import RedactionPipeline
from demotrace.privacy.policy import default_policy
from demotrace.privacy.redact_image import (
    FrameRedactor,
    changed_regions,
    fill_boxes,
    ocr_words,
)
from demotrace.privacy.redact_text import TextRedactor
from demotrace.privacy.seal import TYPED_LAG_NS

SHOWN = ["card", "email", "phone", "iban", "aws_key", "github_token", "password_label", "ssn"]


def _ocr_text(img: Image.Image, box: tuple[int, int, int, int] | None = None) -> str:
    """Independent check: tesseract at 4x over the image (or a box of it)."""
    crop = img.crop(box) if box else img
    return " ".join(w.text for w in ocr_words(crop, upscale=4))


def _leaks(text: str, kinds: list[str]) -> list[str]:
    squashed = text.replace(" ", "")
    return [p for k in kinds for p in PLANTED[k][1] if p in text or p.replace(" ", "") in squashed]


@pytest.fixture(scope="module")
def redactor() -> TextRedactor:
    return TextRedactor(default_policy())


def test_planted_values_painted_at_10px_and_above(redactor: TextRedactor) -> None:
    lines, rows = [], {}
    y = 8
    for px in FONT_SIZES:
        top = y
        for k in SHOWN:
            lines.append((f"{k} {PLANTED[k][0]} end", px))
            y += px + 10
        rows[px] = (0, top - 4, 1280, y - 4)
    img = render(lines)
    # the check itself can read the planted values before redaction (so it can fail)
    before = _ocr_text(img, rows[12])
    assert {"4111111111111111", "jane.roe@example.com", "AKIAIOSFODNN7EXAMPLE"} <= set(_leaks(before, SHOWN))
    out = FrameRedactor(redactor.find).redact(img)
    for px in (10, 12, 16):
        got = _ocr_text(out.image, rows[px])
        assert _leaks(got, SHOWN) == [], (px, got)
        assert "phone" in got and "ssn" in got  # the labels beside the values survive
    assert {"CREDIT_CARD", "EMAIL_ADDRESS", "IBAN_CODE"} <= set(out.entities)


def test_benign_frame_is_left_mostly_alone(redactor: TextRedactor) -> None:
    img = render([(b, 12) for b in BENIGN])
    out = FrameRedactor(redactor.find).redact(img)
    assert len(out.boxes) <= 1, out.entities
    a = np.asarray(out.image.convert("L"), dtype=np.int16)
    # at most one word's worth of pixels painted black that were not black before
    newly_black = int(((a == 0) & (np.asarray(img.convert("L")) > 60)).sum())
    assert newly_black < 2000


def test_changed_regions_by_hand() -> None:
    a = np.full((800, 1280, 3), 255, np.uint8)
    b = a.copy()
    b[200:220, 100:150] = 0  # tile rows y 192..224 → a full-width band, padded by 16
    assert changed_regions(a, b, pad=16) == [(0, 176, 1280, 240)]
    b[500:505, 1200:1210] = 0  # a second band further down (tile row 496..512)
    assert changed_regions(a, b, pad=16) == [(0, 176, 1280, 240), (0, 480, 1280, 528)]
    assert changed_regions(a, a.copy(), pad=16) == []
    assert changed_regions(None, b) == [(0, 0, 1280, 800)]
    c = a.copy()
    c[:700] = 0  # more than 60 % changed → whole frame
    assert changed_regions(a, c) == [(0, 0, 1280, 800)]


def test_second_frame_ocrs_only_the_change_and_keeps_old_boxes(redactor: TextRedactor) -> None:
    fr = FrameRedactor(redactor.find, rescan_upscale=0)
    img1 = render([("card 4111 1111 1111 1111 end", 16), ("plain words here", 16)])
    r1 = fr.redact(img1)
    (x0, y0, x1, y1), = r1.ocr_regions  # the whole frame, trimmed to the columns with text
    # 28 characters of 16 px DejaVu Sans (~9 px each) from x = 16, plus the 16 px pad
    assert (x0, y0, y1) == (0, 0, 800) and 230 < x1 < 330
    img2 = img1.copy()
    ImageDraw.Draw(img2).rectangle([900, 600, 1000, 640], fill="blue")  # change far away
    r2 = fr.redact(img2)
    # PIL rectangles include their end pixel: y 600..640 → tile rows 592..656, padded by 16;
    # the band is trimmed to the columns with contrast, x 900..1000, padded by 16
    assert r2.ocr_regions == [(884, 576, 1017, 672)]
    assert r2.carried == len(r1.boxes) >= 1
    assert _leaks(_ocr_text(r2.image, (0, 0, 700, 80)), ["card"]) == []


def test_fill_boxes_is_solid() -> None:
    img = Image.new("RGB", (50, 30), "white")
    out = fill_boxes(img, [(10, 10, 20, 15)])
    a = np.asarray(out)
    assert (a[8:17, 8:22] == 0).all()  # box grown by the 2 px margin
    assert (a[0:7] == 255).all()


def test_ocr_failure_drops_the_frame_and_counts_it(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no tesseract here
    pipe = RedactionPipeline(default_policy())
    img = render([("card 4111 1111 1111 1111", 16)])
    assert pipe.frame(img) is None
    assert pipe.counts.dropped == {"frame:ocr:error": 1}
    assert pipe.counts.items_out["frame"] == 0
    pipe.close()


def test_half_scale_frames_get_a_larger_ocr_upscale(redactor: TextRedactor) -> None:
    """The recorder may store frames at scale 0.5: 16 px desktop text is then 8 px in the image.
    With ``scale=0.5`` the sealing OCR upscales 6x instead of 3x and finds the values."""
    kinds = ["card", "email", "aws_key", "ssn"]
    full = render([(f"{k} {PLANTED[k][0]} end", 16) for k in kinds])
    half = full.resize((640, 400), Image.Resampling.LANCZOS)
    assert {"4111111111111111", "jane.roe@example.com", "536-22-8145"} <= set(
        _leaks(" ".join(w.text for w in ocr_words(half, upscale=8)), kinds))
    out = FrameRedactor(redactor.find).redact_batch([half], scale=0.5)[0]
    assert _leaks(" ".join(w.text for w in ocr_words(out.image, upscale=8)), kinds) == []


def _tesseract_high(img: Image.Image, up: int = 8) -> str:
    """Independent OCR oracle: grey, LANCZOS upscale ``up``, tesseract --psm 6 (not the code's
    own OCR path), spaces removed, lower-case."""
    import subprocess
    import tempfile

    g = img.convert("L")
    g = g.resize((g.width * up, g.height * up), Image.Resampling.LANCZOS)
    with tempfile.NamedTemporaryFile(suffix=".png") as f:
        g.save(f.name)
        out = subprocess.run(["tesseract", f.name, "-", "--psm", "6"], capture_output=True, text=True, timeout=120)
    return out.stdout.replace(" ", "").lower()


@pytest.mark.x11
def test_typed_secrets_never_readable_at_default_frame_scale(xvfb, dt_home) -> None:  # type: ignore[no-untyped-def]
    """Tester's repro (issue: nothing removed at the default --frame-scale 0.5): a plain xterm
    (default bitmap font), `demotrace record` at its default scale, a card, an e-mail and a
    labelled password typed and echoed; `demotrace seal`. Fail closed: every frame grabbed at or
    after the first flagged key shows the xterm window black, the report counts exactly those
    frames, and an independent high-upscale tesseract pass reads none of the values."""
    import io
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from helpers_x11 import recorder_status, start_recorder, stop_recorder

    from demotrace.paths import Paths
    from demotrace.privacy import open_bundle
    from demotrace.schema.events import Frame, KeyDown
    from demotrace.spool import DataKey, Spool

    exe = str(Path(sys.executable).parent / "demotrace")
    xauth = dt_home.parent / "Xauthority"
    xauth.touch()
    env = dict(xvfb.env, XAUTHORITY=str(xauth), DEMOTRACE_HOME=str(dt_home))
    term = subprocess.Popen(["xterm", "-T", "plainterm", "-geometry", "80x24+0+0", "-e", "cat"], env=env)
    rec = None
    try:
        deadline = time.monotonic() + 15
        wid = ""
        while not wid and time.monotonic() < deadline:
            wid = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", "^plainterm$"], env=env, capture_output=True,
                                 text=True).stdout.strip().split("\n")[0]
            time.sleep(0.1)
        assert wid, "xterm did not appear"
        geo = subprocess.run(["xwininfo", "-id", wid], env=env, capture_output=True, text=True, check=True).stdout
        g = {k: int(v) for k, v in __import__("re").findall(r"(Absolute upper-left [XY]|Width|Height):\s+(\d+)", geo)}
        subprocess.run([exe, "enroll", "--yes"], env=env, check=True, capture_output=True, timeout=60)
        rec = start_recorder(env, dt_home, "--no-indicator")
        live = recorder_status(dt_home)["session_id"]
        p = subprocess.run([exe, "review", "delete", live], env=env, capture_output=True, text=True, timeout=60)
        assert p.returncode != 0 and f"session {live} is being recorded; stop it first" in " ".join(p.stderr.split())
        subprocess.run(["xdotool", "windowfocus", "--sync", wid], env=env, check=True)
        time.sleep(0.5)  # the X11 backend notices focus by polling (0.15 s)
        for line in ("echo 4111 1111 1111 1111", "echo jane.roe@example.com", "export PASSWORD=Zq8vT3kLm9Xw2Rp7"):
            subprocess.run(["xdotool", "type", "--delay", "30", line + "\n"], env=env, check=True, timeout=60)
        time.sleep(1.0)  # the settle frame after the last key
        stop_recorder(rec)
    finally:
        if rec is not None and rec.poll() is None:
            rec.kill()
        term.kill()
        term.wait()
    paths = Paths(dt_home)
    spool = Spool(paths.spool, DataKey.load(paths.key_file))
    (sid,) = spool.session_ids()
    with spool.open(sid) as r:
        raw = list(r.iter_events())
        raw_frames = [e for e in raw if isinstance(e, Frame)]
        t_card = next(e.t_ns for e in raw if isinstance(e, KeyDown) and e.text == "4")  # first key of the card
        # the seal blacks out the terminal from TYPED_LAG_NS before the first flagged key on
        later = [e for e in raw_frames if e.captured_t_ns >= t_card - TYPED_LAG_NS]
        assert later and raw_frames[0].scale == 0.5
        last_raw = Image.open(io.BytesIO(r.read_blob(later[-1].blob))).convert("RGB")
    sx, sy = g["Absolute upper-left X"], g["Absolute upper-left Y"]
    # the xterm interior, in frame pixels (scale 0.5), inset 2 px from its edges
    region = (int(sx * 0.5) + 2, int(sy * 0.5) + 2, int((sx + g["Width"]) * 0.5) - 2, int((sy + g["Height"]) * 0.5) - 2)
    assert np.asarray(last_raw.crop(region)).max() > 200  # raw: the white terminal with the text is visible
    p = subprocess.run([exe, "seal"], env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    m = __import__("re").search(r"(\d+)/(\d+) frames kept.*blacked out (\d+), dropped \(window unknown\) (\d+)",
                                " ".join(p.stdout.split()))
    assert m, p.stdout
    kept, total, masked, dropped = map(int, m.groups())
    assert total == len(raw_frames) and masked + dropped == len(later) and kept == total - dropped
    with open_bundle(paths, sid) as b:
        sealed = [(e, Image.open(io.BytesIO(b.read_blob(e.blob))).convert("RGB")) for e in b.iter_events()
                  if isinstance(e, Frame)]
    n_black = 0
    for e, img in sealed:
        if e.captured_t_ns >= t_card - TYPED_LAG_NS:
            assert np.asarray(img.crop(region)).max() <= 12, e.reason
            n_black += 1
        text = _tesseract_high(img)
        for v in ("4111111111111111", "jane.roe", "roe@example", "zq8vt3klm9xw2rp7"):
            assert v not in text, (v, text)
    assert n_black == masked
    # Ctrl-C while sealing again: a message, and the bundle above is kept unchanged. The
    # interrupt must land while the new bundle is being written; a re-seal that finished first
    # (exit 0: CI once saw the temporary folder only in its last milliseconds) is a complete,
    # valid bundle — then try again, at most 5 times
    for _attempt in range(5):
        with open_bundle(paths, sid) as b:
            blobs_before = sorted(b.blob_ids())
        # SIGINT at its default in the child: a suite started in the background (`cmd &` in a
        # script) inherits it IGNORED, and Python then installs no KeyboardInterrupt handler
        q = subprocess.Popen([exe, "seal", "--replace", sid], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.monotonic() + 60
        while not list((paths.home / "sealed").glob(f".{sid}.sealing-*")):  # being written
            if q.poll() is not None:
                break
            assert time.monotonic() < deadline, q.communicate()
            time.sleep(0.005)
        if q.poll() is None:
            q.send_signal(signal.SIGINT)
        _o, e = q.communicate(timeout=60)
        if q.returncode == 0:
            assert "Traceback" not in e, e
            continue
        assert q.returncode == 130 and "interrupted; nothing changed" in e and "Traceback" not in e, e
        with open_bundle(paths, sid) as b:
            assert sorted(b.blob_ids()) == blobs_before
        break
    else:
        pytest.fail("5 re-seals all finished before Ctrl-C reached them")
    assert not list((paths.home / "sealed").glob(f".{sid}.sealing-*"))


#: The bug-bash row (issue #4): a Tk label in DejaVu Sans 11 pt (about 15 px at 96 dpi).
CONTACT = "Contact: maria.kowalski@example.net / olaf.berg@example.org"


def _recorded_like(lines: list[tuple[str, int]]) -> tuple[Image.Image, list[tuple[int, int, int, int]]]:
    """Grey (Tk's #d9d9d9) 1280x800 frame with DejaVu Sans ``lines`` at x 30, stored as the
    recorder stores it: ``reduce(2)`` then JPEG q87 4:2:0. Returns the half-scale frame and
    each line's row box in it (image pixels, padded 3 px)."""
    import io

    from PIL import ImageFont
    from privacy_corpus import FONT

    img = Image.new("RGB", (1280, 800), (217, 217, 217))
    d = ImageDraw.Draw(img)
    rows, y = [], 60
    for text, px in lines:
        d.text((30, y), text, fill="black", font=ImageFont.truetype(FONT, px))
        rows.append((0, y // 2 - 3, 640, (y + px) // 2 + 4))
        y += px + 12
    buf = io.BytesIO()
    img.reduce(2).save(buf, format="JPEG", quality=87, subsampling=2, optimize=True)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), rows


def test_email_split_by_unread_glyphs_is_painted_whole(redactor: TextRedactor) -> None:
    """Issue #4 bug bash: at scale 0.5, tesseract read the contact row in a stacked batch as
    "Contact:" "maria," "kor" … "i@exa" … "Je.net" "/" "olaf.bera@exa" … "org", leaving
    "walsk", "mp" and "mple." unread; only "i@exa…" was flagged and "maria.kowalsk" stayed
    readable. Here those words (boxes from the font's own metrics, so independent of OCR) are
    flagged against the real pixels; the test's own OCR of the painted row must read neither
    address."""
    from math import ceil, floor

    from PIL import ImageFont
    from privacy_corpus import FONT

    from demotrace.privacy.redact_image import SMALL_TEXT_PX, Word, flag_words

    img, (row,) = _recorded_like([(CONTACT, 15)])
    font = ImageFont.truetype(FONT, 15)
    top, bottom = 60 + font.getbbox(CONTACT)[1], 60 + font.getbbox(CONTACT)[3]
    read = [("Contact:", "Contact:"), ("maria,", "maria."), ("kor", "ko"), ("i@exa", "i@exa"), ("Je.net", "le.net"),
            ("/", "/"), ("olaf.bera@exa", "olaf.berg@exa"), ("org", "org")]
    words, pos = [], 0
    for text, part in read:
        pos = CONTACT.index(part, pos)
        x0, x1 = 30 + font.getlength(CONTACT[:pos]), 30 + font.getlength(CONTACT[:pos + len(part)])
        words.append(Word((floor(x0 / 2), floor(top / 2), ceil(x1 / 2), ceil(bottom / 2)), text, 90.0, (1, 1, 1, 1)))
        pos += len(part)
    before = _tesseract_high(img.crop(row))
    assert "kowalski" in before and "olaf" in before, before  # the oracle can read the row unpainted
    flagged = flag_words(words, redactor.find, small_px=SMALL_TEXT_PX, arr=np.asarray(img))
    painted = fill_boxes(img, [w.box for w, _ in flagged])
    after = _tesseract_high(painted.crop(row))
    for part in ("maria", "kowal", "walsk", "olaf", "berg", "example"):
        assert part not in after, (part, after)
    x0, y0, x1, y1 = words[0].box  # the label left of the address is not painted
    assert (np.asarray(painted)[y0:y1, x0:x1] == np.asarray(img)[y0:y1, x0:x1]).all()


def test_contact_row_at_half_scale_not_readable(redactor: TextRedactor) -> None:
    """The whole path on a recorded-like frame holding the row at 11 px and at 15 px (Tk's
    11 pt): no address part readable by the test's own OCR after redaction."""
    img, rows = _recorded_like([(CONTACT, 11), (CONTACT, 15)])
    assert "kowalski" in _tesseract_high(img.crop(rows[1]))
    out = FrameRedactor(redactor.find).redact_batch([img, img], scale=0.5)
    for res in out:
        for row in rows:
            after = _tesseract_high(res.image.crop(row))
            for part in ("maria", "kowal", "walsk", "olaf", "berg", "example"):
                assert part not in after, (part, after)


def test_text_height_of_dense_lines_beside_a_scrollbar() -> None:
    """Bug bash 4: an xterm stored at scale 0.5 (lines 1-2 blank rows apart, a scrollbar inked
    on every row) measured as ONE 75 px row, so it was OCR'd at the minimum upscale and misread.
    Built by hand: 6 lines of 6 inked rows, 1 blank row between them, a 4 px bar down the right
    edge; the typical row height is 6."""
    from demotrace.privacy.redact_image import text_height

    arr = np.full((60, 120, 3), 255, np.uint8)
    for k in range(6):
        y = 4 + 7 * k
        arr[y:y + 6, 10:90:3] = 0  # glyph-like ink: every third column
    arr[:, 114:118] = 40  # the scrollbar, every row
    assert text_height(arr, (0, 0, 120, 60)) == 6
