"""Capture scope: built-in deny-list, private windows, the person's exclusions (apps not yet
seen), time windows, allow-lists, masking rectangles."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from demotrace.cli import app
from demotrace.errors import ConfigError
from demotrace.paths import Paths
from demotrace.privacy.policy import Policy, default_policy
from demotrace.privacy.scope import Exclusions, ScopeFilter, domain_matches
from demotrace.schema import FocusChange
from demotrace.schema.events import Rect

MON_9 = dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.timezone.utc)  # 2026-11-30 is a Monday


@pytest.mark.parametrize(
    ("ctx", "reason"),
    [
        ({"app_id": "KeePassXC", "title": "Passwords.kdbx"}, "deny:password_manager:app"),
        ({"app_id": "bitwarden"}, "deny:password_manager:app"),
        ({"app_id": "1Password"}, "deny:password_manager:app"),
        ({"app_id": None, "exe": "/opt/Signal/signal-desktop"}, "deny:personal_messaging:app"),
        ({"app_id": "TelegramDesktop"}, "deny:personal_messaging:app"),
        ({"app_id": "org.remmina.Remmina"}, "deny:remote_desktop:app"),
        ({"app_id": "firefox", "title": "Example — Mozilla Firefox Private Browsing"}, "deny:private_browsing:title"),
        ({"app_id": "Chromium", "title": "New Tab - Chromium (Incognito)"}, "deny:private_browsing:title"),
        ({"app_id": "Chromium", "url": "https://www.paypal.com/myaccount"}, "deny:banking:domain"),
        ({"app_id": "Chromium", "url": "https://web.whatsapp.com/"}, "deny:personal_messaging:domain"),
        ({"app_id": "Chromium", "url": "https://portal.example.bank/login"}, "deny:banking:domain"),
        ({"app_id": "Chromium", "url": "https://acme.bamboohr.com/home"}, "deny:hr:domain"),
        ({"app_id": "Chromium", "url": "https://www.nhs.uk/conditions"}, "deny:health:domain"),
    ],
)
def test_builtin_deny_list(ctx: dict, reason: str) -> None:
    d = ScopeFilter(default_policy()).decide(now=MON_9, **ctx)
    assert (d.allowed, d.reason) == (False, reason)


@pytest.mark.parametrize(
    "ctx",
    [
        {"app_id": "XTerm", "title": "xterm"},
        {"app_id": "Chromium", "url": "https://notpaypal.com/", "title": "Docs"},
        {"app_id": "Chromium", "url": "https://example.org/bank", "title": "Bank holidays list"},
        {"app_id": "code", "title": "private.py - Visual Studio Code"},
    ],
)
def test_ordinary_work_is_allowed(ctx: dict) -> None:
    assert ScopeFilter(default_policy()).decide(now=MON_9, **ctx).allowed


def test_domain_matching() -> None:
    assert domain_matches("mail.example.com", "example.com")
    assert domain_matches("example.com", "example.com")
    assert not domain_matches("badexample.com", "example.com")
    assert domain_matches("x.y.bank", "*.bank")
    assert not domain_matches(None, "example.com")


def test_person_exclusions_include_apps_never_seen(tmp_path: Path) -> None:
    paths = Paths(tmp_path).ensure()
    ex = Exclusions.load(paths)
    ex.add("app", "ZedEditor")  # not installed, never seen
    ex.add("domain", "https://Sports.Example.net/scores")
    ex.add("title", "Salary review")
    ex.save()
    f = tmp_path / "exclusions.json"
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert [(e["kind"], e["value"]) for e in json.loads(f.read_text())] == [
        ("app", "ZedEditor"), ("domain", "sports.example.net"), ("title", "Salary review")]
    sf = ScopeFilter(default_policy(), Exclusions.load(paths))
    assert sf.decide(app_id="zededitor", now=MON_9).reason == "exclusion:app"
    assert sf.decide(app_id="Chromium", url="https://live.sports.example.net/x", now=MON_9).reason == "exclusion:domain"
    assert sf.decide(app_id="Gedit", title="notes: SALARY REVIEW 2027", now=MON_9).reason == "exclusion:title"
    ex = Exclusions.load(paths)
    assert ex.remove("app", "zededitor") and not ex.remove("app", "zededitor")
    with pytest.raises(ConfigError, match="kind must be one of"):
        ex.add("window", "x")


def test_time_windows_local_time() -> None:
    pol = Policy.from_toml(
        'version = 1\nnotice = "n"\n'
        '[[scope.time_windows]]\ndays = ["mon", "tue", "wed", "thu", "fri"]\nstart = "08:00"\nend = "18:00"\n'
        '[[scope.time_windows]]\ndays = ["sat"]\nstart = "22:00"\nend = "02:00"\n'
    )
    sf = ScopeFilter(pol)
    at = lambda d, h, m=0: dt.datetime(2026, 11, d, h, m, tzinfo=dt.timezone.utc)  # noqa: E731
    assert sf.decide(app_id="XTerm", now=at(30, 9)).allowed  # Monday 09:00
    assert sf.decide(app_id="XTerm", now=at(30, 7, 59)).reason == "time_window"
    assert sf.decide(app_id="XTerm", now=at(30, 18, 0)).reason == "time_window"  # end exclusive
    assert sf.decide(app_id="XTerm", now=at(28, 12)).reason == "time_window"  # Saturday noon
    assert sf.decide(app_id="XTerm", now=at(28, 23)).allowed  # Saturday 23:00
    assert sf.decide(app_id="XTerm", now=at(29, 1, 30)).allowed  # Sunday 01:30, Saturday's window
    assert sf.decide(app_id="XTerm", now=at(29, 2, 0)).reason == "time_window"


def test_allow_list_and_deny_wins() -> None:
    pol = Policy.from_toml(
        'version = 1\nnotice = "n"\n[scope]\nallow_apps = ["code", "Chromium"]\n'
        'allow_domains = ["example.org"]\n[scope.deny.pm]\napps = ["KeePassXC"]\n'
        'domains = ["vault.example.org"]\n'
    )
    sf = ScopeFilter(pol)
    assert sf.decide(app_id="code").allowed
    assert sf.decide(app_id="XTerm").reason == "not_in_allow_list"
    assert sf.decide(app_id=None, title=None).reason == "not_in_allow_list"  # unknown: closed
    assert sf.decide(app_id="Chromium", url="https://vault.example.org/").reason == "deny:pm:domain"


def test_decide_focus_and_excluded_rects() -> None:
    sf = ScopeFilter(default_policy())
    fc = FocusChange(seq=0, t_ns=0, app_id="KeePassXC", title="db")
    assert not sf.decide_focus(fc, MON_9).allowed
    rects = sf.excluded_rects([
        ("XTerm", "xterm", None, Rect(0, 0, 640, 800)),
        ("KeePassXC", "db", None, Rect(640, 0, 640, 400)),
        ("Chromium", "Bank (Incognito)", None, Rect(640, 400, 640, 400)),
    ], MON_9)
    assert rects == [Rect(640, 0, 640, 400), Rect(640, 400, 640, 400)]


def test_cli_exclusions(dt_home: Path) -> None:
    r = CliRunner()
    assert r.invoke(app, ["exclusions", "add", "app", "Obsidian"]).exit_code == 0
    assert r.invoke(app, ["exclusions", "add", "domain", "news.example.net"]).exit_code == 0
    out = r.invoke(app, ["exclusions", "list"]).output
    assert "app\tObsidian" in out and "domain\tnews.example.net" in out
    assert r.invoke(app, ["exclusions", "remove", "app", "Obsidian"]).exit_code == 0
    assert "Obsidian" not in r.invoke(app, ["exclusions", "list"]).output
    bad = r.invoke(app, ["exclusions", "remove", "app", "Nope"])
    assert bad.exit_code != 0


# -- secret fields (demotrace.privacy.secrets): what the recorder calls per event -------------
from demotrace.privacy.secrets import SecretKeyFilter, element_is_secret  # noqa: E402
from demotrace.schema import Element, KeyDown, KeyUp, TextInput  # noqa: E402


def _k(key: str, text: str | None = None, mods: tuple[str, ...] = ()) -> KeyDown:
    return KeyDown(seq=0, t_ns=0, key=key, code="KeyA", text=text, modifiers=mods)


def test_secret_field_rules() -> None:
    p = default_policy()
    el = lambda **kw: Element(seq=0, t_ns=0, **kw)  # noqa: E731
    assert element_is_secret(p, el(role="password text", source="atspi"))
    assert element_is_secret(p, el(source="dom", tag="input", attributes={"type": "password"}))
    assert element_is_secret(p, el(source="dom", tag="input", attributes={"autocomplete": "cc-csc"}))
    assert element_is_secret(p, el(source="dom", tag="input", attributes={"autocomplete": "one-time-code"}))
    assert element_is_secret(p, el(name="Card number", role="text"))
    assert element_is_secret(p, el(secret=True))
    assert not element_is_secret(p, el(role="text", name="Subject"))


def test_secret_field_drops_typing_but_keeps_navigation() -> None:
    f = SecretKeyFilter(default_policy())
    f.observe(FocusChange(seq=0, t_ns=0, app_id="Chromium"))
    assert not f.should_drop(_k("a", "a"))  # standard mode, field unknown: kept
    f.observe(Element(seq=0, t_ns=0, role="password text", source="atspi"))
    dropped = [f.should_drop(e) for e in (
        _k("s", "s"), _k("Backspace"), TextInput(seq=0, t_ns=0, text="é"),
        _k("Tab"), _k("Enter"), _k("v", None, ("Control",)),
        KeyUp(seq=0, t_ns=0, key="s", code="KeyS"))]
    assert dropped == [True, True, True, False, False, False, True]
    assert f.counts == {"secret_field": 4}
    f.observe(Element(seq=0, t_ns=0, role="text", name="Comment", source="atspi"))
    assert not f.should_drop(_k("x", "x"))


def test_strict_mode_drops_printable_keys_into_unknown_fields() -> None:
    strict = Policy.from_toml('version = 1\nnotice = "n"\n[secrets]\nstrictness = "strict"\n')
    f = SecretKeyFilter(strict)
    f.observe(FocusChange(seq=0, t_ns=0, app_id="XTerm"))
    assert [f.should_drop(e) for e in (_k("a", "a"), _k("Enter"), _k("c", None, ("Control",)))] == [True, False, False]
    assert f.counts == {"strict_unknown_field": 1}
    f.observe(Element(seq=0, t_ns=0, role="terminal", source="atspi"))  # identified, not secret
    assert not f.should_drop(_k("a", "a"))


# -- issue #4: a home policy.toml cannot remove the built-in deny-list (real recorder) ---------

def test_home_policy_without_deny_sections_still_never_records_keepassxc(xvfb, dt_home: Path) -> None:  # type: ignore[no-untyped-def]
    """Tester's report, replayed: policy.toml = the default with every [scope.deny.*] removed
    (same version and notice), `demotrace enroll --yes`, `demotrace record`, an `xterm -class
    KeePassXC` focused and typed into. The built-in deny-list still applies: nothing typed into it
    is in the RAW spool, a private_gap with reason deny:password_manager:app is."""
    import subprocess
    import sys

    from helpers_x11 import recorder_status, start_recorder, stop_recorder, wait_for

    from demotrace.schema import KeyDown, Marker
    from demotrace.spool import DataKey, Spool

    text = (Path(__file__).resolve().parent.parent / "src" / "demotrace" / "privacy" / "default_policy.toml").read_text()
    cut = text[:text.index("[scope.deny.")] + text[text.index("[secrets]"):]
    assert "[scope.deny" not in cut and "KeePassXC" not in cut.split('"""')[2]
    (dt_home / "policy.toml").write_text(cut, "utf-8")
    cli = str(Path(sys.executable).parent / "demotrace")
    env = dict(xvfb.env, COLUMNS="200", DEMOTRACE_HOME=str(dt_home))
    enrolled = subprocess.run([cli, "enroll", "--yes"], env=env, capture_output=True, text=True, timeout=60)
    assert enrolled.returncode == 0, enrolled.stderr
    assert "Never captured (password manager): apps KeePassXC" in enrolled.stdout  # shown before accepting

    def xterm(cls: str, title: str, geom: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(["xterm", "-class", cls, "-T", title, "-geometry", geom, "-e", "cat"], env=xvfb.env)

    def wid(title: str) -> str:
        found: list[str] = []

        def seen() -> bool:
            p = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", f"^{title}$"], env=xvfb.env,
                               capture_output=True, text=True)
            found[:] = p.stdout.split()
            return bool(found)

        wait_for(seen, 15, f"window {title!r}")
        return found[0]

    work, vault = xterm("XTerm", "worknotes", "40x8+0+0"), xterm("KeePassXC", "pmvault", "40x8+500+300")
    rec = None
    try:
        w_work, w_vault = wid("worknotes"), wid("pmvault")
        subprocess.run(["xdotool", "windowfocus", "--sync", w_work], env=xvfb.env, check=True, timeout=30)
        rec = start_recorder(env, dt_home, "--no-indicator")
        wait_for(lambda: not recorder_status(dt_home)["privacy_scope"]["excluded_now"], 10, "the allowed focus")
        subprocess.run(["xdotool", "type", "--delay", "30", "plainword"], env=xvfb.env, check=True, timeout=30)
        subprocess.run(["xdotool", "windowfocus", "--sync", w_vault], env=xvfb.env, check=True, timeout=30)
        wait_for(lambda: recorder_status(dt_home)["privacy_scope"]["excluded_now"], 10, "the excluded context")
        subprocess.run(["xdotool", "type", "--delay", "30", "kiwisecret"], env=xvfb.env, check=True, timeout=30)
        subprocess.run(["xdotool", "windowfocus", "--sync", w_work], env=xvfb.env, check=True, timeout=30)
        wait_for(lambda: not recorder_status(dt_home)["privacy_scope"]["excluded_now"], 10, "leaving the vault")
        stop_recorder(rec)
    finally:
        if rec is not None and rec.poll() is None:
            rec.kill()
        for p in (work, vault):
            p.kill()
            p.wait()
    paths = Paths(dt_home)
    spool = Spool(paths.spool, DataKey.load(paths.key_file))
    (sid,) = spool.session_ids()
    with spool.open(sid) as r:
        evs = list(r.iter_events())
    typed = "".join(e.text or "" for e in evs if isinstance(e, KeyDown))
    assert "plainword" in typed and "kiwi" not in typed and "secret" not in typed
    assert [e.reason for e in evs if isinstance(e, Marker) and e.name == "private_gap"] == ["deny:password_manager:app"]


def test_an_exclusion_added_while_recording_applies_at_once(xvfb, dt_home: Path) -> None:  # type: ignore[no-untyped-def]
    """Bug bash 4: `demotrace exclusions add title …` during a recording applied only at seal
    time — the raw spool got the keys typed afterwards. A real `demotrace record`, a real xterm
    focused throughout: keys typed after the exclusion is added (and a second has passed: the
    recorder re-reads the file at most once a second) are not in the RAW spool; a private_gap
    with reason exclusion:title is."""
    import subprocess
    import sys
    import time

    from helpers_x11 import killed_after, only_session, recorder_status, recording, search_window, spool_events, wait_for

    from demotrace.schema import KeyDown, Marker

    cli = str(Path(sys.executable).parent / "demotrace")
    env = dict(xvfb.env, COLUMNS="200", DEMOTRACE_HOME=str(dt_home))
    term = subprocess.Popen(["xterm", "-T", "liveexcl notes", "-geometry", "40x8+0+0", "-e", "cat"], env=xvfb.env)
    with killed_after(term):
        w = search_window(xvfb.env, "liveexcl notes", timeout=15)
        subprocess.run(["xdotool", "windowfocus", "--sync", str(w)], env=xvfb.env, check=True, timeout=30)
        with recording(env, dt_home, "--no-indicator"):
            wait_for(lambda: not recorder_status(dt_home)["privacy_scope"]["excluded_now"], 10, "the allowed focus")
            subprocess.run(["xdotool", "type", "--delay", "30", "plainword"], env=xvfb.env, check=True, timeout=30)
            added = subprocess.run([cli, "exclusions", "add", "title", "liveexcl"], env=env, capture_output=True,
                                   text=True, timeout=60)
            assert added.returncode == 0, added.stderr
            time.sleep(1.2)
            subprocess.run(["xdotool", "type", "--delay", "30", "kiwisecret"], env=xvfb.env, check=True, timeout=30)
            wait_for(lambda: recorder_status(dt_home)["privacy_scope"]["excluded_now"], 10, "the exclusion in force")
    evs = spool_events(only_session(dt_home)[1])
    typed = "".join(e.text or "" for e in evs if isinstance(e, KeyDown))
    assert "plainword" in typed and "kiwi" not in typed and "secret" not in typed, typed
    assert [e.reason for e in evs if isinstance(e, Marker) and e.name == "private_gap"] == ["exclusion:title"]
