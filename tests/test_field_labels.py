"""Secret fields inferred from the screen for apps without accessibility (tester issue #4,
leak 1): a real Tk form (Tk has no AT-SPI) on Xvfb, recorded by `demotrace record` at the
default frame scale, then sealed.

The form has three rows, each typed into after a click (the second after Tab):
- "Name" (plain Entry): "Olive Zimmer" must be KEPT (no false positive);
- "Password" (Entry show="•"): "sunflowerfield" (14 letters, low entropy: no text detector
  finds it) must be DROPPED — found by the label left of the field;
- "Phrase" (Entry show="•", a label no secret pattern names): "quietmarmot" (11 letters) must
  be DROPPED — found by the mask characters growing as it is typed.
Expected counts are the lengths of the typed strings (worked out by hand: 14 + 11 = 25 key
presses dropped as "secret_field_inferred").
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers_x11 import read_line, start_recorder, stop_recorder
from PIL import Image, ImageDraw, ImageFont

from demotrace.paths import Paths
from demotrace.privacy.bundle import open_bundle
from demotrace.privacy.field_labels import label_matches, mask_glyphs
from demotrace.privacy.policy import default_policy
from demotrace.privacy.seal import seal_session
from demotrace.schema import FocusChange, KeyDown
from demotrace.spool import DataKey, Spool

FORM = r'''
import json, tkinter as tk
root = tk.Tk(className="LabelForm")
root.title("labelform")
root.geometry("460x200+200+150")
font = ("DejaVu Sans", 14)
rows = {}
for r, (label, show) in enumerate((("Name", ""), ("Password", "\u2022"), ("Phrase", "\u2022"))):
    tk.Label(root, text=label, font=font).grid(row=r, column=0, padx=12, pady=12, sticky="e")
    e = tk.Entry(root, font=font, width=20, show=show)
    e.grid(row=r, column=1, padx=12, pady=12)
    rows[label] = e
def ready(ev):
    if ev.widget is not root:
        return
    root.update_idletasks()
    print("READY " + json.dumps({k: [e.winfo_rootx() + e.winfo_width() // 2, e.winfo_rooty() + e.winfo_height() // 2]
                                 for k, e in rows.items()}), flush=True)
root.bind("<Map>", ready)
root.mainloop()
'''

NAME, PASSWORD, PHRASE = "Olive Zimmer", "sunflowerfield", "quietmarmot"


@pytest.mark.x11
def test_tk_password_and_masked_fields_dropped_name_kept(xvfb, dt_home: Path) -> None:  # type: ignore[no-untyped-def]
    env = xvfb.env
    app = subprocess.Popen([sys.executable, "-c", FORM], env=env, stdout=subprocess.PIPE, text=True)
    rec = None
    paths = Paths(dt_home)
    try:
        centres = json.loads(read_line(app, "READY ", timeout=15).split(" ", 1)[1])
        rec = start_recorder(env, dt_home, "--no-indicator", enroll=True)  # default frame scale

        def xdo(*args: str) -> None:
            subprocess.run(["xdotool", *args], env=env, check=True, timeout=60)

        wid = subprocess.run(["xdotool", "search", "--name", "^labelform$"], env=env, capture_output=True,
                             text=True, check=True).stdout.split()[0]
        xdo("windowfocus", "--sync", wid)
        spool = Spool(paths.spool, DataKey.load(paths.key_file))
        deadline = time.monotonic() + 20
        focused = False
        while not focused and time.monotonic() < deadline:
            for sid in spool.session_ids():
                with spool.open(sid) as r:
                    focused = any(isinstance(e, FocusChange) and e.title == "labelform" for e in r.iter_events())
            time.sleep(0.1)
        assert focused, "the recorder did not store the focus change to the form"
        for label, text in (("Name", NAME), ("Password", PASSWORD), ("Phrase", PHRASE)):
            if label == "Password":
                xdo("key", "Tab")  # reached by Tab: no click point, the echo locates the field
            else:
                x, y = centres[label]
                xdo("mousemove", str(x), str(y), "click", "1")
            time.sleep(0.4)  # the click's frame is grabbed before the first key
            xdo("type", "--delay", "60", text)
            time.sleep(0.6)  # a settle frame shows what was typed
        stop_recorder(rec)
    finally:
        if rec is not None and rec.poll() is None:
            rec.kill()
        app.kill()
        app.wait()
        assert app.stdout is not None
        app.stdout.close()
    spool = Spool(paths.spool, DataKey.load(paths.key_file))
    (sid,) = spool.session_ids()
    with spool.open(sid) as r:
        raw = "".join(e.text or "" for e in r.iter_events() if isinstance(e, KeyDown))
    assert raw == NAME + PASSWORD + PHRASE  # the raw spool has them all (the test can fail)
    rep = seal_session(paths, spool, sid, default_policy())
    with open_bundle(paths, sid) as b:
        sealed = "".join(e.text or "" for e in b.iter_events() if isinstance(e, KeyDown))
    assert sealed == NAME, rep.secret_keys_dropped
    assert rep.secret_keys_dropped.get("secret_field_inferred") == len(PASSWORD) + len(PHRASE)


@pytest.mark.parametrize(("text", "secret"), [
    ("Password", True), ("Passw0rd", True), ("PIN", True), ("One-time code", True), ("CVV", True),
    ("Card number", True), ("Security code", True), ("Passcode", True),
    ("Name", False), ("Comment", False), ("Spinner", False), ("Opinion", False), ("Phrase", False),
])
def test_label_patterns(text: str, secret: bool) -> None:
    assert label_matches(default_policy(), text) is secret


def _draw(text: str, size: int = 14) -> np.ndarray:
    img = Image.new("L", (300, 40), 255)
    font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", size)
    ImageDraw.Draw(img).text((4, 8), text, font=font, fill=0)
    return np.asarray(img)


def test_mask_glyphs_counts_bullets_and_asterisks_not_words() -> None:
    box = (0, 0, 300, 40)
    assert mask_glyphs(_draw("\u2022" * 7), box) == 7
    assert mask_glyphs(_draw("*" * 5, 20), box) == 5  # at 14 px and below asterisks touch: not recognised (docs)
    assert mask_glyphs(_draw("sunflower"), box) == 0
    assert mask_glyphs(_draw("\u2022" * 6 + "|"), box) == 6  # a caret after the bullets is not a glyph
    assert mask_glyphs(_draw("Olive Zimmer"), box) == 0


def _typing_session(tmp: Path, with_frame: bool):  # type: ignore[no-untyped-def]
    """A Tk-like session without accessibility: focus, a click into a field, "hello" typed.
    With ``with_frame``, a stored frame (a "Notes" label left of an entry) before the typing."""
    from privacy_corpus import Builder

    from demotrace.schema import Marker, PointerDown

    paths = Paths(tmp).ensure()
    spool = Spool(paths.spool, DataKey.create(paths.key_file))
    b = Builder(spool.key)
    b.add(Marker, name="session_start")
    b.focus("Demotk", "notes")
    b.add(PointerDown, x=300.0, y=40.0, button="left")
    if with_frame:
        img = Image.new("RGB", (1280, 800), "white")
        d = ImageDraw.Draw(img)
        d.text((20, 32), "Notes", fill="black", font=ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", 14))
        d.rectangle([120, 28, 480, 52], outline="black")
        b.frame(img)
    b.type_text("hello")
    b.add(Marker, name="session_stop")
    b.write(spool, "s1")
    return paths, spool


def _strict():  # type: ignore[no-untyped-def]
    import dataclasses

    p = default_policy()
    return dataclasses.replace(p, secrets=dataclasses.replace(p.secrets, strictness="strict"))


@pytest.mark.parametrize("case", ["no_frame", "ocr_missing"])
def test_unverifiable_field_dropped_when_strict_kept_when_standard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   case: str) -> None:
    """Fail closed: the field cannot be read (no stored frame; or tesseract not on PATH) →
    strict drops the 5 keys of "hello" as "strict_unverified_field"; standard keeps them."""
    from demotrace.privacy.pipeline import RedactionPipeline

    if case == "ocr_missing":
        empty = tmp_path / "bin"
        empty.mkdir()
        monkeypatch.setenv("PATH", str(empty))
        monkeypatch.delenv("TESSDATA_PREFIX", raising=False)
    for policy, expect in ((_strict(), ""), (default_policy(), "hello")):
        paths, spool = _typing_session(tmp_path / policy.secrets.strictness, case == "ocr_missing")
        rep = seal_session(paths, spool, "s1", policy, pipeline=RedactionPipeline(policy, ocr=False))
        with open_bundle(paths, "s1") as b:
            typed = "".join(e.text or "" for e in b.iter_events() if isinstance(e, KeyDown))
        assert typed == expect, rep.secret_keys_dropped
        if not expect:
            assert rep.secret_keys_dropped.get("strict_unverified_field") == 5


def test_case_keys_belong_to_the_stretch() -> None:
    """Shift and CapsLock presses inside a typed stretch are dropped with it: kept, they would
    leave stray press('shift') steps and the secret's case pattern (seen in the demo's form)."""
    from demotrace.privacy.field_labels import stretches
    from demotrace.schema import PointerDown

    evs = [PointerDown(t_ns=1, seq=1, x=10.0, y=10.0, button="left"),
           KeyDown(t_ns=2, seq=2, key="Shift", code="ShiftLeft"),
           KeyDown(t_ns=3, seq=3, key="A", code="KeyA", modifiers=["Shift"], text="A"),
           KeyDown(t_ns=4, seq=4, key="CapsLock", code="CapsLock"),
           KeyDown(t_ns=5, seq=5, key="b", code="KeyB", text="b"),
           KeyDown(t_ns=6, seq=6, key="c", code="KeyC", modifiers=["Control"])]  # a hotkey: kept
    (s,) = stretches(evs)
    assert s.keys == [1, 2, 3, 4]
    assert s.printable == 2 and s.text == "Ab"
