"""The seal report counts the recorder's ``private_gap`` markers as well as the gaps made at
seal time, apart and named (bug bash 5 E: "private gaps" counted only the latter)."""

from __future__ import annotations

from pathlib import Path

from privacy_corpus import Builder
from typer.testing import CliRunner

from demotrace.cli import app
from demotrace.paths import Paths
from demotrace.privacy.bundle import open_bundle
from demotrace.schema import Marker
from demotrace.spool import DataKey, Spool

S = 1_000_000_000


def test_report_counts_recorder_gaps_and_seal_gaps_apart(dt_home: Path) -> None:
    paths = Paths(dt_home).ensure()
    spool = Spool(paths.spool, DataKey.create(paths.key_file))
    b = Builder(spool.key)
    b.add(Marker, name="session_start")
    b.focus("XTerm", "bash")
    b.type_text("ls\n")
    # two stretches the recorder excluded while recording: it stored only their markers
    for reason in ("deny:password_manager:app", "private_browser"):
        b.add(Marker, name="private_gap", reason=reason, duration_ns=2 * S)
        b.t += 2 * S
    b.focus("KeePassXC", "vault")  # recorded (e.g. before an exclusion), excluded at seal: 1 gap
    b.type_text("entry\n")
    b.focus("XTerm", "bash")
    b.type_text("pwd\n")
    b.add(Marker, name="session_stop")
    b.write(spool, "s1")
    out = CliRunner().invoke(app, ["seal"])
    assert out.exit_code == 0, out.output
    assert "private gaps 3 (2 marked while recording, 1 at seal);" in " ".join(out.output.split())
    with open_bundle(paths, "s1") as bd:
        rep = bd.report
        gaps = [e for e in bd.iter_events() if isinstance(e, Marker) and e.name == "private_gap"]
    assert (rep["recorder_gaps"], rep["private_gaps"]) == (2, 1)
    assert len(gaps) == 3 and {"deny:password_manager:app", "private_browser"} <= {g.reason for g in gaps}
