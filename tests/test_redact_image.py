"""Frame redaction: planted values rendered at 8/10/12/16 px are painted out (asserted for
>= 10 px by an independent OCR pass at 4x), changed-region OCR, carried boxes, failure → drop."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from demotrace.privacy.pipeline import RedactionPipeline
from demotrace.privacy.policy import default_policy
from demotrace.privacy.redact_image import FrameRedactor, changed_regions, fill_boxes, ocr_words
from demotrace.privacy.redact_text import TextRedactor
from privacy_corpus import BENIGN, FONT_SIZES, PLANTED, render

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
