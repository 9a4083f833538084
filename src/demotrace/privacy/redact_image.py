"""Image redaction (DESIGN.md §8.5): OCR the regions that changed since the previous stored
frame, then paint solid boxes over every word whose text a text layer flags.

OCR is Debian's ``tesseract`` command (package ``tesseract-ocr`` with its bundled ``eng``
data; nothing is downloaded) called with TSV output, one call per changed region. Each region
is converted to grey and upscaled (``policy.redaction.ocr_upscale``, default 3: 10 px text
becomes ~30 px, near tesseract's preferred x-height) before OCR.

Word → line → text layers: words are grouped into tesseract's lines; each line's text runs
through the same text layers as typed text (Presidio patterns + secret detectors), twice: as
read, and with OCR confusables mapped to digits inside mostly-numeric words (``O→0``, ``l/I/|→1``,
``S→5``, ``B→8``, ``Z→2``). On top, OCR-lenient rules (:data:`OCR_RULES`) box card-, IBAN- and
e-mail-shaped words even when a misread digit breaks the Luhn / mod-97 check.

Changed regions: the frame is compared with the previous *original* frame of the same monitor
and size in 16×16-pixel tiles (a tile changed if any channel of any pixel differs by more than
``DIFF_THRESHOLD``); 8-connected changed tiles form regions, padded by ``ocr_region_pad_px``.
Boxes found in the previous frame outside the changed regions are carried over (that content
did not change); a changed region that touches a carried box is grown to cover it, so the box is
decided afresh. The first frame, a frame of another size, and the frame after a failure are
OCR'd whole.

Units: every box is ``(x0, y0, x1, y1)`` in image pixels of the frame (not desktop pixels),
right / bottom exclusive.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from .errors import RedactionError, RedactionTimeout
from .secret_detect import Finding

Box = tuple[int, int, int, int]
TILE = 16
#: Per-channel difference (0..255) above which a pixel counts as changed (absorbs dithering /
#: lossy-codec noise; WebP q80 noise on flat UI is below 8).
DIFF_THRESHOLD = 8
#: When changed regions cover more than this share of the frame, OCR the whole frame once.
FULL_FRAME_SHARE = 0.6
#: Extra image pixels painted around each flagged word (anti-aliased glyph edges).
BOX_MARGIN = 2

#: OCR-lenient rules applied to each OCR'd line (after confusable mapping): card-shaped digit
#: groups (13–19 digits in groups of 4, as printed on cards), IBAN-shaped strings (ISO 13616:
#: 2 letters, 2 digits, 11–30 alphanumerics), e-mail-shaped words.
OCR_RULES: dict[str, re.Pattern[str]] = {
    "CREDIT_CARD": re.compile(r"(?<!\d)\d{4}[ \-]?\d{4}[ \-]?\d{4}[ \-]?\d{1,7}(?!\d)"),
    "IBAN_CODE": re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?\b"),
    "EMAIL_ADDRESS": re.compile(r"[\w.+\-]+\s?@\s?[\w\-]+(?:\.[\w\-]+)+"),
    "TOKEN_PREFIX": re.compile(r"(?:\bgh[pousr]_|\bgithub_pat_|\bxox[abposr]-|\b[sr]k_(?:live|test)_|\bAKIA|\bASIA|\bAIza|\beyJ)\S*"),
}
#: Entities whose neighbouring token-like words on the same row are painted too (OCR splits
#: long keys into several words at glyph gaps as wide as a space).
TOKEN_ENTITIES = frozenset({"GITHUB_TOKEN", "HIGH_ENTROPY_TOKEN", "AWS_ACCESS_KEY", "AWS_SECRET_KEY", "JWT",
                            "STRIPE_KEY", "SLACK_TOKEN", "GCP_API_KEY", "PRIVATE_KEY", "TOKEN_PREFIX",
                            "PASSWORD_LABEL"})
_TOKENISH = re.compile(r"^[A-Za-z0-9_\-+/=.'|]{4,}$")


def _tokenish(w: str) -> bool:
    return bool(_TOKENISH.match(w)) and (any(c.isdigit() for c in w) or "_" in w or
                                         (any(c.isupper() for c in w[1:]) and any(c.islower() for c in w)))
_CONFUSABLE = str.maketrans({"O": "0", "o": "0", "D": "0", "l": "1", "I": "1", "|": "1", "i": "1",
                             "S": "5", "s": "5", "B": "8", "Z": "2", "z": "2", "g": "9", "q": "9"})


@dataclass(frozen=True)
class Word:
    """One OCR'd word: ``box`` in frame image pixels, ``text``, ``conf`` (tesseract 0..100),
    ``line`` (a key shared by the words of one line)."""

    box: Box
    text: str
    conf: float
    line: tuple[int, int, int, int]


def tesseract_path() -> str:
    """Path of the ``tesseract`` binary.

    Raises:
        RedactionError: not on ``PATH`` (fix: ``apt-get install tesseract-ocr``; scripts/bootstrap.sh
            installs it). Sealing then drops every frame rather than pass it unredacted.
    """
    exe = shutil.which("tesseract")
    if exe is None:
        raise RedactionError("OCR unavailable: `tesseract` not found on PATH (install Debian package tesseract-ocr)")
    return exe


def ocr_words(image: Image.Image, *, upscale: int = 3, offset: tuple[int, int] = (0, 0),
              timeout_s: float = 20.0, psm: int = 11) -> list[Word]:
    """OCR ``image`` with tesseract; return its words in the coordinates of the full frame.

    ``upscale``: integer scale factor applied before OCR (boxes are scaled back); ``offset``:
    the region's top-left in the frame; ``psm``: tesseract page-segmentation mode (11 = sparse
    text, suited to screens); one OCR thread (``OMP_THREAD_LIMIT=1``).

    Raises:
        RedactionError: tesseract missing or failed. RedactionTimeout: it exceeded ``timeout_s``
            (the process is killed).
    """
    exe = tesseract_path()
    g = image.convert("L")
    if upscale > 1:
        g = g.resize((g.width * upscale, g.height * upscale), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    g.save(buf, format="PNG", compress_level=0)
    env = dict(os.environ, OMP_THREAD_LIMIT="1")
    try:
        proc = subprocess.run(
            [exe, "stdin", "stdout", "-l", "eng", "--psm", str(psm), "tsv"],
            input=buf.getvalue(), capture_output=True, timeout=timeout_s, env=env, check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise RedactionTimeout(f"OCR exceeded {timeout_s:g} s on a {image.width}x{image.height} region") from exc
    except OSError as exc:
        raise RedactionError(f"OCR could not run {exe}: {exc}") from exc
    if proc.returncode != 0:
        raise RedactionError(f"OCR failed (exit {proc.returncode}): {proc.stderr.decode(errors='replace')[:300]}")
    ox, oy = offset
    words = []
    rows = csv.reader(io.StringIO(proc.stdout.decode("utf-8", errors="replace")), delimiter="\t",
                      quoting=csv.QUOTE_NONE)
    header = next(rows, None)
    if header is None or "text" not in header:
        raise RedactionError("OCR produced no TSV header")
    for r in rows:
        if len(r) < 12 or r[0] != "5":
            continue
        text = r[11].strip()
        if not text:
            continue
        left, top, w, h = (int(v) for v in r[6:10])
        x0 = ox + left // upscale
        y0 = oy + top // upscale
        x1 = ox + -(-(left + w) // upscale)
        y1 = oy + -(-(top + h) // upscale)
        words.append(Word((x0, y0, x1, y1), text, float(r[10]), (int(r[1]), int(r[2]), int(r[3]), int(r[4]))))
    return words


def _to_digits(word: str) -> str:
    core = re.sub(r"[^0-9A-Za-z|]", "", word)
    if core and sum(c.isdigit() for c in core) * 2 >= len(core):
        return word.translate(_CONFUSABLE)
    return word


def flag_words(words: Sequence[Word], find: Callable[[str], list[Finding]]) -> list[tuple[Word, str]]:
    """Words to paint: those overlapped by a finding of ``find`` on their line's text (as read
    and with confusables mapped) or by an :data:`OCR_RULES` match. Returns ``(word, entity)``."""
    # Rows by geometry, not by tesseract's block/line keys: sparse-text mode (psm 11) often
    # puts the two halves of one printed line into different blocks.
    rows: list[list[Word]] = []
    for w in sorted(words, key=lambda w: (w.box[1] + w.box[3]) / 2):
        cy, h = (w.box[1] + w.box[3]) / 2, max(1, w.box[3] - w.box[1])
        if rows:
            r = rows[-1]
            rcy = sum((x.box[1] + x.box[3]) / 2 for x in r) / len(r)
            if abs(cy - rcy) < 0.5 * h:
                r.append(w)
                continue
        rows.append([w])
    flagged: dict[int, tuple[Word, str]] = {}
    for ws in rows:
        ws.sort(key=lambda w: w.box[0])
        # Words whose boxes (nearly) touch are one token split by OCR: join them without a
        # space so a key read as "ghp_R2d2" + "C3po…" is found, and both parts painted.
        spans, pos, seps = [], 0, []
        for i, w in enumerate(ws):
            if i:
                prev = ws[i - 1]
                gap = w.box[0] - prev.box[2]
                seps.append("" if gap < 0.25 * max(1, w.box[3] - w.box[1]) else " ")
                pos += len(seps[-1])
            spans.append((pos, pos + len(w.text)))
            pos += len(w.text)

        def _join(parts: list[str]) -> str:
            return parts[0] + "".join(sep + p for sep, p in zip(seps, parts[1:])) if parts else ""

        text = _join([w.text for w in ws])
        mapped = _join([_to_digits(w.text) for w in ws])
        hits: list[Finding] = list(find(text))
        if mapped != text:
            hits += find(mapped)
        for ent, rx in OCR_RULES.items():
            for t in {text, mapped}:
                hits += [Finding(m.start(), m.end(), ent, 0.5, "ocr_rules") for m in rx.finditer(t)]
        row_flags: dict[int, str] = {}
        for f in hits:
            for i, (s, e) in enumerate(spans):
                if s < f.end and f.start < e and i not in row_flags:
                    row_flags[i] = f.entity
        grow = True
        while grow:
            grow = False
            for i, ent in list(row_flags.items()):
                if ent not in TOKEN_ENTITIES:
                    continue
                for j in (i - 1, i + 1):
                    if 0 <= j < len(ws) and j not in row_flags and _tokenish(ws[j].text):
                        row_flags[j] = ent
                        grow = True
        for i, ent in row_flags.items():
            flagged[id(ws[i])] = (ws[i], ent)
    return list(flagged.values())


def fill_boxes(image: Image.Image, boxes: Sequence[Box], color: tuple[int, int, int] = (0, 0, 0)) -> Image.Image:
    """Return a copy of ``image`` (RGB) with solid ``color`` rectangles over ``boxes`` grown by
    :data:`BOX_MARGIN` pixels and clipped to the image."""
    out = image.convert("RGB").copy()
    d = ImageDraw.Draw(out)
    W, H = out.size
    for x0, y0, x1, y1 in boxes:
        d.rectangle([max(0, x0 - BOX_MARGIN), max(0, y0 - BOX_MARGIN),
                     min(W, x1 + BOX_MARGIN) - 1, min(H, y1 + BOX_MARGIN) - 1], fill=color)
    return out


def _intersects(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _union(a: Box, b: Box) -> Box:
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def _merge_boxes(boxes: list[Box]) -> list[Box]:
    boxes = list(boxes)
    merged = True
    while merged:
        merged = False
        out: list[Box] = []
        for b in boxes:
            for i, o in enumerate(out):
                if _intersects(b, o):
                    out[i] = _union(b, o)
                    merged = True
                    break
            else:
                out.append(b)
        boxes = out
    return boxes


def changed_regions(prev: np.ndarray | None, cur: np.ndarray, pad: int = 16) -> list[Box]:
    """Boxes (image pixels) around the parts of ``cur`` that differ from ``prev`` (both
    ``H×W×C`` uint8 arrays). ``prev`` of another shape (or ``None``) → the whole frame."""
    H, W = cur.shape[:2]
    if prev is None or prev.shape != cur.shape:
        return [(0, 0, W, H)]
    diff = np.abs(prev.astype(np.int16) - cur.astype(np.int16)).max(axis=2) > DIFF_THRESHOLD
    th, tw = -(-H // TILE), -(-W // TILE)
    padded = np.zeros((th * TILE, tw * TILE), dtype=bool)
    padded[:H, :W] = diff
    tiles = padded.reshape(th, TILE, tw, TILE).any(axis=(1, 3))
    if not tiles.any():
        return []
    seen = np.zeros_like(tiles)
    boxes: list[Box] = []
    for ty, tx in zip(*(a.tolist() for a in np.nonzero(tiles))):
        if seen[ty, tx]:
            continue
        stack = [(ty, tx)]
        seen[ty, tx] = True
        y0, x0, y1, x1 = ty, tx, ty, tx
        while stack:
            y, x = stack.pop()
            y0, x0, y1, x1 = min(y0, y), min(x0, x), max(y1, y), max(x1, x)
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = y + dy, x + dx
                    if 0 <= ny < th and 0 <= nx < tw and tiles[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        stack.append((ny, nx))
        boxes.append((max(0, x0 * TILE - pad), max(0, y0 * TILE - pad),
                      min(W, (x1 + 1) * TILE + pad), min(H, (y1 + 1) * TILE + pad)))
    boxes = _merge_boxes(boxes)
    if sum((b[2] - b[0]) * (b[3] - b[1]) for b in boxes) > FULL_FRAME_SHARE * W * H:
        return [(0, 0, W, H)]
    return boxes


@dataclass
class FrameResult:
    """Outcome of redacting one frame: the painted ``image`` (RGB), the ``boxes`` painted,
    ``entities`` (entity → words painted), ``ocr_regions`` (boxes OCR'd), ``carried`` (boxes
    carried over from the previous frame), ``rescan_hits`` (words the re-scan pass flagged
    and painted in addition)."""

    image: Image.Image
    boxes: list[Box]
    entities: dict[str, int] = field(default_factory=dict)
    ocr_regions: list[Box] = field(default_factory=list)
    carried: int = 0
    rescan_hits: int = 0


class FrameRedactor:
    """Redacts the frames of one session in order, remembering the previous original frame and
    its boxes per stream (e.g. per monitor) for changed-region OCR.

    ``find``: the text layers (``text -> findings``); ``upscale`` / ``rescan_upscale`` (0 = no
    re-scan) / ``pad`` / ``timeout_s`` as in :class:`~demotrace.privacy.policy.RedactionPolicy`.
    """

    def __init__(self, find: Callable[[str], list[Finding]], *, upscale: int = 3, rescan_upscale: int = 2,
                 pad: int = 16, timeout_s: float = 20.0) -> None:
        self.find = find
        self.upscale = upscale
        self.rescan_upscale = rescan_upscale
        self.pad = pad
        self.timeout_s = timeout_s
        self._prev: dict[object, tuple[np.ndarray, list[Box]]] = {}

    def forget(self, stream: object = 0) -> None:
        """Drop the remembered frame of ``stream`` (after a failure: next frame OCR'd whole)."""
        self._prev.pop(stream, None)

    def _ocr_regions(self, img: Image.Image, regions: list[Box], upscale: int) -> list[Word]:
        words: list[Word] = []
        for b in regions:
            words += ocr_words(img.crop(b), upscale=upscale, offset=(b[0], b[1]), timeout_s=self.timeout_s)
        return words

    def redact(self, image: Image.Image, stream: object = 0) -> FrameResult:
        """Redact one frame of ``stream``. Raises what :func:`ocr_words` raises (and then
        forgets the stream, so nothing is carried over from a frame that was not redacted)."""
        rgb = image.convert("RGB")
        cur = np.asarray(rgb)
        prev = self._prev.pop(stream, None)
        if prev is None:
            regions = changed_regions(None, cur)
            carried: list[Box] = []
        else:
            regions = changed_regions(prev[0], cur, self.pad)
            carried = list(prev[1])
            grown = True
            while grown:  # a region touching a carried box absorbs it (decided afresh)
                grown = False
                keep = []
                for cb in carried:
                    hit = next((i for i, r in enumerate(regions) if _intersects(r, cb)), None)
                    if hit is None:
                        keep.append(cb)
                    else:
                        regions[hit] = _union(regions[hit], cb)
                        grown = True
                carried = keep
                regions = _merge_boxes(regions)
        words = self._ocr_regions(rgb, regions, self.upscale)
        flagged = flag_words(words, self.find)
        entities: dict[str, int] = {}
        for _, ent in flagged:
            entities[ent] = entities.get(ent, 0) + 1
        boxes = carried + [w.box for w, _ in flagged]
        out = fill_boxes(rgb, boxes)
        rescan_hits = 0
        if self.rescan_upscale and regions:
            again = flag_words(self._ocr_regions(out, regions, self.rescan_upscale), self.find)
            if again:
                rescan_hits = len(again)
                for _, ent in again:
                    entities[ent] = entities.get(ent, 0) + 1
                new = [w.box for w, _ in again]
                boxes += new
                out = fill_boxes(out, new)
        self._prev[stream] = (cur, boxes)
        return FrameResult(out, boxes, entities, regions, len(carried), rescan_hits)
