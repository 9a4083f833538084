"""The versioned policy: built-in default, validation errors that name the field, plain words."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from demotrace.paths import Paths
from demotrace.privacy.errors import PolicyError
from demotrace.privacy.policy import Policy, default_policy, load_policy

MINIMAL = 'version = 3\nnotice = "We record clicks."\n'


def test_default_policy_holds_the_builtin_deny_list() -> None:
    p = default_policy()
    assert p.version == 1 and p.source == "built-in"
    assert p.raw_retention_days == 7
    cats = {c.name: c for c in p.scope.deny}
    assert {"password_manager", "banking", "health", "hr", "personal_messaging", "remote_desktop",
            "private_browsing"} <= set(cats)
    for app in ("KeePassXC", "Bitwarden", "1Password"):
        assert app in cats["password_manager"].apps
    for app in ("Signal", "WhatsApp", "TelegramDesktop"):
        assert app in cats["personal_messaging"].apps
    assert "Remmina" in cats["remote_desktop"].apps
    assert p.secrets.strictness == "standard"
    assert "password text" in p.secrets.roles


def test_notice_digest_is_sha256_of_the_text() -> None:
    p = Policy.from_toml(MINIMAL)
    assert p.notice_sha256 == hashlib.sha256(b"We record clicks.").hexdigest()
    assert p.version == 3
    assert p.raw_retention_days == 7  # default when [retention] is absent


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('notice = "x"\n', "missing field 'version'"),
        ('version = "1"\nnotice = "x"\n', "field 'version' must be int"),
        ('version = 0\nnotice = "x"\n', "version must be >= 1"),
        ('version = 1\nnotice = "  "\n', "notice must not be empty"),
        (MINIMAL + '[scope.deny.x]\ntitle_patterns = ["(unclosed"]\n', "scope.deny.x.title_patterns[0]: bad regex"),
        (MINIMAL + '[[scope.time_windows]]\ndays = ["funday"]\nstart = "08:00"\nend = "09:00"\n', "unknown day"),
        (MINIMAL + '[[scope.time_windows]]\nstart = "8am"\nend = "09:00"\n', "scope.time_windows[0].start"),
        (MINIMAL + '[secrets]\nstrictness = "paranoid"\n', "secrets.strictness"),
        (MINIMAL + '[retention]\nraw_days = 0\n', "retention.raw_days must be > 0"),
        (MINIMAL + '[redaction]\nframe_format = "gif"\n', "frame_format"),
        ("version = = 1", "not valid TOML"),
    ],
)
def test_invalid_policy_names_the_field(text: str, needle: str) -> None:
    with pytest.raises(PolicyError) as ei:
        Policy.from_toml(text, "my-policy.toml")
    assert needle in str(ei.value)
    assert "my-policy.toml" in str(ei.value)


def test_load_policy_prefers_the_home_file(tmp_path: Path) -> None:
    paths = Paths(tmp_path).ensure()
    assert load_policy(paths).source == "built-in"
    (tmp_path / "policy.toml").write_text(MINIMAL + "[retention]\nraw_days = 3\n")
    p = load_policy(paths)
    assert (p.version, p.raw_retention_days, p.source) == (3, 3.0, str(tmp_path / "policy.toml"))
    (tmp_path / "policy.toml").write_text("version = 1\n")
    with pytest.raises(PolicyError, match="missing field 'notice'"):
        load_policy(paths)


def test_describe_says_what_is_and_is_not_captured() -> None:
    lines = "\n".join(default_policy().describe())
    assert "KeePassXC" in lines and "Remmina" in lines and "Signal" in lines
    assert "Incognito" in lines
    assert "destroyed after 7 days" in lines
    assert "password, one-time-code and card fields are never stored (dropped by the recorder" in lines
    assert "NOT recognised: a password typed without a label" in lines
    allow = Policy.from_toml(MINIMAL + '[scope]\nallow_apps = ["code"]\n')
    assert any(line.startswith("Captured: ONLY apps code") for line in allow.describe())


@pytest.mark.parametrize("text, needle", [
    ('version = 1\nnotice = "n"\n[retention]\nraw_dayz = 1\n', "unknown field 'retention.raw_dayz' in "),
    ('version = 1\nnotice = "n"\n[scope]\nallow_appz = []\n', "unknown field 'scope.allow_appz' in "),
    ('version = 1\nnotice = "n"\n[retention]\nraw_days = 1e400\n', "retention.raw_days must be > 0 and at most 36500 days"),
    ('version = 1\nnotice = "n"\n[retention]\nraw_days = 99999999999999\n', "at most 36500 days"),
])
def test_unknown_and_out_of_range_fields_are_rejected(text: str, needle: str) -> None:
    with pytest.raises(PolicyError) as ei:
        Policy.from_toml(text, "P.toml")
    assert needle in str(ei.value) and "P.toml" in str(ei.value)


def test_non_utf8_policy_file_is_a_clear_error(tmp_path: Path) -> None:
    paths = Paths(tmp_path).ensure()
    (tmp_path / "policy.toml").write_bytes(b'version = 1\nnotice = "caf\xe9"\n')  # Latin-1 é
    with pytest.raises(PolicyError) as ei:
        load_policy(paths)
    assert "policy.toml" in str(ei.value) and "not UTF-8" in str(ei.value) and "offset 25" in str(ei.value)  # 12 + len(b'notice = "caf')


def test_notice_promises_only_what_is_enforced() -> None:
    """The notice no longer promises that every password is removed: an unlabelled password is
    not recognised by the text layers (checked here), and the notice says so."""
    from demotrace.privacy.pipeline import RedactionPipeline

    pol = default_policy()
    notice = " ".join(pol.notice.split())
    assert "(for example hunter2Pass!word) cannot be recognised and is NOT removed" in notice
    assert "never recorded" not in notice
    pipe = RedactionPipeline(pol)
    try:
        assert pipe.find("echo hunter2Pass!word") == []  # the limit the notice states is real
        assert {f.entity for f in pipe.find("password: hunter2Pass!word")} == {"PASSWORD_LABEL"}  # labelled: found
    finally:
        pipe.close()
