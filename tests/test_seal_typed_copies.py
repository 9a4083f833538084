"""A typed secret blacks out the window it was typed into in every later frame, even where OCR
reads and paints it (issue #4: a full-suite run read the second, echoed copy of a typed card in
two sealed frames; OCR had located the first copy, and the seal took that as covering the value).

Synthetic session (privacy_corpus.Builder): a terminal-like window at desktop (0, 0, 640, 400)
gets a card number typed into it; frames show the card twice inside the window, large and
plainly readable, and a benign line outside it. Expected, from the window bounds the test chose
(not from the code): every frame grabbed after the first key of the card — or up to
``TYPED_LAG_NS`` before it (the recorder stamps a key when its input thread reads it, which
under load can be after the application painted it) — is solid black over the window and
unchanged outside it; in a frame grabbed well before typing the window is not blacked out (only
the OCR layer's boxes over the two displayed cards are painted: most of it stays white).
"""

from __future__ import annotations

import io
from pathlib import Path

import msgspec
import numpy as np
from privacy_corpus import Builder, render

from demotrace.paths import Paths
from demotrace.privacy.bundle import open_bundle
from demotrace.privacy.policy import default_policy
from demotrace.privacy.seal import TYPED_LAG_NS, seal_session
from demotrace.schema import FocusChange, Frame, FrameWindow, KeyDown, Marker, Rect, TextInput
from demotrace.spool import DataKey, Spool
from PIL import Image

CARD = "5203-8401-7362-1957"  # synthetic, Luhn-valid (doubled-digit sum 60)
WINDOW = (0, 0, 640, 400)  # desktop pixels: x, y, width, height
TERM_CARD = "4929 7314 5028 2736"  # synthetic, Luhn-valid (doubled-digit sum 70)


def _frame_at(b: Builder, t_ns: int) -> None:
    """A 1280x800 frame captured at ``t_ns``: the card twice inside the window (22 px text, the
    typed line and its echo), a benign line below the window."""
    b.t = t_ns
    img = render([(f"$ pay {CARD} now", 22), (f"pay {CARD} now", 22)] + [("", 22)] * 14
                 + [("weekly notes: ship the release", 22)])
    b.frame(img)


def test_window_black_after_typing_even_where_ocr_reads_the_value(tmp_path: Path) -> None:
    paths = Paths(tmp_path).ensure()
    spool = Spool(paths.spool, DataKey.create(paths.key_file))
    b = Builder(spool.key)
    b.add(Marker, name="session_start")
    b.focus("XTerm", "xterm", None, Rect(*WINDOW))
    t0 = 10_000_000_000  # the card's first key, 10 s into the session
    _frame_at(b, t0 - TYPED_LAG_NS - 1_000_000_000)  # well before typing: untouched
    _frame_at(b, t0 - TYPED_LAG_NS // 2)  # inside the lag margin: window black
    b.t = t0
    first_key_seq = b.seq
    b.type_text(f"pay {CARD} now\n")
    _frame_at(b, b.t + 50_000_000)  # right after typing
    _frame_at(b, b.t + 60_000_000_000)  # a minute later: the rule never expires
    b.add(Marker, name="session_stop")
    b.write(spool, "s1")
    assert b.events[first_key_seq].t_ns == t0  # the first key of the line is where the test put it

    raw = [e for e in b.events if isinstance(e, Frame)]
    raw_imgs = [Image.open(io.BytesIO(b.blobs[f.blob])).convert("L") for f in raw]
    rep = seal_session(paths, spool, "s1", default_policy())
    with open_bundle(paths, "s1") as bundle:
        sealed = [(e, Image.open(io.BytesIO(bundle.read_blob(e.blob))).convert("L"))
                  for e in bundle.iter_events() if isinstance(e, Frame)]
    assert [f.captured_t_ns for f, _ in sealed] == [f.captured_t_ns for f in raw]  # none dropped

    x, y, w, h = WINDOW
    below = (0, 420, 1280, 800)  # the benign line's rows, outside the window
    expect_black = [f.captured_t_ns >= t0 - TYPED_LAG_NS for f in raw]
    assert expect_black == [False, True, True, True]
    for (f, img), raw_img, black in zip(sealed, raw_imgs, expect_black):
        win = np.asarray(img.crop((x, y, x + w, y + h)))
        if black:
            assert int(win.max()) <= 12, f"window not black in the frame captured at {f.captured_t_ns} ns"
        else:
            assert float((win > 200).mean()) > 0.8, "window blacked out in a frame grabbed before typing"
        diff = np.abs(np.asarray(img.crop(below), dtype=int) - np.asarray(raw_img.crop(below), dtype=int))
        assert float(diff.mean()) < 2, "outside the window changed"
    assert rep.typed_secret_masked == 3


def _typed_text(events: list) -> str:  # type: ignore[type-arg]
    """What the sealed keystrokes still spell: KeyDown text, TextInput placeholders, '|' for
    keys without text (Enter, arrows)."""
    return "".join((e.text or "") if isinstance(e, TextInput) else (e.text or "|")
                   for e in events if isinstance(e, (KeyDown, TextInput)))


def test_values_split_across_typing_runs_are_removed_and_their_windows_followed(tmp_path: Path) -> None:
    """Bug bash 4: (1) the recorder stamped the focus change to the terminal after the first
    keys of a card ("pay 49" carried no window, "29 7314 5028 2736" the terminal: neither run
    holds a card); (2) ArrowLeft + ArrowRight in the middle of an e-mail split it into two runs;
    (3) the terminal then moved: the frame's window list (Frame.windows) has its new place.
    Expected (worked out from the input): no 8 digits of the card and neither half of the
    address left in the sealed keystrokes; the frame after the move is kept, black at the new
    place AND at the last focus bounds (fail closed), white elsewhere."""
    paths = Paths(tmp_path).ensure()
    spool = Spool(paths.spool, DataKey.create(paths.key_file))
    b = Builder(spool.key)
    b.add(Marker, name="session_start")
    b.add(FocusChange, window_id=None)  # focus not known yet
    b.type_text("pay " + TERM_CARD[:2])
    b.focus("XTerm", "xterm", None, Rect(0, 0, 400, 200))
    term = b.events[-1].window_id
    b.type_text(f"{TERM_CARD[2:]}\nmail gina.split@exa")
    b.add(KeyDown, key="ArrowLeft", code="ArrowLeft", text=None)
    b.add(KeyDown, key="ArrowRight", code="ArrowRight", text=None)
    b.type_text("mple.net\n")
    img = Image.new("RGB", (1280, 800), "white")
    b.t += 100_000_000
    b.frame(img)
    moved = Rect(600, 400, 400, 200)
    f = b.events[-1]
    b.events[-1] = msgspec.structs.replace(f, windows=(FrameWindow(term, moved),))
    b.add(Marker, name="session_stop")
    b.write(spool, "s2")
    seal_session(paths, spool, "s2", default_policy())
    with open_bundle(paths, "s2") as bundle:
        events = list(bundle.iter_events())
        frames = [(e, Image.open(io.BytesIO(bundle.read_blob(e.blob))).convert("L")) for e in events
                  if isinstance(e, Frame)]
    text = _typed_text(events)
    digits = "".join(ch for ch in text if ch.isdigit())
    card = "".join(ch for ch in TERM_CARD if ch.isdigit())
    assert not any(card[i:i + 8] in digits for i in range(len(card) - 7)), text
    assert "gina" not in text and "mple.net" not in text, text
    assert len(frames) == 1, "the frame was dropped: the late focus change should name the window"
    arr = np.asarray(frames[0][1])
    assert int(arr[400:600, 600:1000].max()) <= 12  # where the window moved to
    assert int(arr[0:200, 0:400].max()) <= 12  # its last focus bounds
    assert int(arr[250:350, 450:550].min()) >= 240  # elsewhere untouched
