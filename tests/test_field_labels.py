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

import io
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
from demotrace.schema import Frame, KeyDown
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

        wid = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", "^labelform$"], env=env, capture_output=True,
                             text=True, check=True).stdout.split()[0]
        xdo("windowfocus", "--sync", wid)
        from helpers_x11 import wait_focus_stored

        spool = Spool(paths.spool, DataKey.load(paths.key_file))
        wait_focus_stored(spool, "labelform")
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


# --- bug-bash 2 (issue #4): Tab-reached fields, labels above, "Card PIN", "Pass phrase", and a
# terminal password prompt with no echo ---------------------------------------------------------

#: The tester's form (/tmp/bugbash2/t1/form.py, shortened): DejaVu Sans 12 px, one label per row,
#: left of its entry except "Passcode (6 digits)", which stands above its entry.
FORM2 = r'''
import json, tkinter as tk
root = tk.Tk(className="LabelForm2")
root.title("labelform2")
root.geometry("520x330+40+40")
f = ("DejaVu Sans", 12)
rows = {}
for label, above in (("Full name", False), ("Passcode (6 digits)", True), ("Card PIN", False),
                     ("Pass phrase", False), ("Notes", False)):
    fr = tk.Frame(root); fr.pack(fill="x", padx=10, pady=6)
    tk.Label(fr, text=label, font=f).pack(side="top" if above else "left", anchor="w")
    e = tk.Entry(fr, font=f, width=30); e.pack(side="top" if above else "left", anchor="w")
    rows[label] = e
def ready(ev):
    if ev.widget is not root:
        return
    root.update_idletasks()
    e = rows["Full name"]
    print("READY " + json.dumps([e.winfo_rootx() + e.winfo_width() // 2, e.winfo_rooty() + e.winfo_height() // 2]),
          flush=True)
root.bind("<Map>", ready)
root.mainloop()
'''

#: What is typed into FORM2, row by row (all plain echo: only the labels can find the secrets).
FORM2_TYPED = (("Full name", "Anna Lindqvist", False), ("Passcode (6 digits)", "482913", True),
               ("Card PIN", "7351", True), ("Pass phrase", "correct horse battery staple", True),
               ("Notes", "meeting at noon", False))


def _record(xvfb, dt_home: Path, drive) -> tuple[Paths, Spool, str]:  # type: ignore[no-untyped-def]
    """Record ``drive(xdo, spool)`` with a real ``demotrace record`` (default frame scale) and
    return the home's paths, spool and the one session id."""
    paths = Paths(dt_home)
    rec = start_recorder(xvfb.env, dt_home, "--no-indicator", enroll=True)
    try:
        def xdo(*args: str) -> None:
            subprocess.run(["xdotool", *args], env=xvfb.env, check=True, timeout=60)

        drive(xdo, Spool(paths.spool, DataKey.load(paths.key_file)))
        stop_recorder(rec)
    finally:
        if rec.poll() is None:
            rec.kill()
            rec.wait()
    spool = Spool(paths.spool, DataKey.load(paths.key_file))
    (sid,) = spool.session_ids()
    return paths, spool, sid


def _events(spool: Spool) -> list:  # type: ignore[type-arg]
    from helpers_x11 import spool_events

    return spool_events(spool)


def _wait_focus(spool: Spool, title: str) -> None:
    from helpers_x11 import wait_focus_stored

    wait_focus_stored(spool, title)


def _wait_frame_after_enter(spool: Spool, n_enter: int, settle_ns: int = 250_000_000) -> None:
    """Wait until the spool holds the ``n_enter``-th Enter press and a frame grabbed at least
    ``settle_ns`` after it (the terminal has drawn what Enter printed)."""
    from helpers_x11 import wait_for

    from demotrace.schema import Frame

    def ok() -> bool:
        evs = _events(spool)
        enters = [e.t_ns for e in evs if isinstance(e, KeyDown) and e.key == "Enter"]
        if len(enters) < n_enter:
            return False
        return any(isinstance(e, Frame) and (e.captured_t_ns or e.t_ns) >= enters[n_enter - 1] + settle_ns
                   for e in evs)
    wait_for(ok, timeout=20, what=f"a frame stored after Enter #{n_enter}")


@pytest.mark.x11
def test_tk_tab_reached_fields_labels_left_and_above(xvfb, dt_home: Path) -> None:  # type: ignore[no-untyped-def]
    """Bug-bash 2, leak 1: every field after the first is reached by Tab, typing right after
    the Tab (the frame before the typing still shows the previous field focused, so the change
    spans two rows), plain echo. "Passcode (6 digits)" (label above), "Card PIN" and "Pass
    phrase" (left) are secret, "Full name" and "Notes" are not. Expected: the sealed keys are
    exactly "Anna Lindqvist" + "meeting at noon"; dropped 6 + 4 + 28 = 38 key presses
    (lengths of the typed strings, counted by hand)."""
    app = subprocess.Popen([sys.executable, "-c", FORM2], env=xvfb.env, stdout=subprocess.PIPE, text=True)
    where: list[tuple[int, int, int, int]] = []  # the form's geometry, desktop pixels
    try:
        cx, cy = json.loads(read_line(app, "READY ", timeout=15).split(" ", 1)[1])

        def drive(xdo, spool: Spool) -> None:  # type: ignore[no-untyped-def]
            wid = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", "^labelform2$"], env=xvfb.env, capture_output=True,
                                 text=True, check=True).stdout.split()[0]
            xdo("windowfocus", "--sync", wid)
            from helpers_x11 import geometry

            where.append(geometry(xvfb.env, int(wid)))
            _wait_focus(spool, "labelform2")
            xdo("mousemove", str(cx), str(cy), "click", "1")
            time.sleep(0.4)  # the click's frame is grabbed before the first key
            for k, (_, text, _) in enumerate(FORM2_TYPED):
                if k:
                    xdo("key", "Tab", "type", "--delay", "50", text)  # one xdotool call: no pause after Tab
                else:
                    xdo("type", "--delay", "50", text)
            time.sleep(0.6)  # a settle frame shows what was typed last

        paths, spool, sid = _record(xvfb, dt_home, drive)
    finally:
        app.kill()
        app.wait()
        assert app.stdout is not None
        app.stdout.close()
    with spool.open(sid) as r:
        raw = "".join(e.text or "" for e in r.iter_events() if isinstance(e, KeyDown))
    assert raw == "".join(t for _, t, _ in FORM2_TYPED)  # all of it in the raw spool
    rep = seal_session(paths, spool, sid, default_policy())
    with open_bundle(paths, sid) as b:
        events = list(b.iter_events())
        frames = [(e, np.asarray(Image.open(io.BytesIO(b.read_blob(e.blob))).convert("L")))
                  for e in events if isinstance(e, Frame)]
    sealed = "".join(e.text or "" for e in events if isinstance(e, KeyDown))
    assert sealed == "Anna Lindqvist" + "meeting at noon", rep.secret_keys_dropped
    assert rep.secret_keys_dropped.get("secret_field_inferred") == 6 + 4 + 28
    # bug bash 6 H6: these entries echo what is typed, so once a secret went into one the form
    # is blacked out (the keys alone were dropped, the value stayed readable)
    gx, gy, gw, gh = where[0]

    def region(f: Frame, a: np.ndarray) -> np.ndarray:
        sc = f.scale
        return a[int(gy * sc) + 1:int((gy + gh) * sc) - 1, int(gx * sc) + 1:int((gx + gw) * sc) - 1]

    assert int(region(*frames[-1]).max()) <= 12, "the form is not blacked out after a secret was typed"


@pytest.mark.x11
@pytest.mark.parametrize("read_cmd", [
    "read -s -p '[sudo] password for anna: ' PW; echo",
    # bug bash 4 F14: a Spanish prompt ("Contraseña: ", printed by printf so that only ASCII is typed)
    "read -s -p \"$(printf 'Contrase\\303\\261a: ')\" PW; echo",
])
def test_xterm_silent_password_prompt(xvfb, dt_home: Path, read_cmd: str) -> None:  # type: ignore[no-untyped-def]
    """Bug-bash 2, leak 2: in xterm, ``read -s -p '[sudo] password for anna: ' PW; echo``, then
    a password typed with no echo + Enter, then another command. The password's keys are
    dropped (the prompt row that appeared before them names a password), the next command is
    kept although the row above it says "password". Expected sealed keys (by hand): the read
    command, then "echo done"; the 13 keys of "Tr0ub4dor&3zz" and its 2 Shift presses dropped.
    The same with a Spanish prompt, "Contraseña: " (bug bash 4 F14: it matched no pattern)."""
    password = "Tr0ub4dor&3zz"
    after = "echo done"
    env = {**xvfb.env, "PS1": "$ "}
    term = subprocess.Popen(["xterm", "-T", "fieldterm", "-geometry", "80x12+60+60", "-fa", "DejaVu Sans Mono",
                             "-fs", "11", "-e", "bash", "--norc", "--noprofile"], env=env)
    try:
        from helpers_x11 import search_window

        wid = search_window(xvfb.env, "fieldterm", timeout=15)

        def drive(xdo, spool: Spool) -> None:  # type: ignore[no-untyped-def]
            xdo("windowfocus", "--sync", str(wid))
            _wait_focus(spool, "fieldterm")
            time.sleep(0.3)  # bash has drawn its prompt
            xdo("type", "--delay", "40", read_cmd)
            xdo("key", "Return")
            _wait_frame_after_enter(spool, 1)  # the prompt is on screen in a stored frame
            xdo("type", "--delay", "40", password)
            xdo("key", "Return")
            _wait_frame_after_enter(spool, 2)
            xdo("type", "--delay", "40", after)
            xdo("key", "Return")
            _wait_frame_after_enter(spool, 3)

        paths, spool, sid = _record(xvfb, dt_home, drive)
    finally:
        term.kill()
        term.wait()
    with spool.open(sid) as r:
        raw = "".join(e.text or "" for e in r.iter_events() if isinstance(e, KeyDown))
    assert raw == read_cmd + password + after
    rep = seal_session(paths, spool, sid, default_policy())
    with open_bundle(paths, sid) as b:
        sealed = "".join(e.text or "" for e in b.iter_events() if isinstance(e, KeyDown))
    assert sealed == read_cmd + after, rep.secret_keys_dropped
    # the 13 characters and the 2 Shift presses xdotool makes for "T" and "&" (US layout)
    assert rep.secret_keys_dropped.get("secret_field_inferred") == len(password) + 2


@pytest.mark.parametrize(("text", "secret"), [
    ("Pass phrase", True), ("Pass-code", True), ("Card PIN", True), ("Passcode (6 digits)", True),
    ("[sudo] password for anna:", True), ("Boarding pass", False), ("Passenger name", False),
])
def test_label_patterns_bug_bash_2(text: str, secret: bool) -> None:
    assert label_matches(default_policy(), text) is secret


#: Bug bash 4 F14: prompts in other languages, as written and as tesseract's English model read
#: them at scale 0.5 (DejaVu Sans 14 / 20 px, seen 2026-11-30: "Comrasetia:", "Hasto:", "Naponp:",
#: "Seoret taken:"); and benign labels that must stay kept.
@pytest.mark.parametrize(("text", "secret"), [
    ("Contraseña:", True), ("Contrasena:", True), ("Comrasetia:", True), ("Passwort:", True),
    ("Kennwort", True), ("Mot de passe :", True), ("Senha:", True), ("Wachtwoord", True), ("Hasło:", True),
    ("Hasto:", True), ("Hasio:", True), ("Lösenord", True), ("Salasana", True), ("Пароль:", True),
    ("Naponp:", True), ("Napons:", True), ("パスワード", True), ("密码", True), ("Secret token:", True),
    ("Seoret taken:", True), ("API key", True), ("Private key:", True), ("Clave:", True), ("Jelszó:", True),
    ("Contrato", False), ("Hashtag", False), ("Token count", False), ("Keyboard", False), ("Senhor", False),
    ("Has long options", False), ("Enclave", False), ("Tokenizer settings", False), ("Monkey", False),
])
def test_label_patterns_other_languages(text: str, secret: bool) -> None:
    assert label_matches(default_policy(), text) is secret


def test_typed_box_picks_the_row_with_text_not_the_focus_ring() -> None:
    """Two entries: in ``a`` the upper one has the focus ring (1 px black outline), in ``b`` the
    lower one has it and shows typed text. The typed text's box is the lower row's text only:
    drawn at x 20..80, y 60..70 by hand below."""
    from demotrace.privacy.field_labels import typed_box

    a = np.full((100, 200), 220, np.uint8)
    b = a.copy()
    a[10, 10:150] = a[30, 10:150] = 0
    a[10:31, 10] = a[10:31, 149] = 0  # upper ring in a
    b[55, 10:150] = b[75, 10:150] = 0
    b[55:76, 10] = b[55:76, 149] = 0  # lower ring in b
    for x in range(20, 80, 6):  # "text": 10 glyph strokes 3 px wide, 10 px high
        b[60:70, x:x + 3] = 0
    assert typed_box(a, b, None) == (20, 60, 77, 70)


def test_prompt_row_is_the_last_row_that_appeared() -> None:
    """A command row and, below it, a prompt row appear; the prompt row (y 30..40, x 5..95) is
    returned, cut to the line height."""
    from demotrace.privacy.field_labels import prompt_row

    a = np.full((60, 120), 255, np.uint8)
    b = a.copy()
    b[10:20, 5:60] = 0  # the command's last characters
    b[30:40, 5:95] = 0  # the prompt printed after Enter
    assert prompt_row(a, b, 14) == (5, 30, 95, 40)
    assert prompt_row(a, a, 14) is None
    c = a.copy()  # two text lines (ink every other column) that touch: rows 10..20 and 21..30,
    c[10:20, 5:60:2] = 0  # joined by 2 ink pixels on row 20 (x 5 and 7); last ink column 93
    c[20, 5:8:2] = 0
    c[21:30, 5:95:2] = 0
    assert prompt_row(a, c, 14) == (5, 20, 94, 30)
