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
from demotrace.privacy.consent import (
    ConsentDamaged,
    read_consent,
    record_consent,
    require_consent,
    withdraw_consent,
)
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
    # V1 sets no rules: every one at its documented default (canonical JSON worked out by hand,
    # see test_policy.test_scope_digest_is_sha256_of_the_canonical_rules)
    rules = ('{"redaction":{"entities":[],"frame_format":"png","layer_timeout_s":20.0,"ocr_region_pad_px":16,'
             '"ocr_rescan_upscale":2,"ocr_upscale":3,"score_threshold":0.35},"retention":{"raw_days":7.0},'
             '"scope":{"allow_apps":[],"allow_domains":[],"allow_title_patterns":[],"deny":[],"time_windows":[]},'
             '"secrets":{"dom_autocomplete":[],"dom_types":["password"],"name_patterns":[],'
             '"roles":["password text"],"strictness":"standard"}}')
    assert data == {"policy_version": 1, "notice_sha256": hashlib.sha256(b"Notice one.").hexdigest(),
                    "accepted_utc": "2026-11-30T01:03:04Z", "scope_sha256": hashlib.sha256(rules.encode()).hexdigest()}
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
    with pytest.raises(ConsentDamaged) as ei:
        require_consent(paths, default_policy())
    assert f"your consent record {tmp_path / 'consent.json'} is damaged: it is not valid JSON" in str(ei.value)
    assert "needs your consent first" not in str(ei.value) and "demotrace enroll" in str(ei.value)
    record_consent(paths, default_policy())
    assert withdraw_consent(paths) is True
    with pytest.raises(ConsentRequired):
        require_consent(paths, default_policy())


def test_cli_enroll(dt_home: Path) -> None:
    runner = CliRunner()
    declined = runner.invoke(app, ["enroll"], input="n\n")
    assert declined.exit_code == 1
    assert "What is excluded" in declined.output  # the notice was shown
    assert list(dt_home.iterdir()) == []  # declining leaves no trace: no consent, no run/, no spool/
    fresh = dt_home / "never-made"
    declined = runner.invoke(app, ["enroll", "--home", str(fresh)], input="n\n")
    assert declined.exit_code == 1 and not fresh.exists()
    ok = runner.invoke(app, ["enroll"], input="y\n")
    assert ok.exit_code == 0, ok.output
    rec = json.loads((dt_home / "consent.json").read_text())
    assert rec["policy_version"] == 1
    assert rec["notice_sha256"] == hashlib.sha256(default_policy().notice.strip().encode()).hexdigest()
    shown = runner.invoke(app, ["policy", "show"])
    assert shown.exit_code == 0 and "You accepted this notice" in shown.output


DEFAULT_TEXT = (Path(__file__).resolve().parent.parent / "src" / "demotrace" / "privacy"
                / "default_policy.toml").read_text("utf-8")


@pytest.mark.parametrize(("edit", "still_valid"), [
    # the tester's file: every [scope.deny.*] removed — merged back, the effective scope is the same
    (lambda t: t[:t.index("[scope.deny.")] + t[t.index("[secrets]"):], True),
    (lambda t: t, True),  # a verbatim copy
    (lambda t: t.replace("raw_days = 7", "raw_days = 30"), False),  # raw data kept longer
    (lambda t: t.replace("allow_apps = []", 'allow_apps = ["xterm"]'), False),  # capture narrowed
    # one redaction entity fewer: the built-in floor keeps it (policy.with_builtin_floor, bug bash 2)
    (lambda t: t.replace('"US_SSN", ', ""), True),
    (lambda t: t.replace("score_threshold = 0.35", "score_threshold = 0.3"), False),  # redacts more
    (lambda t: t + '[scope.deny.crm]\napps = ["salesforce"]\n', False),  # one more excluded app
])
def test_consent_stays_valid_only_while_the_effective_scope_is_unchanged(dt_home: Path, edit, still_valid: bool) -> None:
    """Consent given under the built-in policy; then a home policy.toml with the SAME version
    and notice. It covers recording only if the effective capture rules are the same."""
    from demotrace.privacy.policy import load_policy

    paths = Paths(dt_home).ensure()
    record_consent(paths, load_policy(paths))
    (dt_home / "policy.toml").write_text(edit(DEFAULT_TEXT), "utf-8")
    pol = load_policy(paths)
    assert (pol.version, pol.notice_sha256) == (1, default_policy().notice_sha256)
    if still_valid:
        assert require_consent(paths, pol).policy_version == 1
    else:
        with pytest.raises(ConsentRequired, match="what is captured changed since you accepted"):
            require_consent(paths, pol)
        record_consent(paths, pol)  # accepting again covers it
        assert require_consent(paths, pol).policy_version == 1


def test_a_record_without_scope_digest_needs_a_new_consent(tmp_path: Path) -> None:
    """Records written before the scope digest existed cannot show which scope was accepted."""
    paths = Paths(tmp_path).ensure()
    (tmp_path / "consent.json").write_text(json.dumps({
        "policy_version": 1, "notice_sha256": hashlib.sha256(b"Notice one.").hexdigest(),
        "accepted_utc": "2026-11-01T08:00:00Z"}))
    rec = read_consent(paths)
    assert rec is not None and rec.scope_sha256 is None  # still readable
    with pytest.raises(ConsentRequired, match="does not record which capture scope you accepted"):
        require_consent(paths, Policy.from_toml(V1))


@pytest.mark.parametrize(("content", "what"), [
    (b"[1, 2]", "holds a JSON list, not an object"),
    (b'{"policy_version": 1, "notice_sha256": "ab"}', "has no field 'accepted_utc'"),
    (b'{"policy_version": "1", "notice_sha256": "ab", "accepted_utc": "x"}', "field 'policy_version' is not a int"),
    (b"\xff\xfe", "is not valid JSON"),
])
def test_damaged_record_says_damaged_and_where(dt_home: Path, content: bytes, what: str) -> None:
    (dt_home / "consent.json").write_bytes(content)
    with pytest.raises(ConsentDamaged) as ei:
        require_consent(Paths(dt_home), default_policy())
    assert f"{dt_home / 'consent.json'} is damaged: it {what}" in str(ei.value)
    shown = CliRunner().invoke(app, ["policy", "show"], env={"COLUMNS": "400"})
    assert shown.exit_code == 0 and "Recording will not start: your consent record" in shown.output
    assert "is damaged" in shown.output


def test_enroll_shows_the_notice_as_written(dt_home: Path) -> None:
    """Bug bash 4: the hard-wrapped notice was wrapped again at the terminal width (ragged
    lines). In a 40-column terminal every line of the notice appears whole."""
    out = CliRunner().invoke(app, ["enroll"], input="n\n", env={"COLUMNS": "40"}).output
    lines = [ln for ln in default_policy().notice.strip().splitlines() if ln.strip()]
    assert max(len(ln) for ln in lines) > 40  # the check could fail
    shown = out.splitlines()
    assert all(ln in shown for ln in lines), [ln for ln in lines if ln not in shown]
