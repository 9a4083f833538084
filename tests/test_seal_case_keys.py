"""Sealing a typed secret also removes the Shift presses held while typing it (they would
become stray `press('shift')` steps and reveal which characters were upper-case).

Worked out by hand: "Ab " then the token "Tq7mRv2KxW9pLz4NcB8hJs3Fd6Yg" (10 upper-case letters,
each typed with Shift held, as xdotool types them) then Enter. The token is a
HIGH_ENTROPY_TOKEN; after sealing only the Shift of "A" remains, and the token is one
TextInput "<HIGH_ENTROPY_TOKEN>".
"""

from __future__ import annotations

from pathlib import Path

from privacy_corpus import Builder

from demotrace.paths import Paths
from demotrace.privacy.bundle import open_bundle
from demotrace.privacy.pipeline import RedactionPipeline
from demotrace.privacy.policy import default_policy
from demotrace.privacy.seal import seal_session
from demotrace.schema import KeyDown, KeyUp, Marker, TextInput
from demotrace.spool import DataKey, Spool

TOKEN = "Tq7mRv2KxW9pLz4NcB8hJs3Fd6Yg"


def _type_with_shift(b: Builder, text: str) -> None:
    for ch in text:
        upper = ch.isalpha() and ch.isupper()
        if upper:
            b.add(KeyDown, key="Shift", code="ShiftLeft")
        mods = ("Shift",) if upper else ()
        if ch == "\n":
            key, code, txt = "Enter", "Enter", None
        elif ch == " ":
            key, code, txt = " ", "Space", " "
        elif ch.isdigit():
            key, code, txt = ch, f"Digit{ch}", ch
        else:
            key, code, txt = ch, f"Key{ch.upper()}", ch
        b.add(KeyDown, key=key, code=code, text=txt, modifiers=mods)
        b.add(KeyUp, key=key, code=code, modifiers=mods)
        if upper:
            b.add(KeyUp, key="Shift", code="ShiftLeft", modifiers=("Shift",))


def test_shift_presses_of_a_redacted_token_go_with_it(tmp_path: Path) -> None:
    paths = Paths(tmp_path).ensure()
    spool = Spool(paths.spool, DataKey.create(paths.key_file))
    b = Builder(spool.key)
    b.add(Marker, name="session_start")
    _type_with_shift(b, "Ab " + TOKEN + "\n")
    b.add(Marker, name="session_stop")
    b.write(spool, "s1")
    seal_session(paths, spool, "s1", default_policy(), pipeline=RedactionPipeline(default_policy(), ocr=False))
    with open_bundle(paths, "s1") as bundle:
        events = list(bundle.iter_events())
    keys = [(type(e).__name__, e.key) for e in events if isinstance(e, (KeyDown, KeyUp))]
    assert keys == [("KeyDown", "Shift"), ("KeyDown", "A"), ("KeyUp", "A"), ("KeyUp", "Shift"),
                    ("KeyDown", "b"), ("KeyUp", "b"), ("KeyDown", " "), ("KeyUp", " "),
                    ("KeyDown", "Enter"), ("KeyUp", "Enter")]
    assert [e.text for e in events if isinstance(e, TextInput)] == ["<HIGH_ENTROPY_TOKEN>"]
