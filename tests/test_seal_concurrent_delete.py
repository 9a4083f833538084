"""A session deleted or forgotten while it is being sealed does not come back as a bundle (bug
bash 5: `seal --replace` running while `review delete` / `forget --last 1d` ran finished and put
a readable bundle back — unlisted by `review list`, yet taken by `build` and `upload`).

The deletion happens from inside the seal, deterministically: the pipeline's text layer (the
seal's first pass over typed text) deletes or cuts the raw session the first time it is called,
as the person's `review delete` / `forget` would from another process.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from privacy_corpus import Builder

from demotrace.errors import SessionNotFound
from demotrace.paths import Paths
from demotrace.privacy.pipeline import RedactionPipeline
from demotrace.privacy.policy import default_policy
from demotrace.privacy.review import delete_session
from demotrace.privacy.seal import seal_session
from demotrace.schema import Marker
from demotrace.spool import DataKey, Spool


class _Meanwhile:
    """A text layer that finds nothing and runs ``action`` once, on its first call."""

    name = "meanwhile"

    def __init__(self, action) -> None:  # type: ignore[no-untyped-def]
        self.action, self.done = action, False

    def __call__(self, text: str) -> list:  # type: ignore[type-arg]
        if not self.done:
            self.done = True
            self.action()
        return []


def _session(tmp_path: Path) -> tuple[Paths, Spool]:
    paths = Paths(tmp_path).ensure()
    spool = Spool(paths.spool, DataKey.create(paths.key_file))
    b = Builder(spool.key)
    b.add(Marker, name="session_start")
    b.type_text("hello there\n")
    b.t += 5_000_000_000
    b.type_text("later words\n")
    b.add(Marker, name="session_stop")
    b.write(spool, "s1")
    return paths, spool


@pytest.mark.parametrize("what", ["delete", "forget"])
def test_a_session_removed_while_sealing_leaves_no_bundle(tmp_path: Path, what: str) -> None:
    paths, spool = _session(tmp_path)
    if what == "delete":
        action = lambda: delete_session(paths, spool, "s1")  # noqa: E731
    else:
        action = lambda: spool.forget_after("s1", 4_000_000_000)  # noqa: E731 - the later half goes
    pipe = RedactionPipeline(default_policy(), text_layers=[_Meanwhile(action)], ocr=False)
    with pytest.raises(SessionNotFound, match="deleted or changed .* while it was being sealed"):
        seal_session(paths, spool, "s1", default_policy(), pipeline=pipe)
    sealed = paths.home / "sealed"
    assert not sealed.exists() or [p.name for p in sealed.iterdir()] == []
    # without interference the same session seals (the check is not what fails)
    if what == "forget":
        rep = seal_session(paths, spool, "s1", default_policy(),
                           pipeline=RedactionPipeline(default_policy(), text_layers=[], ocr=False))
        assert rep.events_in == 1 + 2 * len("hello there\n")
