"""Values assembled with cursor keys leave the sealed keystrokes (bug bash 5 finding C).

A person types part of a value, moves the caret back (ArrowLeft, Home, Control+A) and types
the rest in front of it: the screen shows the value whole, no typing run holds it and the runs
laid end to end in time order spell something else. Expected values below are worked out by hand
from the keys each test types (what a shell's readline line would show), not from the code.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from privacy_corpus import Builder

from demotrace.paths import Paths
from demotrace.privacy.bundle import open_bundle
from demotrace.privacy.line_edit import edited_lines
from demotrace.privacy.policy import default_policy
from demotrace.privacy.seal import seal_session
from demotrace.schema import Frame, KeyDown, KeyUp, Marker, PointerDown, Rect, TextInput
from demotrace.spool import DataKey, Spool

CARD = "4929 7314 5028 2736"  # synthetic, Luhn-valid (doubled-digit sum 70)
TERM = Rect(0, 0, 400, 200)


def _key(b: Builder, key: str, *mods: str) -> None:
    """Press and release ``key`` (a W3C key value) with ``mods`` held; no text."""
    code = f"Key{key.upper()}" if len(key) == 1 else key
    b.add(KeyDown, key=key, code=code, text=None, modifiers=tuple(sorted(mods)))
    b.add(KeyUp, key=key, code=code, text=None, modifiers=tuple(sorted(mods)))


def _sealed(tmp_path: Path, build) -> tuple[str, list[np.ndarray]]:  # type: ignore[no-untyped-def]
    """Seal a session whose typing ``build(b)`` adds inside a terminal at ``TERM``, followed by
    one white frame; return what the sealed keystrokes spell ('|' for keys without text, a
    placeholder for each removed value) and the sealed frames (greyscale arrays)."""
    paths = Paths(tmp_path).ensure()
    spool = Spool(paths.spool, DataKey.create(paths.key_file))
    b = Builder(spool.key)
    b.add(Marker, name="session_start")
    b.focus("XTerm", "xterm", None, TERM)
    build(b)
    b.t += 100_000_000
    b.frame(Image.new("RGB", (1280, 800), "white"))
    b.add(Marker, name="session_stop")
    b.write(spool, "s1")
    seal_session(paths, spool, "s1", default_policy())
    with open_bundle(paths, "s1") as bundle:
        events = list(bundle.iter_events())
        frames = [np.asarray(Image.open(io.BytesIO(bundle.read_blob(e.blob))).convert("L"))
                  for e in events if isinstance(e, Frame)]
    text = "".join((e.text or "") if isinstance(e, TextInput) else (e.text or "|")
                   for e in events if isinstance(e, (KeyDown, TextInput)))
    return text, frames


def test_address_completed_in_front_of_its_domain_is_removed(tmp_path: Path) -> None:
    def build(b: Builder) -> None:
        b.type_text("echo @example.net")
        for _ in range("@example.net".__len__()):
            _key(b, "ArrowLeft")
        b.type_text("jon.insert\n")

    text, frames = _sealed(tmp_path, build)
    assert "jon" not in text and "insert" not in text and "example" not in text, text
    assert "<EMAIL_ADDRESS>" in text, text
    assert text.startswith("echo "), text  # the rest of the line is kept
    # the terminal the address went into is blacked out in the frame after it
    assert int(frames[0][0:200, 0:400].max()) <= 12
    assert int(frames[0][300:700, 500:1200].min()) >= 240


def test_card_typed_back_to_front_with_control_a_is_removed(tmp_path: Path) -> None:
    def build(b: Builder) -> None:
        b.type_text(CARD[-4:])
        _key(b, "a", "Control")
        b.type_text(CARD[:-4])
        _key(b, "e", "Control")
        b.type_text(" ok\n")

    text, _ = _sealed(tmp_path, build)
    assert not any(ch.isdigit() for ch in text), text
    assert text.endswith(" ok|"), text


def test_value_assembled_then_deleted_is_removed_from_the_keys(tmp_path: Path) -> None:
    """The address exists only between its assembly and Control+K; the keys still spell it."""
    def build(b: Builder) -> None:
        b.type_text("mail @example.net")
        for _ in range(len("@example.net")):
            _key(b, "ArrowLeft")
        b.type_text("kim.del")           # "mail kim.del@example.net" on screen
        _key(b, "k", "Control")          # deletes from the caret to the end: "mail kim.del"
        b.type_text("\n")

    text, _ = _sealed(tmp_path, build)
    assert "kim" not in text and "example" not in text, text
    assert text.startswith("mail "), text


def test_benign_cursor_edits_are_kept_verbatim(tmp_path: Path) -> None:
    """A fixed typo (``git comit`` → ``git commit``) holds no value: every key stays and the
    terminal is not blacked out."""
    def build(b: Builder) -> None:
        b.type_text("git comit -m fix")
        for _ in range(len("it -m fix")):
            _key(b, "ArrowLeft")
        b.type_text("m")
        _key(b, "End")
        b.type_text("\n")

    text, frames = _sealed(tmp_path, build)
    assert text == "git comit -m fix" + "|" * 9 + "m" + "|" + "|", text
    assert int(frames[0][0:200, 0:400].min()) >= 240


def _line(events: list) -> list[str]:  # type: ignore[type-arg]
    return ["".join(c for c, _ in line) for line in edited_lines(events)]


def test_line_model_follows_readline_bindings(tmp_path: Path) -> None:
    """Each expected string is what bash's readline shows for the same keys."""
    b = Builder(DataKey.create(tmp_path / "key"))
    b.type_text("world")
    _key(b, "Home")
    b.type_text("hello ")            # "hello world"
    _key(b, "ArrowRight", "Control")  # after "world"
    b.type_text("!")                 # "hello world!"
    _key(b, "ArrowLeft", "Alt")      # before "world"
    _key(b, "ArrowLeft", "Alt")      # before "hello"
    _key(b, "Delete")                # "hello world!" before the deletion, "ello world!" after
    _key(b, "e", "Control")
    _key(b, "w", "Control")          # unix-word-rubout: back to the space, "world!" goes
    assert _line(b.events) == ["hello world!", "ello world!", "ello "]
    b2 = Builder(b.key)
    b2.type_text("abc")               # no caret move: a single typing run, not handed over
    b2.add(PointerDown, x=1, y=1, button="left")
    b2.type_text("xyz")
    _key(b2, "ArrowLeft")
    _key(b2, "ArrowLeft")
    b2.type_text("Q")
    _key(b2, "k", "Control")         # snapshot "xQyz", then "xQ"
    b2.type_text("\n")               # line ends
    b2.type_text("after")            # a new line without caret moves: not handed over
    assert _line(b2.events) == ["xQyz", "xQ"]


def test_value_completed_on_a_line_recalled_from_history_is_removed(tmp_path: Path) -> None:
    """Bug bash 6 H1: ``echo 4929 7314 x``, Enter, ArrowUp (the shell recalls the line),
    Backspace, ``5028 2736``: the second command holds the card, half of whose keys were typed
    for the first one."""
    def build(b: Builder) -> None:
        b.type_text("echo 4929 7314 x\n")
        _key(b, "ArrowUp")
        _key(b, "Backspace")
        b.type_text("5028 2736\n")
        _key(b, "ArrowUp")  # a benign recall, run again unchanged
        b.type_text("\n")

    text, frames = _sealed(tmp_path, build)
    assert not any(ch.isdigit() for ch in text), text
    assert text.startswith("echo "), text
    assert int(frames[0][0:200, 0:400].max()) <= 12


@pytest.mark.parametrize(("first", "shortcut", "then"), [
    ("qq", "a", "@example.net"),  # bug bash 6 H2: Control+A selects all in a Chromium field: "qq" replaced
    ("@example.net", "w", ""),  # bug bash 6 H3: Control+W deletes a word in a shell, nothing in a Tk entry
])
def test_gui_field_shortcuts_do_not_hide_the_value(tmp_path: Path, first: str, shortcut: str, then: str) -> None:
    """``first``, Control+``shortcut``, ``then``, Home, ``jon.insert``, Tab: the GUI field holds
    exactly ``jon.insert@example.net``."""
    def build(b: Builder) -> None:
        b.type_text(first)
        _key(b, shortcut, "Control")
        b.type_text(then)
        _key(b, "Home")
        b.type_text("jon.insert")
        _key(b, "Tab")

    text, _ = _sealed(tmp_path, build)
    assert "jon" not in text and "example" not in text, text


def test_transposed_digits_that_make_a_card_are_removed(tmp_path: Path) -> None:
    """Bug bash 6 M1: ``echo 4929 7314 5028 2763``, ArrowLeft, Control+T (readline swaps the
    character before the caret with the one at it) gives the card ``4929 7314 5028 2736``."""
    def build(b: Builder) -> None:
        b.type_text("echo " + CARD[:-2] + CARD[-1] + CARD[-2])
        _key(b, "ArrowLeft")
        _key(b, "t", "Control")
        b.type_text("\n")

    text, _ = _sealed(tmp_path, build)
    assert not any(ch.isdigit() for ch in text), text
