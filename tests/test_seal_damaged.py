"""A session with a damaged batch is still sealed, without that batch (bug bash 4: one flipped
byte in one of 151 batches made `seal`, `sessions show` and `review show` fail for the whole
session); a session none of whose batches decrypt (a replaced data key) is refused, not sealed
empty.

Synthetic session (privacy_corpus.Builder): 250 markers written in batches of 100 (seq 0-99,
100-199, 200-249); one byte of the middle batch's ciphertext is flipped in session.db with
sqlite3 directly. Expected by hand: 150 events sealed (seq 0-99 and 200-249, renumbered), the
report counts 100 events dropped as ``events:batch_unreadable``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from privacy_corpus import Builder

from demotrace.errors import SpoolCorrupt
from demotrace.paths import Paths
from demotrace.privacy.bundle import open_bundle
from demotrace.privacy.pipeline import RedactionPipeline
from demotrace.privacy.policy import default_policy
from demotrace.privacy.seal import seal_session
from demotrace.schema import KeyDown, Marker, PointerDown, PointerMove, Rect, TextInput
from demotrace.spool import DataKey, Spool


def _session(tmp_path: Path) -> tuple[Paths, Spool]:
    paths = Paths(tmp_path).ensure()
    spool = Spool(paths.spool, DataKey.create(paths.key_file))
    b = Builder(spool.key)
    for i in range(250):
        b.add(Marker, name="task_start", instruction=f"step {i}")
    b.write(spool, "s1")
    return paths, spool


def _flip(db: Path, first_seq: int) -> None:
    con = sqlite3.connect(db)
    (payload,) = con.execute("SELECT payload FROM batches WHERE first_seq = ?", (first_seq,)).fetchone()
    bad = bytearray(payload)
    bad[len(bad) // 2] ^= 0x01
    con.execute("UPDATE batches SET payload = ? WHERE first_seq = ?", (bytes(bad), first_seq))
    con.commit()
    con.close()


def test_a_damaged_batch_is_left_out_and_the_rest_sealed(tmp_path: Path) -> None:
    paths, spool = _session(tmp_path)
    _flip(paths.spool / "s1" / "session.db", 100)
    with spool.open("s1") as r, pytest.raises(SpoolCorrupt, match=r"batch seq 100\.\.199"):
        list(r.iter_events())  # plain reads still say exactly what is damaged
    rep = seal_session(paths, spool, "s1", default_policy(), pipeline=RedactionPipeline(default_policy(), ocr=False))
    with open_bundle(paths, "s1") as bundle:
        kept = [e.instruction for e in bundle.iter_events() if isinstance(e, Marker)]
    assert kept == [f"step {i}" for i in [*range(100), *range(200, 250)]]
    assert rep.counts["dropped"]["events:batch_unreadable"] == 100
    assert rep.events_in == 250 and rep.events_out == 150


def test_a_session_no_batch_of_which_decrypts_is_refused(tmp_path: Path) -> None:
    paths, spool = _session(tmp_path)
    for first in (0, 100, 200):
        _flip(paths.spool / "s1" / "session.db", first)
    with pytest.raises(SpoolCorrupt, match="no batch can be read.*was the data key replaced"):
        seal_session(paths, spool, "s1", default_policy(), pipeline=RedactionPipeline(default_policy(), ocr=False))
    assert not (paths.home / "sealed" / "s1").exists()


def test_typing_beside_a_damaged_batch_is_removed_whole(tmp_path: Path) -> None:
    """Bug bash 5 D: a damaged batch in the middle of a typed card left the card's other parts
    in the sealed keys (``4929 7`` + ``28 2736``: no layer recognises either). Session by hand:
    seq 0 marker, 1 focus, "pay 4929 7" (20 key events, seq 2-21), 80 pointer moves (22-101),
    "314 50" (12 key events, seq 102-113, inside batch 100-199, which is damaged), 90 pointer
    moves (114-203), "28 2736\n" (16 key events), a click, "ls\n". Expected: the run holding
    the card's surviving parts is removed whole (its keys are the last before and the first after
    the damaged batch):
    no digit left; the typing after the click is kept."""
    paths = Paths(tmp_path).ensure()
    spool = Spool(paths.spool, DataKey.create(paths.key_file))
    b = Builder(spool.key)
    b.add(Marker, name="session_start")
    b.focus("XTerm", "xterm", None, Rect(0, 0, 400, 200))
    b.type_text("pay 4929 7")
    for i in range(80):
        b.add(PointerMove, x=500 + i, y=500)
    b.type_text("314 50")
    for i in range(90):
        b.add(PointerMove, x=600 + i, y=500)
    b.type_text("28 2736\n")
    b.add(PointerDown, x=10, y=10, button="left")
    b.type_text("ls\n")
    b.write(spool, "s1")
    _flip(paths.spool / "s1" / "session.db", 100)
    rep = seal_session(paths, spool, "s1", default_policy(), pipeline=RedactionPipeline(default_policy(), ocr=False))
    with open_bundle(paths, "s1") as bundle:
        text = "".join((e.text or "") for e in bundle.iter_events() if isinstance(e, (KeyDown, TextInput)))
    assert not any(ch.isdigit() for ch in text), text
    assert text == "ls", text
    assert rep.counts["dropped"]["typed_run:beside_unreadable_batch"] == 1
