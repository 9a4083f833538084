"""Consent before capture: recorded with version, UTC time and notice digest; re-consent on a
new version or a changed notice."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from demotrace.cli import app
from demotrace.paths import Paths
from demotrace.privacy.consent import read_consent, record_consent, require_consent, withdraw_consent
from demotrace.privacy.errors import ConsentRequired
from demotrace.privacy.policy import Policy, default_policy

V1 = 'version = 1\nnotice = "Notice one."\n'
V2 = 'version = 2\nnotice = "Notice two."\n'


def test_no_consent_refuses(tmp_path: Path) -> None:
    with pytest.raises(ConsentRequired, match="demotrace enroll"):
        require_consent(Paths(tmp_path), Policy.from_toml(V1))


def test_record_then_require(tmp_path: Path) -> None:
    paths = Paths(tmp_path).ensure()
    when = dt.datetime(2026, 11, 30, 2, 3, 4, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    rec = record_consent(paths, Policy.from_toml(V1), now=when)
    f = tmp_path / "consent.json"
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    data = json.loads(f.read_text())
    assert data == {"policy_version": 1, "notice_sha256": hashlib.sha256(b"Notice one.").hexdigest(),
                    "accepted_utc": "2026-11-30T01:03:04Z"}
    assert require_consent(paths, Policy.from_toml(V1)) == rec


def test_new_version_requires_reconsent(tmp_path: Path) -> None:
    paths = Paths(tmp_path).ensure()
    record_consent(paths, Policy.from_toml(V1))
    with pytest.raises(ConsentRequired) as ei:
        require_consent(paths, Policy.from_toml(V2))
    assert "version 1" in str(ei.value) and "version 2" in str(ei.value)
    record_consent(paths, Policy.from_toml(V2))
    assert require_consent(paths, Policy.from_toml(V2)).policy_version == 2


def test_changed_notice_same_version_requires_reconsent(tmp_path: Path) -> None:
    paths = Paths(tmp_path).ensure()
    record_consent(paths, Policy.from_toml(V1))
    with pytest.raises(ConsentRequired, match="notice text"):
        require_consent(paths, Policy.from_toml('version = 1\nnotice = "Notice one, edited."\n'))


def test_corrupt_record_counts_as_none_and_withdraw(tmp_path: Path) -> None:
    paths = Paths(tmp_path).ensure()
    (tmp_path / "consent.json").write_text("{not json")
    assert read_consent(paths) is None
    with pytest.raises(ConsentRequired):
        require_consent(paths, default_policy())
    record_consent(paths, default_policy())
    assert withdraw_consent(paths) is True
    with pytest.raises(ConsentRequired):
        require_consent(paths, default_policy())


def test_cli_enroll(dt_home: Path) -> None:
    runner = CliRunner()
    declined = runner.invoke(app, ["enroll"], input="n\n")
    assert declined.exit_code == 1
    assert "What is excluded" in declined.output  # the notice was shown
    assert not (dt_home / "consent.json").exists()  # declining leaves no trace
    ok = runner.invoke(app, ["enroll"], input="y\n")
    assert ok.exit_code == 0, ok.output
    rec = json.loads((dt_home / "consent.json").read_text())
    assert rec["policy_version"] == 1
    assert rec["notice_sha256"] == hashlib.sha256(default_policy().notice.strip().encode()).hexdigest()
    shown = runner.invoke(app, ["policy", "show"])
    assert shown.exit_code == 0 and "You accepted this notice" in shown.output
