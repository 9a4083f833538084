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
        (MINIMAL + '[[scope.time_windows]]\ndays = ["funday"]\nstart = "08:00"\nend = "09:00"\n', "unknown day 'funday'"),
        (MINIMAL + '[[scope.time_windows]]\ndays = ["mond"]\nstart = "08:00"\nend = "09:00"\n', "unknown day 'mond'"),
        (MINIMAL + '[[scope.time_windows]]\nstart = "10:00"\nend = "10:00"\n', "start and end are both 10:00"),
        (MINIMAL + '[[scope.time_windows]]\nstart = "8am"\nend = "09:00"\n', "scope.time_windows[0].start"),
        (MINIMAL + '[secrets]\nstrictness = "paranoid"\n', "secrets.strictness"),
        (MINIMAL + '[retention]\nraw_days = 0\n', "retention.raw_days must be > 0"),
        (MINIMAL + '[redaction]\nframe_format = "gif"\n', "frame_format"),
        (MINIMAL + '[redaction]\nentities = ["EMAIL_ADDRESS", "PERSON"]\n', "redaction.entities[1]: 'PERSON' has no"),
        ("version = = 1", "not valid TOML"),
    ],
)
def test_invalid_policy_names_the_field(text: str, needle: str) -> None:
    with pytest.raises(PolicyError) as ei:
        Policy.from_toml(text, "my-policy.toml")
    assert needle in str(ei.value)
    assert "my-policy.toml" in str(ei.value)


def test_time_window_days_take_full_names() -> None:
    """Bug bash 4: "monday" was silently cut to "mon" (fine) but "mondxy" too; full names are
    accepted, anything else names the value as written."""
    p = Policy.from_toml(MINIMAL + '[[scope.time_windows]]\ndays = ["Monday", "sun"]\nstart = "08:00"\nend = "09:00"\n')
    assert p.scope.time_windows[0].days == ("mon", "sun")


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


# -- the built-in floor (issue #4): a policy file extends the deny-list, never replaces it ----

DEFAULT_TEXT = (Path(__file__).resolve().parent.parent / "src" / "demotrace" / "privacy"
                / "default_policy.toml").read_text("utf-8")


def _without_deny_sections(text: str) -> str:
    """The tester's policy.toml: the default with every [scope.deny.*] table cut out (each runs
    from its header to the next header that is not a deny table)."""
    out, skip = [], False
    for line in text.splitlines(keepends=True):
        if line.startswith("["):
            skip = line.startswith("[scope.deny.")
        if not skip:
            out.append(line)
    return "".join(out)


def _builtin_entries() -> dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]]:
    """Every built-in deny category's entries, parsed straight from the TOML file (not through
    the code under test)."""
    import tomllib

    deny = tomllib.loads(DEFAULT_TEXT)["scope"]["deny"]
    return {n: (tuple(c.get("apps", ())), tuple(c.get("title_patterns", ())), tuple(c.get("domains", ())))
            for n, c in deny.items()}


def test_a_home_policy_without_deny_sections_keeps_the_builtin_deny_list(tmp_path: Path) -> None:
    """Tester's report: a policy.toml with every [scope.deny.*] removed (same version, same
    notice) recorded a `-class KeePassXC` window. Now every built-in category and entry stays."""
    from demotrace.privacy.scope import ScopeFilter

    text = _without_deny_sections(DEFAULT_TEXT)
    assert "[scope.deny." not in text and "KeePassXC" not in text.split('"""')[2]  # really removed
    (tmp_path / "policy.toml").write_text(text, "utf-8")
    p = load_policy(Paths(tmp_path))
    got = {c.name: (c.apps, c.title_patterns, c.domains) for c in p.scope.deny}
    assert got == _builtin_entries()
    d = ScopeFilter(p).decide(app_id="KeePassXC", title="vault")
    assert (d.allowed, d.reason) == (False, "deny:password_manager:app")
    assert p.notes == ()  # nothing named to be removed: merged silently, `policy show` says so
    assert any("always apply" in line and "password manager" in line for line in p.describe())
    # the same effective rules as the built-in policy: the same consent covers both
    assert p.scope_sha256 == default_policy().scope_sha256


def test_a_policy_file_extends_builtin_categories_and_adds_its_own(tmp_path: Path) -> None:
    (tmp_path / "policy.toml").write_text(
        MINIMAL + '[scope.deny.password_manager]\napps = ["MyVault"]\n'
        '[scope.deny.crm]\napps = ["salesforce"]\ndomains = ["crm.example.com"]\n', "utf-8")
    p = load_policy(Paths(tmp_path))
    builtin = _builtin_entries()
    cats = {c.name: c for c in p.scope.deny}
    assert list(cats) == [*builtin, "crm"]  # built-in first, in file order, then the additions
    assert cats["password_manager"].apps == (*builtin["password_manager"][0], "MyVault")
    assert (cats["crm"].apps, cats["crm"].domains) == (("salesforce",), ("crm.example.com",))
    assert p.notes == ()  # only additions: no warning
    assert p.scope_sha256 != default_policy().scope_sha256  # more is excluded: a new consent


def test_a_policy_copy_with_entries_deleted_keeps_them_and_warns(tmp_path: Path) -> None:
    """A copy of the default with Bitwarden deleted from password_manager.apps and the hr and
    health tables deleted: all stay, and a note names each left-out part."""
    text = DEFAULT_TEXT.replace('"Bitwarden", ', "", 1)
    for cat in ("health", "hr"):
        start = text.index(f"[scope.deny.{cat}]")
        text = text[:start] + text[text.index("[scope.deny.", start + 1):]
    (tmp_path / "policy.toml").write_text(text, "utf-8")
    p = load_policy(Paths(tmp_path))
    assert {c.name: (c.apps, c.title_patterns, c.domains) for c in p.scope.deny} == _builtin_entries()
    src = str(tmp_path / "policy.toml")
    assert p.notes == (
        (f"{src}: [scope.deny] leaves out the built-in categories health, hr; they stay in force (the built-in"
         " deny-list can be extended, never reduced)"),
        (f"{src}: scope.deny.password_manager.apps leaves out built-in entries Bitwarden; they stay excluded"
         " (the built-in deny-list can be extended, never reduced)"),
    )


def test_secret_field_markers_cannot_be_removed_or_strictness_lowered(tmp_path: Path) -> None:
    (tmp_path / "policy.toml").write_text(MINIMAL + '[secrets]\nroles = []\ndom_types = ["pin"]\n', "utf-8")
    p = load_policy(Paths(tmp_path))
    assert p.secrets.roles == ("password text",)  # the default's, from default_policy.toml
    assert p.secrets.dom_types == ("password", "pin")
    assert p.notes == ((f"{tmp_path / 'policy.toml'}: secrets.roles leaves out built-in entries password text;"
                        " they stay in force (secret-field rules can be extended, never reduced)"),)
    (tmp_path / "policy.toml").write_text(MINIMAL + '[secrets]\nstrictness = "strict"\n', "utf-8")
    assert load_policy(Paths(tmp_path)).secrets.strictness == "strict"  # raising is allowed


def test_scope_digest_is_sha256_of_the_canonical_rules() -> None:
    """Worked out by hand for MINIMAL (every setting at its documented default): sorted keys,
    no spaces, deny categories sorted by name."""
    want = ('{"redaction":{"entities":[],"frame_format":"png","layer_timeout_s":20.0,"ocr_region_pad_px":16,'
            '"ocr_rescan_upscale":2,"ocr_upscale":3,"score_threshold":0.35},"retention":{"raw_days":7.0},'
            '"scope":{"allow_apps":[],"allow_domains":[],"allow_title_patterns":[],"deny":[],"time_windows":[]},'
            '"secrets":{"dom_autocomplete":[],"dom_types":["password"],"name_patterns":[],'
            '"roles":["password text"],"strictness":"standard"}}')
    assert Policy.from_toml(MINIMAL).scope_sha256 == hashlib.sha256(want.encode()).hexdigest()
    # order of deny entries and categories does not matter; their content does
    a = Policy.from_toml(MINIMAL + '[scope.deny.a]\napps = ["x", "y"]\n[scope.deny.b]\napps = ["z"]\n')
    b = Policy.from_toml(MINIMAL + '[scope.deny.b]\napps = ["z"]\n[scope.deny.a]\napps = ["y", "x"]\n')
    c = Policy.from_toml(MINIMAL + '[scope.deny.b]\napps = ["z"]\n[scope.deny.a]\napps = ["y"]\n')
    assert a.scope_sha256 == b.scope_sha256 != c.scope_sha256


#: The built-in redaction, read straight from default_policy.toml (not through the code under test).
def _builtin_redaction() -> tuple[tuple[str, ...], float]:
    import tomllib

    rd = tomllib.loads(DEFAULT_TEXT)["redaction"]
    return tuple(rd["entities"]), float(rd["score_threshold"])


#: Twelve phone numbers in formats Presidio's phone recogniser scores 0.4 (US, UK and German
#: numbers with their country codes; all from the 555 / drama / reserved ranges).
PHONES = ["+1 415-555-0132", "+1 212-555-0187", "+1 646-555-0143", "+44 20 7946 0958", "+44 161 496 0732",
          "+1 303-555-0119", "+1 617-555-0164", "+1 206-555-0171", "+44 113 496 0025", "+1 702-555-0199",
          "+1 512-555-0128", "+49 30 901820"]


def test_a_policy_file_cannot_weaken_redaction(tmp_path: Path) -> None:
    """Bug bash 2: `entities = []` and `score_threshold = 1.0` in a home policy turned 12 phone
    numbers found into 0 with no warning, and `policy show` listed no entity. Now the built-in
    entities and threshold stay in force and a note says so."""
    from demotrace.privacy.redact_text import TextRedactor

    (tmp_path / "policy.toml").write_text(MINIMAL + "[redaction]\nentities = []\nscore_threshold = 1.0\n", "utf-8")
    p = load_policy(Paths(tmp_path))
    entities, threshold = _builtin_redaction()
    assert (p.redaction.entities, p.redaction.score_threshold) == (entities, threshold)
    src = str(tmp_path / "policy.toml")
    assert p.notes == (
        (f"{src}: redaction.entities leaves out built-in entities {', '.join(entities)}; they stay detected"
         " (the built-in redaction can be extended, never reduced)"),
        (f"{src}: redaction.score_threshold 1 is above the built-in 0.35; 0.35 stays in force (a higher"
         " threshold would redact less)"),
    )
    text = " ; ".join(f"call {n}" for n in PHONES)
    found = [f for f in TextRedactor(p).find(text) if f.entity == "PHONE_NUMBER"]
    assert len(found) == 12
    # the same findings as under the built-in policy: the weakening had no effect
    assert found == [f for f in TextRedactor(default_policy()).find(text) if f.entity == "PHONE_NUMBER"]
    shown = "\n".join(p.describe())
    assert "Removed before anything leaves this device: email address, phone number, credit card" in shown
    assert "scoring at least 0.35 of 1" in shown
    # the same effective rules as the same file without a [redaction] table: no consent change
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "policy.toml").write_text(MINIMAL, "utf-8")
    assert p.scope_sha256 == load_policy(Paths(tmp_path / "plain")).scope_sha256


def test_a_policy_file_may_make_redaction_stricter(tmp_path: Path) -> None:
    """Lowering the threshold (more findings redacted) is taken as is and needs no note; an
    entity list naming only some built-in entities keeps the others, with a note."""
    (tmp_path / "policy.toml").write_text(MINIMAL + "[redaction]\nscore_threshold = 0.2\n", "utf-8")
    p = load_policy(Paths(tmp_path))
    entities, _ = _builtin_redaction()
    assert (p.redaction.entities, p.redaction.score_threshold, p.notes) == (entities, 0.2, ())
    (tmp_path / "policy.toml").write_text(MINIMAL + '[redaction]\nentities = ["IP_ADDRESS", "EMAIL_ADDRESS"]\n',
                                          "utf-8")
    p = load_policy(Paths(tmp_path))
    assert p.redaction.entities == entities
    missing = [e for e in entities if e not in ("IP_ADDRESS", "EMAIL_ADDRESS")]
    assert p.notes == (f"{tmp_path / 'policy.toml'}: redaction.entities leaves out built-in entities"
                       f" {', '.join(missing)}; they stay detected (the built-in redaction can be extended,"
                       " never reduced)",)


def test_an_empty_entity_list_without_the_floor_means_every_offline_recogniser() -> None:
    """`entities = []` on a policy that is not merged over the floor (Policy.from_toml) means all
    eight offline recognisers, explicitly, in the pattern layer and in `policy show`."""
    from demotrace.privacy.redact_text import PresidioPatternLayer

    p = Policy.from_toml(MINIMAL + "[redaction]\nentities = []\n")
    assert p.redaction.entities == ()
    layer = PresidioPatternLayer(p)
    assert set(layer.entities) == set(_builtin_redaction()[0])
    assert len(layer._engine.registry.recognizers) == 8  # ours only, not Presidio's predefined set
    found = {f.entity for f in layer("write to anna.lindqvist@example.org from 198.51.100.23")}
    assert found == {"EMAIL_ADDRESS", "IP_ADDRESS"}
    assert any("email address, phone number, credit card, iban code, us ssn, uk nino, ip address, url credentials"
               in line for line in p.describe())


def test_policy_show_warns_about_the_weakening(tmp_path: Path) -> None:
    """The CLI prints each note as a warning and lists the entities in force."""
    import os
    import subprocess
    import sys

    (tmp_path / "policy.toml").write_text(MINIMAL + "[redaction]\nentities = []\nscore_threshold = 1.0\n", "utf-8")
    env = {**os.environ, "DEMOTRACE_HOME": str(tmp_path), "COLUMNS": "400"}
    cli = Path(sys.executable).parent / "demotrace"  # the console script installed beside the interpreter
    out = subprocess.run([str(cli), "policy", "show"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "warning:" in out.stderr and "redaction.score_threshold 1 is above the built-in 0.35" in out.stderr
    assert "redaction.entities leaves out built-in entities EMAIL_ADDRESS" in out.stderr
    assert "email address, phone number, credit card" in out.stdout


def test_a_policy_file_cannot_weaken_frame_ocr(tmp_path: Path) -> None:
    """Bug bash 4: `ocr_upscale = 1`, `ocr_rescan_upscale = 0`, `ocr_region_pad_px = 0` in a home
    policy let an IBAN and an SSN through sealing, with no warning. The built-in values (read
    from default_policy.toml here) stay in force and a note names each."""
    import tomllib

    rd = tomllib.loads(DEFAULT_TEXT)["redaction"]
    (tmp_path / "policy.toml").write_text(
        MINIMAL + "[redaction]\nocr_upscale = 1\nocr_rescan_upscale = 0\nocr_region_pad_px = 0\n", "utf-8")
    p = load_policy(Paths(tmp_path))
    r = p.redaction
    assert (r.ocr_upscale, r.ocr_rescan_upscale, r.ocr_region_pad_px) == (
        rd["ocr_upscale"], rd["ocr_rescan_upscale"], rd["ocr_region_pad_px"])
    src = str(tmp_path / "policy.toml")
    assert [n.split(";")[0] for n in p.notes] == [
        f"{src}: redaction.ocr_upscale 1 is below the built-in {rd['ocr_upscale']}",
        f"{src}: redaction.ocr_rescan_upscale 0 is below the built-in {rd['ocr_rescan_upscale']}",
        f"{src}: redaction.ocr_region_pad_px 0 is below the built-in {rd['ocr_region_pad_px']}"]
    # raising them is allowed and kept
    (tmp_path / "policy.toml").write_text(MINIMAL + "[redaction]\nocr_upscale = 4\n", "utf-8")
    p = load_policy(Paths(tmp_path))
    assert p.redaction.ocr_upscale == 4 and p.notes == ()
