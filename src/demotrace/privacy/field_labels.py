"""Secret fields inferred from the screen, for apps without accessibility (tester issue #4).

Tk, xterm and other X11 apps expose no AT-SPI tree, so no ``Element`` event ever says "this is
a password field" and :class:`~.secrets.SecretKeyFilter` keeps what is typed there (the
tester's Tk form: a low-entropy password typed into ``Entry(show="•")`` was sealed in clear).
At seal time this module looks at the stored frames around each stretch of typing:

1. **Fields.** The event stream is cut into *field stretches*: a stretch starts at a click
   (``PointerDown``, its point is the anchor), at a focus change to another window, at Tab and
   at Enter (anchor unknown), and holds the key / text events typed until the next such event.
   A stretch in which an ``Element`` arrived is left to the accessibility rules.
2. **Where the typing landed.** ``before`` = the last stored frame grabbed at or before the
   first typed key; ``after`` = the last one grabbed after it and within the stretch. The
   pixels that changed between the two (near the click row when there is a click) are the
   typed text; its left edge and row are the field's text position. When they changed in
   several row groups (Tab pressed right after typing into the previous field: its focus ring
   went, the new one came, and ``before`` may still lack the previous field's last letters),
   the group with the most non-outline change that is not on the previous stretch's row wins
   (:func:`typed_box`). No frame grabbed during the stretch (fields Tabbed through faster than
   the recorder's 4 Hz grabs): the first frame after it is compared, and the labels of up to
   :data:`MAX_LATE_ROWS` changed rows are all read (errs towards dropping). No echo and no
   click (a terminal's ``read -s -p '[sudo] password for anna: '``): the row that appeared
   last before the typing (:func:`prompt_row`) is OCR'd as the label. Otherwise no change seen
   (echo off, frame missing): the click point stands in.
3. **Label.** The stored frame ``before`` is OCR'd (tesseract via
   :class:`~.redact_image.TesseractEngine`) in two bands: the row left of the typed text
   (:data:`LEFT_PX` desktop pixels) and a strip above it (:data:`ABOVE_PX`; not for a stretch
   begun by Enter: there the line above is a terminal's / editor's earlier output, and a
   "password" in it marked the next command — bug-bash 2). A word matching
   the policy's ``secrets.name_patterns`` (password, passcode, PIN, one-time code, CVV/CVC,
   security code, card number …; also with OCR digit/letter confusions undone) marks the
   field secret.
4. **Mask characters.** Otherwise, when the changed pixels in ``after`` are a row of 3+
   (:data:`MIN_MASK_GLYPHS`) identical round-ish glyphs evenly spaced (•, *, ●: what a masked
   entry shows; ordinary text has glyphs of different widths and heights), no more of them
   than printable keys were typed, and a typed character has an ascender, descender or cap
   height (an echo of "acorn" shows glyphs of one height too), the field is secret. Glyphs
   that touch (● and * at 14 px and below, measured) are one run and not recognised: such
   fields are found by their label only.
5. **Fail closed.** When the frame cannot be read around the focus point (no frame, OCR
   missing or failing) and the policy is ``strict``, the stretch's keys are dropped too.

Every key event that reveals content in a secret stretch (text keys, Backspace / Delete,
``TextInput``; not Tab / Enter / Escape or hotkeys — the rules of :mod:`.secrets`) is reported
with reason ``"secret_field_inferred"`` (``"strict_unverified_field"`` for step 5). Measured on
the benign corpus: see docs/privacy.md and :func:`benign_false_positive_rate`.

Coordinates: events and ``Frame.bounds`` are physical desktop pixels; frame images are
``Frame.scale`` image pixels per desktop pixel; the bands below are in desktop pixels.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..schema.events import (
    Element,
    Event,
    FocusChange,
    Frame,
    KeyDown,
    PointerDown,
    TextInput,
)
from .errors import RedactionError
from .policy import Policy
from .secret_detect import edit_distance
from .secrets import HOTKEY_MODIFIERS, NAV_KEYS

#: Width of the band left of the typed text searched for a label, desktop pixels (a form's
#: label column: the Tk demo form's "Password" ends 24 px left of its entry, whose text starts
#: 6 px inside it; GTK / Qt form layouts put labels within 200 px).
LEFT_PX = 240
#: Height of the strip above the typed text searched for a label (labels above fields: GTK 4 /
#: web forms put them 4-24 px above the entry; more would reach the previous field's row).
ABOVE_PX = 34
#: Half height of the text row around a click when no typed text was seen, desktop pixels.
ROW_HALF_PX = 14
#: Grey difference (0..255) above which a pixel counts as changed / as ink.
INK_DIFF = 48
#: Upscale so that desktop text of about 10 px reaches tesseract's preferred x-height (the same
#: target as the image layer's default ``ocr_upscale`` = 3 at scale 1).
OCR_UPSCALE = 3
#: How long after a stretch its text may first be on a stored frame when none was grabbed
#: during it (ns): the recorder grabs at 4 Hz while input is active (recorder/frames.py), so the
#: next pre-action frame comes within 250 ms; 2 s leaves room for a loaded machine.
LATE_NS = 2_000_000_000
#: Changed rows whose labels are read in that late frame (the stretch's field, the next one's
#: and a spare).
MAX_LATE_ROWS = 3
#: Fewest mask glyphs that make a field secret: at scale 0.5 two letters of 12 px text ("ok")
#: can look alike to :func:`mask_glyphs`; three in a row did not on the benign corpus.
MIN_MASK_GLYPHS = 3
#: Characters an entry shows instead of what is typed (Tk ``show=``, GTK / Qt / browsers).
MASK_CHARS = "•●*·∙◦"
#: Digit → letter confusions of OCR undone before the label patterns are applied
#: ("Passw0rd", "P1N").
_UNCONFUSE = str.maketrans({"0": "o", "1": "l", "5": "s", "3": "e", "4": "a", "|": "l"})


@dataclass
class Stretch:
    """One field stretch: ``anchor`` (click point, desktop px) or None, ``t_start`` (ns),
    ``keys`` (indices of the content-revealing key / text events), ``printable`` (how many of
    them produce text), ``element`` (an accessibility ``Element`` arrived in it), ``end_t``,
    ``text`` (what the printable keys typed, Backspace not applied), ``start`` (what began
    it: ``"click"``, ``"focus"``, ``"tab"``, ``"enter"`` or ``""`` at the session start)."""

    anchor: tuple[float, float] | None
    t_start: int
    keys: list[int] = field(default_factory=list)
    printable: int = 0
    element: bool = False
    end_t: int = 0
    text: str = ""
    start: str = ""


#: Keys that change case or level only (W3C UI Events key names): dropped with a secret stretch.
CASE_KEYS = frozenset({"Shift", "CapsLock", "AltGraph", "ShiftLock"})


def stretches(events: Sequence[Event]) -> list[Stretch]:
    """Cut ``events`` (sorted by time) into field stretches (module doc, step 1)."""
    out: list[Stretch] = []
    cur = Stretch(None, 0)
    win: int | None = None

    def new(anchor: tuple[float, float] | None, t: int, start: str) -> None:
        nonlocal cur
        cur.end_t = t
        out.append(cur)
        cur = Stretch(anchor, t, start=start)

    for i, ev in enumerate(events):
        if isinstance(ev, PointerDown):
            new((ev.x, ev.y), ev.t_ns, "click")
        elif isinstance(ev, FocusChange):
            if ev.window_id != win or ev.window_id is None:
                new(None, ev.t_ns, "focus")
            win = ev.window_id
        elif isinstance(ev, Element):
            cur.element = True
        elif isinstance(ev, TextInput):
            cur.keys.append(i)
            cur.printable += 1
            cur.text += ev.text
        elif isinstance(ev, KeyDown):
            if set(ev.modifiers) & HOTKEY_MODIFIERS and not ev.text:
                continue
            if ev.key in ("Tab", "Enter"):
                new(None, ev.t_ns, ev.key.lower())
            elif ev.key in NAV_KEYS:
                continue
            elif ev.text or ev.key in ("Backspace", "Delete") or ev.key in CASE_KEYS:
                # Shift / CapsLock presses go with the field's keys: kept, they would reveal
                # the secret's case pattern and leave stray press('shift') steps behind.
                cur.keys.append(i)
                cur.printable += bool(ev.text)
                cur.text += ev.text or ""
    cur.end_t = events[-1].t_ns if events else 0
    out.append(cur)
    return [s for s in out if s.printable and not s.element]


#: Words an OCR misreading of which still names a secret field (within :data:`FUZZY_EDITS`):
#: at scale 0.5 tesseract read "Password" as "Paccword" and "Passcode" as "Passcod".
FUZZY_WORDS = ("password", "passcode", "passphrase")
#: Edits allowed between an OCR'd word of 6+ letters and a :data:`FUZZY_WORDS` word
#: ("passport" is 2 edits from "password": a passport-number field is dropped too).
FUZZY_EDITS = 2


def label_matches(policy: Policy, text: str) -> bool:
    """True if OCR'd ``text`` holds a secret-field name: a ``policy.secrets.name_patterns``
    match as read, with digit/letter confusions undone, or with "w" read for "vv" ("CVV" read
    "cw"); or a word of 6+ letters within :data:`FUZZY_EDITS` edits of a :data:`FUZZY_WORDS`
    word."""
    un = text.translate(_UNCONFUSE)
    cands = {text, un, un.replace("w", "vv").replace("W", "VV")}
    if any(re.search(p, t) for p in policy.secrets.name_patterns for t in cands):
        return True
    words = {re.sub(r"[^a-z]", "", w) for w in un.lower().split()}
    return any(len(w) >= 6 and edit_distance(w, f) <= FUZZY_EDITS for w in words for f in FUZZY_WORDS)


def changed_box(a: np.ndarray, b: np.ndarray, band: tuple[int, int] | None) -> tuple[int, int, int, int] | None:
    """Bounding box ``(x0, y0, x1, y1)`` (image px) of the pixels whose grey differs by more than
    :data:`INK_DIFF` between frames ``a`` and ``b`` (H×W grey uint8), within rows ``band`` if
    given; None if nothing changed."""
    d = np.abs(a.astype(np.int16) - b.astype(np.int16)) > INK_DIFF
    if band is not None:
        d[: max(0, band[0])] = False
        d[max(0, band[1]):] = False
    ys, xs = np.nonzero(d)
    if len(ys) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _runs(on: np.ndarray) -> list[tuple[int, int]]:
    """``[start, end)`` runs of True in the 1-D bool array ``on``."""
    out: list[tuple[int, int]] = []
    start = None
    for k, v in enumerate([*on.tolist(), False]):
        if v and start is None:
            start = k
        elif not v and start is not None:
            out.append((start, k))
            start = None
    return out


def typed_box(a: np.ndarray, b: np.ndarray, band: tuple[int, int] | None) -> tuple[int, int, int, int] | None:
    """Where the typing landed between frames ``a`` and ``b`` (H×W grey uint8): like
    :func:`changed_box`, but when the change falls in several row groups (a field reached by
    Tab right after typing into the previous one: the previous entry's focus ring went away
    while the new one's came up — tester's Tk form at scale 0.5, issue #4 bug-bash 2) the group
    with the most changed pixels that are not a box outline (rows changed over 60 % of the
    group's width, columns over 70 % of its height) is the typed text, and its box is returned
    without the outline. None if nothing changed."""
    boxes = typed_boxes(a, b, band)
    return boxes[0] if boxes else None


def typed_boxes(a: np.ndarray, b: np.ndarray, band: tuple[int, int] | None) -> list[tuple[int, int, int, int]]:
    """The candidate boxes of :func:`typed_box`, most changed pixels first: one per row group
    that changed other than as a box outline (one group: its whole changed box)."""
    d = np.abs(a.astype(np.int16) - b.astype(np.int16)) > INK_DIFF
    if band is not None:
        d[: max(0, band[0])] = False
        d[max(0, band[1]):] = False
    groups = _runs(d.any(axis=1))
    if not groups:
        return []
    if len(groups) == 1:
        box = changed_box(a, b, band)
        return [] if box is None else [box]
    found: list[tuple[int, tuple[int, int, int, int]]] = []
    for r0, r1 in groups:
        sub = d[r0:r1].copy()
        xs = np.nonzero(sub.any(axis=0))[0]
        c0, c1 = int(xs.min()), int(xs.max()) + 1
        sub = sub[:, c0:c1]
        h, w = sub.shape
        sub[sub.sum(axis=1) > 0.6 * w, :] = False
        sub[:, sub.sum(axis=0) > 0.7 * h] = False
        n = int(sub.sum())
        if n == 0:
            continue
        ys, xs2 = np.nonzero(sub)
        box = (c0 + int(xs2.min()), r0 + int(ys.min()), c0 + int(xs2.max()) + 1, r0 + int(ys.max()) + 1)
        found.append((n, box))
    return [box for _, box in sorted(found, key=lambda p: -p[0])]


def prompt_row(a: np.ndarray, b: np.ndarray, line_px: int) -> tuple[int, int, int, int] | None:
    """The last text row that appeared between frames ``a`` and ``b`` (H×W grey uint8) as a box
    ``(x0, y0, x1, y1)`` (image px), at most ``line_px`` rows high (a taller last group of
    changed rows is cut at the row of ``b`` with the least ink in the last ``line_px``: two
    text lines whose descenders and ascenders touch at scale 0.5); None if nothing changed.
    Typing with no echo goes where the screen last changed before it: a terminal prints the
    prompt (``[sudo] password for anna: ``) on its last output row and waits there (issue #4
    bug-bash 2: ``read -s -p``)."""
    d = np.abs(a.astype(np.int16) - b.astype(np.int16)) > INK_DIFF
    groups = _runs(d.any(axis=1))
    if not groups:
        return None
    r0, r1 = groups[-1]
    if r1 - r0 > line_px:
        # several changed rows touch (a command and the prompt it printed): cut at the row of
        # ``b`` with the least ink in the last line height, the gap between two text lines
        lo = r1 - line_px
        xs = np.nonzero(d[lo:r1].any(axis=0))[0]
        crop = b[lo:r1, int(xs.min()):int(xs.max()) + 1].astype(np.int16)
        ink = (np.abs(crop - int(np.median(crop))) > INK_DIFF).sum(axis=1)
        r0 = lo + int(np.argmin(ink[:line_px - line_px // 3]))
    xs = np.nonzero(d[r0:r1].any(axis=0))[0]
    return int(xs.min()), r0, int(xs.max()) + 1, r1


def mask_glyphs(grey: np.ndarray, box: tuple[int, int, int, int]) -> int:
    """Number of mask glyphs in ``box`` of the frame ``grey`` (H×W uint8), 0 when it holds
    anything else. Ink = pixels differing from the box's median grey by more than
    :data:`INK_DIFF`; rows inked over 60 % of the width and columns inked over 70 % of the
    height are dropped first (the entry's border, focus ring and caret change with the
    typing); a last run taller than a glyph (the caret) is ignored; then the ink columns must
    form 2+ runs of equal width and spacing (±1 px: glyphs sit at fractional positions) and
    the same top and bottom row (mask glyphs share one baseline and height), each no taller than
    1.6× its width + 1 px (•, *, ●; letters differ in width and height)."""
    x0, y0, x1, y1 = box
    crop = grey[y0:y1, x0:x1].astype(np.int16)
    if crop.size == 0:
        return 0
    ink = np.abs(crop - int(np.median(crop))) > INK_DIFF
    h, w = ink.shape
    ink[ink.sum(axis=1) > 0.6 * w, :] = False
    ink[:, ink.sum(axis=0) > 0.7 * h] = False
    cols = ink.any(axis=0)
    runs: list[tuple[int, int]] = []
    start = None
    for x, on in enumerate([*cols.tolist(), False]):
        if on and start is None:
            start = x
        elif not on and start is not None:
            runs.append((start, x))
            start = None
    def extent(r: tuple[int, int]) -> tuple[int, int]:
        rows = np.nonzero(ink[:, r[0]:r[1]].any(axis=1))[0]
        return int(rows.min()), int(rows.max()) + 1

    def glyph(r: tuple[int, int]) -> bool:
        top, bottom = extent(r)
        return bottom - top <= 1.6 * (r[1] - r[0]) + 1

    if runs and not glyph(runs[-1]):
        runs = runs[:-1]  # the caret after the last glyph
    if len(runs) < 2:
        return 0
    widths = [e - s for s, e in runs]
    gaps = [runs[k + 1][0] - runs[k][1] for k in range(len(runs) - 1)]
    tops, bottoms = zip(*(extent(r) for r in runs))
    if (max(widths) - min(widths) > 1 or max(gaps) - min(gaps) > 1 or len(set(tops)) > 1
            or len(set(bottoms)) > 1 or not all(glyph(r) for r in runs)):
        return 0
    return len(runs)


OcrFn = Callable[[Image.Image, int], str]
#: Lower-case letters without ascender or descender: an echo of only these has glyphs of one
#: height, like mask characters, so the mask rule needs a typed character outside them.
_X_HEIGHT = frozenset("acemnorsuvwxz .,:;-_=+~'\"")


def _tall_char(text: str) -> bool:
    return any(c not in _X_HEIGHT for c in text)


def tesseract_ocr(timeout_s: float = 20.0) -> tuple[OcrFn, Callable[[], None]]:
    """An ``ocr(image, upscale) -> text`` function over one in-process
    :class:`~.redact_image.TesseractEngine` (single-line mode, psm 7: at scale 0.5 it read
    "Passcode", "Card number" and "CVV" where sparse mode read nothing — bench/secret_fields.py
    runs), and a function freeing it.
    Any failure raises :class:`~.errors.RedactionError`."""
    from .redact_image import TesseractEngine

    engine = TesseractEngine(psm=7)  # one text line: reads small labels better than sparse mode (bench)

    def ocr(img: Image.Image, upscale: int) -> str:
        try:
            return " ".join(w.text for w in engine.words(img, upscale=upscale, timeout_s=timeout_s))
        except RedactionError:
            raise
        except Exception as exc:  # any OCR failure makes the stretch unverified (fail closed)
            raise RedactionError(f"OCR failed on a field label: {exc}") from exc

    return ocr, engine.close


def _frame_at(frames: list[tuple[int, Frame]], t_lo: int, t_hi: int) -> Frame | None:
    """The last frame grabbed in ``[t_lo, t_hi]`` (``captured_t_ns``)."""
    best = None
    for t, f in frames:
        if t_lo <= t <= t_hi:
            best = f
    return best


def infer_secret_fields(events: Sequence[Event], policy: Policy, load: Callable[[Frame], Image.Image | None],
                        ocr: OcrFn, shown: set[int] | None = None) -> dict[int, str]:
    """Indices of the key / text events of ``events`` to drop, with their reason
    (``"secret_field_inferred"`` or ``"strict_unverified_field"``) — module doc.

    ``shown``: if given, receives the index of the first key of every stretch found secret by
    the label beside or above its field — a field that may show what was typed (an API-key or
    token entry echoes it; bug bash 6 H6: the keys went, the value stayed readable in the
    frames). Stretches found by a terminal's prompt row (no echo) or by mask glyphs are not
    added: nothing readable is on screen.

    ``load``: decodes a stored frame (None when it cannot be read); ``ocr(image, upscale)``:
    the text of an image crop (raises :class:`~.errors.RedactionError` when OCR is unavailable
    or fails — then the stretch is unverified).
    """
    strict = policy.secrets.strictness == "strict"
    frames_l = sorted((((f.captured_t_ns or f.t_ns), f) for f in events if isinstance(f, Frame)), key=lambda p: p[0])
    out: dict[int, str] = {}

    def grey(f: Frame) -> tuple[Image.Image, np.ndarray] | None:
        img = load(f)
        if img is None:
            return None
        g = img.convert("L")
        return g, np.asarray(g)

    last_rows: tuple[int, int] | None = None  # rows (image px) of the previous stretch's typed text
    for s in stretches(events):
        prev_rows, last_rows = last_rows, None
        t_first = events[s.keys[0]].t_ns
        t_last = events[s.keys[-1]].t_ns
        before = _frame_at(frames_l, 0, t_first)
        after = _frame_at(frames_l, t_first + 1, max(t_last, s.end_t))
        verdict: str | None = None
        try:
            if before is None:
                raise RedactionError("no stored frame before the typing")
            gb = grey(before)
            if gb is None:
                raise RedactionError("stored frame unreadable")
            img_b, arr_b = gb
            sc, bx, by = before.scale, before.bounds.x, before.bounds.y
            anchor = None if s.anchor is None else ((s.anchor[0] - bx) * sc, (s.anchor[1] - by) * sc)
            H, W = arr_b.shape
            up = max(1, math.ceil(OCR_UPSCALE / max(sc, 0.05)))
            band = None if anchor is None else (int(anchor[1] - 2 * ROW_HALF_PX * sc),
                                                int(anchor[1] + 2 * ROW_HALF_PX * sc) + 1)

            def arr(f: Frame | None, before: Frame = before, arr_b: np.ndarray = arr_b) -> np.ndarray | None:
                if f is None or f.bounds != before.bounds or f.scale != before.scale:
                    return None
                g = grey(f)
                return None if g is None or g[1].shape != arr_b.shape else g[1]

            def one_row(boxes: list[tuple[int, int, int, int]], sc: float = sc,
                        last: tuple[int, int] | None = prev_rows) -> list[tuple[int, int, int, int]]:
                # more than one row changed in a group: not a field's echo; a group on the
                # previous stretch's row is the rest of ITS typing (the frame before this
                # stretch was grabbed while the previous one was still being typed)
                return [b for b in boxes if (b[3] - b[1]) <= 3 * ROW_HALF_PX * sc
                        and (last is None or len(boxes) == 1 or b[3] <= last[0] or b[1] >= last[1])]

            arr_a = arr(after)
            cands = [] if arr_a is None else one_row(typed_boxes(arr_b, arr_a, band))[:1]
            typed = cands[0] if cands else None
            last_rows = None if typed is None else (typed[1], typed[3])
            prompt = None
            if typed is None and anchor is None:
                # no echo, no click: the typing goes where the screen last changed before it
                # (a terminal's password prompt); that row is the label
                prev = _frame_at(frames_l, 0, s.t_start)
                arr_p = None if prev is before else arr(prev)
                prompt = None if arr_p is None else prompt_row(arr_p, arr_b, math.ceil(2 * ROW_HALF_PX * sc))
                if prompt is not None:
                    x0, r0, x1, r1 = prompt
                    crop = img_b.crop((max(0, x0 - 2), max(0, r0 - 1), min(W, x1 + 2), min(H, r1 + 1)))
                    if label_matches(policy, ocr(crop, up)):
                        verdict = "secret_field_inferred"
                if verdict is None and after is None:
                    # no frame grabbed while typing (fields Tabbed through quickly): the first
                    # frame after the stretch shows its text, maybe beside the next field's;
                    # every changed row's label is read (errs towards dropping)
                    late = _frame_at(frames_l, max(t_last, s.end_t) + 1, max(t_last, s.end_t) + LATE_NS)
                    arr_l = arr(late)
                    cands = [] if arr_l is None else one_row(typed_boxes(arr_b, arr_l, band))[:MAX_LATE_ROWS]
                if verdict is None and not cands and prompt is None:
                    raise RedactionError("typing position unknown (no click, no visible echo)")
            if verdict is None and not cands and anchor is not None:
                cands = [(int(anchor[0]), int(anchor[1] - ROW_HALF_PX * sc), int(anchor[0]) + 1,
                          int(anchor[1] + ROW_HALF_PX * sc))]
            for left, y0, _, y1 in ([] if verdict else cands):
                cy = (y0 + y1) / 2
                half = max((y1 - y0) / 2, ROW_HALF_PX * sc)
                bands = [
                    (max(0, int(left - LEFT_PX * sc)), max(0, int(cy - half)), max(0, left - 1),
                     min(H, math.ceil(cy + half))),
                    (max(0, int(left - 8 * sc)), max(0, int(y0 - ABOVE_PX * sc)), min(W, int(left + LEFT_PX * sc)),
                     max(0, y0 - 1)),
                ]
                if s.start == "enter":
                    # typing after Enter goes on a terminal's / editor's next line: the line
                    # above is earlier output, not this line's label (bug-bash 2: the row above
                    # a command held "[sudo] password for anna:" and the command was dropped)
                    bands = bands[:1]
                if any(x1 - x0 >= 4 and b1 - b0 >= 4 and label_matches(policy, ocr(img_b.crop((x0, b0, x1, b1)), up))
                       for x0, b0, x1, b1 in bands):
                    verdict = "secret_field_inferred"
                    if shown is not None:
                        shown.add(s.keys[0])
                    break
            if verdict is None and typed is not None and arr_a is not None and _tall_char(s.text):
                # identical glyphs on screen although a character with an ascender, descender
                # or cap height was typed (an echo of it would differ in height)
                cy = (typed[1] + typed[3]) / 2
                half = max((typed[3] - typed[1]) / 2, ROW_HALF_PX * sc)
                box = (typed[0], max(0, int(cy - half)), typed[2], min(H, math.ceil(cy + half)))
                n = mask_glyphs(arr_a, box)
                if MIN_MASK_GLYPHS <= n <= s.printable:
                    verdict = "secret_field_inferred"
        except RedactionError:
            if strict:
                verdict = "strict_unverified_field"
        if verdict:
            for i in s.keys:
                out[i] = verdict
    return out
