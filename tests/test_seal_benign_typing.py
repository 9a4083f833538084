"""Benign typed commands do not black out their terminal (bug bash 4 F13): ``seq 3000 3300``
was flagged as a PHONE_NUMBER at seal time and the typed-secret rule then painted the xterm
black in every later frame. A typed phone number still does (the control)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from privacy_corpus import BENIGN_COMMANDS, Builder, render

from demotrace.paths import Paths
from demotrace.privacy.bundle import open_bundle
from demotrace.privacy.policy import default_policy
from demotrace.privacy.seal import seal_session
from demotrace.schema import Frame, Marker, Rect
from demotrace.spool import DataKey, Spool

TERMINAL = Rect(0, 0, 640, 200)


def _seal(tmp: Path, typed: list[str]) -> tuple[object, list[np.ndarray]]:
    paths = Paths(tmp).ensure()
    spool = Spool(paths.spool, DataKey.create(paths.key_file))
    b = Builder(spool.key)
    b.add(Marker, name="session_start")
    b.focus("XTerm", "bash", None, TERMINAL)
    b.field("terminal", "terminal")
    for line in typed:
        b.type_text(line + "\n")
    b.frame(render([("build finished", 16)], size=(640, 200)))  # a later frame of the terminal
    b.add(Marker, name="session_stop")
    b.write(spool, "s1")
    rep = seal_session(paths, spool, "s1", default_policy())
    with open_bundle(paths, "s1") as bd:
        frames = [np.asarray(Image.open(io.BytesIO(bd.read_blob(e.blob))).convert("L"))
                  for e in bd.iter_events() if isinstance(e, Frame)]
    return rep, frames


def test_typed_command_numbers_leave_the_terminal_visible(tmp_path: Path) -> None:
    rep, frames = _seal(tmp_path, list(BENIGN_COMMANDS))
    assert "PHONE_NUMBER" not in rep.counts["entities"]  # type: ignore[attr-defined]
    assert rep.typed_secret_masked == 0  # type: ignore[attr-defined]
    (frame,) = frames
    assert frame.mean() > 200  # a white terminal with one line of text, not a black one


@pytest.mark.parametrize("phone", ["+1 415-555-0132", "415 555 0132"])
def test_a_typed_phone_number_still_blacks_it_out(tmp_path: Path, phone: str) -> None:
    rep, frames = _seal(tmp_path, [f"echo {phone}"])
    assert rep.counts["entities"].get("PHONE_NUMBER") == 1  # type: ignore[attr-defined]
    assert rep.typed_secret_masked == 1  # type: ignore[attr-defined]
    (frame,) = frames
    assert frame.max() == 0  # the whole 640x200 terminal (the frame) painted black
