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
``DIFF_THRESHOLD``); each run of tile rows holding a change becomes a full-width band, padded
by ``ocr_region_pad_px`` up and down, and is OCR'd. Boxes found in the previous frame are
carried over (painted again) unless every tile under them changed — then the band's OCR decides
afresh. The first frame, a frame of another size, and the frame after a failure are OCR'd
whole.

Units: every box is ``(x0, y0, x1, y1)`` in image pixels of the frame (not desktop pixels),
right / bottom exclusive.
"""

from __future__ import annotations

import csv
import io
import math
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
#: Gaps between OCR words, as a share of the word box height, below which two words are read
#: as one token (each value gives one analysis of the row; see :func:`flag_words`).
JOIN_GAPS = (0.25, 0.6)

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
        # space so a key read as "ghp_R2d2" + "C3po…" is found, and both parts painted. A space
        # is about 0.3 of a word box's height in proportional fonts and 0.6+ in monospace ones,
        # while OCR splits inside a token leave 0.1–0.5: the row is analysed with both
        # thresholds (JOIN_GAPS) — the looser one only for e-mail and key shapes, since joining
        # ordinary words and numbers that loosely makes false card / phone matches.
        row_flags: dict[int, str] = {}
        for limit in JOIN_GAPS:
            spans, pos, seps = [], 0, []
            for i, w in enumerate(ws):
                if i:
                    gap = w.box[0] - ws[i - 1].box[2]
                    seps.append("" if gap < limit * max(1, w.box[3] - w.box[1]) else " ")
                    pos += len(seps[-1])
                spans.append((pos, pos + len(w.text)))
                pos += len(w.text)
            text = ws[0].text + "".join(sep + w.text for sep, w in zip(seps, ws[1:]))
            mapped = _to_digits(ws[0].text) + "".join(sep + _to_digits(w.text) for sep, w in zip(seps, ws[1:]))
            loose = limit != JOIN_GAPS[0]  # the looser join: e-mail and key shapes only
            hits: list[Finding] = [] if loose else list(find(text))
            if mapped != text and not loose:
                hits += find(mapped)
            for ent, rx in OCR_RULES.items():
                if loose and ent not in ("EMAIL_ADDRESS", "TOKEN_PREFIX"):
                    continue
                for t in {text, mapped}:
                    hits += [Finding(m.start(), m.end(), ent, 0.5, "ocr_rules") for m in rx.finditer(t)]
            for f in hits:
                for i, (s0, e0) in enumerate(spans):
                    if s0 < f.end and f.start < e0 and i not in row_flags:
                        row_flags[i] = f.entity
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


def changed_tiles(prev: np.ndarray, cur: np.ndarray) -> np.ndarray:
    """Boolean grid (rows × cols of :data:`TILE`-pixel tiles) of tiles where any channel of
    any pixel differs by more than :data:`DIFF_THRESHOLD` (arrays ``H×W×C`` uint8, same shape)."""
    H, W = cur.shape[:2]
    diff = np.abs(prev.astype(np.int16) - cur.astype(np.int16)).max(axis=2) > DIFF_THRESHOLD
    th, tw = -(-H // TILE), -(-W // TILE)
    padded = np.zeros((th * TILE, tw * TILE), dtype=bool)
    padded[:H, :W] = diff
    return padded.reshape(th, TILE, tw, TILE).any(axis=(1, 3))


def changed_regions(prev: np.ndarray | None, cur: np.ndarray, pad: int = 16) -> list[Box]:
    """Boxes (image pixels) to OCR in ``cur`` given the previous frame ``prev`` (both ``H×W×C``
    uint8 arrays): full-width bands over each run of tile rows that hold a change, grown by
    ``pad`` pixels up and down. Full width, because text runs horizontally: a single typed
    character changes a few tiles, but the value it completes spans the whole line. ``prev`` of
    another shape (or ``None``), or bands covering more than :data:`FULL_FRAME_SHARE` of the
    frame → the whole frame."""
    H, W = cur.shape[:2]
    if prev is None or prev.shape != cur.shape:
        return [(0, 0, W, H)]
    rows = changed_tiles(prev, cur).any(axis=1).tolist()
    bands: list[Box] = []
    r = 0
    while r < len(rows):
        if not rows[r]:
            r += 1
            continue
        r0 = r
        while r < len(rows) and rows[r]:
            r += 1
        y0, y1 = max(0, r0 * TILE - pad), min(H, r * TILE + pad)
        if bands and y0 <= bands[-1][3]:
            bands[-1] = (0, bands[-1][1], W, y1)
        else:
            bands.append((0, y0, W, y1))
    if sum(b[3] - b[1] for b in bands) > FULL_FRAME_SHARE * H:
        return [(0, 0, W, H)]
    return bands


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


#: Blank rows (image pixels, before upscaling) between crops stacked into one OCR image.
STACK_GAP = 24
#: Tallest stacked OCR image, in pixels after upscaling (tesseract's limit is 32767).
STACK_MAX_H = 12000


def trim_box(arr: np.ndarray, box: Box, pad: int) -> Box | None:
    """Shrink ``box`` horizontally to the columns that hold any contrast (max − min grey > 16),
    plus ``pad`` pixels; ``None`` when the box is uniform (nothing to read)."""
    x0, y0, x1, y1 = box
    g = arr[y0:y1, x0:x1].astype(np.int16)
    cols = np.nonzero((g.max(axis=0) - g.min(axis=0)).max(axis=-1) > 16)[0]
    if cols.size == 0:
        return None
    return (max(x0, x0 + int(cols[0]) - pad), y0, min(x1, x0 + int(cols[-1]) + 1 + pad), y1)


def ocr_stacked(crops: Sequence[tuple[Image.Image, Box]], *, upscale: int, timeout_s: float) -> list[list[Word]]:
    """OCR several crops with as few tesseract runs as possible: crops are stacked vertically
    (white gaps of :data:`STACK_GAP` px) into one image per run, sent through stdin (no
    unredacted pixels touch the disk), and words are mapped back to each crop's ``box`` (frame
    image pixels). Tesseract's start-up (~0.3 CPU-s for loading ``eng``) is paid once per run,
    not once per crop. Time limit per run: ``timeout_s`` × crops in it.

    Raises: as :func:`ocr_words`.
    """
    out: list[list[Word]] = [[] for _ in crops]
    i = 0
    while i < len(crops):
        group, h = [], 0
        while i < len(crops) and (not group or (h + crops[i][0].height + STACK_GAP) * upscale <= STACK_MAX_H):
            group.append(i)
            h += crops[i][0].height + STACK_GAP
            i += 1
        w = max(crops[j][0].width for j in group)
        sheet = Image.new("L", (w, h), 255)
        tops = []
        y = 0
        for j in group:
            sheet.paste(crops[j][0].convert("L"), (0, y))
            tops.append(y)
            y += crops[j][0].height + STACK_GAP
        words = ocr_words(sheet, upscale=upscale, timeout_s=timeout_s * len(group))
        for wd in words:
            cy = (wd.box[1] + wd.box[3]) / 2
            k = max(n for n, t in enumerate(tops) if t <= cy) if cy >= 0 else 0
            j = group[k]
            bx = crops[j][1]
            if cy > tops[k] + crops[j][0].height:  # in a gap: belongs to no crop
                continue
            dx, dy = bx[0], bx[1] - tops[k]
            x0, y0, x1, y1 = wd.box
            out[j].append(Word((x0 + dx, y0 + dy, min(x1 + dx, bx[2]), min(y1 + dy, bx[3])), wd.text, wd.conf,
                               (j, *wd.line[1:])))
    return out


class FrameRedactor:
    """Redacts the frames of one session in order, remembering the previous original frame and
    its boxes per stream (e.g. per monitor) for changed-region OCR.

    ``find``: the text layers (``text -> findings``); ``upscale`` / ``rescan_upscale`` (0 = no
    re-scan) / ``pad`` / ``timeout_s`` as in :class:`~demotrace.privacy.policy.RedactionPolicy`.
    :meth:`redact_batch` OCRs the changed regions of many frames in one tesseract run.
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

    def redact(self, image: Image.Image, stream: object = 0) -> FrameResult:
        """Redact one frame of ``stream`` (see :meth:`redact_batch`)."""
        return self.redact_batch([image], stream)[0]

    def redact_batch(self, images: Sequence[Image.Image], stream: object = 0, scale: float = 1.0) -> list[FrameResult]:
        """Redact consecutive frames of ``stream``. Regions depend only on the original frames,
        so all of them are OCR'd in one stacked run, then boxes are decided frame by frame (with
        carried boxes), painted, and the painted regions re-scanned in a second run.

        ``scale``: image pixels per desktop pixel of these frames (``Frame.scale``; the recorder
        may store frames downscaled, e.g. 0.5). The OCR upscale factors are divided by it
        (rounded up), so 10 px desktop text is OCR'd at the same size whatever the stored scale.

        Raises what :func:`ocr_words` raises — then the whole batch is unredacted and the caller
        must drop all of it; the stream is forgotten, so nothing is carried from it.
        """
        try:
            return self._redact_batch(images, stream, max(0.05, min(1.0, scale)))
        except BaseException:
            self._prev.pop(stream, None)
            raise

    def _redact_batch(self, images: Sequence[Image.Image], stream: object, scale: float) -> list[FrameResult]:
        up = math.ceil(self.upscale / scale - 1e-9)
        rescan_up = math.ceil(self.rescan_upscale / scale - 1e-9) if self.rescan_upscale else 0
        rgbs = [im.convert("RGB") for im in images]
        arrs = [np.asarray(im) for im in rgbs]
        prev = self._prev.get(stream)
        prev_arr = prev[0] if prev else None
        plans: list[list[Box]] = []
        crops: list[tuple[Image.Image, Box]] = []
        owner: list[int] = []
        for k, (im, arr) in enumerate(zip(rgbs, arrs)):
            regions = changed_regions(prev_arr, arr, self.pad)
            trimmed = [t for t in (trim_box(arr, r, self.pad) for r in regions) if t is not None]
            plans.append(trimmed)
            for b in trimmed:
                crops.append((im.crop(b), b))
                owner.append(k)
            prev_arr = arr
        words_per_crop = ocr_stacked(crops, upscale=up, timeout_s=self.timeout_s) if crops else []
        words_per_frame: list[list[Word]] = [[] for _ in rgbs]
        for k, ws in zip(owner, words_per_crop):
            words_per_frame[k] += ws
        results: list[FrameResult] = []
        prev_boxes = prev[1] if prev else []
        prev_arr = prev[0] if prev else None
        for k, (im, arr) in enumerate(zip(rgbs, arrs)):
            if prev_arr is None or prev_arr.shape != arr.shape:
                carried: list[Box] = []
            else:
                tiles = changed_tiles(prev_arr, arr)
                carried = [b for b in prev_boxes
                           if not tiles[b[1] // TILE:-(-b[3] // TILE), b[0] // TILE:-(-b[2] // TILE)].all()]
            flagged = flag_words(words_per_frame[k], self.find)
            entities: dict[str, int] = {}
            for _, ent in flagged:
                entities[ent] = entities.get(ent, 0) + 1
            boxes = list(dict.fromkeys(carried + [w.box for w, _ in flagged]))
            results.append(FrameResult(fill_boxes(im, boxes), boxes, entities, plans[k], len(carried), 0))
            prev_boxes, prev_arr = boxes, arr
        if rescan_up and crops:
            painted = [(results[k].image.crop(b), b) for k, (_, b) in zip(owner, crops)]
            again = ocr_stacked(painted, upscale=rescan_up, timeout_s=self.timeout_s)
            per_frame: list[list[Word]] = [[] for _ in rgbs]
            for k, ws in zip(owner, again):
                per_frame[k] += ws
            extra: list[Box] = []  # re-scan finds, carried on to later frames of the batch
            for k, ws in enumerate(per_frame):
                if extra and k:
                    tiles = changed_tiles(arrs[k - 1], arrs[k]) if arrs[k - 1].shape == arrs[k].shape else None
                    extra = [] if tiles is None else [
                        b for b in extra if not tiles[b[1] // TILE:-(-b[3] // TILE), b[0] // TILE:-(-b[2] // TILE)].all()]
                hits = flag_words(ws, self.find) if ws else []
                r = results[k]
                for _, ent in hits:
                    r.entities[ent] = r.entities.get(ent, 0) + 1
                r.rescan_hits = len(hits)
                extra += [w.box for w, _ in hits]
                new = [b for b in extra if b not in r.boxes]
                if new:
                    r.boxes.extend(new)
                    r.image = fill_boxes(r.image, new)
        self._prev[stream] = (arrs[-1], results[-1].boxes)
        return results
