"""Secret-field inference from the screen (src/demotrace/privacy/field_labels.py): recall on
synthetic forms and false positives on the benign corpus, at frame scale 1.0 and 0.5.

Run: ``.venv/bin/python bench/secret_fields.py [--json out.json]``

Cases (frames drawn with DejaVu Sans, the events as the recorder stores them: a click, the key
presses, a frame grabbed before the first key and one after the typing):

- **secret forms**: a label from the policy's secret names (Password, PIN, One-time code, CVV,
  Card number, Security code, Passcode, Card PIN, Pass phrase) left of an entry box at 10 / 12 / 16 px, typed text
  echoed in PLAIN text (so only the label can find it) — recall of the label rule;
- **masked entries**: label "Phrase" (no secret name), typed text echoed as bullets — recall
  of the mask rule;
- **benign forms**: labels Name, E-mail, City, Comment, Search, Username, Notes, Order number,
  Boarding pass, Passenger name, typed text echoed plain — false positives;
- **benign text**: every line of tests/privacy_corpus.py BENIGN on one screen; a click at the end
  of each line and " ok" typed there (an editor / terminal) — false positives (one line,
  "The password policy requires 12 characters.", names a password on purpose); the same with
  bench/privacy_leaks.py's benign set (``gen_benign(200)``: BENIGN plus 180 generated lines).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

sys.path.insert(0, str(ROOT / "bench"))
from privacy_corpus import BENIGN, FONT
from privacy_leaks import gen_benign

from demotrace.privacy.field_labels import infer_secret_fields, tesseract_ocr
from demotrace.privacy.policy import default_policy
from demotrace.schema import Frame, KeyDown, KeyUp, PointerDown, Rect

SECRET_LABELS = ["Password", "PIN", "One-time code", "CVV", "Card number", "Security code", "Passcode",
                 "Card PIN", "Pass phrase"]  # the last two: bug-bash 2 (issue #4)
BENIGN_LABELS = ["Name", "E-mail", "City", "Comment", "Search", "Username", "Notes", "Order number",
                 "Boarding pass", "Passenger name"]  # near the "pass phrase" pattern
SIZES = [10, 12, 16]
TYPED = "tulip blue"


class Session:
    """Events and frame images of one synthetic case."""

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self.events: list = []
        self.images: dict[str, Image.Image] = {}
        self.t = 0

    def add(self, cls: type, **kw: object) -> None:
        self.events.append(cls(seq=len(self.events), t_ns=self.t, **kw))
        self.t += 1_000_000

    def frame(self, img: Image.Image) -> None:
        if self.scale != 1.0:
            img = img.resize((round(img.width * self.scale), round(img.height * self.scale)), Image.Resampling.BOX)
        bid = f"f{len(self.images)}"
        self.images[bid] = img
        self.add(Frame, blob=bid, monitor=0, bounds=Rect(0, 0, 1280, 800), width=img.width, height=img.height,
                 scale=self.scale, captured_t_ns=self.t, reason="key", format="png")

    def type(self, text: str) -> None:
        for ch in text:
            self.add(KeyDown, key=ch, code="Unidentified", text=ch)
            self.add(KeyUp, key=ch, code="Unidentified")


def form(label: str, px: int, shown: str) -> tuple[Image.Image, tuple[int, int]]:
    """A 1280x800 form row: ``label`` then an entry box showing ``shown``; returns the image and
    the click point (entry centre, desktop px)."""
    img = Image.new("RGB", (1280, 800), (236, 236, 236))
    d = ImageDraw.Draw(img)
    font = ImageFont.truetype(FONT, px)
    d.text((40, 300), "Account", fill="black", font=font)
    lw = d.textlength(label, font=font)
    d.text((200 - lw, 360), label, fill="black", font=font)
    d.rectangle([212, 352, 512, 360 + px + 10], fill="white", outline=(120, 120, 120))
    if shown:
        d.text((218, 360), shown, fill="black", font=font)
    return img, (360, 360 + px // 2 + 2)


def field_case(label: str, px: int, masked: bool, scale: float) -> Session:
    s = Session(scale)
    before, (x, y) = form(label, px, "")
    s.add(PointerDown, x=float(x), y=float(y), button="left")
    s.frame(before)
    s.type(TYPED)
    s.frame(form(label, px, "\u2022" * len(TYPED) if masked else TYPED)[0])
    return s


def text_case(scale: float, px: int = 12, lines: list[str] | None = None) -> tuple[Session, int]:
    """``lines`` (default: BENIGN) on one screen; a click at the end of each and " ok" typed
    there."""
    s = Session(scale)
    font = ImageFont.truetype(FONT, px)
    lines = list(BENIGN) if lines is None else lines
    for i in range(len(lines)):
        def draw(extra: str, i: int = i) -> Image.Image:
            img = Image.new("RGB", (1280, 800), "white")
            d = ImageDraw.Draw(img)
            for k, line in enumerate(lines):
                d.text((16, 8 + k * (px + 10)), line + (extra if k == i else ""), fill="black", font=font)
            return img
        d0 = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        x = 16 + d0.textlength(lines[i], font=font) + 2
        y = 8 + i * (px + 10) + px // 2
        s.add(PointerDown, x=float(x), y=float(y), button="left")
        s.frame(draw(""))
        s.type(" ok")
        s.frame(draw(" ok"))
    return s, len(lines)


def inferred_stretches(s: Session, ocr) -> int:  # type: ignore[no-untyped-def]
    out = infer_secret_fields(s.events, default_policy(), lambda f: s.images.get(f.blob), ocr)
    # one stretch per click: count clicks whose first following key was dropped
    n = 0
    for i, ev in enumerate(s.events):
        if isinstance(ev, PointerDown):
            k = next(j for j in range(i, len(s.events)) if isinstance(s.events[j], KeyDown))
            n += k in out
    return n


def run() -> dict:
    ocr, close = tesseract_ocr()
    res: dict = {"machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
                             "cores": os.cpu_count()}}
    t0 = time.perf_counter()
    cases = 0
    try:
        for scale in (1.0, 0.5):
            r: dict = {}
            sec = {px: sum(inferred_stretches(field_case(lbl, px, False, scale), ocr) for lbl in SECRET_LABELS)
                   for px in SIZES}
            r["secret_label_recall"] = {px: f"{n}/{len(SECRET_LABELS)}" for px, n in sec.items()}
            r["missed_labels"] = {px: [lbl for lbl in SECRET_LABELS if not inferred_stretches(
                field_case(lbl, px, False, scale), ocr)] for px in SIZES if sec[px] < len(SECRET_LABELS)}
            mask = {px: inferred_stretches(field_case("Phrase", px, True, scale), ocr) for px in SIZES}
            r["masked_entry_recall"] = {px: f"{n}/1" for px, n in mask.items()}
            fp_forms = {px: [lbl for lbl in BENIGN_LABELS if inferred_stretches(field_case(lbl, px, False, scale), ocr)]
                        for px in SIZES}
            n_forms = len(BENIGN_LABELS) * len(SIZES)
            r["benign_form_false_positives"] = f"{sum(len(v) for v in fp_forms.values())}/{n_forms}"
            r["benign_form_fp_labels"] = {px: v for px, v in fp_forms.items() if v}
            s, n_lines = text_case(scale)
            fp_text = inferred_stretches(s, ocr)
            r["benign_text_false_positives"] = f"{fp_text}/{n_lines}"
            # bench/privacy_leaks.py's benign typed-text set (gen_benign(200)), 30 lines a screen
            pool = gen_benign(200)
            fp_pool = 0
            for k in range(0, len(pool), 30):
                sp, _ = text_case(scale, lines=pool[k:k + 30])
                fp_pool += inferred_stretches(sp, ocr)
            r["privacy_leaks_benign_false_positives"] = f"{fp_pool}/{len(pool)}"
            fp_text += fp_pool
            n_lines += len(pool)
            benign_total = n_forms + n_lines
            r["false_positive_rate"] = round((sum(len(v) for v in fp_forms.values()) + fp_text) / benign_total, 4)
            cases += len(SECRET_LABELS) * len(SIZES) * 2 + len(SIZES) + n_forms + 1
            res[f"scale_{scale}"] = r
    finally:
        close()
    res["seconds"] = round(time.perf_counter() - t0, 1)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    res = run()
    text = json.dumps(res, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
