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

import bisect
import csv
import io
import math
import os
import re
import shutil
import subprocess
import threading
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
#: 2 letters, 2 digits, 11–30 alphanumerics), e-mail-shaped words, IPv4-shaped numbers with
#: a dot read as a comma (tesseract read 198.51.100.23 as "198,51.100,23" at 24 px, scale 0.5),
#: the value after a ``password`` label whose colon was read as ``;`` (16 px at scale 0.5;
#: a rule with a group ``v`` paints that group only).
OCR_RULES: dict[str, re.Pattern[str]] = {
    "CREDIT_CARD": re.compile(r"(?<!\d)\d{4}[ \-]?\d{4}[ \-]?\d{4}[ \-]?\d{1,7}(?!\d)"),
    "IBAN_CODE": re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?\b"),
    "EMAIL_ADDRESS": re.compile(r"[\w.+\-]+\s?@\s?[\w\-]+(?:\.[\w\-]+)+"),
    "IP_ADDRESS": re.compile(r"(?<![\d.,])(?:\d{1,3}[.,]{1,2}){3}\d{1,3}(?![\d.,]*\d)"),
    "PASSWORD_LABEL": re.compile(r"(?i)\b(?:password|passwd|pwd)\s?[:;=]\s?(?P<v>\S+)"),
    "TOKEN_PREFIX": re.compile(r"(?:\bgh[pousr]_|\bgithub_pat_|\bxox[abposr]-|\b[sr]k_(?:live|test)_|\bAKIA|\bASIA|\bAIza|\beyJ)\S*"),
}
#: OCR-lenient e-mail shape for frames stored downscaled (``scale`` < 1; :func:`flag_words`
#: with ``lenient_email``). Tesseract reads the "@" of 8-12 px monospaced rows (DejaVu Sans Mono
#: 11-14 pt in an xterm at the recorder's default scale 0.5) as almost anything — ``g``, ``G``,
#: ``p``, ``e``, ``f``, ``@G``, ``©``, ``¢``, or `` D`` after a space — puts a space after the
#: local part's dot, reads its ``7`` as ``/`` or ``?`` and the domain's ``m`` as ``n`` (bug bash
#: 4, issue #4: ``jane.roe@example.net`` read ``jane. roegexanple.net`` at every upscale
#: x2..x6; ``ida.brandt7@example.org`` read ``ida.brandt? Dexanple.arg``). No glyph set tells the
#: "@" apart, so the rule is the shape around it: words (local part, dots possibly followed by
#: a space) running into a domain that ends in a dot (or a comma) and a TLD of
#: :data:`LENIENT_TLDS` (with OCR's misreads ``con``, ``arg``, ``orq``; a space after that dot
#: only before a TLD of three letters or more, so prose such as "done, in the" or "it. It" does
#: not match). In effect every bare domain name (``mirror.example
#: .net``) is boxed in such frames too — a host name and an address the "@" of which was misread
#: look the same to OCR; host names right after ``//`` (URLs) or ``@`` do not match, nor do
#: file names (``config.yaml``, ``logging.conf``, ``image.png``: not TLDs). Cost measured in
#: bench/privacy_leaks.py (half-scale options; docs/benchmarks.md).
LENIENT_TLDS = ("com", "con", "org", "orq", "arg", "net", "edu", "gov", "io", "co", "uk", "de", "fr",
                "nl", "eu", "us", "ca", "au", "ch", "at", "it", "es", "se", "no", "dk", "fi", "pl", "jp",
                "in", "br", "info", "biz", "dev", "me")
_LOCAL0 = r"[\w%+\-?|!'’]"
_LOCAL = r"[\w%+\-/?|!'’]"
OCR_EMAIL_LENIENT = re.compile(
    rf"(?<![\w/@:.\-])(?:{_LOCAL0}{_LOCAL}*[.,]\s?)*{_LOCAL0}{_LOCAL}*(?:\s?(?:[@©®¢DGQ]{{1,2}}|\(a\)))?"
    r"[\w\-]*(?:[.,]\s?[\w\-]+)*(?:[.,](?:" + "|".join(LENIENT_TLDS) + r")|\.\s(?:"
    + "|".join(t for t in LENIENT_TLDS if len(t) > 2) + r"))(?![A-Za-z0-9])")

#: AWS access key id with its ``KI`` misread, for frames stored downscaled (with
#: :data:`OCR_EMAIL_LENIENT`): DejaVu Sans Mono 17 px at scale 0.5 read ``AKIAIOSFODNN7EXAMPLE``
#: as ``AKTAIOSFOONN7EXAMPLE`` / ``AXTAIOSFOONN7EXAMPLE`` (bench/privacy_leaks.py, half-scale
#: part); 4 + 16 upper-case letters or digits as AWS documents the id.
OCR_AWS_LENIENT = re.compile(r"\bA[KX][IT1lL|]A[A-Z0-9]{16}\b")
#: Token prefixes whose underscore OCR dropped, for frames stored downscaled (with
#: :data:`OCR_EMAIL_LENIENT`): a real xterm in DejaVu Sans Mono 12 pt at scale 0.5 read
#: ``ghp_R2d2C3po…`` as ``ghp R2d2C3poX9k7L lmBNSb6…`` (underscores sit in the cell's bottom
#: pixel row, which the 2x reduction greys out), and the GitHub token stayed readable
#: (bench/privacy_leaks.py, half-scale part). A space in place of the prefix's underscore,
#: then 4+ letters or digits; the key's other words are painted as its neighbours
#: (:data:`TOKEN_ENTITIES`).
OCR_TOKEN_LENIENT = re.compile(r"\b(?:gh[pousr]|github_pat|[sr]k[_ ](?:live|test))[_ ][A-Za-z0-9]{4,}")

#: The OCR-lenient rules :func:`flag_words` adds for frames stored downscaled, with the entity
#: each match is flagged as.
LENIENT_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("EMAIL_ADDRESS", OCR_EMAIL_LENIENT), ("AWS_ACCESS_KEY", OCR_AWS_LENIENT), ("TOKEN_PREFIX", OCR_TOKEN_LENIENT))

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
    out = proc.stdout.decode("utf-8", errors="replace")
    if "\ttext" not in out.split("\n", 1)[0]:
        raise RedactionError("OCR produced no TSV header")
    return parse_tsv(out, upscale=upscale, offset=offset)


def parse_tsv(tsv: str, *, upscale: float, offset: tuple[int, int] = (0, 0)) -> list[Word]:
    """Words of tesseract's TSV output (level-5 rows; a header row, if present, is skipped),
    boxes divided by ``upscale`` (rounded outwards) and moved by ``offset`` (frame image px)."""
    ox, oy = offset
    words = []
    for r in csv.reader(io.StringIO(tsv), delimiter="\t", quoting=csv.QUOTE_NONE):
        if len(r) < 12 or r[0] != "5":
            continue
        text = r[11].strip()
        if not text:
            continue
        left, top, w, h = (int(v) for v in r[6:10])
        x0 = ox + math.floor(left / upscale)
        y0 = oy + math.floor(top / upscale)
        x1 = ox + math.ceil((left + w) / upscale)
        y1 = oy + math.ceil((top + h) / upscale)
        words.append(Word((x0, y0, x1, y1), text, float(r[10]), (int(r[1]), int(r[2]), int(r[3]), int(r[4]))))
    return words


_TESSDATA: dict[str, str] = {}


def tessdata_dir() -> str:
    """Folder holding ``eng.traineddata`` for the in-process engine: ``$TESSDATA_PREFIX`` if
    set, else the folder Debian's ``tesseract`` binary reports (``tesseract --list-langs``;
    package tesseract-ocr-eng; cached per binary path). The OCR install is therefore the same
    for both engines: without the binary on ``PATH`` there is no OCR and sealing drops frames.

    Raises:
        RedactionError: no binary (see :func:`tesseract_path`), or no ``eng`` data there.
    """
    env = os.environ.get("TESSDATA_PREFIX")
    exe = tesseract_path()
    if env:
        path = env
    elif exe in _TESSDATA:
        path = _TESSDATA[exe]
    else:
        try:
            out = subprocess.run([exe, "--list-langs"], capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RedactionError(f"OCR could not run {exe} --list-langs: {exc}") from exc
        m = re.search(r'"([^"]+)"', out.stdout + out.stderr)
        if not m:
            raise RedactionError(f"OCR data folder unknown: {exe} --list-langs said {(out.stdout + out.stderr)[:200]!r}")
        path = _TESSDATA[exe] = m.group(1)
    if not os.path.isfile(os.path.join(path, "eng.traineddata")):
        raise RedactionError(f"OCR unavailable: no eng.traineddata in {path} (install Debian package tesseract-ocr-eng)")
    return path.rstrip("/") + "/"


class TesseractEngine:
    """Tesseract through its C++ API in this process (``tesserocr``: its wheel bundles
    libtesseract 5.5; the ``eng`` model is Debian's, see :func:`tessdata_dir`). One engine
    loads the model once and is reused for every run; no process is spawned and no image is
    encoded. Measured on 1280x800 screens: about 0.65x the CPU of the same OCR through the
    ``tesseract`` command (docs/benchmarks.md, privacy section). Not thread-safe: one per
    :class:`FrameRedactor`, calls serialised by a lock.

    Fail-closed: import, start-up and recognition failures raise :class:`RedactionError`; a
    run longer than its time limit is cancelled by tesseract itself and raises
    :class:`RedactionTimeout`.
    """

    def __init__(self, psm: int = 11) -> None:
        self.psm = psm
        self._api: object | None = None
        self._path: str | None = None
        self._lock = threading.Lock()

    def _ready(self) -> object:
        path = tessdata_dir()
        if self._api is not None and path == self._path:
            return self._api
        try:
            import tesserocr
        except ImportError as exc:
            raise RedactionError("OCR unavailable: the tesserocr package is not installed (pip install tesserocr)") from exc
        try:
            api = tesserocr.PyTessBaseAPI(path=path, lang="eng", psm=self.psm)
        except RuntimeError as exc:
            raise RedactionError(f"OCR could not start with data {path}: {exc}") from exc
        from .ocr_quiet import quiet_engine

        quiet_engine(api)  # its libraries' own stderr lines are not the person's business (F16)
        self.close()
        self._api, self._path = api, path
        return api

    def words(self, image: Image.Image, *, upscale: float = 3, offset: tuple[int, int] = (0, 0),
              timeout_s: float = 20.0) -> list[Word]:
        """As :func:`ocr_words` (grey, BICUBIC ``upscale``, sparse-text mode, TSV words mapped
        back to frame image pixels), in this process.

        Raises:
            RedactionError: engine unavailable or failed. RedactionTimeout: over ``timeout_s``.
        """
        g = image.convert("L")
        if upscale != 1:
            g = g.resize((round(g.width * upscale), round(g.height * upscale)), Image.Resampling.BICUBIC)
        with self._lock:
            api = self._ready()
            try:
                api.SetImage(g)  # type: ignore[attr-defined]
                ok = api.Recognize(timeout=max(1, int(timeout_s * 1000)))  # type: ignore[attr-defined]
                tsv = api.GetTSVText(0) if ok else ""  # type: ignore[attr-defined]
            except RuntimeError as exc:
                raise RedactionError(f"OCR failed on a {image.width}x{image.height} region: {exc}") from exc
            if not ok:
                raise RedactionTimeout(f"OCR exceeded {timeout_s:g} s on a {image.width}x{image.height} region")
        return parse_tsv(tsv, upscale=upscale, offset=offset)

    def close(self) -> None:
        """Free the model (it is loaded again on next use)."""
        if self._api is not None:
            self._api.End()  # type: ignore[attr-defined]
            self._api = None


def _to_digits(word: str) -> str:
    core = re.sub(r"[^0-9A-Za-z|]", "", word)
    if core and sum(c.isdigit() for c in core) * 2 >= len(core):
        return word.translate(_CONFUSABLE)
    return word


def flag_words(words: Sequence[Word], find: Callable[[str], list[Finding]], *,
               small_px: int = 0, arr: np.ndarray | None = None,
               lenient_email: bool = False) -> list[tuple[Word, str]]:
    """Words to paint: those overlapped by a finding of ``find`` on their line's text (as read
    and with confusables mapped) or by an :data:`OCR_RULES` match. Returns ``(word, entity)``.

    ``small_px`` (image pixels, 0 = off): a row of words at most this tall (top of its highest
    word box to the bottom of its lowest, at least 3 px, holding a word of two or more letters
    or digits, or three words) is painted whole — every word, plus one box from its first
    word to its last — as entity ``SMALL_TEXT``, whatever OCR read there (see
    :data:`SMALL_TEXT_PX`).

    ``arr``: the frame the words were read from (``H×W×3`` uint8), if known: an e-mail flagged
    in part also gets one box over the whole address, across words and unread glyphs
    (:func:`_email_span`).

    ``lenient_email``: also flag :data:`OCR_EMAIL_LENIENT` matches (an "@" misread as a letter)
    as ``EMAIL_ADDRESS``, :data:`OCR_AWS_LENIENT` ones as ``AWS_ACCESS_KEY`` and
    :data:`OCR_TOKEN_LENIENT` ones as ``TOKEN_PREFIX`` — for OCR of frames stored downscaled
    only."""
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
    found = _find_all([t for ws in rows for t in _row_text(ws, JOIN_GAPS[0])[:2]], find)
    for ws in rows:
        top, bottom = min(w.box[1] for w in ws), max(w.box[3] for w in ws)
        if small_px and 3 <= bottom - top <= small_px and (
                len(ws) >= 3 or any(sum(c.isalnum() for c in w.text) >= 2 for w in ws)):
            span = Word((min(w.box[0] for w in ws), top, max(w.box[2] for w in ws), bottom), "", 0.0, ws[0].line)
            for w in (*ws, span):
                flagged[id(w)] = (w, "SMALL_TEXT")
            continue
        # Words whose boxes (nearly) touch are one token split by OCR: join them without a
        # space so a key read as "ghp_R2d2" + "C3po…" is found, and both parts painted. A space
        # is about 0.3 of a word box's height in proportional fonts and 0.6+ in monospace ones,
        # while OCR splits inside a token leave 0.1–0.5: the row is analysed with both
        # thresholds (JOIN_GAPS) — the looser one only for e-mail and key shapes, since joining
        # ordinary words and numbers that loosely makes false card / phone matches.
        row_flags: dict[int, str] = {}
        for limit in JOIN_GAPS:
            text, mapped, spans = _row_text(ws, limit)
            loose = limit != JOIN_GAPS[0]  # the looser join: e-mail and key shapes only
            hits: list[Finding] = [] if loose else list(found[text])
            if mapped != text and not loose:
                hits += found[mapped]
            for ent, rx in (*OCR_RULES.items(), *(LENIENT_RULES if lenient_email else ())):
                if loose and ent not in ("EMAIL_ADDRESS", "TOKEN_PREFIX"):
                    continue
                for t in {text, mapped}:
                    hits += [Finding(*m.span("v" if "v" in rx.groupindex else 0), ent, 0.5, "ocr_rules") for m in rx.finditer(t)]
            for f in hits:
                for i, (s0, e0) in enumerate(spans):
                    if s0 < f.end and f.start < e0 and i not in row_flags:
                        row_flags[i] = f.entity
        # Glyphs OCR left unread between two words (a wide gap holding ink): the words are one
        # token. E-mail shapes across such a gap are flagged, even with the domain's dot unread.
        unread = frozenset(i for i in range(1, len(ws)) if
                           ws[i].box[0] - ws[i - 1].box[2] > UNREAD_GAP * max(1, ws[i].box[3] - ws[i].box[1])
                           and _gap_inked(arr, ws[i - 1], ws[i]))
        if unread:
            text, _, spans = _row_text(ws, JOIN_GAPS[-1], unread)
            cuts = [spans[i][0] for i in unread]
            for m in _EMAIL_UNREAD.finditer(text):
                if any(m.start() < c < m.end() for c in cuts):
                    for i, (s0, e0) in enumerate(spans):
                        if s0 < m.end() and m.start() < e0 and i not in row_flags:
                            row_flags[i] = "EMAIL_ADDRESS"
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
        for i in sorted(i for i, ent in row_flags.items() if ent == "EMAIL_ADDRESS"):
            span = _email_span(ws, i, arr)
            if span is not None:
                w = Word(span, "", 0.0, ws[i].line)
                flagged[id(w)] = (w, "EMAIL_ADDRESS")
    return list(flagged.values())


#: A gap between two OCR words wider than this × the word height that holds ink is glyphs OCR
#: did not read (a space is 0.3-0.8 of the height; bug bash, issue #4: "maria.kowalski@…" at
#: 11 pt, scale 0.5, read "maria," "kor" [21 px unread] "i@exa" [14 px] "Je.net", h = 7 px).
UNREAD_GAP = 1.2
#: E-mail shape across unread glyphs (the domain's dot may be among them).
_EMAIL_UNREAD = re.compile(r"[\w.+\-,]+\s?@\s?[\w\-.,]{2,}")
#: Characters of an e-mail's local part / domain as OCR reads them (``,`` and ``'`` are
#: misread dots), for :func:`_email_span`.
_LOCAL_CHARS = re.compile(r"^[\w.+\-,'’|]+$")
_DOMAIN_CHARS = re.compile(r"^[\w.\-,]+$")
#: An e-mail word whose domain is complete (ends in a dot and 2+ letters).
_DOMAIN_DONE = re.compile(r"@[\w\-]+(?:[.,][\w\-]+)*[.,][A-Za-z]{2,}$")


def _gap_inked(arr: np.ndarray | None, a: Word, b: Word) -> bool:
    """True when the columns between words ``a`` and ``b`` (left to right) hold ink — glyphs
    OCR did not read — in more than half of them (ink as in :func:`small_text_boxes`)"""
    if arr is None:
        return False
    x0, x1 = a.box[2], b.box[0]
    y0, y1 = min(a.box[1], b.box[1]), max(a.box[3], b.box[3])
    if x1 - x0 < 2 or y1 <= y0:
        return False
    lo = max(0, x0 - 8 * (y1 - y0))
    g = arr[y0:y1, lo:x1 + 8 * (y1 - y0), :3].astype(np.int16).sum(axis=2) // 3
    ink = np.abs(g - np.median(g, axis=1, keepdims=True)) > INK_DIFF
    cols = ink[:, x0 - lo:x1 - lo].any(axis=0)
    return bool(cols.mean() > 0.5)


def _email_span(ws: Sequence[Word], i: int, arr: np.ndarray | None) -> Box | None:
    """One box over the whole e-mail address around the flagged word ``ws[i]`` of a row
    (words sorted left to right), or ``None`` when the word alone is the address.

    OCR of small text at scale 0.5 splits an address into words and leaves glyphs between
    them unread (bug bash, issue #4: 11 pt DejaVu Sans in Tk read "maria," "kor" … "i@exa",
    only "i@example.net" was flagged and "maria.kowalsk" stayed readable). The span grows left
    from the word across words made of local-part characters that touch it (gap under the
    looser :data:`JOIN_GAPS` × height) or are separated by a gap OCR left unread (inked, see
    :func:`_gap_inked`); it stops at a word holding other characters (``Contact:``) and at a
    blank gap (a space). It grows right the same way across domain characters while the
    address read so far has no complete domain (``i@exa``). The box spans every word of the
    chain and the gaps between them, in image pixels."""
    h = max(1, ws[i].box[3] - ws[i].box[1])
    lo = hi = i
    text = ws[i].text
    while lo > 0 and _LOCAL_CHARS.match(ws[lo - 1].text):
        gap = ws[lo].box[0] - ws[lo - 1].box[2]
        if gap < JOIN_GAPS[-1] * h or (gap > UNREAD_GAP * h and _gap_inked(arr, ws[lo - 1], ws[lo])):
            lo -= 1
            text = ws[lo].text + text
        else:
            break
    while "@" in text and not _DOMAIN_DONE.search(text) and hi + 1 < len(ws) and _DOMAIN_CHARS.match(ws[hi + 1].text):
        gap = ws[hi + 1].box[0] - ws[hi].box[2]
        if gap < JOIN_GAPS[-1] * h or (gap > UNREAD_GAP * h and _gap_inked(arr, ws[hi], ws[hi + 1])):
            hi += 1
            text += ws[hi].text
        else:
            break
    if lo == hi:
        return None
    chain = ws[lo:hi + 1]
    return (min(w.box[0] for w in chain), min(w.box[1] for w in chain),
            max(w.box[2] for w in chain), max(w.box[3] for w in chain))


#: Between rows analysed in one call of the text layers (:func:`_find_all`): no pattern, phone
#: matcher or token rule matches across a NUL and a line break, so findings stay in their row.
ROW_SEP = "\n\x00\n"


def _row_text(ws: Sequence[Word], limit: float, joined: frozenset[int] = frozenset()) -> tuple[str, str, list[tuple[int, int]]]:
    """A row's text as read and with confusables mapped, words joined without a space when
    their gap is under ``limit`` × the word height or the word's index is in ``joined``, and
    each word's character span."""
    spans, pos, seps = [], 0, []
    for i, w in enumerate(ws):
        if i:
            gap = w.box[0] - ws[i - 1].box[2]
            seps.append("" if i in joined or gap < limit * max(1, w.box[3] - w.box[1]) else " ")
            pos += len(seps[-1])
        spans.append((pos, pos + len(w.text)))
        pos += len(w.text)
    text = ws[0].text + "".join(sep + w.text for sep, w in zip(seps, ws[1:]))
    mapped = _to_digits(ws[0].text) + "".join(sep + _to_digits(w.text) for sep, w in zip(seps, ws[1:]))
    return text, mapped, spans


def _find_all(texts: Sequence[str], find: Callable[[str], list[Finding]]) -> dict[str, list[Finding]]:
    """Findings of ``find`` for each distinct text, from ONE call over the texts joined by
    :data:`ROW_SEP` (the text layers cost mostly per call: a frame's rows analysed together
    took about a third of the time of one call per row); offsets are per text."""
    uniq = list(dict.fromkeys(texts))
    out: dict[str, list[Finding]] = {t: [] for t in uniq}
    if not uniq:
        return out
    starts, pos = [], 0
    for t in uniq:
        starts.append(pos)
        pos += len(t) + len(ROW_SEP)
    for f in find(ROW_SEP.join(uniq)):
        k = bisect.bisect_right(starts, f.start) - 1
        o = starts[k]
        end = min(f.end, o + len(uniq[k]))
        out[uniq[k]].append(Finding(f.start - o, end - o, f.entity, f.score, f.layer))
    return out


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
    diff = (np.maximum(prev, cur) - np.minimum(prev, cur)).max(axis=2) > DIFF_THRESHOLD  # uint8, no overflow
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


#: Rows of OCR'd text at most this tall, in stored-image pixels, are painted whole
#: (:func:`flag_words`): tesseract does not read them reliably at any upscale. Measured on a
#: real xterm (misc-fixed 6x13 bitmap font) recorded at the default frame scale 0.5 (rows about
#: 5-6 px): no card number, e-mail or key was read at x2..x8 with BICUBIC, LANCZOS or bilinear
#: resampling, binarised or not, in sparse-text or block mode; DejaVu Sans 12 px at scale 0.5
#: read "4111 1111 1111 1111" as "4211 1221 11221112" (docs/benchmarks.md, privacy section).
#: At scale 1.0 this only touches text of about 7 px and less.
SMALL_TEXT_PX = 6
#: Tesseract page-segmentation mode of the second read of frames stored downscaled
#: (:attr:`FrameRedactor.block_read`): 6 = one uniform block of text. Sparse-text mode (11, the
#: first read) split DejaVu Sans Mono 11-12 pt xterm rows at scale 0.5 into fragments
#: ("jan", "oes", "bexample.f"); block mode read them whole ("jane. roegexample.net") at every
#: upscale x2..x4, BICUBIC or LANCZOS (docs/benchmarks.md, privacy section, bug bash 4).
BLOCK_PSM = 6
#: Blank rows (image pixels, before upscaling) between crops stacked into one OCR image.
STACK_GAP = 24
#: Row height (pixels after upscaling) that :func:`band_upscale` aims at, and the smallest
#: upscale it picks (steps of 0.25). Tesseract's recognition time grows with the upscale
#: (one 12 px screen: 0.47 CPU-s at 1x, 0.77 at 2x, 0.93 at 3x). Measured with
#: bench/privacy_leaks.py's frame sequences (10, 12, 16 px DejaVu Sans, one run each):
#: upscale 1 everywhere leaked an IP at 16 px and a NINO and an IP at 10 px; row 18 / min 1.25
#: leaked an IP at 10 px; row 20 / min 1.5 leaked nothing and sealed all-new 12 px screens at
#: 1.35 frames/CPU-s (fixed 3x: 0.87).
OCR_ROW_PX = 20
OCR_MIN_UPSCALE = 1.5
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


def text_height(arr: np.ndarray, box: Box) -> int | None:
    """Typical height, in image pixels, of the text rows in ``box`` of the frame ``arr``
    (``H×W×3`` uint8): the median height of the runs of rows in which more than two pixels
    differ from the row's median grey by more than 24 (two allowed for window borders; columns
    inked in 80 % of the inked rows or more — a scrollbar, a frame — left out); runs
    one blank row apart are one row (an "i" dot and its stem), unless that makes the median
    taller than :data:`MERGED_ROWS_PX` (lines of dense text merged: then contiguous runs only).
    ``None`` when nothing in the box differs."""
    x0, y0, x1, y1 = box
    g = arr[y0:y1, x0:x1, :3].astype(np.int16).sum(axis=2) // 3
    ink = np.abs(g - np.median(g, axis=1, keepdims=True)) > 24
    active = ink.sum(axis=1) > 2
    if active.sum() >= 8:  # vertical structures (a scrollbar, a border) ink every row: not text
        ink = ink[:, ink[active].mean(axis=0) < 0.8]
    rows = np.nonzero(ink.sum(axis=1) > 2)[0].tolist()
    if not rows:
        return None

    def median_run(gap: int) -> int:
        runs: list[list[int]] = []
        for r in rows:
            if runs and r - runs[-1][1] <= gap:
                runs[-1][1] = r
            else:
                runs.append([r, r])
        return int(np.median([r1 + 1 - r0 for r0, r1 in runs]))

    h = median_run(2)
    if h > MERGED_ROWS_PX:
        # dense text whose lines are one blank row apart merged into one block (bug bash 4:
        # an xterm at 12 pt stored at scale 0.5, 9.5 px cells, measured 75 px, OCR'd at 1.5x
        # and misread): count contiguous rows only (an "i" dot then counts as a row of its
        # own — a lower estimate, i.e. a larger upscale: slower, never less readable)
        h = min(h, median_run(1))
    return h


#: A "row" of text taller than this (image pixels) from :func:`text_height`'s first pass is
#: taken to be several lines one blank row apart and measured again without bridging gaps:
#: :data:`OCR_ROW_PX` plus a margin — at that height OCR needs no upscale anyway.
MERGED_ROWS_PX = 24


def band_upscale(height: int | None, up_max: int) -> float:
    """OCR upscale for a band whose text rows are ``height`` image pixels tall: enough to make
    them :data:`OCR_ROW_PX` tall, at least :data:`OCR_MIN_UPSCALE`, at most ``up_max`` (the
    policy's ``ocr_upscale`` divided by the frame scale)."""
    if not height:
        return up_max
    return max(min(OCR_MIN_UPSCALE, up_max), min(float(up_max), math.ceil(4 * OCR_ROW_PX / height) / 4))


def ocr_stacked(crops: Sequence[tuple[Image.Image, Box]], *, upscale: float, timeout_s: float,
                ocr: Callable[..., list[Word]] | None = None, gap: int = 0) -> list[list[Word]]:
    """OCR several crops with as few tesseract runs as possible: crops are stacked vertically
    (white gaps of :data:`STACK_GAP` px) into one image per run, sent through stdin (no
    unredacted pixels touch the disk), and words are mapped back to each crop's ``box`` (frame
    image pixels). Tesseract's start-up (~0.3 CPU-s for loading ``eng``) is paid once per run,
    not once per crop. Time limit per run: ``timeout_s`` × crops in it.

    ``ocr``: the OCR function (``ocr(image, upscale=, timeout_s=)``, e.g.
    :meth:`TesseractEngine.words`); default :func:`ocr_words` (the command). ``gap``: blank
    rows between crops (0 = :data:`STACK_GAP`).

    Raises: as :func:`ocr_words`.
    """
    run = ocr or ocr_words
    gap = gap or STACK_GAP
    out: list[list[Word]] = [[] for _ in crops]
    i = 0
    while i < len(crops):
        group, h = [], 0
        while i < len(crops) and (not group or (h + crops[i][0].height + gap) * upscale <= STACK_MAX_H):
            group.append(i)
            h += crops[i][0].height + gap
            i += 1
        w = max(crops[j][0].width for j in group)
        sheet = Image.new("L", (w, h), 255)
        tops = []
        y = 0
        for j in group:
            sheet.paste(crops[j][0].convert("L"), (0, y))
            tops.append(y)
            y += crops[j][0].height + gap
        words = run(sheet, upscale=upscale, timeout_s=timeout_s * len(group))
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
    re-scan) / ``pad`` / ``timeout_s`` as in :class:`~demotrace.privacy.policy.RedactionPolicy`;
    ``small_text_px``: in frames stored downscaled (``scale`` < 1), rows of text at most this
    tall in the stored image (image pixels; 0 = off) are painted whatever OCR read in them
    (:data:`SMALL_TEXT_PX`, :func:`small_text_boxes`). :meth:`redact_batch`
    OCRs the changed regions of many frames in one run of the in-process
    :class:`TesseractEngine`.
    """

    def __init__(self, find: Callable[[str], list[Finding]], *, upscale: int = 3, rescan_upscale: int = 2,
                 pad: int = 16, timeout_s: float = 20.0, small_text_px: int | None = None,
                 lenient_email: bool = True, block_read: bool = True) -> None:
        self.find = find
        self.upscale = upscale
        self.rescan_upscale = rescan_upscale
        self.pad = pad
        self.timeout_s = timeout_s
        self.small_text_px = SMALL_TEXT_PX if small_text_px is None else small_text_px
        #: frames stored downscaled: flag :data:`OCR_EMAIL_LENIENT`, :data:`OCR_AWS_LENIENT` and
        #: :data:`OCR_TOKEN_LENIENT` matches too
        self.lenient_email = lenient_email
        #: frames stored downscaled: read every changed region a second time in block mode
        #: (:data:`BLOCK_PSM`) and flag what either read finds
        self.block_read = block_read
        self.engine = TesseractEngine()
        self.block_engine = TesseractEngine(psm=BLOCK_PSM)
        self._prev: dict[object, tuple[np.ndarray, list[Box]]] = {}

    def close(self) -> None:
        """Free the OCR models (loaded again on next use)."""
        self.engine.close()
        self.block_engine.close()

    def forget(self, stream: object = 0) -> None:
        """Drop the remembered frame of ``stream`` (after a failure: next frame OCR'd whole)."""
        self._prev.pop(stream, None)

    def redact(self, image: Image.Image, stream: object = 0) -> FrameResult:
        """Redact one frame of ``stream`` (see :meth:`redact_batch`)."""
        return self.redact_batch([image], stream)[0]

    def redact_batch(self, images: Sequence[Image.Image], stream: object = 0, scale: float = 1.0) -> list[FrameResult]:
        """Redact consecutive frames of ``stream``. Regions depend only on the original frames,
        so all of them are OCR'd in one stacked run, then boxes are decided frame by frame (with
        carried boxes), painted, and the rows around the newly painted boxes re-scanned in a
        second run (:func:`rescan_strips`).

        ``scale``: image pixels per desktop pixel of these frames (``Frame.scale``; the recorder
        may store frames downscaled, e.g. 0.5). The OCR upscale factors are divided by it
        (rounded up), so 10 px desktop text is OCR'd at the same size whatever the stored scale.

        Raises what :meth:`TesseractEngine.words` raises — then the whole batch is unredacted
        and the caller must drop all of it; the stream is forgotten, so nothing is carried from
        it.
        """
        try:
            return self._redact_batch(images, stream, max(0.05, min(1.0, scale)))
        except BaseException:
            self._prev.pop(stream, None)
            raise

    def _flag(self, words: Sequence[Word], small_px: int, arr: np.ndarray | None = None,
              lenient: bool = False) -> list[tuple[Word, str]]:
        return flag_words(words, self.find, small_px=small_px, arr=arr, lenient_email=lenient)

    def _redact_batch(self, images: Sequence[Image.Image], stream: object, scale: float) -> list[FrameResult]:
        up = math.ceil(self.upscale / scale - 1e-9)
        rescan_up = math.ceil(self.rescan_upscale / scale - 1e-9) if self.rescan_upscale else 0
        small = self.small_text_px if scale < 1 else 0  # only frames stored downscaled
        ocr = self.engine.words
        rgbs = [im.convert("RGB") for im in images]
        arrs = [np.asarray(im) for im in rgbs]
        prev = self._prev.get(stream)
        prev_arr = prev[0] if prev else None
        plans: list[list[Box]] = []
        crops: list[tuple[Image.Image, Box]] = []
        owner: list[int] = []
        ups: list[float] = []
        for k, (im, arr) in enumerate(zip(rgbs, arrs)):
            regions = changed_regions(prev_arr, arr, self.pad)
            trimmed = [t for t in (trim_box(arr, r, self.pad) for r in regions) if t is not None]
            plans.append(trimmed)
            for b in trimmed:
                crops.append((im.crop(b), b))
                owner.append(k)
                ups.append(band_upscale(text_height(arr, b), up))
            prev_arr = arr
        def read(engine_ocr: Callable[..., list[Word]]) -> list[list[Word]]:
            """The words of every frame's crops (in crop order): one stacked run per upscale factor."""
            per_crop: list[list[Word]] = [[] for _ in crops]
            for u in sorted(set(ups)):
                idx = [i for i, v in enumerate(ups) if v == u]
                for i, ws in zip(idx, ocr_stacked([crops[i] for i in idx], upscale=u, timeout_s=self.timeout_s,
                                                  ocr=engine_ocr)):
                    per_crop[i] = ws
            per_frame: list[list[Word]] = [[] for _ in rgbs]
            for k, ws in zip(owner, per_crop):
                per_frame[k] += ws
            return per_frame

        words_per_frame = read(ocr)
        # frames stored downscaled: a second read in block mode (see BLOCK_PSM), flagged apart
        # (its words overlap the first read's, so the two are not merged into one row text)
        block_per_frame = (read(self.block_engine.words) if scale < 1 and self.block_read and crops
                           else [[] for _ in rgbs])
        lenient = scale < 1 and self.lenient_email
        results: list[FrameResult] = []
        new_boxes: list[list[Box]] = []
        prev_boxes = prev[1] if prev else []
        prev_arr = prev[0] if prev else None
        for k, (im, arr) in enumerate(zip(rgbs, arrs)):
            if prev_arr is None or prev_arr.shape != arr.shape:
                carried: list[Box] = []
            else:
                tiles = changed_tiles(prev_arr, arr)
                carried = [b for b in prev_boxes
                           if not tiles[b[1] // TILE:-(-b[3] // TILE), b[0] // TILE:-(-b[2] // TILE)].all()]
            flagged = self._flag(words_per_frame[k], small, arr, lenient)
            if block_per_frame[k]:
                flagged += self._flag(block_per_frame[k], small, arr, lenient)
            for region in plans[k] if small else ():
                flagged += [(Word(b, "", 0.0, (0, 0, 0, 0)), "SMALL_TEXT")
                            for b in small_text_boxes(arr, region, small)]
            entities: dict[str, int] = {}
            for _, ent in flagged:
                entities[ent] = entities.get(ent, 0) + 1
            fresh = list(dict.fromkeys(w.box for w, _ in flagged))
            boxes = list(dict.fromkeys(carried + fresh))
            new_boxes.append([b for b in fresh if b not in carried])
            results.append(FrameResult(fill_boxes(im, boxes), boxes, entities, plans[k], len(carried), 0))
            prev_boxes, prev_arr = boxes, arr
        if rescan_up:
            strips: list[tuple[Image.Image, Box]] = []
            strip_owner: list[int] = []
            for k, r in enumerate(results):
                for b in rescan_strips(new_boxes[k], plans[k], r.image.size):
                    strips.append((r.image.crop(b), b))
                    strip_owner.append(k)
            again = ocr_stacked(strips, upscale=rescan_up, timeout_s=self.timeout_s, ocr=ocr) if strips else []
            per_frame: list[list[Word]] = [[] for _ in rgbs]
            for k, ws in zip(strip_owner, again):
                per_frame[k] += ws
            extra: list[Box] = []  # re-scan finds, carried on to later frames of the batch
            for k, ws in enumerate(per_frame):
                if extra and k:
                    tiles = changed_tiles(arrs[k - 1], arrs[k]) if arrs[k - 1].shape == arrs[k].shape else None
                    extra = [] if tiles is None else [
                        b for b in extra if not tiles[b[1] // TILE:-(-b[3] // TILE), b[0] // TILE:-(-b[2] // TILE)].all()]
                hits = self._flag(ws, small, arrs[k], lenient) if ws else []
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


#: Width of the vertical slabs (image pixels) in which :func:`small_text_boxes` looks for rows
#: (windows side by side have their rows at different heights).
SLAB_PX = 160
#: Grey difference (0..255) from the row's median in the slab above which a pixel counts as ink.
INK_DIFF = 48


def small_text_boxes(arr: np.ndarray, region: Box, small_px: int) -> list[Box]:
    """Boxes over rows of small text in ``region`` of the frame ``arr`` (``H×W×3`` uint8),
    found from the pixels alone (no OCR): in vertical slabs of :data:`SLAB_PX`, pixels
    differing from their row's median grey in the slab by more than :data:`INK_DIFF` are ink,
    and a row with more than two of them (two allowed for window borders) is a text row; a run
    of text rows taller than ``small_px`` is split at its rows holding under a tenth of its
    busiest row's ink (lines touching through descenders: xterm's 6x13 rows at scale 0.5); runs
    or parts of 3..``small_px`` rows are text too small for OCR (:data:`SMALL_TEXT_PX`), and their
    ink columns, joined across gaps up to twice the run height, become boxes at least twice as
    wide as tall. Image pixels, right / bottom exclusive. Applied to frames stored downscaled
    only (at scale 1.0 an i-dot or the x-height part of a 10 px line can form such a run)."""
    x0, y0, x1, y1 = region
    if small_px < 3 or x1 <= x0 or y1 <= y0:
        return []
    g = arr[y0:y1, x0:x1, :3].astype(np.int16).sum(axis=2) // 3
    out: list[Box] = []
    for sx in range(0, g.shape[1], SLAB_PX):
        slab = g[:, sx:sx + SLAB_PX]
        ink = np.abs(slab - np.median(slab, axis=1, keepdims=True)) > INK_DIFF
        busy = ink.sum(axis=1)
        counts = busy > 2  # two ink pixels allowed for window borders
        r = 0
        n = len(counts)
        while r < n:
            if not counts[r]:
                r += 1
                continue
            r0 = r
            while r < n and counts[r]:
                r += 1
            run = busy[r0:r]
            cuts = np.nonzero(run <= max(2, int(run.max()) // 10))[0].tolist() if r - r0 > small_px else []
            a = 0
            for b in [*cuts, len(run)]:
                if 3 <= b - a <= small_px:
                    out += _spans(ink[r0 + a:r0 + b], x0 + sx, y0 + r0 + a)
                a = b + 1
    return out


def _spans(rows: np.ndarray, ox: int, oy: int) -> list[Box]:
    h = rows.shape[0]
    cols = np.nonzero(rows.any(axis=0))[0]
    if cols.size == 0:
        return []
    out: list[Box] = []
    start = prev = int(cols[0])
    for c in cols[1:].tolist() + [None]:
        if c is not None and c - prev <= 2 * h:
            prev = c
            continue
        if prev + 1 - start >= 2 * h:
            out.append((ox + start, oy, ox + prev + 1, oy + h))
        if c is not None:
            start = prev = c
    return out


def rescan_strips(boxes: Sequence[Box], regions: Sequence[Box], size: tuple[int, int]) -> list[Box]:
    """Where the re-scan pass OCRs a painted frame: for each newly painted box, the row it sits
    in, one box-height above and below (a value's other half on the same or the wrapped next
    line), across the OCR'd region holding it (or the frame width), clipped to the image
    ``size``; overlapping strips merged. Boxes and regions in frame image pixels. Only the rows
    around what was painted are read again — re-reading every changed region at a second scale
    cost as much as the first pass on all-new frames and found nothing more in the benchmark
    (docs/benchmarks.md)."""
    W, H = size
    strips: list[Box] = []
    for x0, y0, x1, y1 in boxes:
        h = max(1, y1 - y0)
        cy = (y0 + y1) // 2
        reg = next((r for r in regions if r[0] <= x0 and x1 <= r[2] and r[1] <= cy < r[3]), (0, 0, W, H))
        strips.append((max(0, reg[0]), max(0, y0 - h - BOX_MARGIN), min(W, reg[2]), min(H, y1 + h + BOX_MARGIN)))
    strips.sort(key=lambda b: (b[1], b[0]))
    merged: list[Box] = []
    for b in strips:
        for j, m in enumerate(merged):
            if b[0] < m[2] and m[0] < b[2] and b[1] <= m[3] and m[1] <= b[3]:
                merged[j] = (min(m[0], b[0]), min(m[1], b[1]), max(m[2], b[2]), max(m[3], b[3]))
                break
        else:
            merged.append(b)
    return merged


#: Height, in desktop pixels, of the strip painted over a window's title bar when its title
#: needed redaction (:func:`paint_title_bars`): openbox 3.6's default theme draws a 1 px frame
#: border and a title bar, the client area starting about 21 px below the frame's top edge
#: (measured on Xvfb 1280x800: frame top y 20, client text from y 41), plus a 3 px margin.
#: ``FocusChange.bounds`` is the WM frame (capture/_xorg_window.py), so the strip is its top.
TITLE_BAR_PX = 24


def title_bar_boxes(windows: Sequence[tuple[float, float, float, float]], frame: tuple[float, float, float, float],
                    scale: float, height_px: float = TITLE_BAR_PX) -> list[Box]:
    """Image-pixel boxes over the title bars of ``windows`` (each ``(x, y, width, height)`` of
    a WM frame in desktop pixels) in a frame showing the desktop region ``frame`` (``(x, y,
    width, height)``, desktop pixels) at ``scale`` image pixels per desktop pixel: the top
    ``height_px`` desktop pixels of each window (at most its height), rounded outwards and
    grown by :data:`BOX_MARGIN` image pixels left, right and up (JPEG ringing of the title's
    glyphs reaches past the frame's edge) but not down (the client area), clipped to the
    frame; windows outside it give no box. Right / bottom exclusive."""
    fx, fy, fw, fh = frame
    W, H = math.ceil(fw * scale - 1e-9), math.ceil(fh * scale - 1e-9)
    out: list[Box] = []
    for x, y, w, h in windows:
        x0 = max(0, math.floor((x - fx) * scale) - BOX_MARGIN)
        y0 = max(0, math.floor((y - fy) * scale) - BOX_MARGIN)
        x1 = min(W, math.ceil((x + w - fx) * scale) + BOX_MARGIN)
        y1 = min(H, math.ceil((y + min(h, height_px) - fy) * scale))
        if x0 < x1 and y0 < y1:
            out.append((x0, y0, x1, y1))
    return out


def paint_title_bars(image: Image.Image, boxes: Sequence[Box], color: tuple[int, int, int] = (0, 0, 0)) -> Image.Image:
    """Return a copy of ``image`` (RGB) with ``boxes`` (from :func:`title_bar_boxes`) filled
    exactly — no :data:`BOX_MARGIN`, which would reach into the client area below."""
    out = image.convert("RGB").copy()
    d = ImageDraw.Draw(out)
    for x0, y0, x1, y1 in boxes:
        d.rectangle([x0, y0, x1 - 1, y1 - 1], fill=color)
    return out
